"""Filter `tag_undo`: the shell script that undoes what tasks/present.yml recorded (the host's
tagging.json), in one command: sysctls and gso_max_segs back to their values from before, the
sockops program detached when it is still attached, then its pins and the record removed.

A container or device that is gone already is not a failure (nothing to give back there); any
other failure is reported and the record kept, so that a later undo tries again."""

from __future__ import annotations

import json
import shlex

# `t CMD...`: run it; tolerate "No such file" (a namespace or pin gone) and "Cannot find device"
RUNNER = ('fail=0; t() { out=$("$@" 2>&1) || case "$out" in *"No such file"*|*"annot find"*) ;; '
          '*) printf "%s: %s\\n" "$*" "$out" >&2; fail=1;; esac; }')


def _line(argv: list) -> str:
    return "t " + " ".join(shlex.quote(str(a)) for a in argv)


def _attached(cgroup_show: str) -> bool:
    try:
        return any(p.get("name") == "vnt_tag" for p in json.loads(cgroup_show or "[]"))
    except (ValueError, AttributeError):
        return True  # unreadable: try the detach (tolerated when nothing is there)


def tag_undo(record: dict, state_file: str, cgroup_show: str = "") -> str:
    sockops = record.get("mode") == "sockops"
    lines = [RUNNER]
    for ns, (option, port) in (record.get("sysctl") or {}).items():
        lines.append(_line((["ip", "netns", "exec", ns] if ns else []) +
                           ["sysctl", "-q", "-w", f"net.ipv4.tcp_option={option}", f"net.ipv4.udp_trace_port={port}"]))
    if sockops and _attached(cgroup_show):
        lines.append(_line(["bpftool", "cgroup", "detach", record["cgroup"], "sock_ops", "pinned",
                            record["pin_dir"] + "/prog/vnt_tag"]))
    for dev, segs in (record.get("gso") or {}).items():
        ns, name = dev.split(":", 1)
        lines.append(_line(["ip", "-n", ns, "link", "set", "dev", name, "gso_max_segs", segs]))
    gone = [state_file] + ([record["pin_dir"]] if sockops else [])
    lines.append('[ "$fail" = 0 ] && rm -rf -- ' + " ".join(shlex.quote(g) for g in gone))
    lines.append('exit "$fail"')
    return "\n".join(lines)


class FilterModule:
    def filters(self):
        return {"tag_undo": tag_undo}
