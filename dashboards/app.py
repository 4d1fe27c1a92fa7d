"""The live dashboard: `panel serve dashboards/app.py` (`make dashboard`), page /app.

Laid out like Panel's streaming-dashboard tutorial: state, extract, transform, views, callbacks,
layout. It reads only from the API (``API_URL``, with ``X-API-Key`` when ``API_KEY`` is set);
``dashboards/data.py`` holds the HTTP calls and the pure transforms. Panel runs this script once
per browser session, so everything below belongs to one page.

Every second a periodic callback fetches the KPIs, the volume per minute, the top merchants and
the newest anomalies (and the user's trends when one is looked up). When the API cannot be
reached, a banner says so, the last data stays on the page, and the next successful refresh
removes the banner; nothing on the page is ever a traceback.
"""

# ruff: noqa: E402  (the imports after the sys.path fix below)
from __future__ import annotations

import asyncio
import logging
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# `panel serve` puts this file's folder first on sys.path, where this very file would shadow
# the product's `app` package: look the package up from the project's root instead.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import panel as pn
from bokeh.models import ColumnDataSource, HoverTool, NumeralTickFormatter
from bokeh.models.widgets.tables import NumberFormatter
from bokeh.plotting import figure

from app.contract import CATEGORIES
from app.settings import settings
from dashboards.data import (
    ApiClient,
    ApiError,
    ApiUnreachable,
    anomaly_frame,
    kpi_values,
    live_stats_rows,
    merchant_columns,
    trend_columns,
    volume_columns,
)

log = logging.getLogger("dashboard")

pn.extension("tabulator", sizing_mode="stretch_width")

REFRESH_MS = 1000          # the periodic callback's period
NEW_SECONDS = 15           # how long a newly arrived anomaly stays highlighted
ALL_CATEGORIES = "all categories"
WINDOWS = ["1h", "24h", "7d"]
BLUE, ORANGE, RED = "#1f77b4", "#f28e2b", "#d62728"

# --- state (one page) ---------------------------------------------------------------------------
client = ApiClient(settings.api_url, settings.api_key)
state: dict[str, Any] = {
    "busy": False,                 # a refresh is running: the next tick skips
    "last_ok": None,               # time of the last successful refresh (UTC datetime)
    "seen": {},                    # txn_id -> monotonic time the page first saw that anomaly
    "first_load": True,            # anomalies of the first load are not "new"
    "user_id": "",
}


# --- extract ------------------------------------------------------------------------------------
async def extract() -> dict[str, Any]:
    """One round of GETs, in parallel. Raises ApiUnreachable / ApiError."""
    category = None if category_select.value == ALL_CATEGORIES else category_select.value
    summary, volume, merchants, anomalies = await asyncio.gather(
        client.summary(),
        client.volume(minutes=60),
        client.top_merchants(window_select.value, by=by_select.value, limit=10),
        client.anomalies(limit=50, category=category),
    )
    return {"summary": summary, "volume": volume, "merchants": merchants,
            "anomalies": anomalies}


# --- transform (see dashboards/data.py; the page-specific part is here) -------------------------
def mark_new(frame: Any) -> Any:
    """Add the hidden ``new`` column: anomalies that arrived after the page's first load, for
    NEW_SECONDS."""
    now = time.monotonic()
    seen: dict[str, float] = state["seen"]
    for txn_id in frame["txn_id"]:
        seen.setdefault(txn_id, 0.0 if state["first_load"] else now)
    state["first_load"] = False
    frame["new"] = [now - seen[t] < NEW_SECONDS for t in frame["txn_id"]]
    return frame


# --- views --------------------------------------------------------------------------------------
status = pn.pane.Alert("Connecting to the API...", alert_type="info", css_classes=["status"])
updated = pn.pane.Markdown("", css_classes=["updated"], align="end")

kpi_format = {"tps_now": "{value:,.1f}", "revenue_1h": "{value:,.2f}",
              "anomalies_1h": "{value:,.0f}", "dlq_count": "{value:,.0f}"}
kpi_titles = {"tps_now": "Transactions/s now", "revenue_1h": "Revenue, last hour",
              "anomalies_1h": "Anomalies, last hour", "dlq_count": "Dead letters (DLQ)"}
kpis = {
    key: pn.indicators.Number(name=title, value=0, format=kpi_format[key], font_size="30pt",
                              title_size="12pt", css_classes=[f"kpi-{key}"],
                              colors=[(0, "#222222"), (float("inf"), RED)]
                              if key in ("anomalies_1h", "dlq_count") else None)
    for key, title in kpi_titles.items()
}
volume_source = ColumnDataSource(volume_columns({}), name="volume-source")
count_fig = figure(title="Transactions per minute", x_axis_type="datetime", height=220,
                   toolbar_location=None, tools="", sizing_mode="stretch_width")
count_fig.vbar(x="minute", top="count", width=50_000, source=volume_source, color=BLUE)
revenue_fig = figure(title="Revenue per minute", x_axis_type="datetime", height=220,
                     x_range=count_fig.x_range, toolbar_location=None, tools="",
                     sizing_mode="stretch_width")
revenue_fig.line(x="minute", y="revenue", source=volume_source, line_width=2, color=ORANGE)
revenue_fig.scatter(x="minute", y="revenue", source=volume_source, size=4, color=ORANGE)
for fig in (count_fig, revenue_fig):
    fig.add_tools(HoverTool(tooltips=[("minute (UTC)", "@minute{%H:%M}"), ("count", "@count"),
                                      ("revenue", "@revenue{0,0.00}"),
                                      ("anomalies", "@anomalies")],
                            formatters={"@minute": "datetime"}))
    fig.yaxis.formatter = NumeralTickFormatter(format="0,0")
count_fig.yaxis.ticker.min_interval = 1  # whole transactions

window_select = pn.widgets.RadioButtonGroup(name="Window", options=WINDOWS, value="1h",
                                            button_type="primary", button_style="outline",
                                            css_classes=["window-select"], width=180,
                                            sizing_mode="fixed")
by_select = pn.widgets.RadioButtonGroup(name="By", options=["revenue", "count"],
                                        value="revenue", button_type="primary",
                                        button_style="outline", width=180, sizing_mode="fixed")
merchant_source = ColumnDataSource(merchant_columns({}), name="merchants-source")
merchant_fig = figure(title="Top merchants by revenue, last 1h", y_range=[], height=320,
                      toolbar_location=None, tools="", sizing_mode="stretch_width")
merchant_fig.hbar(y="merchant", right="value", height=0.7, source=merchant_source, color=BLUE)
merchant_fig.add_tools(HoverTool(tooltips=[("merchant", "@merchant"), ("category", "@category"),
                                           ("revenue", "@revenue{0,0.00}"), ("count", "@count"),
                                           ("anomalies", "@anomalies")]))
merchant_fig.xaxis.formatter = NumeralTickFormatter(format="0,0")

category_select = pn.widgets.Select(name="Category", options=[ALL_CATEGORIES, *CATEGORIES],
                                    value=ALL_CATEGORIES, width=220, sizing_mode="fixed",
                                    css_classes=["category-select"])
anomaly_note = pn.pane.Markdown("", css_classes=["anomaly-note"])
anomaly_table = pn.widgets.Tabulator(
    anomaly_frame({}).assign(new=False), show_index=False, disabled=True, selectable=False,
    height=380, layout="fit_data_stretch", hidden_columns=["new"], css_classes=["anomalies"],
    widths={"time": 175},
    formatters={"amount": NumberFormatter(format="0,0.00"),
                "z_score": NumberFormatter(format="0.00"),
                "mean_prev": NumberFormatter(format="0,0.00"),
                "std_prev": NumberFormatter(format="0,0.00")},
    titles={"time": "time (UTC)", "merchant_category": "category", "z_score": "z-score",
            "mean_prev": "mean before", "std_prev": "std before", "n_prev": "n before"},
)


def _row_style(row: Any) -> list[str]:
    return ["background-color: #fff3bf; font-weight: bold" if row["new"] else ""] * len(row)


def _z_style(value: float) -> str:
    strong = value >= 2 * settings.anomaly_z_threshold
    return f"background-color: {'#f8c4c4' if strong else '#fde2c4'}; font-weight: bold"


anomaly_table.style.apply(_row_style, axis=1).map(_z_style, subset=["z_score"])

user_input = pn.widgets.TextInput(name="User id", placeholder="a user id, then Enter",
                                  css_classes=["user-input"], width=260, sizing_mode="fixed")
user_button = pn.widgets.Button(name="Look up", button_type="primary", align="end", width=100,
                                sizing_mode="fixed")
user_info = pn.pane.Markdown("Type a user id to see the user's live statistics and "
                             "30-day trend.", css_classes=["user-info"])
trend_source = ColumnDataSource({**trend_columns({}), "color": []}, name="trend-source")
trend_fig = figure(title="Daily spend, last 30 days (red: days with anomalies)",
                   x_axis_type="datetime", height=240, toolbar_location=None, tools="",
                   sizing_mode="stretch_width")
trend_fig.vbar(x="day", top="spend", width=0.8 * 86_400_000, source=trend_source, color="color")
trend_fig.add_tools(HoverTool(tooltips=[("day", "@label"), ("spend", "@spend{0,0.00}"),
                                        ("count", "@count"), ("anomalies", "@anomalies")]))
trend_fig.yaxis.formatter = NumeralTickFormatter(format="0,0")


# --- callbacks ----------------------------------------------------------------------------------
# The API calls are awaited without blocking the server; the answers are then pushed into the
# views by `in_document`, under the page's document lock (Bokeh models may only change then).
doc = pn.state.curdoc


def in_document(update: Any, *args: Any) -> None:
    def run() -> None:
        try:
            update(*args)
        except Exception:  # a bug must not kill the page's refreshes
            log.exception("dashboard update failed")
            show_problem("**Something went wrong while updating the page** (details in the "
                         "dashboard's log). Retrying.", "warning")
    if doc is not None and doc.session_context is not None:
        doc.add_next_tick_callback(run)
    else:  # not served (an import in a test): update right away
        run()


def show_problem(text: str, alert_type: str = "danger") -> None:
    status.object = text
    status.alert_type = alert_type
    status.visible = True


def unreachable_text(reason: str) -> str:
    last = state["last_ok"]
    since = (f" The figures below are from {last:%H:%M:%S} UTC." if last else "")
    return (f"**The API is unreachable** ({settings.api_url}: {reason}). Retrying every "
            f"{REFRESH_MS / 1000:g} s; the page recovers by itself when the API is back.{since}")


def load(data: dict[str, Any]) -> None:
    """Push one round of API answers into the views."""
    values = kpi_values(data["summary"])
    for key, indicator in kpis.items():
        indicator.value = values[key]
    volume_source.data = volume_columns(data["volume"])
    columns = merchant_columns(data["merchants"])
    merchant_fig.y_range.factors = columns["merchant"]
    merchant_fig.title.text = (f"Top merchants by {by_select.value}, "
                               f"last {window_select.value}")
    merchant_source.data = columns
    frame = mark_new(anomaly_frame(data["anomalies"]))
    anomaly_table.value = frame
    category = category_select.value
    anomaly_note.object = (f"**{len(frame)}** newest anomalies ({category}); new ones are "
                           f"highlighted." if len(frame) else
                           f"No anomalies yet ({category}).")
    state["last_ok"] = datetime.now(UTC)
    updated.object = f"updated {state['last_ok']:%H:%M:%S} UTC"
    empty = (values["count_1h"] == 0 and not columns["merchant"] and not len(frame)
             and not any(volume_source.data["count"]))
    if empty:
        show_problem("**No data yet.** The API is up, but no transactions have arrived in the "
                     "last hour; the figures fill in as soon as the pipeline writes some.", "info")
    else:
        status.visible = False


def load_user(user_id: str, payload: dict[str, Any] | None, error: ApiError | None) -> None:
    """Show one answer of /users/{id}/trends (or its error) in the user panel."""
    if state["user_id"] != user_id:  # the box changed while we waited
        return
    if error is not None or payload is None:
        user_info.object = (f"No user **{user_id}** in the last 30 days." if error is None
                            or error.status == 404 else
                            f"Cannot look up **{user_id}**: {error.message}")
        trend_source.data = {**trend_columns({}), "color": []}
        return
    columns = trend_columns(payload)
    trend_source.data = {**columns, "color": [RED if a else BLUE for a in columns["anomalies"]]}
    total, count = sum(columns["spend"]), sum(columns["count"])
    lines = [f"### User {payload.get('user_id', user_id)}",
             f"Last 30 days: **{total:,.2f}** spent in **{count:,.0f}** transactions, "
             f"**{sum(columns['anomalies']):,.0f}** anomalies." if count else
             "No transactions of this user in the last 30 days.", ""]
    rows = live_stats_rows(payload.get("live"))
    if rows:
        lines += ["| live statistic | value |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)]
    else:
        reason = payload.get("live_error") or "the worker reports nothing for this user"
        lines.append(f"Live statistics unavailable: {reason}.")
    user_info.object = "\n".join(lines)


async def fetch_user() -> None:
    user_id = state["user_id"]
    try:
        payload, error = await client.user_trends(user_id, days=30), None
    except ApiError as exc:
        payload, error = None, exc
    in_document(load_user, user_id, payload, error)


async def refresh(*_: Any) -> None:
    """The periodic callback: fetch everything, update the views, never raise."""
    if state["busy"]:
        return
    state["busy"] = True
    try:
        in_document(load, await extract())
        if state["user_id"]:
            await fetch_user()
    except ApiUnreachable as exc:
        in_document(show_problem, unreachable_text(str(exc)))
    except ApiError as exc:
        in_document(show_problem, f"**The API answered with an error** ({exc.status}: "
                                  f"{exc.message}). Retrying.", "warning")
    except Exception:  # a bug must not kill the page's refreshes
        log.exception("dashboard refresh failed")
        in_document(show_problem, "**Something went wrong while refreshing** (details in the "
                                  "dashboard's log). Retrying.", "warning")
    finally:
        state["busy"] = False


async def on_user(*_: Any) -> None:
    state["user_id"] = user_input.value.strip()
    if not state["user_id"]:
        user_info.object = "Type a user id to see the user's statistics."
        trend_source.data = {**trend_columns({}), "color": []}
        return
    user_info.object = f"Looking up **{state['user_id']}**..."
    try:
        await fetch_user()
    except ApiUnreachable as exc:
        in_document(show_problem, unreachable_text(str(exc)))
    except Exception:
        log.exception("user lookup failed")
        user_info.object = "The lookup failed (details in the dashboard's log)."


async def on_filter(*_: Any) -> None:
    await refresh()


user_input.param.watch(on_user, "value")
user_button.on_click(on_user)
for widget in (category_select, window_select, by_select):
    widget.param.watch(on_filter, "value")


def close_client(_: Any, close: Any = client.aclose, spawn: Any = asyncio.ensure_future) -> None:
    """Session gone: close its HTTP connections (defaults bind the names: Panel clears the
    script's globals when the session ends)."""
    spawn(close())


if doc is not None and doc.session_context is not None:
    pn.state.onload(refresh)
    pn.state.add_periodic_callback(refresh, period=REFRESH_MS)
    pn.state.on_session_destroyed(close_client)


# --- layout -------------------------------------------------------------------------------------
def card(title: str, *objects: Any) -> pn.Card:
    return pn.Card(*objects, title=title, collapsible=False, margin=(6, 8))


pn.Column(
    pn.Row(pn.pane.Markdown("# Transaction analytics: live"), updated),
    status,
    pn.Row(*kpis.values()),
    pn.Row(card("Volume per minute, last 60 minutes", count_fig, revenue_fig),
           card("Top merchants", pn.Row(window_select, by_select), merchant_fig)),
    card("Anomaly alerts", category_select, anomaly_note, anomaly_table),
    card("User lookup", pn.Row(pn.Column(pn.Row(user_input, user_button), user_info),
                               trend_fig)),
    sizing_mode="stretch_width",
).servable(title="Transaction analytics")
