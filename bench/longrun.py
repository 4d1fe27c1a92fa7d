"""`make longrun`: the pipeline for an hour at 1,000 transactions/s on top of a large history,
with the API under load, to show it stays healthy (docs/longrun.md).

    .venv/bin/python bench/longrun.py                       # seed 10M, run 60 minutes
    .venv/bin/python bench/longrun.py --seed-only           # prepare the seed, then stop
    .venv/bin/python bench/longrun.py --reuse --minutes 60  # run on the seed prepared before
    .venv/bin/python bench/longrun.py --seed 200000 --minutes 3   # a short trial

It runs its own Kafka and FerretDB (``scripts/services.py`` with other ports and
``TXN_VAR_DIR``, default ``var/longrun/``), never the default ones; seeds the history through the
sink's code (``bench/seed_history.py``); runs ``scripts/demo.py`` (worker, sink, producer at
TARGET_TPS, API, dashboard, dbt loop, prune loop) and samples it (``longrun_probe.py``); writes
``bench/results/longrun.json``, the result section of ``docs/longrun.md`` and
``docs/longrun.png``. Everything it started is stopped at the end and on Ctrl-C (``--keep``
leaves the services running).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

MARKER = "seed-complete.json"
DB = "txn_analytics"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=10_000_000, help="transactions of history")
    p.add_argument("--days", type=float, default=7.0, help="days of event time they span")
    p.add_argument("--minutes", type=int, default=60, help="measured minutes")
    p.add_argument("--warmup", type=float, default=60.0, help="seconds before measuring")
    p.add_argument("--reuse", action="store_true",
                   help="skip seeding when the var dir holds a completed seed of this size")
    p.add_argument("--seed-only", action="store_true", help="seed, then stop")
    p.add_argument("--keep", action="store_true", help="leave the services running")
    p.add_argument("--processes", type=int, default=2, choices=(1, 2),
                   help="seeding processes")
    p.add_argument("--rps", type=float, default=50.0, help="API requests per second")
    p.add_argument("--tps", type=int, default=1000, help="transactions per second produced")
    p.add_argument("--var-dir", default=str(ROOT / "var" / "longrun"))
    p.add_argument("--port-offset", type=int, default=10_000,
                   help="added to every default port (Kafka 9092 -> 19092, FerretDB 27017 -> "
                        "27018 is fixed)")
    p.add_argument("--results", default=str(ROOT / "bench" / "results" / "longrun.json"))
    p.add_argument("--doc", default=str(ROOT / "docs" / "longrun.md"))
    p.add_argument("--chart", default=str(ROOT / "docs" / "longrun.png"))
    return p.parse_args(argv)


def environment(args: argparse.Namespace) -> dict[str, str]:
    """The private services' and the pipeline's environment: other ports, another var dir."""
    var = Path(args.var_dir).resolve()
    if var == (ROOT / "var").resolve():
        raise SystemExit("--var-dir must not be the default services' var/")
    off = args.port_offset
    if off <= 0:
        raise SystemExit("--port-offset must be > 0 (the default services' ports are in use)")
    kafka, ferretdb = 9092 + off, 27018
    return {**os.environ,
            "TXN_VAR_DIR": str(var), "KAFKA_PORT": str(kafka),
            "KAFKA_CONTROLLER_PORT": str(9093 + off), "FERRETDB_PORT": str(ferretdb),
            "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{kafka}",
            "MONGO_URL": f"mongodb://127.0.0.1:{ferretdb}", "MONGO_DB": DB,
            "WEB_PORT": str(6066 + off), "API_PORT": str(8000 + off),
            "DASHBOARD_PORT": str(5006 + off), "SINK_METRICS_PORT": str(6067 + off),
            "DATA_DIR": str(var / "faust"), "TARGET_TPS": str(args.tps),
            # One client sends the whole load: the per-client limit would answer 429.
            "API_RATE_LIMIT": "0",
            "DBT_DUCKDB_PATH": str(var / "dbt" / "txn_analytics.duckdb"),
            "DBT_EXTERNAL_ROOT": str(var / "dbt"), "DBT_TARGET_PATH": str(var / "dbt" / "target"),
            "DBT_LOG_PATH": str(var / "dbt" / "logs")}


def say(text: str) -> None:
    print(f"[longrun] {time.strftime('%H:%M:%S')} {text}", flush=True)


def services(env: dict[str, str], command: str) -> int:
    return subprocess.run([sys.executable, "scripts/services.py", command], cwd=ROOT,
                          env=env).returncode


def wipe(var: Path) -> None:
    """A fresh start of the private services' data (their own directory only)."""
    for name in ("kafka", "ferretdb", "faust", "dbt", MARKER):
        path = var / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def seed_history(args: argparse.Namespace, env: dict[str, str]) -> dict[str, Any]:
    """Seed the private database (unless --reuse finds a completed seed of this size)."""
    var = Path(env["TXN_VAR_DIR"])
    marker = var / MARKER
    if args.reuse and marker.exists():
        done = json.loads(marker.read_text())
        if done.get("transactions") == args.seed:
            say(f"reusing the seed of {args.seed:,} transactions made {done['finished_at']}")
            return dict(done)
        say(f"the seed in {var} has {done.get('transactions'):,} transactions, not "
            f"{args.seed:,}: seeding again")
    services(env, "stop")
    wipe(var)
    if services(env, "start"):
        raise SystemExit("the private services did not start")
    os.environ.update({k: env[k] for k in ("MONGO_URL", "MONGO_DB", "KAFKA_BOOTSTRAP_SERVERS")})
    import seed_history as sh

    say(f"seeding {args.seed:,} transactions over {args.days:g} days "
        f"({args.processes} processes)")
    stats = sh.seed(env["MONGO_URL"], DB, sh.History(args.seed, args.days), args.processes,
                    lambda text: say(f"seed: {text}"))
    rate = stats.transactions / max(stats.seconds, 1e-9)
    done = {"transactions": args.seed, "days": args.days, "anomalies": stats.anomalies,
            "seconds": round(stats.seconds, 1), "rate_per_s": round(rate),
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds")}
    marker.write_text(json.dumps(done) + "\n")
    say(f"seeded {stats.transactions:,} in {stats.seconds:,.0f} s ({rate:,.0f}/s)")
    return done


def seeded_users(env: dict[str, str]) -> list[str]:
    """The history's users (the producer factory's, drawn from the same seed)."""
    from app.producer import TransactionFactory

    return [u.user_id for u in TransactionFactory(seed=42, users=10_000).users]


def wait_api(url: str, seconds: float) -> bool:
    import httpx

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(1)
    return False


def run(args: argparse.Namespace, env: dict[str, str], seed: dict[str, Any]) -> int:
    import longrun_probe as probe
    import longrun_report as rep

    var = Path(env["TXN_VAR_DIR"])
    if services(env, "start"):
        raise SystemExit("the private services did not start")
    (var / "log").mkdir(parents=True, exist_ok=True)
    demo_log = open(var / "log" / "longrun-demo.log", "ab")
    demo = subprocess.Popen([sys.executable, "scripts/demo.py"], cwd=ROOT, env=env,
                            stdout=demo_log, stderr=subprocess.STDOUT, start_new_session=True)
    api = f"http://127.0.0.1:{env['API_PORT']}"
    try:
        if not wait_api(api, 120):
            raise SystemExit(f"the API did not answer; see {var / 'log'}")
        say(f"pipeline up (demo pid {demo.pid}); warming up {args.warmup:g} s")
        time.sleep(args.warmup)

        def roots() -> list[int]:
            pids = [demo.pid]
            for name in ("kafka", "ferretdb"):
                pid_file = var / "run" / f"{name}.pid"
                if pid_file.exists():
                    pids.append(int(pid_file.read_text().strip()))
            return pids

        ctx = {"api": api, "dbt_log": var / "log" / "dbt.log",
               "roots": roots, "sink_metrics": f"http://127.0.0.1:{env['SINK_METRICS_PORT']}"}
        samples = probe.Samples()
        say(f"measuring {args.minutes} minutes: {args.rps:g} requests/s")
        asyncio.run(probe.sample(ctx, seeded_users(env), args.rps, args.minutes * 60.0,
                                 samples, lambda: demo.poll() is None))
        if demo.poll() is not None:
            say(f"the pipeline stopped early (exit {demo.returncode}); see {var / 'log'}")
    finally:
        stop_demo(demo)
    minutes = max(1, args.minutes)
    report = rep.build_report(samples, minutes)
    config = {"seed": seed["transactions"], "days": seed["days"],
              "seed_rate": f"{seed['rate_per_s']:,}/s" if seed.get("rate_per_s") else "?",
              "minutes": args.minutes, "warmup_s": args.warmup, "tps": args.tps,
              "rps": args.rps, "host": f"{os.cpu_count()} cores, {platform.machine()}",
              "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
              "ports": {k: env[k] for k in ("KAFKA_PORT", "FERRETDB_PORT", "API_PORT")}}
    rep.write_json(Path(args.results), config, report)
    rep.write_markdown(Path(args.doc), config, report)
    rep.write_chart(Path(args.chart), report)
    say(f"{'PASS' if report['verdicts']['pass'] else 'FAIL'}: {args.results}, {args.doc}, "
        f"{args.chart}")
    return 0 if report["verdicts"]["pass"] else 1


def stop_demo(demo: subprocess.Popen[bytes]) -> None:
    """demo.py stops its parts on SIGTERM; its whole group is killed if it does not."""
    if demo.poll() is None:
        demo.send_signal(signal.SIGTERM)
        try:
            demo.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    env = environment(args)
    Path(env["TXN_VAR_DIR"]).mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        seed = seed_history(args, env)
        if args.seed_only:
            return 0
        return run(args, env, seed)
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    finally:
        if args.keep:
            say(f"services left running (TXN_VAR_DIR={env['TXN_VAR_DIR']} "
                f"KAFKA_PORT={env['KAFKA_PORT']} FERRETDB_PORT={env['FERRETDB_PORT']} "
                f"python scripts/services.py stop)")
        else:
            services(env, "stop")


if __name__ == "__main__":
    sys.exit(main())
