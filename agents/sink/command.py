"""``txn sink``: start the sink worker role (``sink_app`` in :mod:`app.main`).

It is Faust's own ``worker`` command pointed at the sink app, so it takes the same options
(``txn sink -l info``), except that the web server is off unless ``--with-web`` is given (the
processing worker already serves on ``WEB_PORT``). ``app.cli`` imports this module, which
registers the command.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from faust.cli.base import option
from faust.cli.worker import worker

__all__ = ["sink"]


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
        return super()._finalize_concrete_app(sink_app)
