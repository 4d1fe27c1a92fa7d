"""The API's errors as JSON answers: 422 naming every bad parameter, the status of an
``HTTPException`` (404, 405), 503 when MongoDB fails, 500 for anything else.

Bodies carry generic reasons only (no host, port, URL or exception text): the details go to the
log, under the logger ``views.api``."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping

from pymongo.errors import PyMongoError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from views.api_types import JSON, ParamError

__all__ = [
    "DATABASE_UNAVAILABLE",
    "EXCEPTION_HANDLERS",
    "ErrorHandler",
    "InvalidParams",
    "describe",
    "log",
    "server_error",
]

# One logger for the whole API, under the name of the module that uvicorn serves.
log = logging.getLogger("views.api")

ErrorHandler = Callable[[Request, Exception], Awaitable[Response]]


class InvalidParams(Exception):
    """Every bad parameter of one request, answered together as one 422."""

    def __init__(self, errors: list[ParamError]) -> None:
        super().__init__(errors)
        self.errors = errors


#: The body of a 503: MongoDB did not answer (which server, and why, is logged).
DATABASE_UNAVAILABLE = {"detail": "database unavailable"}


def describe(exc: BaseException) -> str:
    """The exception's type and message, cut short enough for one log line (never an answer:
    it may name hosts, ports and URLs)."""
    return f"{type(exc).__name__}: {str(exc)[:300]}"


async def invalid_params(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, InvalidParams)
    names = ", ".join(e["param"] for e in exc.errors)
    return JSON({"detail": f"invalid parameter(s): {names}", "errors": exc.errors},
                status_code=422)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return JSON({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)


async def database_error(request: Request, exc: Exception) -> Response:
    log.warning("database error on %s: %s", request.url.path, describe(exc))
    return JSON(DATABASE_UNAVAILABLE, status_code=503)


async def server_error(request: Request, exc: Exception) -> Response:
    """A generic 500; the traceback is logged here, once. views.api_middleware.CatchErrors calls
    it (not Starlette's handler for ``Exception``, which re-raises after answering, so that
    uvicorn would log the same traceback a second time)."""
    log.error("unexpected error on %s", request.url.path, exc_info=exc)
    return JSON({"detail": "internal error"}, status_code=500)


#: Starlette's ``exception_handlers``: the most specific class that matches answers. Anything
#: else reaches views.api_middleware.CatchErrors (a 500).
EXCEPTION_HANDLERS: Mapping[type[Exception], ErrorHandler] = {
    InvalidParams: invalid_params,
    HTTPException: http_error,
    PyMongoError: database_error,
}
