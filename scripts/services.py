"""Start, stop and report the local services: Apache Kafka (KRaft) and FerretDB (SQLite).

    python scripts/services.py start|stop|status|clean-data

No Docker: both run as plain processes of this machine. Kafka's jars come from Maven Central
through ``scripts/kafka/pom.xml``; FerretDB is built by Go from ``scripts/ferretdb``. Both
builds are cached in ``.cache/`` (and in Maven's and Go's own caches), data and logs live in
``var/``. Starting twice is harmless; ``stop`` stops only what this script started (pid files).

Environment: ``KAFKA_PORT`` (9092), ``KAFKA_CONTROLLER_PORT`` (9093), ``FERRETDB_PORT``
(27017), ``SERVICES_TIMEOUT`` (seconds to wait for each service, 120), ``TXN_VAR_DIR`` (the data,
logs and pid files: ``var/``). A second set of services (other ports, another ``TXN_VAR_DIR``)
runs next to the default one without touching it (``bench/longrun.py`` does).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache"
VAR = Path(os.environ.get("TXN_VAR_DIR") or ROOT / "var").resolve()
RUN = VAR / "run"
LOGS = VAR / "log"

KAFKA_PORT = int(os.environ.get("KAFKA_PORT", "9092"))
KAFKA_CONTROLLER_PORT = int(os.environ.get("KAFKA_CONTROLLER_PORT", "9093"))
FERRETDB_PORT = int(os.environ.get("FERRETDB_PORT", "27017"))
TIMEOUT = float(os.environ.get("SERVICES_TIMEOUT", "120"))

KAFKA_DIR = ROOT / "scripts" / "kafka"
KAFKA_JARS = CACHE / "kafka-jars"
KAFKA_DATA = VAR / "kafka"
FERRETDB_SRC = ROOT / "scripts" / "ferretdb"
FERRETDB_BIN = CACHE / "bin" / "ferretdb-local"
FERRETDB_DATA = VAR / "ferretdb"


def say(msg: str) -> None:
    print(f"[services] {msg}", flush=True)


class ServiceError(RuntimeError):
    """A service could not be built or started; the message says why."""


# --- pid files -------------------------------------------------------------------------------

def pid_file(name: str) -> Path:
    return RUN / f"{name}.pid"


#: What the command line of each service this script starts contains, besides this checkout's
#: path: after a reboot a pid file can name an unrelated process, which must not be signalled.
COMMAND_MARK = {"kafka": "kafka.Kafka", "ferretdb": "ferretdb"}


def is_ours(pid: int, name: str) -> bool:
    """Whether process ``pid`` is the ``name`` service of this checkout (by its command line)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
            errors="replace")
    except OSError:
        return False
    return str(ROOT) in cmdline and COMMAND_MARK[name] in cmdline


def running_pid(name: str) -> int | None:
    """The pid of the service we started, if that process is still alive and still ours."""
    path = pid_file(name)
    if not path.exists():
        return None
    try:
        pid = int(path.read_text().strip())
    except ValueError:
        pid = -1
    if pid <= 0 or not is_ours(pid, name):
        path.unlink(missing_ok=True)
        return None
    return pid


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def spawn(name: str, cmd: list[str], cwd: Path | None = None) -> int:
    RUN.mkdir(parents=True, exist_ok=True)
    LOGS.mkdir(parents=True, exist_ok=True)
    log = open(LOGS / f"{name}.log", "ab")
    proc = subprocess.Popen(
        cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        cwd=cwd or ROOT, start_new_session=True,
    )
    # Until the child has exec'ed, its command line is this script's: not "ours" yet, and a
    # check then (wait_until) would drop the pid file of a service that is starting.
    deadline = time.monotonic() + 10
    while proc.poll() is None and not is_ours(proc.pid, name) and time.monotonic() < deadline:
        time.sleep(0.01)
    pid_file(name).write_text(str(proc.pid))
    return proc.pid


def wait_until(name: str, ready: Callable[[], bool]) -> None:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        if running_pid(name) is None:
            raise ServiceError(f"{name} exited during start-up:\n{log_tail(name)}")
        if ready():
            return
        time.sleep(0.5)
    raise ServiceError(f"{name} did not become ready within {TIMEOUT:.0f}s:\n{log_tail(name)}")


def log_tail(name: str, lines: int = 30) -> str:
    path = LOGS / f"{name}.log"
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def stop_one(name: str, timeout: float = 30.0) -> None:
    pid = running_pid(name)
    if pid is None:
        say(f"{name}: not running (nothing of ours to stop)")
        return
    os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and running_pid(name) is not None:
        time.sleep(0.2)
    if running_pid(name) is not None:
        say(f"{name}: did not stop in {timeout:.0f}s, killing")
        os.killpg(pid, signal.SIGKILL)
        time.sleep(0.5)
    pid_file(name).unlink(missing_ok=True)
    say(f"{name}: stopped (pid {pid})")


# --- Kafka -----------------------------------------------------------------------------------

def kafka_jars() -> Path:
    """Copy the broker's jars (and a logging binding) from Maven into .cache, once."""
    marker = KAFKA_JARS / ".complete"
    pom = KAFKA_DIR / "pom.xml"
    if marker.exists() and marker.read_text() == pom.read_text():
        return KAFKA_JARS
    if shutil.which("mvn") is None:
        raise ServiceError("mvn (Apache Maven) is needed to fetch Kafka's jars; install maven")
    say("fetching Kafka's jars with Maven (first run only)...")
    shutil.rmtree(KAFKA_JARS, ignore_errors=True)
    KAFKA_JARS.mkdir(parents=True)
    subprocess.run(
        ["mvn", "-q", "-B", "-f", str(pom), "dependency:copy-dependencies",
         f"-DoutputDirectory={KAFKA_JARS}", "-DincludeScope=runtime"],
        check=True,
    )
    marker.write_text(pom.read_text())
    return KAFKA_JARS


def kafka_config() -> Path:
    """server.properties from the repo, with this checkout's data dir and ports."""
    KAFKA_DATA.mkdir(parents=True, exist_ok=True)
    text = (KAFKA_DIR / "server.properties").read_text()
    text = text.replace(":9092", f":{KAFKA_PORT}").replace(":9093", f":{KAFKA_CONTROLLER_PORT}")
    config = KAFKA_DATA / "server.properties"
    config.write_text(text + f"\nlog.dirs={KAFKA_DATA / 'logs'}\n")
    return config


def java(jars: Path, main: str, *args: str, heap: str = "256m", fixed: bool = False
         ) -> list[str]:
    """``fixed``: the whole heap committed and touched at start, so the process's memory is
    flat from then on instead of growing toward ``heap`` over the first hour (the broker)."""
    start = [f"-Xms{heap}", "-XX:+AlwaysPreTouch"] if fixed else ["-Xms64m"]
    return [
        "java", f"-Xmx{heap}", *start, "-XX:+UseG1GC", "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={KAFKA_DIR / 'log4j2.properties'}",
        "-cp", f"{jars}/*", main, *args,
    ]


def kafka_ready() -> bool:
    if not port_open(KAFKA_PORT):
        return False
    from kafka import KafkaAdminClient  # the broker answers a metadata request

    try:
        admin = KafkaAdminClient(
            bootstrap_servers=f"127.0.0.1:{KAFKA_PORT}", request_timeout_ms=3000,
            client_id="services-check",
        )
        try:
            admin.list_topics()
        finally:
            admin.close()
        return True
    except Exception:  # noqa: BLE001 - not ready yet, try again
        return False


def start_kafka() -> None:
    if running_pid("kafka") is not None:
        say(f"kafka: already running (pid {running_pid('kafka')}) on 127.0.0.1:{KAFKA_PORT}")
        return
    if port_open(KAFKA_PORT):
        raise ServiceError(f"port {KAFKA_PORT} is taken by a process this project did not start")
    jars = kafka_jars()
    config = kafka_config()
    if not (KAFKA_DATA / "logs" / "meta.properties").exists():
        cluster_id = subprocess.run(
            java(jars, "kafka.tools.StorageTool", "random-uuid"),
            check=True, capture_output=True, text=True,
        ).stdout.strip().splitlines()[-1]
        say(f"kafka: formatting storage (cluster id {cluster_id})")
        subprocess.run(
            java(jars, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(config),
                 "--ignore-formatted"),
            check=True, capture_output=True, text=True,
        )
    pid = spawn("kafka", java(jars, "kafka.Kafka", str(config), heap="1g", fixed=True))
    say(f"kafka: starting (pid {pid}), log in {LOGS / 'kafka.log'}")
    wait_until("kafka", kafka_ready)
    say(f"kafka: ready on 127.0.0.1:{KAFKA_PORT}")


# --- FerretDB --------------------------------------------------------------------------------

def ferretdb_binary() -> Path:
    sources = [*FERRETDB_SRC.glob("*.go"), FERRETDB_SRC / "go.mod", FERRETDB_SRC / "go.sum"]
    newest = max(p.stat().st_mtime for p in sources)
    if FERRETDB_BIN.exists() and FERRETDB_BIN.stat().st_mtime >= newest:
        return FERRETDB_BIN
    if shutil.which("go") is None:
        raise ServiceError("go is needed to build FerretDB; install Go 1.24+")
    say("building FerretDB 1.24.2 with Go (first run only, about a minute)...")
    FERRETDB_BIN.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["go", "build", "-o", str(FERRETDB_BIN), "."], cwd=FERRETDB_SRC, check=True,
        env={**os.environ, "GOFLAGS": "-mod=mod", "CGO_ENABLED": "0"},
    )
    return FERRETDB_BIN


def ferretdb_ready() -> bool:
    if not port_open(FERRETDB_PORT):
        return False
    import pymongo

    client = pymongo.MongoClient(
        f"mongodb://127.0.0.1:{FERRETDB_PORT}", serverSelectionTimeoutMS=2000
    )
    try:
        client.admin.command("ping")
        return True
    except Exception:  # noqa: BLE001 - not ready yet, try again
        return False
    finally:
        client.close()


def start_ferretdb() -> None:
    if running_pid("ferretdb") is not None:
        pid = running_pid("ferretdb")
        say(f"ferretdb: already running (pid {pid}) on 127.0.0.1:{FERRETDB_PORT}")
        return
    if port_open(FERRETDB_PORT):
        raise ServiceError(f"port {FERRETDB_PORT} is taken by a process this project did not start")
    binary = ferretdb_binary()
    FERRETDB_DATA.mkdir(parents=True, exist_ok=True)
    pid = spawn("ferretdb", [str(binary), f"--listen-addr=127.0.0.1:{FERRETDB_PORT}",
                             f"--data-dir={FERRETDB_DATA}"])
    say(f"ferretdb: starting (pid {pid}), log in {LOGS / 'ferretdb.log'}")
    wait_until("ferretdb", ferretdb_ready)
    say(f"ferretdb: ready on 127.0.0.1:{FERRETDB_PORT} (MongoDB wire protocol, SQLite backend)")


# --- commands --------------------------------------------------------------------------------

def status() -> int:
    ok = True
    for name, port, ready in (("kafka", KAFKA_PORT, kafka_ready),
                              ("ferretdb", FERRETDB_PORT, ferretdb_ready)):
        pid = running_pid(name)
        state = "ready" if ready() else ("starting or unhealthy" if pid else "stopped")
        ok = ok and state == "ready"
        owner = f"pid {pid}" if pid else "not started by this project"
        say(f"{name}: {state} on 127.0.0.1:{port} ({owner})")
    return 0 if ok else 1


def main(argv: list[str]) -> int:
    cmd = argv[1] if len(argv) > 1 else "status"
    try:
        if cmd == "start":
            start_kafka()
            start_ferretdb()
        elif cmd == "stop":
            stop_one("ferretdb")
            stop_one("kafka")
        elif cmd == "status":
            return status()
        elif cmd == "clean-data":
            if running_pid("kafka") or running_pid("ferretdb"):
                raise ServiceError("stop the services first (make services-down)")
            shutil.rmtree(VAR, ignore_errors=True)
            say(f"removed {VAR}")
        else:
            print(__doc__)
            return 2
    except (ServiceError, subprocess.CalledProcessError) as exc:
        say(f"ERROR: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
