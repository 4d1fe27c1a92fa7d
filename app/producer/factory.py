"""Transactions as a pure function of (seed and settings, sequence number), and their ids."""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np
import orjson

from app.contract import MAX_AMOUNT, PAYMENT_METHODS, STATUSES
from app.producer.faults import ALL_KINDS, BAD_KINDS, corrupt, fault_time
from app.producer.pools import draw_cities, draw_merchants, draw_users

#: Share of each status, in percent (sums to 100).
STATUS_PERCENT = {"approved": 92, "declined": 4, "pending": 3, "refunded": 1}
assert set(STATUS_PERCENT) == set(STATUSES) and sum(STATUS_PERCENT.values()) == 100

TRAVEL_SHARE = 0.04        # purchases made away from the user's home city
PREFERRED_METHOD_SHARE = 0.9
NORMAL_CLIP = 2.5          # normal amounts stay within typical * (1 +- 2.5 * spread)
ANOMALY_SIGMA = (10.0, 25.0)  # injected outliers: typical * (1 + k * spread), k in this range
BLOCK = 1024               # sequence numbers drawn together from one seeded generator


class Message(NamedTuple):
    seq: int
    key: bytes
    value: bytes
    timestamp_ms: int
    txn_id: str
    user_id: str
    anomaly: dict[str, Any] | None
    bad: str | None


def make_txn_id(seed: int, seq: int, canonical: bytes) -> str:
    """The ``txn_id`` of sequence number ``seq``: SHA-256 of the seed, the sequence number and
    the content (``canonical``: its JSON). Replaying a range gives the same ids; two identical
    purchases get distinct ones. Consumers treat it as opaque."""
    return hashlib.sha256(b"%d:%d:" % (seed, seq) + canonical).hexdigest()


def _second_text(second: int) -> str:
    """``2026-11-25T23:00:13`` (UTC) for an epoch second."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))


class TransactionFactory:
    """Transactions as a pure function of (the constructor's arguments, sequence number).

    Users, merchants and cities are drawn once from ``seed`` with Faker
    (:mod:`app.producer.pools`); each sequence number then only picks from the pools with numbers
    from a generator seeded by (seed, seq // BLOCK).

    ``bad_kinds``: the kinds of invalid message ``bad_rate`` cycles through (default: the
    contract's, :data:`~app.producer.faults.BAD_KINDS`); ``clock_ms``: the wall clock a
    ``future_event`` is a day ahead of (default: now).
    """

    def __init__(self, seed: int = 42, users: int = 10_000, merchants: int = 1_000,
                 anomaly_rate: float = 0.002, bad_rate: float = 0.0,
                 start_ms: int | None = None, step_us: int = 1_000,
                 bad_kinds: Sequence[str] = BAD_KINDS, clock_ms: int | None = None) -> None:
        if users < 1 or merchants < 1:
            raise ValueError("users and merchants must be >= 1")
        if not 0 <= anomaly_rate <= 1 or not 0 <= bad_rate <= 1:
            raise ValueError("anomaly_rate and bad_rate must be in [0, 1]")
        if step_us < 0:
            raise ValueError("step_us must be >= 0")
        unknown = [k for k in bad_kinds if k not in ALL_KINDS]
        if unknown or not bad_kinds:
            raise ValueError(f"bad_kinds must be some of {', '.join(ALL_KINDS)}")
        self.seed, self.anomaly_rate, self.bad_rate = seed, anomaly_rate, bad_rate
        self.bad_kinds = tuple(bad_kinds)
        now_ms = int(time.time() * 1000)
        self.clock_ms = now_ms if clock_ms is None else int(clock_ms)
        self.start_ms = now_ms // 1000 * 1000 if start_ms is None else int(start_ms)
        self.step_us = int(step_us)
        rnd = random.Random(seed)
        self.cities = draw_cities(seed)
        self.users = draw_users(rnd, users, self.cities)
        self.merchants = draw_merchants(rnd, merchants)
        # Some users buy much more often than others (log-normal activity).
        weights = np.array([rnd.lognormvariate(0, 1) for _ in range(users)])
        self._user_cum = np.cumsum(weights) / weights.sum()
        self._user_cum[-1] = 1.0
        self._status = [s for s, pct in STATUS_PERCENT.items() for _ in range(pct)]
        self._last_block: tuple[int, dict[str, list[Any]]] = (-1, {})

    def _block(self, block: int) -> dict[str, list[Any]]:
        """Every random number the sequence numbers of one block need, as Python lists (the
        last block is kept: a rate-limited sender asks for a few messages at a time)."""
        if self._last_block[0] == block:
            return self._last_block[1]
        draws = self._draw(block)
        self._last_block = (block, draws)
        return draws

    def _draw(self, block: int) -> dict[str, list[Any]]:
        rng = np.random.default_rng([self.seed, block])
        n = BLOCK
        return {
            "user": np.searchsorted(self._user_cum, rng.random(n), side="right").tolist(),
            "noise": np.clip(rng.standard_normal(n), -NORMAL_CLIP, NORMAL_CLIP).tolist(),
            "merchant": rng.integers(0, len(self.merchants), n).tolist(),
            "method_u": rng.random(n).tolist(),
            "method_i": rng.integers(0, 1 << 30, n).tolist(),
            "status": rng.integers(0, 100, n).tolist(),
            "travel_u": rng.random(n).tolist(),
            "city": rng.integers(0, len(self.cities), n).tolist(),
            "anomaly_u": rng.random(n).tolist(),
            "sigma": rng.uniform(*ANOMALY_SIGMA, n).tolist(),
            "bad_u": rng.random(n).tolist(),
            "bad_kind": rng.integers(0, 1 << 30, n).tolist(),
        }

    def make(self, seq: int) -> Message:
        """The message of sequence number ``seq``."""
        return next(self.messages(seq, 1))

    def messages(self, first_seq: int, count: int) -> Iterator[Message]:
        """The messages of ``first_seq`` ... ``first_seq + count - 1``, in order."""
        if first_seq < 0:
            raise ValueError("sequence numbers start at 0")
        users, merchants, cities, status_of = self.users, self.merchants, self.cities, self._status
        anomaly_rate, bad_rate = self.anomaly_rate, self.bad_rate
        start_ms, step_us = self.start_ms, self.step_us
        sort_keys, seed = orjson.OPT_SORT_KEYS, self.seed
        bad_kinds, clock_ms = self.bad_kinds, self.clock_ms
        seq, end = first_seq, first_seq + count
        ts_second, ts_prefix = -1, ""
        while seq < end:
            block, lo = divmod(seq, BLOCK)
            hi = min(BLOCK, lo + end - seq)
            r = self._block(block)
            noise, method_u, travel_u, anomaly_u = r["noise"], r["method_u"], r["travel_u"], \
                r["anomaly_u"]
            for i in range(lo, hi):
                user = users[r["user"][i]]
                merchant = merchants[r["merchant"][i]]
                anomaly = bad_rate <= r["bad_u"][i] and anomaly_u[i] < anomaly_rate
                k = r["sigma"][i] if anomaly else noise[i]
                amount = round(min(max(user.typical * (1 + user.spread * k), 0.01),
                                   MAX_AMOUNT), 2)
                if method_u[i] < PREFERRED_METHOD_SHARE:
                    method = user.methods[r["method_i"][i] % len(user.methods)]
                else:
                    method = PAYMENT_METHODS[r["method_i"][i] % len(PAYMENT_METHODS)]
                city, country = (cities[r["city"][i]] if travel_u[i] < TRAVEL_SHARE
                                 else (user.city, user.country))
                ts_ms = start_ms + seq * step_us // 1000
                second, ms = divmod(ts_ms, 1000)
                if second != ts_second:
                    ts_second, ts_prefix = second, _second_text(second)
                timestamp = f"{ts_prefix}.{ms:03d}+00:00"
                content = {
                    "amount": amount, "currency": user.currency,
                    "location": {"city": city, "country": country},
                    "merchant_category": merchant.category, "merchant_id": merchant.merchant_id,
                    "payment_method": method, "status": status_of[r["status"][i]],
                    "timestamp": timestamp, "user_id": user.user_id,
                }
                canonical = orjson.dumps(content, option=sort_keys)
                txn_id = make_txn_id(seed, seq, canonical)
                key = user.key
                if r["bad_u"][i] < bad_rate:
                    kind = bad_kinds[r["bad_kind"][i] % len(bad_kinds)]
                    bad_ms = fault_time(kind, ts_ms, clock_ms)
                    value = corrupt(kind, content, canonical, txn_id, r["bad_kind"][i], bad_ms)
                    yield Message(seq, key, value, bad_ms, txn_id, user.user_id, None, kind)
                else:
                    # The canonical JSON with txn_id in front: the contract's message.
                    value = b'{"txn_id":"' + txn_id.encode() + b'",' + canonical[1:]
                    truth = None
                    if anomaly:
                        truth = {"txn_id": txn_id, "seq": seq, "user_id": user.user_id,
                                 "amount": amount, "currency": user.currency,
                                 "timestamp": timestamp, "kind": "amount_spike",
                                 "typical_amount": user.typical,
                                 "spread": round(user.spread, 4), "sigma": round(k, 3),
                                 "how": "amount = typical_amount * (1 + sigma * spread)"}
                    yield Message(seq, key, value, ts_ms, txn_id, user.user_id, truth, None)
                seq += 1
