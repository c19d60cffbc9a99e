"""The tracer agent of one host: its loop (`hostcli agent run --config FILE`; started detached by
agent/daemon.py). Its parts: config.py (what it is given), tracer.py (the BPF object and its hooks),
spool.py, clock.py (clock pairs), control.py (the control socket's commands).

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
import time
from pathlib import Path

from vnettracer.agent import control
from vnettracer.agent.clock import Clock
from vnettracer.agent.config import AgentConfig, TracepointConfig, choose_cpus, format_cpus
from vnettracer.agent.control import control_socket, peer_allowed
from vnettracer.agent.record import EVENT
from vnettracer.agent.spool import Spool
from vnettracer.agent.tracer import Tracer, detach_state, hook_state, read_state
from vnettracer.procs import alive
from vnettracer.store import lineproto
from vnettracer.store.http import Endpoint
from vnettracer.store.writer import Writer

TAKE_EVENTS = 4096  # the ring is read into the spool once it holds this many events,
TAKE_DELAY_S = 0.2  # or this long after the last read


class Pacer:
    """How long the agent sleeps before it looks at the ring again: until a batch (TAKE_EVENTS)
    should be there at the rate the ring has been filling; at least poll_ms, at most TAKE_DELAY_S
    or the time a burst of BURST_PER_CPU events/s on every CPU takes to fill half the ring. A look
    every 5 ms woke each agent 200 times a second whatever the traffic (docs/benchmarks.md)."""

    BURST_PER_CPU = 4_000_000  # about the most a CPU's hooks emit (bench/drain.py: 6.4 M/s from test runs)

    def __init__(self, poll_s: float, ring_events: int, ncpus: int):
        self.floor = poll_s
        self.ceiling = max(poll_s, min(TAKE_DELAY_S, ring_events / 2 / (self.BURST_PER_CPU * ncpus)))
        self.rate = 0.0  # events/s: follows a rise at once, a fall by halves
        self._last: tuple[float, int] | None = None

    def wait(self, now: float, produced: int, pending: int) -> float:
        """produced: events the ring has taken so far (read + pending); pending: not read yet."""
        if self._last and now > self._last[0]:
            r = (produced - self._last[1]) / (now - self._last[0])
            self.rate = r if r > self.rate else (self.rate + r) / 2
        self._last = (now, produced)
        until_batch = (TAKE_EVENTS - pending) / self.rate if self.rate > 0 else self.ceiling
        return min(max(until_batch, self.floor), self.ceiling)


def _write_atomic(path: Path, data: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(data)
    os.replace(tmp, path)


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
        self.clock: Clock | None = None
        self.write_errors: dict[str, str] = {}  # files the agent could not write (a full disk), first error
        self.started = time.time()
        self._last_take = 0.0  # time.monotonic() of the last read of the ring

    # ------------------------------------------------------------------ lifecycle
    def remove_stale(self) -> list[str]:
        """Detach hooks a dead agent left behind (its state file lists them)."""
        sf = self.cfg.state_file
        if not sf.exists():
            return []
        state = read_state(sf)
        pid = state.get("pid", 0)
        if pid and pid != os.getpid() and alive(pid):
            raise RuntimeError(f"another agent (pid {pid}) is running on this host; stop it first")
        removed = detach_state(state)
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

    def _place(self) -> None:
        """Every thread of the agent onto the CPUs cfg.cpus chooses (threads started later inherit)."""
        want = choose_cpus(self.cfg.cpus, self.cfg.avoid_cpus, os.sched_getaffinity(0))
        if want is not None:
            for tid in os.listdir("/proc/self/task"):
                os.sched_setaffinity(int(tid), want)

    def started_tracer(self) -> Tracer:
        if self.tracer is None:
            raise RuntimeError("the agent's tracer is not loaded yet")
        return self.tracer

    def add(self, tp: TracepointConfig) -> None:
        if tp.name in self.tps:
            raise ValueError(f"tracepoint {tp.name} is already attached")
        if any(t.id == tp.id for t in self.tps.values()):
            raise ValueError(f"tracepoint id {tp.id} is already in use")
        self.started_tracer().attach(tp.hook(), tp.id, self.cfg.sampling)
        self.tps[tp.name] = tp
        self.names[tp.id] = tp.name
        self._save_state()

    def remove(self, name: str) -> None:
        if name not in self.tps:
            raise KeyError(f"no tracepoint {name}; attached: {', '.join(self.tps) or 'none'}")
        self.started_tracer().detach(self.tps.pop(name).hook())
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
            # this host's wall clock as its events are stamped (emulated on the lab): `top` reads it
            "wall_ns": self.clock.wall.now() if self.clock else time.time_ns(),
            "attached": sorted(self.tps),
            "tracepoints": {self.names.get(tp, str(tp)): {"id": tp, **c} for tp, c in counters.items()},
            "spooled_events": self.spool.events if self.spool else 0,
            "spool_dropped": self.spool.dropped if self.spool else 0,  # not written: spool cap or disk full
            "spool_full": self.spool.full if self.spool else "",
            "ring_used_bytes": self.tracer.ring.pending_bytes() if self.tracer else 0,  # not drained yet
            "ring_bytes": self.cfg.ring_mb << 20,
            "cpu_s": round(ru.ru_utime + ru.ru_stime, 3),
            "cpus": format_cpus(os.sched_getaffinity(0)),  # where the agent runs (tracer.cpus)
            "sampling": self.cfg.sampling,
            "attach": self.tracer.attach_mode if self.tracer else None,
            "bpf_object": self.tracer.object_path.name if self.tracer else None,  # -compat: kernel < 6.2
            "backend": self.tracer.backend if self.tracer else None,
            "influxdb": self.writer.stats.as_dict() if self.writer else None,
            "clock_pairs_unwritten": self.clock.unwritten if self.clock else 0,
            "write_errors": self.write_errors,
        }

    def run(self, ready=None) -> int:
        """Run until signalled. `ready(msg)` is called once every hook is attached (or with
        'error: ...' if start-up failed). Returns the exit code."""
        cfg = self.cfg
        for d in (cfg.run_dir, cfg.spool_dir):
            d.mkdir(parents=True, exist_ok=True)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda s, f: setattr(self, "stop_reason", signal.Signals(s).name))
        server = sel = None
        rc = 0
        try:
            self._place()
            self.remove_stale()
            self.tracer = Tracer(cfg.bpf_object, cfg.flows, cfg.vxlan_ports, cfg.ring_mb << 20, cfg.attach,
                                 cfg.udp_trace_port, cfg.backend)
            self.spool = Spool(cfg.spool_dir, cfg.rotate_mb << 20, max_bytes=cfg.spool_max_mb << 20,
                               min_free_bytes=cfg.spool_min_free_mb << 20)
            for tp in cfg.tracepoints:
                self.add(tp)
            self.clock = Clock(cfg.spool_dir / "clock.jsonl", cfg.clock_offset_ns, cfg.clock_drift_ppm, cfg.clock_t0_ns)
            self.clock.record()
            if cfg.influxdb:
                ep = Endpoint(cfg.influxdb.url, cfg.influxdb.database, cfg.influxdb.user, cfg.influxdb.password,
                              cfg.influxdb.retention_policy)
                self.writer = Writer(ep, cfg.outbox, log=self.log, max_outbox_bytes=cfg.outbox_max_mb << 20)
            server = control_socket(cfg.socket_path)
            server.listen(8)
            server.setblocking(False)
            sel = selectors.DefaultSelector()
            sel.register(server, selectors.EVENT_READ, None)
            self._write_stats()
            self.log(f"agent ready: {len(self.tps)} tracepoints attached ({self.tracer.attach_mode}), spool {cfg.spool_dir}, "
                     f"CPUs {format_cpus(os.sched_getaffinity(0))}")
            if ready:
                ready(f"ready {len(self.tps)} ({self.tracer.object_path.name})")
            self._loop(sel, server, self.clock)
        except Exception as e:  # noqa: BLE001 - any error: report, then detach everything below
            msg = f"{type(e).__name__}: {e}"
            verifier_log = getattr(e, "log", "")
            if verifier_log:
                msg += "\n" + verifier_log
            self.log(f"agent error: {msg}")
            if ready:
                ready(f"error: {msg}")
            rc = 1
        finally:
            rc = self._shutdown(sel, server) or rc
        return rc

    def _loop(self, sel, server, clock: Clock) -> None:
        tracer = self.started_tracer()
        ring = tracer.ring
        pacer = Pacer(self.cfg.poll_ms / 1000, ring.size // EVENT.itemsize, tracer.ncpus)
        next_tick = time.monotonic() + 1
        end_of_life = time.monotonic() + self.cfg.lifetime_s
        while self.stop_reason is None:
            if time.monotonic() > end_of_life:
                self.stop_reason = f"lifetime of {self.cfg.lifetime_s} s reached (nobody stopped the agent)"
                break
            now = time.monotonic()
            events = self._ready_events(now)
            if len(events):
                self._take(events)
            if now >= next_tick:
                clock.record()
                self._health(self._write_stats())
                next_tick = now + 1
            if self.writer:
                self.writer.tick()
            pending = ring.pending_bytes() // EVENT.itemsize
            wait = pacer.wait(now, ring.consumed + pending, pending)
            # a big batch means more is waiting: don't sleep
            for key, _ in sel.select(timeout=0 if len(events) > TAKE_EVENTS else min(wait, max(0.0, next_tick - now))):
                if key.data is None:
                    conn, _ = server.accept()
                    conn.setblocking(True)
                    conn.settimeout(2)
                    self._serve(conn)
        self.log(f"agent stopping ({self.stop_reason})")

    def _ready_events(self, now: float):
        """What the ring holds once it is worth a spool write: a batch of TAKE_EVENTS, or whatever
        is there TAKE_DELAY_S after the last take. A write per 5 ms poll of a few events (sampling,
        light traffic) cost the agent a quarter of a core (bench/overhead.py, docs/benchmarks.md).
        Live events' wall times do not depend on when they are read (Clock.offsets)."""
        tracer = self.started_tracer()
        if tracer.ring.pending_bytes() >= TAKE_EVENTS * EVENT.itemsize:
            return tracer.read(flush=False)
        if now - self._last_take < TAKE_DELAY_S:
            return ()
        self._last_take = now
        return tracer.read()  # with what the CPUs still stage

    def _take(self, events) -> None:
        """A batch from the ring: into the spool, and into InfluxDB when raw events go there."""
        assert self.spool is not None  # opened before the first read
        self.spool.write(events)
        if self.writer and self.cfg.influxdb and self.cfg.influxdb.raw_events and self.clock:
            self.writer.add(lineproto.events(events, self.cfg.run_id, self.cfg.host, self.names,
                                             self.clock.offsets(events["ts_ns"])))

    def _health(self, stats: dict) -> None:
        if self.writer and self.clock:
            self.writer.add(lineproto.agent(stats, self.cfg.run_id, self.clock.wall.now()))

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            if not peer_allowed(conn):
                conn.sendall(b'{"ok": false, "error": "permission denied"}\n')
                return
            try:
                req = json.loads(conn.makefile("r").readline())
            except (ValueError, OSError) as e:
                req = {"cmd": None, "error": str(e)}
            conn.sendall((json.dumps(control.dispatch(self, req)) + "\n").encode())

    def _write_stats(self) -> dict:
        st = self.stats()
        try:
            _write_atomic(self.cfg.spool_dir / "stats.json", json.dumps(st, indent=1))
        except OSError as e:  # a full disk: the control socket and InfluxDB still have the stats
            self._write_failed("stats.json", e)
        if self.clock and self.clock.unwritten:
            self._write_failed("clock.jsonl", self.clock.error)
        return st

    def _write_failed(self, what: str, e: OSError | str) -> None:
        """Said once per file: the agent goes on tracing (the spool counts its own losses)."""
        if what not in self.write_errors:
            self.write_errors[what] = str(e)
            self.log(f"agent: cannot write {what} ({e}); tracing goes on")

    def _shutdown(self, sel, server) -> int:
        rc = 0
        if self.tracer is not None:
            problems = self.tracer.detach_all()  # first: no event can arrive after this
            if problems:
                self.log("detach problems: " + "; ".join(problems))
                rc = 1
            if self.spool is not None:
                try:  # then what is still in the ring goes to the spool
                    while len(ev := self.tracer.read()):
                        self._take(ev)
                except Exception as e:  # noqa: BLE001
                    self.log(f"final drain failed: {e}")
                    rc = 1
                self._health(self._write_stats())
                self.spool.close()
            if self.writer:  # what InfluxDB does not take within the grace stays in the outbox
                st = self.writer.close(timeout_s=10)
                if st.backlog_batches:
                    self.log(f"influxdb: {st.backlog_batches} batches not sent ({st.last_error}); kept in {self.cfg.outbox}")
                self._write_stats()
            self.tracer.close()
            self.cfg.state_file.unlink(missing_ok=True)
        if self.clock:
            self.clock.close()
        if server:
            sel.close()
            server.close()
            self.cfg.socket_path.unlink(missing_ok=True)
        self.log(f"agent stopped: {len(self.tps)} hooks detached")
        return rc
