"""scripts/services.py signals only the processes it started: a pid file that names another
process (after a reboot, pids are reused) is dropped, not trusted."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def services(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    spec = importlib.util.spec_from_file_location("services", ROOT / "scripts" / "services.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "RUN", tmp_path)
    return module


def test_a_pid_file_naming_another_process_is_dropped(services: ModuleType) -> None:
    services.pid_file("kafka").write_text(str(os.getpid()))  # alive, but this test, not Kafka
    assert services.running_pid("kafka") is None
    assert not services.pid_file("kafka").exists()
    services.stop_one("kafka")  # nothing to signal: this process is still here
    services.pid_file("ferretdb").write_text("not a pid")
    assert services.running_pid("ferretdb") is None


def test_a_process_of_this_checkout_is_recognised(services: ModuleType) -> None:
    # a stand-in whose command line holds the checkout's path and the service's mark
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)",
                             str(ROOT), "kafka.Kafka"])
    try:
        # until the child has exec'd, /proc shows the parent's command line
        deadline = time.monotonic() + 10
        while b"kafka.Kafka" not in Path(f"/proc/{proc.pid}/cmdline").read_bytes():
            assert time.monotonic() < deadline, "the stand-in did not start"
            time.sleep(0.01)
        services.pid_file("kafka").write_text(str(proc.pid))
        assert services.is_ours(proc.pid, "kafka")
        assert not services.is_ours(proc.pid, "ferretdb")
        assert services.running_pid("kafka") == proc.pid
    finally:
        proc.kill()
        proc.wait()
    assert services.running_pid("kafka") is None  # gone: the stale file goes too


def test_the_broker_checks_retention_every_few_seconds(services: ModuleType, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(services, "KAFKA_DATA", tmp_path / "kafka")
    lines = services.kafka_config().read_text().splitlines()
    config = dict(line.split("=", 1) for line in lines if "=" in line and line[0] != "#")
    assert int(config["log.retention.check.interval.ms"]) <= 5000
    assert config["log.dirs"] == str(tmp_path / "kafka" / "logs")
