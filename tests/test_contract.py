"""The app's topics and models equal the contract in ../shared/DESIGN.md (parsed, not copied)."""

from __future__ import annotations

import re
import typing
from pathlib import Path

import pytest

from app import contract
from app.models import Anomaly, EnrichedTransaction, Location, Transaction
from app.settings import settings

DESIGN = Path(__file__).resolve().parents[2] / "shared" / "DESIGN.md"
JSON_TYPES = {"string": str, "number": float, "object": Location}


@pytest.fixture(scope="module")
def design() -> str:
    assert DESIGN.exists(), f"the design is expected at {DESIGN}"
    return DESIGN.read_text()


def section(text: str, heading: str) -> str:
    start = text.index(heading)
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


def test_transaction_fields_and_types(design: str) -> None:
    rows = re.findall(r"^\| `(\w+)` \| (\w+) \|", section(design, "## Transaction"), re.M)
    assert rows, "no field table found in DESIGN.md"
    assert [name for name, _ in rows] == list(Transaction._options.fields)
    assert [name for name, _ in rows] == list(contract.FIELDS)
    hints = typing.get_type_hints(Transaction)
    for name, json_type in rows:
        assert hints[name] is JSON_TYPES[json_type], name
    assert list(Location._options.fields) == ["city", "country"]


def test_enriched_fields(design: str) -> None:
    text = section(design, "## Enriched transaction")
    added = re.findall(r"`(\w+)`", text.split("plus:", 1)[1])
    assert list(EnrichedTransaction._options.fields) == list(contract.FIELDS) + added
    assert added == list(contract.ENRICHED_FIELDS)


def test_anomaly_fields(design: str) -> None:
    text = section(design, "## Anomaly")
    names = re.findall(r"`(\w+)`", text.split("\n", 1)[1])
    assert list(Anomaly._options.fields) == names == list(contract.ANOMALY_FIELDS)


def test_topics(design: str) -> None:
    for name in contract.TOPICS:
        assert f"`{name}`" in design
    from app import topics

    declared = [topics.transactions_topic, topics.enriched_topic, topics.anomalies_topic,
                topics.dlq_topic]
    assert [t.get_topic_name() for t in declared] == [settings.topic(n) for n in contract.TOPICS]
    assert all(t.partitions == settings.topic_partitions for t in declared)


def test_statuses_match_design(design: str) -> None:
    row = re.search(r"^\| `status` .*$", design, re.M)
    assert row is not None
    assert re.findall(r"`(\w+)`", row.group(0))[1:] == list(contract.STATUSES)


def test_records_serialise_to_exactly_the_contract_fields() -> None:
    txn = Transaction(txn_id="a" * 64, user_id="u1", amount=12.5, currency="EUR",
                      timestamp="2026-01-01T00:00:00+00:00", merchant_id="m1",
                      merchant_category="grocery", payment_method="paypal", status="approved",
                      location=Location(city="Paris", country="FR"))
    data = txn.asdict()
    assert set(data) == set(contract.FIELDS)
    assert "__faust" not in txn.dumps().decode()
