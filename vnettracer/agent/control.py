"""The agent's control socket: one table of commands, used by the agent (dispatch), by
`python -m vnettracer.hostcli agent ctl` (requests from the command line) and so by
vnettracer/runtime.py, which runs that command over ssh. A request is one JSON line
{"cmd": NAME, ...}; the answer one JSON line {"ok": bool, ...}.
"""

from __future__ import annotations

import json
import os
import socket
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional


@dataclass(frozen=True)
class Command:
    help: str
    key: Optional[str]  # the request's argument field, None: no argument
    parse: Callable[[Optional[str]], Any]  # the command line's argument -> that field
    run: Callable[[Any, dict], dict]  # (agent, request) -> answer fields


def _names(arg: Optional[str]) -> list:
    return [n for n in (arg or "").split(",") if n]


def _set(agent, req: dict) -> dict:
    agent.set_attached(list(req["names"]))
    return {"attached": sorted(agent.tps)}


def _sampling(agent, req: dict) -> dict:
    agent.cfg.sampling = int(req["n"])
    agent.tracer.set_sampling(agent.cfg.sampling)
    return {}


def _add(agent, req: dict) -> dict:
    from vnettracer.agent.config import TracepointConfig

    agent.add(TracepointConfig.parse(req["tracepoint"]))
    return {}


def _stop(agent, req: dict) -> dict:
    agent.stop_reason = "stop requested"
    return {}


COMMANDS = {
    "stats": Command("the agent's counters and state", None, lambda a: None, lambda ag, r: {"stats": ag.stats()}),
    "add": Command("attach one more tracepoint (JSON of a tracepoint config)", "tracepoint",
                   lambda a: json.loads(a or "{}"), _add),
    "remove": Command("detach one tracepoint by name", "name", lambda a: a, lambda ag, r: ag.remove(r["name"]) or {}),
    "set": Command("exactly these configured tracepoints attached (comma-separated; empty: none)", "names",
                   _names, _set),
    "sampling": Command("keep 1 in N packets", "n", lambda a: int(a or 1), _sampling),
    "stop": Command("stop the agent (every hook detached)", None, lambda a: None, _stop),
}


def build_request(cmd: str, arg: Optional[str] = None) -> dict:
    c = COMMANDS[cmd]
    return {"cmd": cmd, **({c.key: c.parse(arg)} if c.key else {})}


def dispatch(agent, req: dict) -> dict:
    """The answer to one request. A bad request is answered, never raised: it must not stop the agent."""
    cmd = req.get("cmd") if isinstance(req, dict) else None
    c = COMMANDS.get(cmd) if isinstance(cmd, str) else None
    if c is None:
        return {"ok": False, "error": f"unknown cmd {cmd!r}; known: {', '.join(COMMANDS)}"}
    try:
        return {"ok": True, **c.run(agent, req)}
    except Exception as e:  # noqa: BLE001
        return {"ok": False, "error": f"{type(e).__name__}: {e}"}


def control_socket(path: Path) -> socket.socket:
    """The agent's control socket: mode 0600 from the start (bound under a umask), replacing a stale one."""
    path.unlink(missing_ok=True)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        server.bind(str(path))
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    return server


def peer_allowed(conn: socket.socket) -> bool:
    """Only root and the agent's own user may command it (SO_PEERCRED: pid, uid, gid of the peer)."""
    _, uid, _ = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    return uid in (0, os.geteuid())


def request(socket_path: Path, req: dict, timeout: float = 10) -> dict:
    """One control request to a running agent."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(socket_path))
        s.sendall((json.dumps(req) + "\n").encode())
        return json.loads(s.makefile("r").readline())
