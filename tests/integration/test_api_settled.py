"""The 24-hour and 7-day merchant rankings with SettledDocs, on the real FerretDB: the totals
equal those read without it, a refresh reads again only the current period's documents, and
a late event in an ended hour shows once settled_seconds have passed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from agents.sink import aggregates as agg
from tests.mongo_finds import Finds
from views import queries
from views.settled import SettledDocs

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 30, 15, 30, tzinfo=UTC)


def items(offset: int, hours_back: range, merchant: str = "m1") -> list[agg.Countable]:
    return [agg.Countable(merchant, "travel", NOW - timedelta(hours=h), 1000 + h, 0, 0,
                          offset + i, "USD", 1000 + h, "USD", f"u{h}")
            for i, h in enumerate(hours_back)]


def store(db: Any, built: list[agg.Countable]) -> None:
    for collection, documents in agg.build(built).items():
        for doc in documents:
            db[collection].replace_one({"_id": doc["_id"]}, doc, upsert=True)


def test_ended_hours_are_read_again_only_when_settled(counted: tuple[Any, Finds]) -> None:
    db, finds = counted
    history = items(0, range(0, 26))
    store(db, history)
    clock = [0.0]
    settled: SettledDocs[Any] = SettledDocs(600, clock=lambda: clock[0])
    plain = queries.merchant_totals(db, "24h", NOW)
    assert queries.merchant_totals(db, "24h", NOW, settled=settled) == plain
    assert plain[0]["count"] == 25  # the current hour and the 24 before it
    finds.filters.clear()
    assert queries.merchant_totals(db, "24h", NOW, settled=settled) == plain
    assert finds.filters == [{"_id": NOW.strftime("%Y-%m-%dT%H")}]  # only the open hour again

    # A late event in an hour that ended long ago: seen once settled_seconds have passed.
    store(db, history + items(100, range(5, 6)))
    assert queries.merchant_totals(db, "24h", NOW, settled=settled) == plain
    clock[0] += 601
    late = queries.merchant_totals(db, "24h", NOW, settled=settled)
    assert late[0]["count"] == 26 and late == queries.merchant_totals(db, "24h", NOW)
    assert queries.merchant_totals(db, "7d", NOW, settled=settled) == \
        queries.merchant_totals(db, "7d", NOW)
