"""Hypothesis strategies for the API's fuzz tests: strings a client could send as ``cursor``
(tests/unit/views/test_queries.py, tests/integration/test_api.py)."""

from __future__ import annotations

import base64
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson
from hypothesis import strategies as st

__all__ = ["cursors"]


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


#: Any JSON value orjson can write (64-bit integers, finite floats).
json_values: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                max_size=3),
    max_leaves=6)

#: Offsets datetime accepts (strictly less than a day either way).
offsets = st.builds(timezone, st.timedeltas(min_value=timedelta(hours=-23, minutes=-59),
                                            max_value=timedelta(hours=23, minutes=59)))

#: ISO-8601 texts: anywhere in datetime's range with any offset (the edges have no UTC
#: equivalent), naive ones, and hand-picked edges and near misses.
iso_texts = st.one_of(
    st.builds(lambda d, tz: d.replace(tzinfo=tz).isoformat(), st.datetimes(), offsets),
    st.datetimes().map(datetime.isoformat),
    st.sampled_from([
        "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00Z",
        "9999-12-31T23:59:59.999999+00:00", "2026-02-30T00:00:00Z", "2026-01-01T24:00:00Z",
        "2026-01-01T00:00:00+24:00", "2026-01-01", "20260101T000000Z", "", "Z", "nan"]))

#: Raw JSON that orjson.dumps cannot make: lone surrogates, NUL, huge numbers, bad nesting.
raw_json = st.sampled_from([
    b'["2026-01-01T00:00:00+00:00","\\ud800"]', b'["2026-01-01T00:00:00+00:00","\\u0000"]',
    b'["2026-01-01T00:00:00+00:00",' + b"9" * 400 + b"]", b"[" * 300 + b"]" * 300,
    b'["2026-01-01T00:00:00+00:00","x",]', b'["2026-01-01T00:00:00+00:00"', b"\xff\xfe",
    b'{"$gt": ""}', b'[["2026-01-01T00:00:00+00:00"],"x"]', b'["2026-01-01T00:00:00+00:00"]'])

#: A [timestamp, txn_id] pair of the right or the wrong types, of any length.
pairs = st.lists(st.one_of(iso_texts, st.text(max_size=140), json_values), min_size=0,
                 max_size=3)

cursors: st.SearchStrategy[str] = st.one_of(
    st.text(max_size=500),
    st.binary(max_size=300).map(b64),
    json_values.map(lambda v: b64(orjson.dumps(v))),
    pairs.map(lambda p: b64(orjson.dumps(p))),
    st.tuples(iso_texts, st.text(min_size=1, max_size=140)).map(
        lambda p: b64(orjson.dumps(list(p)))),
    raw_json.map(b64),
)
