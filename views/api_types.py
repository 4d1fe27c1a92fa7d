"""What the API's modules pass between them: the JSON response, the shape of one bad parameter."""

from __future__ import annotations

from typing import Any, Literal, TypedDict

import orjson
from starlette.responses import Response

__all__ = ["JSON", "ParamError"]


class JSON(Response):
    """A JSON answer, rendered by orjson."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


#: One item of a 422 answer's ``errors`` (functional form: ``in`` is a Python keyword).
ParamError = TypedDict(
    "ParamError", {"param": str, "in": Literal["query", "path"], "message": str})
