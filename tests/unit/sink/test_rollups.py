"""``agents.sink.rollups`` and ``agents.sink.aggregates``: the packed aggregate documents under
redelivery, restarts and several processes, one write per document, the field names, the cache,
and the rollup step (what it counts, acks released only after its write, a rebalance,
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


class Store:
    """The rollups' database calls, in memory (``$set`` of whole fields, upsert); records the
    writes."""

    def __init__(self, txn: dict[str, Any] | None = None) -> None:
        self.txn = txn or {}
        self.docs: dict[tuple[str, str], dict[str, Any]] = {}
        self.writes: list[AggregateWrite] = []
        self.reads: list[tuple[str, list[str], dict[str, Any]]] = []
        self.acked: list[object] = []
        self.fail = False

    async def stored_txn(self, ids: list[str]) -> dict[str, Any]:
        return {i: self.txn[i] for i in ids if i in self.txn}

    async def aggregate_docs(self, collection: str, ids: list[str],
                             projection: dict[str, Any]) -> dict[str, dict[str, Any]]:
        self.reads.append((collection, ids, projection))
        return {i: {k: copy.deepcopy(v) for k, v in self.docs[collection, i].items()
                    if k == "_id" or k in projection}
                for i in ids if (collection, i) in self.docs}

    async def write_aggregates(self, writes: list[AggregateWrite]) -> None:
        if self.fail:
            raise RuntimeError("the database said no")
        for collection, _id, fields, unset in writes:
            assert not unset and not any("." in f or f.startswith("$") for f in fields)
            self.docs.setdefault((collection, _id), {"_id": _id}).update(
                copy.deepcopy(fields))
        self.writes.extend(writes)

    async def ack(self, events: Any) -> None:
        assert self.writes, "acked before the aggregates were written"
        self.acked.extend(events)


def _plain(doc: dict[str, Any]) -> dict[str, Any]:
    """A stored aggregate document with its ``p<n>`` texts read back (as numbers)."""
    return {k: (lambda p: (p.offset, p.places))(agg.unpack(v))
            if k[:1] == "p" and k[1:].isdigit() else v for k, v in doc.items()}


def _docs(store: Store) -> dict[tuple[str, str], dict[str, Any]]:
    return {key: _plain(doc) for key, doc in store.docs.items()}


def _expected(items: list[Countable]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(c, d["_id"]): _plain(d) for c, ds in agg.build(items).items() for d in ds}


def _counts(items: list[Countable]) -> dict[tuple[str, str, str], list[int]]:
    """(collection, _id, key) -> its numbers, summed from ``items`` (each counted once)."""
    out: dict[tuple[str, str, str], list[int]] = {}
    for one in items:
        for slot in agg.slots(one):
            row = out.setdefault((slot.collection, slot.id, slot.key), [0, 0, 0])
            for k in range(3):
                row[k] += slot.add[k]
    return out


def _stored_counts(store: Store) -> dict[tuple[str, str, str], list[int]]:
    return {(c, _id, key): [t.a, t.b, t.c] for (c, _id), doc in store.docs.items()
            for key, t in agg.totals(doc).items()}


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
    assert _docs(store) == _expected(items)
    assert _stored_counts(store) == _counts(items)


@given(streams, st.randoms())
def test_one_process_per_partition_in_any_interleaving(stream: list, rnd: Any) -> None:
    """Three processes (one per partition) write their ``p<n>`` fields of the same documents
    in any order, each redelivering some of its own: none overwrites another's partition, and
    the documents are the ones built from each transaction once."""
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
    assert _docs(store) == _expected(items)
    assert _stored_counts(store) == _counts(items)


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
    built = {(c, d["_id"]): d for c, ds in agg.build([one]).items() for d in ds}
    usd = {"reporting_currency": "USD"}
    assert built[agg.MERCHANT_DAYS, "2026-11-25"] == {
        "_id": "2026-11-25", **usd, "p3": '[7,{"m.1":[1,1005,1,"grocery"]}]'}
    assert built[agg.MERCHANT_HOURS, "2026-11-25T23"] == {
        "_id": "2026-11-25T23", **usd, "p3": '[7,{"m.1":[1,1005,1,"grocery"]}]'}
    assert built[agg.VOLUME_HOURS, "2026-11-25T23"] == {
        "_id": "2026-11-25T23", **usd, "p3": '[7,{"14":[1,1005,1]}]'}
    # per original currency: count, original cents, reporting cents
    assert built[agg.CURRENCY_DAYS, "2026-11-25"] == {
        "_id": "2026-11-25", **usd, "p3": '[7,{"JPY":[1,150000,1005]}]'}
    assert built[agg.CURRENCY_HOURS, "2026-11-25T23"] == {
        "_id": "2026-11-25T23", **usd, "p3": '[7,{"14/JPY":[1,150000,1005]}]'}
    group = f"2026-11-25/{zlib.crc32(b'alice') % agg.USER_GROUPS:02d}"
    assert built[agg.USERS_BY_DAY, group] == {
        "_id": group, **usd, "day": "2026-11-25", "p3": '[7,{"alice":[1,1005,1]}]'}
    assert len(built) == 6
    totals = agg.totals(built[agg.MERCHANT_DAYS, "2026-11-25"])
    assert totals == {"m.1": agg.Total(1, 1005, 1, "grocery")}


@given(streams)
def test_users_by_day_holds_each_users_days(stream: list) -> None:
    """Each user's numbers of a day are in one document of that day, its group's, and equal
    the sums of its transactions that day."""
    items = _items(stream)
    built = agg.build(items)
    by_user: dict[tuple[str, str], list[int]] = {}
    for doc in built[agg.USERS_BY_DAY]:
        day, group = doc["_id"].split("/")
        assert doc["day"] == day
        for user, total in agg.totals(doc).items():
            assert agg.user_group(user) == int(group)
            assert (user, day) not in by_user
            by_user[user, day] = [total.a, total.b, total.c]
    want: dict[tuple[str, str], list[int]] = {}
    for one in items:
        row = want.setdefault((one.user_id or "", agg.day_id(one.minute)), [0, 0, 0])
        for k, v in enumerate((1, one.cents, one.anomaly)):
            row[k] += v
    assert by_user == want


async def test_one_flush_writes_each_document_once_whatever_the_number_of_merchants() -> None:
    """5,000 transactions of 1,000 merchants in one hour, from two partitions: one read and
    one upsert per document (not per merchant), each setting its packed partitions whole."""
    items = [Countable(f"m-{i % 1000}", "grocery", MINUTES[0] + timedelta(seconds=i % 60),
                       100 + i, int(i % 7 == 0), i % 2, i // 2, "EUR", 100 + i, "USD",
                       f"u{i % 300}") for i in range(5000)]
    store = Store()
    await Rollups(store).write(items)
    documents = {(s.collection, s.id) for one in items for s in agg.slots(one)}
    assert len(store.writes) == len(documents) < 5 + agg.USER_GROUPS + 1
    assert sorted((c, _id) for c, _id, _, _ in store.writes) == sorted(documents)
    for _c, _id, fields, _ in store.writes:
        assert set(fields) <= {"reporting_currency", "day", "p0", "p1"}
        assert {"p0", "p1"} <= set(fields)
    assert sum(len(ids) for _, ids, _ in store.reads) == len(documents)
    merchants = agg.totals(store.docs[agg.MERCHANT_DAYS, "2026-11-25"])
    assert len(merchants) == 1000 and sum(t.a for t in merchants.values()) == 5000
    assert _stored_counts(store) == _counts(items)


async def test_a_redelivery_writes_nothing_and_a_partial_one_only_the_new_items() -> None:
    items = _items([(0, "m-a", 0, 100, False, "EUR", 0)] * 4 + [(1, "m-a", 0, 50, True,
                                                                   "USD", 1)] * 2)
    store = Store()
    rollups = Rollups(store)
    await rollups.write(items[:3])
    writes = len(store.writes)
    await rollups.write(items[:3])  # the same again: already counted
    await Rollups(store).write(items[:3])  # and after a restart (read back)
    assert len(store.writes) == writes
    await Rollups(store).write(items)  # a replay from the start after a restart
    assert _stored_counts(store) == _counts(items)
    day = agg.packed(store.docs[agg.MERCHANT_DAYS, "2026-11-25"])
    assert (day[0].offset, day[1].offset) == (3, 1)


async def test_a_failed_write_leaves_the_cache_as_it_was() -> None:
    """The items are folded into copies: a write that fails changes no cached number, so
    the same items written again are counted once."""
    items = _items([(0, "m-a", 0, 100, False, "EUR", 0)] * 3)
    store = Store()
    rollups = Rollups(store)
    await rollups.write(items[:1])
    cached = {k: v.copy() for k, v in rollups.state.parts.items()}
    store.fail = True
    with pytest.raises(RuntimeError):
        await rollups.write(items)
    assert rollups.state.parts == cached
    store.fail = False
    await rollups.write(items)
    assert _stored_counts(store) == _counts(items)


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
    assert rollups.state.newest == minute and _docs(store) == _expected(
        [item("m", minute, 100, 0, 0, 0)])


def test_documents_far_behind_leave_the_cache() -> None:
    state = RollupState()
    late = item("m", MINUTES[0], 100, 0, 0, 0)
    now = item("m", MINUTES[0] + timedelta(hours=24, minutes=CACHE_MINUTES + 1), 100, 0, 0, 1)
    for one in (late, now):
        for doc, partitions in state.missing([one]).items():
            state.load(doc, partitions, None)
        state.commit(state.apply([one]))
    # the late day's and hour's documents left (their user group's day too)
    assert set(state.parts) == {(s.collection, s.id, 0) for s in agg.slots(now)}
    assert set(state.ends) == {(s.collection, s.id) for s in agg.slots(now)}
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
    assert _docs(store) == _expected([i for i in items if i is not None])
    reporting = sum(round(ENRICHED[o]["amount_reporting"] * 100) for o in range(3))
    hours = [d for (c, _), d in store.docs.items() if c == agg.VOLUME_HOURS]
    assert sum(t.b for d in hours for t in agg.totals(d).values()) == reporting


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
    count = sum(t.a for (c, _), d in store.docs.items() if c == agg.VOLUME_HOURS
                for t in agg.totals(d).values())
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


async def test_a_rebalance_forgets_the_cached_documents_and_the_revoked_items() -> None:
    store = Store()
    rollups = Rollups(store)
    mine = item("m", MINUTES[0], 100, 0, 1, 5)
    theirs = item("m", MINUTES[0], 100, 0, 2, 5)
    await rollups.write([mine])
    assert rollups.state.parts
    rollups.items.extend([mine, theirs])
    rollups.forget({2})
    assert rollups.items == [mine] and not rollups.state.parts and not rollups.state.ends
    # another process counted partition 1 meanwhile: it is read back, not overwritten
    other = Rollups(store)
    await other.write([item("m", MINUTES[0], 100, 0, 1, 6)])
    await rollups.write([item("m", MINUTES[0], 100, 0, 1, 7)])
    day = agg.packed(store.docs[agg.MERCHANT_DAYS, "2026-11-25"])
    assert day[1].offset == 7 and day[1].places["m"][0] == 3


_values = st.one_of(st.integers(-5, 10**6), st.floats(allow_nan=True), st.booleans(),
                    st.text(max_size=3), st.none())
_entries = st.one_of(st.lists(_values, min_size=0, max_size=5),
                     st.tuples(st.integers(0, 9), st.integers(0, 10**6), st.integers(0, 3),
                               st.sampled_from(["food", "travel"])).map(list), _values)
_parts = st.one_of(
    st.builds(lambda off, places: orjson.dumps([off, places]).decode(), st.integers(-1, 99),
              st.dictionaries(st.sampled_from(["u1", "u2", "u3"]), _entries, max_size=3)),
    st.text(max_size=8), st.integers())


@given(st.dictionaries(st.sampled_from(["p0", "p1", "p7", "px", "day", "_id"]), _parts),
       st.sampled_from(["u1", "u2", "u3", "nobody"]))
def test_total_of_one_key_is_its_total(doc: dict[str, Any], key: str) -> None:
    """What trends reads for one user is that user's entry of :func:`totals`, whatever the
    document holds (entries of the wrong shape, texts that are not JSON, other fields)."""
    assert agg.total_of(doc, key) == agg.totals(doc).get(key, agg.Total())
