"""Extract and transform for the dashboard: HTTP calls to the API and pure functions that turn its
JSON answers into what the views show. No Panel import here, so everything is testable on its own.

The dashboard reads only from the API (``settings.api_url``); the shapes it expects are the API's
(``views/api.py``, docs/api.md): ``/summary``, ``/volume``, ``/merchants/top``, ``/anomalies`` and
``/users/{user_id}/trends``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import quote

import httpx
import pandas as pd

__all__ = [
    "ANOMALY_COLUMNS",
    "ApiClient",
    "ApiError",
    "ApiUnreachable",
    "anomaly_frame",
    "currency_of",
    "error_message",
    "kpi_values",
    "live_stats_rows",
    "merchant_columns",
    "parse_time",
    "revenue_by_currency",
    "revenue_by_currency_text",
    "trend_columns",
    "volume_columns",
]

#: Seconds: connecting, and the whole request. The dashboard refreshes every second or so, so a
#: slow API must not hold a refresh for long.
CONNECT_TIMEOUT = 1.0
REQUEST_TIMEOUT = 2.0


# --- extract ----------------------------------------------------------------------------------
class ApiUnreachable(Exception):
    """The API did not answer (refused, timed out, DNS...): the message says why, briefly."""


class ApiError(Exception):
    """The API answered with an error status; ``message`` is its explanation."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class ApiClient:
    """Async GETs to the API with timeouts and the optional ``X-API-Key`` header."""

    def __init__(self, base_url: str, api_key: str = "",
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        headers = {"X-API-Key": api_key} if api_key else {}
        self.base_url = base_url.rstrip("/")
        self._client = httpx.AsyncClient(
            base_url=self.base_url, headers=headers, transport=transport,
            timeout=httpx.Timeout(REQUEST_TIMEOUT, connect=CONNECT_TIMEOUT))

    async def get(self, path: str, **params: Any) -> dict[str, Any]:
        query = {k: v for k, v in params.items() if v is not None}
        try:
            resp = await self._client.get(path, params=query)
        except httpx.TimeoutException:
            raise ApiUnreachable(f"no answer within {REQUEST_TIMEOUT:g} s") from None
        except httpx.TransportError as exc:
            raise ApiUnreachable(_transport_reason(exc)) from None
        if resp.status_code >= 400:
            raise ApiError(resp.status_code, error_message(resp))
        try:
            body = resp.json()
        except ValueError:
            raise ApiError(resp.status_code, "the answer is not JSON") from None
        if not isinstance(body, dict):
            raise ApiError(resp.status_code, "the answer is not a JSON object")
        return body

    async def summary(self) -> dict[str, Any]:
        return await self.get("/summary")

    async def volume(self, minutes: int = 60) -> dict[str, Any]:
        return await self.get("/volume", minutes=minutes)

    async def top_merchants(self, window: str, by: str = "revenue",
                            limit: int = 10) -> dict[str, Any]:
        return await self.get("/merchants/top", window=window, by=by, limit=limit)

    async def anomalies(self, limit: int = 50, category: str | None = None) -> dict[str, Any]:
        return await self.get("/anomalies", limit=limit, category=category)

    async def user_trends(self, user_id: str, days: int = 30) -> dict[str, Any]:
        return await self.get(f"/users/{quote(user_id, safe='')}/trends", days=days)

    async def aclose(self) -> None:
        await self._client.aclose()


def _transport_reason(exc: httpx.TransportError) -> str:
    if isinstance(exc, httpx.ConnectError):
        return "connection refused or host not found"
    return type(exc).__name__


def error_message(resp: httpx.Response) -> str:
    """The human part of an error answer: the JSON body's per-parameter ``errors`` (a 422), or
    its ``detail``/``error``/``message``, else the status phrase."""
    try:
        body = resp.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        errors = body.get("errors")
        if isinstance(errors, list) and errors and all(isinstance(e, dict) for e in errors):
            return "; ".join(str(e.get("message") or f"{e.get('param', '?')} is invalid")
                             for e in errors)[:300]
        for key in ("detail", "error", "message"):
            value = body.get(key)
            if isinstance(value, str) and value:
                return value
            if isinstance(value, list | dict) and value:
                return str(value)[:300]
    return resp.reason_phrase or f"HTTP {resp.status_code}"


# --- transform --------------------------------------------------------------------------------
def parse_time(value: Any) -> pd.Timestamp | None:
    """An ISO-8601 string from the API as a naive UTC timestamp (what Bokeh's datetime axes
    show), or None when it is missing or unreadable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        ts = pd.Timestamp(datetime.fromisoformat(value.replace("Z", "+00:00")))
    except ValueError:
        return None
    return ts.tz_convert("UTC").tz_localize(None) if ts.tzinfo else ts


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0
    return float(value)


def kpi_values(summary: Mapping[str, Any]) -> dict[str, float]:
    """The four headline numbers of ``GET /summary`` (missing ones as 0)."""
    return {
        "tps_now": _number(summary.get("tps_now")),
        "revenue_1h": _number(summary.get("revenue_1h")),
        "anomalies_1h": _number(summary.get("anomalies_1h")),
        "dlq_count": _number(summary.get("dlq_count")),
        "count_1h": _number(summary.get("count_1h")),
    }


def currency_of(payload: Mapping[str, Any]) -> str:
    """The reporting currency an API answer's money figures are in (its ``currency``), or ""
    when it names none."""
    value = payload.get("currency")
    return value if isinstance(value, str) and len(value) <= 8 else ""


def revenue_by_currency(summary: Mapping[str, Any]) -> dict[str, float]:
    """``/summary``'s revenue per original currency (each in its own amounts), largest
    first."""
    raw = summary.get("revenue_by_currency")
    if not isinstance(raw, Mapping):
        return {}
    values = {str(k): _number(v) for k, v in raw.items()}
    return dict(sorted(values.items(), key=lambda kv: (-kv[1], kv[0])))


def revenue_by_currency_text(by_currency: Mapping[str, float]) -> str:
    """One line of Markdown: the last hour's revenue per original currency."""
    if not by_currency:
        return "Revenue by original currency, last hour: none yet."
    return "Revenue by original currency, last hour: " + " · ".join(
        f"**{currency}** {value:,.2f}" for currency, value in by_currency.items())


def _items(payload: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    items = payload.get("items")
    return [i for i in items if isinstance(i, Mapping)] if isinstance(items, list) else []


def volume_columns(payload: Mapping[str, Any]) -> dict[str, list[Any]]:
    """``GET /volume`` as chart columns, oldest minute first."""
    rows = [(t, i) for i in _items(payload) if (t := parse_time(i.get("minute"))) is not None]
    rows.sort(key=lambda r: r[0])
    return {
        "minute": [t for t, _ in rows],
        "count": [_number(i.get("count")) for _, i in rows],
        "revenue": [_number(i.get("revenue")) for _, i in rows],
        "anomalies": [_number(i.get("anomalies")) for _, i in rows],
    }


def merchant_columns(payload: Mapping[str, Any]) -> dict[str, list[Any]]:
    """``GET /merchants/top`` as bar-chart columns, the biggest merchant LAST (a horizontal bar
    chart draws its first factor at the bottom)."""
    by = "count" if payload.get("by") == "count" else "revenue"
    items = list(reversed(_items(payload)))
    return {
        "merchant": [str(i.get("merchant_id", "?")) for i in items],
        "category": [str(i.get("merchant_category", "")) for i in items],
        "value": [_number(i.get(by)) for i in items],
        "revenue": [_number(i.get("revenue")) for i in items],
        "count": [_number(i.get("count")) for i in items],
        "anomalies": [_number(i.get("anomalies")) for i in items],
    }


#: The anomaly table's columns, in order.
ANOMALY_COLUMNS = ("time", "user_id", "z_score", "amount", "currency", "amount_reporting",
                   "merchant_category", "merchant_id", "mean_prev", "std_prev", "n_prev",
                   "txn_id")


def anomaly_frame(payload: Mapping[str, Any]) -> pd.DataFrame:
    """``GET /anomalies`` as the alert table, newest first as the API sends them."""
    rows = []
    for i in _items(payload):
        ts = parse_time(i.get("timestamp"))
        rows.append({
            "time": ts.strftime("%Y-%m-%d %H:%M:%S") if ts is not None else "",
            "user_id": str(i.get("user_id", "")),
            "amount": _number(i.get("amount")),
            "currency": str(i.get("currency", "")),
            "amount_reporting": _number(i.get("amount_reporting")),
            "merchant_id": str(i.get("merchant_id", "")),
            "merchant_category": str(i.get("merchant_category", "")),
            "z_score": _number(i.get("z_score")),
            "mean_prev": _number(i.get("mean_prev")),
            "std_prev": _number(i.get("std_prev")),
            "n_prev": int(_number(i.get("n_prev"))),
            "txn_id": str(i.get("txn_id", "")),
        })
    return pd.DataFrame(rows, columns=list(ANOMALY_COLUMNS))


def trend_columns(payload: Mapping[str, Any]) -> dict[str, list[Any]]:
    """``GET /users/{id}/trends``: one bar per UTC day, oldest first."""
    days = payload.get("days")
    rows = [d for d in days if isinstance(d, Mapping)] if isinstance(days, list) else []
    parsed = [(pd.Timestamp(str(d.get("day"))), d) for d in rows if _is_day(d.get("day"))]
    parsed.sort(key=lambda r: r[0])
    return {
        "day": [t for t, _ in parsed],
        "label": [t.strftime("%Y-%m-%d") for t, _ in parsed],
        "spend": [_number(d.get("spend")) for _, d in parsed],
        "count": [_number(d.get("count")) for _, d in parsed],
        "anomalies": [_number(d.get("anomalies")) for _, d in parsed],
    }


def _is_day(value: Any) -> bool:
    try:
        datetime.strptime(str(value), "%Y-%m-%d")
    except ValueError:
        return False
    return True


def live_stats_rows(live: Any) -> list[tuple[str, str]]:
    """The worker's live statistics (whatever fields it reports) as (name, value) rows; a list of
    per-day records becomes one summary row (the trend chart shows the days)."""
    if not isinstance(live, Mapping):
        return []
    rows = []
    for key, value in live.items():
        if value is None:
            text = "-"
        elif isinstance(value, float):
            text = f"{value:,.2f}"
        elif isinstance(value, Mapping):
            text = ", ".join(f"{k}: {v}" for k, v in value.items())
        elif isinstance(value, list) and all(isinstance(v, Mapping) for v in value):
            spend = sum(_number(v.get("spend")) for v in value)
            text = f"{len(value)} entries" + (f", {spend:,.2f} spent" if spend else "")
        elif isinstance(value, list):
            text = ", ".join(map(str, value))
        else:
            text = str(value)
        rows.append((str(key), text))
    return rows
