"""The sink's test data (tests/sink_data.py) follows the contract."""

from __future__ import annotations

import orjson

from app import contract
from tests.sink_data import CURRENCIES, REPORTING, enriched_stream, to_reporting


def test_enriched_stream_follows_the_contract() -> None:
    enriched, anomalies = enriched_stream(400)
    assert len({e["txn_id"] for e in enriched}) == 400
    for e in enriched:
        txn = {k: e[k] for k in contract.FIELDS}
        assert contract.validate(orjson.dumps(txn)) == txn
        assert set(contract.ENRICHED_FIELDS) <= set(e)
    reporting = {"amount_reporting", "reporting_currency"}
    for e in enriched:
        assert e["reporting_currency"] == REPORTING
        assert e["amount_reporting"] == to_reporting(e["amount"], e["currency"])
    assert {e["currency"] for e in enriched} == set(CURRENCIES)
    assert anomalies and all(set(a) == set(contract.ANOMALY_FIELDS) | reporting
                             for a in anomalies)
    assert {a["txn_id"] for a in anomalies} == {e["txn_id"] for e in enriched if e["is_anomaly"]}


def test_enriched_stream_is_deterministic() -> None:
    a, _ = enriched_stream(50, seed=3)
    b, _ = enriched_stream(50, seed=3)
    assert [x["txn_id"] for x in a] == [x["txn_id"] for x in b]
