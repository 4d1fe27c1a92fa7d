"""The sink's own errors."""

from __future__ import annotations

from pymongo.errors import OperationFailure

__all__ = ["PoisonMessage", "RollupWriteError", "SinkError"]


class SinkError(Exception):
    """Base of the sink's errors."""


class PoisonMessage(SinkError, ValueError):
    """A message the sink cannot store; ``str(exc)`` is the reason in its dead-letter record."""


class RollupWriteError(SinkError, OperationFailure):
    """The database refused a rollup update command for a reason other than an outage (which
    is retried): the rollups keep their items and events held and try again later."""
