"""Processes: is one alive, and which ones did we start (descendants). We only ever signal
processes by pid that we started ourselves or that live in the lab's own namespaces."""

from __future__ import annotations

import os


def alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(") ", 1)[1][:1] != "Z"
    except (OSError, IndexError):
        return False


def descendants(pid: int) -> list[int]:
    """All processes below `pid`, deepest first."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(") ", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], list(children.get(pid, []))
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out[::-1]


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def parent(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(") ", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def started_at(pid: int) -> float | None:
    """When the process started (seconds since the epoch), or None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            ticks = int(f.read().rsplit(") ", 1)[1].split()[19])
        with open("/proc/stat") as f:
            btime = next(int(ln.split()[1]) for ln in f if ln.startswith("btime "))
    except (OSError, IndexError, ValueError, StopIteration):
        return None
    return btime + ticks / os.sysconf("SC_CLK_TCK")


def from_pidfile(pidfile, *needles: str) -> int | None:
    """The live process a pidfile names, if it really is the one that wrote it: started no later
    than the file was written (a recycled pid starts after) and its command line holds `needles`.
    None for a missing, unreadable or stale pidfile: such a pid is never signalled."""
    try:
        pid = int(open(pidfile).read().strip())
        written = os.stat(pidfile).st_mtime
    except (OSError, ValueError):
        return None
    start = started_at(pid)
    if pid <= 1 or start is None or not alive(pid) or start > written + 1.0:
        return None
    cmd = cmdline(pid)
    return pid if all(n in cmd for n in needles) else None
