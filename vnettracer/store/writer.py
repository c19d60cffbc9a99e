"""The agent's InfluxDB writer: batches by size and time, an on-disk outbox, a sender thread.

Every sealed batch is first a file in the outbox (`NNNNNNNNNN.lp`, written then renamed), and the
sender posts the files oldest first, deleting each only after InfluxDB answered 204. So:
- the database away (refused, timeout, 5xx): the sender retries the same file with backoff while new
  batches keep landing in the outbox; once it is back they go in order;
- a killed agent leaves its outbox; the next writer on that folder (or `vnettracer store replay`)
  sends it (a batch it was still writing, never queued, is removed: the spool has its events);
- a batch posted twice (the answer was lost) writes the same points again, which InfluxDB overwrites:
  a point is (measurement, tags, time), fixed when the batch was sealed. Nothing is written twice.
A batch the server rejects for its content (HTTP 400) can never succeed: it moves to rejected/ with
the server's reason and the sender goes on. Authentication errors (401/403) stop the sender; the
outbox stays for a replay with the right credentials.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from vnettracer.store.http import Endpoint, LineWriter, StoreError


@dataclass
class WriterStats:
    points_sent: int = 0
    batches_sent: int = 0
    retries: int = 0
    rejected_batches: int = 0
    backlog_batches: int = 0
    backlog_points: int = 0
    last_error: str = ""
    stopped: str = ""  # why the sender gave up (auth), "" while it runs
    dropped_batches: int = 0  # not queued: the outbox at its cap or not writable (the spool still has the events)
    dropped_points: int = 0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def _points(data: bytes) -> int:
    return data.count(b"\n")


def _points_in(f: Path) -> int:
    try:
        return _points(f.read_bytes())
    except OSError:  # unreadable: counted as a batch, its points unknown
        return 0


@dataclass
class _Pending:
    parts: list[bytes] = field(default_factory=list)
    points: int = 0
    since: float = 0.0


class Writer:
    def __init__(self, ep: Endpoint, outbox: Path, batch_points: int = 20_000, flush_s: float = 1.0,
                 backoff_s: tuple[float, float] = (0.2, 5.0), timeout_s: float = 30.0, log=lambda m: None,
                 max_outbox_bytes: int = 1 << 30, client: LineWriter | None = None):
        self.ep = ep
        self.outbox = outbox
        self.max_outbox_bytes = max_outbox_bytes
        (outbox / "rejected").mkdir(parents=True, exist_ok=True)
        self.batch_points = batch_points
        self.flush_s = flush_s
        self.backoff = backoff_s
        self.log = log
        self.client = client or LineWriter(ep, timeout_s)
        self.stats = WriterStats()
        self._pending = _Pending()
        self._lock = threading.Lock()
        self._cv = threading.Condition(self._lock)
        self._closing = False
        self._drop_why = ""
        for half in outbox.glob("*.tmp"):  # a batch a killed writer never finished: never queued
            half.unlink(missing_ok=True)
        existing = self._files()
        self._seq = int(existing[-1].stem) if existing else 0
        # the outbox's size, kept here: the sender deletes files while seal() would be adding up theirs
        self._outbox_bytes = sum(f.stat().st_size for f in existing)
        self._outbox_files = len(existing)
        if existing:
            self.log(f"influxdb outbox: {len(existing)} batches left by an earlier writer, sending them first")
        self._thread = threading.Thread(target=self._sender, name="influx-writer", daemon=True)
        self._thread.start()

    # ---------------------------------------------------------------- producer side
    def add(self, lines: bytes) -> None:
        """Queue complete lines (each ending in a newline); seals a batch when it is full or old."""
        if not lines:
            return
        p = self._pending
        if not p.parts:
            p.since = time.monotonic()
        p.parts.append(lines)
        p.points += _points(lines)
        if p.points >= self.batch_points or time.monotonic() - p.since >= self.flush_s:
            self.seal()

    def tick(self) -> None:
        """Call now and then: seals a batch that waited flush_s."""
        if self._pending.parts and time.monotonic() - self._pending.since >= self.flush_s:
            self.seal()

    def seal(self) -> None:
        p = self._pending
        if not p.parts:
            return
        data = b"".join(p.parts)
        self._pending = _Pending()
        with self._cv:
            if self._outbox_bytes + len(data) > self.max_outbox_bytes:
                self._drop(p.points, f"at its cap ({self.max_outbox_bytes >> 20} MB)")
                return
            self._seq += 1
            path = self.outbox / f"{self._seq:010d}.lp"
            tmp = path.with_suffix(".tmp")
            try:
                tmp.write_bytes(data)
                os.replace(tmp, path)
            except OSError as e:  # a full disk: InfluxDB's copy is lost, the caller (the agent) goes on
                try:
                    tmp.unlink(missing_ok=True)
                except OSError:
                    pass
                self._drop(p.points, f"not writable ({type(e).__name__}: {e.strerror or e})")
                return
            self._outbox_bytes += len(data)
            self._outbox_files += 1
            self._cv.notify()

    def _drop(self, points: int, why: str) -> None:
        """A batch not queued: counted, and said once per reason."""
        self.stats.dropped_batches += 1
        self.stats.dropped_points += points
        if why != self._drop_why:
            self._drop_why = why
            self.log(f"influxdb outbox {why}: batches are counted and dropped until it takes some again "
                     "(the spool keeps every event)")

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Seal what is pending and wait until the outbox is empty; False if it is not by then."""
        self.seal()
        deadline = time.monotonic() + timeout_s
        with self._cv:
            while self._outbox_files and not self.stats.stopped:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cv.wait(min(left, 0.2))
            self._update_backlog()
            return not self._outbox_files

    def close(self, timeout_s: float = 30.0) -> WriterStats:
        """Flush (up to timeout_s), then stop the sender. What is not sent stays in the outbox."""
        self.flush(timeout_s)
        with self._cv:
            self._closing = True
            self._cv.notify_all()
        self._thread.join(timeout=self.client.timeout + 5)
        self.client.close()
        with self._cv:
            self._update_backlog()
        for d in (self.outbox / "rejected", self.outbox):  # leave no empty folders behind
            try:
                d.rmdir()
            except OSError:
                pass
        return self.stats

    # ---------------------------------------------------------------- sender side
    def _files(self) -> list[Path]:
        return sorted(self.outbox.glob("*.lp"))

    def _update_backlog(self) -> None:
        """Call holding the lock: the sender deletes a file only under it."""
        files = self._files()
        self.stats.backlog_batches = len(files)
        self.stats.backlog_points = sum(_points_in(f) for f in files)

    def _done(self, f: Path, size: int, to: Path | None = None) -> None:
        """A batch leaves the outbox: sent (deleted) or rejected (moved to `to`)."""
        with self._cv:
            if to is None:
                f.unlink()
            else:
                os.replace(f, to)
            self._outbox_bytes -= size
            self._outbox_files -= 1
            self._cv.notify_all()

    def _next_files(self) -> list[Path]:
        """The outbox's files, oldest first, once there are any; [] when closing with none left."""
        with self._cv:
            files = self._files()
            while not files and not self._closing:
                self._cv.wait(0.5)
                files = self._files()
            return files

    def _sender(self) -> None:
        """The sender thread: an error it cannot handle (the outbox unreadable) stops it, said once;
        the outbox stays for a replay, and flush() stops waiting for it."""
        try:
            self._send_loop()
        except OSError as e:
            self._stop(f"influxdb sender stopped: {type(e).__name__}: {e}")

    def _stop(self, why: str) -> None:
        """The sender gives up: the reason in stats.stopped and the log; flush() stops waiting."""
        self.stats.stopped = f"{why}; outbox kept at {self.outbox}"
        self.log(self.stats.stopped)
        with self._cv:
            self._cv.notify_all()

    def _send_loop(self) -> None:
        delay = self.backoff[0]
        queue: deque[Path] = deque()  # what the last look at the outbox found: one listing for many sends
        while queue or (queue := deque(self._next_files())):
            outcome = self._send(queue[0])
            if outcome == "stop":
                return
            if outcome == "retry":
                with self._cv:
                    if self._closing:
                        return  # close() gave up waiting: the outbox keeps the rest
                    self._cv.wait(delay)
                delay = min(delay * 2, self.backoff[1])
                continue
            delay = self.backoff[0]
            queue.popleft()

    def _send(self, f: Path) -> str:
        """Post one batch: "sent" (or rejected: moved aside), "retry" or "stop" (credentials refused)."""
        data = f.read_bytes()
        try:
            self.client.write(data)
        except StoreError as e:
            self.stats.last_error = str(e)
            if e.status in (401, 403):
                self._stop(f"InfluxDB refused the credentials ({e})")
                return "stop"
            if e.status == 400:
                try:
                    (self.outbox / "rejected" / (f.name + ".error")).write_text(str(e) + "\n")
                except OSError:  # a full disk: the reason is in the agent's log below
                    pass
                self.stats.rejected_batches += 1
                self.log(f"influxdb rejected batch {f.name}: {e}")
                self._done(f, len(data), to=self.outbox / "rejected" / f.name)
                return "sent"
            self.stats.retries += 1
            return "retry"
        self.stats.points_sent += _points(data)
        self.stats.batches_sent += 1
        self._done(f, len(data))
        return "sent"


def pending_outboxes(run_dir: Path) -> list[Path]:
    """Outboxes of a run folder that still hold batches: the agents' (fetched by collect), then the
    report stage's own."""
    return [p for p in [*sorted((run_dir / "events").glob("*/influx-outbox")), run_dir / "influx-outbox"]
            if p.is_dir() and any(p.glob("*.lp"))]


def replay(ep: Endpoint, outbox: Path, timeout_s: float = 300.0, log=print) -> WriterStats:
    """Send what an outbox holds (a stopped agent's, or one fetched into a run folder)."""
    if not outbox.is_dir():
        raise StoreError(f"{outbox} is not an outbox folder")
    w = Writer(ep, outbox, log=log)
    stats = w.close(timeout_s)
    if stats.stopped:
        raise StoreError(stats.stopped)
    return stats
