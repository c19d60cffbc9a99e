"""`vnettracer store serve RUN_DIR`: a finished run's data in an InfluxDB of its own on this machine
(127.0.0.1), for Grafana or queries after the lab is gone. The data folder (default RUN_DIR/influxdb)
is kept: serving the run again starts from it. The server's config is roles/influxdb's template,
its first user the admin whose password lands in DATA/secrets/influxdb.json (0600)."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Callable

import numpy as np
import yaml

from vnettracer import ROOT
from vnettracer.agent.record import EVENT
from vnettracer.errors import VntError
from vnettracer.store import credentials, lineproto
from vnettracer.store.client import Endpoint, Influx
from vnettracer.store.writer import Writer


class LocalInflux:
    """influxd on 127.0.0.1:port with its data in data_dir; ended by its pid (stop)."""

    def __init__(self, data_dir: Path, port: int = 8087):
        self.dir, self.port = data_dir, port
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen | None = None

    def _config(self) -> Path:
        import jinja2

        role = ROOT / "roles" / "influxdb"
        values = yaml.safe_load((role / "defaults" / "main.yml").read_text())
        values.update(ansible_managed="written by vnettracer store serve", influxdb_dir=str(self.dir),
                      influxdb_bind_address="127.0.0.1", influxdb_http_port=self.port,
                      influxdb_rpc_bind_address=f"127.0.0.1:{self.port + 1}")
        conf = self.dir / "influxdb.conf"
        conf.write_text(jinja2.Template((role / "templates" / "influxdb.conf.j2").read_text()).render(values))
        return conf

    def start(self, timeout_s: float = 60) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        log = open(self.dir / "influxd.log", "ab")
        self.proc = subprocess.Popen(["influxd", "run", "-config", str(self._config())], stdin=subprocess.DEVNULL,
                                     stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = (self.dir / "influxd.log").read_text(errors="replace").strip().splitlines()[-3:]
                raise VntError(f"influxd exited at start ({' | '.join(tail)}); is port {self.port} free?")
            if Influx(Endpoint(self.url)).ping():
                return
            time.sleep(0.2)
        self.stop()
        raise VntError(f"influxd did not answer within {timeout_s:.0f} s; see {self.dir / 'influxd.log'}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def first_admin(self, creds: dict[str, str]) -> None:
        """A new server has no user: the first, an admin, may be made without credentials."""
        q = f"CREATE USER \"{creds['admin_user']}\" WITH PASSWORD '{creds['admin_password']}' WITH ALL PRIVILEGES"
        req = urllib.request.Request(f"{self.url}/query", data=urllib.parse.urlencode({"q": q}).encode())
        with urllib.request.urlopen(req, timeout=30) as r:
            if "error" in json.loads(r.read()).get("results", [{}])[0]:
                raise VntError("influxd refused its first user")


def load(run_dir: Path, ep: Endpoint, events: bool, log: Callable[[str], None]) -> dict:
    """The run's per-second segment summaries (and with `events` every traced event) into ep."""
    from vnettracer.analysis import analyze, inputs
    from vnettracer.store.publish import per_second

    exp = inputs.read_spec(run_dir)
    a = analyze(run_dir, exp)
    w = Writer(ep, run_dir / "influx-outbox", log=log)
    seg = per_second(a)
    w.add(lineproto.segments(seg, run_dir.name))
    n_events = 0
    if events and a.events is None:
        log(f"{run_dir.name}: {a.summary['events']:,} events were analysed out of core; raw events are not loaded "
            "(per-second segment summaries are)")
    elif events and a.events is not None:
        names = {v: k for k, v in exp.tracepoint_ids.items()}
        for host, ev in a.events.groupby("host"):
            arr = np.zeros(len(ev), EVENT)
            for f in EVENT.names or ():
                arr[f] = ev["t_ns"].to_numpy() if f == "ts_ns" else ev[f].to_numpy()
            w.add(lineproto.events(arr, run_dir.name, str(host), names, 0))
            n_events += len(arr)
    st = w.close(timeout_s=120)
    if st.backlog_points:
        raise VntError(f"{st.backlog_points} points could not be written to {ep.url} ({st.last_error})")
    return {"segment_points": int(len(seg)), "events": n_events}


def serve(run_dir: Path, data_dir: Path | None = None, port: int = 8087, events: bool = False,
          log: Callable[[str], None] = print) -> tuple[LocalInflux, Endpoint, dict]:
    """Start the run's own InfluxDB (loading the run into it the first time); the caller stops it."""
    if not (run_dir / "spec.yml").is_file():
        raise VntError(f"{run_dir} is not a run folder (no spec.yml)")
    data_dir = (data_dir or run_dir / "influxdb").resolve()
    fresh = not (data_dir / "meta").exists()
    server = LocalInflux(data_dir, port)
    server.start()
    try:
        creds = credentials.load_or_create(data_dir)
        if fresh:
            server.first_admin(creds)
        ep = Endpoint(server.url, "vnettracer", creds["admin_user"], creds["admin_password"])
        loaded: dict = {}
        if fresh:
            Influx(ep).execute('CREATE DATABASE "vnettracer"')
            loaded = load(run_dir, ep, events, log)
        return server, ep, loaded
    except BaseException:
        server.stop()
        raise
