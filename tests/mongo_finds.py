"""A pymongo command listener that records the filter of every ``find`` a client sends: how
tests count the documents a read asks the database for."""

from __future__ import annotations

from typing import Any

from pymongo import monitoring


class Finds(monitoring.CommandListener):
    def __init__(self) -> None:
        self.filters: list[Any] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name == "find":
            self.filters.append(event.command.get("filter"))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None: ...

    def failed(self, event: monitoring.CommandFailedEvent) -> None: ...
