"""The ``txn`` command line: Faust's own commands (``txn worker``, ``txn agents``...) on the
processing app, plus the pipeline's (``txn produce``, ``txn topics``, ``txn sink``), which
importing this module registers.
"""

from __future__ import annotations

import os

import mode.loop

from agents.sink import command as sink_command  # noqa: F401 - registers `txn sink`
from app import commands  # noqa: F401 - registers its commands on the app
from app.main import app

__all__ = ["main"]


def main() -> None:
    """Entry point of the ``txn`` console script. It runs on uvloop (less event-loop CPU per
    message in the worker) unless ``-L``/``--loop``/``F_LOOP`` chose a loop: Faust reads those
    when it is imported and then sets ``FAUST_LOOP``."""
    if "FAUST_LOOP" not in os.environ:
        mode.loop.use("uvloop")
    app.main()
