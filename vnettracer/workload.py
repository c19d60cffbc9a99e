"""Workloads, run on the hosts by roles/workload: a server and a client per workload, each in its
container's network namespace, bounded in count and time, output kept raw and parsed to JSON.

- udp_echo: the original vNetTracer example: N messages of S random bytes at R per second, each
  echoed back; our own server and client (RTT per message, losses).
- tcp_rr: sockperf ping-pong over TCP (one-way latency percentiles as sockperf reports them).
- iperf3: bulk TCP (throughput).
- redis: a real service, redis-server driven by redis-benchmark (requests/s and latency per test).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

GRACE_S = 30  # servers end on their own this long after the client's time is up


def _netns(ns: str | None, argv: list[str], cpu: int | None = None) -> list[str]:
    pin = ["taskset", "-c", str(cpu)] if cpu is not None else []
    return (["ip", "netns", "exec", ns] if ns else []) + pin + argv


def server_argv(kind: str, addr: str, port: int, seconds: float) -> list[str]:
    if kind == "udp_echo":
        return [sys.executable, "-m", "vnettracer.workload", "udp-echo-server", addr, str(port), str(seconds + GRACE_S)]
    if kind == "tcp_rr":
        return ["timeout", str(int(seconds + GRACE_S)), "sockperf", "server", "--tcp", "-i", addr, "-p", str(port)]
    if kind == "iperf3":
        return ["timeout", str(int(seconds + GRACE_S)), "iperf3", "-s", "-1", "-B", addr, "-p", str(port)]
    if kind == "redis":
        return ["timeout", str(int(seconds + GRACE_S)), "redis-server", "--bind", addr, "--port", str(port),
                "--save", "", "--appendonly", "no", "--protected-mode", "no", "--dir", "/tmp"]
    raise ValueError(f"unknown workload kind {kind}")


def expected_seconds(w: dict) -> float:
    """How long the client should take (servers end on their own GRACE_S after that)."""
    if w.get("duration_s"):
        return float(w["duration_s"])
    if w["kind"] == "udp_echo":
        return w["count"] / w["rate"]
    return 120.0  # redis: bounded by its request count; this only bounds the server's lifetime


def client_argv(w: dict) -> list[str]:
    kind, addr, port = w["kind"], w["server_addr"], str(w["port"])
    if kind == "udp_echo":
        return [sys.executable, "-m", "vnettracer.workload", "udp-echo-client", addr, port, str(w["count"]),
                str(w["size"]), str(w["rate"]), str(w.get("client_port") or 0)]
    if kind == "tcp_rr":
        return ["sockperf", "ping-pong", "--tcp", "-i", addr, "-p", port, "-t", str(int(w["duration_s"])),
                "--msg-size", str(w["size"]), f"--mps={w.get('rate') or 'max'}"]
    if kind == "iperf3":
        return ["iperf3", "-c", addr, "-p", port, "-t", str(int(w["duration_s"])), "-P", str(w["parallel"]), "-J"]
    if kind == "redis":
        return ["redis-benchmark", "-h", addr, "-p", port, "-n", str(w["requests"]), "-c", str(w["clients"]),
                "-d", str(w["size"]), "-t", w["tests"], "--csv"]
    raise ValueError(f"unknown workload kind {kind}")


def _wait_listening(ns: str | None, port: int, proto: str, timeout_s: float = 10) -> bool:
    flag = "-u" if proto == "udp" else "-t"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        out = subprocess.run(_netns(ns, ["ss", "-Hln", flag]), capture_output=True, text=True).stdout
        if re.search(rf":{port}\b", out):
            return True
        time.sleep(0.05)
    return False


def serve(w: dict, pidfile: Path, log: Path) -> int:
    """Start the server detached; return its pid once it listens."""
    argv = _netns(w.get("server_netns"), server_argv(w["kind"], w["server_addr"], w["port"], expected_seconds(w)),
                  w.get("server_cpu"))
    with open(log, "ab") as f:
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    pidfile.write_text(f"{p.pid}\n")
    if not _wait_listening(w.get("server_netns"), w["port"], "udp" if w["kind"] == "udp_echo" else "tcp"):
        os.kill(p.pid, signal.SIGTERM)
        raise RuntimeError(f"{w['kind']} server did not listen on port {w['port']}; see {log}")
    return p.pid


def run_client(w: dict, out_dir: Path) -> dict:
    """Run the client to completion; keep raw output, write parsed JSON beside it."""
    name = f"{w['index']:02d}-{w['kind']}"
    limit = expected_seconds(w) + 60
    try:
        r = subprocess.run(_netns(w.get("client_netns"), client_argv(w), w.get("client_cpu")), capture_output=True,
                           text=True, timeout=limit)
    except subprocess.TimeoutExpired as e:
        (out_dir / f"{name}.out").write_text((e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes)
                                              else (e.stdout or ""))
        raise RuntimeError(f"{w['kind']} client did not finish within {limit:.0f} s (killed)") from None
    (out_dir / f"{name}.out").write_text(r.stdout + r.stderr)
    if r.returncode != 0:
        raise RuntimeError(f"{w['kind']} client exited {r.returncode}: {(r.stderr or r.stdout).strip()[-300:]}")
    parsed = {"kind": w["kind"], "client": w["client"], "server": w["server"], **parse(w["kind"], r.stdout)}
    (out_dir / f"{name}.json").write_text(json.dumps(parsed, indent=1))
    return parsed


def parse(kind: str, out: str) -> dict:
    if kind == "udp_echo":
        return json.loads(out.strip().splitlines()[-1])
    if kind == "tcp_rr":
        pct = {m[0]: float(m[1]) for m in re.findall(r"percentile (\d+\.\d+) =\s+([\d.]+)", out)}
        avg = re.search(r"avg-latency=([\d.]+)", out)
        obs = re.search(r"Total (\d+) observations", out)
        return {"latency_us": {"p50": pct.get("50.000"), "p99": pct.get("99.000"), "p99.9": pct.get("99.900"),
                               "avg": float(avg.group(1)) if avg else None},
                "observations": int(obs.group(1)) if obs else 0}
    if kind == "iperf3":
        j = json.loads(out)
        return {"gbit_per_s": j["end"]["sum_received"]["bits_per_second"] / 1e9,
                "retransmits": j["end"].get("sum_sent", {}).get("retransmits")}
    if kind == "redis":  # --csv: "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms",...
        rows = list(csv.reader(io.StringIO(out)))
        head, body = rows[0], [r for r in rows[1:] if r]
        return {"tests": {r[0]: {k: float(v) for k, v in zip(head[1:], r[1:])} for r in body}}
    raise ValueError(kind)


# ---------------------------------------------------------------- the UDP echo of the original


def udp_echo_server(addr: str, port: int, seconds: float) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((addr, port))
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:  # bounded in time
        s.settimeout(min(left, 1.0))
        try:
            data, peer = s.recvfrom(65535)
        except socket.timeout:
            continue
        s.sendto(data, peer)


def udp_echo_client(addr: str, port: int, count: int, size: int, rate: float, bind_port: int = 0) -> None:
    """bind_port: send from this port (replies then go to it: with the patched kernel's trailer on
    that port, both directions carry an id); 0 = any."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    if bind_port:
        s.bind(("0.0.0.0", bind_port))
    s.settimeout(1.0)
    rtts, lost = [], 0
    t0 = time.monotonic()
    for i in range(count):  # bounded in count
        wait = t0 + i / rate - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        msg = os.urandom(size)
        t = time.perf_counter_ns()
        s.sendto(msg, (addr, port))
        try:
            while True:
                data, _ = s.recvfrom(65535)
                if data == msg:
                    rtts.append((time.perf_counter_ns() - t) / 1000)
                    break
        except socket.timeout:
            lost += 1
    rtts.sort()
    pick = lambda q: rtts[min(len(rtts) - 1, int(q * len(rtts)))] if rtts else None  # noqa: E731
    print(json.dumps({"sent": count, "received": len(rtts), "lost": lost,
                      "rtt_us": {"p50": pick(0.5), "p99": pick(0.99), "max": rtts[-1] if rtts else None}}))


if __name__ == "__main__":
    cmd, *a = sys.argv[1:]
    if cmd == "udp-echo-server":
        udp_echo_server(a[0], int(a[1]), float(a[2]))
    elif cmd == "udp-echo-client":
        udp_echo_client(a[0], int(a[1]), int(a[2]), int(a[3]), float(a[4]), int(a[5]) if len(a) > 5 else 0)
    else:
        sys.exit(f"unknown command {cmd}")
