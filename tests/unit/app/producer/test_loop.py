"""The producer's send loop without Kafka (app/producer/loop.py): ``generate()``, the truth
file, the rate and duration, the summary."""

from __future__ import annotations

import re

import orjson

from app.producer import Summary, generate
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
