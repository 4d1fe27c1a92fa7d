"""Each long-running process of the pipeline stops within 10 s of SIGTERM, busy or idle: the
worker in the middle of a backlog, the sink, the API and the dashboard (k8s gives a pod 30 s,
a supervisor as much; a process that hangs there is killed and loses its clean shutdown)."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import pytest

from app.contract import TRANSACTIONS
from app.producer import TransactionFactory, ensure_topic, send
from app.settings import settings
from tests.procs import TXN, Proc, free_port, pipeline_env, wait_http

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

PARTITIONS = 4
LIMIT_SECONDS = 10.0


def stop_seconds(proc: Proc) -> float:
    """SIGTERM ``proc`` and return how long it took to exit (it must exit on its own)."""
    started = time.monotonic()
    code = proc.stop(timeout=LIMIT_SECONDS + 5)
    took = time.monotonic() - started
    assert code not in (None, -signal.SIGKILL), f"{proc.name} had to be killed:\n{proc.log()}"
    return took


def test_every_process_stops_within_10_s_of_sigterm(tmp_path: Path, unique: str) -> None:
    prefix = f"stop-{unique}"
    topic = f"{prefix}-{TRANSACTIONS}"
    ensure_topic(settings.kafka_bootstrap_servers, topic, PARTITIONS)
    worker_port, api_port, dash_port = free_port(), free_port(), free_port()
    env = pipeline_env(prefix, TOPIC_PARTITIONS=PARTITIONS, WEB_PORT=worker_port,
                       SINK_METRICS_PORT=0, DATA_DIR=tmp_path / "data",
                       API_URL=f"http://127.0.0.1:{api_port}")
    procs = {
        "worker": Proc("worker", [TXN, "worker", "-l", "info"], env, tmp_path),
        "sink": Proc("sink", [TXN, "sink", "-l", "info"], env, tmp_path),
        "api": Proc("api", [sys.executable, "-m", "uvicorn", "views.api:app", "--host",
                            "127.0.0.1", "--port", str(api_port)], env, tmp_path),
        "dashboard": Proc("dashboard", [str(Path(sys.executable).parent / "panel"), "serve",
                                        "dashboards/live.py", "--address", "127.0.0.1",
                                        "--port", str(dash_port), "--liveness"], env,
                           tmp_path),
    }
    try:
        for proc in procs.values():
            proc.start()
        wait_http(f"http://127.0.0.1:{worker_port}/health", timeout=120, proc=procs["worker"])
        wait_http(f"http://127.0.0.1:{api_port}/health", timeout=60, proc=procs["api"])
        wait_http(f"http://127.0.0.1:{dash_port}/liveness", timeout=60, proc=procs["dashboard"])
        # a backlog, so the worker and the sink are busy when the signal comes
        summary = send(TransactionFactory(seed=9, users=200, merchants=20), topic,
                       bootstrap=settings.kafka_bootstrap_servers, rate=0, count=30_000,
                       partitions=PARTITIONS)
        assert summary.errors == 0
        time.sleep(2)
        took = {name: stop_seconds(proc) for name, proc in procs.items()}
    finally:
        for proc in procs.values():
            proc.kill()
    print(f"\nSIGTERM -> exit: {', '.join(f'{n} {s:.1f} s' for n, s in took.items())}")
    assert {n: s for n, s in took.items() if s >= LIMIT_SECONDS} == {}
