"""`txn produce` options that need no broker (--dry-run), and `txn topics`."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import click
import orjson
import pytest

from app.commands import parse_start
from app.producer import TransactionFactory, step_us_for
from tests.procs import ROOT, TXN, pipeline_env


def test_parse_start() -> None:
    assert parse_start(None) is None and parse_start("") is None
    assert parse_start("1795000000000") == 1_795_000_000_000
    assert parse_start("2026-11-18T11:06:40+00:00") == 1_795_000_000_000
    assert parse_start("2026-11-18T12:06:40+01:00") == 1_795_000_000_000
    assert parse_start("2026-11-18T11:06:40") == 1_795_000_000_000  # naive = UTC
    with pytest.raises(click.BadParameter):
        parse_start("yesterday")


def test_dry_run_generates_and_writes_truth(tmp_path: Path, unique: str) -> None:
    truth = tmp_path / "truth.jsonl"
    done = subprocess.run(
        [TXN, "produce", "--dry-run", "--count", "30000", "--seed", "9", "--users", "800",
         "--merchants", "90", "--anomaly-rate", "0.01", "--bad-rate", "0.02",
         "--start", "1795000000000", "--first-seq", "500", "--time-scale", "2",
         "--truth", str(truth)],
        cwd=ROOT, env=pipeline_env(f"dry-{unique}", TARGET_TPS=500), capture_output=True,
        text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    found = re.search(r"^sent=30000 rate=([\d.]+) errors=0 anomalies=(\d+) bad=(\d+) .*"
                      r"seqs=500\.\.30499 dry_run=1$", done.stdout, re.M)
    assert found, done.stdout
    # --rate 0 (the dry-run default) paces event time by TARGET_TPS and --time-scale.
    assert "step_us=4000" in done.stderr and "start=2026-11-18T11:06:40+00:00" in done.stderr
    factory = TransactionFactory(seed=9, users=800, merchants=90, anomaly_rate=0.01,
                                 bad_rate=0.02, start_ms=1_795_000_000_000,
                                 step_us=step_us_for(0, 2, default_rate=500))
    expected = [m.anomaly for m in factory.messages(500, 30000) if m.anomaly]
    assert [orjson.loads(line) for line in truth.read_bytes().splitlines()] == expected
    assert int(found.group(2)) == len(expected)
    assert int(found.group(3)) == sum(1 for m in factory.messages(500, 30000) if m.bad)


def test_bad_options_are_refused(unique: str) -> None:
    done = subprocess.run([TXN, "produce", "--dry-run", "--rate", "-5", "--count", "1"],
                          cwd=ROOT, env=pipeline_env(f"dry-{unique}"), capture_output=True,
                          text=True, timeout=120)
    assert done.returncode != 0
    assert "--rate" in done.stderr + done.stdout


def test_topics_command(unique: str) -> None:
    done = subprocess.run([TXN, "topics"], cwd=ROOT, env=pipeline_env(f"tp-{unique}"),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"tp-{unique}-transactions\tpartitions=" in done.stdout


@pytest.mark.parametrize("pace", [["--rate", "0"], ["--rate", "1000", "--time-scale", "60"]])
def test_a_run_ahead_of_the_clock_needs_count_or_start(unique: str, pace: list[str]) -> None:
    # Refused before any connection: no broker needed.
    done = subprocess.run([TXN, "produce", *pace, "--duration", "5"], cwd=ROOT,
                          env=pipeline_env(f"ahead-{unique}"), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "--count" in done.stderr and "--start" in done.stderr
    assert "sent=" not in done.stdout


def test_a_counted_run_without_start_ends_now(unique: str) -> None:
    before_ms = int(time.time() * 1000)
    done = subprocess.run(
        [TXN, "produce", "--dry-run", "--count", "5000", "--rate", "0", "--time-scale", "3600",
         "--seed", "4", "--users", "50", "--merchants", "10", "--bad-rate", "0.05",
         "--bad-kinds", "late_event,bad_json"],
        cwd=ROOT, env=pipeline_env(f"now-{unique}", TARGET_TPS=1000), capture_output=True,
        text=True, timeout=120)
    after_ms = int(time.time() * 1000)
    assert done.returncode == 0, done.stderr[-2000:]
    replay = re.search(r"start=\S+ \(the run ends now\) step_us=3600000 .*"
                       r"--start (\d+) --rate 0 --time-scale 3600 "
                       r"--bad-kinds late_event,bad_json --first-seq N", done.stderr)
    assert replay, done.stderr
    start = int(replay.group(1))
    last = start + 4999 * 3600  # 5000 event hours: about 208 days before now
    assert after_ms - 3600_000 - 1000 <= last <= after_ms and start < before_ms
    factory = TransactionFactory(seed=4, users=50, merchants=10, bad_rate=0.05,
                                 start_ms=start, step_us=3_600_000,
                                 bad_kinds=("late_event", "bad_json"))
    assert re.search(rf"^sent=5000 .*bad={sum(1 for m in factory.messages(0, 5000) if m.bad)} ",
                     done.stdout, re.M)


def test_unknown_bad_kinds_are_refused(unique: str) -> None:
    done = subprocess.run([TXN, "produce", "--dry-run", "--count", "1", "--bad-kinds",
                           "late_event,nonsense"], cwd=ROOT, env=pipeline_env(f"k-{unique}"),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "--bad-kinds" in done.stderr
