"""``txn sink``: start the sink worker role (``sink_app`` in :mod:`app.main`); ``txn prune``:
delete what has passed its retention (``prune.py``).

It is Faust's own ``worker`` command pointed at the sink app, so it takes the same options
(``txn sink -l info``), except that the web server is off unless ``--with-web`` is given (the
processing worker already serves on ``WEB_PORT``; the sink serves its own ``/metrics`` on
``SINK_METRICS_PORT``). ``app.cli`` imports this module, which registers the command.

A stop (SIGTERM) is prompt: Faust does not wait for the held events to be acked
(``stream_wait_empty`` off: the batches and rollups still held are never written on a stop,
their events are read again by the next start), and whatever still runs
:data:`~agents.sink.crash.STOP_SECONDS` after the signal is abandoned.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from faust.cli.base import option
from faust.cli.worker import worker
from faust.worker import Worker

from app.main import app
from app.settings import settings

__all__ = ["SinkWorker", "prune", "sink"]


class SinkWorker(Worker):
    """Faust's worker, with a deadline on its stop."""

    async def on_stop(self) -> None:
        from agents.sink.crash import arm_stop_deadline

        arm_stop_deadline()
        await super().on_stop()


class sink(worker):  # noqa: N801 - the class name is the command's name
    """Start the sink worker: writes the pipeline's topics and rollups into MongoDB."""

    options = [
        option("--with-web/--without-web", default=False,
               help="Run Faust's web server too (default: without; set --web-port too)."),
        *worker.options[1:],
    ]

    def _finalize_concrete_app(self, app: Any) -> Any:
        # Imported here, not at module level: ``txn`` loads this module for every command.
        import agents.sink.agents  # noqa: F401 - registers the sink's agents and tasks
        from app.main import sink_app

        Path(sink_app.conf.datadir).mkdir(parents=True, exist_ok=True)
        sink_app.conf.stream_wait_empty = False
        # (the setting is typed with an unbound TypeVar, which mypy cannot match)
        sink_app.conf.Worker = SinkWorker  # type: ignore[assignment]
        return super()._finalize_concrete_app(sink_app)


@app.command(
    option("--now", type=str, default=None,
           help="Prune as if it were this time (ISO-8601, UTC without an offset); default: "
                "the current time. For tests and replays."),
)
async def prune(self: Any, now: str | None) -> None:
    """Delete what has passed its retention (RETENTION_DAYS, AGGREGATE_RETENTION_DAYS,
    ANOMALY_RETENTION_DAYS, DLQ_RETENTION_DAYS), by _id: the cost follows what expired, not
    the size of the collections. Safe beside the sink and when run again."""
    import sys

    from agents.sink.mongo import connect
    from agents.sink.prune import prune as run
    from agents.sink.prune import retention_days

    when: datetime | None = None
    if now:
        try:
            when = datetime.fromisoformat(now)
        except ValueError:
            print(f"Error: --now {now!r} is not an ISO-8601 time", file=sys.stderr, flush=True)
            raise SystemExit(2) from None
        when = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    client = connect(settings.mongo_url)
    try:
        code = run(client[settings.mongo_db], retention_days(settings), when,
                   lambda line: print(line, flush=True),
                   lambda line: print(line, file=sys.stderr, flush=True))
    finally:
        client.close()
    if code:
        raise SystemExit(code)
