"""The processing worker at a fixed offered rate: CPU per message, cores and messages per batch
while the producer sends ``--rate`` transactions/s (``bench/processing.py`` measures a backlog,
i.e. the largest batches; here batches are as small as the rate makes them).

    python bench/worker_rate.py --rate 4000 [--seconds 20] [--compare DIR ...] [--repeat 1]
        [--profile FILE]

One line per case (``--compare DIR``: the worker's code from another copy, e.g. ``git archive
<commit> | tar -x -C DIR``, alternating with the current code). Nothing is written.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from processing import cpu_seconds, metrics  # noqa: E402

from app.producer import TransactionFactory, send  # noqa: E402
from tests.procs import TXN, Proc, free_port, pipeline_env, wait_http  # noqa: E402


def run_case(code: Path | None, rate: int, seconds: float, tmp: Path,
             profile: Path | None) -> str:
    prefix = f"bench-rate-{uuid.uuid4().hex[:8]}"
    port = free_port()
    env = pipeline_env(prefix, TOPIC_PARTITIONS=8, WEB_PORT=port, DATA_DIR=tmp / prefix)
    if code is not None:
        env["PYTHONPATH"] = str(code)
    factory = TransactionFactory(seed=11, users=1_000, merchants=1_000, anomaly_rate=0.002,
                                 bad_rate=0.001)
    topic = f"{prefix}-transactions"
    send(factory, topic, rate=0, count=10, partitions=8)  # the topic, before the worker
    proc = Proc(prefix, [TXN, "worker", "-l", "info"], env, tmp).start()
    try:
        wait_http(f"http://localhost:{port}/health", timeout=120, proc=proc)
        while metrics(port)["txn_processed_total"] < 10:
            time.sleep(0.2)
        producer = threading.Thread(target=send, args=(factory, topic), kwargs=dict(
            rate=rate, duration=seconds, partitions=8, first_seq=10))
        producer.start()
        time.sleep(3)  # warm-up
        spy = None
        if profile is not None:
            spy = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record",
                                    "--format", "raw", "--rate", "200", "--nonblocking", "-o",
                                    str(profile), "--pid", str(proc.proc.pid)],  # type: ignore
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        pid = proc.proc.pid  # type: ignore[union-attr]
        m0, c0, t0 = metrics(port), cpu_seconds(pid), time.monotonic()
        time.sleep(max(1.0, seconds - 6))
        m1, c1, t1 = metrics(port), cpu_seconds(pid), time.monotonic()
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(60)
        producer.join()
    finally:
        proc.stop()
    n = m1["txn_processed_total"] - m0["txn_processed_total"]
    batches = m1["txn_batches_total"] - m0["txn_batches_total"]
    return (f"code={code or 'current'} rate={rate} processed/s={n / (t1 - t0):.0f} "
            f"cpu={(c1 - c0) / max(n, 1) * 1e6:.0f} us/msg cores={(c1 - c0) / (t1 - t0):.2f} "
            f"msgs/batch={n / max(batches, 1):.0f} load={os.getloadavg()[0]:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=4_000)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--compare", type=Path, action="append", default=[])
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--profile", type=Path, help="py-spy the current code's worker here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-rate-") as tmp:
        for _ in range(args.repeat):
            for code in [*args.compare, None]:
                print(run_case(code, args.rate, args.seconds, Path(tmp),
                               args.profile if code is None else None), flush=True)


if __name__ == "__main__":
    main()
