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
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from vnettracer import ROOT
from vnettracer.errors import HostError, VntError
from vnettracer.procs import alive, cmdline, descendants, parent

REPORT_PREFIX = "report:"


@dataclass
class Passthrough:
    """What the user gave `vnettracer` for Ansible (its root options -v and --limit), for every
    playbook the command runs: verbosity (Ansible's output shown per task), and a host pattern
    intersected with the one the command itself limits to."""

    verbosity: int = 0
    limit: str | None = None

    def limit_with(self, own: str | None) -> str | None:
        return ":&".join(p for p in (own, self.limit) if p) or None


PASSTHROUGH = Passthrough()


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
                raise HostError(f"playbook {self.playbook} failed on {n} host{'s' if n != 1 else ''}",
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


def _remove_dead_owners(root: Path, prefix: str, before: Callable[[str], None] | None = None) -> None:
    """Folders `{prefix}{pid}-*` of ours whose process died before removing them (SIGKILL)."""
    for old in root.glob(f"{prefix}*"):
        pid = old.name[len(prefix):].split("-")[0]
        if pid.isdigit() and not alive(int(pid)) and old.stat().st_uid == os.geteuid():
            if before:
                before(str(old))
            shutil.rmtree(old, ignore_errors=True)


_SSH_SESSION: ContextVar[str | None] = ContextVar("vnt_ssh_session", default=None)


@contextmanager
def ssh_session() -> Iterator[str]:
    """The folder of ssh control sockets the playbooks run inside share: each host's ControlPersist
    master (ansible.cfg) opened by the first playbook serves the next ones, so a run's stages pay one
    ssh handshake per host, not one per host and playbook. The masters are closed on the way out.
    Nested: the outer session's folder."""
    shared = _SSH_SESSION.get()
    if shared is not None:
        yield shared
        return
    root = Path(tempfile.gettempdir())
    _remove_dead_owners(root, "vnt-cp-", _close_masters)
    cp_dir = tempfile.mkdtemp(prefix=f"vnt-cp-{os.getpid()}-", dir=root)  # control sockets need a short path
    token = _SSH_SESSION.set(cp_dir)
    try:
        yield cp_dir
    finally:
        _SSH_SESSION.reset(token)
        _close_masters(cp_dir)
        shutil.rmtree(cp_dir, ignore_errors=True)


# What a playbook run inherits from the controller's environment: nothing else (runner records its
# whole environment in the artifacts, and Ansible's local facts would carry it into the fact cache).
PASS_ENV = ("HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TERM", "SSH_AUTH_SOCK",
            "ANSIBLE_FORKS")  # a controller too small for ansible.cfg's 64 workers at once


def run_env() -> dict[str, str]:
    env = {k: os.environ[k] for k in PASS_ENV if k in os.environ}
    env["PATH"] = f"{Path(sys.executable).parent}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    env.setdefault("LANG", "C.UTF-8")  # Ansible needs a UTF-8 locale
    return env


def _secrets_root() -> Path:
    """Secrets files live in RAM (/dev/shm) where there is one, never under results/."""
    shm = Path("/dev/shm")
    return shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(tempfile.gettempdir())


def _write_secrets(secrets: dict[str, Any]) -> Path:
    """A 0600 vars file in a 0700 folder named after this process; folders of processes that died
    before removing theirs (SIGKILL) are removed here."""
    root = _secrets_root()
    _remove_dead_owners(root, "vnt-secrets-")
    d = Path(tempfile.mkdtemp(prefix=f"vnt-secrets-{os.getpid()}-", dir=root))
    f = d / "vars.json"
    fd = os.open(f, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(secrets, fh)
    return f


def _ansible_env(pdd: Path, cp_dir: str) -> dict[str, str]:
    """The project's ansible.cfg (what a plain ansible-playbook from the checkout gets too), and the
    run's own folders."""
    return {
        **run_env(),
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        # ansible-runner sets it False unless given, and the environment wins over ansible.cfg
        # (ssh then gets StrictHostKeyChecking=no first, and the first value is the one ssh takes)
        "ANSIBLE_HOST_KEY_CHECKING": "True",
        "ANSIBLE_HOME": str(pdd / "home"),
        "ANSIBLE_LOCAL_TEMP": str(pdd / "tmp"),
        "ANSIBLE_SSH_CONTROL_PATH_DIR": cp_dir,
        "ANSIBLE_NOCOLOR": "1",
    }


class _Events:
    """runner's event handler: progress lines, "report:" task results per host, failures."""

    def __init__(self, name: str, progress: Callable[[str], None] | None, verbosity: int = 0):
        self.name, self.progress, self.verbosity = name, progress, verbosity
        self.hosts: dict[str, HostResult] = {}
        self.failures: list[Failure] = []

    def __call__(self, ev: dict) -> bool:
        kind, data = ev.get("event", ""), ev.get("event_data", {})
        host, task = data.get("host", ""), (data.get("task") or "").strip()
        if self.verbosity and self.progress and kind.startswith("runner_on_") and ev.get("stdout"):
            self.progress(ev["stdout"].strip())  # -v: what ansible-playbook -v would print for the task
        if kind == "playbook_on_task_start" and self.progress:
            self.progress(f"{self.name}: {task}")
        elif kind == "runner_on_ok" and task.startswith(REPORT_PREFIX):
            res = data.get("res", {})
            self.hosts.setdefault(host, HostResult()).reports[task[len(REPORT_PREFIX):].strip()] = res.get("msg", res)
        elif kind in ("runner_on_failed", "runner_on_unreachable") and not data.get("ignore_errors"):
            f = Failure(host, task, _failure_msg(data.get("res", {})), unreachable=kind == "runner_on_unreachable")
            self.failures.append(f)
            if self.progress:
                self.progress(f"{self.name}: FAILED {f}")
        return True

    def add_stats(self, stats: dict) -> None:
        for key, attr in (("ok", "ok"), ("changed", "changed"), ("failures", "failed"), ("dark", "unreachable"),
                          ("skipped", "skipped")):
            for host, n in (stats.get(key) or {}).items():
                setattr(self.hosts.setdefault(host, HostResult()), attr, n)


class _Interrupts:
    """SIGINT/SIGTERM during a run: noted, and runner's cancel poll ends the playbooks we started."""

    def __init__(self):
        self.seen: list[int] = []

    def __enter__(self) -> "_Interrupts":
        self.old = {s: signal.signal(s, lambda signum, frame: self.seen.append(signum))
                    for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self.old.items():
            signal.signal(sig, handler)

    def cancel(self) -> bool:
        if self.seen:
            _end_playbooks()
        return bool(self.seen)


def inventory_listing(inv: Path) -> dict:
    """`ansible-inventory --list` of an inventory (any format Ansible reads): groups and hostvars."""
    exe = Path(sys.executable).parent / "ansible-inventory"  # the venv's, beside this Python
    try:
        r = subprocess.run([str(exe), "-i", str(inv), "--list"], capture_output=True, text=True, timeout=120)
        listing = json.loads(r.stdout) if r.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired, ValueError) as e:
        raise VntError(f"cannot read inventory {inv}: {e}") from None
    if not isinstance(listing, dict) or not isinstance(listing.get("_meta", {}).get("hostvars"), dict):
        raise VntError(f"cannot read inventory {inv}: {' '.join(r.stderr.split())[-300:] or 'no hosts listed'}")
    return listing


def group_members(listing: dict, group: str) -> set[str]:
    """The hosts of an inventory group, its child groups' included."""
    g = listing.get(group) or {}
    return set(g.get("hosts", [])).union(*(group_members(listing, c) for c in g.get("children", [])))


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
    import ansible_runner.interface  # slow import: only when a playbook actually runs

    playbook = ROOT / "playbooks" / f"{name}.yml"
    if not playbook.is_file():
        raise VntError(f"no playbook {playbook}")
    if not inventory.is_file():
        raise VntError(f"inventory {inventory} does not exist")
    pdd = (workdir / "ansible").resolve()
    for sub in ("home", "tmp"):
        (pdd / sub).mkdir(parents=True, exist_ok=True)
    with ssh_session() as cp_dir, _Interrupts() as interrupts:
        env = _ansible_env(pdd, cp_dir)
        secrets_file = _write_secrets(secrets) if secrets else None
        cmdline = (["-e", f"@{secrets_file}"] if secrets_file else []) + (["--tags", tags] if tags else [])
        events = _Events(name, progress, PASSTHROUGH.verbosity)
        t0 = time.monotonic()
        r = None
        try:
            r = ansible_runner.interface.init_runner(
                private_data_dir=str(pdd), playbook=str(playbook), inventory=str(inventory.resolve()),
                extravars=extravars or {}, envvars=env, cmdline=" ".join(cmdline) or None,
                limit=PASSTHROUGH.limit_with(limit), verbosity=PASSTHROUGH.verbosity or None,
                suppress_env_files=True, quiet=True, event_handler=events, timeout=timeout_s,
                ident=f"{name}-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}", cancel_callback=interrupts.cancel,
                settings={"pexpect_timeout": 0.5},  # how often runner polls cancel()
            )
            # runner starts from the controller's whole environment: keep only ours and what it adds
            r.config.env = {k: v for k, v in r.config.env.items() if k in env or os.environ.get(k) != v}
            r.run()
        finally:
            if secrets_file:
                shutil.rmtree(secrets_file.parent, ignore_errors=True)
            if r is not None:
                (Path(r.config.artifact_dir) / "command").unlink(missing_ok=True)  # runner's env dump
    if interrupts.seen:
        raise KeyboardInterrupt
    assert r is not None  # init_runner either returned or raised
    events.add_stats(r.stats or {})
    return PlaybookResult(name, r.status, r.rc, events.hosts, events.failures, Path(r.config.artifact_dir),
                          time.monotonic() - t0)
