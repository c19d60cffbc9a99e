"""Action `vnt_host`: what vnettracer needs to know of a host, from one shell command and no Python
module run (Ansible's setup module, or any module, costs a quarter of a core-second per host:
seconds for 16 hosts; every task costs the controller tens of ms per host, so this is one task
where it was nine). Returns:

- host: hostname, kernel, distribution and OS family (os-release ID/ID_LIKE), the Python Ansible
  runs there, BTF (CO-RE needs it), CPUs, memory, cgroup v2 mounts (sockops tagging attaches
  there) and bpffs mounts;
- address: the address other hosts reach this one at on the management network (InfluxDB's
  listener, the clock probes): `address` when given (vnt_address), else `connect_to` (ansible_host)
  when it is an IP address, else the address the host's sshd took the controller's connection on
  (a second command, without become: sudo drops SSH_CONNECTION). A name is not used as such: on
  the host itself it often resolves to 127.0.1.1 (Debian's /etc/hosts). None found fails, unless
  `address_needed` is false (InfluxDB given its own address): then it is empty;
- missing: of `packages` ({Debian: [...], RedHat: [...]}), those that were not installed, for the
  host's family, then installed by apt or dnf (a module run only there) unless `install` is false:
  then they fail the task; so does a family other than these two when packages are asked for;
- changed: whether any of `dirs` had to be made (0755), or a package installed;
- msg: the host's facts with its address (`report: host` in tasks/probe.yml: what `vnettracer
  hosts check` and the run's facts stage show).
"""

from __future__ import annotations

import re
import shlex

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

FAMILIES = {"Debian": ("debian", "ubuntu"), "RedHat": ("rhel", "fedora", "centos")}

# $1: Python; $2, $3: Debian's and RedHat's package lists (words); then the folders to make
SCRIPT = r"""
f=/etc/os-release; test -e "$f" || f=/usr/lib/os-release;
( . "$f" 2>/dev/null; echo "os_id ${ID:-}"; echo "os_like ${ID_LIKE:-}";
  echo "os_name ${PRETTY_NAME:-${NAME:-}}" );
echo "hostname $(uname -n)"; echo "kernel $(uname -r)";
echo "python $("$1" -V 2>&1 | sed -n 's/^Python //p')";
if test -e /sys/kernel/btf/vmlinux; then echo btf yes; else echo btf no; fi;
echo cpus "$(nproc)";
awk '/^MemTotal:/ {print "memory_kb", $2}' /proc/meminfo;
findmnt -rn -t cgroup2,bpf -o FSTYPE,TARGET;
set -f;
if test -n "$2" && command -v dpkg-query >/dev/null 2>&1; then
  dpkg-query -W -f='pkgdeb ${Package} ${db:Status-Status}\n' $2 2>/dev/null; fi;
if test -n "$3" && command -v rpm >/dev/null 2>&1; then
  rpm -q --qf 'pkgrpm %{NAME}\n' $3 2>/dev/null | grep '^pkgrpm '; fi;
shift 3; if test $# -gt 0; then mkdir -pv -m 0755 "$@" | sed 's/^/made /'; fi; exit 0
"""

SSH_CONNECTION = 'set -- $SSH_CONNECTION; echo "$3"'
LITERAL = re.compile(r"^[0-9.]+$|.*:")  # an IPv4 address, or IPv6 (a colon)


def parse(out: str) -> tuple[dict, set[str], set[str], bool]:
    """The host's facts, the packages dpkg and rpm say are installed, and whether a folder was made."""
    kv: dict[str, str] = {}
    mounts: dict[str, list[str]] = {"cgroup2": [], "bpf": []}
    deb: set[str] = set()
    rpm: set[str] = set()
    made = False
    for line in out.splitlines():
        key, _, rest = line.strip().partition(" ")
        if key in mounts:
            mounts[key].append(rest)
        elif key == "pkgdeb" and rest.endswith(" installed"):
            deb.add(rest.split(" ", 1)[0])
        elif key == "pkgrpm":
            rpm.add(rest)
        elif key == "made":
            made = True
        elif key and key not in kv:
            kv[key] = rest
    ids = [kv.get("os_id", "")] + kv.get("os_like", "").split()
    family = next((f for f, names in FAMILIES.items() if set(ids) & set(names)), (kv.get("os_id") or "unknown").capitalize())
    host = {"hostname": kv.get("hostname", "").split(".")[0], "kernel": kv.get("kernel", ""),
            "distribution": kv.get("os_name", ""), "os_family": family, "python": kv.get("python", ""),
            "cpus": kv.get("cpus", ""), "memory_mb": int(kv.get("memory_kb") or 0) // 1024,
            "btf": kv.get("btf") == "yes", "cgroup2": mounts["cgroup2"], "bpffs": mounts["bpf"]}
    return host, deb, rpm, made


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("python", "address", "address_needed", "connect_to", "packages", "install", "dirs"))

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        args = self._task.args
        packages = args.get("packages") or {}
        lists = [" ".join(packages.get(f) or []) for f in FAMILIES]
        cmd = "sh -c " + shlex.join([SCRIPT, "sh", str(args.get("python") or "python3"), *lists,
                                     *map(str, args.get("dirs") or [])])
        res = self._low_level_execute_command(cmd)
        if res["rc"] != 0:
            raise AnsibleActionFail(f"host probe failed (rc {res['rc']}): {res['stderr'].strip()}")
        host, deb, rpm, made = parse(res["stdout"])
        address = self._address(args)
        result.update(host=host, address=address, changed=made, msg={**host, "address": address})
        if packages:
            if host["os_family"] not in FAMILIES:
                raise AnsibleActionFail(f"vnettracer supports Debian and RedHat families, not {host['os_family']} "
                                        f"({host['distribution']})")
            have = deb if host["os_family"] == "Debian" else rpm
            result["missing"] = [p for p in packages.get(host["os_family"]) or [] if p not in have]
            if result["missing"]:
                self._install(host["os_family"], result["missing"], bool(args.get("install", True)), task_vars)
                result["changed"] = True
        return result

    def _install(self, family: str, names: list[str], install: bool, task_vars) -> None:
        if not install:
            raise AnsibleActionFail(f"missing packages: {', '.join(names)}")
        module, extra = ("ansible.legacy.apt", {"update_cache": True}) if family == "Debian" else ("ansible.legacy.dnf", {})
        try:
            res = self._execute_module(module_name=module, module_args={"name": names, "state": "present", **extra},
                                       task_vars=task_vars)
        finally:
            self._remove_tmp_path(self._connection._shell.tmpdir)
        if res.get("failed"):
            raise AnsibleActionFail(f"installing {', '.join(names)}: {res.get('msg', '')}".strip())

    def _address(self, args: dict) -> str:
        given, target = str(args.get("address") or ""), str(args.get("connect_to") or "")
        if given:
            return given
        if LITERAL.match(target):
            return target
        res = self._low_level_execute_command(SSH_CONNECTION, sudoable=False)
        addr = res["stdout"].strip() if res["rc"] == 0 else ""
        if not addr and args.get("address_needed", True):
            raise AnsibleActionFail(f"cannot tell the address other hosts reach this host at: ansible_host {target} "
                                    "is a name and the connection is not ssh; set vnt_address for it in the inventory")
        return addr
