"""Deploy stage: start, stop and query the tracer agents of an experiment through roles/tracer.

The spec decides what each host traces; this module turns it into one agent config per host
(tracepoint ids, namespaces, flows, sampling, the lab's clock emulation) and hands them to the role.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from vnettracer import ROOT, hostpkg, lab
from vnettracer.errors import VntError
from vnettracer.orchestrate import PlaybookResult, run_playbook
from vnettracer.spec import Run, load

BPF_OBJECT = ROOT / "build" / "bpf" / "trace.bpf.o"


def clock_emulation(run: Run) -> dict[str, dict]:
    """Per lab host: the emulated clock error (ns, ppm), as agents and probes apply it."""
    exp = run.experiment
    emu = exp.lab.options.clock_emulation if exp.lab else {}
    return {h: {"offset_ns": int(c.offset_us * 1000), "drift_ppm": c.drift_ppm} for h, c in emu.items()}


def agent_configs(run: Run, run_id: str, clock_t0_ns: int = 0) -> dict[str, dict]:
    """Agent config of every host that has tracepoints (AgentConfig fields, JSON-ready)."""
    exp = run.experiment
    ids = exp.tracepoint_ids
    hosts = exp.host_names()
    clocks = clock_emulation(run)
    per_host: dict[str, list[dict]] = {}
    for tp in exp.tracepoints:
        if tp.kind != "tc":
            raise VntError(f"tracepoint {tp.name}: kind '{tp.kind}' is not supported by the agent yet (use tc)")
        netns = hosts[tp.host].containers[tp.netns].netns if tp.netns else None
        per_host.setdefault(tp.host, []).append(
            {"id": ids[tp.name], "name": tp.name, "netns": netns, "device": tp.device, "direction": tp.direction})
    flows = [{k: (str(v) if v is not None and k in ("src", "dst") else v) for k, v in f.model_dump().items()}
             for f in exp.flows]
    out = {}
    for host, tps in per_host.items():
        c = clocks.get(host)
        out[host] = {
            "host": host, "run_id": run_id, "tracepoints": tps, "flows": flows,
            "vxlan_ports": exp.tracer.vxlan_ports, "sampling": exp.tracer.sampling, "attach": exp.tracer.attach,
            "udp_trace_port": exp.tagging.udp_port,
            "rotate_mb": exp.sinks.spool.rotate_mb,
            "clock_offset_ns": c["offset_ns"] if c else 0, "clock_drift_ppm": c["drift_ppm"] if c else 0.0,
            "clock_t0_ns": clock_t0_ns,
        }
    return out


def workload_list(run: Run) -> list[dict]:
    """The experiment's workloads with endpoints resolved to host, namespace and address."""
    exp = run.experiment
    hosts = exp.host_names()
    lp = exp.lab_plan()
    out = []

    def endpoint(ref: str) -> tuple[str, str | None, str]:
        host, _, cont = ref.partition("/")
        if cont:
            c = hosts[host].containers[cont]
            return host, c.netns, str(c.address)
        if lp is not None:
            h = lp.host(host)
            addr = h.underlay_ip or h.bridge_ip
            return host, None, str(addr.ip)
        if hosts[host].address is None:
            raise VntError(f"workload endpoint '{ref}': give hosts.{host}.address (or use HOST/CONTAINER)")
        return host, None, str(hosts[host].address)

    for i, w in enumerate(exp.workloads, start=1):
        (ch, cns, _), (sh, sns, saddr) = endpoint(w.client), endpoint(w.server)
        d = w.model_dump(exclude={"pin"})
        # the patched kernel's UDP trailer goes on datagrams to its port: the client sends from it too,
        # so that the replies carry an id as well
        if w.kind == "udp_echo" and exp.tagging.udp_port == w.port:
            d["client_port"] = w.port
        d.update(index=i, client_host=ch, client_netns=cns, server_host=sh, server_netns=sns, server_addr=saddr,
                 client_cpu=w.pin.client if w.pin else None, server_cpu=w.pin.server if w.pin else None)
        out.append(d)
    return out


def workloads(run: Run, run_id: str, workdir: Path, progress: Callable[[str], None] | None = None) -> list[dict]:
    """Run the workloads in order; returns each client's parsed result."""
    inventory = _inventory(run)
    wl = workload_list(run)
    r = run_playbook("workload", inventory, workdir, progress=progress, timeout_s=3600, extravars={
        "workload_list": wl, "workload_run_id": run_id,
    }).raise_for_failures()
    results = {}
    for hr in r.hosts.values():
        for key, res in hr.reports.items():
            results[int(key.removeprefix("workload "))] = res
    return [results.get(w["index"], {}) for w in wl]


def reference_host(run: Run) -> str:
    """The host every other host's clock is compared with (as the analysis chooses it)."""
    exp = run.experiment
    host_of = {tp.name: tp.host for tp in exp.tracepoints}
    if exp.paths:
        return host_of[exp.paths[0].tracepoints[0]]
    return sorted(h for h, s in exp.host_names().items() if s.role == "traced")[0]


def clock_probes(run: Run, run_id: str, phase: str, dest: Path, workdir: Path, clock_t0_ns: int,
                 progress: Callable[[str], None] | None = None) -> dict[str, int]:
    """NTP-style probes from the reference host to every other traced host (management network);
    CSVs land in dest/clock/. Returns samples per host."""
    inventory = _inventory(run)
    ref = reference_host(run)
    targets = sorted(h for h, s in run.experiment.host_names().items() if s.role == "traced" and h != ref)
    r = run_playbook("clock", inventory, workdir, progress=progress, extravars={
        "clock_reference": ref, "clock_targets": targets, "clock_phase": phase, "clock_run_id": run_id,
        "clock_dest": str(dest.resolve()), "clock_emulation": clock_emulation(run), "clock_t0_ns": clock_t0_ns,
    }).raise_for_failures()
    rep = r.hosts.get(ref)
    return {h: int(n) for h, n in ((rep.reports.get("probes") if rep else None) or {}).items()}


def _inventory(run: Run) -> Path:
    """The inventory of the experiment's hosts (the running lab's, or the experiment's). The netns
    lab's says its hosts run this venv (tracer_python); other hosts run the host package."""
    exp = run.experiment
    if exp.lab is not None:
        l = lab.require()
        if l.plan.topology != exp.lab.topology or {h.name for h in l.plan.hosts} != set(exp.host_names()):
            raise VntError(f"the lab that is up ({l.plan.topology}, hosts {', '.join(h.name for h in l.plan.hosts)}) "
                           f"is not the one {exp.name} needs; run `vnettracer lab up` with its topology")
        return l.inventory
    return run.resolve(exp.inventory.file)


def host_vars(run: Run) -> dict:
    """Extra vars of the prepare stage: the host package to install, where hosts have their own files."""
    exp = run.experiment
    plan = exp.lab_plan()
    return {} if plan is not None and plan.shares_controller else hostpkg.role_vars()


def load_one(name_or_file: str) -> Run:
    runs = load(name_or_file)
    if len(runs) > 1:
        raise VntError(f"{name_or_file} has loop variables ({len(runs)} runs); trace one run with `experiment run`")
    return runs[0]


def start(run: Run, run_id: str, workdir: Path, progress: Callable[[str], None] | None = None,
          clock_t0_ns: int = 0, influxdb: dict | None = None) -> PlaybookResult:
    """Start the agents. influxdb: {url, database, user, password, raw_events} the agents write to
    (travels as a secret, never in extra vars)."""
    if not BPF_OBJECT.is_file():
        raise VntError(f"{BPF_OBJECT} is missing; run `make bpf`")
    inventory = _inventory(run)
    configs = agent_configs(run, run_id, clock_t0_ns)
    return run_playbook("trace-start", inventory, workdir, progress=progress, extravars={
        "tracer_run_id": run_id, "tracer_configs": configs, "tracer_bpf_object": str(BPF_OBJECT),
    }, secrets={"tracer_influxdb": influxdb} if influxdb else None).raise_for_failures()


TAG_OBJECT = ROOT / "build" / "bpf" / "tag.bpf.o"


def tagging(run: Run, state: str, workdir: Path, progress: Callable[[str], None] | None = None) -> dict[str, dict]:
    """roles/tagging on the traced hosts: 'present' (per host: the mode it chose) or 'absent' (undo;
    per host: the sockops program's counters)."""
    if state == "present" and not TAG_OBJECT.is_file():
        raise VntError(f"{TAG_OBJECT} is missing; run `make bpf`")
    inventory = _inventory(run)
    r = run_playbook("tagging", inventory, workdir, progress=progress, extravars={
        "tagging_state": state, "tagging_mode": run.experiment.tagging.mode,
        "tagging_udp_port": run.experiment.tagging.udp_port,
        "tagging_bpf_object": str(TAG_OBJECT),
        "tagging_netns_by_host": {h: [c.netns for c in hs.containers.values()]
                                  for h, hs in run.experiment.host_names().items()},
    }).raise_for_failures()
    return {h: hr.reports.get("tagging") or {} for h, hr in r.hosts.items()}


def stop(run: Run, workdir: Path, progress: Callable[[str], None] | None = None) -> PlaybookResult:
    inventory = _inventory(run)
    return run_playbook("trace-stop", inventory, workdir, progress=progress).raise_for_failures()


def collect(run: Run, run_id: str, dest: Path, workdir: Path,
            progress: Callable[[str], None] | None = None) -> dict[str, int]:
    """Stop the agents and fetch their spools into dest/events/<host>/; returns files per host."""
    inventory = _inventory(run)
    r = run_playbook("collect", inventory, workdir, progress=progress, extravars={
        "collect_dest": str(dest.resolve()), "collect_run_id": run_id,
    }).raise_for_failures()
    return {h: int(hr.reports.get("files") or 0) for h, hr in r.hosts.items()}


def status(run: Run, workdir: Path, progress: Callable[[str], None] | None = None) -> dict[str, dict]:
    """Per host: the agent's stats, or {} when no agent runs there."""
    inventory = _inventory(run)
    r = run_playbook("trace-status", inventory, workdir, progress=progress).raise_for_failures()
    return {h: hr.reports.get("agent") or {} for h, hr in r.hosts.items()}


def adhoc_workdir(run: Run) -> Path:
    """Where Ansible state of `vnettracer trace ...` goes when it is run by hand."""
    base = lab.lab_dir() / "trace" if run.experiment.lab else Path(run.source).parent / ".vnettracer"
    d = base / time.strftime("%Y%m%d-%H%M%S")
    d.mkdir(parents=True, exist_ok=True)
    return d
