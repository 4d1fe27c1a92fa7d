"""Producer factories for the tests of app/producer/: small ones (few users and merchants,
quick to build) from a fixed start."""

from __future__ import annotations

from app.producer import TransactionFactory

START = 1_795_000_000_000  # 2026-11-18T11:06:40Z


def small(seed: int, **kw: object) -> TransactionFactory:
    args: dict = dict(seed=seed, users=60, merchants=25, start_ms=START)
    args.update(kw)
    return TransactionFactory(**args)
