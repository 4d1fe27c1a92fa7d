"""The Postman collection (postman/txn-api.postman_collection.json) run by newman against a live
API: uvicorn in a child process on a free port, reading a seeded FerretDB database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
import uuid

import pytest

from tests.api_data import make_seed
from tests.procs import ROOT, Proc, free_port, wait_http

pytestmark = pytest.mark.integration

NEWMAN = ROOT / ".cache" / "npm" / "node_modules" / ".bin" / "newman"
COLLECTION = ROOT / "postman" / "txn-api.postman_collection.json"


def _newman() -> str:
    if not NEWMAN.exists():
        subprocess.run(["bash", str(ROOT / "scripts" / "install-system.sh")], check=True)
    return str(NEWMAN)


@pytest.mark.parametrize("api_key", ["", "k3y-for-newman"])
def test_postman_collection_passes_against_a_live_api(mongo_client, tmp_path, api_key) -> None:
    newman = _newman()
    db_name = f"test_api_nm_{uuid.uuid4().hex[:10]}"
    make_seed(n_txns=300).write(mongo_client[db_name])
    port = free_port()
    env = {**os.environ, "MONGO_DB": db_name, "API_KEY": api_key,
           "WORKER_URL": f"http://127.0.0.1:{free_port()}"}
    try:
        with Proc("api", [sys.executable, "-m", "uvicorn", "views.api:app", "--host",
                          "127.0.0.1", "--port", str(port)], env, tmp_path) as api:
            wait_http(f"http://127.0.0.1:{port}/health", timeout=60, proc=api)
            report = tmp_path / "newman.json"
            run = subprocess.run(
                [newman, "run", str(COLLECTION), "--env-var", f"baseUrl=http://127.0.0.1:{port}",
                 "--env-var", f"apiKey={api_key}", "--color", "off",
                 "--reporters", "cli,json", "--reporter-json-export", str(report)],
                capture_output=True, text=True, timeout=300)
            assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
            stats = json.loads(report.read_text())["run"]["stats"]
            assert stats["requests"]["total"] >= 17 and stats["requests"]["failed"] == 0
            assert stats["assertions"]["total"] >= 25 and stats["assertions"]["failed"] == 0
            if api_key:  # the collection sent the key; without it the same API says 401
                with pytest.raises(urllib.error.HTTPError) as info:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/summary", timeout=10)
                assert info.value.code == 401
    finally:
        mongo_client.drop_database(db_name)
