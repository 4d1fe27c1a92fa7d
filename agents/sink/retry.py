"""Database calls that survive an outage: each runs in a writer thread (pymongo's client is
synchronous) and is retried with exponential backoff while the database is unreachable.

The caller (a sink agent) waits meanwhile, so it reads no more messages and acks nothing:
memory stays bounded and no offset is committed. The waits are asyncio sleeps, which a stop
cancels, and the writer threads are daemon threads (:class:`WriterThread`), which the
interpreter does not wait for at exit: a call stuck in the database (up to the 60 s socket
timeout) never delays a stop. Its batch was not acked, so the next start writes it again.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

from pymongo.errors import ConnectionFailure, ExecutionTimeout, WTimeoutError

__all__ = ["LOG_EVERY_SECONDS", "RETRY_MAX_SECONDS", "RETRY_MIN_SECONDS", "ROLLUP_WRITER",
           "TRANSIENT", "WRITER", "Retry", "WriterThread"]

log = logging.getLogger("app.sink")
T = TypeVar("T")
P = ParamSpec("P")

RETRY_MIN_SECONDS = 0.5
RETRY_MAX_SECONDS = 10.0
LOG_EVERY_SECONDS = 10.0



class WriterThread(Executor):
    """One daemon thread running the calls submitted to it, in order (an executor for
    ``run_in_executor``). Unlike :class:`~concurrent.futures.ThreadPoolExecutor`'s threads,
    which the interpreter joins at exit, it never holds up the end of the process."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._calls: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]]] = \
            queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        future: Future[T] = Future()
        self._calls.put((future, lambda: fn(*args, **kwargs)))
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
        return future

    def _run(self) -> None:
        while True:
            future, call = self._calls.get()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = call()
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting coroutine
                future.set_exception(exc)
            else:
                future.set_result(result)


#: The thread the sink's inserts run in, one call at a time: SQLite takes one writer at a time
#: anyway, and FerretDB runs out of connections under many concurrent update statements.
WRITER = WriterThread("sink-mongo")
#: The rollups' own thread: their upserts (slow on FerretDB) do not delay the inserts.
ROLLUP_WRITER = WriterThread("sink-rollups")

#: Errors after which the same call may succeed later: the database is down, slow or failing
#: over. Everything else is about the data.
TRANSIENT = (ConnectionFailure, ExecutionTimeout, WTimeoutError)


@dataclass
class Retry:
    """Runs a database call until it succeeds, waiting with exponential backoff while the
    database is unreachable, and logging that at most once per ``log_every`` seconds."""

    what: str
    min_seconds: float = RETRY_MIN_SECONDS
    max_seconds: float = RETRY_MAX_SECONDS
    log_every: float = LOG_EVERY_SECONDS
    failures: int = 0

    async def run(self, call: Callable[[], T], holding: int = 0,
                  executor: Executor = WRITER) -> T:
        """``call()`` in the writer thread, until it does not fail with a transient error."""
        delay = self.min_seconds
        started = last_log = 0.0
        while True:
            try:
                result = await asyncio.get_running_loop().run_in_executor(executor, call)
            except TRANSIENT as exc:
                now = time.monotonic()
                self.failures += 1
                if not started:
                    started = now
                if not last_log or now - last_log >= self.log_every:
                    last_log = now
                    log.warning("MongoDB unavailable for %.0f s while writing %s (%s: %s); "
                                "holding %d documents, retrying every <= %.0f s",
                                now - started, self.what, type(exc).__name__,
                                str(exc)[:160], holding, self.max_seconds)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_seconds)
                continue
            if started:
                log.warning("MongoDB is back after %.0f s; %s written",
                            time.monotonic() - started, self.what)
            return result
