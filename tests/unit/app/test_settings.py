from __future__ import annotations

import re
from pathlib import Path

import pytest

from app.settings import ENV_VARS, Settings, SettingsError, load

DESIGN_DEFAULTS = {
    "KAFKA_BOOTSTRAP_SERVERS": "localhost:9092",
    "MONGO_URL": "mongodb://localhost:27017",
    "MONGO_DB": "txn_analytics",
    "ANOMALY_Z_THRESHOLD": 3.0,
    "ANOMALY_MIN_HISTORY": 5,
    "TOPIC_PARTITIONS": 8,
    "TARGET_TPS": 1000,
    "DEDUPE_HORIZON_DAYS": 8,
    "DLQ_MAX_PAYLOAD_BYTES": 65536,
}


def test_defaults_are_the_design_defaults() -> None:
    s = load({})
    for var, value in DESIGN_DEFAULTS.items():
        assert getattr(s, var.lower()) == value, var


def test_values_are_read_and_typed() -> None:
    s = load({"ANOMALY_Z_THRESHOLD": "2.5", "TOPIC_PARTITIONS": "4", "MONGO_DB": "x",
              "TOPIC_PREFIX": "t1-"})
    assert s.anomaly_z_threshold == 2.5 and s.topic_partitions == 4 and s.mongo_db == "x"
    assert s.topic("transactions") == "t1-transactions" and s.app_id == "t1-txn-analytics"


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("TOPIC_PARTITIONS", "eight"),
        ("TOPIC_PARTITIONS", "0"),
        ("ANOMALY_Z_THRESHOLD", "-1"),
        ("ANOMALY_Z_THRESHOLD", "nan"),
        ("ANOMALY_MIN_HISTORY", "1.5"),
        ("TARGET_TPS", "-5"),
        ("MONGO_URL", "postgres://x"),
        ("MONGO_DB", "bad.name"),
        ("WEB_PORT", "70000"),
        ("TOPIC_PREFIX", "a b"),
        ("SINK_BATCH_SECONDS", "0"),
        ("BIND_HOST", "localhost"),
        ("BIND_HOST", "0.0.0.0:80"),
        ("BIND_HOST", "256.0.0.1"),
        ("DLQ_MAX_PAYLOAD_BYTES", "-1"),
        ("DLQ_MAX_PAYLOAD_BYTES", str(16 * 1024 * 1024 + 1)),
        ("DLQ_MAX_PAYLOAD_BYTES", "64k"),
        ("API_LIVE_WAIT_MS", "0"),
    ],
)
def test_bad_value_names_the_variable(var: str, value: str) -> None:
    with pytest.raises(SettingsError, match=re.escape(var)):
        load({var: value})


def test_dlq_max_payload_bytes_is_read() -> None:
    assert load({"DLQ_MAX_PAYLOAD_BYTES": "0"}).dlq_max_payload_bytes == 0
    assert load({"DLQ_MAX_PAYLOAD_BYTES": "1048576"}).dlq_max_payload_bytes == 1_048_576


def test_every_setting_is_documented_in_the_readme() -> None:
    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    assert len(ENV_VARS) == len(Settings.__dataclass_fields__)
    missing = [v for v in ENV_VARS if f"`{v}`" not in readme]
    assert not missing, f"settings missing from the README's table: {missing}"


def test_bind_host_is_loopback_unless_set() -> None:
    assert load({}).bind_host == "127.0.0.1"
    assert load({"BIND_HOST": ""}).bind_host == "127.0.0.1"
    for value in ("0.0.0.0", "127.0.0.1", "::", "::1", "10.1.2.3"):
        assert load({"BIND_HOST": value}).bind_host == value
    assert load({"BIND_HOST": " 0.0.0.0 "}).bind_host == "0.0.0.0"
