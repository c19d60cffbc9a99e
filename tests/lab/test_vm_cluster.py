"""The path a user's own cluster takes, end to end, on the VM lab (topology vms): Debian 12 VMs under
QEMU with their own kernel, files and clock, reached over ssh like any host.

- `experiments/vm-cluster.yml` as `make experiment NAME=vm-cluster` runs it: roles/kernel installs
  the patched kernel and the VMs really reboot into it; tags come from the kernel (TCP option, UDP
  trailer); the agent runs under systemd from the host package in a venv; InfluxDB runs under
  systemd on the db VM and holds exactly the spooled events; the VMs' real clock offsets are
  estimated from the trace and from the probes, which agree.
- The same VMs then as "your own cluster" (docs/cluster.md): an inventory experiment pointed at the
  inventory the VM lab wrote runs unchanged; the kernel and the host package found in place are
  left alone (no reboot, no reinstall).
- Failures and Ctrl-C leave no QEMU, tap, namespace or overlay behind.

Cold, this needs the patched kernel's packages (kernel-build/build.sh deb vm, reused afterwards) and
the debootstrap root (kernel-build/mkvm.sh rootfs); both are built by the first use.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import leftovers

from vnettracer import ROOT, hostpkg, lab, pipeline
from vnettracer.agent.record import F_IDENTITY, ID_TAG
from vnettracer.agent.spool import read_spool
from vnettracer.errors import VntError
from vnettracer.lab import vms

pytestmark = pytest.mark.vms
EXE = str(Path(sys.executable).parent / "vnettracer")
PATCHED = "6.1.192-vnt"


def ssh(host: str, *command: str) -> str:
    """Run a command on a VM (quoted for the remote shell); its stdout."""
    argv = lab.require().ssh_argv(host, shlex.join(command))
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=True).stdout


@pytest.fixture(scope="module")
def vm_run(root, tmp_path_factory):
    """One run of experiments/vm-cluster.yml, the lab kept up for the tests of this module."""
    results = tmp_path_factory.mktemp("results")
    os.environ["VNT_RESULTS_DIR"] = str(results)
    try:
        t0 = time.monotonic()
        (run,) = pipeline.run("vm-cluster", keep_lab=True, progress=lambda m: print(m, flush=True))
        print(f"vm-cluster: {time.monotonic() - t0:.0f} s")
        yield run
    finally:
        os.environ.pop("VNT_RESULTS_DIR", None)
        lab.down()
        assert leftovers() == []


def test_vms_reboot_into_the_patched_kernel(vm_run):
    meta = json.loads((vm_run / "meta.json").read_text())
    for host in ("host1", "host2"):
        k = meta["kernel"][host]
        assert k["before"].endswith("-cloud-amd64") and k["release"] == PATCHED, k
        assert str(k["rebooted"]).lower() == "true" and k["tcp_option"] == "0"
        assert ssh(host, "uname", "-r").strip() == PATCHED
        booted = vms.booted_kernels(lab.lab_dir() / "vms" / host)
        assert booted[0].endswith("-cloud-amd64") and booted[-1] == f"vmlinuz-{PATCHED}", booted  # a real reboot
    assert "db" not in meta["kernel"]  # only traced hosts get it


def test_packets_carry_ids_from_the_kernel(vm_run):
    meta = json.loads((vm_run / "meta.json").read_text())
    assert {h: t["mode"] for h, t in meta["tagging"].items()} == {"host1": "sysctl", "host2": "sysctl"}
    ev = np.concatenate([read_spool(h).to_pandas().to_records(index=False) for h in (vm_run / "events").iterdir()])
    for proto, what in ((6, "TCP option"), (17, "UDP trailer")):
        mine = ev[ev["l4proto"] == proto]
        tagged = float(np.mean((mine["flags"] & F_IDENTITY) == ID_TAG))
        print(f"{what}: {tagged:.2%} of {len(mine)} events identified by the kernel's id")
        assert len(mine) > 100 and tagged >= 0.99
    summary = json.loads((vm_run / "summary.json").read_text())
    rr, echo = meta["workloads"]
    made = rr["observations"] + echo["received"]  # how many the emulated VMs managed varies with the machine's load
    assert rr["observations"] > 100
    for name, p in summary["paths"].items():
        assert p["complete"] >= made and p["identity"].get("tag", 0) + p["identity"].get("trailer", 0) >= 0.99, (name, p)
        assert p["identity"].get("trailer", 0) > 0  # the UDP echo, both ways (the client sends from the trace port)


def test_agent_runs_under_systemd_from_the_host_package(vm_run):
    meta = json.loads((vm_run / "meta.json").read_text())
    agents = meta["stages"]["deploy"]["agents"]
    for host in ("host1", "host2"):
        a = agents[host]
        assert a["service"] == "systemd" and a["attached"] == 10, a
        assert a["bpf_object"] == "trace-compat.bpf.o"  # 6.1 has no bpf_cast_to_kern_ctx
        journal = ssh(host, "journalctl", "-u", f"vnettracer-agent@{vm_run.name}", "--no-pager", "-o", "cat")
        assert "agent stopping" in journal, journal[-500:]
        py = "/opt/vnettracer/venv/bin/python"
        assert ssh(host, py, "-c", "import importlib.metadata as m; print(m.version('vnettracer-host'))").strip() \
            == hostpkg.version()
        missing = ssh(host, py, "-c", "import importlib.util as u; print([m for m in ('pandas', 'ansible', 'fabric', "
                      "'matplotlib', 'pydantic', 'typer') if u.find_spec(m)])").strip()
        assert missing == "[]"  # nothing of the controller's on a traced host


def test_influxdb_under_systemd_holds_exactly_the_spooled_events(vm_run):
    from test_experiment import _check_influxdb

    assert ssh("db", "systemctl", "is-active", "vnt-influxdb").strip() == "active"  # roles/influxdb's unit
    _check_influxdb(vm_run)


def test_real_clock_offsets_from_trace_and_probes_agree(vm_run):
    summary = json.loads((vm_run / "summary.json").read_text())
    h2 = summary["clock"]["hosts"]["host2"]
    trace, probe = h2["trace"]["offset_at_start_ns"], h2["probe"]["offset_at_start_ns"]
    bt, bp = h2["trace"]["bound_ns"], h2["probe"]["bound_ns"]
    print(f"host2 - host1, real (no emulation): trace {trace / 1e3:.1f} ± {bt / 1e3:.1f} us, "
          f"probes {probe / 1e3:.1f} ± {bp / 1e3:.1f} us, disagreement {h2['disagreement_ns'] / 1e3:.1f} us")
    # the report's disagreement: the two lines compared over the run (at its start they also differ
    # by how each extrapolates its drift back). Each is within its bound of the truth (half the
    # minimum round trip under it: 150-400 us between emulated VMs), so they must overlap.
    assert h2["consistent"] and abs(h2["disagreement_ns"]) <= bt + bp
    assert bt < 1_000_000 and bp < 1_000_000
    assert "clock_emulation" not in json.loads((vm_run / "meta.json").read_text())
    report = (vm_run / "report.md").read_text()
    assert "| host2 | trace |" in report


def test_inventory_experiment_on_the_vms_runs_unchanged(vm_run, tmp_path):
    """docs/cluster.md step by step, on the inventory the VM lab wrote: nothing lab-specific."""
    inventory = yaml.safe_load((lab.lab_dir() / "inventory.yml").read_text())
    assert "vnt_netns" not in json.dumps(inventory) and inventory["all"]["vars"]["vnt_lab"] is False
    exp = yaml.safe_load((ROOT / "experiments" / "vm-cluster.yml").read_text())
    exp["name"] = "my-cluster"
    del exp["lab"]
    exp["inventory"] = {"file": str(lab.lab_dir() / "inventory.yml")}
    exp["hosts"] = {
        "host1": {"role": "traced", "containers": {"c1": {"netns": "vnt-host1-c1", "address": "10.244.1.11"}}},
        "host2": {"role": "traced", "containers": {"c1": {"netns": "vnt-host2-c1", "address": "10.244.2.11"}}},
        "db": {"role": "db"}}
    exp["workloads"] = [{"kind": "tcp_rr", "client": "host1/c1", "server": "host2/c1", "duration_s": 3, "rate": 200}]
    exp["sinks"] = {"influxdb": {"enabled": False}}
    dist_info = ("sh", "-c", "stat -c %Y /opt/vnettracer/venv/lib/python3*/site-packages/vnettracer_host-*.dist-info")
    installed_at = ssh("host1", *dist_info)
    f = tmp_path / "my-cluster.yml"
    f.write_text(yaml.safe_dump(exp, sort_keys=False))
    r = subprocess.run([EXE, "spec", "check", str(f)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([EXE, "experiment", "run", str(f), "--results-list", str(tmp_path / "runs.txt")],
                       capture_output=True, text=True, timeout=3600, env={**os.environ, "VNT_RESULTS_DIR": str(tmp_path)})
    assert r.returncode == 0, r.stderr[-3000:]
    run = Path((tmp_path / "runs.txt").read_text().split()[-1])
    meta = json.loads((run / "meta.json").read_text())
    assert all(str(k["rebooted"]).lower() == "false" for k in meta["kernel"].values())  # already running it
    assert ssh("host1", *dist_info) == installed_at  # same content: not reinstalled
    assert json.loads((run / "summary.json").read_text())["paths"]["request"]["complete"] > 200
    assert lab.load() is not None  # an inventory run never touches the lab


def test_a_kernel_package_that_cannot_install_is_one_clear_error_per_host(vm_run, tmp_path):
    bogus = tmp_path / "debs"
    bogus.mkdir()
    (bogus / f"linux-image-{PATCHED}-bad_1_amd64.deb").write_bytes(b"not a Debian package")
    from vnettracer import kernel

    with pytest.raises(VntError) as e:
        kernel.install(lab.lab_dir() / "inventory.yml", bogus, workdir=tmp_path / "ansible")
    lines = e.value.lines()
    assert any(line.strip().startswith("host1: task 'Installed'") for line in lines), lines
    assert any(line.strip().startswith("host2: task 'Installed'") for line in lines), lines
    assert ssh("host1", "uname", "-r").strip() == PATCHED  # nothing rebooted


def test_a_vm_that_does_not_boot_in_time_fails_the_run_clearly_and_leaves_nothing(root, vm_run, tmp_path):
    """Through the user's path: the run folder is kept with the error, the VMs are gone."""
    exp = yaml.safe_load((ROOT / "experiments" / "vm-cluster.yml").read_text())
    exp["name"] = "slow-boot"
    exp["lab"]["options"]["vm"]["boot_timeout_s"] = 5
    f = tmp_path / "slow-boot.yml"
    f.write_text(yaml.safe_dump(exp, sort_keys=False))
    r = subprocess.run([EXE, "experiment", "run", str(f)], capture_output=True, text=True, timeout=600,
                       env={**os.environ, "VNT_RESULTS_DIR": str(tmp_path / "results")})
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "lab: VM host1 did not answer ssh on 10.199.0.11 within 5 s; console:" in r.stderr, r.stderr[-2000:]
    (run,) = (tmp_path / "results" / "slow-boot").iterdir()
    assert "VM host1 did not answer ssh" in json.loads((run / "meta.json").read_text())["error"]
    assert leftovers() == []


def test_ctrl_c_during_lab_up_leaves_nothing(root, vm_run):
    lab.down()
    p = subprocess.Popen([EXE, "lab", "up", "--topology", "vms"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         text=True)
    try:
        seen = ""
        deadline = time.monotonic() + 120
        while "db: VM starting" not in seen and time.monotonic() < deadline:
            seen += p.stderr.readline()
        assert "db: VM starting" in seen, seen
        time.sleep(5)  # QEMU is booting
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 130, err
    time.sleep(1)
    assert leftovers() == []
