"""``agents.sink.rollups``: the rollup rows under redelivery and restarts, the cache, and the
rollup step (what it counts, acks released only after its write, a rebalance, back-off)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agents.sink import documents as docs
from agents.sink.batch import Acks
from agents.sink.documents import Entry
from agents.sink.mongo import InsertResult, RowWrite
from agents.sink.rollups import (
    CACHE_MINUTES,
    FLUSH_SECONDS,
    WRITE_SHARE,
    Countable,
    Rollups,
    RollupState,
    countable,
    pause_after,
)
from tests.sink_data import enriched_stream

ENRICHED, _ = enriched_stream(20)
MINUTES = [datetime(2026, 11, 25, 23, m, tzinfo=UTC) for m in range(3)]
streams = st.lists(st.tuples(st.integers(0, 2), st.sampled_from(["m-a", "m-b", "m-c"]),
                             st.integers(0, 2), st.integers(1, 10_000), st.booleans(),
                             st.sampled_from(["EUR", "JPY", "USD"])),
                   max_size=80)
#: Original cents per reporting cent of the test currencies (any distinct numbers will do).
FACTOR = {"EUR": 1, "JPY": 149, "USD": 1}


def item(merchant: str, minute: datetime, cents: int, anomaly: int, partition: int,
         offset: int, currency: str = "EUR") -> Countable:
    """A countable of ``cents`` reporting (USD) cents, in ``currency``."""
    return Countable(merchant, "grocery", minute, cents, anomaly, partition, offset, currency,
                     cents * FACTOR[currency] + 1, "USD")


def _items(stream: list) -> list[Countable]:
    """Countables of a stream: (partition, merchant, minute, cents, anomaly, currency), offsets
    in order per partition."""
    next_offset = [0, 0, 0]
    items = []
    for partition, merchant, minute, cents, anomaly, currency in stream:
        items.append(item(merchant, MINUTES[minute], cents, int(anomaly), partition,
                          next_offset[partition], currency))
        next_offset[partition] += 1
    return items


def _written(state: RollupState, items: list[Countable],
             store: dict[tuple[str, str], dict[str, list[int]]]) -> None:
    """One flush as :meth:`Rollups.write` does it, with ``store`` as the database."""
    for key, labels in state.missing(items).items():
        state.load(key, labels, store.get(key))
    changed = state.apply(items)
    for key, (row, parts) in changed.items():
        store.setdefault(key, {}).update({p: list(row.parts[p]) for p in parts})
    state.commit(changed)


@given(streams, st.lists(st.integers(0, 80), max_size=6), st.randoms())
def test_rollup_rows_are_exact_under_redelivery_and_restarts(stream: list, cuts: list,
                                                              rnd: Any) -> None:
    items = _items(stream)
    expected: dict[tuple[str, str], list[int]] = {}
    for i in items:
        minute = docs.minute_id(i.minute)
        for key, cents in (((docs.MERCHANT_MINUTE, f"{i.merchant_id}|{minute}"), i.cents),
                           ((docs.VOLUME_MINUTE, minute), i.cents),
                           ((docs.CURRENCY_MINUTE, f"{i.currency}|{minute}"), i.amount_cents)):
            row = expected.setdefault(key, [0, 0, 0])
            row[0] += 1
            row[1] += cents
            row[2] += i.anomaly
    store: dict[tuple[str, str], dict[str, list[int]]] = {}
    state = RollupState()
    done = 0
    for cut in sorted(cuts):
        # a flush up to ``cut``, then a crash: the process restarts with an empty cache and
        # reads again from an earlier point (what was written stays written)
        _written(state, items[:cut], store)
        done = max(done, cut)
        state = RollupState() if rnd.random() < 0.5 else state
    _written(state, items[rnd.randint(0, done):], store)
    got = {key: [sum(p[i] for p in parts.values()) for i in range(3)]
           for key, parts in store.items()}
    assert {k: v for k, v in got.items() if v[0]} == expected
    for key, row in state.rows.items():
        assert row.totals() == dict(zip(("count", "cents", "anomalies"), got[key], strict=True))


def test_an_item_touches_its_merchant_volume_and_currency_rows() -> None:
    minute = datetime(2026, 11, 25, 23, 14, tzinfo=UTC)
    one = Countable("m-1", "grocery", minute, 1005, 1, 0, 0, "JPY", 150_000, "USD")
    assert RollupState().missing([one]) == {
        (docs.MERCHANT_MINUTE, "m-1|2026-11-25T23:14:00Z"):
            {"merchant_id": "m-1", "merchant_category": "grocery", "minute": minute,
             "reporting_currency": "USD"},
        (docs.VOLUME_MINUTE, "2026-11-25T23:14:00Z"):
            {"minute": minute, "reporting_currency": "USD"},
        (docs.CURRENCY_MINUTE, "JPY|2026-11-25T23:14:00Z"): {"currency": "JPY", "minute": minute},
    }
    state = RollupState()
    for key, labels in state.missing([one]).items():
        state.load(key, labels, None)
    changed = state.apply([one])
    # the reporting cents in the merchant and volume rows, the yen in the currency row
    assert {key[0]: row.totals()["cents"] for key, (row, _) in changed.items()} == {
        docs.MERCHANT_MINUTE: 1005, docs.VOLUME_MINUTE: 1005, docs.CURRENCY_MINUTE: 150_000}


def test_countable_counts_the_reporting_amount_and_the_original_one() -> None:
    value = next(e for e in ENRICHED if e["currency"] != "USD")
    doc = docs.transaction_doc(dict(value))
    counted = countable(doc, 3, 17)
    assert counted is not None and (counted.partition, counted.offset) == (3, 17)
    assert counted.cents == round(value["amount_reporting"] * 100) != \
        counted.amount_cents == round(value["amount"] * 100)
    assert (counted.currency, counted.reporting_currency) == (value["currency"], "USD")
    assert counted.minute == doc["minute"]
    assert countable({**doc, "amount": "12"}, 0, 0) is None
    assert countable({**doc, "amount_reporting": "12"}, 0, 0) is None
    assert countable({**doc, "merchant_id": None}, 0, 0) is None
    # stored, but beyond any amount the contract allows: no 64-bit sum could hold 1e308 cents
    # (the rollup write would fail for good and end the process at every restart)
    for amount in (1e308, -1e308, 1_000_000.01, float("inf")):
        assert countable({**doc, "amount": amount}, 0, 0) is None
    for amount in (1e308, float("nan"), 1_000_000_000.01):
        assert countable({**doc, "amount_reporting": amount}, 0, 0) is None
    assert countable({**doc, "amount": 1_000_000}, 0, 0) is not None
    # an amount in another reporting currency cannot be added to these rows
    assert countable({**doc, "reporting_currency": "EUR"}, 0, 0) is None


@pytest.mark.parametrize("minute", [datetime(1, 1, 1, 0, 0, tzinfo=UTC),
                                    datetime(9999, 12, 31, 23, 59, tzinfo=UTC)])
def test_rows_at_the_ends_of_the_calendar(minute: datetime) -> None:
    """A transaction in the first minute of year 1 (a valid UTC instant) made the cache's
    "30 minutes behind the newest" an OverflowError after its rollup write."""
    state = RollupState()
    one = item("m", minute, 100, 0, 0, 0)
    for key, labels in state.missing([one]).items():
        state.load(key, labels, None)
    state.commit(state.apply([one]))
    assert state.newest == minute and len(state.rows) == 3


def test_rows_far_behind_leave_the_cache() -> None:
    state = RollupState()
    late = item("m", MINUTES[0], 100, 0, 0, 0)
    now = item("m", MINUTES[0] + timedelta(minutes=CACHE_MINUTES + 1), 100, 0, 0, 1)
    for one in (late, now):
        for key, labels in state.missing([one]).items():
            state.load(key, labels, None)
        state.commit(state.apply([one]))
    assert len(state.rows) == 3  # the late rows left; the new merchant, volume, currency stay
    assert state.missing([late])


def test_rollup_writes_back_off_when_they_get_slow() -> None:
    assert pause_after(0.0) == pause_after(0.5) == FLUSH_SECONDS
    for took in (2.0, 5.0, 30.0):
        pause = pause_after(took)
        assert pause >= FLUSH_SECONDS
        assert took / (took + pause) <= WRITE_SHARE + 1e-9


# --- the rollup step --------------------------------------------------------------------------
class Store:
    """The rollups' database calls, in memory; records the rows written."""

    def __init__(self, processed_at: dict[str, Any] | None = None) -> None:
        self.processed_at = processed_at or {}
        self.rows: list[RowWrite] = []
        self.acked: list[object] = []

    async def stored_processed_at(self, ids: list[str]) -> dict[str, Any]:
        return {i: self.processed_at[i] for i in ids if i in self.processed_at}

    async def rollup_parts(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], Any]:
        return {}

    async def write_rollup_rows(self, rows: list[RowWrite], exclusive: bool) -> None:
        self.rows.extend(rows)

    async def ack(self, events: Any) -> None:
        assert self.rows, "acked before the rollup rows were written"
        self.acked.extend(events)


def stored(offsets: range) -> list[Entry]:
    return [Entry(docs.transaction_doc(ENRICHED[o]), b"{}", "t", 1, o) for o in offsets]


async def test_acks_are_released_only_after_the_rollup_write() -> None:
    store = Store()
    rollups = Rollups(store)
    batch = stored(range(3))
    await rollups.add(batch, InsertResult(inserted=3), Acks(store.ack, ["e0", "e1", "e2"]))
    assert rollups.held == 3 and len(rollups.items) == 3 and not store.acked
    await rollups.flush()
    assert store.acked == ["e0", "e1", "e2"] and not rollups.items and rollups.held == 0
    volume = [row for row in store.rows if row[0] == docs.VOLUME_MINUTE]
    assert sum(row[4]["count"] for row in volume) == 3
    # revenue in reporting cents, labelled; per currency in the currency's own cents
    assert sum(row[4]["cents"] for row in volume) == sum(
        round(ENRICHED[o]["amount_reporting"] * 100) for o in range(3))
    assert all(row[2]["reporting_currency"] == "USD" for row in volume)
    by_currency: dict[str, int] = {}
    for o in range(3):
        currency = ENRICHED[o]["currency"]
        by_currency[currency] = by_currency.get(currency, 0) + round(ENRICHED[o]["amount"] * 100)
    assert {row[2]["currency"]: row[4]["cents"] for row in store.rows
            if row[0] == docs.CURRENCY_MINUTE} == by_currency


async def test_too_many_held_events_flush_at_once() -> None:
    store = Store()
    rollups = Rollups(store, flush_events=2)
    await rollups.add(stored(range(1)), InsertResult(inserted=1), Acks(store.ack, ["e0"]))
    assert not store.acked
    await rollups.add(stored(range(1, 2)), InsertResult(inserted=1), Acks(store.ack, ["e1"]))
    assert store.acked == ["e0", "e1"]


async def test_only_this_messages_documents_are_counted() -> None:
    batch = stored(range(4))
    at = {e.doc["_id"]: e.doc["processed_at"] for e in batch if e.doc is not None}
    ids = list(at)
    # 0: stored by an earlier read of this message (same processed_at); 1: stored from another
    # message (the processor emitted it again); 2: rejected by the database; 3: inserted now
    store = Store({ids[0]: at[ids[0]], ids[1]: at[ids[1]] + timedelta(seconds=1),
                   ids[3]: at[ids[3]]})
    rollups = Rollups(store)
    result = InsertResult(inserted=1, duplicates=2, rejected=[(batch[2], "refused")])
    assert [i.offset for i in await rollups.stored_here(batch, result)] == [0, 3]


async def test_a_flush_during_the_read_back_of_duplicates_loses_no_item() -> None:
    """``add`` waits for the read-back of a batch's duplicates (after a restart, or a write
    retried through an outage) while the rollup timer flushes. The items were appended to the
    list the flush had just taken (``self.items.extend(await ...)`` binds the list first), so
    they were never counted while their events were acked: rows short by whole batches."""
    first, second = stored(range(3)), stored(range(3, 6))
    at = {e.doc["_id"]: e.doc["processed_at"] for e in second if e.doc is not None}
    reading, release = asyncio.Event(), asyncio.Event()

    class Slow(Store):
        async def stored_processed_at(self, ids: list[str]) -> dict[str, Any]:
            reading.set()
            await release.wait()
            return await super().stored_processed_at(ids)

    store = Slow(at)
    rollups = Rollups(store)
    await rollups.add(first, InsertResult(inserted=3), Acks(store.ack, ["e0", "e1", "e2"]))
    adding = asyncio.ensure_future(
        rollups.add(second, InsertResult(duplicates=3), Acks(store.ack, ["e3", "e4", "e5"])))
    await reading.wait()
    await rollups.flush()  # the timer, while the duplicates are read back
    release.set()
    await adding
    await rollups.flush()
    assert store.acked == ["e0", "e1", "e2", "e3", "e4", "e5"]
    volume: dict[str, int] = {}
    for collection, _id, _, _, totals in store.rows:
        if collection == docs.VOLUME_MINUTE:
            volume[_id] = totals["count"]
    assert sum(volume.values()) == 6


async def test_a_failed_rollup_write_keeps_everything_held(monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    store = Store()
    rollups = Rollups(store)

    async def fails(items: list[Countable], exclusive: bool) -> None:
        raise RuntimeError("no")

    monkeypatch.setattr(rollups, "write", fails)
    await rollups.add(stored(range(1)), InsertResult(inserted=1), Acks(store.ack, ["e1"]))
    [item] = rollups.items
    with pytest.raises(RuntimeError):
        await rollups.flush()
    assert rollups.items == [item] and rollups.held == 1 and not store.acked


async def test_a_rebalance_forgets_the_cached_rows_and_the_revoked_items() -> None:
    rollups = Rollups(Store())
    mine = item("m", MINUTES[0], 100, 0, 1, 5)
    theirs = item("m", MINUTES[0], 100, 0, 2, 5)
    rollups.state.load((docs.VOLUME_MINUTE, "x"), {"minute": MINUTES[0]}, None)
    rollups.items.extend([mine, theirs])
    rollups.forget({2})
    assert rollups.items == [mine] and not rollups.state.rows
