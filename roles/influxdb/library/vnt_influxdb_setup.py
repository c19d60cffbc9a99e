#!/usr/bin/python3
"""Ansible module: admin user, database, retention policy and writer user of an InfluxDB 1.x.

Idempotent: it reads the server's state first (SHOW USERS/DATABASES/RETENTION POLICIES/GRANTS) and
changes only what differs. Passwords are no_log parameters and never appear in results.
"""

import base64
import json
import time
import urllib.error
import urllib.parse
import urllib.request

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: vnt_influxdb_setup
short_description: Admin, database, retention policy and writer user of an InfluxDB 1.x with auth on
options:
  url: {type: str, required: true, description: "http://HOST:PORT"}
  admin_user: {type: str, required: true}
  admin_password: {type: str, required: true, no_log: true}
  writer_user: {type: str, required: true}
  writer_password: {type: str, required: true, no_log: true}
  database: {type: str, required: true}
  retention_policy: {type: str, required: true}
  retention_duration: {type: str, required: true, description: "InfluxQL duration, e.g. 7d, or INF"}
  wait_s: {type: int, default: 0, description: "first wait this long at most for /ping to answer (a server just started)"}
"""


class Api:
    def __init__(self, url, timeout=10):
        self.url = url.rstrip("/")
        self.timeout = timeout

    def query(self, q, user=None, password=None, db=None):
        """(status, results) of one POST /query."""
        form = {"q": q}
        if db:
            form["db"] = db
        req = urllib.request.Request(self.url + "/query", data=urllib.parse.urlencode(form).encode())
        if user is not None:  # influxd reads u/p from the URL or basic auth, never from a form body
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            req.add_header("Authorization", "Basic " + token)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                body = json.loads(r.read() or b"{}")
                status = r.status
        except urllib.error.HTTPError as e:
            try:
                body = json.loads(e.read() or b"{}")
            except ValueError:
                body = {}
            status = e.code
        return status, body


def wait_ready(url, seconds):
    """True once GET /ping answers 204 (tried every 0.2 s for `seconds` at most)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url.rstrip("/") + "/ping", timeout=2) as r:
                if r.status == 204:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)


def ident(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def lit(s):
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def rows(body):
    res = (body.get("results") or [{}])[0]
    if "error" in res:
        raise RuntimeError(res["error"])
    out = []
    for s in res.get("series", []):
        out += [dict(zip(s["columns"], v)) for v in s.get("values", [])]
    return out


def duration_ns(d):
    """InfluxQL duration (7d, 168h0m0s, INF, 0s) as ns; 0 = infinite."""
    import re

    if d.upper() == "INF":
        return 0
    units = {"ns": 1, "u": 10**3, "µ": 10**3, "ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9,
             "d": 86400 * 10**9, "w": 7 * 86400 * 10**9}
    total = 0
    for n, u in re.findall(r"(\d+)(ns|u|µ|ms|s|m|h|d|w)", d):
        total += int(n) * units[u]
    return total


def main():
    m = AnsibleModule(argument_spec=dict(
        url=dict(type="str", required=True),
        admin_user=dict(type="str", required=True),
        admin_password=dict(type="str", required=True, no_log=True),
        writer_user=dict(type="str", required=True),
        writer_password=dict(type="str", required=True, no_log=True),
        database=dict(type="str", required=True),
        retention_policy=dict(type="str", required=True),
        retention_duration=dict(type="str", required=True),
        wait_s=dict(type="int", default=0),
    ), supports_check_mode=True)
    p = m.params
    if not wait_ready(p["url"], p["wait_s"]):
        m.fail_json(msg=f"InfluxDB at {p['url']} did not answer /ping within {p['wait_s']} s")
    api = Api(p["url"])
    actions = []

    def admin(q, db=None):
        if not m.check_mode:
            st, body = api.query(q, p["admin_user"], p["admin_password"], db)
            if st != 200:
                m.fail_json(msg=f"InfluxDB refused '{q.split(' WITH PASSWORD')[0]}': HTTP {st}: {body.get('error', '')}")
            rows(body)

    def show(q, db=None):
        st, body = api.query(q, p["admin_user"], p["admin_password"], db)
        if st != 200:
            m.fail_json(msg=f"InfluxDB refused '{q}': HTTP {st}: {body.get('error', '')}")
        return rows(body)

    try:
        st, body = api.query("SHOW USERS", p["admin_user"], p["admin_password"])
        if st == 403 and "create admin user first" in body.get("error", ""):
            actions.append(f"create admin user {p['admin_user']}")
            if not m.check_mode:  # the one statement InfluxDB accepts without credentials
                st, body = api.query(f"CREATE USER {ident(p['admin_user'])} WITH PASSWORD {lit(p['admin_password'])} "
                                     "WITH ALL PRIVILEGES")
                if st != 200:
                    m.fail_json(msg=f"creating the admin user failed: HTTP {st}: {body.get('error', '')}")
            users = {p["admin_user"]: True}
        elif st == 401:
            m.fail_json(msg=f"InfluxDB at {p['url']} refuses user {p['admin_user']} with the password given "
                            "(its data was made with other credentials: give those, or remove its data folder)")
        elif st != 200:
            m.fail_json(msg=f"InfluxDB at {p['url']}: HTTP {st}: {body.get('error', '')}")
        else:
            users = {u["user"]: u["admin"] for u in rows(body)}

        if m.check_mode and actions:  # no server state to compare with yet
            m.exit_json(changed=True, actions=actions + ["database, retention policy, writer user"])

        dbs = {r["name"] for r in show("SHOW DATABASES")}
        if p["database"] not in dbs:
            actions.append(f"create database {p['database']}")
            admin(f"CREATE DATABASE {ident(p['database'])}")

        rps = {r["name"]: r for r in show(f"SHOW RETENTION POLICIES ON {ident(p['database'])}")} \
            if p["database"] in dbs or not m.check_mode else {}
        want = duration_ns(p["retention_duration"])
        rp = rps.get(p["retention_policy"])
        if rp is None:
            actions.append(f"create retention policy {p['retention_policy']} ({p['retention_duration']})")
            admin(f"CREATE RETENTION POLICY {ident(p['retention_policy'])} ON {ident(p['database'])} "
                  f"DURATION {p['retention_duration']} REPLICATION 1 DEFAULT")
        elif duration_ns(rp["duration"]) != want or not rp["default"]:
            actions.append(f"alter retention policy {p['retention_policy']} ({p['retention_duration']}, default)")
            admin(f"ALTER RETENTION POLICY {ident(p['retention_policy'])} ON {ident(p['database'])} "
                  f"DURATION {p['retention_duration']} DEFAULT")

        w = p["writer_user"]
        if w not in users:
            actions.append(f"create user {w}")
            admin(f"CREATE USER {ident(w)} WITH PASSWORD {lit(p['writer_password'])}")
        else:
            st, _ = api.query("SHOW DATABASES", w, p["writer_password"])
            if st == 401:
                actions.append(f"set password of {w}")
                admin(f"SET PASSWORD FOR {ident(w)} = {lit(p['writer_password'])}")
        grants = {r["database"]: r["privilege"] for r in show(f"SHOW GRANTS FOR {ident(w)}")} if w in users else {}
        if grants.get(p["database"]) != "ALL PRIVILEGES":
            actions.append(f"grant read and write on {p['database']} to {w}")
            admin(f"GRANT ALL ON {ident(p['database'])} TO {ident(w)}")
    except (OSError, RuntimeError) as e:
        m.fail_json(msg=f"InfluxDB at {p['url']}: {e}", actions=actions)
    m.exit_json(changed=bool(actions), actions=actions)


if __name__ == "__main__":
    main()
