"""`vnettracer top` on the lab, watched in tmux. A module of its own (a fresh lab): run after the
other tests of tests/lab/test_trace_lab.py on the same lab, host2's agent was once found not to
have detached its hooks at the end (seen in the last minutes of a session; not yet explained)."""

from __future__ import annotations

import os
import subprocess
import time

import yaml
from test_trace_lab import nothing_left

from vnettracer import ROOT, spec
from vnettracer.stages import deploy
from vnettracer.stages.hosts import RunHosts


def test_top_shows_a_run_live_in_a_terminal(lab, tmp_path):
    """`vnettracer top` in a terminal (tmux) while 30 s of tcp_rr run, as a person would watch it:
    each hook's packets/s, the agents' ring, CPU and clock, per segment p50/p99 of the last seconds;
    Ctrl-C ends it. host2's clock is emulated 4 s behind (a VM without NTP), more than the window:
    each host's window is taken on its own clock, so the segments still see the same packets."""
    from vnettracer.store import credentials
    from vnettracer.store import deploy as store_deploy

    session = f"vnt-top-{os.getpid()}"
    exe = os.path.join(os.path.dirname(os.sys.executable), "vnettracer")
    long_rr = tmp_path / "long.yml"  # the quickstart's hosts with one 30 s workload, host2 4 s behind
    exp = yaml.safe_load((ROOT / "experiments" / "quickstart.yml").read_text())
    exp["workloads"] = [{"kind": "tcp_rr", "client": "host1/c1", "server": "host2/c1", "duration_s": 30, "rate": 2000}]
    exp["lab"]["options"]["clock_emulation"] = {"host2": {"offset_us": -4_000_000, "drift_ppm": 20}}
    long_rr.write_text(yaml.safe_dump(exp))
    creds = credentials.load_or_create(lab.dir)
    _, ep = store_deploy.influxdb(lab.inventory, tmp_path, creds)
    hosts = RunHosts(spec.load_one(str(long_rr)))
    wl = None

    def rows() -> tuple[str, dict[str, list[str]]]:
        screen = subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True).stdout
        cells = [[c.strip() for c in ln.split("│")] for ln in screen.splitlines() if ln.count("│") > 4]
        return screen, {c[2]: c for c in cells}

    try:
        deploy.start(hosts, "live", tmp_path, influxdb={"url": ep.url, "database": ep.database, "user": ep.user,
                                                          "password": ep.password, "raw_events": True})
        wl = subprocess.Popen([exe, "workload", "run", str(long_rr), "--run-id", "live"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
        subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "200", "-y", "90",
                        f"env -u LINES -u COLUMNS {exe} top {long_rr} --window 2"], check=True)
        deadline = time.monotonic() + 40
        screen, cells = rows()
        def steady() -> bool:  # traffic seen by the hook, and a full window of it in the segment rows
            n = cells.get("h1-eth0-eg", ["", "", "", ""])[3].replace(",", "")
            seg = cells.get("h1-eth0-eg -> h2-eth0-in", ["", "", "", ""])[3].replace(",", "")
            return n.isdigit() and int(n) > 100 and seg.isdigit() and int(seg) > 500

        while time.monotonic() < deadline and not steady():
            time.sleep(1)
            screen, cells = rows()
        assert int(cells["h1-eth0-eg"][3].replace(",", "")) > 100, screen  # tcp_rr's 2000 requests/s
        p50 = float(cells["h1-eth0-eg -> h2-eth0-in"][4])
        # the wire (about 1 us on the lab), clock-corrected: host2 is emulated 4 s off, and the trace's
        # correction makes both ways' minimum delays equal, so a corrected p50 is above 0
        assert 0 < p50 < 1000, screen
        assert "ring in use" in screen and any("│ live " in ln and "%" in ln for ln in screen.splitlines()), screen
        agent = next(ln for ln in screen.splitlines() if ln.startswith("│ host2 ") and "│ live " in ln)
        # its clock: 4 s behind ours, within half an ssh round trip of `ctl stats` (a loaded machine: 100s of ms)
        assert abs(float(agent.split("│")[5].replace(",", "")) + 4000) < 1000, agent
        subprocess.run(["tmux", "send-keys", "-t", session, "C-c"], check=True)
        deadline = time.monotonic() + 30
        while subprocess.run(["tmux", "has-session", "-t", session], capture_output=True).returncode == 0:
            assert time.monotonic() < deadline, "top did not end on Ctrl-C"
            time.sleep(0.5)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
        if wl is not None:
            wl.wait(timeout=120)
        deploy.stop(hosts, tmp_path)
        store_deploy.influxdb(lab.inventory, tmp_path, creds, state="stopped")
    nothing_left(lab)
