"""vnettracer installed with pip outside a checkout (setup.py): playbooks, roles, experiments,
ansible.cfg and the BPF objects come as package data; builds go to the user's cache, results to
./results; nothing points back into the source tree."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

from vnettracer import BCC_SOURCES, ROOT

PY = sys.executable
PIP = [PY, "-m", "pip", "--disable-pip-version-check", "-q"]


def test_a_wheel_installed_elsewhere_finds_its_files(tmp_path):
    dist, site, work = tmp_path / "dist", tmp_path / "site", tmp_path / "work"
    r = subprocess.run([*PIP, "wheel", "--no-deps", "-w", str(dist), str(ROOT)], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    (whl,) = dist.glob("vnettracer-*.whl")
    names = zipfile.ZipFile(whl).namelist()
    for f in ("playbooks/site.yml", "roles/tracer/meta/argument_specs.yml", "experiments/quickstart.yml",
              "ansible.cfg", "bpf-objects/trace.bpf.o", "bpf-objects/tag.bpf.o", "kernel-build/build.sh",
              *(f"bpf/{src}" for src in BCC_SOURCES)):
        assert f"vnettracer/_share/{f}" in names, f
    assert "vnettracer/store/grafana/vnettracer.json" in names and "vnettracer/store/grafana/provisioning.yml" in names
    assert not [n for n in names if "__pycache__" in n]
    r = subprocess.run([*PIP, "install", "--no-deps", "--target", str(site), str(whl)], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    work.mkdir()
    inv = work / "hosts.yml"
    inv.write_text("all:\n  children:\n    traced:\n      hosts:\n        n1: {ansible_host: 192.0.2.1}\n"
                   "        n2: {ansible_host: 192.0.2.2}\n")
    (work / "exp.yml").write_text(
        "name: mine\ninventory: {file: hosts.yml}\nhosts:\n  n1: {containers: {c1: {netns: a, address: 10.9.0.1}}}\n"
        "  n2: {containers: {c1: {netns: b, address: 10.9.0.2}}}\n"
        "tracepoints:\n  - {name: t1, host: n1, device: eth0, direction: egress}\n"
        "workloads:\n  - {kind: tcp_rr, client: n1/c1, server: n2/c1, duration_s: 1}\n")
    env = {**os.environ, "PYTHONPATH": str(site), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    env.pop("VNT_RESULTS_DIR", None)
    probe = ("import json, vnettracer, vnettracer.pipeline as p; print(json.dumps({'file': vnettracer.__file__, "
             "'installed': vnettracer.INSTALLED, 'root': str(vnettracer.ROOT), 'build': str(vnettracer.BUILD), "
             "'results': str(p.results_root())}))")
    where = json.loads(subprocess.run([PY, "-c", probe], cwd=work, env=env, capture_output=True, text=True,
                                      check=True).stdout)
    assert where["file"].startswith(str(site)) and where["installed"] is True
    assert where["root"] == str(site / "vnettracer" / "_share") and where["build"] == str(tmp_path / "cache" / "vnettracer")
    assert where["results"] == str(work / "results")
    cli = [PY, "-c", "from vnettracer.cli import main; main()"]
    r = subprocess.run([*cli, "spec", "check", "quickstart", "exp.yml"], cwd=work, env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run([*cli, "experiment", "vars", "exp.yml", "run1"], cwd=work, env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    v = json.loads((work / "run1" / "vars.json").read_text())
    assert v["tracer_bpf_object"] == str(site / "vnettracer" / "_share" / "bpf-objects" / "trace.bpf.o")
    assert v["tracer_host_wheel"].startswith(str(tmp_path / "cache" / "vnettracer" / "host"))
    assert Path(v["tracer_host_wheel"]).is_file()  # built from the installed modules
    assert str(ROOT) not in json.dumps(v)  # nothing of the source tree
