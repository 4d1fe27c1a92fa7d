"""Forked senders: one share of the work in each of several processes, one summary in the end.

Every process walks the same sequence numbers at the same rate (:mod:`app.producer.sender`
keeps only its share); the :class:`Coordinator`, created before the fork, is what they share."""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from app.producer.loop import Summary
from app.producer.signals import Stop

if TYPE_CHECKING:
    from multiprocessing.context import ForkContext
    from multiprocessing.queues import Queue


class Coordinator:
    """What the processes of a parallel send share (created before the fork)."""

    def __init__(self, ctx: ForkContext, workers: int) -> None:
        self.workers = workers
        self.stop = ctx.Event()
        self.barrier = ctx.Barrier(workers)
        self.next_seqs = ctx.RawArray(ctypes.c_longlong, workers)
        self.delivered = ctx.RawArray(ctypes.c_longlong, workers)
        self.results: Queue[Summary] = ctx.Queue()

    def end_seq(self, worker: int, next_seq: int) -> int:
        """Stop everyone, wait for everyone, and return the common end sequence number."""
        self.stop.set()
        self.next_seqs[worker] = next_seq
        try:
            self.barrier.wait(timeout=120)
        except threading.BrokenBarrierError:  # a helper died: finish our own part only
            return next_seq
        return int(max(self.next_seqs))

    def acked(self) -> int:
        """Messages acknowledged so far, all processes together."""
        return int(sum(self.delivered))


def fork(processes: int, share: Callable[[int, Coordinator], Summary]) -> Summary:
    """Run ``share(worker, coordinator)`` for workers ``0 .. processes - 1``: worker 0 in this
    process, the others in forked helpers; returns worker 0's summary with the helpers' counts
    added (``sent``, ``errors``, ``error_kinds``; ``seconds`` is the longest)."""
    import multiprocessing
    import os

    ctx = multiprocessing.get_context("fork")
    coord = Coordinator(ctx, processes)

    def helper(worker: int) -> None:
        try:
            coord.results.put(share(worker, coord))
            coord.results.close()
            coord.results.join_thread()  # the result is written before the process ends
        finally:
            os._exit(0)

    with Stop(coord.stop):  # the helpers inherit the signal handlers
        helpers = [ctx.Process(target=helper, args=(w,), daemon=True)
                   for w in range(1, processes)]
        for proc in helpers:
            proc.start()
        summary = share(0, coord)
        for _ in helpers:
            try:
                part = coord.results.get(timeout=180)
            except Exception as exc:  # a helper that never reported: its share is unaccounted
                summary.last_error = f"a helper process did not report: {exc!r}"
                continue
            summary.sent += part.sent
            summary.errors += part.errors
            summary.seconds = max(summary.seconds, part.seconds)
            for name, n in part.error_kinds.items():
                summary.error_kinds[name] = summary.error_kinds.get(name, 0) + n
            summary.last_error = summary.last_error or part.last_error
        for proc in helpers:
            proc.join(timeout=30)
    return summary
