"""Fixtures shared by the unit tests of several packages."""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import pytest

from agents import processor
from app.main import app
from tables import txn_ids, user_tables
from tests.unit.agent_harness import Recorder


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Iterator[Recorder]:
    """The processing agent with its output replaced by a :class:`Recorder` (no broker) and
    its tables in Faust's in-memory store, fresh for each test."""
    tables = list(app.tables.values())
    previous = app.conf.store
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "reconfiguring late": exactly what we mean here
        app.conf.store = "memory://"
    for table in tables:
        table._data = None  # a fresh store, of the configured kind, on first use
    user_tables.forget_users()
    txn_ids.forget_expiry()
    rec = Recorder()
    monkeypatch.setattr(processor, "output", rec)

    async def no_topics() -> None:  # no broker here
        pass

    monkeypatch.setattr(processor, "declare_outputs", no_topics)
    monkeypatch.setattr(processor, "counters", processor.Counters())
    yield rec
    for table in tables:
        table._data = None
    user_tables.forget_users()
    txn_ids.forget_expiry()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        app.conf.store = previous
