"""The producer: realistic, reproducible card transactions and a rate-controlled Kafka sender.

Pure Python (numpy, Faker, orjson, kafka-python, :mod:`app.contract`, :mod:`app.settings`), no
Faust import, so tests and benchmarks use it directly. ``txn produce`` (:mod:`app.commands`) is
its command line; ``docs/producer.md`` explains the data and the numbers.

API
---
::

    from app.producer import TransactionFactory, generate, send

    factory = TransactionFactory(seed=42, users=10_000, merchants=1_000, anomaly_rate=0.002,
                                 bad_rate=0.0, start_ms=None, step_us=1_000)
    # start_ms: event time of sequence number 0 (epoch ms; None = now, rounded down to the
    # second, kept in factory.start_ms); step_us: event-time microseconds between two sequence
    # numbers, so the timestamp of seq is start_ms + seq * step_us // 1000.
    # The same arguments and seq always give the same message, byte for byte.

    msg = factory.make(seq)          # one Message
    for msg in factory.messages(first_seq, count): ...   # the same messages, faster
    msg.seq, msg.key (bytes: user_id), msg.value (bytes: the JSON message),
    msg.timestamp_ms (event time = the Kafka timestamp), msg.txn_id, msg.user_id,
    msg.anomaly (None, or a dict: the --truth line describing the injected outlier),
    msg.bad (None, or one of BAD_KINDS: the message is deliberately invalid)

    summary = send(factory, topic, bootstrap="localhost:9092", rate=1000, count=20_000,
                   duration=None, first_seq=0, truth="truth.jsonl", progress=sys.stderr)
    summary = generate(factory, count=100_000, rate=0)    # the same loop without Kafka
    summary.sent, .errors, .rate, .seconds, .anomalies, .bad, .next_seq, str(summary)
    # str(summary) == "sent=20000 rate=999.8 errors=0 anomalies=41 bad=0 seconds=20.00 ..."

``rate=0`` sends as fast as possible; ``count=None`` and ``duration=None`` run until Ctrl-C
(SIGINT/SIGTERM), which stops, flushes and returns the summary.
"""

from __future__ import annotations

import hashlib
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any, NamedTuple

import numpy as np
import orjson
from faker import Faker

from app.contract import CATEGORIES, MAX_AMOUNT, MAX_ID_LENGTH, PAYMENT_METHODS, STATUSES

__all__ = [
    "BAD_KINDS",
    "COUNTRIES",
    "Message",
    "Summary",
    "TokenBucket",
    "TransactionFactory",
    "ensure_topic",
    "generate",
    "make_producer",
    "make_txn_id",
    "send",
    "step_us_for",
]

#: (country, currency, Faker locale, currency units per US dollar, share of the users).
COUNTRIES: tuple[tuple[str, str, str, float, int], ...] = (
    ("US", "USD", "en_US", 1.0, 30),
    ("GB", "GBP", "en_GB", 0.8, 10),
    ("DE", "EUR", "de_DE", 0.92, 9),
    ("FR", "EUR", "fr_FR", 0.92, 7),
    ("ES", "EUR", "es_ES", 0.92, 5),
    ("IT", "EUR", "it_IT", 0.92, 5),
    ("NL", "EUR", "nl_NL", 0.92, 3),
    ("CA", "CAD", "en_CA", 1.35, 5),
    ("AU", "AUD", "en_AU", 1.5, 4),
    ("JP", "JPY", "ja_JP", 150.0, 5),
    ("BR", "BRL", "pt_BR", 5.0, 4),
    ("IN", "INR", "en_IN", 83.0, 5),
    ("PL", "PLN", "pl_PL", 4.0, 3),
    ("SE", "SEK", "sv_SE", 10.5, 2),
    ("CH", "CHF", "de_CH", 0.88, 2),
    ("MX", "MXN", "es_MX", 17.0, 1),
)

#: The kinds of deliberately invalid messages (``--bad-rate``), each one fault the DLQ handles.
BAD_KINDS = ("bad_json", "missing_field", "wrong_type", "negative_amount", "bad_currency",
             "oversize_string")

#: Share of each status, in percent (sums to 100).
STATUS_PERCENT = {"approved": 92, "declined": 4, "pending": 3, "refunded": 1}
assert set(STATUS_PERCENT) == set(STATUSES) and sum(STATUS_PERCENT.values()) == 100

CITIES_PER_COUNTRY = 25
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


@dataclass(frozen=True)
class User:
    user_id: str
    country: str
    currency: str
    city: str
    typical: float          # typical amount, in the user's currency
    spread: float           # relative standard deviation of the user's amounts
    methods: tuple[str, ...]  # preferred payment methods
    key: bytes = b""          # user_id as bytes: the Kafka key

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", self.user_id.encode())


@dataclass(frozen=True)
class Merchant:
    merchant_id: str
    category: str


def _slug(text: str) -> str:
    """``"Nolan, Johnson and Stevens"`` -> ``"nolan_johnson_and_stevens"``."""
    kept = "".join(c if c.isalnum() and c.isascii() else " " for c in text.lower())
    return "_".join(kept.split())


class TransactionFactory:
    """Transactions as a pure function of (the constructor's arguments, sequence number).

    Users, merchants and cities are drawn once from ``seed`` with Faker; each sequence number then
    only picks from the pools with numbers from a generator seeded by (seed, seq // BLOCK).
    """

    def __init__(self, seed: int = 42, users: int = 10_000, merchants: int = 1_000,
                 anomaly_rate: float = 0.002, bad_rate: float = 0.0,
                 start_ms: int | None = None, step_us: int = 1_000) -> None:
        if users < 1 or merchants < 1:
            raise ValueError("users and merchants must be >= 1")
        if not 0 <= anomaly_rate <= 1 or not 0 <= bad_rate <= 1:
            raise ValueError("anomaly_rate and bad_rate must be in [0, 1]")
        if step_us < 0:
            raise ValueError("step_us must be >= 0")
        self.seed, self.anomaly_rate, self.bad_rate = seed, anomaly_rate, bad_rate
        self.start_ms = int(time.time()) * 1000 if start_ms is None else int(start_ms)
        self.step_us = int(step_us)
        rnd = random.Random(seed)
        self.cities = self._cities(seed)
        self.users = self._users(rnd, users)
        self.merchants = self._merchants(rnd, merchants)
        # Some users buy much more often than others (log-normal activity).
        weights = np.array([rnd.lognormvariate(0, 1) for _ in range(users)])
        self._user_cum = np.cumsum(weights) / weights.sum()
        self._user_cum[-1] = 1.0
        self._status = [s for s, pct in STATUS_PERCENT.items() for _ in range(pct)]
        self._last_block: tuple[int, dict[str, list[Any]]] = (-1, {})

    # --- the pools, drawn once ------------------------------------------------------------------
    @staticmethod
    def _cities(seed: int) -> list[tuple[str, str]]:
        cities: list[tuple[str, str]] = []
        for i, (country, _, locale, _, _) in enumerate(COUNTRIES):
            fake = Faker(locale)
            for provider in fake.providers:
                # it_IT builds its city list from a set: its order (so the seeded draws) would
                # change with PYTHONHASHSEED. A sorted copy keeps every process identical.
                if isinstance(getattr(provider, "cities", None), (list, tuple)):
                    provider.cities = sorted(provider.cities)
            fake.seed_instance(seed * 1000 + i)
            names = dict.fromkeys(fake.city()[:128] for _ in range(CITIES_PER_COUNTRY * 2))
            cities += [(name, country) for name in list(names)[:CITIES_PER_COUNTRY]]
        return cities

    def _users(self, rnd: random.Random, count: int) -> list[User]:
        fake = Faker("en_US")
        fake.seed_instance(seed_for(rnd))
        country_weights = [c[4] for c in COUNTRIES]
        by_country: dict[str, list[str]] = {}
        for city, country in self.cities:
            by_country.setdefault(country, []).append(city)
        users = []
        for i in range(count):
            country, currency, _, per_usd, _ = rnd.choices(COUNTRIES, country_weights)[0]
            typical_usd = min(max(rnd.lognormvariate(3.6, 0.9), 3.0), 2_000.0)
            methods = tuple(rnd.sample(PAYMENT_METHODS, rnd.choice((1, 1, 2, 2, 3))))
            users.append(User(
                user_id=f"{_slug(fake.user_name())[:40]}_{i}",
                country=country, currency=currency, city=rnd.choice(by_country[country]),
                typical=round(typical_usd * per_usd, 2), spread=rnd.uniform(0.08, 0.35),
                methods=methods))
        return users

    @staticmethod
    def _merchants(rnd: random.Random, count: int) -> list[Merchant]:
        fake = Faker("en_US")
        fake.seed_instance(seed_for(rnd))
        return [Merchant(f"m_{_slug(fake.company())[:40]}_{i}", rnd.choice(CATEGORIES))
                for i in range(count)]

    # --- per sequence number --------------------------------------------------------------------
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
                    kind = BAD_KINDS[r["bad_kind"][i] % len(BAD_KINDS)]
                    value = _corrupt(kind, content, canonical, txn_id, r["bad_kind"][i])
                    yield Message(seq, key, value, ts_ms, txn_id, user.user_id, None, kind)
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


def _second_text(second: int) -> str:
    """``2026-11-25T23:00:13`` (UTC) for an epoch second."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))


def seed_for(rnd: random.Random) -> int:
    return rnd.getrandbits(32)


def make_txn_id(seed: int, seq: int, canonical: bytes) -> str:
    """The ``txn_id`` of sequence number ``seq``: SHA-256 of the seed, the sequence number and
    the content (``canonical``: its JSON). Replaying a range gives the same ids; two identical
    purchases get distinct ones. Consumers treat it as opaque."""
    return hashlib.sha256(b"%d:%d:" % (seed, seq) + canonical).hexdigest()


def _corrupt(kind: str, content: dict[str, Any], canonical: bytes, txn_id: str,
             pick: int) -> bytes:
    """One invalid message of ``kind``; every other field stays right (the id too, when the
    message still has one), so the validator's reason is exactly the intended fault."""
    bad = dict(content)
    if kind == "bad_json":
        good = b'{"txn_id":"' + txn_id.encode() + b'",' + canonical[1:]
        return good[: len(good) // 2]
    if kind == "missing_field":
        del bad[("amount", "currency", "timestamp", "merchant_id", "status", "location")[pick % 6]]
    elif kind == "wrong_type":
        bad["amount"] = f"{content['amount']:.2f}"
    elif kind == "negative_amount":
        bad["amount"] = -content["amount"]
    elif kind == "bad_currency":
        bad["currency"] = ("usd", "EURO", "U$", "12X")[pick % 4]
    elif kind == "oversize_string":
        bad["merchant_id"] = content["merchant_id"] + "_" + "x" * (MAX_ID_LENGTH + pick % 200)
    else:
        raise ValueError(f"unknown kind of bad message: {kind}")
    return orjson.dumps({"txn_id": txn_id, **bad})


def step_us_for(rate: float, time_scale: float = 1.0, default_rate: int = 1000) -> int:
    """Event-time microseconds between two transactions: at ``rate`` per second and
    ``time_scale`` event seconds per wall second (``rate`` 0: ``default_rate``)."""
    pace = rate if rate > 0 else (default_rate or 1000)
    return max(0, round(1_000_000 * time_scale / pace))


# --- rate control -------------------------------------------------------------------------------
class TokenBucket:
    """``rate`` tokens a second, at most ``capacity`` saved up (0.1 s worth by default)."""

    def __init__(self, rate: float, capacity: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0:
            raise ValueError("rate must be > 0")
        self.rate, self.clock = float(rate), clock
        self.capacity = capacity if capacity is not None else max(1.0, rate * 0.1)
        self.tokens = 0.0
        self.last = clock()

    def take(self, n: int) -> int:
        """Take ``n`` tokens (at most the capacity) if there are that many: returns how many
        were taken, ``n`` or 0. Taking whole chunks keeps the per-message overhead low."""
        now = self.clock()
        self.tokens = min(self.capacity, self.tokens + (now - self.last) * self.rate)
        self.last = now
        n = max(1, min(n, int(self.capacity)))
        if self.tokens < n:
            return 0
        self.tokens -= n
        return n

    def wait(self, n: int = 1) -> float:
        """Seconds until ``n`` tokens are there."""
        return max(0.0, (min(n, int(self.capacity)) - self.tokens) / self.rate)


# --- sending ------------------------------------------------------------------------------------
@dataclass
class Summary:
    sent: int = 0
    errors: int = 0
    seconds: float = 0.0
    anomalies: int = 0
    bad: int = 0
    first_seq: int = 0
    next_seq: int = 0
    dry_run: bool = False
    last_error: str = ""
    error_kinds: dict[str, int] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0

    def __str__(self) -> str:
        text = (f"sent={self.sent} rate={self.rate:.1f} errors={self.errors} "
                f"anomalies={self.anomalies} bad={self.bad} seconds={self.seconds:.2f} "
                f"seqs={self.first_seq}..{self.next_seq - 1}")
        if self.dry_run:
            text += " dry_run=1"
        if self.last_error:
            text += f" last_error={self.last_error!r}"
        return text


def make_producer(bootstrap: str, **overrides: Any) -> Any:
    """A kafka-python producer set up for the contract: acks=all, idempotent, LZ4, batched."""
    from kafka import KafkaProducer

    config: dict[str, Any] = dict(
        bootstrap_servers=bootstrap.split(","),
        acks="all",
        enable_idempotence=True,
        compression_type="lz4",
        linger_ms=20,
        batch_size=512 * 1024,
        max_request_size=4 * 1024 * 1024,
        max_in_flight_requests_per_connection=5,
        delivery_timeout_ms=120_000,
        max_block_ms=30_000,
        client_id="txn-producer",
    )
    config.update(overrides)
    return KafkaProducer(**config)


#: Kafka 4 rejects records more than an hour ahead of the broker's clock by default
#: (``message.timestamp.after.max.ms``); event time runs ahead with ``--time-scale`` or ``--rate 0``
#: (and with a later ``--start``), so the producer lifts that limit on its topic.
TOPIC_CONFIGS = {"message.timestamp.after.max.ms": str(2**63 - 1)}


def ensure_topic(bootstrap: str, topic: str, partitions: int) -> bool:
    """Create ``topic`` with ``partitions`` partitions unless it exists (True if created), and
    set :data:`TOPIC_CONFIGS` on it (on an existing topic too, incrementally)."""
    from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(bootstrap_servers=bootstrap.split(","), client_id="txn-producer")
    try:
        if topic not in admin.list_topics():
            try:
                admin.create_topics([NewTopic(topic, partitions, 1,
                                              topic_configs=dict(TOPIC_CONFIGS))])
                return True
            except TopicAlreadyExistsError:
                pass
        admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic,
                                            configs=dict(TOPIC_CONFIGS))])
        return False
    finally:
        admin.close()


class _Partitions(dict[bytes, int]):
    """key -> partition, like Kafka's default partitioner for keyed records, memoised."""

    def __init__(self, count: int) -> None:
        super().__init__()
        self.count = count

    def __missing__(self, key: bytes) -> int:
        from kafka.partitioner.default import murmur2

        self[key] = partition = (murmur2(key) & 0x7FFFFFFF) % self.count
        return partition


class _Stop:
    """A flag set by SIGINT/SIGTERM while the send loop runs (main thread only)."""

    def __init__(self, event: threading.Event | None) -> None:
        self.event = event or threading.Event()
        self.saved: dict[int, Any] = {}

    def __enter__(self) -> threading.Event:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.saved[sig] = signal.signal(sig, lambda *_: self.event.set())
        return self.event

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.saved.items():
            signal.signal(sig, handler)


def _run(factory: TransactionFactory, deliver: Callable[[Message], None] | None,
         pending: Callable[[], int], acked: Callable[[], int], summary: Summary, *,
         first_seq: int, rate: float, count: int | None, duration: float | None,
         truth: IO[bytes] | None, progress: IO[str] | None, stop: Any,
         max_pending: int) -> None:
    """The loop shared by :func:`send` and :func:`generate`: from ``first_seq`` on, until
    ``count``, ``duration`` or ``stop`` (an Event); sets ``summary.next_seq``."""
    bucket = TokenBucket(rate) if rate > 0 else None
    chunk = 1000 if bucket is None else max(1, min(1000, int(rate // 200) or 1))
    seq = first_seq
    end = None if count is None else first_seq + count
    t0 = time.monotonic()
    deadline = None if duration is None else t0 + duration
    next_report, last_report_sent, last_report_t = t0 + 1, 0, t0
    while not stop.is_set():
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            break
        if progress is not None and now >= next_report:
            done = acked()
            current = (done - last_report_sent) / (now - last_report_t)
            progress.write(f"[produce] sent={done} rate={current:.0f}/s "
                           f"errors={summary.errors} queue={pending()} seq={seq}\n")
            progress.flush()
            next_report, last_report_sent, last_report_t = now + 1, done, now
        n = chunk if end is None else min(chunk, end - seq)
        if n <= 0:
            break
        if bucket is not None:
            wanted, n = n, bucket.take(n)
            if n == 0:
                time.sleep(min(bucket.wait(wanted), 0.05))
                continue
        if deliver is not None and pending() > max_pending:
            while pending() > max_pending // 2 and not stop.is_set():
                time.sleep(0.002)
        for msg in factory.messages(seq, n):
            if deliver is not None:
                deliver(msg)
            if msg.anomaly is not None:
                summary.anomalies += 1
                if truth is not None:
                    truth.write(orjson.dumps(msg.anomaly) + b"\n")
            elif msg.bad is not None:
                summary.bad += 1
        seq += n
        summary.next_seq = seq
    summary.seconds += time.monotonic() - t0


def generate(factory: TransactionFactory, *, rate: float = 0, count: int | None = None,
             duration: float | None = None, first_seq: int = 0, truth: str | None = None,
             progress: IO[str] | None = None, stop: threading.Event | None = None) -> Summary:
    """Generate and serialise without sending (``--dry-run``); ``sent`` counts the messages."""
    summary = Summary(first_seq=first_seq, next_seq=first_seq, dry_run=True)
    truth_file = open(truth, "wb") if truth else None
    try:
        with _Stop(stop) as flag:
            _run(factory, None, lambda: 0, lambda: summary.next_seq - first_seq, summary,
                 first_seq=first_seq, rate=rate, count=count, duration=duration, truth=truth_file,
                 progress=progress, stop=flag, max_pending=0)
    finally:
        if truth_file is not None:
            truth_file.close()
    summary.sent = summary.next_seq - first_seq
    return summary


def send(factory: TransactionFactory, topic: str, *, bootstrap: str | None = None,
         rate: float = 0, count: int | None = None, duration: float | None = None,
         first_seq: int = 0, truth: str | None = None, progress: IO[str] | None = None,
         stop: threading.Event | None = None, partitions: int | None = None,
         max_pending: int = 200_000, producer: Any = None, processes: int = 1) -> Summary:
    """Send ``factory``'s messages to ``topic``; returns when ``count`` are delivered (or failed),
    ``duration`` has passed or the process got SIGINT/SIGTERM. Creates the topic with
    ``partitions`` (default ``TOPIC_PARTITIONS``) when it does not exist.

    ``processes`` > 1 forks helpers: every process walks the same sequence numbers at the same
    rate and sends only the keys of its share of the partitions (partition % processes), so each
    partition still gets its messages in order from one producer; on a stop they agree on one
    end sequence number, so a run always covers ``first_seq .. next_seq - 1`` exactly."""
    from app.settings import settings

    bootstrap = bootstrap or settings.kafka_bootstrap_servers
    ensure_topic(bootstrap, topic, partitions or settings.topic_partitions)
    options: dict[str, Any] = dict(rate=rate, count=count, duration=duration,
                                   first_seq=first_seq, max_pending=max_pending)
    if processes <= 1:
        return _send_share(factory, topic, bootstrap, truth=truth, progress=progress,
                           stop=stop, producer=producer, **options)
    return _send_parallel(factory, topic, bootstrap, processes, truth=truth,
                          progress=progress, **options)


class _Coordinator:
    """What the processes of a parallel send share (created before the fork)."""

    def __init__(self, ctx: Any, workers: int) -> None:
        self.workers = workers
        self.stop = ctx.Event()
        self.barrier = ctx.Barrier(workers)
        self.next_seqs = ctx.RawArray("q", workers)
        self.delivered = ctx.RawArray("q", workers)
        self.results = ctx.Queue()

    def end_seq(self, worker: int, next_seq: int) -> int:
        """Stop everyone, wait for everyone, and return the common end sequence number."""
        self.stop.set()
        self.next_seqs[worker] = next_seq
        try:
            self.barrier.wait(timeout=120)
        except threading.BrokenBarrierError:  # a helper died: finish our own part only
            return next_seq
        return max(self.next_seqs)


def _send_parallel(factory: TransactionFactory, topic: str, bootstrap: str, processes: int,
                   *, truth: str | None, progress: IO[str] | None, **options: Any) -> Summary:
    import multiprocessing
    import os

    ctx = multiprocessing.get_context("fork")
    coord = _Coordinator(ctx, processes)

    def helper(worker: int) -> None:
        try:
            result = _send_share(factory, topic, bootstrap, truth=None, progress=None,
                                 stop=coord.stop, worker=worker, coord=coord, **options)
            coord.results.put(result)
            coord.results.close()
            coord.results.join_thread()  # the result is written before the process ends
        finally:
            os._exit(0)

    with _Stop(coord.stop):  # the helpers inherit the signal handlers
        helpers = [ctx.Process(target=helper, args=(w,), daemon=True)
                   for w in range(1, processes)]
        for proc in helpers:
            proc.start()
        summary = _send_share(factory, topic, bootstrap, truth=truth, progress=progress,
                              stop=coord.stop, worker=0, coord=coord, **options)
        for _ in helpers:
            try:
                part: Summary = coord.results.get(timeout=180)
            except Exception as exc:  # a helper that never reported: its share is unaccounted
                summary.last_error = f"a helper process did not report: {exc!r}"
                continue
            summary.sent += part.sent
            summary.errors += part.errors
            summary.seconds = max(summary.seconds, part.seconds)
            for name, n in part.error_kinds.items():
                summary.error_kinds[name] = summary.error_kinds.get(name, 0) + n
            summary.last_error = summary.last_error or part.last_error
        for proc in helpers:
            proc.join(timeout=30)
    return summary


def _send_share(factory: TransactionFactory, topic: str, bootstrap: str, *, rate: float,
                count: int | None, duration: float | None, first_seq: int,
                truth: str | None, progress: IO[str] | None, stop: Any, max_pending: int,
                producer: Any = None, worker: int = 0, coord: _Coordinator | None = None
                ) -> Summary:
    """:func:`send` in one process: all messages, or with ``coord`` those of ``worker``'s
    share of the partitions."""
    own = producer is None
    producer = producer or make_producer(bootstrap)
    summary = Summary(first_seq=first_seq, next_seq=first_seq)
    attempted = [0]
    delivered = [0]
    workers = coord.workers if coord is not None else 1
    shared = coord.delivered if coord is not None else None

    # Callbacks run on the producer's I/O thread, and on the caller's when a flush aborts.
    lock = threading.Lock()

    finished = [False]

    def ok(_: Any) -> None:
        with lock:
            if not finished[0]:
                delivered[0] += 1
                if shared is not None:
                    shared[worker] = delivered[0]

    def failed(exc: BaseException) -> None:
        name = type(exc).__name__
        with lock:
            if finished[0]:
                return
            summary.errors += 1
            summary.error_kinds[name] = summary.error_kinds.get(name, 0) + 1
            summary.last_error = f"{name}: {exc}"[:200]

    # The partition of each key, computed once per user: the same murmur2 hash as Kafka's
    # default partitioner (Java, kafka-python, aiokafka), so the keyed placement is unchanged.
    partition_of = _Partitions(len(producer.partitions_for(topic)))

    def deliver(msg: Message) -> None:
        partition = partition_of[msg.key]
        if workers > 1 and partition % workers != worker:
            return  # another process's share
        attempted[0] += 1
        try:
            future = producer.send(topic, key=msg.key, value=msg.value, partition=partition,
                                   timestamp_ms=msg.timestamp_ms)
        except Exception as exc:  # a full buffer or a closed producer: counted, not hidden
            failed(exc)
            return
        future.add_callback(ok)
        future.add_errback(failed)

    def pending() -> int:
        return attempted[0] - delivered[0] - summary.errors

    def acked() -> int:
        return delivered[0] if shared is None else sum(shared)

    truth_file = open(truth, "wb") if truth else None
    try:
        with _Stop(stop) as flag:
            _run(factory, deliver, pending, acked, summary, first_seq=first_seq, rate=rate,
                 count=count, duration=duration, truth=truth_file, progress=progress,
                 stop=flag, max_pending=max_pending)
            if coord is not None:  # go on to the end all processes agree on
                end = coord.end_seq(worker, summary.next_seq)
                if end > summary.next_seq:
                    _run(factory, deliver, pending, acked, summary, first_seq=summary.next_seq,
                         rate=0, count=end - summary.next_seq, duration=None, truth=truth_file,
                         progress=None, stop=threading.Event(), max_pending=max_pending)
            t_flush = time.monotonic()
            try:
                producer.flush(timeout=60)
            except Exception as exc:  # e.g. a timeout: what is still pending is counted below
                summary.last_error = f"flush: {type(exc).__name__}: {exc}"[:200]
            summary.seconds += time.monotonic() - t_flush
    finally:
        if truth_file is not None:
            truth_file.close()
        if own:
            try:
                producer.close(timeout=10)
            except Exception as exc:  # closing flushes too; the failure is already counted
                summary.last_error = summary.last_error or f"close: {exc}"[:200]
                try:
                    producer.close(timeout=0)
                except Exception:  # noqa: S110 - best effort: the sender thread is gone
                    pass
    with lock:  # from here on, every message not acknowledged counts as an error
        finished[0] = True
        lost = attempted[0] - delivered[0] - summary.errors
        summary.errors = attempted[0] - delivered[0]
        summary.sent = delivered[0]
    if lost > 0:
        summary.last_error = summary.last_error or f"{lost} messages not acknowledged"
    return summary

