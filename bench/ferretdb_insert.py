"""What it costs FerretDB 1.24 (SQLite backend) to store the sink's ``transactions`` documents.

    .venv/bin/python bench/ferretdb_insert.py                      # 12k documents per variant
    .venv/bin/python bench/ferretdb_insert.py --count 20000 --variants baseline,product
    .venv/bin/python bench/ferretdb_insert.py --profile product    # + a Go CPU profile
    .venv/bin/python bench/ferretdb_insert.py --count 16000 \\
        --variants product-full,product,product-merchant          # the layouts side by side

Every variant gets its own private FerretDB (``.cache/bin/ferretdb-local``, data in a temporary
directory, never the shared one), all started at once, so the variants are compared side by
side in one run on the same (shared, noisy) machine: the documents are inserted in rounds of
``--round`` documents, each round into every variant in turn (the order rotates every round).
The documents are shaped exactly like the sink's (``agents.sink.documents.transaction`` of
enriched transactions from ``tests/sink_data.py``), in the variant's layout: ``compact`` (the
sink's: ``_id``, ``user_id``, ``timestamp``, ``txn``), ``compact+merchant`` (the same plus a
top-level ``merchant_id``) or ``full`` (every enriched field, the dates, ``day`` and ``minute``:
the layout before ``txn``); inserted with the sink's client
settings (``agents.sink.mongo.connect``) and call (``insert_many(ordered=False)``) in batches of
the variant's size. A variant sets: the secondary indexes (``agents.sink.mongo.INDEXES``, or
none), the query parameters of FerretDB's SQLite URL (``--sqlite-params`` of
scripts/ferretdb/main.go; ``""`` is FerretDB's own defaults) and the batch size.

Reported per variant: documents/s (wall time of the insert calls, client included) and
FerretDB's CPU seconds per 1000 documents (psutil, user + system of the FerretDB process) and
its peak RSS (sampled between calls); then
the *replay* case: the same number of batches again, each with one document already stored (a
duplicate, as after a restart), to show what the duplicate costs. Printed, and written to
bench/results/ferretdb_insert.json. ``--profile VARIANT`` also serves pprof on that variant's
FerretDB (``--debug-addr``) and writes ``go tool pprof -top`` of the whole run to
bench/results/ferretdb-profile-VARIANT.txt.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import bson
import orjson
import psutil
import pymongo
from pymongo import UpdateOne

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agents.sink import documents as docs  # noqa: E402
from agents.sink.mongo import INDEXES, UPDATES_PER_COMMAND, connect  # noqa: E402
from app.settings import settings  # noqa: E402
from tests.procs import Proc, free_port, wait_for  # noqa: E402
from tests.sink_data import enriched_stream  # noqa: E402

RESULTS = ROOT / "bench" / "results"
FERRETDB = ROOT / ".cache" / "bin" / "ferretdb-local"
SYNC_NORMAL = "_pragma=synchronous(normal)"


@dataclass(frozen=True)
class Variant:
    indexes: bool  # mongo.INDEXES (secondary indexes) on transactions and merchant_minute
    id_index: bool  # ferretdb-local --id-index (scripts/ferretdb/idindex.go)
    params: str  # ferretdb-local --sqlite-params
    batch: int
    note: str
    binary: Path = FERRETDB
    layout: str = "compact"  # compact, compact+merchant or full (layout_docs)


B = settings.sink_batch_size
#: ``baseline`` = how the sink stored documents before this work (secondary indexes,
#: FerretDB's own _id index only, FerretDB's SQLite defaults, SINK_BATCH_SIZE's default).
VARIANTS: dict[str, Variant] = {
    "baseline": Variant(True, False, "", B, "indexes, FerretDB defaults"),
    "no-indexes": Variant(False, False, "", B, "_id only, FerretDB defaults"),
    "id-index": Variant(True, True, "", B, "indexes + id path index"),
    "sync-normal": Variant(True, False, SYNC_NORMAL, B, "indexes, synchronous(normal)"),
    "no-idx+id": Variant(False, True, "", B, "_id only + id path index"),
    "product": Variant(False, True, SYNC_NORMAL, B,
                       "_id only + id path index, synchronous(normal)"),
    "product-b500": Variant(False, True, SYNC_NORMAL, 500, "product, batch 500"),
    "product-b5000": Variant(False, True, SYNC_NORMAL, 5000, "product, batch 5000"),
    "product-cache": Variant(False, True, SYNC_NORMAL + "&_pragma=cache_size(-65536)", B,
                             "product, 64 MiB page cache"),
    "product-full": Variant(False, True, SYNC_NORMAL, B, "product, every field (before txn)",
                            layout="full"),
    "product-merchant": Variant(False, True, SYNC_NORMAL, B, "product, + merchant_id",
                                layout="compact+merchant"),
}


def layout_docs(raw: bytes, layout: str) -> dict[str, Any]:
    """A ``transactions`` document of the enriched message ``raw`` in ``layout``."""
    doc, fields = docs.transaction(raw)
    extra = {"merchant_id": fields.get("merchant_id")} if layout == "compact+merchant" else {}
    return fields if layout == "full" else {**doc, **extra}


@dataclass
class Run:
    name: str
    variant: Variant
    proc: Proc
    url: str
    data: Path
    debug: str | None = None
    peak_rss: int = 0
    seconds: float = 0.0
    cpu: float = 0.0
    documents: int = 0
    replay: dict[str, float] = field(default_factory=lambda: {"seconds": 0.0, "cpu": 0.0,
                                                              "documents": 0})
    upsert: dict[str, float] = field(default_factory=lambda: {"seconds": 0.0, "cpu": 0.0,
                                                              "documents": 0})

    def cpu_now(self) -> float:
        """FerretDB's CPU seconds so far (and its peak RSS, sampled here)."""
        assert self.proc.proc is not None
        p = psutil.Process(self.proc.proc.pid)
        self.peak_rss = max(self.peak_rss, p.memory_info().rss)
        t = p.cpu_times()
        return float(t.user + t.system)


def start(name: str, variant: Variant, tmp: Path, profile: bool,
          rollup_rows: list[dict[str, Any]]) -> Run:
    port = free_port()
    data = tmp / name
    data.mkdir()
    cmd = [str(variant.binary), f"--listen-addr=127.0.0.1:{port}", f"--data-dir={data}",
           f"--sqlite-params={variant.params}", f"--id-index={str(variant.id_index).lower()}"]
    debug = None
    if profile:
        debug = f"127.0.0.1:{free_port()}"
        cmd.append(f"--debug-addr={debug}")
    proc = Proc(f"ferretdb-{name}", cmd, dict(os.environ), tmp).start()
    url = f"mongodb://127.0.0.1:{port}"
    try:
        with pymongo.MongoClient(url, serverSelectionTimeoutMS=30_000) as client:
            client.admin.command("ping")
            db = client["bench"]
            db.create_collection(docs.TRANSACTIONS)
            db.create_collection(docs.MERCHANT_MINUTE)
            if variant.indexes:
                for coll in (docs.TRANSACTIONS, docs.MERCHANT_MINUTE):
                    for index in INDEXES.get(coll, []):
                        db[coll].create_indexes([index])
            db[docs.MERCHANT_MINUTE].insert_many(rollup_rows)
        if variant.id_index:  # wait for ferretdb-local to add its index (checks every second)
            wait_for(lambda: id_index_used(url), timeout=30, interval=0.2,
                     message="the id path index")
    except BaseException:
        proc.stop()
        raise
    return Run(name, variant, proc, url, data, debug)


def id_index_used(url: str) -> bool:
    """Whether an _id lookup in merchant_minute uses an index. A real query first: an explain
    alone does not see a schema change (a new index) on a connection SQLite already uses."""
    with pymongo.MongoClient(url) as client:
        coll = client["bench"][docs.MERCHANT_MINUTE]
        coll.find_one({"_id": "x"})
        plan = client["bench"].command("explain", {"find": coll.name, "filter": {"_id": "x"}})
        return "SEARCH" in str(plan["queryPlanner"])


def merchant_minute_row(merchant_id: str, minute: datetime, value: docs.Rollup
                        ) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """``(_id, labels to $set, numbers to $max)`` of a ``merchant_minute`` row (category
    ``grocery``)."""
    return (f"{merchant_id}|{docs.minute_id(minute)}",
            {"merchant_id": merchant_id, "merchant_category": "grocery", "minute": minute},
            docs.rollup_numbers(value))


def rollup_rows(merchants: int, minutes: int, start: datetime) -> list[dict[str, Any]]:
    """``merchant_minute`` rows as the sink writes them, ``merchants`` x ``minutes``."""
    rows = []
    for m in range(minutes):
        minute = start + timedelta(minutes=m)
        for k in range(merchants):
            _id, labels, numbers = merchant_minute_row(
                f"merchant-{k:03d}", minute, {"count": 3, "cents": 4200, "anomalies": 0})
            rows.append({"_id": _id, **labels, **numbers})
    return rows


def upsert(run: Run, client: pymongo.MongoClient[dict[str, Any]],
           ops: list[UpdateOne]) -> tuple[float, float]:
    """(wall seconds, FerretDB CPU seconds) for the rollup upserts ``ops``, sent like the
    sink's (``bulk_write`` of at most UPDATES_PER_COMMAND)."""
    coll = client["bench"][docs.MERCHANT_MINUTE]
    cpu0, t0 = run.cpu_now(), time.perf_counter()
    for i in range(0, len(ops), UPDATES_PER_COMMAND):
        coll.bulk_write(ops[i:i + UPDATES_PER_COMMAND], ordered=False)
    return time.perf_counter() - t0, run.cpu_now() - cpu0


def insert(run: Run, client: pymongo.MongoClient[dict[str, Any]],
           batch_docs: list[dict[str, Any]]) -> tuple[float, float, int]:
    """(wall seconds, FerretDB CPU seconds, documents stored) for ``batch_docs``."""
    coll = client["bench"][docs.TRANSACTIONS]
    size = run.variant.batch
    cpu0, t0 = run.cpu_now(), time.perf_counter()
    stored = 0
    for i in range(0, len(batch_docs), size):
        try:
            coll.insert_many(batch_docs[i:i + size], ordered=False)
            stored += len(batch_docs[i:i + size])
        except pymongo.errors.BulkWriteError as exc:
            stored += exc.details.get("nInserted", 0)
    return time.perf_counter() - t0, run.cpu_now() - cpu0, stored


def profile(run: Run, seconds: int, out: Path) -> threading.Thread:
    def fetch() -> None:
        raw = Path(tempfile.gettempdir()) / f"{out.stem}.pprof"
        url = f"http://{run.debug}/debug/pprof/profile?seconds={seconds}"
        with urllib.request.urlopen(url, timeout=seconds + 60) as resp:
            raw.write_bytes(resp.read())
        top = subprocess.run(["go", "tool", "pprof", "-top", "-nodecount=45",
                              str(run.variant.binary), str(raw)], capture_output=True,
                             text=True, check=False)
        cum = subprocess.run(["go", "tool", "pprof", "-top", "-cum", "-nodecount=45",
                              str(run.variant.binary), str(raw)], capture_output=True, text=True,
                             check=False)
        out.write_text(f"# {run.name}: {run.variant.note}\n# flat\n{top.stdout}\n"
                       f"# cumulative\n{cum.stdout}{top.stderr[-500:]}")
    thread = threading.Thread(target=fetch, daemon=True)
    thread.start()
    return thread


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=12_000, help="documents per variant")
    ap.add_argument("--round", type=int, default=3_000, help="documents per variant per round")
    ap.add_argument("--variants", default="baseline,no-indexes,no-idx+id,product",
                    help=f"comma-separated, from {', '.join(VARIANTS)}")
    ap.add_argument("--replay-batches", type=int, default=5,
                    help="batches with one duplicate each, per variant, after the rounds")
    ap.add_argument("--merchants", type=int, default=500, help="merchants in the rollups")
    ap.add_argument("--history-minutes", type=int, default=10,
                    help="minutes of merchant_minute rows stored before the first round")
    ap.add_argument("--upserts", type=int, default=100,
                    help="rollup upserts per variant per round (half new rows, half updates)")
    ap.add_argument("--profile", default="", help="a variant to CPU-profile (go tool pprof)")
    ap.add_argument("--other-binary", type=Path, default=None,
                    help="also run every variant with this ferretdb-local build (name@other)")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    # a SIGTERM (timeout, Ctrl-C's cousin) runs the finally below: no FerretDB is left behind
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        ap.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    variants = {n: VARIANTS[n] for n in names}
    if args.other_binary:
        for n in names:
            variants[f"{n}@other"] = replace(VARIANTS[n], binary=args.other_binary.resolve(),
                                             note=f"{VARIANTS[n].note}, {args.other_binary}")
    names = list(variants)

    enriched, _ = enriched_stream(args.count + max(v.batch for v in variants.values())
                                  * args.replay_batches, users=10_000, merchants=500)
    raws = [orjson.dumps(v) for v in enriched]
    by_layout = {layout: [layout_docs(raw, layout) for raw in raws]
                 for layout in {v.layout for v in variants.values()}}
    count = args.count
    tmp = Path(tempfile.mkdtemp(prefix="txn-ferretdb-bench-"))
    print(f"FerretDB logs and data in {tmp}", flush=True)
    t0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    history = rollup_rows(args.merchants, args.history_minutes, t0)
    runs: list[Run] = []
    clients: dict[str, pymongo.MongoClient[dict[str, Any]]] = {}
    threads = []
    try:
        for n in names:
            runs.append(start(n, variants[n], tmp, n == args.profile, history))
            clients[n] = connect(runs[-1].url)
        rounds = [(i, min(i + args.round, count)) for i in range(0, count, args.round)]
        if args.profile in names:
            run = next(r for r in runs if r.name == args.profile)
            guess = max(10, int(count / 1000 * len(runs)))  # ~1 ms/doc/variant
            threads.append(profile(run, guess, RESULTS / f"ferretdb-profile-{run.name}.txt"))
        for k, (lo, hi) in enumerate(rounds):
            order = runs[k % len(runs):] + runs[:k % len(runs)]
            for run in order:
                chunk = by_layout[run.variant.layout][lo:hi]
                seconds, cpu, stored = insert(run, clients[run.name], chunk)
                run.seconds += seconds
                run.cpu += cpu
                run.documents += stored
            # rollups: this round's minute (new rows) and the previous one (updates)
            ops = [UpdateOne({"_id": _id}, {"$set": labels, "$max": numbers}, upsert=True)
                   for m in (args.history_minutes + k, args.history_minutes + k - 1)
                   for _id, labels, numbers in (merchant_minute_row(
                       f"merchant-{i % args.merchants:03d}",
                       t0 + timedelta(minutes=m), {"count": 5, "cents": 9900, "anomalies": 1})
                       for i in range(args.upserts // 2))]
            for run in order:
                seconds, cpu = upsert(run, clients[run.name], ops)
                run.upsert["seconds"] += seconds
                run.upsert["cpu"] += cpu
                run.upsert["documents"] += len(ops)
            print(f"round {k + 1}/{len(rounds)}: " + ", ".join(
                f"{r.name} {r.documents / r.seconds:,.0f}/s, "
                f"{r.upsert['documents'] / r.upsert['seconds']:,.0f} upserts/s" for r in runs),
                flush=True)
        # replay: every batch holds one document that is already stored
        for run in runs:
            size = run.variant.batch
            main_docs, spare = (by_layout[run.variant.layout][:count],
                                by_layout[run.variant.layout][count:])
            for b in range(args.replay_batches):
                batch = [main_docs[b]] + spare[b * size:(b + 1) * size - 1]
                seconds, cpu, stored = insert(run, clients[run.name], batch)
                run.replay["seconds"] += seconds
                run.replay["cpu"] += cpu
                run.replay["documents"] += len(batch)
        for thread in threads:
            thread.join(timeout=600)
    finally:
        for client in clients.values():
            client.close()
        for run in runs:
            run.proc.stop()

    results = []
    for run in runs:
        size = sum(p.stat().st_size for p in run.data.rglob("*") if p.is_file())
        rp = run.replay
        results.append({
            "variant": run.name, "note": run.variant.note, "layout": run.variant.layout,
            "indexes": run.variant.indexes,
            "fields": len(by_layout[run.variant.layout][0]),
            "bson_bytes": round(sum(len(bson.encode(d)) for d in by_layout[run.variant.layout])
                                / len(by_layout[run.variant.layout])),
            "sqlite_params": run.variant.params, "batch": run.variant.batch,
            "documents": run.documents, "seconds": round(run.seconds, 2),
            "docs_per_second": round(run.documents / run.seconds),
            "ferretdb_cpu_s_per_1000": round(run.cpu / run.documents * 1000, 3),
            "replay_docs_per_second": round(rp["documents"] / rp["seconds"]) if rp["seconds"]
            else None,
            "replay_cpu_s_per_1000": round(rp["cpu"] / rp["documents"] * 1000, 3)
            if rp["documents"] else None,
            "upserts": run.upsert["documents"],
            "upserts_per_second": round(run.upsert["documents"] / run.upsert["seconds"]),
            "upsert_cpu_s_per_1000": round(run.upsert["cpu"] / run.upsert["documents"] * 1000,
                                           3),
            "data_mb": round(size / 1e6, 1),
            "ferretdb_peak_rss_mb": round(run.peak_rss / 1e6),
        })
    base = next((r for r in results if r["variant"] == "baseline"), results[0])
    print(f"\n{args.count:,} documents per variant, rounds of {args.round:,}, side by side; "
          f"replay = batches with one duplicate each")
    print(f"{'variant':<14} {'batch':>5} {'docs/s':>7} {'x base':>6} {'CPU s/1k':>8} "
          f"{'replay/s':>8} {'CPU s/1k':>8} {'upserts/s':>9} {'x base':>6} {'CPU s/1k':>8} "
          f"{'MB':>5} {'RSS':>4}  note")
    for r in results:
        print(f"{r['variant']:<14} {r['batch']:>5} {r['docs_per_second']:>7,} "
              f"{r['docs_per_second'] / base['docs_per_second']:>5.2f}x "
              f"{r['ferretdb_cpu_s_per_1000']:>8.3f} {r['replay_docs_per_second'] or 0:>8,} "
              f"{r['replay_cpu_s_per_1000'] or 0:>8.3f} {r['upserts_per_second']:>9,} "
              f"{r['upserts_per_second'] / base['upserts_per_second']:>5.2f}x "
              f"{r['upsert_cpu_s_per_1000']:>8.3f} {r['data_mb']:>5} "
              f"{r['ferretdb_peak_rss_mb']:>4}  {r['note']}")
    if not args.no_write:
        RESULTS.mkdir(parents=True, exist_ok=True)
        out = {"at": datetime.now(UTC).isoformat(timespec="seconds"),
               "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                        capture_output=True, text=True).stdout.strip(),
               "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                           "load_average": os.getloadavg()},
               "count": args.count, "round": args.round, "merchants": args.merchants,
               "history_minutes": args.history_minutes, "upserts_per_round": args.upserts,
               "results": results}
        (RESULTS / "ferretdb_insert.json").write_text(json.dumps(out, indent=2) + "\n")
        print(f"written {RESULTS / 'ferretdb_insert.json'}")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
