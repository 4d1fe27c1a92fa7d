"""The dashboard's state: what the user chose and what the page shows, as one
``param.Parameterized`` model; the page (``dashboards/live.py``) is a function of it.

Every second ``LiveModel.refresh`` fetches the API's answers (extract, ``dashboards/data.py``),
turns them into columns and frames (transform, same module) and sets the model's parameters;
the views follow those parameters. When the API cannot be reached, ``status`` says so and the
last data stays; the next successful refresh clears it. No Panel import here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import param

from app.contract import CATEGORIES
from dashboards.data import (
    ApiClient,
    ApiError,
    ApiUnreachable,
    anomaly_frame,
    currency_of,
    kpi_values,
    live_stats_rows,
    merchant_columns,
    revenue_by_currency,
    trend_columns,
    volume_columns,
)

__all__ = ["ALL_CATEGORIES", "REFRESH_MS", "LiveModel", "Schedule", "run_now", "user_markdown"]

log = logging.getLogger("dashboard")

REFRESH_MS = 1000          # the periodic refresh's period
NEW_SECONDS = 15           # how long a newly arrived anomaly stays highlighted
ALL_CATEGORIES = "all categories"
USER_HINT = "Type a user id to see the user's live statistics and 30-day trend."
NO_DATA = ("**No data yet.** The API is up, but no transactions have arrived in the last hour; "
           "the figures fill in as soon as the pipeline writes some.")
BROKEN = ("**Something went wrong while {doing}** (details in the dashboard's log). Retrying.")

#: Runs a change of the shown state where the page allows it (served: on the document's next
#: tick, because Bokeh models may only change under the document's lock).
Schedule = Callable[[Callable[[], None]], None]


def run_now(update: Callable[[], None]) -> None:
    """The schedule outside a served page (tests, an import): change the state right away."""
    update()


class LiveModel(param.Parameterized):
    """One page's state: the user's choices (the widgets are made from them) and what the page
    shows (set only through ``schedule``)."""

    window: param.Selector[str] = param.Selector(objects=["1h", "24h", "7d"], default="1h",
                                                 label="Window")
    by: param.Selector[str] = param.Selector(objects=["revenue", "count"], default="revenue",
                                             label="By")
    category: param.Selector[str] = param.Selector(objects=[ALL_CATEGORIES, *CATEGORIES],
                                                   default=ALL_CATEGORIES, label="Category")
    user_id = param.String(default="", label="User id")
    look_up = param.Event(label="Look up")

    kpis = param.Dict(default=kpi_values({}), doc="the numbers of /summary")
    currency = param.String(default="", doc="the reporting currency of every money figure "
                                            "(the API's answers name it); empty before")
    by_currency = param.Dict(default={}, doc="/summary's last hour per original currency")
    volume = param.Dict(default=volume_columns({}), doc="chart columns of /volume")
    merchants = param.Dict(default=merchant_columns({}), doc="chart columns of /merchants/top")
    merchants_for = param.Tuple(default=("1h", "revenue", ""), length=3,
                                doc="their (window, by, currency)")
    anomalies = param.DataFrame(default=anomaly_frame({}).assign(new=False),
                                doc="the alert table; the hidden column 'new' marks new rows")
    anomalies_for = param.String(default="", doc="their category; empty before the first load")
    last_ok = param.Date(default=None, allow_None=True, doc="time of the last good refresh")
    status = param.String(default="Connecting to the API...", doc="the banner; empty: hidden")
    status_kind: param.Selector[str] = param.Selector(objects=["info", "warning", "danger"],
                                                      default="info")
    user_text = param.String(default=USER_HINT, doc="the user panel's text (Markdown)")
    trend = param.Dict(default=trend_columns({}), doc="chart columns of /users/{id}/trends")

    def __init__(self, client: ApiClient, schedule: Schedule = run_now, **params: Any) -> None:
        super().__init__(**params)
        self.client = client
        self._schedule = schedule
        self._busy = False                  # a refresh is running: the next tick skips
        self._seen: dict[str, float] = {}   # txn_id -> monotonic time it was first shown
        self._first_load = True             # anomalies of the first load are not "new"
        self._user = ""                     # the user shown (the user id as looked up)

    # --- extract ----------------------------------------------------------------------------
    async def extract(self) -> dict[str, Any]:
        """One round of GETs, in parallel, with the choices they were made for. Raises
        ApiUnreachable / ApiError."""
        window, by, category = self.window, self.by, self.category
        summary, volume, merchants, anomalies = await asyncio.gather(
            self.client.summary(),
            self.client.volume(minutes=60),
            self.client.top_merchants(window, by=by, limit=10),
            self.client.anomalies(limit=50,
                                  category=None if category == ALL_CATEGORIES else category),
        )
        return {"summary": summary, "volume": volume, "merchants": merchants,
                "anomalies": anomalies, "window": window, "by": by, "category": category}

    # --- transform and load -----------------------------------------------------------------
    def mark_new(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Add the column ``new``: anomalies that arrived after the first load, for NEW_SECONDS."""
        now = time.monotonic()
        for txn_id in frame["txn_id"]:
            self._seen.setdefault(txn_id, 0.0 if self._first_load else now)
        self._first_load = False
        return frame.assign(new=[now - self._seen[t] < NEW_SECONDS for t in frame["txn_id"]])

    def show(self, data: Mapping[str, Any]) -> None:
        """Put one round of API answers into the model."""
        kpis = kpi_values(data["summary"])
        volume = volume_columns(data["volume"])
        merchants = merchant_columns(data["merchants"])
        frame = self.mark_new(anomaly_frame(data["anomalies"]))
        empty = (kpis["count_1h"] == 0 and not merchants["merchant"] and frame.empty
                 and not any(volume["count"]))
        self.put(
            kpis=kpis, currency=currency_of(data["summary"]) or self.currency,
            by_currency=revenue_by_currency(data["summary"]), volume=volume,
            merchants=merchants,
            merchants_for=(data["window"], data["by"], currency_of(data["merchants"])),
            anomalies=frame,
            anomalies_for=data["category"], last_ok=datetime.now(UTC),
            status=NO_DATA if empty else "", status_kind="info")

    def put(self, **values: Any) -> None:
        """Set several parameters at once: each view follows them once."""
        self.param.update(**values)

    def problem(self, text: str, kind: str = "danger") -> None:
        self.put(status=text, status_kind=kind)

    def unreachable_text(self, reason: str) -> str:
        since = f" The figures below are from {self.last_ok:%H:%M:%S} UTC." if self.last_ok else ""
        return (f"**The API is unreachable** ({self.client.base_url}: {reason}). Retrying every "
                f"{REFRESH_MS / 1000:g} s; the page recovers by itself when the API is back."
                f"{since}")

    def show_user(self, user_id: str, payload: dict[str, Any] | None,
                  error: ApiError | None) -> None:
        """Put one answer of /users/{id}/trends (or its error) into the model."""
        if self._user != user_id:  # the user id changed while the answer was on its way
            return
        if error is not None or payload is None:
            text = (f"No user **{user_id}** in the last 30 days." if error is None
                    or error.status == 404 else f"Cannot look up **{user_id}**: {error.message}")
            self.put(user_text=text, trend=trend_columns({}))
            return
        columns = trend_columns(payload)
        self.put(user_text=user_markdown(user_id, payload, columns), trend=columns,
                 currency=currency_of(payload) or self.currency)

    # --- callbacks --------------------------------------------------------------------------
    def _in_page(self, update: Callable[..., None], *args: Any, **kwargs: Any) -> None:
        def run() -> None:
            try:
                update(*args, **kwargs)
            except Exception:  # a bug must not stop the page's refreshes
                log.exception("dashboard update failed")
                self.problem(BROKEN.format(doing="updating the page"), "warning")
        self._schedule(run)

    async def refresh(self) -> None:
        """The periodic callback: fetch everything, update the model, never raise."""
        if self._busy:
            return
        self._busy = True
        try:
            self._in_page(self.show, await self.extract())
            if self._user:
                await self.fetch_user()
        except ApiUnreachable as exc:
            self._in_page(self.problem, self.unreachable_text(str(exc)))
        except ApiError as exc:
            self._in_page(self.problem, f"**The API answered with an error** ({exc.status}: "
                                        f"{exc.message}). Retrying.", "warning")
        except Exception:  # a bug must not stop the page's refreshes
            log.exception("dashboard refresh failed")
            self._in_page(self.problem, BROKEN.format(doing="refreshing"), "warning")
        finally:
            self._busy = False

    async def fetch_user(self) -> None:
        user_id = self._user
        try:
            payload, error = await self.client.user_trends(user_id, days=30), None
        except ApiError as exc:
            payload, error = None, exc
        self._in_page(self.show_user, user_id, payload, error)

    @param.depends("window", "by", "category", watch=True)
    async def _choice_changed(self) -> None:
        await self.refresh()

    @param.depends("user_id", "look_up", watch=True)
    async def _user_asked(self) -> None:
        self._user = (self.user_id or "").strip()
        if not self._user:
            self._in_page(self.put, user_text="Type a user id to see the user's "
                          "statistics.", trend=trend_columns({}))
            return
        self._in_page(self.put, user_text=f"Looking up **{self._user}**...")
        try:
            await self.fetch_user()
        except ApiUnreachable as exc:
            self._in_page(self.problem, self.unreachable_text(str(exc)))
        except Exception:
            log.exception("user lookup failed")
            self._in_page(self.put,
                          user_text="The lookup failed (details in the dashboard's log).")

    def close(self, session_context: Any) -> None:
        """Session gone: close its HTTP connections."""
        asyncio.ensure_future(self.client.aclose())


def user_markdown(user_id: str, payload: Mapping[str, Any],
                  columns: Mapping[str, list[Any]]) -> str:
    """The user panel's text for one /users/{id}/trends answer."""
    total, count = sum(columns["spend"]), sum(columns["count"])
    unit = f" {currency_of(payload)}".rstrip()
    lines = [f"### User {payload.get('user_id', user_id)}",
             f"Last 30 days: **{total:,.2f}{unit}** spent in **{count:,.0f}** transactions, "
             f"**{sum(columns['anomalies']):,.0f}** anomalies." if count else
             "No transactions of this user in the last 30 days.", ""]
    rows = live_stats_rows(payload.get("live"))
    if rows:
        lines += ["| live statistic | value |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)]
    else:
        reason = payload.get("live_error") or "the worker reports nothing for this user"
        lines.append(f"Live statistics unavailable: {reason}.")
    return "\n".join(lines)
