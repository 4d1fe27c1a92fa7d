"""``txn sink``: start the sink worker role (``sink_app`` in :mod:`app.main`).

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

from pathlib import Path
from typing import Any

from faust.cli.base import option
from faust.cli.worker import worker
from faust.worker import Worker

__all__ = ["SinkWorker", "sink"]


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
