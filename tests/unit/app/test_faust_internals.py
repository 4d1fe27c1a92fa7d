"""The package that uses Faust's and aiokafka's private parts refuses other versions."""

from __future__ import annotations

import pytest

from app.faust_internals import WRITTEN_FOR, check_versions


def test_the_pinned_versions_pass() -> None:
    check_versions()  # the installed ones (requirements/runtime.txt)
    check_versions(dict(WRITTEN_FOR))


@pytest.mark.parametrize("name", sorted(WRITTEN_FOR))
def test_another_version_is_refused_with_both_versions_named(name: str) -> None:
    installed = {**WRITTEN_FOR, name: "9.9.9"}
    with pytest.raises(RuntimeError) as info:
        check_versions(installed)
    assert f"{name} {WRITTEN_FOR[name]}" in str(info.value)
    assert f"{name} 9.9.9" in str(info.value)
