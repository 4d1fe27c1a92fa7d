"""Soak test (``make soak``): minutes at a steady rate with a broker restart and a FerretDB
restart in the middle; afterwards every valid transaction must be stored exactly once and the
statistics must be exact.

    python bench/soak.py [--minutes 10] [--rate 5000] [--seed 42]
                         [--no-broker-restart] [--no-db-restart] [--private-db]

What it does, on fresh topics (``TOPIC_PREFIX``), a fresh ``MONGO_DB`` and ``DATA_DIR``:

1. starts the processing worker and the sink, and supervises them like a process manager
   (k8s ``restartPolicy: Always``): a process that exits is started again, and counted;
2. produces at ``--rate`` for ``--minutes`` (the producer of ``bench/bench_pipeline.py``,
   :mod:`app.producer`, deterministic from ``--seed``); at 1/3 of the time it restarts the
   broker, at 2/3 FerretDB (``scripts/services.py``: these are the SHARED local services,
   ``--private-db`` restarts a FerretDB of its own instead);
3. waits until the worker and the sink have committed everything;
4. checks, against an offline recomputation from the producer's generator (exact integer
   arithmetic in cents, independent of the worker's Welford code):
   - the ``transactions`` topic holds exactly the generated messages the producer delivered;
   - every delivered transaction has an enriched message, and every copy of it carries the
     exact statistics (count, running mean and std, z-score, anomaly flag, daily spend);
   - the MongoDB ``transactions`` collection holds each of them exactly once, nothing else;
   - the worker's stats view (``/users/{id}/stats``) agrees for a sample of users.

Prints a report and writes ``bench/results/soak.json``; exits 1 if a check fails.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for path in (ROOT, ROOT / "bench"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from bench_pipeline import (  # noqa: E402
    PY,
    RESULTS,
    SINK_MONGO_OPTIONS,
    Kafka,
    PrivateFerret,
    _dead,
    _get,
    _wait_log,
    stored_series,
    with_options,
)

from tests.procs import TXN, Proc, free_port, pipeline_env, wait_for  # noqa: E402

__all__ = ["Expected", "expected_stats", "main"]

REL = 1e-9  # relative tolerance for floats (the worker's Welford vs exact arithmetic)


# --- the offline recomputation (pure) -----------------------------------------------------------
class Expected(dict[str, dict[str, Any]]):
    """txn_id -> the enriched fields the contract's rule gives that transaction."""


def expected_stats(transactions: Iterator[tuple[str, str, float, str]], min_history: int,
                   threshold: float) -> Expected:
    """``(txn_id, user_id, amount, timestamp)`` in each user's order -> :class:`Expected`
    (amounts in the reporting currency, as the worker's statistics are).

    Exact: sums of cents and of squared cents are integers, so the variance's numerator and
    denominator are exact integers, divided (correctly rounded) only at the end."""
    users: dict[str, tuple[int, int, int]] = {}  # user -> (n, sum cents, sum cents^2)
    days: dict[tuple[str, str], int] = {}  # (user, UTC day) -> cents
    out = Expected()
    for txn_id, user, amount, timestamp in transactions:
        cents = round(amount * 100)
        n, s1, s2 = users.get(user, (0, 0, 0))
        z = None
        if n >= min_history:
            num = n * s2 - s1 * s1  # n (n-1) times the variance, in cents^2
            if num > 0:
                std_prev = (num / (n * (n - 1))) ** 0.5
                z = (cents - s1 / n) / std_prev
        n, s1, s2 = n + 1, s1 + cents, s2 + cents * cents
        users[user] = (n, s1, s2)
        std = ((n * s2 - s1 * s1) / (n * (n - 1))) ** 0.5 / 100 if n >= 2 else 0.0
        day = (user, timestamp[:10])  # the producer writes UTC timestamps (+00:00)
        days[day] = days.get(day, 0) + cents
        out[txn_id] = {"user_txn_count": n, "user_running_mean": s1 / n / 100,
                       "user_running_std": std, "z_score": z,
                       "is_anomaly": z is not None and z > threshold,
                       "daily_cents": days[day], "user_id": user}
    return out


def close(a: float | None, b: float | None, rel: float = REL, abs_: float = 1e-9) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return abs(a - b) <= max(abs_, rel * max(abs(a), abs(b)))


def mismatch(expected: dict[str, Any], enriched: dict[str, Any]) -> str | None:
    """The first field of an enriched message that disagrees with the recomputation."""
    if enriched.get("user_txn_count") != expected["user_txn_count"]:
        return f"count {enriched.get('user_txn_count')} != {expected['user_txn_count']}"
    for name in ("user_running_mean", "user_running_std"):
        if not close(enriched.get(name), expected[name]):
            return f"{name} {enriched.get(name)} != {expected[name]}"
    if not close(enriched.get("z_score"), expected["z_score"], rel=1e-6):
        return f"z_score {enriched.get('z_score')} != {expected['z_score']}"
    if enriched.get("is_anomaly") != expected["is_anomaly"]:
        return f"is_anomaly {enriched.get('is_anomaly')} != {expected['is_anomaly']}"
    if round(enriched.get("user_daily_spend", -1) * 100) != expected["daily_cents"]:
        return f"daily spend {enriched.get('user_daily_spend')} != {expected['daily_cents']}/100"
    return None


# --- reading a whole topic ----------------------------------------------------------------------
def read_topic(bootstrap: str, topic: str) -> Iterator[tuple[int, int, bytes]]:
    """Every message of ``topic`` now: ``(partition, offset, value)``, partition by partition
    in offset order."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap.split(","), enable_auto_commit=False,
                             max_poll_records=20_000, fetch_max_bytes=64 << 20,
                             max_partition_fetch_bytes=16 << 20, client_id="txn-soak")
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        ends = consumer.end_offsets(parts)
        for tp in parts:
            if ends[tp] == 0:
                continue
            consumer.assign([tp])
            consumer.seek_to_beginning(tp)
            done = False
            while not done:
                for records in consumer.poll(timeout_ms=1000).values():
                    for r in records:
                        yield tp.partition, r.offset, r.value
                        if r.offset >= ends[tp] - 1:
                            done = True
                if consumer.position(tp) >= ends[tp]:
                    done = True
    finally:
        consumer.close()


# --- services -----------------------------------------------------------------------------------
def load_services() -> Any:
    spec = importlib.util.spec_from_file_location("services", ROOT / "scripts" / "services.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Supervisor(threading.Thread):
    """Starts again any of ``procs`` that exits, like a process manager, and counts it."""

    def __init__(self, procs: list[Proc]) -> None:
        super().__init__(daemon=True)
        self.procs = procs
        self.restarts: list[dict[str, Any]] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(1.0):
            for proc in self.procs:
                if not proc.alive:
                    code = proc.proc.returncode if proc.proc else None
                    self.restarts.append({"process": proc.name, "exit_code": code,
                                          "at": time.time()})
                    print(f"[soak] {proc.name} exited ({code}): starting it again", flush=True)
                    proc.start()

    def stop(self) -> None:
        self.stopped.set()
        self.join(5)


# --- the soak -----------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> dict[str, Any]:
    import pymongo

    from app import contract
    from app.producer import TransactionFactory
    from app.settings import settings

    run_id = uuid.uuid4().hex[:6]
    prefix = f"soak-{run_id}"
    work = Path(tempfile.mkdtemp(prefix=f"txn-soak-{run_id}-"))
    print(f"[soak] run {run_id}, logs in {work}", flush=True)
    services = load_services()
    private = PrivateFerret(work) if args.private_db else None
    mongo_url = private.url if private else settings.mongo_url
    if private:
        private.start()
    bootstrap = settings.kafka_bootstrap_servers
    port = free_port()
    db_name = prefix.replace("-", "_")
    env = pipeline_env(prefix, MONGO_DB=db_name, DATA_DIR=str(work / "data"), WEB_PORT=port,
                       WEB_HOST="localhost",
                       MONGO_URL=with_options(mongo_url, args.sink_mongo_options))
    tp = env["TOPIC_PREFIX"]
    source, enriched_topic = tp + contract.TRANSACTIONS, tp + contract.ENRICHED
    group = f"{tp}txn-analytics"
    kafka = Kafka(bootstrap)
    kafka.create([source] + [tp + t for t in contract.TOPICS[1:]], settings.topic_partitions)
    worker = Proc("worker", [TXN, "worker", "-l", "info"], env, work).start()
    sink = Proc("sink", [TXN, "sink", "-l", "info"], env, work).start()
    supervisor = Supervisor([worker, sink])
    report: dict[str, Any] = {"run": run_id, "minutes": args.minutes, "rate": args.rate,
                              "seed": args.seed, "events": [], "checks": {}}
    events = report["events"]
    try:
        wait_for(lambda: b'"partitions":[0' in _get(f"http://localhost:{port}/health")
                 or (not worker.alive and _dead(worker)), 180, message="worker partitions")
        _wait_log(sink, "sink ready", 180)
        supervisor.start()
        duration = args.minutes * 60
        result_path = work / "produce.json"
        producer = Proc("producer", [PY, str(ROOT / "bench" / "bench_pipeline.py"), "_produce",
                                     "--bootstrap", bootstrap, "--topic", source, "--rate",
                                     str(args.rate), "--duration", str(duration), "--seed",
                                     str(args.seed), "--out", str(result_path)],
                        env, work).start()
        t0 = time.time()
        plan = []
        if not args.no_broker_restart:
            plan.append((duration / 3, "broker"))
        if not args.no_db_restart:
            plan.append((2 * duration / 3, "ferretdb"))
        for at, what in plan:
            time.sleep(max(0.0, t0 + at - time.time()))
            started = time.time()
            print(f"[soak] restarting {what} at +{started - t0:.0f} s", flush=True)
            if what == "broker":
                services.stop_one("kafka")
                services.start_kafka()
            elif private:
                private.stop()
                private.start()
            else:
                services.stop_one("ferretdb")
                services.start_ferretdb()
            events.append({"restart": what, "at_s": round(started - t0, 1),
                           "down_s": round(time.time() - started, 1)})
        assert producer.proc is not None
        producer.proc.wait(duration + 600)
        if not result_path.exists():
            raise RuntimeError(f"producer failed:\n{producer.log()}")
        produced = json.loads(result_path.read_text())
        report["producer"] = {k: produced[k] for k in ("sent", "errors", "rate", "seconds",
                                                      "start_ms", "step_us", "next_seq")}
        print(f"[soak] producer: {produced['summary']}", flush=True)

        t_end = time.time()
        client: pymongo.MongoClient[Any] = pymongo.MongoClient(mongo_url, socketTimeoutMS=30_000)
        while time.time() - t_end < args.drain_timeout:
            try:  # the worker committed everything and the sink recorded storing it all
                stored = stored_series(client[db_name])
                if kafka.lag(group, source) == 0 and stored and \
                        stored[-1][1] >= produced["sent"]:
                    break
            except Exception as exc:  # the services may still be settling
                print(f"[soak] drain: {exc}", flush=True)
            time.sleep(2)
        client.close()
        report["drain_s"] = round(time.time() - t_end, 1)
        time.sleep(3)  # the last sink flush records and commits
        supervisor.stop()
        report["process_restarts"] = supervisor.restarts
        report["checks"] = verify(args, bootstrap, source, enriched_topic, mongo_url, db_name,
                                  port, produced, TransactionFactory, settings)
    finally:
        supervisor.stop()
        for proc in (sink, worker):
            proc.stop(30)
        kafka.delete_prefixed(tp)
        kafka.close()
        try:
            dropper: pymongo.MongoClient[Any] = pymongo.MongoClient(mongo_url,
                                                                    socketTimeoutMS=60_000)
            dropper.drop_database(db_name)
            dropper.close()
        except pymongo.errors.PyMongoError as exc:
            print(f"[soak] could not drop {db_name}: {exc}", flush=True)
        if private:
            private.stop()
        shutil.rmtree(work / "data", ignore_errors=True)
        shutil.rmtree(work / "ferretdb", ignore_errors=True)
    return report


def verify(args: argparse.Namespace, bootstrap: str, source: str, enriched_topic: str,
           mongo_url: str, db_name: str, port: int, produced: dict[str, Any],
           factory_class: Any, settings: Any) -> dict[str, Any]:
    import orjson
    import pymongo

    from app.rates import to_reporting

    checks: dict[str, Any] = {}
    t = time.time()
    factory = factory_class(seed=args.seed, start_ms=produced["start_ms"],
                            step_us=produced["step_us"])
    generated = {m.txn_id: m for m in factory.messages(0, produced["next_seq"])}
    # 1. What entered the pipeline: the transactions topic, all of it generated, none twice.
    in_kafka: dict[str, int] = {}
    foreign = 0
    for _, _, value in read_topic(bootstrap, source):
        txn_id = orjson.loads(value)["txn_id"]
        if txn_id in generated and generated[txn_id].value == value:
            in_kafka[txn_id] = in_kafka.get(txn_id, 0) + 1
        else:
            foreign += 1
    checks["seconds_generate_and_read_source"] = round(time.time() - t, 1)
    checks["transactions_topic"] = {
        "generated": len(generated), "delivered": len(in_kafka), "foreign": foreign,
        "duplicates": sum(n - 1 for n in in_kafka.values()),
        "producer_reported_sent": produced["sent"],
        "ok": foreign == 0 and len(in_kafka) == produced["sent"]}
    # 2. The offline recomputation, in each user's order (= sequence order, one partition each).
    ordered = sorted((generated[i] for i in in_kafka), key=lambda m: m.seq)
    parsed = ((m, orjson.loads(m.value)) for m in ordered)
    expected = expected_stats(
        ((m.txn_id, m.user_id, to_reporting(txn["amount"], txn["currency"]), txn["timestamp"])
         for m, txn in parsed),
        settings.anomaly_min_history, settings.anomaly_z_threshold)
    # 3. Every enriched message (duplicates included) against it.
    seen: dict[str, int] = {}
    wrong: list[str] = []
    unknown = 0
    for _, _, value in read_topic(bootstrap, enriched_topic):
        msg = orjson.loads(value)
        exp = expected.get(msg.get("txn_id"))
        if exp is None:
            unknown += 1
            continue
        seen[msg["txn_id"]] = seen.get(msg["txn_id"], 0) + 1
        problem = mismatch(exp, msg)
        if problem and len(wrong) < 20:
            wrong.append(f"{msg['txn_id'][:12]} ({msg.get('user_id')}): {problem}")
        elif problem:
            wrong.append("...")
    checks["seconds_enriched"] = round(time.time() - t, 1)
    checks["enriched_topic"] = {
        "expected": len(expected), "distinct": len(seen), "missing": len(expected) - len(seen),
        "duplicate_messages": sum(n - 1 for n in seen.values()), "unknown": unknown,
        "wrong": len(wrong), "examples": wrong[:20],
        "ok": len(seen) == len(expected) and not wrong and unknown == 0}
    # 4. MongoDB: each expected transaction stored exactly once (``_id`` = txn_id), nothing else.
    client: pymongo.MongoClient[Any] = pymongo.MongoClient(mongo_url, socketTimeoutMS=600_000)
    try:
        coll = client[db_name]["transactions"]
        ids = [d["_id"] for d in coll.find({}, {"_id": 1}, batch_size=20_000)]
        stored = set(ids)
        checks["mongodb"] = {
            "documents": len(ids), "distinct": len(stored),
            "missing": len(set(expected) - stored), "unexpected": len(stored - set(expected)),
            "ok": len(ids) == len(stored) == len(expected) and stored == set(expected)}
    finally:
        client.close()
    # 5. The worker's live stats view for a sample of users (the final values).
    final: dict[str, dict[str, Any]] = {}
    for exp in expected.values():
        final[exp["user_id"]] = exp
    sample = random.Random(args.seed).sample(sorted(final), min(50, len(final)))
    bad_view = []
    for user in sample:
        body = _get(f"http://localhost:{port}/users/{user}/stats")
        try:
            view = json.loads(body)
        except ValueError:
            bad_view.append(f"{user}: no answer")
            continue
        exp = final[user]
        if not (view.get("count") == exp["user_txn_count"]
                and close(view.get("mean"), exp["user_running_mean"])
                and close(view.get("std"), exp["user_running_std"])):
            bad_view.append(f"{user}: view {view.get('count')}/{view.get('mean')}/"
                            f"{view.get('std')} != {exp['user_txn_count']}/"
                            f"{exp['user_running_mean']}/{exp['user_running_std']}")
    checks["seconds_mongodb"] = round(time.time() - t, 1)
    checks["stats_view"] = {"users": len(sample), "wrong": bad_view[:10], "ok": not bad_view}
    checks["seconds"] = round(time.time() - t, 1)
    checks["ok"] = all(c["ok"] for c in checks.values() if isinstance(c, dict))
    return checks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--rate", type=float, default=5000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--no-broker-restart", action="store_true")
    parser.add_argument("--no-db-restart", action="store_true")
    parser.add_argument("--private-db", action="store_true",
                        help="run and restart a FerretDB of the soak's own")
    parser.add_argument("--drain-timeout", type=float, default=600)
    parser.add_argument("--sink-mongo-options", default=SINK_MONGO_OPTIONS,
                        help="URI options for the sink's MONGO_URL")
    parser.add_argument("--out", default=str(RESULTS / "soak.json"))
    args = parser.parse_args(argv)
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    report = {"started": started, **run(args)}
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    ok = report["checks"].get("ok", False)
    print(f"[soak] {'PASSED' if ok else 'FAILED'}", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
