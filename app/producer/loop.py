"""The send loop: chunks of a factory's messages, paced by a token bucket, until a count, a
duration or a stop; :func:`generate` runs it without Kafka."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO

import orjson

from app.producer.factory import Message, TransactionFactory
from app.producer.pacing import TokenBucket
from app.producer.signals import Flag, Stop


@dataclass
class Summary:
    sent: int = 0
    errors: int = 0
    seconds: float = 0.0
    anomalies: int = 0
    bad: int = 0
    first_seq: int = 0
    next_seq: int = 0
    dry_run: bool = False
    last_error: str = ""
    error_kinds: dict[str, int] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0

    def __str__(self) -> str:
        text = (f"sent={self.sent} rate={self.rate:.1f} errors={self.errors} "
                f"anomalies={self.anomalies} bad={self.bad} seconds={self.seconds:.2f} "
                f"seqs={self.first_seq}..{self.next_seq - 1}")
        if self.dry_run:
            text += " dry_run=1"
        if self.last_error:
            text += f" last_error={self.last_error!r}"
        return text


def run(factory: TransactionFactory, deliver: Callable[[Message], None] | None,
        pending: Callable[[], int], acked: Callable[[], int], summary: Summary, *,
        first_seq: int, rate: float, count: int | None, duration: float | None,
        truth: IO[bytes] | None, progress: IO[str] | None, stop: Flag,
        max_pending: int, live: bool = False,
        wall_ms: Callable[[], float] = lambda: time.time() * 1000) -> None:
    """The loop shared by :func:`~app.producer.sender.send` and :func:`generate`: from
    ``first_seq`` on, until ``count``, ``duration`` or ``stop``; sets ``summary.next_seq``.

    ``deliver`` (None: generate only) gets each message; ``pending`` (messages handed over but
    not yet acknowledged) above ``max_pending`` pauses the loop; ``acked`` is what the progress
    line counts as sent. ``live``: each message is sent when the wall clock (``wall_ms``)
    reaches its event time, instead of at ``rate`` from the loop's start."""
    bucket = TokenBucket(rate) if rate > 0 and not live else None
    paced = bucket is not None or (live and rate > 0)
    chunk = max(1, min(1000, int(rate // 200) or 1)) if paced else 1000
    seq = first_seq
    end = None if count is None else first_seq + count
    t0 = time.monotonic()
    deadline = None if duration is None else t0 + duration
    next_report, last_report_sent, last_report_t = t0 + 1, 0, t0
    while not stop.is_set():
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            break
        if progress is not None and now >= next_report:
            done = acked()
            current = (done - last_report_sent) / (now - last_report_t)
            progress.write(f"[produce] sent={done} rate={current:.0f}/s "
                           f"errors={summary.errors} queue={pending()} seq={seq}\n")
            progress.flush()
            next_report, last_report_sent, last_report_t = now + 1, done, now
        n = chunk if end is None else min(chunk, end - seq)
        if n <= 0:
            break
        if live:
            # Sent when its event time comes: a start-up delay or a stall is caught up at once,
            # so event time stays the wall clock's instead of falling behind for good.
            ahead_ms = factory.start_ms + (seq + n - 1) * factory.step_us / 1000 - wall_ms()
            if ahead_ms > 0:
                time.sleep(min(ahead_ms / 1000, 0.05))
                continue
        elif bucket is not None:
            wanted, n = n, bucket.take(n)
            if n == 0:
                time.sleep(min(bucket.wait(wanted), 0.05))
                continue
        if deliver is not None and pending() > max_pending:
            while pending() > max_pending // 2 and not stop.is_set():
                time.sleep(0.002)
        for msg in factory.messages(seq, n):
            if deliver is not None:
                deliver(msg)
            if msg.anomaly is not None:
                summary.anomalies += 1
                if truth is not None:
                    truth.write(orjson.dumps(msg.anomaly) + b"\n")
            elif msg.bad is not None:
                summary.bad += 1
        seq += n
        summary.next_seq = seq
    summary.seconds += time.monotonic() - t0


def generate(factory: TransactionFactory, *, rate: float = 0, count: int | None = None,
             duration: float | None = None, first_seq: int = 0, truth: str | None = None,
             progress: IO[str] | None = None, stop: threading.Event | None = None) -> Summary:
    """Generate and serialise without sending (``--dry-run``); ``sent`` counts the messages."""
    summary = Summary(first_seq=first_seq, next_seq=first_seq, dry_run=True)
    truth_file = open(truth, "wb") if truth else None
    try:
        with Stop(stop) as flag:
            run(factory, None, lambda: 0, lambda: summary.next_seq - first_seq, summary,
                first_seq=first_seq, rate=rate, count=count, duration=duration, truth=truth_file,
                progress=progress, stop=flag, max_pending=0)
    finally:
        if truth_file is not None:
            truth_file.close()
    summary.sent = summary.next_seq - first_seq
    return summary
