"""The JSON Schemas of ``schemas/``, loaded once, with their ``$ref``s resolvable (and
inlined on request): shared by tests/unit/app/test_contract.py and test_contract_schema.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from referencing import Registry, Resource

ROOT = Path(__file__).resolve().parents[3]
SCHEMA_DIR = ROOT / "schemas"
TRANSACTIONS = "transactions.schema.json"
ENRICHED = "transactions_enriched.schema.json"
ANOMALIES = "anomalies.schema.json"


def load_schema(name: str) -> dict[str, Any]:
    return json.loads((SCHEMA_DIR / name).read_text())


SCHEMAS = {name: load_schema(name) for name in (TRANSACTIONS, ENRICHED, ANOMALIES)}
#: The schemas by their ``$id`` (= file name), so relative ``$ref``s between them resolve.
REGISTRY: Registry[Any] = Registry().with_resources(
    (name, Resource.from_contents(schema)) for name, schema in SCHEMAS.items())


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
