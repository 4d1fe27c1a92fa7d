"""The rates table (app/fx_rates.csv) and the exact conversion into the reporting currency
(app.rates) against a ``fractions.Fraction`` reference."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app import contract, rates
from app.producer.pools import COUNTRIES
from app.rates import CURRENCIES, REPORTING_CURRENCY, RatesError, load_rates, reporting_cents

ROOT = Path(__file__).resolve().parents[3]
TABLE = load_rates()
currencies = st.sampled_from(sorted(CURRENCIES))
#: Cents of a valid amount (0.01 to 1,000,000), and beyond: the arithmetic holds for any int.
amount_cents = st.integers(1, contract.MAX_AMOUNT * 100)
any_cents = st.integers(-(10**15), 10**15)


def half_even(value: Fraction) -> int:
    """The reference rounding: Python's round() of a Fraction rounds half to even, exactly."""
    return round(value)


def reference(amount: int, currency: str, reporting: str = REPORTING_CURRENCY) -> int:
    usd = TABLE.usd_per_unit
    return half_even(amount * Fraction(usd[currency]) / Fraction(usd[reporting]))


@given(any_cents, currencies)
def test_reporting_cents_is_the_exact_product_rounded_half_to_even(amount: int,
                                                                   currency: str) -> None:
    assert reporting_cents(amount, currency) == reference(amount, currency)


@given(any_cents, currencies, st.sampled_from(sorted(CURRENCIES)))
def test_every_reporting_currency_rounds_exactly(amount: int, currency: str,
                                                 reporting: str) -> None:
    n, d = rates.conversion_factors(TABLE, reporting)[currency]
    assert d > 0 and Fraction(n, d) == TABLE.usd_per_unit[currency] / TABLE.usd_per_unit[reporting]
    q, r = divmod(amount * n, d)
    got = q + (1 if 2 * r > d or (2 * r == d and q % 2) else 0)
    assert got == reference(amount, currency, reporting)


@given(st.integers(0, 50), currencies)
def test_exact_halves_round_to_the_even_neighbour(k: int, currency: str) -> None:
    """Ties occur (5,000,000 JPY cents are 32,051.5 US cents) and go to the even neighbour."""
    n, d = rates.conversion_factors(TABLE, REPORTING_CURRENCY)[currency]
    if d % 2:
        return  # an odd denominator has no exact half
    first = (d // 2) * pow(n, -1, d) % d  # amount * n = d / 2 (mod d)
    for amount in (first + k * d, -(first + k * d)):
        exact = Fraction(amount * n, d)
        assert exact.denominator == 2
        got = reporting_cents(amount, currency)
        assert got % 2 == 0 and abs(got - exact) == Fraction(1, 2)


def test_a_known_tie() -> None:
    if REPORTING_CURRENCY == "USD" and TABLE.usd_per_unit["JPY"] == Fraction("0.0064103"):
        assert reporting_cents(5_000_000, "JPY") == 32_052  # 32,051.5
        assert reporting_cents(15_000_000, "JPY") == 96_154  # 96,154.5


@given(any_cents)
def test_the_reporting_currency_is_the_identity(amount: int) -> None:
    assert reporting_cents(amount, REPORTING_CURRENCY) == amount


@given(amount_cents, amount_cents, currencies)
def test_monotone(a: int, b: int, currency: str) -> None:
    low, high = sorted((a, b))
    assert reporting_cents(low, currency) <= reporting_cents(high, currency)


@given(st.decimals(min_value="0.01", max_value="1000000", places=2).map(float), currencies)
def test_to_reporting_is_the_conversion_in_two_decimals(amount: float, currency: str) -> None:
    converted = rates.to_reporting(amount, currency)
    assert converted == reporting_cents(round(amount * 100), currency) / 100
    assert converted == round(converted, 2)
    assert rates.to_reporting(amount, REPORTING_CURRENCY) == amount


def test_the_table_covers_every_producer_currency() -> None:
    produced = {currency for _, currency, _, _, _ in COUNTRIES}
    assert produced | {"USD"} <= CURRENCIES
    assert "USD" in CURRENCIES and TABLE.usd_per_unit["USD"] == 1
    assert rates.RATES_AS_OF == max(row["as_of"] for row in csv_rows())


def csv_rows() -> list[dict[str, str]]:
    with rates.RATES_FILE.open(newline="") as f:
        return list(csv.DictReader(f))


def test_the_file_is_package_data_at_the_path_dbt_reads() -> None:
    assert rates.RATES_FILE == ROOT / "app" / "fx_rates.csv"
    assert "app = fx_rates.csv" in (ROOT / "setup.cfg").read_text()
    assert list(csv_rows()[0]) == list(rates.COLUMNS) == ["currency", "usd_per_unit", "as_of"]
    assert sorted(r["currency"] for r in csv_rows()) == [r["currency"] for r in csv_rows()]


def test_the_contract_takes_its_currencies_and_money_helpers_from_the_table() -> None:
    assert contract.CURRENCIES is CURRENCIES
    assert contract.cents is rates.cents and contract.from_cents is rates.from_cents


GOOD = "currency,usd_per_unit,as_of\nUSD,1,2026-11-27\nEUR,1.0851,2026-11-26\n"


@pytest.mark.parametrize(("text", "line", "reason"), [
    ("", 1, "the header must be currency,usd_per_unit,as_of"),
    ("currency,rate,as_of\nUSD,1,2026-11-27\n", 1, "the header must be"),
    (GOOD + "GBP,1.26\n", 4, "expected 3 fields"),
    (GOOD + "gbp,1.26,2026-11-27\n", 4, "is not an ISO 4217 code"),
    (GOOD + "GBP,1.26.1,2026-11-27\n", 4, "is not a positive decimal"),
    (GOOD + "GBP,-1.26,2026-11-27\n", 4, "is not a positive decimal"),
    (GOOD + "GBP,0.000,2026-11-27\n", 4, "is not a positive decimal"),
    (GOOD + "GBP,1e3,2026-11-27\n", 4, "is not a positive decimal"),
    (GOOD + "GBP, 1.26,2026-11-27\n", 4, "is not a positive decimal"),
    (GOOD + "GBP,1.26,27/11/2026\n", 4, "is not an ISO date"),
    (GOOD + "GBP,1.26,2026-02-30\n", 4, "is not a valid date"),
    (GOOD + "\n", 4, "expected 3 fields"),
    (GOOD + "EUR,1.09,2026-11-27\n", 4, "currency EUR appears twice"),
])
def test_a_bad_table_names_the_file_and_line(tmp_path: Path, text: str, line: int,
                                             reason: str) -> None:
    path = tmp_path / "rates.csv"
    path.write_text(text)
    with pytest.raises(RatesError) as info:
        load_rates(path)
    assert str(info.value).startswith(f"{path}, line {line}: ")
    assert reason in str(info.value)


@pytest.mark.parametrize(("text", "reason"), [
    ("currency,usd_per_unit,as_of\nEUR,1.0851,2026-11-27\n", "needs the row USD"),
    ("currency,usd_per_unit,as_of\nUSD,1.01,2026-11-27\n", "needs the row USD"),
])
def test_usd_is_the_unit(tmp_path: Path, text: str, reason: str) -> None:
    path = tmp_path / "rates.csv"
    path.write_text(text)
    with pytest.raises(RatesError, match=reason):
        load_rates(path)


def test_a_missing_or_undecodable_table(tmp_path: Path) -> None:
    with pytest.raises(RatesError, match="cannot read the rates table"):
        load_rates(tmp_path / "absent.csv")
    path = tmp_path / "latin1.csv"
    path.write_bytes(b"currency,usd_per_unit,as_of\nUSD,1,2026-11-27\n\xe9")
    with pytest.raises(RatesError, match=f"{path}: cannot read"):
        load_rates(path)


def test_a_good_table(tmp_path: Path) -> None:
    path = tmp_path / "rates.csv"
    path.write_text(GOOD)
    table = load_rates(path)
    assert table.usd_per_unit == {"USD": 1, "EUR": Fraction("1.0851")}
    assert table.as_of == "2026-11-27"


def _import_rates(reporting: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "REPORTING_CURRENCY": reporting}
    code = "import app.rates as r; print(r.REPORTING_CURRENCY, r.to_reporting(100, 'USD'))"
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)


def test_a_reporting_currency_outside_the_table_stops_the_import() -> None:
    done = _import_rates("XYZ")
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("app.settings.SettingsError: REPORTING_CURRENCY='XYZ' is not in the "
                           "rates table ")
    assert "fx_rates.csv" in last and ", ".join(sorted(CURRENCIES)) in last


def test_another_reporting_currency_from_the_table() -> None:
    done = _import_rates("EUR")
    assert done.returncode == 0, done.stderr
    expected = half_even(10_000 * Fraction(1) / TABLE.usd_per_unit["EUR"]) / 100
    assert done.stdout.split() == ["EUR", str(expected)]
