"""dbt end to end on the real FerretDB: seed known transactions and anomalies (in several
currencies, converted with app/fx_rates.csv as the stream does), run `dbt build` (a real
subprocess), and check that the marts in MongoDB equal a direct recomputation in Python (money
in the reporting currency), that a second run changes nothing, and that a reader polling the
marts during a run never sees a missing or partial collection; a stored amount_reporting that
does not match the rates fails the build.

dbt starts slowly (~5 s), so one test makes three runs and checks everything on them.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agents.sink.documents import anomaly_doc, transaction_doc
from app.contract import ANOMALY_FIELDS, CATEGORIES, PAYMENT_METHODS, STATUSES
from app.mongo_dbt import TMP_MARK
from app.rates import USD_PER_UNIT, to_reporting
from tests.procs import ROOT, wait_for

pytestmark = pytest.mark.integration

DBT = str(Path(sys.executable).parent / "dbt")
MARTS = ("daily_merchant_revenue", "top_spenders", "anomaly_summary", "daily_currency_revenue")
KEYS = {"daily_merchant_revenue": ("day", "merchant_id"), "top_spenders": ("user_id",),
        "anomaly_summary": ("day", "merchant_category"),
        "daily_currency_revenue": ("day", "currency")}
#: The seed's currencies (rows of app/fx_rates.csv) and the reporting currency (the default).
CURRENCIES = ("EUR", "EUR", "USD", "JPY", "INR", "GBP")
REPORTING = "USD"
DAY0 = datetime(2026, 11, 20, tzinfo=UTC)


# --- seed data: enriched messages made into documents by the sink's own functions -----------
def transaction(rng: random.Random, i: int, user: str, merchant: str, ts: datetime) -> dict:
    z = rng.choice([None, round(rng.uniform(-2.5, 2.9), 4), round(rng.uniform(3.01, 9), 4)])
    amount, currency = round(rng.uniform(0.5, 2500), 2), rng.choice(CURRENCIES)
    return transaction_doc({
        "txn_id": f"{i:064x}", "user_id": user, "amount": amount, "currency": currency,
        "amount_reporting": to_reporting(amount, currency), "reporting_currency": REPORTING,
        "timestamp": ts.isoformat(), "merchant_id": merchant,
        "merchant_category": CATEGORIES[int(merchant[1:]) % len(CATEGORIES)],
        "payment_method": rng.choice(PAYMENT_METHODS), "status": rng.choice(STATUSES),
        "location": {"city": "Lyon", "country": "FR"},
        "user_txn_count": 1, "user_running_mean": 1.0, "user_running_std": 0.0,
        "z_score": z, "is_anomaly": z is not None and z > 3.0, "user_daily_spend": 1.0,
        "processed_at": (ts + timedelta(milliseconds=40)).isoformat(),
    })


def anomaly(txn: dict) -> dict:
    value = {**txn, "timestamp": txn["timestamp"].isoformat(), "mean_prev": 100.0,
             "std_prev": 20.0, "n_prev": 9, "detected_at": txn["processed_at"].isoformat()}
    return anomaly_doc({k: value[k] for k in ANOMALY_FIELDS})


def seed(n: int, start: int = 0, seed_value: int = 8, day0: datetime = DAY0,
         user: str | None = None) -> list[dict]:
    rng = random.Random(seed_value)
    txns = []
    for i in range(start, start + n):
        ts = day0 + timedelta(milliseconds=rng.randrange(3 * 86_400_000))
        txns.append(transaction(rng, i, user or f"user-{rng.randint(1, 40)}",
                                f"m{rng.randint(1, 9)}", ts))
    return txns


# --- the marts, recomputed directly in Python ------------------------------------------------
def recompute(txns: list[dict], anomalies: list[dict]) -> dict[str, dict[str, dict]]:
    by_day_merchant: dict[tuple, list[dict]] = defaultdict(list)
    by_user: dict[str, list[dict]] = defaultdict(list)
    volume: dict[tuple, int] = defaultdict(int)
    for t in txns:
        day = t["timestamp"].strftime("%Y-%m-%d")
        by_day_merchant[day, t["merchant_id"]].append(t)
        by_user[t["user_id"]].append(t)
        volume[day, t["merchant_category"]] += 1
    flagged: dict[tuple, list[float]] = defaultdict(list)
    flagged_amount: dict[tuple, float] = defaultdict(float)
    for a in anomalies:
        key = a["timestamp"].strftime("%Y-%m-%d"), a["merchant_category"]
        flagged[key].append(a["z_score"])
        flagged_amount[key] += a["amount_reporting"]
    by_currency: dict[tuple, list[dict]] = defaultdict(list)
    for t in txns:
        by_currency[t["timestamp"].strftime("%Y-%m-%d"), t["currency"]].append(t)
    currencies = {f"{day}|{currency}": {
        "day": day, "currency": currency, "txn_count": len(rows),
        "revenue": round(sum(r["amount"] for r in rows), 2),
        "revenue_reporting": round(sum(r["amount_reporting"] for r in rows), 2),
        "reporting_currency": REPORTING} for (day, currency), rows in by_currency.items()}

    def amounts(rows: list[dict]) -> tuple[dict[str, Any], float]:
        total = sum(r["amount_reporting"] for r in rows)
        return {"reporting_currency": REPORTING, "txn_count": len(rows),
                "avg_amount": total / len(rows),
                "anomaly_count": sum(r["is_anomaly"] for r in rows)}, round(total, 2)

    daily = {}
    for (day, merchant), rows in by_day_merchant.items():
        stats, total = amounts(rows)
        daily[f"{day}|{merchant}"] = {"day": day, "merchant_id": merchant, "revenue": total,
                                      **stats}
    spenders = {}
    for user, rows in by_user.items():
        stats, total = amounts(rows)
        naive = [r["timestamp"].replace(tzinfo=None) for r in rows]
        spenders[user] = {"user_id": user, "total_spend": total, **stats,
                          "first_seen": min(naive), "last_seen": max(naive)}
    ranked = sorted(spenders.values(), key=lambda s: (-s["total_spend"], s["user_id"]))
    for rank, row in enumerate(ranked, 1):
        row["spend_rank"] = rank
    summary = {}
    for (day, category), count in volume.items():
        zs = flagged.get((day, category), [])
        summary[f"{day}|{category}"] = {
            "day": day, "merchant_category": category, "txn_count": count,
            "anomaly_count": len(zs), "anomaly_rate": len(zs) / count,
            "avg_z": sum(zs) / len(zs) if zs else None, "max_z": max(zs) if zs else None,
            "anomaly_amount": round(flagged_amount[day, category], 2),
            "reporting_currency": REPORTING}
    return {"daily_merchant_revenue": daily, "top_spenders": spenders,
            "anomaly_summary": summary, "daily_currency_revenue": currencies}


def approx_doc(doc: dict) -> dict:
    return {k: pytest.approx(v, rel=1e-9, abs=1e-9) if isinstance(v, float) else v
            for k, v in doc.items()}


def read_marts(db) -> dict[str, dict[str, dict]]:
    return {mart: {d["_id"]: d for d in db[mart].find({}, batch_size=100_000)} for mart in MARTS}


def assert_marts_equal(db, expected: dict[str, dict[str, dict]]) -> None:
    for mart, rows in read_marts(db).items():
        assert set(rows) == set(expected[mart]), mart
        for key, doc in rows.items():
            assert {k: v for k, v in doc.items() if k != "_id"} == approx_doc(
                expected[mart][key]), (mart, key)


# --- running dbt -------------------------------------------------------------------------------
def dbt_env(tmp_path: Path, db_name: str, **extra: Any) -> dict[str, str]:
    """dbt writes its target, logs, DuckDB file and Parquet files under tmp_path."""
    return {**os.environ, "MONGO_DB": db_name, "DBT_TARGET_PATH": str(tmp_path / "target"),
            "DBT_LOG_PATH": str(tmp_path / "logs"),
            "DBT_DUCKDB_PATH": str(tmp_path / "target" / "txn.duckdb"),
            "DBT_EXTERNAL_ROOT": str(tmp_path / "target"),
            "DBT_SEND_ANONYMOUS_USAGE_STATS": "False",
            **{k: str(v) for k, v in extra.items()}}


def dbt(env: dict[str, str], *args: str) -> dict:
    """Run dbt in dbt/; return run_results.json (asserting it succeeded)."""
    proc = subprocess.run([DBT, *args, "--profiles-dir", "."], cwd=ROOT / "dbt", env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    return json.loads((Path(env["DBT_TARGET_PATH"]) / "run_results.json").read_text())


class Reader(threading.Thread):
    """Polls every mart until stopped, keeping each snapshot ({_id: doc} per mart)."""

    def __init__(self, db) -> None:
        super().__init__(daemon=True)
        self.db, self.polls = db, []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.02):
            self.polls.append(read_marts(self.db))

    def stop(self) -> list[dict[str, dict[str, dict]]]:
        self.done.set()
        self.join(30)
        return self.polls


def assert_never_partial(polls: list, before: dict | None, after: dict) -> None:
    """Each poll of each mart: absent only before the first run; otherwise every row that is
    in both versions is there, and every row is either its old or its new version."""
    assert polls
    for poll in polls:
        for mart, rows in poll.items():
            old = before[mart] if before else {}
            new = after[mart]
            if not before and not rows:
                continue  # not created yet
            assert rows, f"{mart} was empty or missing during a run"
            assert set(old) & set(new) <= set(rows) <= set(old) | set(new), mart
            for key, doc in rows.items():
                assert doc in (old.get(key), new.get(key)), (mart, key)


def test_dbt_build_marts_equal_recomputation_idempotent_never_partial(
        mongo_db, tmp_path) -> None:
    txns = seed(600)
    mongo_db.transactions.insert_many(txns)
    anomalies = [anomaly(t) for t in txns if t["is_anomaly"]]
    mongo_db.anomalies.insert_many(anomalies)
    assert 50 < len(anomalies) < 400
    env = dbt_env(tmp_path, mongo_db.name)

    # 1. First build: dbt's own tests pass (all of them, no warnings), the marts are created
    #    complete, and they equal the recomputation.
    reader = Reader(mongo_db)
    reader.start()
    results = dbt(env, "build")
    first_polls = reader.stop()
    statuses = {r["unique_id"]: r["status"] for r in results["results"]}
    assert len([u for u in statuses if u.startswith("test.")]) >= 40
    assert "test.txn_analytics.assert_revenue_reconciles" in statuses
    assert set(statuses.values()) <= {"success", "pass"}, statuses
    first = read_marts(mongo_db)
    assert_never_partial(first_polls, None, first)
    assert_marts_equal(mongo_db, recompute(txns, anomalies))
    assert not [c for c in mongo_db.list_collection_names() if TMP_MARK in c]

    # 2. The same build again, through scripts/dbt_loop.py: the collections do not change.
    loop_log = tmp_path / "loop.log"
    with open(loop_log, "wb") as log:
        loop = subprocess.Popen([sys.executable, "scripts/dbt_loop.py"], cwd=ROOT, stdout=log,
                                stderr=subprocess.STDOUT,
                                env={**env, "DBT_INTERVAL_SECONDS": "3600"})
        try:
            wait_for(lambda: "dbt build ok" in loop_log.read_text(), timeout=120,
                     message=f"a dbt_loop run:\n{loop_log.read_text()}")
        finally:
            loop.send_signal(signal.SIGTERM)
            assert loop.wait(30) == 0
    assert "[dbt_loop] stopped" in loop_log.read_text()
    assert read_marts(mongo_db) == first

    # 3. New data: a new day and user, changed amounts, a merchant-day that disappears. A build
    #    while a reader polls: the marts move from the old to the new numbers, never missing
    #    or partial.
    gone = [t for t in txns if t["merchant_id"] == "m3" and t["day"] == "2026-11-21"]
    assert gone
    mongo_db.transactions.delete_many({"_id": {"$in": [t["_id"] for t in gone]}})
    mongo_db.anomalies.delete_many({"_id": {"$in": [t["_id"] for t in gone]}})
    changed = [t for t in txns if t["merchant_id"] == "m5"][:20]
    for t in changed:
        t["amount"] = round(t["amount"] + 1.5, 2)
        t["amount_reporting"] = to_reporting(t["amount"], t["currency"])
        mongo_db.transactions.update_one({"_id": t["_id"]}, {"$set": {
            "amount": t["amount"], "amount_reporting": t["amount_reporting"]}})
    extra = seed(80, start=10_000, seed_value=9, day0=DAY0 + timedelta(days=3), user="user-new")
    mongo_db.transactions.insert_many(extra)
    extra_anomalies = [anomaly(t) for t in extra if t["is_anomaly"]]
    mongo_db.anomalies.insert_many(extra_anomalies)
    gone_ids = {t["_id"] for t in gone}
    txns2 = [t for t in txns if t["_id"] not in gone_ids] + extra
    anomalies2 = [a for a in anomalies if a["_id"] not in gone_ids] + extra_anomalies

    reader = Reader(mongo_db)
    reader.start()
    dbt(env, "build")
    polls = reader.stop()
    second = read_marts(mongo_db)
    assert second != first
    assert_never_partial(polls, first, second)
    assert_marts_equal(mongo_db, recompute(txns2, anomalies2))
    assert "2026-11-21|m3" in first["daily_merchant_revenue"]
    assert "2026-11-21|m3" not in second["daily_merchant_revenue"]

    # 4. The docs site builds offline from the same project.
    dbt(env, "docs", "generate")
    assert (Path(env["DBT_TARGET_PATH"]) / "index.html").exists()
    catalog = json.loads((Path(env["DBT_TARGET_PATH"]) / "catalog.json").read_text())
    assert "model.txn_analytics.top_spenders" in catalog["nodes"]


def test_an_amount_reporting_off_the_rates_fails_the_build(mongo_db, tmp_path) -> None:
    """One stored amount_reporting a cent and a half off its rate fails dbt's rates test (and
    so the build); one converted into another reporting currency is a warning and stays out
    of the money marts; the rates come from app/fx_rates.csv."""
    txns = seed(30, seed_value=3)
    assert {t["currency"] for t in txns} - {"USD"}
    off = txns[0]
    off["amount_reporting"] = round(off["amount_reporting"] + 0.015, 2)
    stale = txns[1]  # converted into euros: right by the rates, but not in USD
    stale["reporting_currency"] = "EUR"
    stale["amount_reporting"] = round(stale["amount"] * float(
        USD_PER_UNIT[stale["currency"]] / USD_PER_UNIT["EUR"]), 2)
    mongo_db.transactions.insert_many(txns)
    env = dbt_env(tmp_path, mongo_db.name)
    proc = subprocess.run([DBT, "build", "--profiles-dir", "."], cwd=ROOT / "dbt", env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0, proc.stdout[-3000:]
    results = json.loads((Path(env["DBT_TARGET_PATH"]) / "run_results.json").read_text())
    statuses = {r["unique_id"]: (r["status"], r.get("failures")) for r in results["results"]}
    assert statuses["test.txn_analytics.assert_amount_reporting_matches_rates"] == ("fail", 1)
    warned = [u for u, (status, _) in statuses.items()
              if "accepted_values_stg_transactions_reporting_currency" in u]
    assert warned and statuses[warned[0]] == ("warn", 1)
    assert statuses["model.txn_analytics.stg_fx_rates"][0] == "success"

