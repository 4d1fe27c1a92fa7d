"""Benchmark of the dbt marts on the real MongoDB/FerretDB (MONGO_URL): prints the numbers and
writes them to dbt/bench-results.json. Uses a throw-away database, dropped at the end.

    .venv/bin/python dbt/bench.py                      # 50,000 transactions, 5,000 users
    .venv/bin/python dbt/bench.py --txns 200000 --users 10000

Steps: seed transactions (and their anomalies); time the plugin's load of `transactions` into
Arrow; time `dbt build` creating the marts; add one transaction per user (so every row of
top_spenders changes) and time `dbt build` again (FerretDB: the in-place sync); then a third
`dbt build` on unchanged data (nothing to write).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pymongo
import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from app.mongo_dbt import load_collection  # noqa: E402
from app.settings import settings  # noqa: E402
from tests.integration.test_dbt import anomaly, transaction  # noqa: E402

DBT = str(Path(sys.executable).parent / "dbt")


def dbt_build(env: dict[str, str]) -> float:
    started = time.monotonic()
    proc = subprocess.run([DBT, "build", "--profiles-dir", "."], cwd=HERE, env=env,
                          capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(proc.stdout[-3000:])
    return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--txns", type=int, default=50_000)
    parser.add_argument("--users", type=int, default=5_000)
    parser.add_argument("--merchants", type=int, default=500)
    args = parser.parse_args()
    client: pymongo.MongoClient = pymongo.MongoClient(settings.mongo_url)
    db = client[f"bench_dbt_{uuid.uuid4().hex[:8]}"]
    rng = random.Random(1)
    day0 = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)

    def txns(count: int, start: int, users: list[str] | None = None) -> list[dict]:
        out = []
        for i in range(start, start + count):
            ts = day0 - timedelta(milliseconds=rng.randrange(3 * 86_400_000))
            user = users[i - start] if users else f"user-{rng.randrange(args.users)}"
            out.append(transaction(rng, i, user, f"m{rng.randrange(args.merchants)}",
                                   ts.replace(microsecond=ts.microsecond // 1000 * 1000)))
        return out

    fields = yaml.safe_load((HERE / "models/staging/__sources.yml").read_text())
    fields = fields["sources"][0]["tables"][0]["config"]["fields"]
    result: dict[str, object] = {"txns": args.txns, "users": args.users,
                                 "merchants": args.merchants, "server": settings.mongo_url,
                                 "machine": f"{platform.machine()}, {os.cpu_count()} cores"}
    try:
        started = time.monotonic()
        for start in range(0, args.txns, 10_000):
            batch = txns(min(10_000, args.txns - start), start)
            db.transactions.insert_many(batch)
            anomalies = [anomaly(t) for t in batch if t["is_anomaly"]]
            db.anomalies.insert_many(anomalies)
        result["seed_s"] = round(time.monotonic() - started, 1)

        started = time.monotonic()
        table = load_collection(db.transactions, fields)
        elapsed = time.monotonic() - started
        assert table.num_rows == args.txns
        result["load_s"] = round(elapsed, 2)
        result["load_docs_per_s"] = round(args.txns / elapsed)

        with tempfile.TemporaryDirectory() as tmp:
            env = {**os.environ, "MONGO_DB": db.name, "DBT_TARGET_PATH": tmp,
                   "DBT_LOG_PATH": f"{tmp}/logs", "DBT_DUCKDB_PATH": f"{tmp}/bench.duckdb",
                   "DBT_EXTERNAL_ROOT": tmp, "DBT_SEND_ANONYMOUS_USAGE_STATS": "False"}
            result["build_create_s"] = round(dbt_build(env), 1)
            result["mart_rows"] = {m: db[m].count_documents({}) for m in
                                   ("daily_merchant_revenue", "top_spenders", "anomaly_summary")}
            users = sorted({d["user_id"] for d in db.top_spenders.find({}, {"user_id": 1})})
            db.transactions.insert_many(txns(len(users), 10_000_000, users))
            result["build_sync_all_users_changed_s"] = round(dbt_build(env), 1)
            result["build_unchanged_s"] = round(dbt_build(env), 1)
    finally:
        client.drop_database(db.name)
    print(json.dumps(result, indent=2))
    (HERE / "bench-results.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
