"""A table write as the changelog message that makes it durable, and the bookkeeping after
Kafka acknowledged it.

The worker writes its tables itself (:mod:`tables.user_tables`, :mod:`tables.txn_ids`): each
write updates the local store and returns a :class:`Change`; the processor publishes the
changes and waits until Kafka acknowledged them before it lets Faust commit the source offsets.
"""

from __future__ import annotations

from functools import cache
from typing import Any, NamedTuple

from faust.types import TP

from app.main import app

__all__ = ["Change", "changes_persisted"]


class Change(NamedTuple):
    """A table write, as the changelog message that makes it durable."""

    topic: str
    key: bytes
    value: bytes
    partition: int
    timestamp: None = None
    headers: None = None


@cache
def _by_changelog() -> dict[str, Any]:
    """Changelog topic -> its table (the tables are all declared before the first batch)."""
    return {t.changelog_topic.get_topic_name(): t for t in app.tables.values()}


def changes_persisted(offsets: dict[tuple[str, int], int]) -> None:
    """Record, per changelog partition, the offset up to which Kafka acknowledged our writes:
    on a restart Faust's recovery reads each changelog from there (``_on_changelog_sent``)."""
    by_changelog = _by_changelog()
    for (topic, partition), offset in offsets.items():
        by_changelog[topic].data.set_persisted_offset(TP(topic, partition), offset)
