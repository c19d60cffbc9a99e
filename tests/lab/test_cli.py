"""The CLI as a user meets it: clear one-line errors and exit code 2, never a traceback."""

from __future__ import annotations

import json

from conftest import vnettracer

from vnettracer import ROOT


def test_spec_check_ok_and_bad(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text("name: x\nlab: {topology: flannel-vxlan}\ntracepoints:\n  - {name: a, host: host7, device: eth0, direction: egress}\n")
    r = vnettracer("spec", "check", "quickstart", str(bad))
    assert r.returncode == 2
    assert "quickstart: ok (20 tracepoints, 2 paths, 1 runs)" in r.stdout
    assert f"{bad}:4: tracepoints[0].host: unknown host 'host7'; hosts: host1, host2, db" in r.stderr
    assert "Traceback" not in r.stderr


def test_unknown_experiment_is_one_line():
    r = vnettracer("experiment", "run", "no-such-experiment")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no experiment named 'no-such-experiment'; known:")


def test_bad_lab_options(root):
    r = vnettracer("lab", "up", "--topology", "mesh")
    assert r.returncode == 2 and "unknown topology 'mesh'; known: flannel-vxlan, bridge, vms" in r.stderr
    r = vnettracer("lab", "up", "--hosts", "17")
    assert r.returncode == 2 and "hosts: Input should be less than or equal to 16" in r.stderr
    assert "Traceback" not in r.stderr


def test_commands_needing_a_lab_say_so(root):
    vnettracer("lab", "down")
    for args in (("lab", "status"), ("hosts", "check")):
        r = vnettracer(*args)
        assert r.returncode == 2
        assert "no lab is up; run `vnettracer lab up`" in r.stderr and "Traceback" not in r.stderr


def test_usage_error():
    r = vnettracer("lab", "up", "--bogus")
    assert r.returncode == 2 and "No such option" in r.stderr


def test_kernel_install_and_store_replay_refuse_bad_input(tmp_path):
    inv = tmp_path / "inv.yml"
    inv.write_text("all: {hosts: {}}\n")
    r = vnettracer("kernel", "install", "--inventory", str(inv), "--packages", str(tmp_path / "none"))
    assert r.returncode == 2 and f"{tmp_path / 'none'} is not a folder of kernel packages" in r.stderr
    run = tmp_path / "run"
    run.mkdir()
    (run / "meta.json").write_text("{}")
    r = vnettracer("store", "replay", str(run))
    assert r.returncode == 2 and "this run did not use InfluxDB" in r.stderr
    assert "Traceback" not in r.stderr


def test_overhead_section_is_checked(tmp_path):
    f = tmp_path / "ov.yml"
    src = (ROOT / "experiments" / "tracing-overhead.yml").read_text()
    f.write_text(src.replace("variants: [untraced, traced-10, traced-20, tcpdump, original]",
                             "variants: [untraced, traced-30, wireshark]"))
    r = vnettracer("spec", "check", str(f))
    assert r.returncode == 2
    assert "overhead.variants: unknown variant(s) wireshark; variants: untraced, traced-N, tcpdump, original" in r.stderr
    f.write_text(src.replace("variants: [untraced, traced-10, traced-20, tcpdump, original]", "variants: [untraced, traced-30]"))
    r = vnettracer("spec", "check", str(f))
    assert r.returncode == 2 and "overhead.variants[1]: traced-30: the experiment has 20 tracepoints" in r.stderr
    f.write_text(src.replace("src: 10.244.1.11/32", "src: 10.244.1.0/24"))  # original needs one address pair
    r = vnettracer("spec", "check", str(f))
    assert r.returncode == 2 and "original: the 2018 probes follow one address pair" in r.stderr


def test_version_json_and_exit_codes(tmp_path):
    """--version; --json on check commands; CI can tell bad input (2) from a failed host (3)."""
    from vnettracer import __version__

    r = vnettracer("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"vnettracer {__version__}"
    bad = tmp_path / "bad.yml"
    bad.write_text("name: x\nlab: {topology: nope}\n")
    r = vnettracer("spec", "check", "quickstart", str(bad), "--json")
    assert r.returncode == 2
    res = json.loads(r.stdout)
    assert res[0] == {"file": "quickstart", "ok": True, "tracepoints": 20, "paths": 2, "runs": 1}
    assert res[1]["ok"] is False and "lab.topology" in res[1]["problems"][0]
    inv = tmp_path / "inv.yml"  # a host nobody answers for: a failed host, not bad input
    inv.write_text("all:\n  hosts:\n    ghost: {ansible_host: 127.0.0.1, ansible_port: 9}\n")  # nothing listens: refused, locally
    r = vnettracer("hosts", "check", "--inventory", str(inv), "--workdir", str(tmp_path / "wd"), "--json")
    assert r.returncode == 3, r.stdout + r.stderr
    (row,) = json.loads(r.stdout)
    assert row["host"] == "ghost" and row["reachable"] is False
