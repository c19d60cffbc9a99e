"""InfluxDB for real: roles/influxdb deploys influxd on the lab's db host (auth on), the agent's
writer sends to it over the management network, and we count what arrived."""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import requests
from conftest import vnettracer

from vnettracer.agent.record import EVENT
from vnettracer.store import credentials, deploy, lineproto
from vnettracer.store.client import Influx, QueryRefused, StoreError
from vnettracer.store.writer import Writer


def _base() -> int:
    """A run's events start an hour ago (inside the retention policy), ns."""
    return (time.time_ns() // 10**9 - 3600) * 10**9


def _events(n: int, start_index: int, base: int, tracepoints: int = 4) -> np.ndarray:
    i = np.arange(start_index, start_index + n, dtype=np.int64)
    ev = np.zeros(n, EVENT)
    ev["ts_ns"] = i * 1000  # 1 us apart: no ties
    ev["tracepoint"] = i % tracepoints + 1
    ev["packet_id"] = i.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)  # wraps: spreads over 64 bits
    ev["len"] = 60 + i % 1400
    ev["flags"] = 1
    return ev


def _expected(n: int, tracepoints: int = 4) -> tuple[dict[str, int], int]:
    i = np.arange(n)
    counts = {f"tp{t}": int(((i % tracepoints) + 1 == t).sum()) for t in range(1, tracepoints + 1)}
    return counts, int((60 + i % 1400).sum())


def _arrived(client: Influx, run: str, base: int, n: int) -> tuple[dict[str, int], int]:
    df = client.select("vnt_event", base, base + n * 1000 + 1, 'count("pid"), sum("len")', {"run": run},
                       group_by="tracepoint")
    return ({r.tracepoint: int(r.count) for r in df.itertuples()}, int(df["sum"].sum()) if len(df) else 0)


NAMES = {t: f"tp{t}" for t in range(1, 9)}


@pytest.fixture(scope="module")
def influx(lab, tmp_path_factory):
    wd = tmp_path_factory.mktemp("influx")
    creds = credentials.load_or_create(lab.dir)
    r, ep = deploy.influxdb(lab.inventory, wd, creds)
    assert r.changed() > 0
    again, _ = deploy.influxdb(lab.inventory, wd, creds)
    assert again.changed() == 0, "roles/influxdb is not idempotent"
    assert creds["writer_password"] not in "".join(p.read_text(errors="replace") for p in wd.rglob("*") if p.is_file()), \
        "a password leaked into the runner's files"
    yield lab, wd, creds, ep


def test_one_million_events_arrive_exactly(influx, tmp_path):
    lab, wd, creds, ep = influx
    base, n = _base(), 1_000_000
    w = Writer(ep, tmp_path / "outbox", batch_points=50_000)
    for start in range(0, n, 100_000):
        w.add(lineproto.events(_events(100_000, start, base), "million", "host1", NAMES, base))
    stats = w.close(timeout_s=120)
    assert stats.backlog_batches == 0 and not stats.last_error and stats.rejected_batches == 0
    counts, len_sum = _arrived(Influx(ep), "million", base, n)
    want_counts, want_sum = _expected(n)
    assert counts == want_counts
    assert len_sum == want_sum


def test_server_away_for_20_s_nothing_lost_nothing_twice(influx, tmp_path):
    lab, wd, creds, ep = influx
    base, batches, per = _base() - 600 * 10**9, 120, 2000
    w = Writer(ep, tmp_path / "outbox", batch_points=per, flush_s=0.2, backoff_s=(0.2, 2.0))
    backlog_seen = []

    def produce():
        for b in range(batches):  # bounded: 120 batches, one every 0.25 s
            w.add(lineproto.events(_events(per, b * per, base), "outage", "host1", NAMES, base))
            backlog_seen.append(len(list((tmp_path / "outbox").glob("*.lp"))))
            time.sleep(0.25)

    t = threading.Thread(target=produce)
    t.start()
    try:
        time.sleep(3)
        deploy.influxdb(lab.inventory, wd, creds, state="stopped")
        assert not Influx(ep).ping()
        time.sleep(20)
        deploy.influxdb(lab.inventory, wd, creds)
    finally:
        t.join(timeout=120)
    stats = w.close(timeout_s=120)
    assert max(backlog_seen) > 10, "the outbox never filled: the outage did not happen during the stream"
    assert not t.is_alive(), "the producer did not finish"
    assert stats.retries > 0 and stats.backlog_batches == 0 and stats.rejected_batches == 0
    assert stats.dropped_batches == 0 and stats.points_sent >= batches * per
    counts, len_sum = _arrived(Influx(ep), "outage", base, batches * per)
    want_counts, want_sum = _expected(batches * per)
    assert counts == want_counts  # nothing lost ...
    assert len_sum == want_sum  # ... and no point twice


def test_auth_is_enforced(influx):
    lab, wd, creds, ep = influx
    line = f"vnt_agent,host=x,run=auth events=1i {time.time_ns()}\n".encode()
    url = f"{ep.url}/write"
    assert requests.post(url, params={"db": ep.database}, data=line, timeout=10).status_code == 401
    assert requests.post(url, params={"db": ep.database}, data=line, timeout=10,
                         auth=(ep.user, ep.password + "x")).status_code == 401
    writer = Influx(ep)
    writer.write(line)  # the right password works
    with pytest.raises(StoreError) as e:
        writer.execute(f'DROP DATABASE "{ep.database}"')
    assert e.value.status == 403
    admin = Influx(deploy.admin_endpoint(ep, creds))
    assert ep.database in [v[0] for v in admin.execute("SHOW DATABASES")[0]["series"][0]["values"]]


def test_unbounded_query_is_never_sent(influx):
    lab, wd, creds, ep = influx
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.setblocking(False)
        c = Influx(type(ep)(f"http://127.0.0.1:{listener.getsockname()[1]}", ep.database, ep.user, ep.password))
        for q in ['SELECT * FROM "vnt_event"',
                  'SELECT count("pid") FROM "vnt_event" WHERE time > now() - 1h GROUP BY time(1s)',
                  'SELECT * FROM "vnt_event" WHERE "run" = \'x\' AND time < now()']:
            with pytest.raises(QueryRefused):
                c.query(q)
        with pytest.raises(BlockingIOError):
            listener.accept()  # nothing ever connected
    # and a bounded one goes through, on the real server
    now = time.time_ns()
    Influx(ep).write(f"vnt_agent,host=x,run=bounded events=1i {now - 10**9}\n".encode())
    assert Influx(ep).query(f'SELECT * FROM "vnt_agent" WHERE time > {now - 3600 * 10**9} AND time < {now}').shape[0] >= 1


def test_store_replay_sends_a_runs_leftover_batches(influx, tmp_path):
    lab, wd, creds, ep = influx
    run = tmp_path / "20260101-000000"
    outbox = run / "events" / "host1" / "influx-outbox"
    outbox.mkdir(parents=True)
    base = _base() - 1200 * 10**9
    (outbox / "0000000001.lp").write_bytes(lineproto.events(_events(3000, 0, base), "replayed", "host1", NAMES, base))
    (outbox / "0000000002.lp").write_bytes(lineproto.events(_events(1000, 3000, base), "replayed", "host1", NAMES, base))
    (run / "meta.json").write_text(json.dumps({"influxdb": {
        "url": ep.url, "database": ep.database, "credentials": str(credentials.credentials_file(lab.dir))}}))
    r = vnettracer("store", "replay", str(run))
    assert r.returncode == 0, r.stderr
    assert "events/host1/influx-outbox: 4000 points sent" in r.stdout
    assert not outbox.exists()
    assert _arrived(Influx(ep), "replayed", base, 4000) == _expected(4000)
    again = vnettracer("store", "replay", str(run))
    assert again.returncode == 0 and "nothing to send" in again.stdout
    bad = vnettracer("store", "replay", str(tmp_path))
    assert bad.returncode == 2 and "not a run folder" in bad.stderr


def test_store_replay_sends_no_credentials_to_a_url_from_a_results_folder(influx, tmp_path):
    """A results folder may come from anyone: a URL it names outside the lab gets nothing unless
    the user names it, and the credentials path it names is never read."""
    lab, wd, creds, ep = influx
    run = tmp_path / "planted"
    outbox = run / "events" / "host1" / "influx-outbox"
    outbox.mkdir(parents=True)
    (outbox / "0000000001.lp").write_bytes(b"vnt_agent,host=x,run=planted events=1i 1\n")
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.setblocking(False)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        (run / "meta.json").write_text(json.dumps({"influxdb": {"url": url, "database": "x",
                                                                "credentials": "/etc/shadow"}}))
        r = vnettracer("store", "replay", str(run))
        assert r.returncode == 2 and f"give --url {url}" in r.stderr, r.stderr
        with pytest.raises(BlockingIOError):
            listener.accept()  # nothing ever connected
    assert (outbox / "0000000001.lp").exists()


def test_a_finished_runs_data_served_again(tmp_path):
    """`vnettracer store serve RUN` after the lab is gone: an influxd of its own on 127.0.0.1 holds
    the run's per-second segment summaries and every event; Ctrl-C stops it (nothing left
    listening); serving again starts from the kept data folder without loading anything twice."""
    import signal
    import subprocess

    from vnettracer.analysis import analyze
    from vnettracer.analysis.synth import make_run
    from vnettracer.store.client import Endpoint

    run = tmp_path / "exp" / "20260101-000000"
    make_run(run, packets=2000, seconds=10)
    port = 18187

    def start() -> subprocess.Popen:
        p = subprocess.Popen([str(Path(sys.executable).parent / "vnettracer"), "store",
                              "serve", str(run), "--port", str(port), "--events", "--for", "120"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for line in p.stdout:
            if line.startswith("serving"):
                return p
            lines.append(line)
        raise AssertionError(p.stderr.read())

    def counts() -> tuple[int, int]:
        creds = credentials.read(run / "influxdb" / "secrets" / "influxdb.json")
        db = Influx(Endpoint(f"http://127.0.0.1:{port}", "vnettracer", creds["admin_user"], creds["admin_password"]))
        q = 'SELECT count("{}") FROM "{}" WHERE time > 0 AND time < now()'
        seg, ev = (db.query(q.format(f, m)) for f, m in (("p50_us", "vnt_segment"), ("pid", "vnt_event")))
        # every segment of this run is on one clock: the documented filter keeps them all
        fair = db.query(q.replace("WHERE", "WHERE clock_corrected = true AND").format("p50_us", "vnt_segment"))
        assert int(fair.iloc[0, -1]) == int(seg.iloc[0, -1])
        return int(seg.iloc[0, -1]), int(ev.iloc[0, -1])

    lines: list[str] = []
    p = start()
    try:
        loaded = next(ln for ln in lines if ln.startswith("loaded"))
        n_seg, n_ev = (int(w) for w in loaded.split() if w.isdigit())
        assert counts() == (n_seg, n_ev) and n_ev == analyze(run).summary["events"] > 30_000
    finally:
        p.send_signal(signal.SIGINT)
        assert p.wait(timeout=120) == 130  # influxd gets 30 s to stop, then a kill
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0  # nothing listens any more
    lines = []
    p = start()
    try:
        assert not [ln for ln in lines if ln.startswith("loaded")]  # the kept data, not loaded again
        assert counts() == (n_seg, n_ev)
    finally:
        p.send_signal(signal.SIGINT)
        p.wait(timeout=60)
