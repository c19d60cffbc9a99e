"""The writer's outbox bookkeeping (vnettracer/store/writer.py) against an in-process sink, so
that the sender and the producer race as hard as they can; tests/lab/test_store.py runs the same
writer against a real InfluxDB that goes away."""

from __future__ import annotations

import threading

from vnettracer.store.http import Endpoint, StoreError
from vnettracer.store.writer import Writer


class Sink:
    """Takes every batch at once, or refuses them all (as an unreachable server) while `down`."""

    timeout = 1.0

    def __init__(self, down: bool = False, reject: bytes = b""):
        self.got: list[bytes] = []
        self.down = threading.Event()
        if down:
            self.down.set()
        self.reject = reject

    def write(self, body: bytes) -> None:
        if self.down.is_set():
            raise StoreError("unreachable")
        if self.reject and self.reject in body:
            raise StoreError("bad line", status=400)
        self.got.append(body)

    def close(self) -> None:
        pass


def line(i: int) -> bytes:
    return f"m v={i}i {i}\n".encode()


def writer(tmp_path, sink: Sink, **kw) -> Writer:
    return Writer(Endpoint("http://unused"), tmp_path / "outbox", client=sink, backoff_s=(0.01, 0.02), **kw)


def test_producer_and_sender_race_and_nothing_is_lost(tmp_path):
    # one point a batch: the sender deletes files as fast as the producer seals them (a producer that
    # added up the outbox's file sizes met files deleted under it and died, losing its batch)
    sink = Sink()
    w = writer(tmp_path, sink, batch_points=1)
    for i in range(5000):
        w.add(line(i))
    stats = w.close(timeout_s=60)
    assert b"".join(sink.got) == b"".join(line(i) for i in range(5000))  # each once, in order
    assert (stats.points_sent, stats.backlog_batches, stats.dropped_batches) == (5000, 0, 0)
    assert not (tmp_path / "outbox").exists()


def test_full_outbox_drops_and_counts_then_takes_again(tmp_path):
    sink = Sink(down=True)
    size = len(line(0)) * 10  # ten one-point batches fill it (the lines 0..9 are the same length)
    w = writer(tmp_path, sink, batch_points=1, max_outbox_bytes=size)
    for i in range(15):
        w.add(line(i))
    assert (w.stats.dropped_batches, w.stats.dropped_points) == (5, 5)
    sink.down.clear()
    assert w.flush(timeout_s=30)
    w.add(line(99))  # the sent batches left room again
    stats = w.close(timeout_s=30)
    assert b"".join(sink.got) == b"".join(line(i) for i in [*range(10), 99])
    assert stats.dropped_batches == 5 and stats.backlog_batches == 0


def test_a_left_outbox_counts_against_the_cap_and_is_sent_first(tmp_path):
    sink = Sink(down=True)
    w = writer(tmp_path, sink, batch_points=1)
    for i in range(3):
        w.add(line(i))
    left = w.close(timeout_s=0.1)
    assert left.backlog_batches == 3 and left.backlog_points == 3
    (tmp_path / "outbox" / "0000000004.tmp").write_bytes(b"m v=4i")  # killed mid-seal: never queued
    again = Sink()
    w2 = writer(tmp_path, again, batch_points=1, max_outbox_bytes=len(line(0)) * 3)
    assert w2.flush(timeout_s=30)
    w2.add(line(3))
    stats = w2.close(timeout_s=30)
    assert b"".join(again.got) == b"".join(line(i) for i in range(4))
    assert stats.dropped_batches == 0 and not (tmp_path / "outbox").exists()  # nothing left behind


def test_a_rejected_batch_moves_aside_with_its_reason_and_frees_its_room(tmp_path):
    sink = Sink(reject=b"v=1i")
    w = writer(tmp_path, sink, batch_points=1, max_outbox_bytes=len(line(0)) * 2)
    for i in range(4):
        w.add(line(i))
        assert w.flush(timeout_s=30)
    stats = w.close(timeout_s=30)
    assert stats.rejected_batches == 1 and stats.dropped_batches == 0
    assert b"".join(sink.got) == line(0) + line(2) + line(3)
    rejected = tmp_path / "outbox" / "rejected"
    assert [p.name for p in sorted(rejected.iterdir())] == ["0000000002.lp", "0000000002.lp.error"]
    assert "bad line" in (rejected / "0000000002.lp.error").read_text()


def test_a_batch_that_cannot_be_written_is_counted_and_the_producer_goes_on(tmp_path):
    # the next batch's file cannot be made (here its temporary name is taken by a folder; a full
    # disk raises the same way): that batch is counted as dropped, said once, and later ones go
    sink, said = Sink(), []
    w = writer(tmp_path, sink, batch_points=1, log=said.append)
    w.add(line(0))
    assert w.flush(timeout_s=30)
    (tmp_path / "outbox" / "0000000002.tmp").mkdir()
    w.add(line(1))
    (tmp_path / "outbox" / "0000000002.tmp").rmdir()
    w.add(line(2))
    stats = w.close(timeout_s=30)
    assert b"".join(sink.got) == line(0) + line(2)
    assert (stats.dropped_batches, stats.dropped_points, stats.backlog_batches) == (1, 1, 0)
    assert len(said) == 1 and "not writable (IsADirectoryError" in said[0]


def test_a_sender_that_cannot_read_the_outbox_stops_and_says_so(tmp_path):
    # a batch file the sender cannot read (here a folder in its place): the sender stops with the
    # reason instead of dying silently, flush() does not wait out its timeout, the outbox stays
    said: list[str] = []
    (tmp_path / "outbox" / "0000000001.lp").mkdir(parents=True)
    w = writer(tmp_path, Sink(), batch_points=1, log=said.append)
    assert not w.flush(timeout_s=30)
    stats = w.close(timeout_s=30)
    assert "influxdb sender stopped: IsADirectoryError" in stats.stopped and stats.stopped in said
    assert (tmp_path / "outbox" / "0000000001.lp").is_dir()
