"""The API's load test: 1M transactions in a private FerretDB, the API under uvicorn, Locust
headless at 200 requests/s; results printed and written into docs/api.md.

    .venv/bin/python bench/api_load.py                      # 1M transactions, 200 req/s, 60 s
    .venv/bin/python bench/api_load.py --transactions 200000 --duration 30 --no-docs

Steps: start a private FerretDB (``.cache/bin/ferretdb-local``, data in var/bench/, deleted at
the end unless --keep; never the shared one) or use --mongo-url; seed it (bench/seed_mongo.py);
time each query once uncached (the cold cost, straight through pymongo); start
``uvicorn views.api:app``; warm it (one request per endpoint variant); run
``locust -f bench/locustfile.py --headless`` with --users users at one request/s each; report
per-endpoint count, failures, p50/p95/p99/max and the achieved rate; stop everything.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pymongo

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.seed_mongo import seed  # noqa: E402
from views import queries, user_trends  # noqa: E402

BIN = Path(sys.executable).parent
DOC = ROOT / "docs" / "api.md"
START, END = "<!-- load-results:start -->", "<!-- load-results:end -->"


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    raise SystemExit(f"{url} did not answer in {timeout}s")


def start(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=open(log, "ab"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def stop(proc: subprocess.Popen | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def cold_costs(db: Any, trends_samples: int, repeat: int = 1) -> dict[str, Any]:
    """Milliseconds of each query without the API's cache (pymongo straight): one number, or
    p50/p99 over ``repeat`` runs."""
    now = datetime.now(UTC)
    out: dict[str, Any] = {}

    def timed(name: str, fn: Any) -> None:
        times = []
        for _ in range(repeat):
            t = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t) * 1000)
        times.sort()
        if repeat == 1:
            out[name] = round(times[0], 1)
        else:
            out[name] = {"p50": round(times[len(times) // 2], 1),
                         "p99": round(times[min(len(times) - 1, int(len(times) * 0.99))], 1)}
        print(f"[cold] {name}: {out[name]} ms", flush=True)

    timed("summary", lambda: queries.summary(db, now))
    timed("volume 60", lambda: queries.volume(db, 60, now))
    timed("anomalies page 1", lambda: queries.anomalies(db, 50))
    for window in queries.WINDOWS:
        timed(f"merchants/top {window}", lambda w=window: queries.merchant_totals(db, w, now))
    for i in range(trends_samples):
        timed(f"trends user_{i * 997} (30 days)",
              lambda i=i: user_trends.trends(db, f"user_{i * 997}", 30, now))
    return out


def run_locust(host: str, users: int, duration: int, prefix: Path, trends_weight: int) -> None:
    env = {**os.environ, "TRENDS_WEIGHT": str(trends_weight)}
    cmd = [str(BIN / "locust"), "-f", str(ROOT / "bench" / "locustfile.py"), "--headless",
           "--host", host, "-u", str(users), "-r", str(max(1, users // 5)), "-t", f"{duration}s",
           "--csv", str(prefix), "--reset-stats", "--only-summary", "--loglevel", "WARNING"]
    print("[load] " + " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=ROOT, env=env, check=False)


def read_stats(prefix: Path) -> list[dict[str, Any]]:
    rows = []
    with open(f"{prefix}_stats.csv") as f:
        for r in csv.DictReader(f):
            rows.append({"name": r["Name"], "requests": int(r["Request Count"]),
                         "failures": int(r["Failure Count"]), "rps": float(r["Requests/s"]),
                         "p50": r["50%"], "p95": r["95%"], "p99": r["99%"],
                         "max": round(float(r["Max Response Time"]), 1)})
    return rows


def scrape(host: str) -> dict[str, dict[float, float]]:
    """route -> {bucket upper bound (s): cumulative count} of api_request_duration_seconds."""
    text = urllib.request.urlopen(host + "/metrics", timeout=30).read().decode()
    out: dict[str, dict[float, float]] = {}
    for line in text.splitlines():
        if line.startswith("api_request_duration_seconds_bucket{"):
            labels, value = line[len("api_request_duration_seconds_bucket{"):].split("} ")
            parts = dict(p.split("=", 1) for p in labels.split(","))
            le = parts["le"].strip('"')
            out.setdefault(parts["route"].strip('"'), {})[float(le)] = float(value)
    return out


def server_side(before: dict, after: dict) -> list[dict[str, Any]]:
    """Per route: requests during the load and the bucket bounds holding p50 / p99 (ms), from
    the API's own histogram (time inside the app: no network, no client)."""
    rows = []
    for route, buckets in sorted(after.items()):
        counts = {le: n - before.get(route, {}).get(le, 0.0) for le, n in buckets.items()}
        total = counts.get(float("inf"), 0.0)
        if total <= 0:
            continue
        def bound(q: float, counts: dict = counts, total: float = total) -> str:
            le = min(le for le, n in counts.items() if n >= q * total)
            return "> 15000" if le == float("inf") else f"<= {le * 1000:g}"
        rows.append({"route": route, "requests": int(total), "p50": bound(0.5),
                     "p99": bound(0.99)})
    return rows


def markdown(result: dict[str, Any]) -> str:
    aggregates = ", ".join(f"{result['seed'].get(name, 0):,} {name}" for name in (
        "users_by_day", "merchant_days", "merchant_hours", "volume_hours", "currency_hours"))
    lines = [f"Measured {result['when']} on {result['machine']}: {result['seed']['transactions']:,}"
             f" transactions ({result['seed']['anomalies']:,} anomalies; {aggregates} "
             f"documents; over {result['seed']['hours']} h) in a private FerretDB 1.24 "
             f"(SQLite); one uvicorn process; Locust {result['users']} users x 1 request/s "
             f"for {result['duration']} s "
             "(stats reset after ramp-up).", "",
             "| endpoint | requests | failures | req/s | p50 ms | p95 ms | p99 ms | max ms |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result["locust"]:
        lines.append(f"| `{r['name']}` | {r['requests']:,} | {r['failures']} | {r['rps']:.1f} | "
                     f"{r['p50']} | {r['p95']} | {r['p99']} | {r['max']} |")
    lines += ["", "The same requests inside the API (its own `api_request_duration_seconds` "
              "histogram, scraped before and after the load: no network, no client; bucket "
              "bounds):", "", "| route | requests | p50 ms | p99 ms |", "|---|---:|---:|---:|"]
    lines += [f"| `{r['route']}` | {r['requests']:,} | {r['p50']} | {r['p99']} |"
              for r in result["server"]]
    lines += ["", f"Uncached cost of each query (ms, pymongo straight to this FerretDB, "
              f"{result.get('repeat', 1)} runs each):", "",
              "| query | p50 ms | p99 ms |", "|---|---:|---:|"]
    for k, v in result["cold_ms"].items():
        p50, p99 = (v["p50"], v["p99"]) if isinstance(v, dict) else (v, v)
        lines.append(f"| {k} | {p50:,} | {p99:,} |")
    lines += ["", f"Re-measure: `{result['command']}`"]
    return "\n".join(lines)


def write_doc(text: str) -> None:
    doc = DOC.read_text()
    if START in doc and END in doc:
        head, rest = doc.split(START, 1)
        DOC.write_text(head + START + "\n" + text + "\n" + END + rest.split(END, 1)[1])
        print(f"[load] results written into {DOC.relative_to(ROOT)}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--transactions", type=int, default=1_000_000)
    p.add_argument("--hours", type=float, default=2.0)
    p.add_argument("--anomaly-rate", type=float, default=0.003,
                   help="share of the seeded transactions that are anomalies")
    p.add_argument("--users", type=int, default=200, help="Locust users, 1 request/s each")
    p.add_argument("--duration", type=int, default=60, help="seconds of load")
    p.add_argument("--trends-weight", type=int, default=0, help="share of user trends requests")
    p.add_argument("--trends-samples", type=int, default=2, help="cold trends queries to time")
    p.add_argument("--repeat", type=int, default=50, help="uncached runs of each query")
    p.add_argument("--mongo-url", help="use this MongoDB instead of a private FerretDB")
    p.add_argument("--db", default="bench_api")
    p.add_argument("--keep", action="store_true", help="keep the private FerretDB's data")
    p.add_argument("--no-seed", action="store_true", help="use the data already in --db")
    p.add_argument("--no-docs", action="store_true", help="do not write docs/api.md")
    args = p.parse_args()

    work = ROOT / "var" / "bench" / f"api-{os.getpid()}"
    work.mkdir(parents=True, exist_ok=True)
    ferret = api = None
    try:
        url = args.mongo_url
        if url is None:
            port = free_port()
            (work / "ferretdb").mkdir()
            ferret = start([str(ROOT / ".cache" / "bin" / "ferretdb-local"),
                            f"--listen-addr=127.0.0.1:{port}",
                            f"--data-dir={work / 'ferretdb'}"], work / "ferretdb.log")
            url = f"mongodb://127.0.0.1:{port}"
        client: pymongo.MongoClient = pymongo.MongoClient(url, tz_aware=True,
                                                          serverSelectionTimeoutMS=30_000)
        client.admin.command("ping")
        db = client[args.db]
        if args.no_seed:  # reuse a database seeded earlier (--mongo-url, --db)
            seeded = {name: db.command("collStats", name).get("count", 0) for name in (
                "transactions", "anomalies", "users_by_day", "merchant_days", "merchant_hours",
                "volume_hours", "currency_hours", "dlq")}
            seeded["hours"] = args.hours
        else:
            seeded = seed(db, args.transactions, args.hours, anomaly_rate=args.anomaly_rate)
        cold = cold_costs(db, args.trends_samples, args.repeat)

        api_port = free_port()
        # Locust is one client: the per-client rate limit would answer most requests with 429
        env = {**os.environ, "MONGO_URL": url, "MONGO_DB": args.db, "API_KEY": "",
               "API_RATE_LIMIT": "0"}
        api = start([sys.executable, "-m", "uvicorn", "views.api:app", "--host", "127.0.0.1",
                     "--port", str(api_port), "--no-access-log"], work / "api.log", env)
        host = f"http://127.0.0.1:{api_port}"
        wait_http(f"{host}/health")
        for path in ["/summary", "/volume?minutes=60", "/anomalies?limit=50"] + [
                f"/merchants/top?window={w}" for w in queries.WINDOWS]:
            t = time.perf_counter()
            try:  # warm the cache: the first request of each key pays the query
                urllib.request.urlopen(host + path, timeout=300).read()
                print(f"[warm] {path}: {time.perf_counter() - t:.1f} s", flush=True)
            except OSError as exc:
                print(f"[warm] {path}: {exc}", flush=True)
        before = scrape(host)
        run_locust(host, args.users, args.duration, work / "locust", args.trends_weight)
        after = scrape(host)
        result = {
            "when": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": f"{os.cpu_count()} cores, {platform.machine()}",
            "seed": seeded, "users": args.users, "duration": args.duration,
            "cold_ms": cold, "repeat": args.repeat, "locust": read_stats(work / "locust"),
            "server": server_side(before, after),
            "command": "python bench/api_load.py " + " ".join(sys.argv[1:]),
        }
        out = ROOT / "bench" / "results"
        out.mkdir(exist_ok=True)
        (out / "api_load.json").write_text(json.dumps(result, indent=2, default=str))
        text = markdown(result)
        print(text)
        if not args.no_docs:
            write_doc(text)
    finally:
        stop(api)
        stop(ferret)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
