"""``agents.sink.agents``: the wiring that needs no broker (the rebalance handler, the
partition check without a consumer, nothing connected on import)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from faust.types import TP

from agents.sink import agents
from agents.sink import documents as docs
from agents.sink.rollups import Countable, Rollups
from app.main import app, sink_app
from app.topics import enriched_raw

MINUTE = datetime(2026, 11, 25, 23, 0, tzinfo=UTC)


async def test_a_rebalance_forgets_the_cached_rows_and_the_revoked_items(
        monkeypatch: pytest.MonkeyPatch) -> None:
    rollups = Rollups(None)
    monkeypatch.setattr(agents, "sink", lambda: agents.Sink(None, rollups))
    topic = enriched_raw.get_topic_name()
    mine = Countable("m", "grocery", MINUTE, 100, 0, 1, 5)
    theirs = Countable("m", "grocery", MINUTE, 100, 0, 2, 5)
    rollups.state.load((docs.VOLUME_MINUTE, "x"), {"minute": MINUTE}, None)
    rollups.items.extend([mine, theirs])
    await agents.forget_rows(None, {TP(topic, 2), TP("other", 1)})
    assert rollups.items == [mine] and not rollups.state.rows


def test_without_a_consumer_the_rows_count_as_shared() -> None:
    assert agents.Exclusive()() is False


def test_the_sink_is_declared_on_the_sink_app_only() -> None:
    names = {agent.name for agent in sink_app.agents.values()}
    assert {"store_transactions", "store_anomalies", "store_dlq"} <= \
        {name.rsplit(".", 1)[-1] for name in names}
    assert not any("agents.sink" in name for name in app.agents)
    assert agents.sink.cache_info().currsize == 0  # nothing made (connected) on import
