"""The producer: realistic, reproducible card transactions and a rate-controlled Kafka sender.

Pure Python (numpy, Faker, orjson, kafka-python, :mod:`app.contract`, :mod:`app.settings`), no
Faust import, so tests and benchmarks use it directly. ``txn produce`` (:mod:`app.commands`) is
its command line; ``docs/producer.md`` explains the data and the numbers.

API
---
::

    from app.producer import TransactionFactory, generate, send

    factory = TransactionFactory(seed=42, users=10_000, merchants=1_000, anomaly_rate=0.002,
                                 bad_rate=0.0, start_ms=None, step_us=1_000,
                                 bad_kinds=BAD_KINDS, clock_ms=None)
    # start_ms: event time of sequence number 0 (epoch ms; None = now, rounded down to the
    # second, kept in factory.start_ms); step_us: event-time microseconds between two sequence
    # numbers, so the timestamp of seq is start_ms + seq * step_us // 1000.
    # bad_kinds: the kinds bad_rate cycles through (ALL_KINDS adds TIME_KINDS: late_event,
    # future_event); clock_ms: the wall clock a future_event is a day ahead of (None = now).
    # The same arguments and seq always give the same message, byte for byte.
    start_ms, how = start_for(None, count=N, first_seq=0, step_us=..., ahead=..., now_ms=...)
    # the start that ends a run of N at now_ms (what txn produce uses without --start)

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

Modules
-------
One idea each, listed top down; a module imports only siblings below it (no cycle)::

    sender    send(): one process or forked ones; delivery callbacks, flush, the final count
              -> parallel, loop, signals, factory, kafka
    parallel  Coordinator, fork(): helper processes each send a share; their summaries added
              -> loop, signals
    loop      Summary, run() (the send loop, chunk by chunk), generate() (no Kafka)
              -> factory, pacing, signals
    factory   Message, TransactionFactory, make_txn_id(): a message per sequence number
              -> pools, faults
    pools     COUNTRIES, User, Merchant: the Faker pools drawn once per seed
    faults    BAD_KINDS, TIME_KINDS, corrupt(), fault_time(): the deliberately invalid messages
    pacing    TokenBucket, step_us_for(), runs_ahead(), start_for(): rate control, event time
    signals   Stop: SIGINT/SIGTERM set the flag the loop checks
    kafka     make_producer(), ensure_topic(), Partitions (kafka-python, imported on use)
"""

from app.producer.factory import (
    ANOMALY_SIGMA,
    BLOCK,
    NORMAL_CLIP,
    PREFERRED_METHOD_SHARE,
    STATUS_PERCENT,
    TRAVEL_SHARE,
    Message,
    TransactionFactory,
    make_txn_id,
)
from app.producer.faults import ALL_KINDS, BAD_KINDS, TIME_KINDS
from app.producer.kafka import ensure_topic, make_producer
from app.producer.loop import Summary, generate
from app.producer.pacing import TokenBucket, runs_ahead, start_for, step_us_for
from app.producer.pools import CITIES_PER_COUNTRY, COUNTRIES, Merchant, User, seed_for
from app.producer.sender import send

__all__ = [
    "ALL_KINDS",
    "ANOMALY_SIGMA",
    "BAD_KINDS",
    "BLOCK",
    "CITIES_PER_COUNTRY",
    "COUNTRIES",
    "Merchant",
    "Message",
    "NORMAL_CLIP",
    "PREFERRED_METHOD_SHARE",
    "STATUS_PERCENT",
    "Summary",
    "TIME_KINDS",
    "TRAVEL_SHARE",
    "TokenBucket",
    "TransactionFactory",
    "User",
    "ensure_topic",
    "generate",
    "make_producer",
    "make_txn_id",
    "runs_ahead",
    "send",
    "seed_for",
    "start_for",
    "step_us_for",
]
