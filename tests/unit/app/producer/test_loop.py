"""The producer's send loop without Kafka (app/producer/loop.py): ``generate()``, the truth
file, the rate and duration, the summary."""

from __future__ import annotations

import re
import threading
import time

import orjson

from app.producer import Summary, generate, loop
from tests.unit.app.producer.factories import small


def test_generate_writes_the_truth_file(tmp_path) -> None:
    f = small(21, anomaly_rate=0.05, bad_rate=0.05)
    truth = tmp_path / "truth.jsonl"
    summary = generate(f, count=4000, first_seq=100, truth=str(truth))
    expected = [m.anomaly for m in f.messages(100, 4000) if m.anomaly]
    lines = [orjson.loads(line) for line in truth.read_bytes().splitlines()]
    assert lines == expected and len(lines) == summary.anomalies > 100
    assert summary.sent == 4000 and summary.next_seq == 4100 and summary.errors == 0
    assert summary.bad == sum(1 for m in f.messages(100, 4000) if m.bad)
    assert re.match(r"sent=4000 rate=[\d.]+ errors=0 anomalies=\d+ bad=\d+ ", str(summary))


def test_generate_honours_rate_and_duration() -> None:
    summary = generate(small(2), rate=2000, duration=0.5)
    assert 0.5 <= summary.seconds < 1.0
    assert 600 <= summary.sent <= 1100  # ~1000; loose: the machine is shared


def test_summary_text() -> None:
    s = Summary(sent=10, errors=2, seconds=2.0, first_seq=0, next_seq=12, dry_run=True,
                last_error="boom")
    assert s.rate == 5.0
    assert str(s).startswith("sent=10 rate=5.0 errors=2 ")
    assert "dry_run=1" in str(s) and "last_error='boom'" in str(s)
    assert Summary().rate == 0.0


def _live_run(behind_ms: float, count: int, monkeypatch) -> tuple[list[tuple[float, int]], float]:  # type: ignore[no-untyped-def]
    """Run the loop in live mode against a fake wall clock that only sleeping moves; returns
    (wall clock, event time) of every message sent and the seconds slept."""
    factory = small(1, step_us=1_000)  # 1,000 events a second
    wall = [factory.start_ms + behind_ms]
    slept = [0.0]
    real_sleep, caller = time.sleep, threading.get_ident()

    def sleep(seconds: float) -> None:
        if threading.get_ident() != caller:  # another test's thread still running: not ours
            real_sleep(seconds)
            return
        slept[0] += seconds
        wall[0] += seconds * 1000

    monkeypatch.setattr(loop.time, "sleep", sleep)
    sent: list[tuple[float, int]] = []
    loop.run(factory, lambda msg: sent.append((wall[0], msg.timestamp_ms)), lambda: 0,
             lambda: len(sent), Summary(), first_seq=0, rate=1000, count=count, duration=None,
             truth=None, progress=None, stop=threading.Event(), max_pending=10**9, live=True,
             wall_ms=lambda: wall[0])
    return sent, slept[0]


def test_live_catches_up_a_late_start_at_once(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Started 3 s after its first event time: the events already due go out without a pause
    (whole chunks of 5), the next ones when the clock reaches them, never before."""
    sent, slept = _live_run(3_000, 3_500, monkeypatch)
    assert len(sent) == 3_500
    assert all(at == sent[0][0] for at, _ in sent[:3_000])
    assert all(at >= ts for at, ts in sent)
    assert all(at - ts < 10 for at, ts in sent[3_000:])  # on time, within a chunk
    assert 0.49 <= slept <= 0.51


def test_live_from_the_current_time_sends_at_the_event_pace(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    sent, slept = _live_run(0, 2_000, monkeypatch)
    assert all(0 <= at - ts < 10 for at, ts in sent)
    assert 1.9 <= slept <= 2.0
