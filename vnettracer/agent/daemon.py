"""Starting the agent: in the foreground, or detached (double fork, its own session, a pid file)
returning once every hook is attached (`hostcli agent run [--daemon]`)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from vnettracer.agent.agent import Agent
from vnettracer.agent.config import AgentConfig, load_config


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
