"""The ``txn`` entry point's process set-up."""

from __future__ import annotations

import platform

import pytest

from app import cli


def test_malloc_arenas_are_capped_unless_the_environment_chose(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    if platform.libc_ver()[0] == "glibc":
        assert cli.limit_malloc_arenas() is True
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert cli.limit_malloc_arenas() is False
