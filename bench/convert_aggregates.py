"""Convert a database's aggregate documents from the nested layout of earlier versions to the
packed one (docs/data-model.md), in place: how the long run's 10M-transaction seed was reused
after the layout changed, without seeding again.

    .venv/bin/python bench/convert_aggregates.py --mongo-url mongodb://127.0.0.1:27018 \\
        --db txn_analytics

The nested layout kept ``[a, b, c, offset]`` per place and partition (``merchants.<field>.p3``,
``minutes.<MM>.p3``, ``currencies.<CUR>.p3``, ``minutes.<MM>.<CUR>.p3``, ``users.<field>.p3``).
Each document becomes ``p<n>`` packed texts whose offset is the largest of that partition's
places: every transaction of the partition up to it that belongs to the document was counted.
Documents already packed are left alone, so a second run changes nothing; ``user_days`` (no
longer read) is dropped. Stop the sink first: it would write the old layout's documents
meanwhile.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pymongo import MongoClient  # noqa: E402

from agents.sink import aggregates as agg  # noqa: E402
from agents.sink.aggregates import Packed, pack, unfield  # noqa: E402

Parts = dict[int, Packed]


def _parts(node: Mapping[str, Any]) -> dict[int, list[Any]]:
    return {int(k[1:]): v for k, v in node.items()
            if k[:1] == "p" and k[1:].isdigit() and isinstance(v, list) and len(v) == 4}


def _add(out: Parts, node: Mapping[str, Any], key: str, label: Any = None) -> None:
    for n, (a, b, c, offset) in _parts(node).items():
        part = out.setdefault(n, Packed())
        part.places[key] = [a, b, c] if label is None else [a, b, c, label]
        part.offset = max(part.offset, offset)


def merchants(doc: Mapping[str, Any], out: Parts) -> None:
    for m in (doc.get("merchants") or {}).values():
        _add(out, m, m["id"], m.get("category"))


def volume(doc: Mapping[str, Any], out: Parts) -> None:
    for mm, node in (doc.get("minutes") or {}).items():
        _add(out, node, mm)


def currency_days(doc: Mapping[str, Any], out: Parts) -> None:
    for cur, node in (doc.get("currencies") or {}).items():
        _add(out, node, unfield(cur))


def currency_hours(doc: Mapping[str, Any], out: Parts) -> None:
    for mm, currencies in (doc.get("minutes") or {}).items():
        for cur, node in currencies.items():
            _add(out, node, f"{mm}/{unfield(cur)}")


def users(doc: Mapping[str, Any], out: Parts) -> None:
    for u in (doc.get("users") or {}).values():
        _add(out, u, u["id"])


CONVERTERS: dict[str, Callable[[Mapping[str, Any], Parts], None]] = {
    agg.MERCHANT_DAYS: merchants, agg.MERCHANT_HOURS: merchants, agg.VOLUME_HOURS: volume,
    agg.CURRENCY_DAYS: currency_days, agg.CURRENCY_HOURS: currency_hours,
    agg.USERS_BY_DAY: users}
PLAIN = ("reporting_currency", "day")


def convert(db: Any, collection: str) -> int:
    """Rewrite every nested document of ``collection``; returns how many."""
    done = 0
    for row in list(db[collection].find({}, {"_id": 1})):  # ids first: documents one by one
        doc = db[collection].find_one({"_id": row["_id"]})
        if doc is None or agg.packed(doc):
            continue
        out: Parts = {}
        CONVERTERS[collection](doc, out)
        db[collection].replace_one({"_id": doc["_id"]}, {
            "_id": doc["_id"], **{f: doc[f] for f in PLAIN if f in doc},
            **{f"p{n}": pack(part) for n, part in sorted(out.items())}})
        done += 1
    return done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mongo-url", required=True)
    parser.add_argument("--db", required=True)
    args = parser.parse_args()
    db = MongoClient(args.mongo_url, directConnection=True)[args.db]
    for collection in CONVERTERS:
        started = time.monotonic()
        count = convert(db, collection)
        print(f"[convert] {collection}: {count:,} documents in "
              f"{time.monotonic() - started:.1f} s", flush=True)
    db.drop_collection("user_days")
    print("[convert] user_days dropped")


if __name__ == "__main__":
    main()
