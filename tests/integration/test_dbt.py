"""dbt end to end on the real FerretDB: seed the sink's aggregate collections (packed, built by
the sink's own agents/sink/aggregates.build) and anomalies, made from known transactions in
several currencies, run `dbt build` (a real subprocess), and check that the marts in MongoDB
equal a plain-Python recomputation from the seeded documents; that an incremental build after
new data equals that recomputation and a full refresh; that it reads only the recent days; that
a reader polling the marts during a run never sees a missing or partial collection; and that
aggregates that disagree with the rates fail the build.

dbt starts slowly (~5 s), so one test makes several runs and checks everything on them.
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

from agents.sink.aggregates import COLLECTIONS, build, countable
from agents.sink.documents import anomaly_doc, to_date
from app.contract import ANOMALY_FIELDS, CATEGORIES, PAYMENT_METHODS, STATUSES, minute_of
from app.mongo_dbt import TMP_MARK
from app.rates import to_reporting
from tests.procs import ROOT, wait_for

pytestmark = pytest.mark.integration

DBT = str(Path(sys.executable).parent / "dbt")
MARTS = ("daily_merchant_revenue", "top_spenders", "anomaly_summary", "daily_currency_revenue")
AGGREGATES = COLLECTIONS
#: The seed's currencies (rows of app/fx_rates.csv) and the reporting currency (the default).
CURRENCIES = ("EUR", "EUR", "USD", "JPY", "INR", "GBP")
REPORTING = "USD"
#: The seed runs up to today (UTC): the plugin reads the days up to today + 1.
TODAY = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
DAY0 = TODAY - timedelta(days=4)
PARTITIONS = 2


# --- seed data: transactions made into documents by the sink's own functions, counted into
#     the aggregate documents as the sink counts them -------------------------------------------
def transaction(rng: random.Random, i: int, user: str, merchant: str, ts: datetime) -> dict:
    z = rng.choice([None, round(rng.uniform(-2.5, 2.9), 4), round(rng.uniform(3.01, 9), 4)])
    amount, currency = round(rng.uniform(0.5, 2500), 2), rng.choice(CURRENCIES)
    value = {
        "txn_id": f"{i:064x}", "user_id": user, "amount": amount, "currency": currency,
        "amount_reporting": to_reporting(amount, currency), "reporting_currency": REPORTING,
        "timestamp": ts.isoformat(), "merchant_id": merchant,
        "merchant_category": CATEGORIES[int(merchant[1:]) % len(CATEGORIES)],
        "payment_method": rng.choice(PAYMENT_METHODS), "status": rng.choice(STATUSES),
        "location": {"city": "Lyon", "country": "FR"},
        "user_txn_count": 1, "user_running_mean": 1.0, "user_running_std": 0.0,
        "z_score": z, "is_anomaly": z is not None and z > 3.0, "user_daily_spend": 1.0,
        "processed_at": (ts + timedelta(milliseconds=40)).isoformat(),
    }
    # The fields the sink counts a stored transaction from (dates parsed, its minute).
    doc = {**value, "_id": value["txn_id"], "timestamp": to_date(value["timestamp"]),
           "processed_at": to_date(value["processed_at"], "processed_at")}
    doc["day"], doc["minute"] = doc["timestamp"].strftime("%Y-%m-%d"), minute_of(doc["timestamp"])
    doc["partition"], doc["offset"] = i % PARTITIONS, i
    return doc


def anomaly(txn: dict) -> dict:
    value = {**txn, "timestamp": txn["timestamp"].isoformat(), "mean_prev": 100.0,
             "std_prev": 20.0, "n_prev": 9, "detected_at": txn["processed_at"].isoformat()}
    return anomaly_doc({k: value[k] for k in ANOMALY_FIELDS})


def seed(n: int, start: int = 0, seed_value: int = 8, day0: datetime = DAY0, days: int = 4,
         user: str | None = None) -> list[dict]:
    rng = random.Random(seed_value)
    txns = []
    for i in range(start, start + n):
        ts = day0 + timedelta(milliseconds=rng.randrange(days * 86_400_000))
        txns.append(transaction(rng, i, user or f"user-{rng.randint(1, 40)}",
                                f"m{rng.randint(1, 9)}", ts))
    return txns


def cents(amount: float) -> int:
    return round(amount * 100)


def aggregate_docs(txns: list[dict]) -> dict[str, dict[str, dict]]:
    """The aggregate documents of ``txns`` exactly as the sink writes them
    (agents/sink/aggregates.py): {collection: {_id: doc}}."""
    items = [countable(t, t["partition"], t["offset"], REPORTING) for t in txns]
    assert all(item is not None for item in items)
    return {name: {d["_id"]: d for d in docs}
            for name, docs in build(items).items()}  # type: ignore[arg-type]


def sums(doc: dict) -> dict[str, list]:
    """key -> [a, b, c] summed over the partitions ``p<n>`` of a packed document, and its label
    if any: read with plain json, not with the code the plugin reads them with."""
    out: dict[str, list] = {}
    for name, text in doc.items():
        if name[:1] == "p" and name[1:].isdigit():
            for key, entry in json.loads(text)[1].items():
                total = out.setdefault(key, [0, 0, 0, *entry[3:]])
                for i in range(3):
                    total[i] += entry[i]
    return out


def edit_part(doc: dict, key_ok: Any, change: Any) -> str:
    """Change, in place, the first entry of ``doc``'s first partition whose key passes
    ``key_ok`` (``change(entry)`` edits it); return its key."""
    for name in sorted(n for n in doc if n[:1] == "p" and n[1:].isdigit()):
        offset, places = json.loads(doc[name])
        for key, entry in places.items():
            if key_ok(key):
                change(entry)
                doc[name] = json.dumps([offset, places])
                return key
    raise AssertionError("no such entry")


def write_aggregates(db, docs: dict[str, dict[str, dict]], only_changed_from: dict | None = None
                     ) -> int:
    """Write the aggregate documents (all, or those that differ from ``only_changed_from``) as
    the sink does: one document per _id, replaced whole. Returns how many were written."""
    written = 0
    for name, by_id in docs.items():
        for key, doc in by_id.items():
            if only_changed_from is None or only_changed_from[name].get(key) != doc:
                db[name].replace_one({"_id": key}, doc, upsert=True)
                written += 1
    return written


# --- the marts, recomputed in plain Python from the aggregate documents ----------------------
def recompute(docs: dict[str, dict[str, dict]], anomalies: list[dict],
              top: int = 1000) -> dict[str, dict]:
    daily, volume = {}, defaultdict(lambda: [0, 0])
    for day, doc in docs["merchant_days"].items():
        for merchant, (count, total, flagged, category) in sums(doc).items():
            daily[f"{day}|{merchant}"] = {
                "day": day, "merchant_id": merchant, "reporting_currency": REPORTING,
                "revenue": round(total / 100, 2), "txn_count": count,
                "avg_amount": total / 100 / count, "anomaly_count": flagged}
            volume[day, category][0] += count
            volume[day, category][1] += flagged
    user_days: dict[str, dict[str, list]] = defaultdict(dict)
    for doc in docs["users_by_day"].values():
        for user, numbers in sums(doc).items():
            assert doc["day"] not in user_days[user]  # a user is in one group per day
            user_days[user][doc["day"]] = numbers
    spenders = {}
    for user, days in user_days.items():
        count = sum(v[0] for v in days.values())
        total = sum(v[1] for v in days.values())
        spenders[user] = {
            "user_id": user, "reporting_currency": REPORTING, "total_spend": round(total / 100, 2),
            "txn_count": count, "avg_amount": total / 100 / count, "first_seen": min(days),
            "last_seen": max(days), "anomaly_count": sum(v[2] for v in days.values())}
    ranked = sorted(spenders.values(), key=lambda s: (-s["total_spend"], s["user_id"]))
    for rank, row in enumerate(ranked, 1):
        row["spend_rank"] = rank
    spenders = {row["user_id"]: row for row in ranked[:top]}
    zs: dict[tuple, list[float]] = defaultdict(list)
    amounts: dict[tuple, float] = defaultdict(float)
    for a in anomalies:
        key = a["timestamp"].strftime("%Y-%m-%d"), a["merchant_category"]
        zs[key].append(a["z_score"])
        amounts[key] += a["amount_reporting"]
    summary = {f"{day}|{category}": {
        "day": day, "merchant_category": category, "txn_count": count, "anomaly_count": flagged,
        "anomaly_rate": flagged / count,
        "avg_z": sum(zs[day, category]) / len(zs[day, category]) if zs[day, category] else None,
        "max_z": max(zs[day, category]) if zs[day, category] else None,
        "anomaly_amount": round(amounts[day, category], 2), "reporting_currency": REPORTING}
        for (day, category), (count, flagged) in volume.items()}
    currencies = {}
    for day, doc in docs["currency_days"].items():
        for currency, (count, original, reporting) in sums(doc).items():
            currencies[f"{day}|{currency}"] = {
                "day": day, "currency": currency, "txn_count": count,
                "revenue": round(original / 100, 2),
                "revenue_reporting": round(reporting / 100, 2),
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
            # anomalies re-read at every build (not at most every 10 minutes)
            "DBT_SCAN_INTERVAL_SECONDS": "0",
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


def statuses_of(results: dict) -> dict[str, str]:
    return {r["unique_id"]: r["status"] for r in results["results"]}


def test_dbt_build_marts_equal_recomputation_incremental_equals_full_never_partial(
        mongo_db, tmp_path) -> None:
    txns = seed(600)
    docs = aggregate_docs(txns)
    write_aggregates(mongo_db, docs)
    anomalies = [anomaly(t) for t in txns if t["is_anomaly"]]
    mongo_db.anomalies.insert_many(anomalies)
    assert 50 < len(anomalies) < 400
    # A window of one day before the last day seen: the seed's oldest days are outside it.
    env = dbt_env(tmp_path, mongo_db.name, LATE_EVENT_GRACE_DAYS=1)
    state = tmp_path / "target" / "mongo_state"

    # 1. First build: dbt's own tests pass (all of them, no warnings), the marts are created
    #    complete, and they equal the recomputation from the documents.
    reader = Reader(mongo_db)
    reader.start()
    statuses = statuses_of(dbt(env, "build"))
    first_polls = reader.stop()
    assert len([u for u in statuses if u.startswith("test.")]) >= 60
    for test in ("assert_revenue_reconciles", "assert_aggregates_agree",
                 "assert_currency_days_match_rates", "assert_anomalies_match_aggregates"):
        assert f"test.txn_analytics.{test}" in statuses
    assert set(statuses.values()) <= {"success", "pass"}, statuses
    first = read_marts(mongo_db)
    assert_never_partial(first_polls, None, first)
    assert_marts_equal(mongo_db, recompute(docs, anomalies))
    assert not [c for c in mongo_db.list_collection_names() if TMP_MARK in c]
    sources = ("users_by_day", "merchant_days", "currency_days", "anomalies")
    assert sorted(p.name for p in state.iterdir()) == sorted(
        [f"{mongo_db.name}.{c}.source.parquet" for c in sources]
        + [f"{mongo_db.name}.{m}.written.parquet" for m in MARTS])

    # 2. The same build again, through scripts/dbt_loop.py (incremental, nothing new): the
    #    collections do not change.
    loop_log = tmp_path / "loop.log"
    with open(loop_log, "wb") as log:
        loop = subprocess.Popen([sys.executable, "scripts/dbt_loop.py"], cwd=ROOT, stdout=log,
                                stderr=subprocess.STDOUT,
                                env={**env, "DBT_INTERVAL_SECONDS": "3600"})
        try:
            wait_for(lambda: "dbt build ok" in loop_log.read_text(), timeout=180,
                     message=f"a dbt_loop run:\n{loop_log.read_text()}")
        finally:
            loop.send_signal(signal.SIGTERM)
            assert loop.wait(30) == 0
    assert "[dbt_loop] stopped" in loop_log.read_text()
    assert read_marts(mongo_db) == first

    # 3. New data, as the sink writes it: today's and yesterday's documents change (a new user,
    #    a new merchant, late transactions of yesterday, new anomalies). An incremental build
    #    while a reader polls: the marts move from the old to the new numbers, never missing
    #    or partial, and equal the recomputation.
    extra = (seed(60, start=10_000, seed_value=9, day0=TODAY, days=1)
             + seed(8, start=20_000, seed_value=10, day0=TODAY, days=1, user="user-new")
             + seed(6, start=30_000, seed_value=11, day0=TODAY - timedelta(days=1), days=1))
    extra[0]["merchant_id"] = "m10"  # a merchant never seen before (category from its number)
    extra[0]["merchant_category"] = CATEGORIES[10 % len(CATEGORIES)]
    docs2 = aggregate_docs(txns + extra)
    total = sum(len(by_id) for by_id in docs2.values())
    assert write_aggregates(mongo_db, docs2, only_changed_from=docs) < total / 2
    extra_anomalies = [anomaly(t) for t in extra if t["is_anomaly"]]
    mongo_db.anomalies.insert_many(extra_anomalies)
    anomalies2 = anomalies + extra_anomalies
    reader = Reader(mongo_db)
    reader.start()
    statuses = statuses_of(dbt(env, "build"))
    polls = reader.stop()
    assert set(statuses.values()) <= {"success", "pass"}, statuses
    second = read_marts(mongo_db)
    assert second != first
    assert_never_partial(polls, first, second)
    assert_marts_equal(mongo_db, recompute(docs2, anomalies2))
    assert second["top_spenders"]["user-new"]["last_seen"] == TODAY.strftime("%Y-%m-%d")
    assert f"{TODAY:%Y-%m-%d}|m10" in second["daily_merchant_revenue"]

    # 4. A full refresh on the same data writes the same marts: the incremental build was
    #    complete.
    statuses = statuses_of(dbt(env, "build", "--full-refresh"))
    assert set(statuses.values()) <= {"success", "pass"}, statuses
    assert read_marts(mongo_db) == second

    # 5. The incremental build reads only the window: a change to the oldest day (behind the
    #    sink's back, older than the last day - LATE_EVENT_GRACE_DAYS) is not seen by it...
    oldest = min(docs2["merchant_days"])
    assert oldest < (TODAY - timedelta(days=2)).strftime("%Y-%m-%d")
    changed = json.loads(json.dumps(docs2))

    def more(entry: list) -> None:
        entry[0] += 1
        entry[1] += 12_345

    merchant = edit_part(changed["merchant_days"][oldest], lambda _: True, more)
    mongo_db.merchant_days.replace_one({"_id": oldest}, changed["merchant_days"][oldest])
    dbt(env, "build")
    assert read_marts(mongo_db) == second
    #    ... and a full refresh reads it (the reconciliation with the other aggregates now
    #    warns: only merchant_days was changed).
    statuses = statuses_of(dbt(env, "build", "--full-refresh"))
    assert statuses["test.txn_analytics.assert_aggregates_agree"] == "warn"
    expected = recompute(changed, anomalies2)
    assert_marts_equal(mongo_db, expected)
    row = expected["daily_merchant_revenue"][f"{oldest}|{merchant}"]
    assert read_marts(mongo_db)["daily_merchant_revenue"][f"{oldest}|{merchant}"] == {
        "_id": f"{oldest}|{merchant}", **approx_doc(row)}
    assert row["txn_count"] == sums(docs2["merchant_days"][oldest])[merchant][0] + 1

    # 6. The docs site builds offline from the same project.
    dbt(env, "docs", "generate")
    assert (Path(env["DBT_TARGET_PATH"]) / "index.html").exists()
    catalog = json.loads((Path(env["DBT_TARGET_PATH"]) / "catalog.json").read_text())
    assert "model.txn_analytics.top_spenders" in catalog["nodes"]


def test_aggregates_off_the_rates_fail_the_build(mongo_db, tmp_path) -> None:
    """A day and currency whose converted cents are far from the rates fails dbt's rates test
    (and so the build); a merchant-day counted in another reporting currency is a warning and
    stays out of the money marts; the rates come from app/fx_rates.csv."""
    txns = seed(60, seed_value=3)
    docs = aggregate_docs(txns)
    doc = next(iter(docs["currency_days"].values()))

    def off(entry: list) -> None:
        entry[2] += 100 * entry[0] + 100  # a dollar per transaction too many

    edit_part(doc, lambda currency: currency != "USD", off)
    stale_day = sorted(docs["merchant_days"])[-1]
    docs["merchant_days"][stale_day]["reporting_currency"] = "EUR"
    write_aggregates(mongo_db, docs)
    env = dbt_env(tmp_path, mongo_db.name)
    proc = subprocess.run([DBT, "build", "--profiles-dir", "."], cwd=ROOT / "dbt", env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0, proc.stdout[-3000:]
    results = json.loads((Path(env["DBT_TARGET_PATH"]) / "run_results.json").read_text())
    statuses = {r["unique_id"]: (r["status"], r.get("failures")) for r in results["results"]}
    assert statuses["test.txn_analytics.assert_currency_days_match_rates"] == ("fail", 1)
    warned = [u for u, (status, _) in statuses.items()
              if "accepted_values_stg_merchant_days_reporting_currency" in u]
    assert warned and statuses[warned[0]][0] == "warn"
    assert statuses["model.txn_analytics.stg_fx_rates"][0] == "success"
    revenue = {d["_id"] for d in mongo_db.daily_merchant_revenue.find({})}
    assert revenue and not any(key.startswith(stale_day) for key in revenue)


def test_top_spenders_keeps_the_biggest_and_drops_who_left_the_top(mongo_db, tmp_path) -> None:
    """With TOP_SPENDERS_LIMIT=5 the mart holds the 5 biggest spenders of the recomputation
    (dbt's reconciliation test passes on them); after a new day makes another user the
    biggest, an incremental build holds the new top 5 and no one else, in MongoDB too."""
    txns = seed(200, seed_value=11)
    docs = aggregate_docs(txns)
    write_aggregates(mongo_db, docs)
    env = dbt_env(tmp_path, mongo_db.name, TOP_SPENDERS_LIMIT=5)
    statuses = statuses_of(dbt(env, "build"))
    assert set(statuses.values()) <= {"success", "pass"}, statuses
    anomalies: list[dict] = []
    want = recompute(docs, anomalies, top=5)["top_spenders"]
    assert len(want) == 5
    assert read_marts(mongo_db)["top_spenders"] == {
        k: {"_id": k, **approx_doc(v)} for k, v in want.items()}

    newcomer = seed(3, start=10_000, seed_value=12, day0=TODAY, days=1, user="newcomer")
    for t in newcomer:  # in USD, so that the rates test holds
        t["amount"] = t["amount_reporting"] = 20_000.0
        t["currency"] = "USD"
    docs = aggregate_docs(txns + newcomer)
    write_aggregates(mongo_db, docs)
    dbt(env, "build")
    after = read_marts(mongo_db)["top_spenders"]
    want = recompute(docs, anomalies, top=5)["top_spenders"]
    assert "newcomer" in want and after == {k: {"_id": k, **approx_doc(v)}
                                            for k, v in want.items()}


def test_seed_documents_count_the_transactions() -> None:
    """The documents these tests seed (the sink's own builder) hold, read back with plain
    json, the counts of the transactions: per day and merchant, per day and user, per day and
    currency; what the marts are compared with is what the transactions add up to."""
    txns = seed(300, seed_value=5)
    docs = aggregate_docs(txns)
    want: dict[str, dict] = {"merchant_days": defaultdict(lambda: [0, 0, 0]),
                             "users_by_day": defaultdict(lambda: [0, 0, 0]),
                             "currency_days": defaultdict(lambda: [0, 0, 0])}
    for t in txns:
        day, amount = t["day"], cents(t["amount_reporting"])
        for name, key, add in (
                ("merchant_days", (day, t["merchant_id"]), (1, amount, int(t["is_anomaly"]))),
                ("users_by_day", (day, t["user_id"]), (1, amount, int(t["is_anomaly"]))),
                ("currency_days", (day, t["currency"]), (1, cents(t["amount"]), amount))):
            for i in range(3):
                want[name][key][i] += add[i]
    for name, expected in want.items():
        got = {((doc.get("day") or doc["_id"]), key): numbers[:3]
               for doc in docs[name].values() for key, numbers in sums(doc).items()}
        assert got == dict(expected), name
        assert {doc["reporting_currency"] for doc in docs[name].values()} == {REPORTING}
    categories = {key: numbers[3] for doc in docs["merchant_days"].values()
                  for key, numbers in sums(doc).items()}
    assert categories == {t["merchant_id"]: t["merchant_category"] for t in txns}
    assert {len([n for n in doc if n[:1] == "p"]) for doc in docs["merchant_days"].values()} \
        == {PARTITIONS}
