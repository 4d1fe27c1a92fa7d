"""`make demo`: the whole pipeline on this machine, in the foreground.

Starts the services (Kafka, FerretDB) unless they already run, then each part of the pipeline
as a child process with its output in var/log/<part>.log, prints where to look and, every 10 s,
what the worker has processed. Ctrl-C stops every part, and the services if it started them.

Logs go to var/log/ (``$TXN_VAR_DIR/log`` when TXN_VAR_DIR is set, as scripts/services.py).
Ports: WEB_PORT (worker, 6066), API_PORT (8000), DASHBOARD_PORT (5006); the parts are given
matching WORKER_URL and API_URL. Every server listens on BIND_HOST (app/settings.py:
127.0.0.1 unless set).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from app.settings import settings

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
LOGS = Path(os.environ.get("TXN_VAR_DIR") or ROOT / "var").resolve() / "log"


@dataclass(frozen=True)
class Part:
    name: str
    cmd: list[str]
    where: str
    env: dict[str, str] | None = None


def parts() -> list[Part]:
    txn = str(VENV_BIN / "txn")
    py = sys.executable
    web_port, api_port, dash_port = ports()
    tps = os.environ.get("TARGET_TPS", "1000")
    # A few invalid messages of every kind (late and future events too) for the DLQ views.
    bad_rate = os.environ.get("DEMO_BAD_RATE", "0.001")
    prune_every = int(os.environ.get("PRUNE_INTERVAL_SECONDS", "300"))
    return [
        Part("worker", [txn, "worker", "-l", "info"],
             f"http://localhost:{web_port}/health  (table views: /users/<user_id>/stats)"),
        Part("sink", [txn, "sink", "-l", "info"], "writes MongoDB collections"),
        Part("producer", [txn, "produce", "--rate", tps, "--bad-rate", bad_rate, "--quiet"],
             f"{tps} transactions/s into Kafka ({bad_rate} of them invalid)"),
        Part("api", [py, "-m", "uvicorn", "views.api:app", "--host", settings.bind_host,
                     "--port", api_port], f"http://localhost:{api_port}/docs"),
        Part("dashboard", [str(VENV_BIN / "panel"), "serve", "dashboards/live.py",
                           "--address", settings.bind_host, "--port", dash_port,
                           "--allow-websocket-origin", f"localhost:{dash_port}"],
             f"http://localhost:{dash_port}/live"),
        Part("dbt", [py, "scripts/dbt_loop.py"],
             f"dbt build every {os.environ.get('DBT_INTERVAL_SECONDS', '300')} s"),
        # Batch work at a lower CPU priority than the live path (dbt_loop.py does the same).
        Part("prune", ["bash", "-c", "trap 'kill $! 2>/dev/null; exit 0' TERM; "
                       f"while true; do nice -n 10 '{txn}' prune; "
                       f"sleep {prune_every} & wait $!; done"],
             f"txn prune every {prune_every} s (retention: RETENTION_DAYS...)"),
    ]


def ports() -> tuple[str, str, str]:
    return (os.environ.get("WEB_PORT", "6066"), os.environ.get("API_PORT", "8000"),
            os.environ.get("DASHBOARD_PORT", "5006"))


def services(command: str) -> int:
    return subprocess.run([sys.executable, "scripts/services.py", command], cwd=ROOT,
                          stdout=subprocess.DEVNULL if command == "status" else None).returncode


def worker_progress(web_port: str) -> str:
    """One line from the worker's /metrics: what it has processed so far."""
    try:
        with urllib.request.urlopen(f"http://localhost:{web_port}/metrics", timeout=2) as resp:
            text = resp.read().decode()
    except OSError:
        return "worker not answering yet"
    values = dict(line.split()[:2] for line in text.splitlines()
                  if line and not line.startswith("#") and "{" not in line.split()[0])
    pick = {k.removeprefix("txn_").removesuffix("_total"): v for k, v in values.items()}
    return "  ".join(f"{k}={float(v):,.0f}" for k, v in pick.items()
                     if k in ("processed", "anomalies", "dlq", "errors", "consumer_lag"))


def main() -> int:
    web_port, api_port, _ = ports()
    started_services = services("status") != 0
    if started_services and services("start"):
        return 1
    # BIND_HOST: the workers' Faust web servers read it themselves (app/main.py).
    shared_env = {"WEB_PORT": web_port, "WORKER_URL": f"http://localhost:{web_port}",
                  "API_URL": f"http://localhost:{api_port}", "BIND_HOST": settings.bind_host}
    LOGS.mkdir(parents=True, exist_ok=True)
    procs: list[tuple[Part, subprocess.Popen[bytes]]] = []

    def stop(*_: object) -> None:
        print("\n[demo] stopping...", flush=True)
        for _, proc in reversed(procs):
            if proc.poll() is None:
                proc.terminate()
        for _, proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        if started_services:
            services("stop")
        else:
            print("[demo] the services were already running before the demo: left running "
                  "(make services-down stops them)", flush=True)
        print("[demo] stopped", flush=True)

    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        for part in parts():
            log = open(LOGS / f"{part.name}.log", "ab")
            env = {**os.environ, **shared_env, **(part.env or {})}
            procs.append((part, subprocess.Popen(part.cmd, cwd=ROOT, stdout=log,
                                                 stderr=subprocess.STDOUT, env=env)))
            time.sleep(1)
        print("\n[demo] the pipeline is running (Ctrl-C stops it):", flush=True)
        for part, proc in procs:
            print(f"  {part.name:<10} pid {proc.pid:<7} {part.where}"
                  f"   log: {LOGS / part.name}.log")
        print(f"  kafka      {settings.kafka_bootstrap_servers}    ferretdb  {settings.mongo_url}",
              flush=True)
        ticks = 0
        while True:
            for part, proc in procs:
                if proc.poll() is not None:
                    print(f"[demo] {part.name} exited with {proc.returncode}; "
                          f"see {LOGS / part.name}.log", flush=True)
                    raise KeyboardInterrupt
            time.sleep(1)
            ticks += 1
            if ticks % 10 == 0:
                print(f"[demo] {time.strftime('%H:%M:%S')} {worker_progress(web_port)}",
                      flush=True)
    except KeyboardInterrupt:
        stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
