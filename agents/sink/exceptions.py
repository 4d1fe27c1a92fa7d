"""The sink's errors, and which errors are about one message's data."""

from __future__ import annotations

from pymongo.errors import OperationFailure

__all__ = ["DATA_ERRORS", "DeadLetterWriteError", "PoisonMessage", "RollupWriteError",
           "SinkError"]


class SinkError(Exception):
    """Base of the sink's errors."""


class PoisonMessage(SinkError, ValueError):
    """A message the sink cannot store; ``str(exc)`` is the reason in its dead-letter record."""


class RollupWriteError(SinkError, OperationFailure):
    """The database refused a rollup update command for a reason other than an outage (which
    is retried): the rollups keep their items and events held and the process exits
    (crash-only, ``crash.py``); the restarted process reads the unacked events again."""


class DeadLetterWriteError(SinkError):
    """The database refused a dead-letter record: the message is neither stored nor
    dead-lettered, so nothing may be acked past it (the process exits, crash-only)."""


#: What converting one message into a document may raise because of that message's data:
#: the message becomes a dead-letter record. Anything else is a bug or an outage, and the
#: process exits without acking (``crash.py``). (UnicodeDecodeError and PoisonMessage are
#: ValueErrors; they are named for the reader.)
DATA_ERRORS: tuple[type[Exception], ...] = (PoisonMessage, OverflowError, ValueError,
                                            UnicodeDecodeError)
