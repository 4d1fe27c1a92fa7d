"""The reporting currency: the rates table (``app/fx_rates.csv``) and the exact conversion of an
amount into ``REPORTING_CURRENCY``.

The table has one row per currency: ``currency,usd_per_unit,as_of`` (an ISO 4217 code, the
US dollars one unit of it is worth as a decimal string, the ISO date of that rate). It is read
once, at import. Converting ``c`` cents of currency ``X`` gives
``c * usd_per_unit[X] / usd_per_unit[REPORTING_CURRENCY]`` cents of the reporting currency,
computed exactly (the factor is an integer fraction ``n / d``) and rounded half to even to whole
cents.

Pure Python, no Faust import: the worker, the sink, the API and the tests share it.
:mod:`app.contract` imports it (the validator refuses a currency the table does not have), so it
holds the money helpers :func:`cents` and :func:`from_cents` that the contract re-exports.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from fractions import Fraction
from pathlib import Path

from app.settings import SettingsError, settings

__all__ = [
    "COLUMNS",
    "CURRENCIES",
    "RATES_AS_OF",
    "RATES_FILE",
    "REPORTING_CURRENCY",
    "Rates",
    "RatesError",
    "USD_PER_UNIT",
    "cents",
    "conversion_factors",
    "from_cents",
    "load_rates",
    "reporting_cents",
    "to_reporting",
]

#: The rates table, shipped as package data (dbt reads the same file).
RATES_FILE = Path(__file__).with_name("fx_rates.csv")
#: Its header, in this order.
COLUMNS = ("currency", "usd_per_unit", "as_of")

_CODE = re.compile(r"[A-Z]{3}")
_DECIMAL = re.compile(r"[0-9]+(\.[0-9]+)?")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


class RatesError(ValueError):
    """The rates table cannot be used; the message names the file and the line."""


@dataclass(frozen=True)
class Rates:
    """A rates table: each currency's exact value in US dollars, and the newest ``as_of``."""

    usd_per_unit: Mapping[str, Fraction]
    as_of: str


def _row(path: Path, line: int, row: list[str]) -> tuple[str, Fraction, str]:
    def bad(why: str) -> RatesError:
        return RatesError(f"{path}, line {line}: {why}")

    if len(row) != len(COLUMNS):
        raise bad(f"expected {len(COLUMNS)} fields ({','.join(COLUMNS)}), got {len(row)}")
    currency, rate, as_of = row
    if not _CODE.fullmatch(currency):
        raise bad(f"currency {currency[:20]!r} is not an ISO 4217 code (three upper-case "
                  "letters)")
    if not _DECIMAL.fullmatch(rate) or Fraction(rate) <= 0:
        raise bad(f"usd_per_unit {rate[:30]!r} is not a positive decimal number such as 1.0851")
    if not _DATE.fullmatch(as_of):
        raise bad(f"as_of {as_of[:30]!r} is not an ISO date (YYYY-MM-DD)")
    try:
        date.fromisoformat(as_of)
    except ValueError:
        raise bad(f"as_of {as_of!r} is not a valid date") from None
    return currency, Fraction(rate), as_of


def load_rates(path: Path | str = RATES_FILE) -> Rates:
    """Read and check a rates table, or raise :class:`RatesError` naming the file and line: the
    header is :data:`COLUMNS`; each currency appears once, with a positive decimal rate and an
    ISO date; ``USD`` is there with the rate 1."""
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f, strict=True))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise RatesError(f"{path}: cannot read the rates table: {exc}") from None
    if not rows or tuple(rows[0]) != COLUMNS:
        got = ",".join(rows[0])[:80] if rows else "nothing"
        raise RatesError(f"{path}, line 1: the header must be {','.join(COLUMNS)}, got {got!r}")
    usd_per_unit: dict[str, Fraction] = {}
    newest = ""
    for line, row in enumerate(rows[1:], start=2):
        currency, rate, as_of = _row(path, line, row)
        if currency in usd_per_unit:
            raise RatesError(f"{path}, line {line}: currency {currency} appears twice")
        usd_per_unit[currency] = rate
        newest = max(newest, as_of)  # ISO dates sort as strings
    if usd_per_unit.get("USD") != 1:
        raise RatesError(f"{path}: the table needs the row USD with usd_per_unit 1")
    return Rates(usd_per_unit=usd_per_unit, as_of=newest)


def conversion_factors(rates: Rates, reporting: str) -> dict[str, tuple[int, int]]:
    """Per currency, the factor into ``reporting`` as an integer fraction ``(n, d)`` in lowest
    terms, ``d > 0``."""
    target = rates.usd_per_unit[reporting]
    factors = {}
    for currency, rate in rates.usd_per_unit.items():
        factor = rate / target
        factors[currency] = (factor.numerator, factor.denominator)
    return factors


def cents(amount: float) -> int:
    """A valid amount (a whole number of cents) as an exact integer number of cents: sums of
    money are kept in cents, so they are exact in any order."""
    return round(amount * 100)


def from_cents(total: int) -> float:
    """Integer cents as an amount with two decimals."""
    return round(total / 100, 2)


_RATES = load_rates()
#: Each currency of the table -> its exact value in US dollars.
USD_PER_UNIT: Mapping[str, Fraction] = _RATES.usd_per_unit
#: The currencies of the rates table: the only ones a transaction may have.
CURRENCIES: frozenset[str] = frozenset(USD_PER_UNIT)
#: The newest ``as_of`` date of the table (ISO, ``YYYY-MM-DD``).
RATES_AS_OF: str = _RATES.as_of

if settings.reporting_currency not in CURRENCIES:
    raise SettingsError(
        f"REPORTING_CURRENCY={settings.reporting_currency!r} is not in the rates table "
        f"{RATES_FILE}: it must be one of {', '.join(sorted(CURRENCIES))}")
#: The currency of every revenue, spend and statistic (the setting ``REPORTING_CURRENCY``).
REPORTING_CURRENCY: str = settings.reporting_currency

_FACTORS = conversion_factors(_RATES, REPORTING_CURRENCY)


def reporting_cents(amount_cents: int, currency: str) -> int:
    """``amount_cents`` of ``currency`` in whole cents of :data:`REPORTING_CURRENCY`: the exact
    product with the rates' ratio, rounded half to even. KeyError for a currency the table does
    not have (the contract's validator refuses those)."""
    n, d = _FACTORS[currency]
    if d == 1:
        return amount_cents * n
    q, r = divmod(amount_cents * n, d)  # d > 0: 0 <= r < d, for negative amounts too
    twice = r + r
    if twice > d or (twice == d and q & 1):
        q += 1
    return q


def to_reporting(amount: float, currency: str) -> float:
    """A valid ``amount`` of ``currency`` in :data:`REPORTING_CURRENCY`, with two decimals."""
    return from_cents(reporting_cents(cents(amount), currency))
