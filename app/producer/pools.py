"""The pools a :class:`~app.producer.factory.TransactionFactory` draws from once per seed:
cities of each country, users with a spending profile, merchants with a category."""

from __future__ import annotations

import random
from dataclasses import dataclass

from faker import Faker

from app.contract import CATEGORIES, PAYMENT_METHODS

#: (country, currency, Faker locale, currency units per US dollar, share of the users).
COUNTRIES: tuple[tuple[str, str, str, float, int], ...] = (
    ("US", "USD", "en_US", 1.0, 30),
    ("GB", "GBP", "en_GB", 0.8, 10),
    ("DE", "EUR", "de_DE", 0.92, 9),
    ("FR", "EUR", "fr_FR", 0.92, 7),
    ("ES", "EUR", "es_ES", 0.92, 5),
    ("IT", "EUR", "it_IT", 0.92, 5),
    ("NL", "EUR", "nl_NL", 0.92, 3),
    ("CA", "CAD", "en_CA", 1.35, 5),
    ("AU", "AUD", "en_AU", 1.5, 4),
    ("JP", "JPY", "ja_JP", 150.0, 5),
    ("BR", "BRL", "pt_BR", 5.0, 4),
    ("IN", "INR", "en_IN", 83.0, 5),
    ("PL", "PLN", "pl_PL", 4.0, 3),
    ("SE", "SEK", "sv_SE", 10.5, 2),
    ("CH", "CHF", "de_CH", 0.88, 2),
    ("MX", "MXN", "es_MX", 17.0, 1),
)

CITIES_PER_COUNTRY = 25


@dataclass(frozen=True)
class User:
    user_id: str
    country: str
    currency: str
    city: str
    typical: float          # typical amount, in the user's currency
    spread: float           # relative standard deviation of the user's amounts
    methods: tuple[str, ...]  # preferred payment methods
    key: bytes = b""          # user_id as bytes: the Kafka key

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", self.user_id.encode())


@dataclass(frozen=True)
class Merchant:
    merchant_id: str
    category: str


def seed_for(rnd: random.Random) -> int:
    return rnd.getrandbits(32)


def _slug(text: str) -> str:
    """``"Nolan, Johnson and Stevens"`` -> ``"nolan_johnson_and_stevens"``."""
    kept = "".join(c if c.isalnum() and c.isascii() else " " for c in text.lower())
    return "_".join(kept.split())


def draw_cities(seed: int) -> list[tuple[str, str]]:
    """:data:`CITIES_PER_COUNTRY` distinct (city, country) pairs of each of :data:`COUNTRIES`."""
    cities: list[tuple[str, str]] = []
    for i, (country, _, locale, _, _) in enumerate(COUNTRIES):
        fake = Faker(locale)
        for provider in fake.providers:
            # Sorted because it_IT builds its city list from a set, whose order (so the seeded
            # draws) would change with PYTHONHASHSEED.
            if isinstance(getattr(provider, "cities", None), (list, tuple)):
                provider.cities = sorted(provider.cities)
        fake.seed_instance(seed * 1000 + i)
        names = dict.fromkeys(fake.city()[:128] for _ in range(CITIES_PER_COUNTRY * 2))
        cities += [(name, country) for name in list(names)[:CITIES_PER_COUNTRY]]
    return cities


def draw_users(rnd: random.Random, count: int, cities: list[tuple[str, str]]) -> list[User]:
    """``count`` users, each living in one of ``cities``."""
    fake = Faker("en_US")
    fake.seed_instance(seed_for(rnd))
    country_weights = [c[4] for c in COUNTRIES]
    by_country: dict[str, list[str]] = {}
    for city, country in cities:
        by_country.setdefault(country, []).append(city)
    users = []
    for i in range(count):
        country, currency, _, per_usd, _ = rnd.choices(COUNTRIES, country_weights)[0]
        typical_usd = min(max(rnd.lognormvariate(3.6, 0.9), 3.0), 2_000.0)
        methods = tuple(rnd.sample(PAYMENT_METHODS, rnd.choice((1, 1, 2, 2, 3))))
        users.append(User(
            user_id=f"{_slug(fake.user_name())[:40]}_{i}",
            country=country, currency=currency, city=rnd.choice(by_country[country]),
            typical=round(typical_usd * per_usd, 2), spread=rnd.uniform(0.08, 0.35),
            methods=methods))
    return users


def draw_merchants(rnd: random.Random, count: int) -> list[Merchant]:
    """``count`` merchants, each in one of the contract's categories."""
    fake = Faker("en_US")
    fake.seed_instance(seed_for(rnd))
    return [Merchant(f"m_{_slug(fake.company())[:40]}_{i}", rnd.choice(CATEGORIES))
            for i in range(count)]
