"""A small InfluxDB 1.x HTTP client: write line protocol, query into pandas frames.

Every query our helpers send is bounded in time (an unbounded `GROUP BY time()` once made influxd
grow to 24 GB): `check_bounded` refuses a SELECT without both a lower and an upper time bound before
anything is sent. Results come back chunked (JSON, one object per chunk) so large answers are never
held by the server as one response.
"""

from __future__ import annotations

import json
import re

import pandas as pd
import requests

from vnettracer.store.http import Endpoint, StoreError, error_text

__all__ = ["Endpoint", "Influx", "QueryRefused", "StoreError", "check_bounded"]


class QueryRefused(StoreError):
    """A query our helpers will not send (no time bound)."""


_SELECT = re.compile(r"^\s*select\b", re.I)
_LOWER = re.compile(r"\btime\s*(>=|>)\s*", re.I)
_UPPER = re.compile(r"\btime\s*(<=|<)\s*", re.I)


def check_bounded(q: str) -> None:
    """Raise QueryRefused unless every SELECT in `q` has `time >(=) ...` and `time <(=) ...`."""
    for stmt in filter(str.strip, q.split(";")):
        if not _SELECT.match(stmt):
            continue
        where = re.split(r"\bwhere\b", stmt, maxsplit=1, flags=re.I)
        cond = where[1] if len(where) == 2 else ""
        if not (_LOWER.search(cond) and _UPPER.search(cond)):
            raise QueryRefused(f"refused (not sent): a SELECT needs a lower and an upper time bound: {stmt.strip()}")


def _ts(t) -> str:
    """A time bound as an InfluxQL ns literal, from int ns, a datetime/Timestamp or a string (UTC if naive)."""
    if isinstance(t, int) and not isinstance(t, bool):
        return str(t)
    ts = pd.Timestamp(t)
    return str((ts.tz_localize("UTC") if ts.tzinfo is None else ts).value)


class Influx:
    def __init__(self, ep: Endpoint, timeout_s: float = 30.0):
        self.ep = ep
        self.timeout = timeout_s
        self.http = requests.Session()

    def close(self) -> None:
        self.http.close()

    def _auth(self) -> tuple[str, str] | None:
        # basic auth: influxd reads u/p from the URL (which logs keep) or this header, never a form body
        return (self.ep.user, self.ep.password) if self.ep.user else None

    def ping(self) -> bool:
        try:
            return self.http.get(f"{self.ep.url}/ping", timeout=self.timeout).status_code == 204
        except requests.RequestException:
            return False

    def write(self, body: bytes) -> None:
        """One POST /write of line protocol with ns timestamps; raises StoreError unless 204."""
        params = {"db": self.ep.database, "precision": "ns"}
        if self.ep.retention_policy:
            params["rp"] = self.ep.retention_policy
        try:
            r = self.http.post(f"{self.ep.url}/write", params=params, data=body, auth=self._auth(),
                               timeout=self.timeout)
        except requests.RequestException as e:
            raise StoreError(f"InfluxDB at {self.ep.url} unreachable: {type(e).__name__}") from e
        if r.status_code != 204:
            raise StoreError(f"InfluxDB write refused: HTTP {r.status_code}: {_err(r)}", status=r.status_code)

    def execute(self, q: str, method: str = "POST") -> list[dict]:
        """A statement that is not a SELECT (SHOW, CREATE, DROP, ...); returns the results list."""
        if _SELECT.match(q):
            raise QueryRefused("use query() for SELECT statements")
        return self._query(q, method)

    def _query(self, q: str, method: str, chunk_size: int = 0) -> list[dict]:
        data = {"q": q, "db": self.ep.database, "epoch": "ns"}
        if chunk_size:
            data.update(chunked="true", chunk_size=str(chunk_size))
        try:
            r = self.http.request(method, f"{self.ep.url}/query", data=data, auth=self._auth(),
                                  timeout=self.timeout, stream=bool(chunk_size))
        except requests.RequestException as e:
            raise StoreError(f"InfluxDB at {self.ep.url} unreachable: {type(e).__name__}") from e
        if r.status_code != 200:
            raise StoreError(f"InfluxDB query refused: HTTP {r.status_code}: {_err(r)}", status=r.status_code)
        chunks = [json.loads(line) for line in r.iter_lines() if line] if chunk_size else [r.json()]
        results = [res for c in chunks for res in c.get("results", [])]
        for res in results:
            if "error" in res:
                raise StoreError(f"InfluxDB: {res['error']}")
        return results

    def query(self, q: str, chunk_size: int = 50_000) -> pd.DataFrame:
        """A bounded SELECT, read in chunks; one frame with `time` (ns, UTC) and the tag columns of
        any GROUP BY. Refused before sending if it has no time bound."""
        check_bounded(q)
        frames = []
        for res in self._query(q, "POST", chunk_size):
            for s in res.get("series", []):
                df = pd.DataFrame(s.get("values", []), columns=s["columns"])
                for k, v in (s.get("tags") or {}).items():
                    df[k] = v
                df.insert(0, "measurement", s.get("name", ""))
                frames.append(df)
        if not frames:
            return pd.DataFrame()
        df = pd.concat(frames, ignore_index=True)
        if "time" in df:
            df["time"] = pd.to_datetime(df["time"].astype("int64"), unit="ns", utc=True)
        return df

    def select(self, measurement: str, start, end, fields: str = "*", where: dict[str, str] | None = None,
               group_by: str = "", chunk_size: int = 50_000) -> pd.DataFrame:
        """SELECT fields FROM measurement in [start, end), tag equality filters, optional GROUP BY."""
        conds = [f"time >= {_ts(start)}", f"time < {_ts(end)}"]
        conds += [f"{quote_ident(k)} = '{_str_lit(v)}'" for k, v in (where or {}).items()]
        q = f"SELECT {fields} FROM {quote_ident(measurement)} WHERE {' AND '.join(conds)}"
        if group_by:
            q += f" GROUP BY {group_by}"
        return self.query(q, chunk_size)

    def count(self, measurement: str, field: str, start, end, where: dict[str, str] | None = None,
              group_by: str = "") -> pd.DataFrame:
        return self.select(measurement, start, end, f"count({quote_ident(field)})", where, group_by)


def quote_ident(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _str_lit(s: str) -> str:
    return s.replace("\\", "\\\\").replace("'", "\\'")


def _err(r: requests.Response) -> str:
    return error_text(r.content)
