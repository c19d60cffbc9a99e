"""Stage deploy: the tracer agents started through roles/tracer, every hook attached. The spec
decides what each host traces; agent_configs turns it into one agent config per host (tracepoint
ids, namespaces, flows, sampling, the lab's clock emulation). Its undo is the collect stage
(stages/collect.py): agents never outlive their run, whether it succeeds or fails.

start/stop/status are also `vnettracer trace start|stop|status`."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from vnettracer import BPF_OBJECTS, BPF_SOURCES
from vnettracer.errors import VntError
from vnettracer.orchestrate import PlaybookResult
from vnettracer.spec import Experiment
from vnettracer.stages import Context, Runner, Stage
from vnettracer.stages.hosts import RunHosts

BPF_OBJECT = BPF_OBJECTS / "trace.bpf.o"


def agent_configs(hosts: RunHosts, run_id: str, clock_t0_ns: int = 0) -> dict[str, dict]:
    """Agent config of every host that has tracepoints (AgentConfig fields, JSON-ready)."""
    exp = hosts.exp
    ids = exp.tracepoint_ids
    specs = exp.host_names()
    clocks = exp.clock_errors()
    per_host: dict[str, list[dict]] = {}
    for tp in exp.tracepoints:
        if tp.kind != "tc":
            raise VntError(f"tracepoint {tp.name}: kind '{tp.kind}' is not supported by the agent yet (use tc)")
        netns = specs[tp.host].containers[tp.netns].netns if tp.netns else None
        per_host.setdefault(tp.host, []).append(
            {"id": ids[tp.name], "name": tp.name, "netns": netns, "device": tp.device, "direction": tp.direction})
    flows = [{k: (str(v) if v is not None and k in ("src", "dst") else v) for k, v in f.model_dump().items()}
             for f in exp.flows]
    common = {
        "run_id": run_id, "flows": flows, "vxlan_ports": exp.tracer.vxlan_ports, "sampling": exp.tracer.sampling,
        "attach": exp.tracer.attach, "backend": exp.tracer.backend, "lifetime_s": exp.tracer.lifetime_s, "udp_trace_port": exp.tagging.udp_port,
        "rotate_mb": exp.sinks.spool.rotate_mb, "spool_max_mb": exp.sinks.spool.max_mb,
        "spool_min_free_mb": exp.sinks.spool.min_free_mb, "outbox_max_mb": exp.sinks.influxdb.outbox_max_mb,
        "clock_t0_ns": clock_t0_ns,
    }
    none = {"offset_ns": 0, "drift_ppm": 0.0}
    pinned = pinned_cpus(exp) if exp.tracer.cpus == "auto" else {}
    return {host: {"host": host, "tracepoints": tps, **common, "clock_offset_ns": clocks.get(host, none)["offset_ns"],
                   "clock_drift_ppm": clocks.get(host, none)["drift_ppm"], "cpus": exp.tracer.cpus,
                   "avoid_cpus": sorted(pinned.get(host, ()))}
            for host, tps in per_host.items()}


def pinned_cpus(exp: Experiment) -> dict[str, set[int]]:
    """Per host, the CPUs its workloads' clients and servers are pinned to (workloads' `pin`)."""
    out: dict[str, set[int]] = {}
    for w in exp.workload_endpoints():
        for side in ("client", "server"):
            if w[f"{side}_cpu"] is not None:
                out.setdefault(w[f"{side}_host"], set()).add(w[f"{side}_cpu"])
    return out


def start_vars(hosts: RunHosts, run_id: str, clock_t0_ns: int = 0) -> dict:
    """What playbooks/trace-start.yml gets (roles/tracer, state started)."""
    if not BPF_OBJECT.is_file():
        raise VntError(f"{BPF_OBJECT} is missing; run `make bpf`")
    return {"tracer_run_id": run_id, "tracer_configs": agent_configs(hosts, run_id, clock_t0_ns),
            "tracer_bpf_object": str(BPF_OBJECT), "tracer_bpf_sources": str(BPF_SOURCES),
            "tracer_bpf_shared": hosts.shares_controller and not hosts.exp.uses_bcc}


def start(hosts: RunHosts, run_id: str, workdir: Path, progress: Callable[[str], None] | None = None,
          clock_t0_ns: int = 0, influxdb: dict | None = None) -> PlaybookResult:
    """Start the agents. influxdb: {url, database, user, password, raw_events} the agents write to
    (travels as a secret, never in extra vars)."""
    return hosts.play("trace-start", workdir, progress=progress, extravars=start_vars(hosts, run_id, clock_t0_ns),
                      secrets={"tracer_influxdb": influxdb} if influxdb else None)


def stop(hosts: RunHosts, workdir: Path, progress: Callable[[str], None] | None = None) -> PlaybookResult:
    """Stop the agents (every hook detached); their spools stay on the hosts."""
    return hosts.play("trace-stop", workdir, progress=progress)


def status(hosts: RunHosts, workdir: Path, progress: Callable[[str], None] | None = None) -> dict[str, dict]:
    """Per host: the agent's stats, or {} when no agent runs there."""
    r = hosts.play("trace-status", workdir, progress=progress)
    return {h: a or {} for h, a in hosts.reports(r, "agent").items()}


class DeployStage(Stage):
    name = "deploy"
    undo_from_start = True  # agents started on some hosts before a failure are stopped too

    def skip(self, ctx: Context) -> str | None:
        return None if ctx.exp.tracepoints else "no tracepoints"

    def run(self, ctx: Context) -> dict:
        ep, influx = ctx.endpoint, ctx.exp.sinks.influxdb
        started = start(ctx.hosts, ctx.dir.name, ctx.dir, progress=ctx.say("deploy"), clock_t0_ns=ctx.clock_t0_ns,
                        influxdb=ep and {"url": ep.url, "database": ep.database, "user": ep.user,
                                         "password": ep.password, "raw_events": influx.raw_events})
        return {"tracepoints": len(ctx.exp.tracepoints), "agents": ctx.hosts.reports(started, "agent")}

    def undo(self, ctx: Context) -> None:
        if ctx.exp.tracepoints or ctx.exp.workloads:
            from vnettracer.stages.collect import CollectStage

            Runner(ctx)(CollectStage())
