"""The repository's data contract (``schemas/``, ``docs/contract.md``) equals the code: the field
lists, value lists, limits and topics of :mod:`app.contract`.
``tests/unit/app/test_contract_schema.py`` checks the rules themselves."""

from __future__ import annotations

from typing import Any

import jsonschema

from app import contract, rates
from app.settings import settings
from tests.unit.app.contract_schemas import (
    ANOMALIES,
    ENRICHED,
    ROOT,
    SCHEMA_DIR,
    SCHEMAS,
    TRANSACTIONS,
    resolved_schema,
)

CONTRACT_DOC = ROOT / "docs" / "contract.md"

#: JSON Schema type -> the Python type of app.contract's field lists.
PY_TYPES: dict[Any, Any] = {"string": str, "number": float, "integer": int, "boolean": bool,
                            ("number", "null"): (float, type(None))}


def prop(name: str, field: str) -> dict[str, Any]:
    return resolved_schema(name)["properties"][field]


def py_type(schema: dict[str, Any]) -> Any:
    kind = schema["type"]
    return PY_TYPES[tuple(kind) if isinstance(kind, list) else kind]


def test_schema_files_are_valid_draft_2020_12() -> None:
    assert sorted(p.name for p in SCHEMA_DIR.glob("*.json")) == sorted(SCHEMAS)
    for name, schema in SCHEMAS.items():
        jsonschema.Draft202012Validator.check_schema(schema)
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert schema["$id"] == name
        assert schema["type"] == "object" and schema["additionalProperties"] is False
        # every field is required, listed in the same order as the properties
        assert schema["required"] == list(schema["properties"]), name


def test_transaction_fields_and_types() -> None:
    fields = list(SCHEMAS[TRANSACTIONS]["properties"])
    assert fields == list(contract.FIELDS)
    for field in fields:
        schema = prop(TRANSACTIONS, field)
        expected = dict if schema["type"] == "object" else py_type(schema)
        assert contract.FIELDS[field] is expected, field
    location = prop(TRANSACTIONS, "location")
    assert list(location["properties"]) == location["required"] == ["city", "country"]
    assert location["additionalProperties"] is False


def test_enriched_fields_and_types() -> None:
    fields = list(SCHEMAS[ENRICHED]["properties"])
    added = fields[len(contract.FIELDS):]
    assert fields[:len(contract.FIELDS)] == list(contract.FIELDS)
    assert added == list(contract.ENRICHED_FIELDS)
    for field in added:
        assert contract.ENRICHED_FIELDS[field] == py_type(prop(ENRICHED, field)), field


def test_anomaly_fields_and_types() -> None:
    fields = list(SCHEMAS[ANOMALIES]["properties"])
    assert fields == list(contract.ANOMALY_FIELDS)
    for field in fields:
        schema = prop(ANOMALIES, field)
        assert py_type(schema) in (str, float, int), field
    assert prop(ANOMALIES, "z_score")["type"] == "number"  # never null in an anomaly


def test_transaction_fields_are_referenced_not_copied() -> None:
    """The enriched and anomaly schemas take each transaction field's rules from
    transactions.schema.json, so the three cannot drift apart."""
    for name in (ENRICHED, ANOMALIES):
        for field, node in SCHEMAS[name]["properties"].items():
            if field in contract.FIELDS:
                assert node == {"$ref": f"{TRANSACTIONS}#/properties/{field}"}, (name, field)
                assert prop(name, field) == prop(TRANSACTIONS, field)
    # the anomaly's reporting fields are the enriched record's
    for field in ("amount_reporting", "reporting_currency"):
        assert prop(ANOMALIES, field) == prop(ENRICHED, field), field
    assert SCHEMAS[ANOMALIES]["properties"]["amount_reporting"] == {
        "$ref": f"{ENRICHED}#/$defs/amount_reporting"}
    assert SCHEMAS[ANOMALIES]["properties"]["reporting_currency"] == {
        "$ref": f"{ENRICHED}#/properties/reporting_currency"}
    date_time = {"$ref": f"{TRANSACTIONS}#/$defs/date_time"}
    assert prop(ENRICHED, "processed_at")["pattern"] == prop(TRANSACTIONS, "timestamp")["pattern"]
    for name, field in ((ENRICHED, "processed_at"), (ANOMALIES, "detected_at")):
        node = SCHEMAS[name]["properties"][field]
        assert {k: v for k, v in node.items() if k != "description"} == date_time


def test_value_lists_and_limits_equal_the_contract() -> None:
    assert tuple(prop(TRANSACTIONS, "merchant_category")["enum"]) == contract.CATEGORIES
    assert tuple(prop(TRANSACTIONS, "payment_method")["enum"]) == contract.PAYMENT_METHODS
    assert tuple(prop(TRANSACTIONS, "status")["enum"]) == contract.STATUSES
    for field in ("user_id", "merchant_id"):
        assert prop(TRANSACTIONS, field)["maxLength"] == contract.MAX_ID_LENGTH
        assert prop(TRANSACTIONS, field)["minLength"] == 1
    assert prop(TRANSACTIONS, "amount")["maximum"] == contract.MAX_AMOUNT
    # the currencies are the rates table's, in its (alphabetical) order
    assert prop(TRANSACTIONS, "currency")["enum"] == sorted(rates.CURRENCIES)
    assert prop(ENRICHED, "reporting_currency")["enum"] == sorted(rates.CURRENCIES)
    assert prop(ENRICHED, "amount_reporting")["type"] == "number"
    assert prop(ENRICHED, "amount_reporting")["minimum"] == 0
    city = prop(TRANSACTIONS, "location")["properties"]["city"]
    assert city["maxLength"] == contract.MAX_CITY_LENGTH


def test_topics() -> None:
    doc = CONTRACT_DOC.read_text()
    for name in contract.TOPICS:
        assert f"`{name}`" in doc
    for name in SCHEMAS:
        assert f"(../schemas/{name})" in doc, f"docs/contract.md does not link {name}"
    from app import topics

    declared = [topics.transactions_topic, topics.enriched_topic, topics.anomalies_topic,
                topics.dlq_topic]
    assert [t.get_topic_name() for t in declared] == [settings.topic(n) for n in contract.TOPICS]
    assert all(t.partitions == settings.topic_partitions for t in declared)


def test_reporting_fields_follow_the_transaction() -> None:
    enriched = [*contract.FIELDS, *contract.ENRICHED_FIELDS]
    start = len(contract.FIELDS)
    assert enriched[start:start + 3] == ["amount_reporting", "reporting_currency",
                                         "user_txn_count"]
    assert contract.ENRICHED_FIELDS["amount_reporting"] is float
    assert contract.ENRICHED_FIELDS["reporting_currency"] is str
    assert contract.ANOMALY_FIELDS == (
        "txn_id", "user_id", "amount", "currency", "amount_reporting", "reporting_currency",
        "merchant_id", "merchant_category", "timestamp", "z_score", "mean_prev", "std_prev",
        "n_prev", "detected_at")


def test_topics_keep_backfills_retention_is_by_size() -> None:
    """Every topic carries event time as its Kafka timestamp: time retention would delete a
    backfill of old events before it is processed, so retention is by size only."""
    assert contract.TOPIC_RETENTION_BYTES == 1024**3
    assert contract.TOPIC_CONFIG == {"message.timestamp.after.max.ms": str(2**63 - 1),
                                     "retention.ms": "-1",
                                     "retention.bytes": str(1024**3)}
    dlq = contract.dlq_topic_config(65536)
    assert dlq.items() >= contract.TOPIC_CONFIG.items()
    assert dlq["max.message.bytes"] == str(2**20 + contract.DLQ_HEADROOM_BYTES)
    big = contract.dlq_topic_config(4 * 2**20)  # a dead letter larger than the batches
    assert big["max.message.bytes"] == str(4 * 2**20 + contract.DLQ_HEADROOM_BYTES)
    assert contract.KAFKA_TIMESTAMP_TOLERANCE_SECONDS == 1.0


def test_the_contract_document_states_the_rules() -> None:
    doc = CONTRACT_DOC.read_text()
    for field in (*contract.FIELDS, *contract.ENRICHED_FIELDS, *contract.ANOMALY_FIELDS):
        assert f"`{field}`" in doc, field
    for text in ("app/fx_rates.csv", "`REPORTING_CURRENCY`", "half to even",
                 "is not in the rates table", "`late event", "`future event",
                 "`Kafka timestamp", "`LATE_EVENT_GRACE_DAYS`",
                 "`FUTURE_EVENT_TOLERANCE_SECONDS`", "`retention.ms`", "`retention.bytes`",
                 "CreateTime"):
        assert text in doc, text
    assert "1 GiB" in doc and "-1" in doc
