"""Every setting of the product, read once from the environment.

The table in the README lists them. ``load()`` reads a mapping
(``os.environ`` by default) and raises :class:`SettingsError` naming the variable when a value is
invalid; ``settings`` is the instance the rest of the code uses.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any, TypeVar

__all__ = ["ENV_VARS", "Settings", "SettingsError", "load", "settings"]

T = TypeVar("T")


class SettingsError(ValueError):
    """A setting has a value that cannot be used; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    kafka_bootstrap_servers: str = "localhost:9092"
    mongo_url: str = "mongodb://localhost:27017"
    mongo_db: str = "txn_analytics"
    anomaly_z_threshold: float = 3.0
    anomaly_min_history: int = 5
    topic_partitions: int = 8
    # Replicas of the topics Faust creates itself (table changelogs, repartitions); Faust
    # also reads this variable on its own, so the sink's app gets it too. 3 on a real cluster.
    topic_replication_factor: int = 1
    target_tps: int = 1000
    # A transaction whose txn_id the worker folded at most this many days (of event time)
    # before is a replay: it changes nothing and is not emitted again.
    dedupe_horizon_days: int = 8
    # A dead letter carries at most this many bytes of the original value (and its size and
    # SHA-256 in headers), so it always fits the DLQ topic (app.contract.dlq_topic_config).
    dlq_max_payload_bytes: int = 65536
    # Every revenue, spend and statistic is in this currency (ISO 4217, a row of
    # app/fx_rates.csv): the worker converts each amount into it (amount_reporting).
    reporting_currency: str = "USD"
    # An event more than this many days older than its partition's stream time (the newest
    # event time the worker has seen there) is a dead letter ("late event"); a day window is
    # kept this long after the stream time leaves it.
    late_event_grace_days: int = 7
    # An event more than this many seconds ahead of the worker's wall clock is a dead letter
    # ("future event").
    future_event_tolerance_seconds: int = 300
    # Prefix of every topic name and of the Faust app id: lets tests and parallel
    # environments share one broker without sharing topics, tables or consumer groups.
    topic_prefix: str = ""
    # The address every server this project starts listens on: the workers' Faust web servers,
    # the API (uvicorn) and the dashboard (panel serve). Loopback only unless set (0.0.0.0 in a
    # container: the k8s manifests set it).
    bind_host: str = "127.0.0.1"
    # The Faust worker's web server (table views, /health, /metrics).
    web_host: str = "localhost"
    web_port: int = 6066
    # Where Faust keeps its RocksDB tables.
    data_dir: str = "var/faust"
    # How long MongoDB keeps things, in days of event time (``txn prune`` deletes the rest):
    # raw transactions, the stream-maintained aggregates, anomalies and dead letters.
    retention_days: int = 30
    aggregate_retention_days: int = 400
    anomaly_retention_days: int = 90
    dlq_retention_days: int = 30
    # The sink: a batch is written when it holds this many documents or is this old.
    sink_batch_size: int = 2000
    sink_batch_seconds: float = 0.5
    # The sink's /metrics, /health and /ready (on BIND_HOST); 0: not served.
    sink_metrics_port: int = 6067
    # The API and the dashboard.
    api_url: str = "http://localhost:8000"
    api_key: str = ""
    cors_origins: str = ""
    # Requests per second the API serves one client (IP address); more get 429. 0: no limit.
    api_rate_limit: float = 50.0
    worker_url: str = "http://localhost:6066"
    # How long /users/{id}/trends waits for the worker's live statistics, from its start;
    # past it the answer goes without them (``live_error`` says so).
    api_live_wait_ms: int = 30
    dbt_interval_seconds: int = 300

    @property
    def app_id(self) -> str:
        return f"{self.topic_prefix}txn-analytics"

    def topic(self, name: str) -> str:
        """The full name of one of the pipeline's topics."""
        return f"{self.topic_prefix}{name}"


def _parse(env: Mapping[str, str], name: str, parse: Callable[[str], T], default: T,
           check: Callable[[T], bool] = lambda _: True, rule: str = "") -> T:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = parse(raw.strip())
    except ValueError:
        raise SettingsError(
            f"{name}={raw!r} is not a valid {parse.__name__}{f' ({rule})' if rule else ''}"
        ) from None
    if not check(value):
        raise SettingsError(f"{name}={raw!r} is invalid: it must be {rule}")
    return value


def _non_empty(value: str) -> bool:
    return bool(value)


def _currency_code(value: str) -> bool:
    return len(value) == 3 and value.isascii() and value.isupper() and value.isalpha()


def _ip_address(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def load(env: Mapping[str, str] | None = None) -> Settings:
    """Read the settings from ``env`` (default: the process environment)."""
    env = os.environ if env is None else env
    d = Settings()
    positive: Callable[[int], bool] = lambda v: v > 0  # noqa: E731
    values: dict[str, Any] = dict(
        kafka_bootstrap_servers=_parse(env, "KAFKA_BOOTSTRAP_SERVERS", str,
                                       d.kafka_bootstrap_servers, _non_empty, "host:port[,...]"),
        mongo_url=_parse(env, "MONGO_URL", str, d.mongo_url,
                         lambda v: v.startswith(("mongodb://", "mongodb+srv://")),
                         "a mongodb:// or mongodb+srv:// URL"),
        mongo_db=_parse(env, "MONGO_DB", str, d.mongo_db,
                        lambda v: bool(v) and not set(v) & set('/\\. "$'),
                        "a MongoDB database name"),
        anomaly_z_threshold=_parse(env, "ANOMALY_Z_THRESHOLD", float, d.anomaly_z_threshold,
                                   lambda v: 0 < v < float("inf"), "a positive number"),
        anomaly_min_history=_parse(env, "ANOMALY_MIN_HISTORY", int, d.anomaly_min_history,
                                   lambda v: v >= 2, "an integer >= 2"),
        topic_partitions=_parse(env, "TOPIC_PARTITIONS", int, d.topic_partitions,
                                lambda v: 1 <= v <= 1024, "an integer from 1 to 1024"),
        topic_replication_factor=_parse(env, "TOPIC_REPLICATION_FACTOR", int,
                                        d.topic_replication_factor, lambda v: 1 <= v <= 32,
                                        "an integer from 1 to 32"),
        target_tps=_parse(env, "TARGET_TPS", int, d.target_tps,
                          lambda v: v >= 0, "an integer >= 0 (0 = as fast as possible)"),
        dedupe_horizon_days=_parse(env, "DEDUPE_HORIZON_DAYS", int, d.dedupe_horizon_days,
                                   lambda v: 1 <= v <= 366, "an integer from 1 to 366"),
        dlq_max_payload_bytes=_parse(env, "DLQ_MAX_PAYLOAD_BYTES", int, d.dlq_max_payload_bytes,
                                     lambda v: 0 <= v <= 16 * 1024 * 1024,
                                     "an integer from 0 to 16777216 (16 MiB)"),
        reporting_currency=_parse(env, "REPORTING_CURRENCY", str, d.reporting_currency,
                                  _currency_code, "three upper-case letters (ISO 4217)"),
        late_event_grace_days=_parse(env, "LATE_EVENT_GRACE_DAYS", int,
                                     d.late_event_grace_days, lambda v: 1 <= v <= 366,
                                     "an integer from 1 to 366"),
        future_event_tolerance_seconds=_parse(env, "FUTURE_EVENT_TOLERANCE_SECONDS", int,
                                              d.future_event_tolerance_seconds,
                                              lambda v: 0 <= v <= 366 * 86_400,
                                              "an integer from 0 to 31622400 (366 days)"),
        topic_prefix=_parse(env, "TOPIC_PREFIX", str, d.topic_prefix,
                            lambda v: all(c.isalnum() or c in "._-" for c in v),
                            "letters, digits, '.', '_' or '-'"),
        bind_host=_parse(env, "BIND_HOST", str, d.bind_host, _ip_address,
                         "an IP address, e.g. 127.0.0.1 or 0.0.0.0"),
        web_host=_parse(env, "WEB_HOST", str, d.web_host, _non_empty, "a host name"),
        web_port=_parse(env, "WEB_PORT", int, d.web_port,
                        lambda v: 0 < v < 65536, "a port number"),
        data_dir=_parse(env, "DATA_DIR", str, d.data_dir, _non_empty, "a directory"),
        retention_days=_parse(env, "RETENTION_DAYS", int, d.retention_days,
                              lambda v: 1 <= v <= 36_500, "an integer from 1 to 36500"),
        aggregate_retention_days=_parse(env, "AGGREGATE_RETENTION_DAYS", int,
                                        d.aggregate_retention_days,
                                        lambda v: 1 <= v <= 36_500, "an integer from 1 to 36500"),
        anomaly_retention_days=_parse(env, "ANOMALY_RETENTION_DAYS", int,
                                      d.anomaly_retention_days,
                                      lambda v: 1 <= v <= 36_500, "an integer from 1 to 36500"),
        dlq_retention_days=_parse(env, "DLQ_RETENTION_DAYS", int, d.dlq_retention_days,
                                  lambda v: 1 <= v <= 36_500, "an integer from 1 to 36500"),
        sink_batch_size=_parse(env, "SINK_BATCH_SIZE", int, d.sink_batch_size, positive,
                               "a positive integer"),
        sink_batch_seconds=_parse(env, "SINK_BATCH_SECONDS", float, d.sink_batch_seconds,
                                  lambda v: v > 0, "a positive number of seconds"),
        sink_metrics_port=_parse(env, "SINK_METRICS_PORT", int, d.sink_metrics_port,
                                 lambda v: 0 <= v < 65536, "a port number, or 0 for none"),
        api_url=_parse(env, "API_URL", str, d.api_url,
                       lambda v: v.startswith(("http://", "https://")), "an http(s) URL"),
        api_key=_parse(env, "API_KEY", str, d.api_key),
        cors_origins=_parse(env, "CORS_ORIGINS", str, d.cors_origins),
        api_rate_limit=_parse(env, "API_RATE_LIMIT", float, d.api_rate_limit,
                              lambda v: 0 <= v < float("inf"),
                              "a number >= 0 of requests per second (0 = no limit)"),
        worker_url=_parse(env, "WORKER_URL", str, d.worker_url,
                          lambda v: v.startswith(("http://", "https://")), "an http(s) URL"),
        api_live_wait_ms=_parse(env, "API_LIVE_WAIT_MS", int, d.api_live_wait_ms,
                                lambda v: 1 <= v <= 60_000, "milliseconds, 1 to 60000"),
        dbt_interval_seconds=_parse(env, "DBT_INTERVAL_SECONDS", int, d.dbt_interval_seconds,
                                    positive, "a positive integer"),
    )
    assert set(values) == {f.name for f in fields(Settings)}
    if values["dedupe_horizon_days"] <= values["late_event_grace_days"]:
        # A replayed txn_id must be recognised as long as its event is not late, or it would
        # be folded twice.
        raise SettingsError(
            f"DEDUPE_HORIZON_DAYS={values['dedupe_horizon_days']} must be greater than "
            f"LATE_EVENT_GRACE_DAYS={values['late_event_grace_days']}")
    return Settings(**values)


#: The environment variables read by :func:`load`: each field's name in upper case.
ENV_VARS: tuple[str, ...] = tuple(f.name.upper() for f in fields(Settings))

settings = load()
