"""End-to-end benchmark of the pipeline against a raw Kafka pass-through (``make bench``).

For every offered rate (default 1k, 5k, 10k, 20k transactions/s and ``max`` = as fast as the
producer goes), in two modes, each case on fresh topics (``TOPIC_PREFIX``), a fresh database
(``MONGO_DB``) and a fresh ``DATA_DIR``:

- ``pipeline``: the processing worker (``txn worker``) and the sink (``txn sink``) running, the
  producer (:mod:`app.producer`) sending to ``transactions``;
- ``passthrough``: ``bench/passthrough.py`` (decode, add a field, re-encode, send) instead.

A separate consumer (the *probe*, a process of this script) reads the output topic
(``transactions_enriched`` or the pass-through's) from the beginning and records, for every
message, its arrival time. The producer's event time is anchored to the wall clock when it
starts sending (``--rate R``: event time advances 1/R s per transaction, so it is the time the
transaction is due to be sent), the Kafka timestamp equals the event time, and the worker keeps
that timestamp on the enriched message: latency = arrival at the probe - Kafka timestamp, i.e.
from the transaction's produce time to its enriched message. At ``max`` the event time cannot
follow the wall clock, so no latency is reported there.

Per case: the producer's achieved rate; the sustained processed rate (output messages arriving
in the steady window [first send + warm-up, last send] / its length); the stored rate (growth of
the MongoDB ``transactions`` collection over the same window); latency p50/p95/p99/max of the
transactions produced in the window; the backlog (produced - processed) and the worker group's
committed-offset lag when the producer stops; the drain time; CPU (cores) and peak RSS of the
broker, FerretDB, worker, sink (or pass-through), producer and probe (psutil).

    python bench/bench_pipeline.py [--rates 1000,5000,10000,20000,max] [--duration 60]
        [--modes pipeline,passthrough] [--profile 20] [--no-write]

writes ``bench/results/pipeline.json``, the table between the markers in ``docs/benchmarks.md``
and the chart ``docs/benchmarks.png``. ``--profile S`` also samples the worker with py-spy for S
seconds at ``--profile-rate`` (a separate case) into ``bench/results/worker-profile.txt``.
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
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.procs import TXN, Proc, free_port, pipeline_env, wait_for  # noqa: E402

__all__ = ["Case", "cpu_between", "latency_summary", "parse_rates", "percentile",
           "profile_summary", "rate_between", "window_rate"]

RESULTS = ROOT / "bench" / "results"
DOC = ROOT / "docs" / "benchmarks.md"
CHART = ROOT / "docs" / "benchmarks.png"
PY = sys.executable
TABLE_START, TABLE_END = "<!-- bench:table:start -->", "<!-- bench:table:end -->"
DEFAULT_RATES = "1000,5000,10000,20000,max"
#: Extra MongoDB URI options for the pipeline's processes (none by default; e.g.
#: ``maxPoolSize=1`` serialises every database call of the sink).
SINK_MONGO_OPTIONS = ""


# --- pure helpers (tests/unit/bench/test_bench_pipeline.py) ---------------------------------------
def parse_rates(text: str) -> list[int]:
    """``"1000,5k,max"`` -> ``[1000, 5000, 0]`` (0 = as fast as possible)."""
    rates = []
    for part in text.split(","):
        part = part.strip().lower()
        if not part:
            continue
        if part == "max":
            rates.append(0)
        elif part.endswith("k"):
            rates.append(int(float(part[:-1]) * 1000))
        else:
            rates.append(int(part))
        if rates[-1] < 0:
            raise ValueError(f"negative rate: {part}")
    return rates


def rate_label(rate: int) -> str:
    return "max" if rate == 0 else (f"{rate // 1000}k" if rate % 1000 == 0 else str(rate))


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0..100) of ascending ``sorted_values``, nearest-rank method
    (the smallest value with at least q% of the values at or below it)."""
    n = len(sorted_values)
    if n == 0:
        return None
    if not 0 <= q <= 100:
        raise ValueError("q must be in [0, 100]")
    rank = max(1, -(-q * n // 100))  # ceil(q/100 * n), at least 1
    return float(sorted_values[int(rank) - 1])


def latency_summary(latencies_ms: Iterable[float]) -> dict[str, float | int | None]:
    values = sorted(latencies_ms)
    return {"n": len(values), "p50": percentile(values, 50), "p95": percentile(values, 95),
            "p99": percentile(values, 99), "max": values[-1] if values else None}


def window_rate(times: Sequence[float], start: float, end: float) -> float:
    """Events per second among ``times`` falling in [start, end)."""
    if end <= start:
        return 0.0
    return sum(1 for t in times if start <= t < end) / (end - start)


def _at(samples: Sequence[tuple[float, float]], t: float) -> float:
    """The value of a sampled, growing quantity at ``t`` (linear between samples)."""
    if not samples:
        return 0.0
    if t <= samples[0][0]:
        return samples[0][1]
    for (t0, v0), (t1, v1) in zip(samples, samples[1:], strict=False):
        if t0 <= t <= t1:
            return v0 if t1 == t0 else v0 + (v1 - v0) * (t - t0) / (t1 - t0)
    return samples[-1][1]


def rate_between(samples: Sequence[tuple[float, float]], start: float, end: float) -> float:
    """Growth per second of a sampled counter (``(time, value)`` pairs) over [start, end]."""
    if end <= start or not samples:
        return 0.0
    return (_at(samples, end) - _at(samples, start)) / (end - start)


def cpu_between(samples: Sequence[tuple[float, float]], start: float, end: float) -> float:
    """Cores used over [start, end], from ``(time, cumulative CPU seconds)`` samples."""
    return rate_between(samples, start, end)


def profile_summary(collapsed: Iterable[str], top: int = 15) -> dict[str, list[list[Any]]]:
    """py-spy ``--format raw`` lines (``frame;frame;... count``) -> the functions with the most
    samples on top of the stack (self) and anywhere in it (inclusive), as shares of all samples."""
    own: dict[str, int] = {}
    incl: dict[str, int] = {}
    total = 0
    for line in collapsed:
        line = line.rstrip("\n")
        if not line or " " not in line:
            continue
        stack, _, count_text = line.rpartition(" ")
        count = int(count_text)
        frames = [f.split(" (")[0] + _where(f) for f in stack.split(";") if f]
        if not frames:
            continue
        total += count
        own[frames[-1]] = own.get(frames[-1], 0) + count
        for frame in set(frames):
            incl[frame] = incl.get(frame, 0) + count

    def ranked(counts: dict[str, int]) -> list[list[Any]]:
        kept = {k: v for k, v in counts.items() if k.split(" (")[0] not in ENTRY_FRAMES}
        best = sorted(kept.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
        return [[name, round(100 * c / total, 1)] for name, c in best]

    return {"samples": [[total]], "self": ranked(own), "inclusive": ranked(incl)}


#: Frames every sample goes through (entry points, the event loop, threads): left out of the
#: inclusive ranking, which is about where the work is.
ENTRY_FRAMES = frozenset((
    "<module>", "main", "App.main", "Command.__call__", "Command.as_click_command.<locals>._inner",
    "Command.invoke", "Command.main", "Command.run_using_worker", "Context.invoke",
    "Group.invoke", "pass_context.<locals>.new_func", "Worker.execute_from_commandline",
    "BaseEventLoop.run_forever", "BaseEventLoop.run_until_complete", "BaseEventLoop._run_once",
    "Handle._run", "Thread.run", "Thread._bootstrap", "Thread._bootstrap_inner",
    "Service._execute_task", "ServiceThread._start_thread", "ServiceThread._serve"))


def _where(frame: str) -> str:
    """``"f (path/to/module.py:12)"`` -> ``" (module.py)"``: the file, without the line."""
    if " (" not in frame:
        return ""
    path = frame.split(" (", 1)[1].rstrip(")").rsplit(":", 1)[0]
    return f" ({'/'.join(path.split('/')[-2:])})"


# --- the producer and the probe (run as processes of this script) ---------------------------------
def produce_main(args: argparse.Namespace) -> int:
    """Send at ``--rate`` for ``--duration`` s with event time anchored to the first send."""
    from app import producer

    class WallClockFactory(producer.TransactionFactory):
        first_send: float | None = None

        def messages(self, first_seq: int, count: int) -> Any:
            if self.first_send is None:
                self.first_send = time.time()
                self.start_ms = int(self.first_send * 1000) - first_seq * self.step_us // 1000
            return super().messages(first_seq, count)

    # At max (rate 0) an event-time step of 10 us: event time stays behind the clock below
    # 100k/s (the worker refuses events from the future).
    step_us = producer.step_us_for(args.rate, 1.0, 100_000)
    factory = WallClockFactory(seed=args.seed, step_us=step_us)
    kafka = producer.make_producer(args.bootstrap)
    kafka.partitions_for(args.topic)  # metadata before the clock starts
    summary = producer.send(factory, args.topic, bootstrap=args.bootstrap, rate=args.rate,
                            duration=args.duration, producer=kafka)
    last_send = time.time()
    kafka.close(timeout=10)
    result = {"sent": summary.sent, "errors": summary.errors, "seconds": summary.seconds,
              "rate": summary.rate, "first_send": factory.first_send, "last_send": last_send,
              "start_ms": factory.start_ms, "step_us": step_us, "seed": args.seed,
              "next_seq": summary.next_seq, "summary": str(summary)}
    Path(args.out).write_text(json.dumps(result))
    print(f"[produce] {summary}", flush=True)
    return 0


def probe_main(args: argparse.Namespace) -> int:
    """Read ``--topic`` from the beginning; record each message's arrival time and Kafka
    timestamp; on SIGTERM write them to ``--out`` (npz). ``--status`` gets the count."""
    import asyncio
    from array import array

    import numpy as np
    from aiokafka import AIOKafkaConsumer, TopicPartition

    arrival = array("d")
    stamp = array("q")
    stop = asyncio.Event()

    async def run() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        consumer = AIOKafkaConsumer(bootstrap_servers=args.bootstrap, group_id=None,
                                    enable_auto_commit=False, fetch_max_wait_ms=50,
                                    max_partition_fetch_bytes=4 << 20)
        await consumer.start()
        try:
            consumer.assign([TopicPartition(args.topic, p) for p in range(args.partitions)])
            await consumer.seek_to_beginning()
            status = Path(args.status)
            status.write_text(json.dumps({"ready": True, "count": 0}))
            next_status = time.monotonic() + 0.5
            while not stop.is_set():
                batches = await consumer.getmany(timeout_ms=50, max_records=20_000)
                now = time.time()
                for records in batches.values():
                    stamp.extend(r.timestamp for r in records)
                    arrival.extend([now] * len(records))
                if time.monotonic() >= next_status:
                    status.write_text(json.dumps({"ready": True, "count": len(stamp)}))
                    next_status = time.monotonic() + 0.5
            status.write_text(json.dumps({"ready": True, "count": len(stamp)}))
        finally:
            await consumer.stop()

    asyncio.run(run())
    np.savez(args.out, arrival=np.frombuffer(arrival, dtype=np.float64),
             stamp=np.frombuffer(stamp, dtype=np.int64))
    return 0


# --- the orchestrator ---------------------------------------------------------------------------
@dataclass
class Case:
    mode: str  # pipeline | passthrough
    rate: int  # offered rate, 0 = max
    label: str = ""
    produced: int = 0
    produce_errors: int = 0
    produce_rate: float = 0.0
    window_s: float = 0.0
    processed_rate: float = 0.0
    stored_rate: float | None = None
    latency_ms: dict[str, Any] = field(default_factory=dict)
    backlog_end: int = 0
    lag_end: int | None = None
    drain_s: float | None = None
    stored_total: int | None = None
    output_total: int = 0
    cpu: dict[str, float] = field(default_factory=dict)
    rss_mb: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


class Sampler(threading.Thread):
    """Every ``interval`` s: cumulative CPU seconds and RSS of each named process (and its
    children)."""

    def __init__(self, pids: dict[str, int], interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        import psutil

        self.procs = {}
        for name, pid in pids.items():
            try:
                self.procs[name] = psutil.Process(pid)
            except psutil.NoSuchProcess:
                pass
        self.interval = interval
        self.cpu: dict[str, list[tuple[float, float]]] = {n: [] for n in self.procs}
        self.rss: dict[str, list[tuple[float, float]]] = {n: [] for n in self.procs}
        self.stopped = threading.Event()

    def add(self, name: str, pid: int) -> None:
        import psutil

        self.procs[name] = psutil.Process(pid)
        self.cpu[name], self.rss[name] = [], []

    def sample(self) -> None:
        import psutil

        now = time.time()
        for name, proc in list(self.procs.items()):
            try:
                members = [proc, *proc.children(recursive=True)]
                cpu = rss = 0.0
                for p in members:
                    t = p.cpu_times()
                    cpu += t.user + t.system
                    rss += p.memory_info().rss
                self.cpu[name].append((now, cpu))
                self.rss[name].append((now, rss / 2**20))
            except psutil.Error:
                pass

    def run(self) -> None:
        while not self.stopped.is_set():
            self.sample()
            self.stopped.wait(self.interval)

    def stop(self) -> None:
        self.stopped.set()
        self.join(10)


class PrivateFerret:
    """A FerretDB of its own (the shared one's binary), fresh and restartable without
    touching the shared service."""

    def __init__(self, work: Path) -> None:
        self.port = free_port()
        self.dir = work / "ferretdb"
        self.dir.mkdir(parents=True)
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"mongodb://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, nice: int = 0) -> None:
        log = open(self.dir.parent / "ferretdb.log", "ab")
        self.proc = subprocess.Popen(
            niced(nice) + [str(ROOT / ".cache" / "bin" / "ferretdb-local"),
             f"--listen-addr=127.0.0.1:{self.port}", f"--data-dir={self.dir}"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        time.sleep(1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)


def niced(nice: int) -> list[str]:
    """The command prefix that starts a process (and all its threads) at niceness ``nice``."""
    return ["nice", "-n", str(nice)] if nice else []


def service_pids() -> dict[str, int]:
    pids = {}
    for name, key in (("broker", "kafka"), ("ferretdb", "ferretdb")):
        path = ROOT / "var" / "run" / f"{key}.pid"
        if path.exists():
            pids[name] = int(path.read_text().strip())
    return pids


class Kafka:
    """The few admin operations the benchmark needs (kafka-python)."""

    def __init__(self, bootstrap: str) -> None:
        from kafka import KafkaConsumer
        from kafka.admin import KafkaAdminClient

        self.bootstrap = bootstrap
        self.admin = KafkaAdminClient(bootstrap_servers=bootstrap.split(","),
                                      client_id="txn-bench")
        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap.split(","),
                                      client_id="txn-bench")

    def create(self, topics: Sequence[str], partitions: int) -> None:
        from kafka.admin import NewTopic
        from kafka.errors import TopicAlreadyExistsError

        from app.producer import ensure_topic

        ensure_topic(self.bootstrap, topics[0], partitions)  # transactions: timestamp config
        existing = set(self.admin.list_topics())
        new = [NewTopic(t, partitions, 1) for t in topics[1:] if t not in existing]
        if new:
            try:
                self.admin.create_topics(new)
            except TopicAlreadyExistsError:
                pass

    def end_offsets(self, topic: str) -> dict[int, int]:
        from kafka import TopicPartition

        parts = self.consumer.partitions_for_topic(topic) or set()
        ends = self.consumer.end_offsets([TopicPartition(topic, p) for p in parts])
        return {tp.partition: off for tp, off in ends.items()}

    def lag(self, group: str, topic: str) -> int:
        """Messages of ``topic`` beyond ``group``'s committed offsets."""
        committed = {tp.partition: meta.offset for tp, meta in
                     self.admin.list_group_offsets(group).get(group, {}).items()
                     if tp.topic == topic}
        return sum(max(0, end - max(0, committed.get(p, 0)))
                   for p, end in self.end_offsets(topic).items())

    def delete_prefixed(self, prefix: str) -> None:
        # Faust names repartition topics "<agent>-<source topic>-...": the prefix is inside.
        mine = [t for t in self.admin.list_topics() if prefix in t]
        if mine:
            try:
                self.admin.delete_topics(mine, timeout_ms=30_000)
            except Exception as exc:  # leftovers are harmless; say so
                print(f"[bench] could not delete topics of {prefix}: {exc}", flush=True)

    def close(self) -> None:
        self.admin.close()
        self.consumer.close()


def _wait_log(proc: Proc, text: str, timeout: float) -> None:
    wait_for(lambda: text in proc.log(400) or (not proc.alive and _dead(proc)), timeout,
             message=f"{proc.name}: {text!r}")
    if not proc.alive:
        _dead(proc)


def _dead(proc: Proc) -> bool:
    raise RuntimeError(f"{proc.name} exited:\n{proc.log()}")


def _status(path: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {}


def run_case(mode: str, rate: int, duration: float, warmup: float, run_id: str,
             work: Path, bootstrap: str, mongo_url: str, partitions: int,
             drain_timeout: float, with_sink: bool = True, sink_mongo_options: str = "",
             private_db: bool = True, profile_s: float = 0.0, tuned: str = "",
             tuned_storage_nice: int = 0) -> Case:
    import numpy as np
    import pymongo

    from app import contract

    case = Case(mode, rate, rate_label(rate))
    storage_nice = 0
    if mode == "tuned":  # the pipeline with --tuned settings
        mode, case.notes = "pipeline", [f"worker with {tuned}" if tuned else "worker as is"]
        storage_nice = tuned_storage_nice
        if storage_nice:
            case.notes.append(f"sink and FerretDB at nice {storage_nice}")
    prefix = f"bench-{run_id}-{case.mode[:4]}-{case.label}"
    db_name = prefix.replace("-", "_")
    port = free_port()
    logs = work / prefix
    logs.mkdir(parents=True)
    pids = service_pids()
    ferret = None
    if private_db and mode == "pipeline":
        ferret = PrivateFerret(logs)
        ferret.start(storage_nice)
        mongo_url, pids["ferretdb"] = ferret.url, ferret.pid
    env = pipeline_env(prefix, MONGO_DB=db_name, DATA_DIR=str(logs / "data"), WEB_PORT=port,
                       WEB_HOST="localhost", KAFKA_BOOTSTRAP_SERVERS=bootstrap,
                       MONGO_URL=with_options(mongo_url, sink_mongo_options),
                       TOPIC_PARTITIONS=partitions)
    topic_prefix = env["TOPIC_PREFIX"]
    source = topic_prefix + contract.TRANSACTIONS
    output = topic_prefix + (contract.ENRICHED if mode == "pipeline" else "passthrough")
    kafka = Kafka(bootstrap)
    mongo: pymongo.MongoClient[Any] = pymongo.MongoClient(mongo_url, socketTimeoutMS=20_000)
    procs: list[Proc] = []
    sampler: Sampler | None = None
    profiler: subprocess.Popen[bytes] | None = None
    print(f"[bench] {mode} {case.label}: topics {topic_prefix}*, db {db_name}", flush=True)
    try:
        if mode == "pipeline":
            kafka.create([source] + [topic_prefix + t for t in contract.TOPICS[1:]], partitions)
            worker = Proc("worker", worker_command(tuned if case.mode == "tuned" else ""), env,
                          logs).start()
            procs.append(worker)
            hop = {"worker": worker.proc.pid}  # type: ignore[union-attr]
            if with_sink:
                sink = Proc("sink", niced(storage_nice) + [TXN, "sink", "-l", "info"], env,
                            logs).start()
                procs.append(sink)
                hop["sink"] = sink.proc.pid  # type: ignore[union-attr]
            wait_for(lambda: b'"partitions":[0' in _get(f"http://localhost:{port}/health")
                     or (not worker.alive and _dead(worker)), 120, message="worker partitions")
            _wait_log(worker, "[^Worker]: Ready", 120)
            if with_sink:
                _wait_log(sink, "sink ready", 120)
                _wait_log(sink, "[^SinkWorker]: Ready", 120)  # the sink's own worker class
        else:
            kafka.create([source, output], partitions)
            passthrough = Proc("passthrough", [PY, str(ROOT / "bench" / "passthrough.py"),
                                               "--bootstrap", bootstrap, "--input", source,
                                               "--output", output, "--group", prefix],
                               env, logs).start()
            procs.append(passthrough)
            _wait_log(passthrough, "[passthrough] ready", 120)
            hop = {"passthrough": passthrough.proc.pid}  # type: ignore[union-attr]
        status = logs / "probe.json"
        probe = Proc("probe", [PY, __file__, "_probe", "--bootstrap", bootstrap,
                               "--topic", output, "--out", str(logs / "probe.npz"),
                               "--partitions", str(partitions),
                               "--status", str(status)], env, logs).start()
        procs.append(probe)
        wait_for(lambda: _status(status).get("ready") or (not probe.alive and _dead(probe)),
                 60, message="probe ready")
        sampler = Sampler({**pids, **hop, "probe": probe.proc.pid})  # type: ignore
        sampler.start()
        result_path = logs / "produce.json"
        producer = Proc("producer", [PY, __file__, "_produce", "--bootstrap", bootstrap,
                                     "--topic", source, "--rate", str(rate), "--duration",
                                     str(duration), "--out", str(result_path)], env,
                        logs).start()
        procs.append(producer)
        sampler.add("producer", producer.proc.pid)  # type: ignore[union-attr]
        if profile_s and mode == "pipeline":
            time.sleep(min(warmup + 2, duration / 3))
            profiler = subprocess.Popen(
                [str(Path(PY).parent / "py-spy"), "record", "--pid", str(hop["worker"]),
                 "--duration", str(int(profile_s)), "--rate", "100", "--nonblocking",
                 "--format", "raw", "--output", str(RESULTS / "worker-profile.txt")],
                stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        assert producer.proc is not None
        producer.proc.wait(duration + 180)
        t_stop = time.time()
        if not result_path.exists():
            raise RuntimeError(f"producer failed:\n{producer.log()}")
        produced = json.loads(result_path.read_text())
        case.produced, case.produce_errors = produced["sent"], produced["errors"]
        case.produce_rate = produced["rate"]
        start, end = produced["first_send"] + warmup, produced["last_send"]
        case.window_s = end - start
        seen_at_stop = int(_status(status).get("count", 0))
        case.backlog_end = max(0, case.produced - seen_at_stop)
        group = (f"{topic_prefix}txn-analytics" if mode == "pipeline" else prefix)
        case.lag_end = kafka.lag(group, source)

        # Drain: until the probe has every produced transaction and (pipeline) the sink has
        # stored them all. Not by counting the collection (a full scan on FerretDB, too heavy
        # to poll) nor by the sink's committed offsets (its rollup agent holds them back), but
        # from the sink's own flush records.
        def drained() -> bool:
            if int(_status(status).get("count", 0)) < case.produced:
                return False
            if mode == "pipeline" and with_sink:
                try:
                    stored = stored_series(mongo[db_name])
                except pymongo.errors.PyMongoError:
                    return False
                return bool(stored) and stored[-1][1] >= case.produced
            return True

        deadline = time.time() + drain_timeout
        while not drained() and time.time() < deadline:
            time.sleep(0.5)
        case.drain_s = round(time.time() - t_stop, 1) if drained() else None
        if case.drain_s is None:
            lags = f"worker lag {kafka.lag(group, source)}"
            case.notes.append(f"not drained within {drain_timeout:.0f} s ({lags}, "
                              f"probe {_status(status).get('count')}/{case.produced})")
        sampler.stop()
        probe.stop()
        data = np.load(logs / "probe.npz")
        arrival, stamp = data["arrival"], data["stamp"] / 1000.0
        case.output_total = int(len(arrival))
        case.processed_rate = round(float(((arrival >= start) & (arrival < end)).sum())
                                    / case.window_s, 1) if case.window_s > 0 else 0.0
        if rate > 0:
            in_window = (stamp >= start) & (stamp < end)
            case.latency_ms = {k: (round(v, 1) if isinstance(v, float) else v) for k, v in
                               latency_summary(((arrival - stamp)[in_window] * 1000).tolist())
                               .items()}
        else:
            case.notes.append("no latency at max: event time cannot follow the wall clock")
        if mode == "pipeline" and with_sink:
            # The sink records every flush in ``sink_batches``: its growth is the stored rate.
            try:
                stored = stored_series(mongo[db_name])
                case.stored_rate = round(rate_between(stored, start, end), 1)
                case.stored_total = int(stored[-1][1]) if stored else 0
            except pymongo.errors.PyMongoError as exc:
                case.notes.append(f"stored rate unknown: {type(exc).__name__}")
        for name, samples in sampler.cpu.items():
            case.cpu[name] = round(cpu_between(samples, start, end), 2)
        for name, samples in sampler.rss.items():
            window = [v for t, v in samples if start <= t <= end] or [v for _, v in samples]
            case.rss_mb[name] = round(max(window), 1) if window else 0.0
        if case.produce_errors:
            case.notes.append(f"{case.produce_errors} producer errors")
        if rate and case.produce_rate < 0.95 * rate:
            case.notes.append(f"the producer reached only {case.produce_rate:.0f}/s")
        return case
    finally:
        if sampler is not None and sampler.is_alive():
            sampler.stop()
        if profiler is not None:
            try:
                profiler.wait(profile_s + 30)
            except subprocess.TimeoutExpired:
                profiler.kill()
        for proc in reversed(procs):
            proc.stop(30)
        kafka.delete_prefixed(topic_prefix)
        kafka.close()
        try:
            mongo.drop_database(db_name)
        except pymongo.errors.PyMongoError as exc:
            print(f"[bench] could not drop {db_name}: {exc}", flush=True)
        mongo.close()
        if ferret is not None:
            ferret.stop()
            shutil.rmtree(ferret.dir, ignore_errors=True)
        shutil.rmtree(logs / "data", ignore_errors=True)


def stored_series(db: Any) -> list[tuple[float, float]]:
    """``(time, documents stored so far)`` after each of the sink's flushes of
    ``transactions`` (``sink_batches``: inserted + already there)."""
    total = 0
    series = []
    for doc in sorted(db["sink_batches"].find({"collection": "transactions"},
                                              {"at": 1, "inserted": 1, "duplicates": 1}),
                      key=lambda d: d["at"]):
        total += doc.get("inserted", 0) + doc.get("duplicates", 0)
        at = doc["at"]
        series.append((at.replace(tzinfo=UTC).timestamp() if at.tzinfo is None
                       else at.timestamp(), float(total)))
    return series


#: ``txn worker`` with module constants of :mod:`agents.processor` set first (``--tuned``):
#: an experiment on the worker's knobs without editing its code.
TUNED_WORKER = """
import sys
import agents.processor as p
for item in sys.argv.pop(1).split(","):
    name, value = item.split("=")
    setattr(p, name, type(getattr(p, name))(value))
from app.cli import main
main()
"""


def worker_command(tuned: str = "") -> list[str]:
    if not tuned:
        return [TXN, "worker", "-l", "info"]
    return [PY, "-c", TUNED_WORKER, tuned, "worker", "-l", "info"]


def with_options(url: str, options: str) -> str:
    """``url`` with extra MongoDB URI ``options`` (``"maxPoolSize=1"``) appended."""
    if not options:
        return url
    if "?" in url:
        return f"{url}&{options}"
    return f"{url}?{options}" if url.count("/") > 2 else f"{url}/?{options}"


def _get(url: str) -> bytes:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bytes(resp.read())
    except OSError:
        return b""


# --- output -------------------------------------------------------------------------------------
def _fmt(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def table(cases: Sequence[Case]) -> str:
    """The results as a markdown table, pipeline and pass-through side by side per rate."""
    base = {c.rate: c for c in cases if c.mode == "passthrough"}
    head = ("| offered/s | mode | produced/s | processed/s | stored/s | vs pass-through | "
            "p50 ms | p95 ms | p99 ms | max ms | backlog at end | lag at end | drain s | "
            "CPU cores: broker / db / hop / sink / producer / probe | peak RSS MB: worker, sink |")
    lines = [head, "|" + "|".join("---" for _ in range(head.count("|") - 1)) + "|"]
    for c in cases:
        ratio = None
        if c.mode != "passthrough" and c.rate in base and base[c.rate].processed_rate:
            ratio = f"{c.processed_rate / base[c.rate].processed_rate:.0%}"
        hop = "passthrough" if c.mode == "passthrough" else "worker"
        cpu = " / ".join(_fmt(c.cpu.get(n), 2) for n in
                         ("broker", "ferretdb", hop, "sink", "producer", "probe"))
        rss = ", ".join(_fmt(c.rss_mb.get(n)) for n in (hop, "sink") if n in c.rss_mb)
        lat = c.latency_ms
        lines.append(
            f"| {c.label} | {c.mode} | {_fmt(c.produce_rate)} | {_fmt(c.processed_rate)} | "
            f"{_fmt(c.stored_rate)} | {ratio or '-'} | {_fmt(lat.get('p50'), 1)} | "
            f"{_fmt(lat.get('p95'), 1)} | {_fmt(lat.get('p99'), 1)} | {_fmt(lat.get('max'), 1)} "
            f"| {_fmt(c.backlog_end)} | {_fmt(c.lag_end)} | {_fmt(c.drain_s, 1)} | {cpu} | "
            f"{rss} |")
    return "\n".join(lines)


def goals(cases: Sequence[Case]) -> str:
    """The issue's three goals against this run's cases, as markdown lines."""
    by = {(c.mode, c.rate): c for c in cases}
    lines = []
    pipe10 = by.get(("pipeline", 10000))
    if pipe10 is not None:
        ok = pipe10.processed_rate >= 9500 and (pipe10.stored_rate or 0) >= 9500
        lines.append(f"- Sustained 10k transactions/s end to end: **{'yes' if ok else 'no'}** "
                     f"(at 10k offered: {_fmt(pipe10.produce_rate)}/s produced, "
                     f"{_fmt(pipe10.processed_rate)}/s processed, "
                     f"{_fmt(pipe10.stored_rate)}/s stored)")
    pipe5 = by.get(("pipeline", 5000))
    if pipe5 is not None and pipe5.latency_ms:
        p99 = pipe5.latency_ms.get("p99")
        lines.append(f"- p99 < 50 ms at 5k/s: **{'yes' if p99 is not None and p99 < 50 else 'no'}"
                     f"** (p99 {_fmt(p99, 1)} ms, p50 {_fmt(pipe5.latency_ms.get('p50'), 1)} ms)")
    tuned5 = by.get(("tuned", 5000))
    if tuned5 is not None and tuned5.latency_ms:
        lines.append(f"  - tuned ({'; '.join(tuned5.notes[:2])}): p99 "
                     f"{_fmt(tuned5.latency_ms.get('p99'), 1)} ms, p50 "
                     f"{_fmt(tuned5.latency_ms.get('p50'), 1)} ms, "
                     f"{_fmt(tuned5.processed_rate)}/s processed")
    for rate in sorted({c.rate for c in cases}, key=lambda r: (r == 0, r)):
        pipe, base = by.get(("pipeline", rate)), by.get(("passthrough", rate))
        if pipe is None or base is None or not base.processed_rate:
            continue
        ratio = pipe.processed_rate / base.processed_rate
        if rate == 0:
            lines.append(f"- Pipeline throughput >= 50% of the pass-through's (both as fast as "
                         f"they go): **{'yes' if ratio >= 0.5 else 'no'}** ({ratio:.0%}: "
                         f"{_fmt(pipe.processed_rate)}/s vs {_fmt(base.processed_rate)}/s)")
    top = by.get(("pipeline", 0)) or (max((c for c in cases if c.mode == "pipeline"),
                                          key=lambda c: c.processed_rate, default=None))
    if top is not None and top.cpu:
        used = sum(top.cpu.values())
        parts = ", ".join(f"{k} {v:.2f}" for k, v in sorted(top.cpu.items(),
                                                          key=lambda kv: -kv[1]))
        lines.append(f"- CPU at {top.label} (pipeline): {used:.2f} of {os.cpu_count()} cores "
                     f"busy ({parts})")
    return "\n".join(lines)


def write_doc(text: str, doc: Path = DOC) -> None:
    """Replace the table between the markers of ``doc`` (or append it with the markers)."""
    block = f"{TABLE_START}\n{text}\n{TABLE_END}"
    old = doc.read_text() if doc.exists() else "# Benchmarks\n"
    if TABLE_START in old and TABLE_END in old:
        before, rest = old.split(TABLE_START, 1)
        new = before + block + rest.split(TABLE_END, 1)[1]
    else:
        new = old.rstrip("\n") + "\n\n" + block + "\n"
    doc.write_text(new)


def chart(cases: Sequence[Case], path: Path = CHART) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rates = sorted({c.rate for c in cases}, key=lambda r: (r == 0, r))
    labels = [rate_label(r) for r in rates]
    x = list(range(len(rates)))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    for mode, style, color in (("pipeline", "o-", "tab:blue"),
                               ("passthrough", "s--", "tab:orange"),
                               ("tuned", "d-.", "tab:purple")):
        by = {c.rate: c for c in cases if c.mode == mode}
        if not by:
            continue
        ax1.plot(x, [by[r].processed_rate if r in by else None for r in rates], style,
                 color=color, label=f"{mode}: processed/s")
        if mode == "pipeline":
            ax1.plot(x, [by[r].stored_rate if r in by else None for r in rates], "^:",
                     color="tab:green", label="pipeline: stored/s (MongoDB)")
        for q, marker, ls in (("p50", style[0], "-"), ("p99", style[0], ":")):
            ys = [by[r].latency_ms.get(q) if r in by else None for r in rates]
            ax2.plot(x, [y if y is not None else float("nan") for y in ys], marker=marker,
                     ls=ls, color=color, label=f"{mode} {q}")
    offered = [r if r else float("nan") for r in rates]
    ax1.plot(x, offered, color="grey", lw=0.8, label="offered")
    ax1.set_xticks(x, labels)
    ax1.set_xlabel("offered rate (transactions/s)")
    ax1.set_ylabel("messages/s")
    ax1.set_title("throughput")
    ax1.legend(fontsize=8)
    ax1.grid(alpha=0.3)
    ax2.set_xticks(x, labels)
    ax2.set_yscale("log")
    ax2.set_xlabel("offered rate (transactions/s)")
    ax2.set_ylabel("ms (log)")
    ax2.set_title("latency: produce -> enriched message")
    ax2.axhline(50, color="red", lw=0.8, ls=":", label="goal p99 50 ms at 5k/s")
    ax2.legend(fontsize=8)
    ax2.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def machine() -> dict[str, Any]:
    import psutil

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()
    return {"cpus": os.cpu_count(), "memory_gb": round(psutil.virtual_memory().total / 2**30),
            "python": platform.python_version(), "commit": commit,
            "load_avg_at_start": [round(x, 2) for x in os.getloadavg()]}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("_produce", "_probe"):
        sub = argparse.ArgumentParser()
        sub.add_argument("--bootstrap", required=True)
        sub.add_argument("--topic", required=True)
        sub.add_argument("--out", required=True)
        sub.add_argument("--rate", type=float, default=0)
        sub.add_argument("--duration", type=float, default=10)
        sub.add_argument("--seed", type=int, default=42)
        sub.add_argument("--status", default="")
        sub.add_argument("--partitions", type=int, default=8)
        args = sub.parse_args(argv[1:])
        return produce_main(args) if argv[0] == "_produce" else probe_main(args)

    from app.settings import settings

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default=DEFAULT_RATES, help=f"default {DEFAULT_RATES}")
    parser.add_argument("--duration", type=float, default=60, help="seconds per case")
    parser.add_argument("--warmup", type=float, default=5,
                        help="seconds at the start of each case left out of the rates")
    parser.add_argument("--modes", default="pipeline,passthrough",
                        help="pipeline, passthrough and/or tuned (the pipeline with --tuned)")
    parser.add_argument("--tuned", default="BATCH_SECONDS=0.02",
                        help="NAME=VALUE,... constants of agents.processor for mode 'tuned'")
    parser.add_argument("--tuned-storage-nice", type=int, default=0,
                        help="in mode 'tuned', run the sink and its FerretDB at this niceness "
                             "(the storage path yields the CPU to the worker)")
    parser.add_argument("--tuned-rates", default="5000",
                        help="the offered rates at which mode 'tuned' runs")
    parser.add_argument("--drain-timeout", type=float, default=60)
    parser.add_argument("--sink-mongo-options", default=SINK_MONGO_OPTIONS,
                        help=f"URI options for the sink's MONGO_URL (default "
                             f"{SINK_MONGO_OPTIONS!r}; see docs/benchmarks.md)")
    parser.add_argument("--shared-db", action="store_true",
                        help="use the shared FerretDB (MONGO_URL) instead of a fresh one per case")
    parser.add_argument("--no-sink", action="store_true",
                        help="run the pipeline without the sink (no stored rate)")
    parser.add_argument("--profile", type=float, default=0,
                        help="sample the worker with py-spy for this many seconds during the "
                             "pipeline case at --profile-rate")
    parser.add_argument("--profile-rate", default="10000")
    parser.add_argument("--no-write", action="store_true",
                        help="print only (no results file, doc or chart)")
    parser.add_argument("--note", default="", help="a remark stored with the results")
    args = parser.parse_args(argv)
    rates = parse_rates(args.rates)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    run_id = uuid.uuid4().hex[:6]
    info = {**machine(), "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "duration_s": args.duration, "warmup_s": args.warmup, "rates": args.rates,
            "partitions": settings.topic_partitions, "sink": not args.no_sink,
            "sink_mongo_options": args.sink_mongo_options,
            "tuned": args.tuned if "tuned" in modes else "",
            "tuned_storage_nice": args.tuned_storage_nice if "tuned" in modes else 0,
            "db": "shared MONGO_URL" if args.shared_db else "a fresh FerretDB 1.24 per case",
            "note": args.note}
    print(f"[bench] run {run_id}: {json.dumps(info)}", flush=True)
    cases: list[Case] = []
    profile: dict[str, Any] | None = None
    tmp = tempfile.mkdtemp(prefix=f"txn-bench-{run_id}-")  # logs kept; data dirs removed
    print(f"[bench] logs in {tmp}", flush=True)
    if True:
        common = dict(duration=args.duration, warmup=args.warmup, run_id=run_id,
                      work=Path(tmp), bootstrap=settings.kafka_bootstrap_servers,
                      mongo_url=settings.mongo_url, partitions=settings.topic_partitions,
                      drain_timeout=args.drain_timeout, with_sink=not args.no_sink,
                      sink_mongo_options=args.sink_mongo_options,
                      private_db=not args.shared_db, tuned=args.tuned,
                      tuned_storage_nice=args.tuned_storage_nice)
        tuned_rates = set(parse_rates(args.tuned_rates))
        prof_rate = parse_rates(args.profile_rate)[0]
        for rate in rates:
            for mode in modes:
                if mode == "tuned" and rate not in tuned_rates:
                    continue
                profiled = bool(args.profile) and mode == "pipeline" and rate == prof_rate
                if profiled:
                    RESULTS.mkdir(parents=True, exist_ok=True)
                    (RESULTS / "worker-profile.txt").unlink(missing_ok=True)
                case = run_case(mode, rate, **common,  # type: ignore[arg-type]
                                profile_s=args.profile if profiled else 0.0)
                cases.append(case)
                print(f"[bench] {json.dumps(asdict(case))}", flush=True)
                raw = RESULTS / "worker-profile.txt"
                if profiled and raw.exists():
                    case.notes.append(f"py-spy sampled the worker for {args.profile:g} s")
                    profile = {"rate": rate_label(rate), "seconds": args.profile,
                               "processed_rate": case.processed_rate,
                               **profile_summary(raw.read_text().splitlines())}
                    print(f"[bench] profile {json.dumps(profile)}", flush=True)
    text = table(cases)
    print(text)
    if not args.no_write:
        RESULTS.mkdir(parents=True, exist_ok=True)
        out: dict[str, Any] = {"run": info, "cases": [asdict(c) for c in cases]}
        if profile is not None:
            out["profile"] = profile
        (RESULTS / "pipeline.json").write_text(json.dumps(out, indent=1) + "\n")
        # the commit stays in pipeline.json: the doc speaks of the product, not its history
        write_doc(f"Run {info['started']} ({args.duration:g} s per "
                  f"case, warm-up {args.warmup:g} s{'; ' + args.note if args.note else ''}):"
                  f"\n\n{text}\n\n{goals(cases)}")
        chart(cases)
        print(f"[bench] wrote {RESULTS / 'pipeline.json'}, {DOC}, {CHART}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
