"""The walk of ``GET /anomalies`` over the anomalies' time index (views/anomaly_pages.py), on
documents held in memory (the index the sink's own builders make): every page walk gives the
whole filtered order, nothing repeated or skipped, with a bounded number of reads per request."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.sink import anomaly_index as ai
from views import anomaly_pages, queries

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
CATEGORIES = ("travel", "grocery", "gaming")


class Memory:
    """A database of index documents answering ``db[collection].find_one({"_id": ...})``;
    counts the reads."""

    def __init__(self) -> None:
        self.docs: dict[str, dict[str, dict[str, Any]]] = {ai.MINUTES: {}, ai.DAYS: {}}
        self.reads = 0

    def add(self, anomalies: list[dict[str, Any]]) -> None:
        """What the sink's upserts do: ``$set`` of each path."""
        for collection, _id, fields, _ in ai.index_writes(anomalies):
            doc = self.docs[collection].setdefault(_id, {"_id": _id})
            for path, value in fields.items():
                head, _, key = path.partition(".")
                doc.setdefault(head, {})[key] = value

    def __getitem__(self, collection: str) -> Memory.Collection:
        return Memory.Collection(self, collection)

    class Collection:
        def __init__(self, db: Memory, name: str) -> None:
            self.db, self.name = db, name

        def find_one(self, query: dict[str, Any]) -> dict[str, Any] | None:
            self.db.reads += 1
            return self.db.docs[self.name].get(query["_id"])


def anomaly(i: int, ts: datetime, category: str, z: float) -> dict[str, Any]:
    return {"_id": f"t{i:04d}", "txn_id": f"t{i:04d}", "timestamp": ts, "z_score": z,
            "merchant_category": category, "detected_at": ts}


def expected(docs: list[dict[str, Any]], category: str | None = None,
             min_z: float | None = None, since: datetime | None = None) -> list[str]:
    kept = [d for d in docs if (category is None or d["merchant_category"] == category)
            and (min_z is None or d["z_score"] >= min_z)
            and (since is None or d["timestamp"] >= since)]
    kept.sort(key=lambda d: (d["timestamp"], d["_id"]), reverse=True)
    return [d["_id"] for d in kept]


def walk(db: Memory, limit: int, **filters: Any) -> tuple[list[str], list[int]]:
    """Every page's ids and the reads of each request."""
    ids: list[str] = []
    reads: list[int] = []
    cursor = None
    while True:
        before = db.reads
        items, cursor = queries.anomalies(db, limit, cursor, now=NOW, keep_days=90,  # type: ignore[arg-type]
                                          ahead_seconds=300, **filters)
        reads.append(db.reads - before)
        assert len(items) <= limit
        ids += [a["txn_id"] for a in items]
        if cursor is None:
            return ids, reads


def bound(limit: int) -> int:
    return anomaly_pages.INDEX_READS + max(anomaly_pages.MINUTE_READS, limit + 1)


offsets = st.integers(min_value=0, max_value=4 * 86_400_000)  # ms before NOW: 4 days


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(offsets, st.sampled_from(CATEGORIES),
                          st.floats(min_value=0, max_value=10)), max_size=120),
       st.integers(min_value=1, max_value=12),
       st.sampled_from([None, *CATEGORIES]), st.sampled_from([None, 5.0, 9.5]),
       st.sampled_from([None, timedelta(hours=30)]))
def test_pages_walk_the_whole_filtered_order(rows: list[tuple[int, str, float]], limit: int,
                                             category: str | None, min_z: float | None,
                                             since: timedelta | None) -> None:
    # Every third one shares its timestamp with the previous one (ties broken by txn_id).
    stamps = [NOW - timedelta(milliseconds=ms) for ms, _, _ in rows]
    docs = [anomaly(i, stamps[i - 1] if i % 3 == 2 else stamps[i], c, z)
            for i, (_, c, z) in enumerate(rows)]
    db = Memory()
    db.add(docs)
    start = None if since is None else NOW - since
    ids, reads = walk(db, limit, category=category, min_z=min_z, since=start)
    assert ids == expected(docs, category, min_z, start)
    assert max(reads) <= bound(limit)


def test_reads_do_not_grow_with_the_history() -> None:
    """A first page and a next page cost the same with 1 or 60 days of anomalies."""
    costs = []
    for days in (1, 60):
        db = Memory()
        db.add([anomaly(i, NOW - timedelta(minutes=i * 7), CATEGORIES[i % 3], 4.0)
                for i in range(days * 24 * 60 // 7)])
        before = db.reads
        _, cursor = queries.anomalies(db, 50, now=NOW)  # type: ignore[arg-type]
        queries.anomalies(db, 50, cursor, now=NOW)  # type: ignore[arg-type]
        costs.append(db.reads - before)
    assert costs[0] == costs[1] <= 2 * bound(50)


def test_a_rare_filter_gives_short_pages_with_a_cursor(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past the budget of minute documents a page returns what it found and goes on from
    there; the walk still finds everything."""
    monkeypatch.setattr(anomaly_pages, "MINUTE_READS", 5)
    docs = [anomaly(i, NOW - timedelta(minutes=i), "travel", 9.9 if i in (3, 17) else 4.0)
            for i in range(40)]
    db = Memory()
    db.add(docs)
    items, cursor = queries.anomalies(db, 10, min_z=9.0, now=NOW)  # type: ignore[arg-type]
    assert [a["txn_id"] for a in items] == ["t0003"] and cursor is not None
    assert queries.decode_cursor(cursor)[1] is None  # a position, not an item
    ids, reads = walk(db, 10, min_z=9.0)
    assert ids == ["t0003", "t0017"] and max(reads) <= anomaly_pages.INDEX_READS + 11


def test_new_anomalies_do_not_shift_the_pages() -> None:
    docs = [anomaly(i, NOW - timedelta(minutes=i // 2), "travel", 4.0) for i in range(30)]
    db = Memory()
    db.add(docs)
    items, cursor = queries.anomalies(db, 7, now=NOW)  # type: ignore[arg-type]
    ids = [a["txn_id"] for a in items]
    # Late: the last item's time, a txn_id below it (so after it in the order).
    late = {**anomaly(0, docs[int(ids[-1][1:])]["timestamp"], "travel", 4.0), "_id": "a",
            "txn_id": "a"}
    db.add([anomaly(100 + i, NOW + timedelta(seconds=i), "travel", 4.0) for i in range(5)])
    db.add([late])
    while cursor:
        items, cursor = queries.anomalies(db, 7, cursor, now=NOW)  # type: ignore[arg-type]
        ids += [a["txn_id"] for a in items]
    assert len(ids) == len(set(ids)) and "a" in ids
    assert [i for i in ids if i != "a"] == expected(docs)


def test_the_first_page_starts_ahead_of_now_and_stops_at_the_retention() -> None:
    db = Memory()
    db.add([anomaly(1, NOW + timedelta(seconds=200), "travel", 4.0),
            anomaly(2, NOW - timedelta(days=10), "travel", 4.0),
            anomaly(3, NOW - timedelta(days=95), "travel", 4.0)])
    items, cursor = queries.anomalies(db, 10, now=NOW, keep_days=90)  # type: ignore[arg-type]
    assert [a["txn_id"] for a in items] == ["t0001", "t0002"] and cursor is None
