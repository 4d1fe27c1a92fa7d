"""What a `dbt build` of the marts costs over the sink's aggregate collections (needs the
local FerretDB; uses a database of its own, dropped afterwards unless --keep).

Seeds users_by_day, merchant_days, volume_hours, currency_days and anomalies for a history of
--txns transactions (default 10M: 10,000 users x 60 days, 500 merchants, 24 h x 60 days),
written directly in the sink's packed layout (agents/sink/aggregates.py), with consistent totals
(every aggregate counts the same transactions per day; converted cents follow
app/fx_rates.csv), so every dbt test passes.
Then times, each a real `dbt build` subprocess in dbt/:

1. the first build (`--full-refresh`, nothing kept: every document read, marts created);
2. an incremental build after one new minute of data at the history's average rate (today's
   merchant_days, volume_hours and currency_days documents and the users of that minute
   touched, as the sink does), anomalies read less than 600 s ago (not due);
3. an incremental build with nothing new;
4. the same as 2 when anomalies are due (DBT_SCAN_INTERVAL_SECONDS=0: the collection
   FerretDB can only scan is read; by default that happens every 600 s);
5. an incremental build after a busy minute (--busy-txns, default 60,000: every user touched,
   so every user's totals change), scans due;
6. a full refresh on the existing marts (every document read again, the marts synced);

and, outside dbt, what the plugin's reads cost per collection (all documents vs the window).

    .venv/bin/python bench/dbt_incremental.py [--txns 10000000 --users 10000 --days 60]
        [--merchants 500] [--results bench/results/2026-11-30-dbt-incremental.md]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pymongo

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agents.sink.aggregates import (  # noqa: E402
    CURRENCY_DAYS,
    MERCHANT_DAYS,
    USERS_BY_DAY,
    VOLUME_HOURS,
    Packed,
    pack,
    user_group,
    users_by_day_id,
)
from app.contract import CATEGORIES  # noqa: E402
from app.mongo_dbt import read_window  # noqa: E402
from app.rates import USD_PER_UNIT  # noqa: E402

DBT = str(Path(sys.executable).parent / "dbt")
CURRENCIES = ("USD", "EUR", "GBP", "JPY", "INR", "CAD", "AUD", "CHF")
PARTITIONS = 3
CHUNK = 500
#: The aggregate collections seeded: those dbt reads, and volume_hours (for the database's size).
SEEDED = (USERS_BY_DAY, MERCHANT_DAYS, VOLUME_HOURS, CURRENCY_DAYS)


def split(total: int, k: int, rng: random.Random, at_least: int = 0) -> list[int]:
    """``total`` cut into ``k`` random non-negative integers (each >= at_least) summing to it."""
    base = [at_least] * k
    rest = total - at_least * k
    if rest <= 0:
        return base if rest == 0 else split(total, k, rng, 0)
    weights = [rng.random() for _ in range(k)]
    scale = sum(weights)
    shares = [int(rest * w / scale) for w in weights]
    for i in rng.sample(range(k), rest - sum(shares)):
        shares[i] += 1
    return [b + s for b, s in zip(base, shares, strict=True)]


def proportional(total: int, weights: list[int]) -> list[int]:
    """``total`` cut in proportion to ``weights`` (integers summing to it)."""
    scale = sum(weights) or 1
    shares = [total * w // scale for w in weights]
    shares[0] += total - sum(shares)
    return shares


def ratio(currency: str) -> float:
    return float(USD_PER_UNIT[currency] / USD_PER_UNIT["USD"])


class History:
    """The aggregate documents of a synthetic history, in memory, packed as the sink writes
    them (agents/sink/aggregates.py: one ``[offset, {key: [a, b, c(, label)]}]`` text per
    partition), with consistent per-day totals."""

    def __init__(self, txns: int, users: int, days: int, merchants: int,
                 anomaly_rate: float, seed: int = 1) -> None:
        self.rng = random.Random(seed)
        self.today = datetime.now(UTC).date()
        self.days = [self.today - timedelta(days=days - 1 - i) for i in range(days)]
        self.users = [f"user-{i:06d}" for i in range(users)]
        self.merchants = [(f"m{i:04d}", CATEGORIES[i % len(CATEGORIES)]) for i in range(merchants)]
        self.anomaly_rate = anomaly_rate
        self.per_user_day = txns / (users * days)
        #: collection -> _id -> (plain fields, partition -> its numbers)
        self.docs: dict[str, dict[str, tuple[dict[str, Any], dict[int, Packed]]]] = {
            name: {} for name in SEEDED}
        self.anomalies: list[dict[str, Any]] = []
        self.offset = 0
        self.txns = 0
        for day in self.days:
            self.add_day(day)

    def put(self, name: str, _id: str, fields: dict[str, Any], partition: int, key: str,
            numbers: tuple[int, int, int], label: str | None = None) -> None:
        """Add ``numbers`` to ``key`` of a partition of a document, as one more transaction
        batch of that partition (its offset moves on)."""
        doc = self.docs[name].setdefault(_id, ({"reporting_currency": "USD", **fields}, {}))
        part = doc[1].setdefault(partition, Packed())
        entry = part.places.setdefault(key, [0, 0, 0] if label is None else [0, 0, 0, label])
        for i in range(3):
            entry[i] += numbers[i]
        self.offset += 1
        part.offset = self.offset

    def add(self, day: date, counts: dict[str, tuple[int, int, int]], hour: int | None = None,
            minute: int | None = None) -> None:
        """Count ``counts`` ({user: (txns, cents, anomalies)}) into every aggregate of
        ``day`` (spread over the merchants, hours, minutes and currencies; or all into
        ``hour``:``minute``)."""
        rng, key = self.rng, day.isoformat()
        total = [sum(v[i] for v in counts.values()) for i in range(3)]
        self.txns += total[0]
        for user, numbers in counts.items():  # a user's transactions: one partition
            group = user_group(user)
            self.put(USERS_BY_DAY, users_by_day_id(key, group), {"day": key},
                     group % PARTITIONS, user, numbers)
        # merchants x partitions
        k = min(len(self.merchants), max(1, total[0]))
        chosen = self.merchants if k == len(self.merchants) else rng.sample(self.merchants, k)
        parts = range(PARTITIONS) if total[0] >= k * PARTITIONS else [None]
        slots = [(m, rng.randrange(PARTITIONS) if p is None else p) for m in chosen
                 for p in parts]
        n_split = split(total[0], len(slots), rng, at_least=1)
        c_split = proportional(total[1], n_split)
        a_split = [0] * len(slots)
        for i in rng.choices(range(len(slots)), weights=n_split, k=total[2]):
            a_split[i] += 1
        ts_day = datetime.combine(day, datetime.min.time())
        for (m, p), n, cents, flagged in zip(slots, n_split, c_split, a_split, strict=True):
            if not n:
                continue
            self.put(MERCHANT_DAYS, key, {}, p, m[0], (n, cents, flagged), m[1])
            for _ in range(flagged):
                at = ts_day + timedelta(seconds=rng.randrange(86_400) if hour is None else
                                        hour * 3600 + (minute or 0) * 60 + rng.randrange(60))
                self.anomalies.append({
                    "_id": f"{rng.getrandbits(256):064x}", "user_id": rng.choice(self.users),
                    "merchant_id": m[0], "merchant_category": m[1],
                    "amount_reporting": round(rng.uniform(500, 5000), 2),
                    "reporting_currency": "USD", "amount": 1.0, "currency": "USD",
                    "timestamp": at, "z_score": round(rng.uniform(3.01, 9), 4),
                    "mean_prev": 100.0, "std_prev": 20.0, "n_prev": 9, "detected_at": at})
        # hours x minutes x partitions
        hours = list(range(24)) if hour is None else [hour]
        for h, n, cents, flagged in zip(hours, split(total[0], len(hours), rng),
                                        split(total[1], len(hours), rng),
                                        split(total[2], len(hours), rng), strict=True):
            minutes = list(range(60)) if minute is None else [minute]
            for mm, n2, c2, a2 in zip(minutes, split(n, len(minutes), rng),
                                      split(cents, len(minutes), rng),
                                      split(flagged, len(minutes), rng), strict=True):
                self.put(VOLUME_HOURS, f"{key}T{h:02d}", {}, rng.randrange(PARTITIONS),
                         f"{mm:02d}", (n2, c2, a2))
        # currencies x partitions: converted cents follow the rates
        n_split = split(total[0], len(CURRENCIES), rng, at_least=1)
        for currency, n, cents in zip(CURRENCIES, n_split, proportional(total[1], n_split),
                                      strict=True):
            if n:
                self.put(CURRENCY_DAYS, key, {}, rng.randrange(PARTITIONS), currency,
                         (n, round(cents / ratio(currency)), cents))

    def user_counts(self, users: list[str], txns: int) -> dict[str, tuple[int, int, int]]:
        rng = self.rng
        per_user = split(txns, len(users), rng, at_least=1)
        out = {}
        for user, n in zip(users, per_user, strict=True):
            if n:
                flagged = sum(rng.random() < self.anomaly_rate for _ in range(n)) if n < 50 \
                    else round(n * self.anomaly_rate)
                out[user] = (n, n * rng.randrange(1_000, 20_000), flagged)
        return out

    def add_day(self, day: date) -> None:
        rng = self.rng
        counts: dict[str, tuple[int, int, int]] = {}
        for user in self.users:
            n = max(0, round(rng.gauss(self.per_user_day, self.per_user_day / 3)))
            if n:
                flagged = 1 if rng.random() < n * self.anomaly_rate else 0
                counts[user] = (n, n * rng.randrange(1_000, 20_000), flagged)
        self.add(day, counts)

    def minute(self, txns: int) -> dict[str, set[str]]:
        """One new minute of ``txns`` transactions today (now's hour and minute); returns the
        _ids it touched per collection."""
        now = datetime.now(UTC)
        users = self.rng.sample(self.users, min(txns, len(self.users)))
        before = len(self.anomalies)
        counts = self.user_counts(users, txns)
        self.add(self.today, counts, hour=now.hour, minute=now.minute)
        day = self.today.isoformat()
        return {USERS_BY_DAY: {users_by_day_id(day, user_group(u)) for u in counts},
                MERCHANT_DAYS: {day}, VOLUME_HOURS: {f"{day}T{now.hour:02d}"},
                CURRENCY_DAYS: {day},
                "anomalies": {a["_id"] for a in self.anomalies[before:]}}

    def document(self, name: str, _id: str) -> dict[str, Any]:
        """A stored document: its plain fields and a packed text per partition."""
        fields, parts = self.docs[name][_id]
        return {"_id": _id, **fields,
                **{f"p{n}": pack(part) for n, part in sorted(parts.items())}}

    def txn_count(self) -> int:
        return self.txns


def write_all(db: Any, history: History) -> dict[str, int]:
    sizes = {}
    for name, docs in history.docs.items():
        db.drop_collection(name)
        values = [history.document(name, key) for key in docs]
        for start in range(0, len(values), CHUNK):
            db[name].insert_many(values[start:start + CHUNK], ordered=False)
        sizes[name] = len(values)
    db.drop_collection("anomalies")
    for start in range(0, len(history.anomalies), CHUNK * 4):
        db.anomalies.insert_many(history.anomalies[start:start + CHUNK * 4], ordered=False)
    sizes["anomalies"] = len(history.anomalies)
    return sizes


def write_touched(db: Any, history: History, touched: dict[str, set[str]]) -> int:
    """Write the documents a minute touched as the sink does (an upsert per document)."""
    n = 0
    for name in history.docs:
        ops = [pymongo.ReplaceOne({"_id": key}, history.document(name, key), upsert=True)
               for key in sorted(touched[name])]
        for start in range(0, len(ops), 50):
            db[name].bulk_write(ops[start:start + 50], ordered=False)
        n += len(ops)
    new = [a for a in history.anomalies if a["_id"] in touched["anomalies"]]
    if new:
        db.anomalies.insert_many(new, ordered=False)
    return n + len(new)


def dbt_build(env: dict[str, str], *args: str) -> tuple[float, dict[str, int]]:
    start = time.perf_counter()
    proc = subprocess.run([DBT, "build", *args, "--profiles-dir", "."], cwd=ROOT / "dbt",
                          env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"dbt build {' '.join(args)} failed:\n{proc.stdout[-4000:]}{proc.stderr[-2000:]}")
    results = json.loads((Path(env["DBT_TARGET_PATH"]) / "run_results.json").read_text())
    statuses: dict[str, int] = defaultdict(int)
    for r in results["results"]:
        statuses[r["status"]] += 1
    model_seconds = {r["unique_id"].split(".")[-1]: round(r["execution_time"], 1)
                     for r in results["results"] if r["unique_id"].startswith("model.")}
    return seconds, {**statuses, "models": model_seconds}  # type: ignore[dict-item]


def source_configs() -> dict[str, dict[str, Any]]:
    import yaml
    sources = yaml.safe_load((ROOT / "dbt/models/staging/__sources.yml").read_text())
    return {t["name"]: t["config"] for t in sources["sources"][0]["tables"]}


def read_costs(db: Any, lookback: int) -> dict[str, dict[str, float]]:
    """Seconds and documents of the plugin's reads, everything vs the incremental window."""
    out = {}
    today = datetime.now(UTC).date()
    for name, config in source_configs().items():
        start = time.perf_counter()
        table, docs = read_window(db[name], config, None, today)
        full = time.perf_counter() - start
        start = time.perf_counter()
        wtable, wdocs = read_window(db[name], config, today - timedelta(days=lookback),
                                    today + timedelta(days=1))
        window = time.perf_counter() - start
        out[name] = {"full_s": round(full, 2), "full_docs": docs, "rows": table.num_rows,
                     "window_s": round(window, 2), "window_docs": wdocs,
                     "window_rows": wtable.num_rows}
    return out


def load_average() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--txns", type=int, default=10_000_000)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--merchants", type=int, default=500)
    parser.add_argument("--anomaly-rate", type=float, default=0.002)
    parser.add_argument("--busy-txns", type=int, default=60_000,
                        help="transactions of the busy minute (0 = skip that step)")
    parser.add_argument("--mongo-url", default=os.environ.get("MONGO_URL",
                                                              "mongodb://localhost:27017"))
    parser.add_argument("--db", default="bench_dbt_incremental")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument("--results", type=Path,
                        default=ROOT / "bench/results/2026-11-30-dbt-incremental.md")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("stopped"))  # clean up in `finally`
    lookback = int(os.environ.get("LATE_EVENT_GRACE_DAYS", "7"))
    client: pymongo.MongoClient[Any] = pymongo.MongoClient(args.mongo_url)
    db = client[args.db]
    client.drop_database(args.db)
    work = Path(tempfile.mkdtemp(prefix="dbt_incremental_"))
    env = {**os.environ, "MONGO_URL": args.mongo_url, "MONGO_DB": args.db,
           "DBT_TARGET_PATH": str(work / "target"), "DBT_LOG_PATH": str(work / "logs"),
           "DBT_DUCKDB_PATH": str(work / "target" / "txn.duckdb"),
           "DBT_EXTERNAL_ROOT": str(work / "target"), "DBT_SEND_ANONYMOUS_USAGE_STATS": "False"}
    report: dict[str, Any] = {"load_average_start": load_average(), "lookback_days": lookback}
    try:
        start = time.perf_counter()
        history = History(args.txns, args.users, args.days, args.merchants, args.anomaly_rate)
        report["generate_s"] = round(time.perf_counter() - start, 1)
        report["history_txns"] = history.txn_count()
        start = time.perf_counter()
        report["documents"] = write_all(db, history)
        report["seed_s"] = round(time.perf_counter() - start, 1)
        print(f"seeded {report['history_txns']:,} transactions as {report['documents']} "
              f"in {report['seed_s']} s", flush=True)

        steps: list[tuple[str, float, dict[str, int], int]] = []

        def step(label: str, *dbt_args: str, touched: int = 0, scan: bool = False) -> None:
            seconds, statuses = dbt_build(
                {**env, "DBT_SCAN_INTERVAL_SECONDS": "0" if scan else "600"}, *dbt_args)
            statuses["load"] = load_average()  # type: ignore[assignment]
            steps.append((label, seconds, statuses, touched))
            print(f"{label}: {seconds:.1f} s  {statuses}", flush=True)

        step("first build (--full-refresh, nothing kept)", "--full-refresh")
        minute_txns = max(1, round(args.txns / (args.days * 1440)))
        n = write_touched(db, history, history.minute(minute_txns))
        step(f"incremental, one new minute ({minute_txns} txns); anomalies "
             "not due (read < 600 s ago)", touched=n)
        step("incremental, nothing new; scans not due")
        n = write_touched(db, history, history.minute(minute_txns))
        step(f"incremental, one new minute ({minute_txns} txns); anomalies "
             "due (scanned)", touched=n, scan=True)
        if args.busy_txns:
            n = write_touched(db, history, history.minute(args.busy_txns))
            step(f"incremental, a busy minute ({args.busy_txns:,} txns, every user); scans due",
                 touched=n, scan=True)
        step("full refresh (marts exist)", "--full-refresh", scan=True)
        report["reads"] = read_costs(db, lookback)
        for name, cost in report["reads"].items():
            print(f"read {name}: all {cost['full_docs']} docs {cost['full_s']} s; window "
                  f"{cost['window_docs']} docs {cost['window_s']} s", flush=True)
        report["steps"] = [{"step": label, "seconds": round(s, 1), "statuses": st,
                            "documents_touched": t} for label, s, st, t in steps]
        report["load_average_end"] = load_average()
        write_results(args, report)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if not args.keep:
            client.drop_database(args.db)
    return 0


def write_results(args: argparse.Namespace, report: dict[str, Any]) -> None:
    lines = [
        "# dbt incremental builds over the aggregate collections",
        "",
        f"`.venv/bin/python bench/dbt_incremental.py --txns {args.txns} --users {args.users} "
        f"--days {args.days} --merchants {args.merchants} --anomaly-rate {args.anomaly_rate} "
        f"--busy-txns {args.busy_txns}` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
        f"{os.cpu_count()} CPUs, FerretDB 1.24 (SQLite), load average "
        f"{report['load_average_start']} at the start, {report['load_average_end']} at the end; "
        f"lookback {report['lookback_days']} days.",
        "",
        f"History: {report['history_txns']:,} transactions as "
        + ", ".join(f"{n:,} {c}" for c, n in report["documents"].items())
        + f" documents (seeded in {report['seed_s']} s).",
        "",
        "| step | `dbt build` wall time | documents the sink touched before | "
        "results | load average after | model seconds |",
        "|---|---|---|---|---|---|",
    ]
    for s in report["steps"]:
        statuses = {k: v for k, v in s["statuses"].items() if k not in ("models", "load")}
        lines.append(f"| {s['step']} | **{s['seconds']} s** | {s['documents_touched']} | "
                     f"{statuses} | {s['statuses'].get('load', '')} | "
                     f"{s['statuses']['models']} |")
    lines += ["", "The plugin's reads outside dbt (every document vs the incremental window of "
              f"{report['lookback_days']} days back to today + 1):", "",
              "| collection | all: documents, rows, seconds | window: documents, rows, seconds |",
              "|---|---|---|"]
    for name, c in report["reads"].items():
        lines.append(f"| {name} | {c['full_docs']:,}, {c['rows']:,}, {c['full_s']} s | "
                     f"{c['window_docs']:,}, {c['window_rows']:,}, {c['window_s']} s |")
    lines.append("")
    args.results.parent.mkdir(parents=True, exist_ok=True)
    existing = args.results.read_text() if args.results.exists() else ""
    args.results.write_text(("\n".join(lines) + "\n") + ("\n" + existing if existing else ""))
    (args.results.with_suffix(".json")).write_text(json.dumps(report, indent=2, default=str))
    print(f"wrote {args.results}")


if __name__ == "__main__":
    raise SystemExit(main())
