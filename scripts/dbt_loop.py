"""Run `dbt build` every DBT_INTERVAL_SECONDS until Ctrl-C (or SIGTERM); `make demo` starts it.

Each run is a fresh `dbt build` process in dbt/ (so it reads MONGO_URL and MONGO_DB from the
environment like `make dbt`), at niceness NICENESS; a failed run is reported and the loop goes on.

    .venv/bin/python scripts/dbt_loop.py            # every DBT_INTERVAL_SECONDS (default 300)
    .venv/bin/python scripts/dbt_loop.py --once     # one run; exit code = dbt's
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.settings import load  # noqa: E402

DBT = str(Path(sys.executable).parent / "dbt")
COMMAND = [DBT, "build", "--profiles-dir", "."]


#: dbt runs at a lower CPU priority than the pipeline: a build is batch work, and on a small
#: machine it would otherwise take its CPU from the live path (the API's and the sink's latency).
NICENESS = 10


def run_once() -> int:
    started = time.monotonic()
    code = subprocess.run(COMMAND, cwd=ROOT / "dbt",
                          preexec_fn=lambda: os.nice(NICENESS)).returncode  # noqa: PLW1509
    print(f"[dbt_loop] dbt build {'ok' if code == 0 else f'FAILED ({code})'} "
          f"in {time.monotonic() - started:.1f} s", flush=True)
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--once", action="store_true", help="run dbt build once and exit")
    args = parser.parse_args(argv)
    if args.once:
        return run_once()
    interval = load().dbt_interval_seconds
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    print(f"[dbt_loop] dbt build every {interval} s (Ctrl-C stops)", flush=True)
    try:
        while True:
            next_run = time.monotonic() + interval
            run_once()
            time.sleep(max(0.0, next_run - time.monotonic()))
    except KeyboardInterrupt:
        print("[dbt_loop] stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
