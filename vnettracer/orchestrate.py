"""Run a playbook through ansible-runner: the one place the Python side talks to Ansible.

Host keys are checked against the known_hosts the inventory names, the interpreter is pinned,
Ansible's state (ANSIBLE_HOME, temp dirs, ssh control sockets) stays in the run's own folder,
secrets travel in a 0600 vars file that is deleted after the run (never in env or command line,
which runner records in its artifacts), and failures come back naming host, task and message.

A playbook hands data back to Python through tasks whose name starts with "report:" — their
results are collected per host in `HostResult.reports`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from vnettracer import ROOT
from vnettracer.errors import VntError
from vnettracer.procs import alive, cmdline, descendants, parent

REPORT_PREFIX = "report:"


@dataclass
class Failure:
    host: str
    task: str
    msg: str
    unreachable: bool = False

    def __str__(self) -> str:
        what = "unreachable" if self.unreachable else f"task '{self.task}'"
        return f"{self.host}: {what}: {self.msg}"


@dataclass
class HostResult:
    ok: int = 0
    changed: int = 0
    failed: int = 0
    unreachable: int = 0
    skipped: int = 0
    reports: dict[str, Any] = field(default_factory=dict)  # "report: X" task name -> its result


@dataclass
class PlaybookResult:
    playbook: str
    status: str  # runner's: successful, failed, timeout, canceled
    rc: int
    hosts: dict[str, HostResult]
    failures: list[Failure]
    artifacts: Path
    seconds: float

    @property
    def ok(self) -> bool:
        return self.status == "successful" and not self.failures

    def raise_for_failures(self) -> "PlaybookResult":
        if not self.ok:
            n = len({f.host for f in self.failures})
            if self.failures:
                raise VntError(f"playbook {self.playbook} failed on {n} host{'s' if n != 1 else ''}",
                               [str(f) for f in self.failures])
            raise VntError(f"playbook {self.playbook} failed ({self.status}, rc {self.rc})",
                           self.errors() + [f"runner artifacts: {self.artifacts}"])
        return self

    def errors(self) -> list[str]:
        """Ansible's own [ERROR] lines (syntax errors and the like, which belong to no host)."""
        try:
            lines = (self.artifacts / "stdout").read_text(errors="replace").splitlines()
        except OSError:
            return []
        out = []
        for i, ln in enumerate(lines):
            if "[ERROR]" in ln or ln.startswith("ERROR!"):
                out.append(" ".join([ln.strip()] + [x.strip() for x in lines[i + 1:i + 3] if x.strip()])[:300])
        return out[:5]

    def changed(self) -> int:
        return sum(h.changed for h in self.hosts.values())


def _failure_msg(res: dict) -> str:
    if res.get("censored"):
        return res["censored"]
    msg = " ".join(str(res.get("msg") or "").split())
    if msg == "non-zero return code" and res.get("stderr"):  # a command: what it said matters, not that
        msg = ""
    for key in ("stderr", "module_stderr", "reason"):
        val = res.get(key)
        if val and not msg:
            msg = " ".join(str(val).split())
    return msg[:500] if msg else json.dumps(res)[:500]


def _end_playbooks() -> None:
    """End the ansible-playbook processes this process started, and their workers. Ansible 2.19
    gives each worker its own session, so runner's killpg() on cancel would leave them orphaned:
    signal each by pid. Only that tree: our other children (the lab's sshd) must live on, the
    clean-up after an interruption still talks to the hosts through them."""
    me = os.getpid()
    roots = [p for p in descendants(me) if parent(p) == me and "ansible-playbook" in cmdline(p)]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = [d for r in roots for d in descendants(r) + [r]]
        for p in pids:
            try:
                os.kill(p, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 2
        while pids and time.monotonic() < deadline:
            pids = [p for p in pids if alive(p)]
            time.sleep(0.05)
        if not pids:
            return


def _close_masters(cp_dir: str) -> None:
    """Ask ssh ControlPersist masters (detached, ours) to exit instead of idling on."""
    for sock in Path(cp_dir).iterdir():
        subprocess.run(["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "vnt-control"],
                       capture_output=True, timeout=10)


def run_playbook(
    name: str,
    inventory: Path,
    workdir: Path,
    extravars: dict[str, Any] | None = None,
    secrets: dict[str, Any] | None = None,
    limit: str | None = None,
    tags: str | None = None,
    progress: Callable[[str], None] | None = None,
    timeout_s: int = 1800,
) -> PlaybookResult:
    """Run playbooks/NAME.yml on `inventory`; runner state goes under workdir/ansible/.

    `progress` is called with one short line per task start and per host failure.
    """
    import ansible_runner  # slow import: only when a playbook actually runs

    playbook = ROOT / "playbooks" / f"{name}.yml"
    if not playbook.is_file():
        raise VntError(f"no playbook {playbook}")
    if not inventory.is_file():
        raise VntError(f"inventory {inventory} does not exist")
    pdd = (workdir / "ansible").resolve()
    for sub in ("home", "tmp"):
        (pdd / sub).mkdir(parents=True, exist_ok=True)
    cp_dir = tempfile.mkdtemp(prefix="vnt-cp-")  # ssh control sockets need a short path
    venv_bin = str(Path(sys.executable).parent)
    env = {
        "PATH": f"{venv_bin}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "ANSIBLE_HOST_KEY_CHECKING": "True",
        "ANSIBLE_HOME": str(pdd / "home"),
        "ANSIBLE_LOCAL_TEMP": str(pdd / "tmp"),
        "ANSIBLE_REMOTE_TEMP": "/tmp/.vnt-ansible",
        "ANSIBLE_SSH_CONTROL_PATH_DIR": cp_dir,
        "ANSIBLE_SSH_ARGS": "-o ControlMaster=auto -o ControlPersist=30s",
        "ANSIBLE_PIPELINING": "True",
        "ANSIBLE_ROLES_PATH": str(ROOT / "roles"),
        "ANSIBLE_PYTHON_INTERPRETER": "/usr/bin/python3",
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORKS": "20",
    }
    cmdline = []
    secrets_file = None
    if secrets:
        fd, secrets_file = tempfile.mkstemp(prefix="secrets-", suffix=".json", dir=pdd / "tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(secrets, f)
        cmdline += ["-e", f"@{secrets_file}"]
    if tags:
        cmdline += ["--tags", tags]

    hosts: dict[str, HostResult] = {}
    failures: list[Failure] = []

    def on_event(ev: dict) -> bool:
        kind, data = ev.get("event", ""), ev.get("event_data", {})
        host, task = data.get("host", ""), (data.get("task") or "").strip()
        if kind == "playbook_on_task_start" and progress:
            progress(f"{name}: {task}")
        elif kind == "runner_on_ok" and task.startswith(REPORT_PREFIX):
            res = data.get("res", {})
            hosts.setdefault(host, HostResult()).reports[task[len(REPORT_PREFIX):].strip()] = res.get("msg", res)
        elif kind in ("runner_on_failed", "runner_on_unreachable") and not data.get("ignore_errors"):
            f = Failure(host, task, _failure_msg(data.get("res", {})), unreachable=kind == "runner_on_unreachable")
            failures.append(f)
            if progress:
                progress(f"{name}: FAILED {f}")
        return True

    interrupted: list[int] = []

    def on_signal(signum, frame):
        interrupted.append(signum)

    def cancel() -> bool:
        if interrupted:
            _end_playbooks()
        return bool(interrupted)

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    t0 = time.monotonic()
    try:
        r = ansible_runner.run(
            private_data_dir=str(pdd),
            playbook=str(playbook),
            inventory=str(inventory.resolve()),
            extravars=extravars or {},
            envvars=env,
            cmdline=" ".join(cmdline) or None,
            limit=limit,
            suppress_env_files=True,
            quiet=True,
            event_handler=on_event,
            timeout=timeout_s,
            ident=f"{name}-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}",
            cancel_callback=cancel,
            settings={"pexpect_timeout": 0.5},  # how often runner polls cancel()
        )
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        if secrets_file:
            os.unlink(secrets_file)
        _close_masters(cp_dir)
        shutil.rmtree(cp_dir, ignore_errors=True)
    if interrupted:
        raise KeyboardInterrupt
    stats = r.stats or {}
    for key, attr in (("ok", "ok"), ("changed", "changed"), ("failures", "failed"), ("dark", "unreachable"),
                      ("skipped", "skipped")):
        for host, n in (stats.get(key) or {}).items():
            setattr(hosts.setdefault(host, HostResult()), attr, n)
    return PlaybookResult(name, r.status, r.rc, hosts, failures, Path(r.config.artifact_dir),
                          time.monotonic() - t0)
