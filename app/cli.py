"""The ``txn`` command line: Faust's own commands (``txn worker``, ``txn agents``...) on the
processing app, plus the pipeline's (``txn produce``, ``txn topics``, ``txn sink``), which
importing this module registers.
"""

from __future__ import annotations

import ctypes
import os

import mode.loop

from agents.sink import command as sink_command  # noqa: F401 - registers `txn sink`
from app import commands  # noqa: F401 - registers its commands on the app
from app.main import app

__all__ = ["MALLOC_ARENAS", "limit_malloc_arenas", "main"]

#: glibc's malloc arenas for the process (its default is 8 per core, one per thread as threads
#: appear): with RocksDB's and Kafka's threads, more arenas kept more freed memory, and the
#: worker's RSS crept up over weeks of event time (bench/event_time_memory.py).
MALLOC_ARENAS = 2
_M_ARENA_MAX = -8  # mallopt's parameter number (malloc.h)


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas unless ``MALLOC_ARENA_MAX`` already chose; True if set (False
    on a C library without ``mallopt``)."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    try:
        return bool(ctypes.CDLL(None).mallopt(_M_ARENA_MAX, arenas))
    except (OSError, AttributeError):
        return False


def main() -> None:
    """Entry point of the ``txn`` console script. It runs on uvloop (less event-loop CPU per
    message in the worker) unless ``-L``/``--loop``/``F_LOOP`` chose a loop: Faust reads those
    when it is imported and then sets ``FAUST_LOOP``. Before any thread starts, it caps the
    malloc arenas (:func:`limit_malloc_arenas`)."""
    limit_malloc_arenas()
    if "FAUST_LOOP" not in os.environ:
        mode.loop.use("uvloop")
    app.main()
