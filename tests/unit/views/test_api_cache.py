"""The API's result cache (views/api_cache.py): single flight, freshness and the stale window,
failures, the cost factor, the size bound, and the kept keys refreshed in the background."""

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


def _wait(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_kept_key_is_refreshed_in_the_background_never_by_a_request() -> None:
    cache = ResultCache(ttl=0.1, stale_seconds=5)
    threads: list[str] = []

    def slow() -> float:  # much slower than a cache hit; its value is when it was computed
        threads.append(threading.current_thread().name)
        time.sleep(0.15)
        return time.monotonic()

    cache.keep("k", slow)
    cache.start()
    try:
        _wait(lambda: cache.lookup("k", slow)[0])  # warm
        seen = set()
        end = time.monotonic() + 1.5
        while time.monotonic() < end:
            asked = time.monotonic()
            value = cache.get("k", slow)
            assert time.monotonic() - asked < 0.05  # never waits for the computation
            assert asked - value <= cache.max_age("k") + 0.05  # at most max_age old
            seen.add(value)
            time.sleep(0.01)
        assert len(seen) >= 3  # refreshed several times meanwhile
        assert set(threads) == {"api-refresh-k"}  # by the refresh thread only
        assert cache.max_age("k") == pytest.approx(0.45, abs=0.1)  # 3 x the 0.15 s it takes
    finally:
        cache.stop()
    count = len(threads)
    time.sleep(0.5)
    assert len(threads) <= count + 1  # stopped (one computation may have been under way)


def test_kept_key_survives_eviction_and_a_failing_refresh_then_expires() -> None:
    cache = ResultCache(ttl=0.05, stale_seconds=0.3, max_entries=2)
    fail = threading.Event()

    def compute() -> str:
        if fail.is_set():
            raise RuntimeError("database down")
        return "v"

    cache.keep("kept", compute)
    assert cache.get("kept", compute) == "v"  # before start(): computed on demand
    for k in range(5):
        cache.get(k, lambda k=k: k)
    assert cache.lookup("kept", compute) == (True, "v")  # never evicted
    fail.set()
    cache.start()
    try:
        assert cache.get("kept", compute) == "v"  # the refresh fails: the last result...
        time.sleep(0.3 + 2 * 0.05 + 0.1)
        assert cache.lookup("kept", compute) == (False, None)  # ...until max_age + stale
        with pytest.raises(RuntimeError):
            cache.get("kept", compute)  # then a request computes it, and the error shows
        fail.clear()
        _wait(lambda: cache.lookup("kept", compute) == (True, "v"))  # the refresh recovers
    finally:
        cache.close()


def test_nothing_is_kept_when_the_cache_is_disabled() -> None:
    cache, calls = ResultCache(ttl=0), []
    cache.keep("k", lambda: calls.append(1))
    cache.start()
    time.sleep(0.1)
    assert calls == []
    cache.get("k", lambda: calls.append(2))
    assert calls == [2]
    cache.close()
