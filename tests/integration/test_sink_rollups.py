"""The rollup writes of the sink on the real FerretDB (``agents/sink/mongo.py``:
``write_rollup_rows``, ``rollup_parts``, ``stored_processed_at``), driven by
:meth:`agents.sink.rollups.Rollups.write`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pymongo
import pytest

from agents.sink import documents as docs
from agents.sink.mongo import MongoStore, connect
from agents.sink.rollups import Countable, Rollups
from app.settings import settings

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

MINUTE = datetime(2026, 11, 26, 1, 0, tzinfo=UTC)


@pytest.fixture
async def store(mongo_db: pymongo.database.Database) -> AsyncIterator[MongoStore]:
    client = connect(settings.mongo_url)
    yield MongoStore(client[mongo_db.name])
    client.close()


def items(partition: int, merchants: int, first_offset: int) -> list[Countable]:
    """3 per merchant: 1.00 (partition 0) or 2.00 (partition 1) USD each, in yen (150 or
    300 yen) when ``i`` is even, else in euros (0.93 or 1.86)."""
    return [Countable(f"m-{i % merchants}", "grocery", MINUTE, 100 * (partition + 1), i % 2,
                      partition, first_offset + i, "JPY" if i % 2 == 0 else "EUR",
                      (15_000 if i % 2 == 0 else 93) * (partition + 1), "USD")
            for i in range(3 * merchants)]


async def test_two_processes_share_rows_and_replays_change_nothing(
        store: MongoStore, mongo_db: pymongo.database.Database) -> None:
    merchants = 50  # more rows than one update command holds
    a, b = Rollups(store), Rollups(store)  # two sink processes, partitions 0 and 1
    await a.write(items(0, merchants, 0), exclusive=False)
    await b.write(items(1, merchants, 0), exclusive=False)
    await a.write(items(0, merchants, 3 * merchants), exclusive=False)
    # process a restarts (empty cache) and reads its partition again from the start
    await Rollups(store).write(items(0, merchants, 0), exclusive=False)

    rows = {r["_id"]: r for r in mongo_db[docs.MERCHANT_MINUTE].find()}
    assert len(rows) == merchants
    for row in rows.values():  # each merchant: 6 transactions of partition 0, 3 of partition 1
        assert (row["count"], row["revenue"]) == (9, 6 * 1.0 + 3 * 2.0)
        assert row["parts"]["0"][3] > row["parts"]["1"][3]
        assert row["merchant_category"] == "grocery"
        assert row["reporting_currency"] == "USD"
        assert row["minute"].replace(tzinfo=UTC) == MINUTE  # (this client is not tz-aware)
    volume = mongo_db[docs.VOLUME_MINUTE].find_one({"_id": docs.minute_id(MINUTE)})
    assert volume is not None
    assert (volume["count"], volume["anomalies"]) == (9 * merchants, sum(
        i % 2 for i in range(3 * merchants)) * 3)
    assert volume["revenue"] == merchants * (6 * 1.0 + 3 * 2.0)  # in USD
    assert volume["reporting_currency"] == "USD"
    # per original currency, in its own amounts: partition 0 counted twice over (6 per
    # merchant), partition 1 once (3), half of each in yen, half in euros
    by_currency = {r["currency"]: r for r in mongo_db[docs.CURRENCY_MINUTE].find()}
    even = sum(1 for i in range(3 * merchants) if i % 2 == 0)
    odd = 3 * merchants - even
    assert by_currency["JPY"]["revenue"] == 2 * even * 150.0 + even * 300.0
    assert by_currency["EUR"]["revenue"] == round(2 * odd * 0.93 + odd * 1.86, 2)
    assert by_currency["JPY"]["count"] + by_currency["EUR"]["count"] == volume["count"]
    assert by_currency["JPY"]["_id"] == f"JPY|{docs.minute_id(MINUTE)}"


async def test_stored_processed_at(store: MongoStore,
                                   mongo_db: pymongo.database.Database) -> None:
    at = datetime(2026, 11, 26, 1, 2, 3, 456000, tzinfo=UTC)
    mongo_db[docs.TRANSACTIONS].insert_one({"_id": "t-1", "processed_at": at})
    assert await store.stored_processed_at(["t-1", "t-2"]) == {"t-1": at}
