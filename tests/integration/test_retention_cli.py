"""``txn prune`` as a command on the real FerretDB: what it prints, its exit codes."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pymongo
import pytest

from agents.sink import documents as docs
from agents.sink import retention as ret
from agents.sink.documents import Entry
from agents.sink.manifests import Manifests
from tests.sink_data import enriched_stream

pytestmark = pytest.mark.integration

TXN = str(Path(sys.executable).parent / "txn")


def txn_prune(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([TXN, "prune", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env})


def test_prune_prints_what_it_deleted_and_a_second_run_nothing(
        mongo_db: pymongo.database.Database) -> None:
    now = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
    values, _ = enriched_stream(120, seed=12, start=now - timedelta(days=31))
    entries = [Entry(docs.transaction_doc(v), b"{}", "enriched", 0, i)
               for i, v in enumerate(values)]
    mongo_db[docs.TRANSACTIONS].insert_many([e.doc for e in entries if e.doc])
    Manifests(mongo_db)._write(ret.list_batch(docs.TRANSACTIONS, entries, [], now), now)

    first = txn_prune("--now", "2026-06-01T12:00:00", MONGO_DB=mongo_db.name,
                      RETENTION_DAYS="30")
    assert first.returncode == 0, first.stderr
    lines = first.stdout.splitlines()
    assert lines[0].startswith("[prune] now=2026-06-01T12:00:00+00:00 keeping: transactions "
                               "30 days")
    assert any(line.startswith("[prune] transactions: 30 days, before 2026-05-02T12: 1 hours "
                               "expired") and "deleted transactions 120 in" in line
               for line in lines), lines
    assert lines[-1].startswith("[prune] done in ")
    assert mongo_db[docs.TRANSACTIONS].count_documents({}) == 0

    second = txn_prune("--now", "2026-06-01T12:00:00", MONGO_DB=mongo_db.name)
    assert second.returncode == 0 and "deleted transactions" not in second.stdout
    assert second.stdout.splitlines()[-1].startswith(
        "[prune] done in 0.0 s: 4 reads, 0 delete calls for 0 ids")


def test_errors_are_one_line_and_a_non_zero_exit() -> None:
    down = txn_prune(MONGO_URL="mongodb://127.0.0.1:9", MONGO_DB="unused")
    assert down.returncode == 1
    assert down.stderr.startswith("Error: prune stopped after ")
    assert "ServerSelectionTimeoutError" in down.stderr and "Traceback" not in down.stderr
    bad = txn_prune("--now", "yesterday")
    assert bad.returncode == 2 and bad.stderr.strip() == \
        "Error: --now 'yesterday' is not an ISO-8601 time"
