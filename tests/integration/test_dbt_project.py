"""The dbt project's copies of shared constants stay equal to the one place that owns them
(app/contract.py, app/settings.py). No services needed."""

from __future__ import annotations

import re

import yaml

from app.contract import ANOMALY_FIELDS, CATEGORIES, PAYMENT_METHODS, STATUSES
from app.settings import Settings
from tests.procs import ROOT

DBT_DIR = ROOT / "dbt"


def test_value_lists_equal_the_contract() -> None:
    project = yaml.safe_load((DBT_DIR / "dbt_project.yml").read_text())
    assert project["vars"] == {"statuses": list(STATUSES),
                               "merchant_categories": list(CATEGORIES),
                               "payment_methods": list(PAYMENT_METHODS),
                               "reporting_currency": project["vars"]["reporting_currency"],
                               "fx_rates_path": project["vars"]["fx_rates_path"],
                               "lookback_days": project["vars"]["lookback_days"],
                               "top_spenders_limit": project["vars"]["top_spenders_limit"]}
    assert project["flags"]["send_anonymous_usage_stats"] is False


def test_profile_reads_the_settings_variables_with_their_defaults() -> None:
    profile = (DBT_DIR / "profiles.yml").read_text()
    defaults = dict(re.findall(r"env_var\('(MONGO_\w+)', '([^']*)'\)", profile))
    assert defaults == {"MONGO_URL": Settings.mongo_url, "MONGO_DB": Settings.mongo_db}


def test_source_fields_are_contract_fields() -> None:
    sources = yaml.safe_load((DBT_DIR / "models" / "staging" / "__sources.yml").read_text())
    tables = {t["name"]: set(t["config"]["fields"]) - {"_id"}
              for t in sources["sources"][0]["tables"]}
    assert tables["anomalies"] <= set(ANOMALY_FIELDS)
    assert set(tables) == {"anomalies", "users_by_day", "merchant_days", "currency_days"}
    assert {"reporting_currency", "day"} >= set().union(*(tables[name] for name in tables
                                                   if name != "anomalies"))


def test_aggregate_sources_are_packed_with_valid_specs() -> None:
    """The sink's aggregate collections are read unpacked (app/mongo_arrow.py), each with a
    spec the plugin accepts; the anomalies are plain documents."""
    from app.mongo_arrow import packed_schema

    sources = yaml.safe_load((DBT_DIR / "models" / "staging" / "__sources.yml").read_text())
    configs = {t["name"]: t["config"] for t in sources["sources"][0]["tables"]}
    assert "packed" not in configs.pop("anomalies")
    keys = {name: packed_schema(c["fields"], c["packed"]).names for name, c in configs.items()}
    assert keys["merchant_days"][-5:] == ["merchant_id", "txn_count", "cents", "anomaly_count",
                                          "merchant_category"]
    assert keys["users_by_day"][-4:] == ["user_id", "txn_count", "cents", "anomaly_count"]
    assert keys["currency_days"][-4:] == ["currency", "txn_count", "original_cents",
                                          "reporting_cents"]


def test_lookback_is_the_late_event_grace_with_its_default() -> None:
    """Incremental builds re-read and recompute as many days back as the stream accepts late
    events: the LATE_EVENT_GRACE_DAYS setting with its default, in the var and the plugin."""
    project = yaml.safe_load((DBT_DIR / "dbt_project.yml").read_text())
    expected = f"{{{{ env_var('LATE_EVENT_GRACE_DAYS', '{Settings.late_event_grace_days}') }}}}"
    assert project["vars"]["lookback_days"] == expected
    profile = yaml.safe_load((DBT_DIR / "profiles.yml").read_text())
    plugin = profile["txn_analytics"]["outputs"]["dev"]["plugins"][0]["config"]
    assert plugin["lookback_days"] == expected


def test_reporting_currency_and_rates_are_the_streams() -> None:
    """The marts' reporting currency is the REPORTING_CURRENCY setting with its default, and
    the rates are the one file the stream converts with (app/fx_rates.csv)."""
    from app.rates import RATES_FILE

    project = yaml.safe_load((DBT_DIR / "dbt_project.yml").read_text())
    assert project["vars"]["reporting_currency"] == \
        f"{{{{ env_var('REPORTING_CURRENCY', '{Settings.reporting_currency}') }}}}"
    path = re.fullmatch(r"\{\{ env_var\('FX_RATES_PATH', '([^']+)'\) \}\}",
                        project["vars"]["fx_rates_path"])
    assert path is not None
    assert (DBT_DIR / path.group(1)).resolve() == RATES_FILE.resolve()
