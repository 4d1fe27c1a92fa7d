"""A request's query and path parameters as typed values, checked by the rules of
:mod:`views.api_openapi`; every bad one is collected so that one 422 names them all."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Literal

from starlette.requests import Request

from views.api_errors import InvalidParams
from views.api_types import ParamError

__all__ = ["Params"]

_INT = re.compile(r"-?[0-9]+")
_NUMBER = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")


class Params:
    """Each reader returns the parameter's value (or the default) and records what is wrong;
    :meth:`check` then raises :class:`InvalidParams` if anything was."""

    def __init__(self, request: Request) -> None:
        self.query = request.query_params
        self.path = request.path_params
        self.errors: list[ParamError] = []

    def fail(self, name: str, message: str, where: Literal["query", "path"] = "query") -> None:
        self.errors.append({"param": name, "in": where, "message": f"{name} {message}"})

    def integer(self, name: str, default: int, cap: int) -> int:
        raw = self.query.get(name)
        if raw is None:
            return default
        if not _INT.fullmatch(raw):
            self.fail(name, f"must be an integer from 1 (values above {cap} are capped)")
            return default
        # Over 18 digits are capped without int(), which refuses more than 4300 digits.
        if raw.startswith("-") or (len(raw) <= 18 and int(raw) < 1):
            self.fail(name, "must be at least 1")
            return default
        return cap if len(raw) > 18 else min(int(raw), cap)

    def number(self, name: str) -> float | None:
        raw = self.query.get(name)
        if raw is None:
            return None
        if not _NUMBER.fullmatch(raw):
            self.fail(name, "must be a number")
            return None
        return float(raw)

    def choice(self, name: str, default: str | None, choices: tuple[str, ...]) -> str | None:
        raw = self.query.get(name)
        if raw is None:
            return default
        if raw not in choices:
            self.fail(name, f"must be one of {', '.join(choices)}")
            return default
        return raw

    def timestamp(self, name: str) -> datetime | None:
        raw = self.query.get(name)
        if raw is None:
            return None
        try:
            ts = datetime.fromisoformat(raw.upper() if len(raw) < 64 else "")
            return (ts if ts.tzinfo else ts.replace(tzinfo=UTC)).astimezone(UTC)
        except (ValueError, OverflowError):  # overflow: e.g. year 1 with a positive offset
            self.fail(name, "must be an ISO-8601 date-time, e.g. 2026-11-25T10:00:00Z")
            return None

    def text(self, name: str, max_length: int,
             where: Literal["query", "path"] = "query") -> str | None:
        raw = (self.path if where == "path" else self.query).get(name)
        if raw is None:
            return None
        if not raw or len(raw) > max_length:
            self.fail(name, f"must have 1 to {max_length} characters", where)
            return None
        try:
            raw.encode("utf-8")
        except UnicodeError:
            self.fail(name, "must be valid UTF-8", where)
            return None
        return str(raw)

    def check(self) -> None:
        if self.errors:
            raise InvalidParams(self.errors)
