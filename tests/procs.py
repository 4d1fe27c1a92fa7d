"""Child processes for end-to-end tests: the real worker, sink, API... started as commands with
their own environment (a unique TOPIC_PREFIX, MONGO_DB, DATA_DIR and ports), logs in files, and
stopped cleanly (SIGTERM) or hard (SIGKILL).

    with Proc("worker", [TXN, "worker", "-l", "info"], env, tmp_path) as worker:
        wait_http(f"http://localhost:{port}/health")
        ...
        worker.kill()      # SIGKILL, for crash tests
        worker.start()     # the same command again
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent
TXN = str(BIN / "txn")
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pipeline_env(prefix: str, **extra: Any) -> dict[str, str]:
    """The environment of a pipeline process isolated by ``prefix`` (topics, app id, db)."""
    env = {**os.environ, "TOPIC_PREFIX": f"{prefix}-",
           "MONGO_DB": f"test_{prefix}".replace("-", "_")}
    env.update({k: str(v) for k, v in extra.items()})
    return env


class Proc:
    def __init__(self, name: str, cmd: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name, self.cmd, self.env = name, cmd, env
        self.log_path = log_dir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.cmd, env=self.env, cwd=ROOT, stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 30) -> int | None:
        """SIGTERM, wait, then SIGKILL if it hangs. Returns the exit code."""
        if self.proc is None:
            return None
        if self.alive:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL the whole process group: a crash, no clean shutdown."""
        if self.alive:
            assert self.proc is not None
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def log(self, lines: int = 60) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def __enter__(self) -> Proc:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_http(url: str, timeout: float = 60, proc: Proc | None = None) -> bytes:
    """GET ``url`` until it answers 2xx; fails with the process's log on a timeout."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive:
            raise AssertionError(f"{proc.name} exited:\n{proc.log()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return bytes(resp.read())
        except (urllib.error.URLError, OSError) as exc:
            last = exc
        time.sleep(0.3)
    raise AssertionError(f"{url} did not answer in {timeout}s ({last}):\n"
                         f"{proc.log() if proc else ''}")


def wait_for(predicate: Any, timeout: float = 60, interval: float = 0.5,
             message: Any = "condition") -> Any:
    """Poll ``predicate()`` until it returns something truthy; return that. ``message`` may be
    a callable, called at the timeout (a process's log as it is then, not as it was)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for "
                         f"{message() if callable(message) else message}")
