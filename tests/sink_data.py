"""Test data for the sink's tests: enriched transactions and anomalies of the contract's shape,
made here (independently of the producer and the processor), and a Kafka producer for them.
tests/unit/test_sink_data.py checks that the data really follows the contract."""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from app import contract
from app.producer import make_txn_id

__all__ = ["CURRENCIES", "REPORTING", "USD_PER_UNIT", "enriched_stream", "produce",
           "to_reporting"]

#: The test data's own exchange rates (US dollars per unit), independent of app/fx_rates.csv:
#: the sink and the API only add up the ``amount_reporting`` the worker wrote.
USD_PER_UNIT = {"USD": 1.0, "EUR": 1.08, "GBP": 1.27, "JPY": 0.0067, "INR": 0.012}
#: The currencies of the test transactions, most of them in EUR.
CURRENCIES = ("EUR", "EUR", "EUR", "USD", "GBP", "JPY", "INR")
#: The reporting currency of the test data (the settings' default).
REPORTING = "USD"


def to_reporting(amount: float, currency: str, reporting: str = REPORTING) -> float:
    """``amount`` of ``currency`` in ``reporting``, two decimals."""
    return round(amount * USD_PER_UNIT[currency] / USD_PER_UNIT[reporting], 2)


def _transaction(rng: random.Random, seq: int, start: datetime, users: int,
                 merchants: int) -> dict[str, Any]:
    merchant = rng.randrange(merchants)
    txn: dict[str, Any] = {
        "user_id": f"user-{rng.randrange(users):04d}",
        "amount": round(rng.lognormvariate(3.5, 1.0) + 0.01, 2),
        "currency": rng.choice(CURRENCIES),
        "timestamp": (start + timedelta(milliseconds=37 * seq)).isoformat(),
        "merchant_id": f"merchant-{merchant:03d}",
        "merchant_category": contract.CATEGORIES[merchant % len(contract.CATEGORIES)],
        "payment_method": rng.choice(contract.PAYMENT_METHODS),
        "status": rng.choice(contract.STATUSES),
        "location": {"city": "Lyon", "country": "FR"},
    }
    if rng.random() < 0.01:
        txn["amount"] = round(txn["amount"] * 40, 2)
    txn["txn_id"] = make_txn_id(0, seq, orjson.dumps(txn))
    return txn


def enriched_stream(n: int, seed: int = 7, users: int = 40, merchants: int = 25,
                    start: datetime | None = None
                    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``n`` enriched transactions and the anomalies among them (the contract's rule), with
    ``amount_reporting`` in :data:`REPORTING` and the statistics in it."""
    rng = random.Random(seed)
    start = start or datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    stats: dict[str, tuple[int, float, float]] = {}
    daily: dict[tuple[str, str], float] = {}
    enriched, anomalies = [], []
    for seq in range(n):
        txn = _transaction(rng, seq, start, users, merchants)
        user = txn["user_id"]
        amount = to_reporting(txn["amount"], txn["currency"])
        count, mean, m2 = stats.get(user, (0, 0.0, 0.0))
        std_prev = math.sqrt(m2 / (count - 1)) if count >= 2 else 0.0
        z = (amount - mean) / std_prev if count >= 5 and std_prev > 0 else None
        count += 1
        delta = amount - mean
        mean_new = mean + delta / count
        m2 += delta * (amount - mean_new)
        stats[user] = (count, mean_new, m2)
        day = (user, txn["timestamp"][:10])
        daily[day] = daily.get(day, 0.0) + amount
        is_anomaly = z is not None and z > 3.0
        now = datetime.now(UTC).isoformat()
        reporting = {"amount_reporting": amount, "reporting_currency": REPORTING}
        enriched.append({**txn, **reporting, "user_txn_count": count,
                         "user_running_mean": mean_new,
                         "user_running_std": math.sqrt(m2 / (count - 1)) if count >= 2 else 0.0,
                         "z_score": z, "is_anomaly": is_anomaly,
                         "user_daily_spend": round(daily[day], 2), "processed_at": now})
        if is_anomaly:
            anomaly = {"txn_id": txn["txn_id"], "user_id": user, "amount": txn["amount"],
                       "currency": txn["currency"], **reporting,
                       **{k: txn[k] for k in ("merchant_id", "merchant_category", "timestamp")},
                       "z_score": z, "mean_prev": mean, "std_prev": std_prev,
                       "n_prev": count - 1, "detected_at": now}
            anomalies.append(anomaly)
    return enriched, anomalies


def produce(bootstrap: str, topic: str, records: Iterable[dict[str, Any] | bytes],
            partitions: int = 4, key_field: str = "user_id") -> int:
    """Send ``records`` (JSON, key = ``user_id``) to ``topic``; returns how many were sent."""
    from kafka import KafkaProducer
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(topic, partitions, 1)])
    except TopicAlreadyExistsError:
        pass
    finally:
        admin.close()
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20)
    sent = 0
    for record in records:
        if isinstance(record, bytes):
            producer.send(topic, key=b"poison", value=record)
        else:
            producer.send(topic, key=str(record[key_field]).encode(),
                          value=orjson.dumps(record))
        sent += 1
    producer.flush()
    producer.close()
    return sent

