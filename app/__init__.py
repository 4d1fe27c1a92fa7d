"""Transaction analytics: the Faust application package.

``app.app`` is the Faust app (``faust -A app worker``). It is loaded on first use, so the pure
modules (``app.settings``, ``app.contract``) import without Faust.
"""

from __future__ import annotations

from typing import Any

__all__ = ["app"]


def __getattr__(name: str) -> Any:
    if name == "app":
        from app.main import app

        return app
    raise AttributeError(f"module 'app' has no attribute {name!r}")
