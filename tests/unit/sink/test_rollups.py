"""``agents.sink.rollups`` and ``agents.sink.aggregates``: the aggregate documents under
redelivery, restarts and two processes, the field names, the retention of ``user_days``, the
cache, and the rollup step (what it counts, acks released only after its write, a rebalance,
back-off)."""

from __future__ import annotations

import asyncio
import copy
import zlib
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agents.sink import aggregates as agg
from agents.sink import documents as docs
from agents.sink.batch import Acks
from agents.sink.documents import Entry
from agents.sink.mongo import AggregateWrite, InsertResult
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
MINUTES = [datetime(2026, 11, 25, 23, 58, tzinfo=UTC) + timedelta(minutes=m) for m in range(3)]
streams = st.lists(st.tuples(st.integers(0, 2), st.sampled_from(["m-a", "m.b", "$m-c"]),
                             st.integers(0, 2), st.integers(1, 10_000), st.booleans(),
                             st.sampled_from(["EUR", "JPY", "USD"]), st.integers(0, 2)),
                   max_size=60)
#: Original cents per reporting cent of the test currencies (any distinct numbers will do).
FACTOR = {"EUR": 1, "JPY": 149, "USD": 1}


def item(merchant: str, minute: datetime, cents: int, anomaly: int, partition: int,
         offset: int, currency: str = "EUR", user: str | None = None) -> Countable:
    """A countable of ``cents`` reporting (USD) cents, in ``currency``; the user lives in the
    partition (``u<partition>-...``)."""
    return Countable(merchant, "grocery", minute, cents, anomaly, partition, offset, currency,
                     cents * FACTOR[currency] + 1, "USD", user or f"u{partition}")


def _items(stream: list) -> list[Countable]:
    """Countables of a stream: (partition, merchant, minute, cents, anomaly, currency, user),
    offsets in order per partition (the minutes cross an hour and a day)."""
    next_offset = [0, 0, 0]
    items = []
    for partition, merchant, minute, cents, anomaly, currency, user in stream:
        items.append(item(merchant, MINUTES[minute], cents, int(anomaly), partition,
                          next_offset[partition], currency, f"u{partition}-{user}"))
        next_offset[partition] += 1
    return items


def _set(doc: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    for key in parents:
        doc = doc.setdefault(key, {})
    doc[last] = copy.deepcopy(value)


def _unset(doc: dict[str, Any], path: str) -> None:
    *parents, last = path.split(".")
    for key in parents:
        doc = doc.get(key, {})
    doc.pop(last, None)


class Store:
    """The rollups' database calls, in memory (``$set``/``$unset`` of dotted paths, upsert);
    records the writes."""

    def __init__(self, txn: dict[str, Any] | None = None) -> None:
        self.txn = txn or {}
        self.docs: dict[tuple[str, str], dict[str, Any]] = {}
        self.writes: list[AggregateWrite] = []
        self.acked: list[object] = []

    async def stored_txn(self, ids: list[str]) -> dict[str, Any]:
        return {i: self.txn[i] for i in ids if i in self.txn}

    async def aggregate_docs(self, collection: str, ids: list[str],
                             projection: dict[str, Any]) -> dict[str, dict[str, Any]]:
        return {i: copy.deepcopy(self.docs[collection, i]) for i in ids
                if (collection, i) in self.docs}

    async def write_aggregates(self, writes: list[AggregateWrite]) -> None:
        for collection, _id, fields, unset in writes:
            assert not set(fields) & set(unset)
            doc = self.docs.setdefault((collection, _id), {"_id": _id})
            for path, value in fields.items():
                _set(doc, path, value)
            for path in unset:
                _unset(doc, path)
        self.writes.extend(writes)

    async def ack(self, events: Any) -> None:
        assert self.writes, "acked before the aggregates were written"
        self.acked.extend(events)


def _expected(items: list[Countable]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(c, d["_id"]): d for c, ds in agg.build(items).items() for d in ds}


@given(streams, st.lists(st.integers(0, 60), max_size=6), st.randoms())
def test_aggregates_are_exact_under_redelivery_and_restarts(stream: list, cuts: list,
                                                            rnd: Any) -> None:
    """Flushes up to random points, crashes (an empty cache) and reads again from any earlier
    point: the stored documents equal the ones built from each transaction once."""
    items = _items(stream)
    store = Store()

    async def run() -> None:
        rollups, done = Rollups(store), 0
        for cut in sorted(cuts):
            await rollups.write(items[rnd.randint(0, done):cut])
            done = max(done, cut)
            if rnd.random() < 0.5:
                rollups = Rollups(store)
        await rollups.write(items[rnd.randint(0, done):])

    asyncio.run(run())
    assert store.docs == _expected(items)


@given(streams, st.randoms())
def test_one_process_per_partition_in_any_interleaving(stream: list, rnd: Any) -> None:
    """Three processes (one per partition) write their parts of the same documents in any
    order, each redelivering some of its own: the same documents."""
    items = _items(stream)
    store = Store()
    queues = {p: [i for i in items if i.partition == p] for p in range(3)}

    async def run() -> None:
        processes = {p: Rollups(store) for p in queues}
        while any(queues.values()):
            p = rnd.choice([p for p, q in queues.items() if q])
            n = rnd.randint(1, len(queues[p]))
            chunk, queues[p] = queues[p][:n], queues[p][n:]
            again = chunk[:rnd.randint(0, len(chunk))]  # a redelivery of some of it
            await processes[p].write(chunk)
            await processes[p].write(again)

    asyncio.run(run())
    assert store.docs == _expected(items)


@given(st.text(max_size=12))
def test_field_names_are_safe_and_reversible(value: str) -> None:
    name = agg.field_name(value)
    assert name and "." not in name and not name.startswith("$") and "\x00" not in name
    assert agg.unfield(name) == value
    assert not any(ch.isspace() for ch in name)
    if value and not set(value) & set(".$%") and value.isprintable() and not any(
            ch.isspace() for ch in value):
        assert name == value


def test_spaces_are_encoded() -> None:
    """FerretDB trims any Unicode space off a path's segments: a merchant id of spaces
    made an empty field name, and the sink's read of its aggregates failed."""
    for value in (" ", "\xa0", "\u2028", "a\u202f", "\x85"):
        name = agg.field_name(value)
        assert not any(ch.isspace() for ch in name) and agg.unfield(name) == value


def test_field_name_examples() -> None:
    assert agg.field_name("m.1") == "m%2E1"
    assert agg.field_name("$m%") == "%24m%25"
    assert agg.field_name("") == "%"
    assert agg.field_name("ünï") == "ünï"


def test_an_item_touches_every_aggregate() -> None:
    minute = datetime(2026, 11, 25, 23, 14, tzinfo=UTC)
    one = Countable("m.1", "grocery", minute, 1005, 1, 3, 7, "JPY", 150_000, "USD", "alice")
    built = _expected([one])
    assert built[agg.USER_DAYS, "alice"] == {
        "_id": "alice", "reporting_currency": "USD", "days": {"2026-11-25": [1, 1005, 1, 7]}}
    assert built[agg.MERCHANT_DAYS, "2026-11-25"] == {
        "_id": "2026-11-25", "reporting_currency": "USD",
        "merchants": {"m%2E1": {"id": "m.1", "category": "grocery", "p3": [1, 1005, 1, 7]}}}
    assert built[agg.MERCHANT_HOURS, "2026-11-25T23"]["merchants"] == \
        built[agg.MERCHANT_DAYS, "2026-11-25"]["merchants"]
    assert built[agg.VOLUME_HOURS, "2026-11-25T23"] == {
        "_id": "2026-11-25T23", "reporting_currency": "USD",
        "minutes": {"14": {"p3": [1, 1005, 1, 7]}}}
    # per original currency: [count, original cents, reporting cents, offset]
    assert built[agg.CURRENCY_DAYS, "2026-11-25"] == {
        "_id": "2026-11-25", "currencies": {"JPY": {"p3": [1, 150_000, 1005, 7]}}}
    assert built[agg.CURRENCY_HOURS, "2026-11-25T23"] == {
        "_id": "2026-11-25T23", "minutes": {"14": {"JPY": {"p3": [1, 150_000, 1005, 7]}}}}
    group = f"2026-11-25/{zlib.crc32(b'alice') % agg.USER_GROUPS:02d}"
    assert built[agg.USERS_BY_DAY, group] == {
        "_id": group, "reporting_currency": "USD", "day": "2026-11-25",
        "users": {"alice": {"id": "alice", "p3": [1, 1005, 1, 7]}}}


@given(streams)
def test_users_by_day_holds_the_numbers_of_user_days(stream: list) -> None:
    """Grouped by day, the users' numbers are those of ``user_days``, each user in one group
    of each day."""
    built = agg.build(_items(stream))
    by_user: dict[tuple[str, str], list[int]] = {}
    for doc in built[agg.USERS_BY_DAY]:
        day, group = doc["_id"].split("/")
        assert doc["day"] == day
        for key, user in doc["users"].items():
            assert agg.unfield(key) == user["id"]
            assert agg.user_group(user["id"]) == int(group)
            assert (user["id"], day) not in by_user
            by_user[user["id"], day] = list(agg.sum_parts(agg.parts_of(user)))
    assert by_user == {(doc["_id"], day): part[:3] for doc in built[agg.USER_DAYS]
                       for day, part in doc["days"].items()}


async def test_old_days_of_a_user_are_dropped_when_the_document_is_written() -> None:
    store = Store()
    store.docs[agg.USER_DAYS, "u0"] = {"_id": "u0", "reporting_currency": "USD", "days": {
        "2025-01-01": [1, 1, 0, 1], "2026-10-01": [1, 1, 0, 2]}}
    rollups = Rollups(store)
    rollups.state.keep_days = 100
    await rollups.write([item("m", MINUTES[0], 100, 0, 0, 3, user="u0")])
    assert store.docs[agg.USER_DAYS, "u0"]["days"] == {
        "2026-10-01": [1, 1, 0, 2], "2026-11-25": [1, 100, 0, 3]}


def test_countable_counts_the_reporting_amount_and_the_original_one() -> None:
    value = next(e for e in ENRICHED if e["currency"] != "USD")
    _, doc = docs.transaction(orjson.dumps(value))
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
async def test_aggregates_at_the_ends_of_the_calendar(minute: datetime) -> None:
    """The first minute of year 1 and the last of year 9999 are valid UTC instants: their
    buckets' ends and the cache's "30 minutes behind the newest" must not overflow."""
    store = Store()
    rollups = Rollups(store)
    await rollups.write([item("m", minute, 100, 0, 0, 0)])
    assert rollups.state.newest == minute and store.docs == _expected(
        [item("m", minute, 100, 0, 0, 0)])


def test_parts_far_behind_leave_the_cache() -> None:
    state = RollupState()
    late = item("m", MINUTES[0], 100, 0, 0, 0)
    now = item("m", MINUTES[0] + timedelta(hours=24, minutes=CACHE_MINUTES + 1), 100, 0, 0, 1)
    for one in (late, now):
        for doc, paths in state.missing([one]).items():
            state.load(doc, paths, None)
        state.commit(state.apply([one]))
    assert len(state.parts) == len(agg.slots(now))  # the late day's and hour's parts left
    assert state.missing([late]) and not state.missing([now])


def test_rollup_writes_back_off_when_they_get_slow() -> None:
    assert pause_after(0.0) == pause_after(0.5) == FLUSH_SECONDS
    for took in (2.0, 5.0, 30.0):
        pause = pause_after(took)
        assert pause >= FLUSH_SECONDS
        assert took / (took + pause) <= WRITE_SHARE + 1e-9


# --- the rollup step --------------------------------------------------------------------------
def stored(offsets: range) -> list[Entry]:
    entries = []
    for o in offsets:
        raw = orjson.dumps(ENRICHED[o])
        doc, fields = docs.transaction(raw)
        entries.append(Entry(doc, raw, "t", 1, o, fields=fields))
    return entries


async def test_acks_are_released_only_after_the_aggregate_write() -> None:
    store = Store()
    rollups = Rollups(store)
    batch = stored(range(3))
    await rollups.add(batch, InsertResult(inserted=3), Acks(store.ack, ["e0", "e1", "e2"]))
    assert rollups.held == 3 and len(rollups.items) == 3 and not store.acked
    await rollups.flush()
    assert store.acked == ["e0", "e1", "e2"] and not rollups.items and rollups.held == 0
    items = [countable(e.fields, 1, e.offset) for e in batch if e.fields is not None]
    assert store.docs == _expected([i for i in items if i is not None])
    reporting = sum(round(ENRICHED[o]["amount_reporting"] * 100) for o in range(3))
    hours = [d for (c, _), d in store.docs.items() if c == agg.VOLUME_HOURS]
    assert sum(agg.sum_parts(agg.parts_of(m))[1] for d in hours
               for m in d["minutes"].values()) == reporting


async def test_too_many_held_events_flush_at_once() -> None:
    store = Store()
    rollups = Rollups(store, flush_events=2)
    await rollups.add(stored(range(1)), InsertResult(inserted=1), Acks(store.ack, ["e0"]))
    assert not store.acked
    await rollups.add(stored(range(1, 2)), InsertResult(inserted=1), Acks(store.ack, ["e1"]))
    assert store.acked == ["e0", "e1"]


async def test_only_this_messages_documents_are_counted() -> None:
    batch = stored(range(4))
    at = {e.doc["_id"]: e.doc["txn"] for e in batch if e.doc is not None}
    ids = list(at)
    # 0: stored by an earlier read of this message (same text); 1: stored from another message
    # (the processor emitted it again, a later processed_at); 2: rejected by the database;
    # 3: inserted now
    other = orjson.dumps({**orjson.loads(at[ids[1]]), "processed_at": "2026-12-01T00:00:00Z"})
    store = Store({ids[0]: at[ids[0]], ids[1]: other.decode(), ids[3]: at[ids[3]]})
    rollups = Rollups(store)
    result = InsertResult(inserted=1, duplicates=2, rejected=[(batch[2], "refused")])
    assert [i.offset for i in await rollups.stored_here(batch, result)] == [0, 3]


async def test_a_flush_during_the_read_back_of_duplicates_loses_no_item() -> None:
    """``add`` waits for the read-back of a batch's duplicates (after a restart, or a write
    retried through an outage) while the rollup timer flushes: no item is lost."""
    first, second = stored(range(3)), stored(range(3, 6))
    at = {e.doc["_id"]: e.doc["txn"] for e in second if e.doc is not None}
    reading, release = asyncio.Event(), asyncio.Event()

    class Slow(Store):
        async def stored_txn(self, ids: list[str]) -> dict[str, Any]:
            reading.set()
            await release.wait()
            return await super().stored_txn(ids)

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
    count = sum(agg.sum_parts(agg.parts_of(m))[0] for (c, _), d in store.docs.items()
                if c == agg.VOLUME_HOURS for m in d["minutes"].values())
    assert count == 6


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


async def test_a_rebalance_forgets_the_cached_parts_and_the_revoked_items() -> None:
    rollups = Rollups(Store())
    mine = item("m", MINUTES[0], 100, 0, 1, 5)
    theirs = item("m", MINUTES[0], 100, 0, 2, 5)
    rollups.state.load((agg.VOLUME_HOURS, "x"), {"minutes.00.p1": MINUTES[0]}, None)
    rollups.items.extend([mine, theirs])
    rollups.forget({2})
    assert rollups.items == [mine] and not rollups.state.parts
