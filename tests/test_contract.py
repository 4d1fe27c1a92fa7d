"""The repository's data contract (``schemas/``, ``docs/contract.md``) equals the code: the field
lists, value lists, limits and topics of :mod:`app.contract`. ``tests/test_contract_schema.py``
checks the rules themselves."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
from referencing import Registry, Resource

from app import contract
from app.settings import settings

ROOT = Path(__file__).resolve().parents[1]
SCHEMA_DIR = ROOT / "schemas"
CONTRACT_DOC = ROOT / "docs" / "contract.md"
TRANSACTIONS = "transactions.schema.json"
ENRICHED = "transactions_enriched.schema.json"
ANOMALIES = "anomalies.schema.json"


def load_schema(name: str) -> dict[str, Any]:
    return json.loads((SCHEMA_DIR / name).read_text())


SCHEMAS = {name: load_schema(name) for name in (TRANSACTIONS, ENRICHED, ANOMALIES)}
#: The schemas by their ``$id`` (= file name), so relative ``$ref``s between them resolve.
REGISTRY: Registry[Any] = Registry().with_resources(
    (name, Resource.from_contents(schema)) for name, schema in SCHEMAS.items())

#: JSON Schema type -> the Python type of app.contract's field lists.
PY_TYPES: dict[Any, Any] = {"string": str, "number": float, "integer": int, "boolean": bool,
                            ("number", "null"): (float, type(None))}


def inline(node: Any, resolver: Any) -> Any:
    """``node`` with every ``$ref`` replaced by its target (the ref's siblings, annotations
    only here, are kept), for reading a schema and for generating from it."""
    if isinstance(node, list):
        return [inline(v, resolver) for v in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = resolver.lookup(node["$ref"])
        rest = {k: v for k, v in node.items() if k != "$ref"}
        assert set(rest) <= {"description"}, rest  # so merging the two cannot change a rule
        return {**inline(target.contents, target.resolver), **inline(rest, resolver)}
    return {k: inline(v, resolver) for k, v in node.items()}


def resolved_schema(name: str) -> dict[str, Any]:
    """Schema ``name`` self-contained: every ``$ref`` inlined."""
    return inline(SCHEMAS[name], REGISTRY.resolver(base_uri=name))


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
