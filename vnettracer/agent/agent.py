"""`vnettracer agent run --config FILE`: the tracer agent of one host.

Attaches every tracepoint of its host, drains the ring buffer in batches to the spool, records
(ktime, realtime) clock pairs at start and every second, writes a stats file every second, and
serves a control socket (JSON lines) to add, remove or change tracepoints and report stats. On
SIGTERM/SIGINT or any error it detaches every hook it attached; at start it removes the hooks a
dead agent left (listed in its state file).
"""

from __future__ import annotations

import json
import os
import resource
import selectors
import signal
import socket
import sys
import time
from pathlib import Path

from vnettracer.agent.spool import Spool
from vnettracer.store import lineproto
from vnettracer.store.http import Endpoint
from vnettracer.store.writer import Writer
from vnettracer.clockprobe import WallClock
from vnettracer.procs import alive
from vnettracer.agent.config import AgentConfig, TracepointConfig, load_config
from vnettracer.agent.tracer import Hook, Tracer, detach_stale, hook_state


def _write_atomic(path: Path, data: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(data)
    os.replace(tmp, path)


class Clock:
    """(ktime, realtime) pairs: ktime is CLOCK_MONOTONIC, what bpf_ktime_get_ns() reads."""

    def __init__(self, path: Path, offset_ns: int = 0, drift_ppm: float = 0.0, t0_ns: int = 0):
        self.f = open(path, "a")
        self.wall = WallClock(offset_ns, drift_ppm, t0_ns)  # the lab's emulation, if any

    def record(self) -> None:
        m1 = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        real = self.wall.now()
        m2 = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        self.offset_ns = real - (m1 + m2) // 2  # wall = ktime + offset, until the next pair
        self.f.write(json.dumps({"ktime_ns": (m1 + m2) // 2, "realtime_ns": real, "uncertainty_ns": m2 - m1}) + "\n")
        self.f.flush()

    def close(self) -> None:
        self.f.close()


class Agent:
    def __init__(self, cfg: AgentConfig, log=print):
        self.cfg = cfg
        self.log = log
        self.stop_reason: str | None = None
        self.tracer: Tracer | None = None
        self.spool: Spool | None = None
        self.writer: Writer | None = None
        self.tps: dict[str, TracepointConfig] = {}
        self.names = {t.id: t.name for t in cfg.tracepoints}  # every id ever used, for stats and InfluxDB
        self.started = time.time()

    # ------------------------------------------------------------------ lifecycle
    def remove_stale(self) -> list[str]:
        """Detach hooks a dead agent left behind (its state file lists them)."""
        sf = self.cfg.state_file
        if not sf.exists():
            return []
        try:
            state = json.loads(sf.read_text())
        except ValueError:
            state = {}
        pid = state.get("pid", 0)
        if pid and pid != os.getpid() and alive(pid):
            raise RuntimeError(f"another agent (pid {pid}) is running on this host; stop it first")
        removed = detach_stale([(Hook(**a["hook"]), a.get("created_clsact", False)) for a in state.get("hooks", [])])
        sf.unlink()
        if removed:
            self.log(f"removed {len(removed)} hooks left by a dead agent (pid {pid}): {', '.join(removed)}")
        return removed

    def _save_state(self) -> None:
        assert self.tracer is not None
        _write_atomic(self.cfg.state_file, json.dumps({
            "pid": os.getpid(), "run_id": self.cfg.run_id, "started": self.started,
            "hooks": [hook_state(a) for a in self.tracer.attached.values()],
        }, indent=1))

    def add(self, tp: TracepointConfig) -> None:
        if tp.name in self.tps:
            raise ValueError(f"tracepoint {tp.name} is already attached")
        if any(t.id == tp.id for t in self.tps.values()):
            raise ValueError(f"tracepoint id {tp.id} is already in use")
        self.tracer.attach(tp.hook(), tp.id, self.cfg.sampling)
        self.tps[tp.name] = tp
        self.names[tp.id] = tp.name
        self._save_state()

    def remove(self, name: str) -> None:
        if name not in self.tps:
            raise KeyError(f"no tracepoint {name}; attached: {', '.join(self.tps) or 'none'}")
        self.tracer.detach(self.tps.pop(name).hook())
        self._save_state()

    def set_attached(self, names: list[str]) -> None:
        """Attach exactly these of the configured tracepoints (detach the rest)."""
        known = {t.name: t for t in self.cfg.tracepoints}
        unknown = sorted(set(names) - set(known))
        if unknown:
            raise KeyError(f"not configured: {', '.join(unknown)}; configured: {', '.join(known)}")
        for name in sorted(set(self.tps) - set(names)):
            self.remove(name)
        for name in names:
            if name not in self.tps:
                self.add(known[name])

    def stats(self) -> dict:
        counters = self.tracer.counters() if self.tracer else {}
        ru = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "host": self.cfg.host, "run_id": self.cfg.run_id, "pid": os.getpid(), "time": time.time(),
            "attached": sorted(self.tps),
            "tracepoints": {self.names.get(tp, str(tp)): {"id": tp, **c} for tp, c in counters.items()},
            "spooled_events": self.spool.events if self.spool else 0,
            "cpu_s": round(ru.ru_utime + ru.ru_stime, 3),
            "sampling": self.cfg.sampling,
            "attach": self.tracer.attach_mode if self.tracer else None,
            "bpf_object": self.tracer.object_path.name if self.tracer else None,  # -compat: kernel < 6.2
            "influxdb": self.writer.stats.as_dict() if self.writer else None,
        }

    def run(self, ready=None) -> int:
        """Run until signalled. `ready(msg)` is called once every hook is attached (or with
        'error: ...' if start-up failed). Returns the exit code."""
        cfg = self.cfg
        for d in (cfg.run_dir, cfg.spool_dir):
            d.mkdir(parents=True, exist_ok=True)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda s, f: setattr(self, "stop_reason", signal.Signals(s).name))
        server = sel = clock = None
        rc = 0
        try:
            self.remove_stale()
            self.tracer = Tracer(cfg.bpf_object, cfg.flows, cfg.vxlan_ports, cfg.ring_mb << 20, cfg.attach,
                                 cfg.udp_trace_port)
            self.spool = Spool(cfg.spool_dir, cfg.rotate_mb << 20)
            for tp in cfg.tracepoints:
                self.add(tp)
            clock = Clock(cfg.spool_dir / "clock.jsonl", cfg.clock_offset_ns, cfg.clock_drift_ppm, cfg.clock_t0_ns)
            clock.record()
            if cfg.influxdb:
                ep = Endpoint(cfg.influxdb.url, cfg.influxdb.database, cfg.influxdb.user, cfg.influxdb.password,
                              cfg.influxdb.retention_policy)
                self.writer = Writer(ep, cfg.outbox, log=self.log)
            cfg.socket_path.unlink(missing_ok=True)
            server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            server.bind(str(cfg.socket_path))
            server.listen(8)
            server.setblocking(False)
            sel = selectors.DefaultSelector()
            sel.register(server, selectors.EVENT_READ, None)
            self._write_stats()
            self.log(f"agent ready: {len(self.tps)} tracepoints attached ({self.tracer.attach_mode}), spool {cfg.spool_dir}")
            if ready:
                ready(f"ready {len(self.tps)} ({self.tracer.object_path.name})")
            self._loop(sel, server, clock)
        except Exception as e:  # noqa: BLE001 - any error: report, then detach everything below
            msg = f"{type(e).__name__}: {e}"
            if getattr(e, "log", ""):
                msg += "\n" + e.log
            self.log(f"agent error: {msg}")
            if ready:
                ready(f"error: {msg}")
            rc = 1
        finally:
            rc = self._shutdown(sel, server, clock) or rc
        return rc

    def _loop(self, sel, server, clock) -> None:
        poll = self.cfg.poll_ms / 1000
        next_tick = time.monotonic() + 1
        while self.stop_reason is None:
            events = self.tracer.ring.read()
            if len(events):
                self._take(events, clock)
            now = time.monotonic()
            if now >= next_tick:
                clock.record()
                self._health(self._write_stats(), clock)
                next_tick = now + 1
            if self.writer:
                self.writer.tick()
            # a big batch means more is waiting: don't sleep
            for key, _ in sel.select(timeout=0 if len(events) > 4096 else poll):
                if key.data is None:
                    conn, _ = server.accept()
                    conn.setblocking(True)
                    conn.settimeout(2)
                    self._serve(conn)
        self.log(f"agent stopping ({self.stop_reason})")

    def _take(self, events, clock) -> None:
        """A batch from the ring: into the spool, and into InfluxDB when raw events go there."""
        self.spool.write(events)
        if self.writer and self.cfg.influxdb.raw_events and clock:
            self.writer.add(lineproto.events(events, self.cfg.run_id, self.cfg.host, self.names, clock.offset_ns))

    def _health(self, stats: dict, clock) -> None:
        if self.writer and clock:
            self.writer.add(lineproto.agent(stats, self.cfg.run_id, clock.wall.now()))

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            try:
                line = conn.makefile("r").readline()
                req = json.loads(line)
                cmd = req.get("cmd")
                if cmd == "stats":
                    out = {"ok": True, "stats": self.stats()}
                elif cmd == "add":
                    self.add(TracepointConfig.parse(req["tracepoint"]))
                    out = {"ok": True}
                elif cmd == "remove":
                    self.remove(req["name"])
                    out = {"ok": True}
                elif cmd == "set":
                    self.set_attached(list(req["names"]))
                    out = {"ok": True, "attached": sorted(self.tps)}
                elif cmd == "sampling":
                    self.cfg.sampling = int(req["n"])
                    self.tracer.set_sampling(self.cfg.sampling)
                    out = {"ok": True}
                elif cmd == "stop":
                    self.stop_reason = "stop requested"
                    out = {"ok": True}
                else:
                    out = {"ok": False, "error": f"unknown cmd {cmd!r}; known: stats, add, remove, set, sampling, stop"}
            except Exception as e:  # noqa: BLE001 - a bad request must not stop the agent
                out = {"ok": False, "error": f"{type(e).__name__}: {e}"}
            conn.sendall((json.dumps(out) + "\n").encode())

    def _write_stats(self) -> dict:
        st = self.stats()
        _write_atomic(self.cfg.spool_dir / "stats.json", json.dumps(st, indent=1))
        return st

    def _shutdown(self, sel, server, clock) -> int:
        rc = 0
        if self.tracer is not None:
            problems = self.tracer.detach_all()  # first: no event can arrive after this
            if problems:
                self.log("detach problems: " + "; ".join(problems))
                rc = 1
            if self.spool is not None:
                try:  # then what is still in the ring goes to the spool
                    while len(ev := self.tracer.ring.read()):
                        self._take(ev, clock)
                except Exception as e:  # noqa: BLE001
                    self.log(f"final drain failed: {e}")
                    rc = 1
                self._health(self._write_stats(), clock)
                self.spool.close()
            if self.writer:  # what InfluxDB does not take within the grace stays in the outbox
                st = self.writer.close(timeout_s=10)
                if st.backlog_batches:
                    self.log(f"influxdb: {st.backlog_batches} batches not sent ({st.last_error}); kept in {self.cfg.outbox}")
                self._write_stats()
            self.tracer.close()
            self.cfg.state_file.unlink(missing_ok=True)
        if clock:
            clock.close()
        if server:
            sel.close()
            server.close()
            self.cfg.socket_path.unlink(missing_ok=True)
        self.log(f"agent stopped: {len(self.tps)} hooks detached")
        return rc


def request(socket_path: Path, req: dict, timeout: float = 10) -> dict:
    """One control request to a running agent."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(socket_path))
        s.sendall((json.dumps(req) + "\n").encode())
        return json.loads(s.makefile("r").readline())


def run_daemon(cfg: AgentConfig, logfile: Path, timeout_s: float = 120) -> str:
    """Start the agent detached (double fork, own session, pidfile); return once it is ready.
    Raises RuntimeError with the agent's message if it failed to start."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # intermediate child
        os.close(r)
        os.setsid()
        if os.fork():
            os._exit(0)
        fd = os.open(logfile, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        cfg.run_dir.mkdir(parents=True, exist_ok=True)
        cfg.pidfile.write_text(f"{os.getpid()}\n")
        wfile = os.fdopen(w, "w")

        def ready(msg: str) -> None:
            wfile.write(msg + "\n")
            wfile.flush()
            wfile.close()

        def log(msg: str) -> None:
            print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {msg}", flush=True)

        code = 1
        try:
            code = Agent(cfg, log=log).run(ready=ready)
        finally:
            cfg.pidfile.unlink(missing_ok=True)
            os._exit(code)
    os.close(w)
    os.waitpid(pid, 0)
    with os.fdopen(r) as rf:
        import select

        if not select.select([rf], [], [], timeout_s)[0]:
            raise RuntimeError(f"agent did not report ready within {timeout_s:.0f} s; see {logfile}")
        msg = rf.read().strip()
    if not msg.startswith("ready"):
        raise RuntimeError(msg.removeprefix("error: ") or f"agent exited during start-up; see {logfile}")
    return msg


def main_run(config: Path, daemon: bool) -> int:
    cfg = load_config(config)
    if daemon:
        for d in (cfg.run_dir, cfg.state_dir / "log"):
            d.mkdir(parents=True, exist_ok=True)
        msg = run_daemon(cfg, cfg.state_dir / "log" / f"agent-{cfg.run_id}.log")
        print(f"agent {cfg.host}: {msg}")
        return 0
    return Agent(cfg, log=lambda m: print(m, file=sys.stderr, flush=True)).run(
        ready=lambda m: print(m, flush=True))
