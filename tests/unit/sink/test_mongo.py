"""``agents.sink.mongo`` without a database: the server decisions."""

from __future__ import annotations

from agents.sink.mongo import is_ferretdb, time_series_supported


def test_time_series_only_on_real_mongodb_5_and_later() -> None:
    assert time_series_supported({"version": "7.0.2", "versionArray": [7, 0, 2, 0]})
    assert time_series_supported({"versionArray": [5, 0, 0, 0]})
    assert not time_series_supported({"versionArray": [4, 4, 0, 0]})
    ferret = {"version": "7.0.42", "versionArray": [7, 0, 42, 0], "ferretdbVersion": "x"}
    assert not time_series_supported(ferret)
    assert is_ferretdb(ferret)
