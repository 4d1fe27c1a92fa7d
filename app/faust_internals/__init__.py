"""Every use of faust-streaming's and aiokafka's private parts, in one place.

The worker and the sink go below Faust's public API where it costs more than the work itself:
the consumer hands a topic over a fetch at a time (:mod:`.batch_consumer`), batches are published
as aiokafka record batches (:mod:`.record_batches`) and table partitions are read and written in
RocksDB directly (:mod:`.stores`). Those parts were written against the versions below;
importing this package with others installed stops the program with a clear message instead of
a wrong result later.
"""

from __future__ import annotations

from importlib.metadata import version

__all__ = ["WRITTEN_FOR", "check_versions"]

#: Distribution -> the version whose internals this package uses.
WRITTEN_FOR = {"faust-streaming": "0.15.3", "aiokafka": "0.14.0"}


def check_versions(installed: dict[str, str] | None = None) -> None:
    """Raise RuntimeError unless the installed versions are :data:`WRITTEN_FOR`."""
    found = installed or {name: version(name) for name in WRITTEN_FOR}
    wrong = {name: found[name] for name, want in WRITTEN_FOR.items() if found[name] != want}
    if wrong:
        raise RuntimeError(
            "app.faust_internals uses private parts of "
            + ", ".join(f"{name} {WRITTEN_FOR[name]}" for name in wrong)
            + "; installed: " + ", ".join(f"{name} {v}" for name, v in wrong.items())
            + ". Install the pinned versions (requirements/runtime.txt) or port the package.")


check_versions()
