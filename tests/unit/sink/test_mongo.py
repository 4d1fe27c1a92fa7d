"""``agents.sink.mongo`` without a database: the server decisions, and which write errors are
dead letters (one document's) and which end the process (anything else)."""

from __future__ import annotations

from typing import Any

import pytest
from bson.errors import InvalidDocument
from pymongo.errors import BulkWriteError, OperationFailure, WriteError

from agents.sink import documents as docs
from agents.sink import mongo
from agents.sink.documents import Entry
from agents.sink.exceptions import DeadLetterWriteError
from agents.sink.mongo import MongoStore, is_ferretdb, time_series_supported


def test_time_series_only_on_real_mongodb_5_and_later() -> None:
    assert time_series_supported({"version": "7.0.2", "versionArray": [7, 0, 2, 0]})
    assert time_series_supported({"versionArray": [5, 0, 0, 0]})
    assert not time_series_supported({"versionArray": [4, 4, 0, 0]})
    ferret = {"version": "7.0.42", "versionArray": [7, 0, 42, 0], "ferretdbVersion": "x"}
    assert not time_series_supported(ferret)
    assert is_ferretdb(ferret)


# --- what is a dead letter and what ends the process, without a database -------------------
class FakeCollection:
    """``insert_many`` fails in the client (a document BSON cannot hold), so the store goes
    one by one; ``insert_one`` raises what ``errors`` says for a document's ``_id``."""

    def __init__(self, errors: dict[str, Exception]) -> None:
        self.errors = errors
        self.stored: list[dict[str, Any]] = []

    def insert_many(self, documents: list[dict[str, Any]], ordered: bool) -> None:
        if any(d["_id"] in self.errors for d in documents):
            raise OverflowError("MongoDB can only handle up to 8-byte ints")
        self.stored.extend(documents)

    def insert_one(self, document: dict[str, Any]) -> None:
        if document["_id"] in self.errors:
            raise self.errors[document["_id"]]
        self.stored.append(document)


class FakeDb(dict[str, FakeCollection]):
    name = "fake"


def fake_store(monkeypatch: pytest.MonkeyPatch, errors: dict[str, Exception],
               dlq: FakeCollection | None = None) -> tuple[MongoStore, FakeDb]:
    async def ready(self: MongoStore) -> None:
        pass

    monkeypatch.setattr(MongoStore, "ready", ready)
    monkeypatch.setattr(mongo, "RETRY_MIN_SECONDS", 0.0)
    db = FakeDb({docs.TRANSACTIONS: FakeCollection(errors), docs.DLQ: dlq or FakeCollection({})})
    return MongoStore(db), db  # type: ignore[arg-type]


def entries(*ids: str) -> list[Entry]:
    return [Entry({"_id": i}, i.encode(), "t", 0, n) for n, i in enumerate(ids)]


async def test_document_errors_become_dead_letters_by_kind(
        monkeypatch: pytest.MonkeyPatch) -> None:
    store, db = fake_store(monkeypatch, {
        "big": OverflowError("MongoDB can only handle up to 8-byte ints"),
        "nul": InvalidDocument("Key names must not contain the NULL byte"),
        "dollar": WriteError("field names may not start with '$'", code=2),
    })
    poison = Entry(None, b"\xff", "t", 0, 9, "not valid JSON")
    result = await store.insert(docs.TRANSACTIONS, [*entries("a", "big", "nul", "dollar", "b"),
                                                   poison])
    assert [d["_id"] for d in db[docs.TRANSACTIONS].stored] == ["a", "b"]
    assert result.inserted == 2 and len(result.rejected) == 4
    assert result.dead_letters == {"conversion": 1, "encoding": 2, "rejected": 1}
    dead = {d["_id"]: d["reason"] for d in db[docs.DLQ].stored}
    assert set(dead) == {"t:0:1", "t:0:2", "t:0:3", "t:0:9"}
    assert "OverflowError" in dead["t:0:1"] and "WriteError" in dead["t:0:3"]


async def test_a_command_error_is_not_a_dead_letter(monkeypatch: pytest.MonkeyPatch) -> None:
    """An OperationFailure that is not one document's write error (here: not authorized)
    says nothing about the data: raised (the process exits), no dead letter."""
    store, db = fake_store(monkeypatch, {"big": OverflowError("8-byte ints"),
                                         "b": OperationFailure("not authorized", code=13)})
    with pytest.raises(OperationFailure):
        await store.insert(docs.TRANSACTIONS, entries("a", "big", "b"))
    assert db[docs.DLQ].stored == []


async def test_a_refused_dead_letter_is_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    class RefusingDlq(FakeCollection):
        def insert_many(self, documents: list[dict[str, Any]], ordered: bool) -> None:
            raise BulkWriteError({"writeErrors": [{"index": 0, "code": 2, "errmsg": "no"}]})

    store, _ = fake_store(monkeypatch, {}, dlq=RefusingDlq({}))
    with pytest.raises(DeadLetterWriteError):
        await store.insert(docs.TRANSACTIONS, [Entry(None, b"x", "t", 0, 1, "not JSON")])


# --- collections and indexes on MongoDB --------------------------------------------------------
class IndexedCollection:
    def __init__(self) -> None:
        self.indexes: list[dict[str, Any]] = [{"name": "_id_", "key": {"_id": 1}}]

    def list_indexes(self) -> list[dict[str, Any]]:
        return list(self.indexes)

    def create_indexes(self, models: list[Any]) -> None:
        self.indexes += [{"name": m.document["name"], "key": dict(m.document["key"])}
                         for m in models]


class MongoDb(dict[str, IndexedCollection]):
    """A MongoDB 7 database as ``ensure_collections`` sees it."""

    name = "fake"

    def __init__(self) -> None:
        super().__init__()
        self.client = self
        self.admin = self

    def command(self, name: str) -> dict[str, Any]:
        assert name == "buildInfo"
        return {"version": "7.0.14", "versionArray": [7, 0, 14, 0]}

    def list_collection_names(self) -> list[str]:
        return list(self)

    def create_collection(self, name: str, **options: Any) -> None:
        self[name] = IndexedCollection()

    def __missing__(self, name: str) -> IndexedCollection:
        return self.setdefault(name, IndexedCollection())


def test_mongodb_gets_the_transactions_indexes_on_their_stored_fields() -> None:
    """The compact ``transactions`` documents hold ``_id``, ``user_id``, ``timestamp`` and
    ``txn``: the indexes are on those fields only, made once."""
    db = MongoDb()
    assert mongo.ensure_collections(db) == "time-series"  # type: ignore[arg-type]
    keys = [list(i["key"].items()) for i in db[docs.TRANSACTIONS].indexes]
    assert keys == [[("_id", 1)], [("user_id", 1), ("timestamp", -1)], [("timestamp", -1)]]
    stored = set(docs.transaction_doc(docs.parse_json(
        b'{"txn_id": "t", "user_id": "u", "timestamp": "2026-11-25T10:00:00Z", '
        b'"processed_at": "2026-11-25T10:00:01Z", "amount_reporting": 1.0, '
        b'"reporting_currency": "USD"}')))
    assert {k for i in db[docs.TRANSACTIONS].indexes for k in i["key"]} <= stored
    mongo.ensure_collections(db)  # type: ignore[arg-type]
    assert len(db[docs.TRANSACTIONS].indexes) == 3
