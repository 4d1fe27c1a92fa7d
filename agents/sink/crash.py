"""Crash-only: an unexpected exception in any of the sink's agents or tasks ends the process.

Faust's default is to log an agent's exception and start the agent again. The messages the
crashed agent had taken are then neither stored nor acked, while the restarted agent acks the
ones after them, and Faust's commit can pass over such a hole (a partition's first messages, or
a hole of one message): a message was lost that way. So every sink agent, task and signal
handler runs inside :func:`crash_only`: the exception is logged, the logs flushed, and the
process exits at once with :data:`EXIT_CODE` (like the processing worker's ``_not_durable``),
before anything else is acked or committed. The restarted process (systemd, Kubernetes, the
test harness) reads again from the committed offsets; the writes are idempotent.

Data errors never get here: a message that cannot become a document, or that the database
refuses, is a dead-letter record (``agents.py``, ``mongo.py``).

:func:`arm_stop_deadline` bounds a requested stop (SIGTERM) the same way: whatever still runs
after :data:`STOP_SECONDS` is abandoned (nothing unacked is lost: it is read again).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, NoReturn, ParamSpec, TypeVar

__all__ = ["EXIT_CODE", "STOP_SECONDS", "arm_stop_deadline", "crash_only", "exit_now"]

log = logging.getLogger("app.sink")

P = ParamSpec("P")
T = TypeVar("T")

#: The exit code of a crash (EX_SOFTWARE, as the processing worker's).
EXIT_CODE = 70
#: A stop (SIGTERM) ends the process after at most this many seconds.
STOP_SECONDS = 8.0


def _flush_logs() -> None:
    for handler in logging.getLogger().handlers:
        try:
            handler.flush()
        except Exception:  # noqa: BLE001, S110 - exiting anyway
            pass


def exit_now(what: str, exc: BaseException | None = None) -> NoReturn:
    """Log why, flush the logs and end the process with :data:`EXIT_CODE`, at once: no
    ``finally`` block, no Faust shutdown, so no ack and no commit happens after this."""
    log.critical("%s: exiting (code %d) without acking; the restarted sink reads again "
                 "from the committed offsets", what, EXIT_CODE, exc_info=exc)
    _flush_logs()
    os._exit(EXIT_CODE)


def crash_only(fn: Callable[P, Awaitable[T]]) -> Callable[P, Coroutine[Any, Any, T]]:
    """``fn`` (a coroutine function), ending the process on any exception but a
    cancellation (which is how Faust stops agents and tasks)."""

    @functools.wraps(fn)
    async def run(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await fn(*args, **kwargs)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the point: every unexpected error
            exit_now(f"unexpected {type(exc).__name__} in the sink's {fn.__name__}", exc)

    return run


def arm_stop_deadline(seconds: float = STOP_SECONDS) -> threading.Timer:
    """After ``seconds`` (a daemon timer), end the process if it is still stopping: a stop must
    not wait for a database call or a drain; unacked events are read again after a restart."""

    def expire() -> None:
        log.warning("the sink did not stop within %.0f s of the signal: exiting now (nothing "
                    "unacked is lost, it is read again)", seconds)
        _flush_logs()
        os._exit(0)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()
    return timer
