"""Sending to Kafka: :func:`send` runs the send loop in one process, or in several
(:mod:`app.producer.parallel`) that each send their share of the partitions."""

from __future__ import annotations

import threading
import time
from typing import IO, Any

from app.producer.factory import Message, TransactionFactory
from app.producer.kafka import Partitions, ensure_topic, make_producer
from app.producer.loop import Summary, run
from app.producer.parallel import Coordinator, fork
from app.producer.signals import Flag, Stop


def send(factory: TransactionFactory, topic: str, *, bootstrap: str | None = None,
         rate: float = 0, count: int | None = None, duration: float | None = None,
         first_seq: int = 0, truth: str | None = None, progress: IO[str] | None = None,
         stop: threading.Event | None = None, partitions: int | None = None,
         max_pending: int = 200_000, producer: Any = None, processes: int = 1,
         live: bool = False) -> Summary:
    """Send ``factory``'s messages to ``topic``; returns when ``count`` are delivered (or failed),
    ``duration`` has passed or the process got SIGINT/SIGTERM. Creates the topic with
    ``partitions`` (default ``TOPIC_PARTITIONS``) when it does not exist.

    ``processes`` > 1 forks helpers: every process walks the same sequence numbers at the same
    rate and sends only the keys of its share of the partitions (partition % processes), so each
    partition still gets its messages in order from one producer; on a stop they agree on one
    end sequence number, so a run always covers ``first_seq .. next_seq - 1`` exactly.

    ``live``: each message goes out when the clock reaches its event time (the run started
    "now" at the wall clock's pace), so the time the producer takes to start is caught up at
    once instead of leaving every event that much in the past."""
    from app.settings import settings

    bootstrap = bootstrap or settings.kafka_bootstrap_servers
    ensure_topic(bootstrap, topic, partitions or settings.topic_partitions)
    if processes <= 1:
        return send_share(factory, topic, bootstrap, rate=rate, count=count, duration=duration,
                          first_seq=first_seq, truth=truth, progress=progress, stop=stop,
                          max_pending=max_pending, producer=producer, live=live)

    def share(worker: int, coord: Coordinator) -> Summary:
        main = worker == 0  # the truth file and the progress lines are this process's
        return send_share(factory, topic, bootstrap, rate=rate, count=count, duration=duration,
                          first_seq=first_seq, truth=truth if main else None,
                          progress=progress if main else None, stop=coord.stop,
                          max_pending=max_pending, worker=worker, coord=coord, live=live)

    return fork(processes, share)


def send_share(factory: TransactionFactory, topic: str, bootstrap: str, *, rate: float,
               count: int | None, duration: float | None, first_seq: int,
               truth: str | None, progress: IO[str] | None, stop: Flag | None,
               max_pending: int, producer: Any = None, worker: int = 0,
               coord: Coordinator | None = None, live: bool = False) -> Summary:
    """:func:`send` in one process: all messages, or with ``coord`` those of ``worker``'s
    share of the partitions."""
    own = producer is None
    producer = producer or make_producer(bootstrap)
    summary = Summary(first_seq=first_seq, next_seq=first_seq)
    attempted = delivered = 0
    finished = False
    workers = coord.workers if coord is not None else 1
    shared = coord.delivered if coord is not None else None

    # Callbacks run on the producer's I/O thread, and on the caller's when a flush aborts.
    lock = threading.Lock()

    def ok(_: Any) -> None:
        nonlocal delivered
        with lock:
            if not finished:
                delivered += 1
                if shared is not None:
                    shared[worker] = delivered

    def failed(exc: BaseException) -> None:
        name = type(exc).__name__
        with lock:
            if finished:
                return
            summary.errors += 1
            summary.error_kinds[name] = summary.error_kinds.get(name, 0) + 1
            summary.last_error = f"{name}: {exc}"[:200]

    partition_of = Partitions(len(producer.partitions_for(topic)))

    def deliver(msg: Message) -> None:
        nonlocal attempted
        partition = partition_of[msg.key]
        if workers > 1 and partition % workers != worker:
            return  # another process's share
        attempted += 1
        try:
            future = producer.send(topic, key=msg.key, value=msg.value, partition=partition,
                                   timestamp_ms=msg.timestamp_ms)
        except Exception as exc:  # a full buffer or a closed producer: counted, not hidden
            failed(exc)
            return
        future.add_callback(ok)
        future.add_errback(failed)

    def pending() -> int:
        return attempted - delivered - summary.errors

    def acked() -> int:
        return delivered if coord is None else coord.acked()

    truth_file = open(truth, "wb") if truth else None
    try:
        with Stop(stop) as flag:
            run(factory, deliver, pending, acked, summary, first_seq=first_seq, rate=rate,
                count=count, duration=duration, truth=truth_file, progress=progress,
                stop=flag, max_pending=max_pending, live=live)
            if coord is not None:  # go on to the end all processes agree on
                end = coord.end_seq(worker, summary.next_seq)
                if end > summary.next_seq:
                    run(factory, deliver, pending, acked, summary, first_seq=summary.next_seq,
                        rate=0, count=end - summary.next_seq, duration=None, truth=truth_file,
                        progress=None, stop=threading.Event(), max_pending=max_pending)
            t_flush = time.monotonic()
            try:
                producer.flush(timeout=60)
            except Exception as exc:  # e.g. a timeout: what is still pending is counted below
                summary.last_error = f"flush: {type(exc).__name__}: {exc}"[:200]
            summary.seconds += time.monotonic() - t_flush
    finally:
        if truth_file is not None:
            truth_file.close()
        if own:
            try:
                producer.close(timeout=10)
            except Exception as exc:  # closing flushes too; the failure is already counted
                summary.last_error = summary.last_error or f"close: {exc}"[:200]
                try:
                    producer.close(timeout=0)
                except Exception:  # noqa: S110 - best effort: the sender thread is gone
                    pass
    with lock:  # from here on, every message not acknowledged counts as an error
        finished = True
        lost = attempted - delivered - summary.errors
        summary.errors = attempted - delivered
        summary.sent = delivered
    if lost > 0:
        summary.last_error = summary.last_error or f"{lost} messages not acknowledged"
    return summary
