"""The long-run benchmark's seed (bench/seed_history.py) against the real FerretDB: a small
history writes the aggregate documents the sink's own builder makes from the same stored
transactions, the anomalies with their time index and the retention manifests, and the API
answers a seeded user's trends from it."""

from __future__ import annotations

import os
from typing import Any

import pytest
from starlette.testclient import TestClient

from agents.sink import aggregates as agg
from agents.sink.anomaly_index import index_documents
from agents.sink.rollups import countable
from app.settings import load, settings
from tests.procs import free_port
from tests.unit.bench.loader import load as load_bench
from views.api import create_app

pytestmark = pytest.mark.integration

seed_history = load_bench("seed_history")


def _normal(doc: dict[str, Any]) -> dict[str, Any]:
    """A document with its maps' key order left out (FerretDB keeps insertion order)."""
    return {k: _normal(v) if isinstance(v, dict) else v for k, v in sorted(doc.items())}


@pytest.mark.parametrize("processes", [1, 2])
def test_a_small_seed_is_what_the_sink_writes(mongo_client: Any, unique: str,
                                              processes: int) -> None:
    """Also with two processes, each the sink of half of the partitions: their aggregate
    documents merge into those of one."""
    name = f"test_seed_{unique}_{processes}"
    history = seed_history.History(2000, days=1)
    try:
        stats = seed_history.seed(settings.mongo_url, name, history, processes=processes)
        db = mongo_client[name]
        assert stats.transactions == 2000
        assert db.transactions.count_documents({}) == 2000
        assert db.anomalies.count_documents({}) == stats.anomalies
        # The same history again, entries made as the sink makes them: the builder's documents.
        enricher = seed_history.Enricher(settings.topic_partitions)
        items = []
        for txns, _ in seed_history._batches(
                seed_history.History(**{**history.__dict__, "end_ms":
                                        history.resolved_end_ms()}),
                enricher, frozenset(range(settings.topic_partitions)), 0, 2000):
            items += [countable(getattr(e, "fields", None) or e.doc, e.partition, e.offset)
                      for e in txns]
        expected = agg.build([i for i in items if i is not None])
        for collection in agg.COLLECTIONS:
            stored = {d["_id"]: _normal(d) for d in db[collection].find()}
            assert stored == {d["_id"]: _normal(d) for d in expected[collection]}, collection
        assert db.retention.count_documents({}) > 0
        # The anomalies' time index: what the sink's step makes of the stored anomalies.
        for collection, expected_docs in index_documents(list(db.anomalies.find())).items():
            stored = {d["_id"]: _normal(d) for d in db[collection].find()}
            assert stored == {d["_id"]: _normal(d) for d in expected_docs}, collection
        user = next(iter(agg.totals(db.users_by_day.find_one())))
        client = TestClient(create_app(load({**os.environ, "MONGO_DB": name,
                                             "API_RATE_LIMIT": "0",
                                             "WORKER_URL": f"http://127.0.0.1:{free_port()}"}),
                                       cache_seconds=0))
        with client:
            resp = client.get(f"/users/{user}/trends")
        assert resp.status_code == 200, resp.text
        assert sum(d.get("count", 0) for d in resp.json().get("days", [])) > 0, resp.json()
    finally:
        mongo_client.drop_database(name)
