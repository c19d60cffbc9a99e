"""Stage tagging: packet ids on the traced hosts through roles/tagging (the patched kernel's sysctl,
else a sockops program), undone once the measurement ends."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from vnettracer import BPF_OBJECTS
from vnettracer.errors import VntError
from vnettracer.stages import Context, Stage
from vnettracer.stages.hosts import RunHosts

TAG_OBJECT = BPF_OBJECTS / "tag.bpf.o"


def tagging_vars(hosts: RunHosts) -> dict:
    """What playbooks/tagging.yml gets, but for the state (present, or absent to undo)."""
    exp = hosts.exp
    return {"tagging_mode": exp.tagging.mode, "tagging_udp_port": exp.tagging.udp_port,
            "tagging_bpf_object": str(TAG_OBJECT), "tagging_bpf_shared": hosts.shares_controller,
            "tagging_netns_by_host": {h: [c.netns for c in hs.containers.values()] for h, hs in exp.host_names().items()}}


def tagging(hosts: RunHosts, state: str, workdir: Path, progress: Callable[[str], None] | None = None) -> dict[str, dict]:
    """'present' (per host: the mode it chose) or 'absent' (undo; per host: the sockops counters)."""
    if state == "present" and not TAG_OBJECT.is_file():
        raise VntError(f"{TAG_OBJECT} is missing; run `make bpf`")
    r = hosts.play("tagging", workdir, progress=progress, extravars={**tagging_vars(hosts), "tagging_state": state})
    return {h: t or {} for h, t in hosts.reports(r, "tagging").items()}


class TaggingStage(Stage):
    """Undone from the start: roles/tagging records each change before it makes it, so a tagging
    cut short is undone as well."""

    name = "tagging"
    undo_from_start = True

    def run(self, ctx: Context) -> dict:
        tags = tagging(ctx.hosts, "present", ctx.dir, progress=ctx.say("tagging"))
        ctx.meta["tagging"] = tags
        return {"modes": {h: t.get("mode") for h, t in tags.items()}}

    def undo(self, ctx: Context) -> None:
        undone = tagging(ctx.hosts, "absent", ctx.dir, progress=ctx.say("collect"))
        for h, t in undone.items():
            ctx.meta.setdefault("tagging", {}).setdefault(h, {})["counters"] = t.get("counters", {})
