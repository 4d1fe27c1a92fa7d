"""Shared fixtures. Integration tests use the real local Kafka and FerretDB that `make test`
starts (scripts/services.py); each test isolates itself with unique topic names, database names
and consumer groups, so tests never see each other's data."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pymongo
import pytest

from app.settings import settings
from tests.mongo_finds import Finds


@pytest.fixture
def unique() -> str:
    """A short unique token for topic, group and database names."""
    return uuid.uuid4().hex[:10]


@pytest.fixture(scope="session")
def bootstrap() -> str:
    return settings.kafka_bootstrap_servers


@pytest.fixture(scope="session")
def mongo_client() -> Iterator[pymongo.MongoClient]:
    client: pymongo.MongoClient = pymongo.MongoClient(
        settings.mongo_url, serverSelectionTimeoutMS=10_000
    )
    client.admin.command("ping")
    yield client
    client.close()


@pytest.fixture
def mongo_db(mongo_client: pymongo.MongoClient, unique: str) -> Iterator[pymongo.database.Database]:
    """A fresh database on the real FerretDB, dropped afterwards."""
    name = f"test_{unique}"
    yield mongo_client[name]
    mongo_client.drop_database(name)


@pytest.fixture
def counted(mongo_db: pymongo.database.Database) -> Iterator[tuple[Any, Finds]]:
    """``mongo_db`` through a client that records every ``find`` it sends (``Finds``)."""
    finds = Finds()
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
        settings.mongo_url, event_listeners=[finds], tz_aware=True)
    yield client[mongo_db.name], finds
    client.close()
