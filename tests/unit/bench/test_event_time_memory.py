"""The memory benchmark's pure parts (bench/event_time_memory.py): the metrics it reads, the
event times it asks the producer for, and the pass rule."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from app.producer import step_us_for
from tests.unit.bench.loader import load

etm = load("event_time_memory")
Sample = etm.Sample
MB = 2**20

METRICS = """# HELP txn_processed_total Valid transactions folded into the statistics.
# TYPE txn_processed_total counter
txn_processed_total 1234.0
txn_dlq_total 5.0
txn_dlq_by_reason_total{kind="not_json"} 3.0
txn_duplicates_total 2.0
txn_lag 17
garbage line
"""


def test_parse_metrics_and_handled() -> None:
    m = etm.parse_metrics(METRICS)
    assert m["txn_processed_total"] == 1234 and m["txn_lag"] == 17
    assert not any("{" in name for name in m) and "garbage" not in m
    assert etm.handled(m) == 1234 + 5 + 2  # replays: not exposed, 0


def test_plan_spreads_the_backlog_over_the_days_up_to_now() -> None:
    now_ms = 1_795_000_000_000
    p = etm.plan(1_500_000, 20, now_ms)
    assert p.step_us == 1_152_000
    # what txn produce --rate 0 --time-scale T makes of it at TARGET_TPS = etm.TPS
    assert step_us_for(0, p.time_scale, etm.TPS) == p.step_us
    last = p.start_ms + (1_500_000 - 1) * p.step_us // 1000
    assert last == now_ms - 60_000  # a minute before now: nothing from the future
    assert (last - p.start_ms) / 86_400_000 == pytest.approx(20, abs=1e-4)
    with pytest.raises(ValueError):
        etm.plan(1, 20, now_ms)


def run(warm_mb: float, end_mb: float, count: int = 1000) -> list:
    """Samples every 10 messages: RSS ramps to warm_mb by 20%, then linearly to end_mb."""
    out = []
    for done in range(0, count + 1, 10):
        share = done / count
        mb = warm_mb * share / 0.2 if share < 0.2 else \
            warm_mb + (end_mb - warm_mb) * (share - 0.2) / 0.8
        out.append(Sample(done / 100, done, int(mb * MB)))
    return out


def test_flat_memory_passes_and_growth_beyond_10_percent_fails() -> None:
    flat = etm.summarize(run(300, 300), 1000)
    assert flat["passed"] and flat["ratio"] == pytest.approx(1.0, abs=0.01)
    assert flat["rss_warm_mb"] == pytest.approx(300, abs=4)
    edge = etm.summarize(run(300, 320), 1000)  # +6.7% at the very end: within 10%
    assert edge["passed"]
    grown = etm.summarize(run(300, 420), 1000)
    assert not grown["passed"] and grown["ratio"] > 1.3
    assert grown["rss_peak_mb"] == pytest.approx(420, abs=0.1)
    curve = grown["rss_by_progress_mb"]
    assert list(curve) == [f"{p}%" for p in range(10, 101, 10)]
    assert curve["20%"] < curve["60%"] < curve["100%"]


def test_less_memory_at_the_end_passes() -> None:
    assert etm.summarize(run(300, 250), 1000)["passed"]


def test_a_run_that_did_not_finish_is_not_summarised() -> None:
    with pytest.raises(ValueError):
        etm.summarize(run(300, 300)[:50], 1000)
    with pytest.raises(ValueError):
        etm.summarize([], 1000)


def test_sparse_samples_fall_back_to_the_nearest() -> None:
    samples = [Sample(0, 0, 100 * MB), Sample(1, 500, 200 * MB), Sample(2, 1000, 210 * MB)]
    s = etm.summarize(samples, 1000)
    assert (s["rss_warm_mb"], s["rss_end_mb"]) == (100.0, 210.0)


def test_result_paths_carry_the_date_and_render_lists_each_run(tmp_path: Path) -> None:
    json_path, md_path = etm.result_paths(datetime(2026, 12, 1, 23, 59, tzinfo=UTC), tmp_path)
    assert json_path.name == "2026-12-01-event-time-memory.json"
    assert md_path.name == "2026-12-01-event-time-memory.md"
    runs = [{"when": "2026-12-01T10:00Z", "label": label, "commit": "abc1234", "count": 1000,
             "users": 10, "days": 20, "rate_msgs_per_s": 5000, "machine": "2 cores",
             "summary": etm.summarize(run(300, end), 1000)}
            for label, end in (("before", 420), ("after", 305))]
    text = etm.render(runs)
    rows = [line for line in text.splitlines() if line.startswith("| 2026-12-01")]
    assert len(rows) == 4  # a summary row and a curve row per run
    assert rows[0].endswith("| FAIL |") and rows[1].endswith("| pass |")


def test_options() -> None:
    args = etm.parse_args([])
    assert (args.count, args.users, args.days) == (1_500_000, 10_000, 20)
    args = etm.parse_args(["--count", "2000", "--users", "50", "--days", "3"])
    assert (args.count, args.users, args.days) == (2000, 50, 3)
    with pytest.raises(SystemExit):
        etm.parse_args(["--days", "0"])


def test_write_buffer_shim_sets_the_memtable_size(tmp_path: Path) -> None:
    shim = etm.write_buffer_shim(tmp_path / "shim", 1.5)
    text = (shim / "sitecustomize.py").read_text()
    assert "RocksDBOptions.write_buffer_size = 1572864" in text
    compile(text, "sitecustomize.py", "exec")


def test_the_warm_up_starts_after_the_dedupe_horizon() -> None:
    assert etm.warmup_window(20, horizon_days=8) == (0.4, 0.45)
    assert etm.warmup_window(100, horizon_days=8) == etm.WARMUP  # never earlier than 20%
    assert etm.warmup_window(8, horizon_days=8) == (0.9, 0.95)  # a run shorter than the horizon
