"""Throughput of the processing worker alone: how fast ``txn worker`` drains a backlog.

For each user count: fresh topics (a unique ``TOPIC_PREFIX``) and ``DATA_DIR``; the producer
(:mod:`app.producer`, as fast as it goes) writes ``--count`` transactions to ``transactions``
first; then one worker starts and the script polls its ``/metrics`` until every message is
processed (valid ones folded, invalid ones in the DLQ); ``--workers 2`` starts two workers in
one group, which split the partitions. The rate is messages / seconds between
the first and the last processed poll; CPU per message is the worker's user+system time over
the same window divided by the messages, so ``msgs_per_cpu_second`` is the rate one whole core
would give: on a machine shared with other work, the wall-clock rate depends on how much CPU
the worker gets.

    python bench/processing.py [--count 60000] [--users 1000,10000] [--partitions 8]
        [--workers 1] [--no-write]

prints one line per case and writes ``bench/results/processing.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.producer import TransactionFactory, send, start_for  # noqa: E402
from tests.procs import TXN, Proc, free_port, pipeline_env, wait_http  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "processing.json"


def metrics(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://localhost:{port}/metrics", timeout=5).read().decode()
    return {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
            if line and not line.startswith("#") and "{" not in line}


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_profiler(pid: int, out: Path) -> subprocess.Popen[bytes]:
    """py-spy (root, or ptrace allowed) sampling the worker into collapsed stacks (``raw``)."""
    py_spy = Path(sys.executable).parent / "py-spy"
    return subprocess.Popen([str(py_spy), "record", "--format", "raw", "--rate", "200",
                             "--nonblocking", "-o", str(out), "--pid", str(pid)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def run_case(count: int, users: int, partitions: int, tmp: Path,
             workers: int = 1, profile: Path | None = None,
             code: Path | None = None) -> dict[str, object]:
    load_before = os.getloadavg()
    prefix = f"bench-proc-{uuid.uuid4().hex[:8]}"
    start_ms, _ = start_for(None, count=count, first_seq=0, step_us=1000, ahead=True,
                            now_ms=int(time.time() * 1000))  # the backlog ends now
    factory = TransactionFactory(seed=11, users=users, merchants=1_000, anomaly_rate=0.002,
                                 bad_rate=0.001, start_ms=start_ms, step_us=1000)
    produced = send(factory, f"{prefix}-transactions", rate=0, count=count,
                    partitions=partitions)
    procs: list[tuple[Proc, int]] = []
    for i in range(workers):
        port = free_port()
        env = pipeline_env(prefix, TOPIC_PARTITIONS=partitions, WEB_PORT=port,
                           DATA_DIR=tmp / f"{prefix}-{i}")
        if code is not None:  # another version of the worker's code (app, agents, tables...)
            env["PYTHONPATH"] = str(code)
        procs.append((Proc(f"{prefix}-{i}", [TXN, "worker", "-l", "info"], env, tmp).start(),
                      port))
    try:
        for proc, port in procs:
            wait_http(f"http://localhost:{port}/health", timeout=120, proc=proc)
        # several workers: measure once they have split the partitions
        split_by = time.monotonic() + 120
        while workers > 1 and time.monotonic() < split_by and not all(
                json.loads(wait_http(f"http://localhost:{port}/health"))["partitions"]
                for _, port in procs):
            time.sleep(0.3)
        profiler = None
        if profile is not None:
            profiler = start_profiler(procs[0][0].proc.pid,  # type: ignore[union-attr]
                                      profile / f"processing-{users}.txt")
        samples: list[tuple[float, float, float]] = []  # (time, messages done, workers' CPU)
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            done = cpu = 0.0
            for proc, port in procs:
                m = metrics(port)
                done += m["txn_processed_total"] + m["txn_dlq_total"]
                cpu += cpu_seconds(proc.proc.pid)  # type: ignore[union-attr]
            samples.append((time.monotonic(), done, cpu))
            if done >= count:
                break
            time.sleep(0.5)
        if profiler is not None:
            profiler.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
            profiler.wait(60)
        totals = [metrics(port) for _, port in procs]
        m = {k: sum(t[k] for t in totals) for k in totals[0]}
    finally:
        for proc, _ in procs:
            proc.stop()
    moving = [s for s in samples if s[1] > 0]
    (t0, n0, c0), (t1, n1, c1) = moving[0], moving[-1]
    rate = (n1 - n0) / (t1 - t0) if t1 > t0 else float("nan")
    cpu_us = (c1 - c0) / (n1 - n0) * 1e6 if n1 > n0 else float("nan")
    return {"code": "current" if code is None else str(code),
            "count": count, "users": users, "partitions": partitions, "workers": workers,
            "produced": str(produced), "processed": m["txn_processed_total"],
            "dlq": m["txn_dlq_total"], "anomalies": m["txn_anomalies_total"],
            "batches": m["txn_batches_total"], "seconds": round(t1 - t0, 2),
            "rate_msgs_per_s": round(rate),
            "worker_cpu_us_per_msg": round(cpu_us), "msgs_per_cpu_second": round(1e6 / cpu_us),
            "load_average_before": [round(x, 2) for x in load_before]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=60_000)
    parser.add_argument("--users", default="1000,10000")
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--workers", type=int, default=1, help="worker processes (one group)")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--profile", type=Path, help="py-spy the (first) worker: stacks here")
    parser.add_argument("--compare", type=Path, action="append", default=[],
                        help="also run the worker from this copy of the code (e.g. `git archive "
                             "<commit> | tar -x -C DIR`), alternating with the current code")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each case")
    args = parser.parse_args()
    cases = []
    with tempfile.TemporaryDirectory(prefix="bench-proc-") as tmp:
        for _, users, code in ((r, int(u), c) for r in range(args.repeat)
                               for u in args.users.split(",") for c in [*args.compare, None]):
            case = run_case(args.count, users, args.partitions, Path(tmp), args.workers,
                            args.profile, code)
            print(f"code={case['code']} workers={args.workers} users={users} count={args.count} "
                  f"rate={case['rate_msgs_per_s']} msg/s "
                  f"cpu={case['worker_cpu_us_per_msg']} us/msg "
                  f"(= {case['msgs_per_cpu_second']} msg per CPU second) "
                  f"batches={case['batches']} load={case['load_average_before']}", flush=True)
            cases.append(case)
    load = os.getloadavg()
    result = {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "machine": f"{os.cpu_count()} cores, {platform.python_implementation()} "
                         f"{platform.python_version()}",
              "load_average_after": [round(x, 2) for x in load], "cases": cases}
    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        previous = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
        runs = [r for r in previous.get("runs", [])
                if (r.get("workers"), r.get("users", args.users)) != (args.workers, args.users)]
        result["workers"], result["users"] = args.workers, args.users
        RESULTS.write_text(json.dumps({"runs": [*runs, result]}, indent=2) + "\n")
        print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
