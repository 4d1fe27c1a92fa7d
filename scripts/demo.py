"""`make demo`: the whole pipeline on this machine, in the foreground.

Starts the services (Kafka, FerretDB), then each part of the pipeline as a child process with
its output in var/log/<part>.log, prints where to look, and stops everything on Ctrl-C.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
LOGS = ROOT / "var" / "log"


@dataclass(frozen=True)
class Part:
    name: str
    cmd: list[str]
    where: str
    env: dict[str, str] | None = None


def parts() -> list[Part]:
    txn = str(VENV_BIN / "txn")
    py = sys.executable
    web_port = os.environ.get("WEB_PORT", "6066")
    api_port = os.environ.get("API_PORT", "8000")
    dash_port = os.environ.get("DASHBOARD_PORT", "5006")
    tps = os.environ.get("TARGET_TPS", "1000")
    found = [
        Part("worker", [txn, "worker", "-l", "info"],
             f"http://localhost:{web_port}/health  (table views: /users/<user_id>/stats)"),
    ]
    if (ROOT / "agents" / "sink.py").exists():
        found.append(Part("sink", [txn, "sink", "-l", "info"], "writes MongoDB collections"))
    if (ROOT / "app" / "producer.py").exists():
        found.append(Part("producer", [txn, "produce", "--rate", tps, "--quiet"],
                          f"{tps} transactions/s into Kafka"))
    if (ROOT / "views" / "api.py").exists():
        found.append(Part("api", [py, "-m", "uvicorn", "views.api:app", "--port", api_port],
                          f"http://localhost:{api_port}/docs"))
    if (ROOT / "dashboards" / "app.py").exists():
        found.append(Part("dashboard", [str(VENV_BIN / "panel"), "serve",
                                        "dashboards/app.py", "--port", dash_port,
                                        "--allow-websocket-origin", f"localhost:{dash_port}"],
                          f"http://localhost:{dash_port}/app"))
    if (ROOT / "scripts" / "dbt_loop.py").exists():
        found.append(Part("dbt", [py, "scripts/dbt_loop.py"], "dbt build every "
                          f"{os.environ.get('DBT_INTERVAL_SECONDS', '60')} s"))
    return found


def main() -> int:
    if subprocess.run([sys.executable, "scripts/services.py", "start"], cwd=ROOT).returncode:
        return 1
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
        subprocess.run([sys.executable, "scripts/services.py", "stop"], cwd=ROOT)
        print("[demo] stopped", flush=True)

    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        for part in parts():
            log = open(LOGS / f"{part.name}.log", "ab")
            env = {**os.environ, **(part.env or {})}
            procs.append((part, subprocess.Popen(part.cmd, cwd=ROOT, stdout=log,
                                                 stderr=subprocess.STDOUT, env=env)))
            time.sleep(1)
        print("\n[demo] the pipeline is running (Ctrl-C stops it):", flush=True)
        for part, proc in procs:
            print(f"  {part.name:<10} pid {proc.pid:<7} {part.where}"
                  f"   log: var/log/{part.name}.log")
        print("  kafka      127.0.0.1:9092    ferretdb  mongodb://127.0.0.1:27017", flush=True)
        while True:
            for part, proc in procs:
                if proc.poll() is not None:
                    print(f"[demo] {part.name} exited with {proc.returncode}; "
                          f"see var/log/{part.name}.log", flush=True)
                    raise KeyboardInterrupt
            time.sleep(1)
    except KeyboardInterrupt:
        stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
