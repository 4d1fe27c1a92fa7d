"""Stopping a send: SIGINT/SIGTERM set a flag the send loop checks between chunks."""

from __future__ import annotations

import signal
import threading
from typing import Any, Protocol


class Flag(Protocol):
    """What the loop needs of a stop flag: a :class:`threading.Event`, or a
    :mod:`multiprocessing` one that forked senders share."""

    def is_set(self) -> bool: ...

    def set(self) -> None: ...


class Stop:
    """A flag set by SIGINT/SIGTERM while the send loop runs (main thread only)."""

    def __init__(self, event: Flag | None) -> None:
        self.event: Flag = event or threading.Event()
        self.saved: dict[int, Any] = {}

    def __enter__(self) -> Flag:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.saved[sig] = signal.signal(sig, lambda *_: self.event.set())
        return self.event

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.saved.items():
            signal.signal(sig, handler)
