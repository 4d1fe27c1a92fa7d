"""The API's result cache (views/api_cache.py): single flight, freshness and the stale window,
failures, the cost factor and the size bound."""

from __future__ import annotations

import threading
import time

import pytest

from views.api_cache import ResultCache


def test_cache_single_flight_and_freshness() -> None:
    cache, calls = ResultCache(ttl=0.2, stale_seconds=0.2, cost_factor=0), []

    def compute() -> int:
        calls.append(1)
        time.sleep(0.05)
        return len(calls)

    threads = [threading.Thread(target=lambda: cache.get("k", compute)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and cache.get("k", compute) == 1
    time.sleep(0.25)  # expired, still within the stale window: old value, refresh started
    assert cache.lookup("k", compute) == (True, 1)
    deadline = time.monotonic() + 2
    while cache.get("k", compute) != 2:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    time.sleep(0.5)  # past the stale window: computed by the caller
    assert cache.lookup("k", compute) == (False, None)
    assert cache.get("k", compute) == 3


def test_cache_failures_propagate_and_are_not_cached() -> None:
    cache = ResultCache(ttl=10)

    def boom() -> int:
        raise RuntimeError("db down")

    with pytest.raises(RuntimeError):
        cache.get("k", boom)
    assert cache.get("k", lambda: 5) == 5


def test_cache_failed_refresh_keeps_serving_the_stale_value() -> None:
    cache = ResultCache(ttl=0.05, stale_seconds=5, cost_factor=0)
    assert cache.get("k", lambda: 1) == 1
    time.sleep(0.1)

    def boom() -> int:
        raise RuntimeError("db down")

    assert cache.get("k", boom) == 1
    time.sleep(0.1)
    assert cache.get("k", boom) == 1  # the refresh failed; stale value until the window ends


def test_cache_cost_factor_and_bound() -> None:
    cache = ResultCache(ttl=0.01, cost_factor=100, max_entries=3)
    cache.get("slow", lambda: time.sleep(0.02) or "v")
    time.sleep(0.05)  # 0.02 s x 100 = fresh for ~2 s despite ttl=0.01
    assert cache.lookup("slow", lambda: "other") == (True, "v") and cache.refreshes == 0
    for k in range(5):
        cache.get(k, lambda k=k: k)
    assert cache.lookup("slow", lambda: "x") == (False, None)  # evicted: least recently used
    assert ResultCache(ttl=0).lookup("k", lambda: 1) == (False, None)
    assert ResultCache(ttl=0).get("k", lambda: 1) == 1
    cache.clear()
    cache.close()
