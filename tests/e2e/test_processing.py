"""End to end on the real broker: the producer (app/producer.py) feeds ``transactions``, real
``txn worker`` processes run, and everything they publish is checked against an offline
recomputation over what the topic holds, in partition order.

- a clean run: every valid transaction enriched with the right numbers, ``anomalies`` exactly
  the rule's selection, ``transactions_dlq`` exactly the invalid messages;
- crashes: the same with the worker SIGKILLed at random moments and restarted, then the stats
  view's numbers for every user;
- two workers in one group: both answer for every user (``app.table_route``);
- replays: another producer's opaque ids are processed, and every valid transaction sent a
  second time changes nothing and is not emitted again.
"""

from __future__ import annotations

import calendar
import json
import math
import random
import time
import urllib.error
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from app.contract import (
    ANOMALIES,
    DLQ,
    ENRICHED,
    TRANSACTIONS,
    InvalidTransaction,
    cents,
    parse_timestamp,
    validate,
)
from app.producer import TransactionFactory, ensure_topic, send
from app.rates import reporting_cents
from app.settings import settings
from tables.welford import EMPTY, Welford, is_anomaly, update, z_score
from tests.procs import TXN, Proc, free_port, pipeline_env, wait_for, wait_http

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

PARTITIONS = 4
USERS = 40
COUNT = 20_400
REL = 1e-9


@dataclass
class Expected:
    """The offline recomputation of the contract's rule over the topic's valid transactions."""

    enriched: dict[str, dict[str, Any]] = field(default_factory=dict)  # txn_id -> fields
    anomalies: set[str] = field(default_factory=set)
    invalid: dict[tuple[int, int], bytes] = field(default_factory=dict)  # (part, off) -> value
    users: dict[str, Welford] = field(default_factory=dict)
    last_z: dict[str, float | None] = field(default_factory=dict)
    day_cents: dict[tuple[str, float], int] = field(default_factory=lambda: defaultdict(int))
    duplicates: int = 0  # valid transactions whose txn_id came before


def recompute(records: list[Any]) -> Expected:
    """The rules over the topic's records in partition order (docs/contract.md): the contract,
    the key, the Kafka timestamp, late events against each partition's stream time, each
    ``txn_id`` once (the records cover less than the dedupe horizon), the statistics and day
    spend in the reporting currency. No record here is from the future."""
    exp = Expected()
    grace = settings.late_event_grace_days * 86_400
    stream_times: dict[int, float] = {}
    for r in sorted(records, key=lambda r: (r.partition, r.offset)):
        try:
            txn = validate(r.value)
            if r.key != txn["user_id"].encode():
                raise InvalidTransaction("key")
            event_time = parse_timestamp(txn["timestamp"]).timestamp()
            if abs(r.timestamp / 1000 - event_time) > 1:
                raise InvalidTransaction("Kafka timestamp")
            if event_time < stream_times.get(r.partition, -math.inf) - grace:
                raise InvalidTransaction("late event")
        except InvalidTransaction:
            exp.invalid[r.partition, r.offset] = r.value
            continue
        stream_times[r.partition] = max(stream_times.get(r.partition, -math.inf), event_time)
        if txn["txn_id"] in exp.enriched:
            exp.duplicates += 1
            continue
        user = txn["user_id"]
        amount_cents = reporting_cents(cents(txn["amount"]), txn["currency"])
        amount = amount_cents / 100
        prev = exp.users.get(user, EMPTY)
        z = z_score(prev, amount, settings.anomaly_min_history)
        now = exp.users[user] = update(prev, amount)
        exp.last_z[user] = z
        day = (user, event_time // 86_400 * 86_400)
        exp.day_cents[day] += amount_cents
        anomaly = is_anomaly(z, settings.anomaly_z_threshold)
        exp.enriched[txn["txn_id"]] = {**txn, "amount_reporting": amount,
                                       "reporting_currency": settings.reporting_currency,
                                       "user_txn_count": now.count,
                                       "user_running_mean": now.mean,
                                       "user_running_std": now.std, "z_score": z,
                                       "is_anomaly": anomaly,
                                       "user_daily_spend": exp.day_cents[day] / 100}
        if anomaly:
            exp.anomalies.add(txn["txn_id"])
    return exp


def close(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=REL, abs_tol=1e-12)


def read_topic(topic: str) -> list[Any]:
    """Every record of ``topic`` up to its current end."""
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers,
                             enable_auto_commit=False, group_id=None)
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        end = consumer.end_offsets(parts)
        out: list[Any] = []
        deadline = time.monotonic() + 60
        while any(consumer.position(tp) < end[tp] for tp in parts):
            assert time.monotonic() < deadline, f"reading {topic} timed out"
            for batch in consumer.poll(timeout_ms=500, max_records=50_000).values():
                out.extend(batch)
        return out
    finally:
        consumer.close()


def committed_and_end(group: str, topic: str) -> dict[int, tuple[int, int]]:
    """Partition -> (the group's committed offset, the end offset) of ``topic``."""
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers, group_id=group,
                             enable_auto_commit=False)
    try:
        parts = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        end = consumer.end_offsets(parts)
        return {tp.partition: (consumer.committed(tp) or 0, end[tp]) for tp in parts}
    finally:
        consumer.close()


def committed_everything(group: str, topic: str) -> bool:
    """The group's committed offsets reached the end of every partition of ``topic``."""
    return all(committed >= end for committed, end in committed_and_end(group, topic).values())


class Pipeline:
    """One isolated pipeline: its topics, worker processes and the produced messages."""

    def __init__(self, tmp: Path, unique: str) -> None:
        self.prefix = f"e2e-{unique}"
        self.tmp = tmp
        self.topic = f"{self.prefix}-{TRANSACTIONS}"
        self.group = f"{self.prefix}-txn-analytics"
        self.workers: list[tuple[Proc, int]] = []
        self.factory = TransactionFactory(seed=7, users=USERS, merchants=50, anomaly_rate=0.01,
                                          bad_rate=0.01)

    def worker(self, name: str) -> tuple[Proc, int]:
        port = free_port()
        env = pipeline_env(self.prefix, TOPIC_PARTITIONS=PARTITIONS, WEB_PORT=port,
                           WEB_HOST="localhost", DATA_DIR=self.tmp / f"data-{name}")
        proc = Proc(name, [TXN, "worker", "-l", "info"], env, self.tmp)
        self.workers.append((proc, port))
        return proc, port

    def produce(self, count: int = COUNT, first_seq: int = 0) -> None:
        """Sequence numbers ``first_seq`` on, of one factory: the same numbers, the same
        messages (a replay)."""
        summary = send(self.factory, self.topic, bootstrap=settings.kafka_bootstrap_servers,
                       rate=0, count=count, first_seq=first_seq, partitions=PARTITIONS)
        assert summary.errors == 0 and summary.bad > 0 and summary.anomalies > 0, summary

    def wait_processed(self, timeout: float = 240) -> None:
        def done() -> bool:
            last = self.workers[-1][0]
            # a worker that exited will never commit: fail now, with its log
            assert last.alive, f"{last.name} exited ({last.proc and last.proc.returncode}):\n" \
                               f"{last.log(120)}"
            return committed_everything(self.group, self.topic)

        def log() -> str:
            last, port = self.workers[-1]
            try:  # what the worker took in: did it stall before or after processing?
                counts = {name: metric(port, name) for name in
                          ("txn_processed_total", "txn_replayed_total", "txn_duplicates_total",
                           "txn_batches_total", "txn_consumer_lag_total")}
            except (OSError, StopIteration) as exc:
                counts = {"metrics": repr(exc)}
            return (f"the worker to commit every transaction; partition -> (committed, end): "
                    f"{committed_and_end(self.group, self.topic)}; {counts}; "
                    f"{last.name}'s log:\n{last.log(120)}")

        wait_for(done, timeout=timeout, interval=2, message=log)

    def check_topics(self, once: bool = False) -> Expected:
        """Every output against the recomputation; ``once``: no enriched message twice (no
        crash happened, so none was re-published)."""
        exp = recompute(read_topic(self.topic))
        assert len(exp.enriched) > 20_000 - len(exp.invalid) and exp.invalid and exp.anomalies
        seen: dict[str, int] = defaultdict(int)
        for r in read_topic(f"{self.prefix}-{ENRICHED}"):
            got = orjson.loads(r.value)
            want = exp.enriched.get(got["txn_id"])
            assert want is not None, f"unexpected enriched {got['txn_id']}"
            assert r.key == got["user_id"].encode()
            for name, value in want.items():
                if isinstance(value, float) or name == "z_score":
                    assert close(got[name], value), (name, got, want)
                else:
                    assert got[name] == value, (name, got, want)
            seen[got["txn_id"]] += 1
        assert set(seen) == set(exp.enriched), "some valid transactions were not enriched"
        if once:
            assert max(seen.values()) == 1, "a transaction was enriched twice"
        anomalies = {orjson.loads(r.value)["txn_id"]
                     for r in read_topic(f"{self.prefix}-{ANOMALIES}")}
        assert anomalies == exp.anomalies
        dlq: dict[tuple[int, int], bytes] = {}
        for r in read_topic(f"{self.prefix}-{DLQ}"):
            headers = {k: v.decode() for k, v in r.headers}
            assert headers["dlq.reason"] and headers["dlq.topic"] == self.topic
            dlq[int(headers["dlq.partition"]), int(headers["dlq.offset"])] = r.value
        assert dlq == exp.invalid
        return exp

    def check_views(self, exp: Expected, port: int) -> None:
        """The stats view of every user, asked at ``port``, equals the recomputation."""
        for user, stats in exp.users.items():
            body = get_json(f"http://localhost:{port}/users/{user}/stats")
            assert body["count"] == stats.count, (user, body)
            assert close(body["mean"], stats.mean) and close(body["std"], stats.std), body
            assert close(body["last_z"], exp.last_z[user]), (body, exp.last_z[user])
            for day in body["last_7_days"]:
                start = calendar.timegm(time.strptime(day["day"], "%Y-%m-%d"))
                assert day["spend"] == exp.day_cents.get((user, start), 0) / 100, (user, day)
        assert get_status(f"http://localhost:{port}/users/no-such-user/stats") == 404


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


def get_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        assert json.loads(exc.read())["error"]
        return exc.code


def wait_ready(proc: Proc, port: int, partitions: int = 1) -> None:
    def ready() -> bool:
        body = json.loads(wait_http(f"http://localhost:{port}/health", proc=proc))
        return len(body["partitions"]) >= partitions
    wait_for(ready, timeout=90, message=f"{proc.name} to get partitions")


@pytest.fixture
def pipeline(tmp_path: Path, unique: str) -> Any:
    p = Pipeline(tmp_path, unique)
    ensure_topic(settings.kafka_bootstrap_servers, p.topic, PARTITIONS)
    yield p
    for proc, _ in p.workers:
        proc.stop()


def test_clean_run(pipeline: Pipeline) -> None:
    proc, port = pipeline.worker("worker")
    with proc:
        wait_ready(proc, port, PARTITIONS)
        started = time.monotonic()
        pipeline.produce()
        pipeline.wait_processed()
        elapsed = time.monotonic() - started
        exp = pipeline.check_topics()
        pipeline.check_views(exp, port)
        assert metric(port, "txn_processed_total") == len(exp.enriched)
        assert metric(port, "txn_dlq_total") == len(exp.invalid)
        assert metric(port, "txn_anomalies_total") == len(exp.anomalies)
        assert metric(port, "txn_consumer_lag_total") == 0
    print(f"\nclean run: {COUNT} messages produced and processed in {elapsed:.1f} s")


def metric(port: int, name: str) -> int:
    text = urllib.request.urlopen(f"http://localhost:{port}/metrics", timeout=10).read().decode()
    # prometheus_client writes every value as a float: "txn_processed_total 20196.0"
    return int(float(next(line.split()[1] for line in text.splitlines()
                          if line.startswith(name + " "))))


def test_sigkill_and_restart(pipeline: Pipeline) -> None:
    rnd = random.Random()
    proc, port = pipeline.worker("worker")
    proc.start()
    wait_ready(proc, port, PARTITIONS)
    chunk = COUNT // 4
    kills, processed, replayed = 0, [], 0
    for round_ in range(4):
        # fresh work each round, killed while (or just after) the worker is on it; the last
        # round also replays the first one's range (duplicate ids, skipped across a crash too)
        pipeline.produce(chunk if round_ < 3 else COUNT - 3 * chunk, first_seq=round_ * chunk)
        if round_ == 3:
            pipeline.produce(chunk, first_seq=0)
        time.sleep(rnd.uniform(0.2, 2.5))  # mid-batch, mid-commit, wherever it is
        processed.append(metric(port, "txn_processed_total"))
        replayed += metric(port, "txn_replayed_total")
        proc.kill()
        kills += 1
        proc.start()
        wait_ready(proc, port, PARTITIONS)
    assert kills >= 3
    pipeline.wait_processed()
    replayed += metric(port, "txn_replayed_total")
    exp = pipeline.check_topics()
    assert exp.duplicates > chunk * 0.9
    pipeline.check_views(exp, port)
    print(f"\n{kills} SIGKILLs after {processed} new transactions per run; "
          f"redelivered messages the tables already held: {replayed}")


def test_two_workers_answer_for_every_user(pipeline: Pipeline) -> None:
    (a, port_a), (b, port_b) = pipeline.worker("worker-a"), pipeline.worker("worker-b")
    with a, b:
        wait_ready(a, port_a)
        wait_ready(b, port_b)

        def split() -> bool:
            got = [set(get_json(f"http://localhost:{p}/health")["partitions"])
                   for p in (port_a, port_b)]
            return bool(got[0] and got[1] and not got[0] & got[1]
                        and len(got[0] | got[1]) == PARTITIONS)
        wait_for(split, timeout=90, message="the two workers to split the partitions")
        pipeline.produce(8_000)
        pipeline.wait_processed()
        exp = recompute(read_topic(pipeline.topic))
        pipeline.check_views(exp, port_a)
        pipeline.check_views(exp, port_b)
        served = {get_json(f"http://localhost:{p}/users/{u}/stats")["served_by"]
                  for p in (port_a, port_b) for u in exp.users}
        assert served == {f"http://localhost:{port_a}", f"http://localhost:{port_b}"}


def send_foreign(topic: str, count: int) -> list[tuple[bytes, bytes]]:
    """What another producer might send: random opaque ids, its own JSON layout (no sorted keys,
    spaces), and pairs of identical purchases that differ only by their ids."""
    rnd = random.Random(11)
    now = time.time()
    messages = []
    for i in range(count):
        if i % 10 == 1:  # the same purchase as the previous message, under another id
            txn = {**orjson.loads(messages[-1][1]), "txn_id": f"{rnd.getrandbits(256):064x}"}
        else:
            user = f"foreign-{i % 25}"
            when = time.gmtime(now - count + i)
            txn = {"timestamp": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", when),
                   "user_id": user, "txn_id": f"{rnd.getrandbits(256):064x}",
                   "amount": round(rnd.uniform(1, 500), 2), "currency": "EUR",
                   "merchant_id": "shop-1", "merchant_category": "books_media",
                   "payment_method": "paypal", "status": "approved",
                   "location": {"country": "FR", "city": "Nantes"}}
        messages.append((txn["user_id"].encode(), json.dumps(txn, indent=1).encode()))
    resend(topic, messages)
    return messages


def resend(topic: str, messages: list[tuple[bytes, bytes]]) -> None:
    # kafka-python places keyed records like every Kafka client (murmur2 of the key)
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, acks="all")
    for key, value in messages:  # the Kafka timestamp is the event's, as the contract asks
        when = parse_timestamp(orjson.loads(value)["timestamp"]).timestamp()
        producer.send(topic, key=key, value=value, timestamp_ms=round(when * 1000))
    producer.flush()
    producer.close()


def test_foreign_ids_and_replays(pipeline: Pipeline) -> None:
    """Another producer's well-formed transactions are processed (the id is opaque), and
    sending every valid transaction a second time (the producer replaying its range from
    sequence number 0, the other producer re-sending) changes no statistic and emits nothing,
    also on a worker that rebuilt its tables from the changelogs (an empty data directory)."""
    first, port = pipeline.worker("first")
    with first:
        wait_ready(first, port, PARTITIONS)
        pipeline.produce()
        foreign = send_foreign(pipeline.topic, 1_000)
        pipeline.wait_processed()
        before = metric(port, "txn_enriched_total")
        assert metric(port, "txn_processed_total") == before  # nothing of it dead-lettered
    proc, port = pipeline.worker("rebuilt")
    with proc:
        wait_ready(proc, port, PARTITIONS)
        pipeline.produce()  # the same range again: the same ids
        resend(pipeline.topic, foreign)
        pipeline.wait_processed()
        exp = pipeline.check_topics(once=True)
        assert sum(1 for t in exp.enriched if t in {orjson.loads(v)["txn_id"]
                                                     for _, v in foreign}) == 1_000
        assert exp.duplicates == len(exp.enriched) > 20_000
        assert metric(port, "txn_duplicates_total") == exp.duplicates
        assert metric(port, "txn_enriched_total") == 0 and before == len(exp.enriched)
        pipeline.check_views(exp, port)
