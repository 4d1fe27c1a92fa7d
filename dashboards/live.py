"""The live dashboard: `panel serve dashboards/live.py` (`make dashboard`), page /live.

Laid out like Panel's streaming-dashboard tutorial: the state is a ``LiveModel``
(``dashboards/model.py``: extract and transform through ``dashboards/data.py``), the views below
are functions of its parameters, ``create_app`` adds the periodic refresh and lays the page out.
It reads only from the API (``API_URL``, with ``X-API-Key`` when ``API_KEY`` is set). Panel runs
this script once per browser session, so each page has its own model.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, cast

import pandas as pd
import panel as pn
from bokeh.document import Document
from bokeh.models import BasicTicker, ColumnDataSource, FactorRange, HoverTool, NumeralTickFormatter
from bokeh.models.annotations import Title
from bokeh.models.widgets.tables import NumberFormatter
from bokeh.plotting import figure

from app.settings import settings
from dashboards.data import ApiClient, revenue_by_currency_text
from dashboards.model import REFRESH_MS, LiveModel, Schedule, run_now

pn.extension("tabulator", sizing_mode="stretch_width")

BLUE, ORANGE, RED = "#1f77b4", "#f28e2b", "#d62728"
FIGURE: dict[str, Any] = {"toolbar_location": None, "tools": "", "sizing_mode": "stretch_width"}
TIME_FIGURE: dict[str, Any] = {**FIGURE, "x_axis_type": "datetime"}
KPIS = {  # key of /summary: (title, number format); money titles get the currency
    "tps_now": ("Transactions/s now", "{value:,.1f}"),
    "revenue_1h": ("Revenue, last hour", "{value:,.2f}"),
    "anomalies_1h": ("Anomalies, last hour", "{value:,.0f}"),
    "dlq_count": ("Dead letters (DLQ)", "{value:,.0f}"),
}
RED_ABOVE_ZERO = [(0, "#222222"), (float("inf"), RED)]
#: The KPIs in the reporting currency.
MONEY_KPIS = ("revenue_1h",)


def unit(currency: str) -> str:
    """`` (USD)``: the unit of a money label; nothing before the API named the currency."""
    return f" ({currency})" if currency else ""


def follow(model: LiveModel, names: list[str], update: Callable[[], None]) -> None:
    """Re-run ``update`` when the parameters change (Bokeh models take no param references)."""
    model.param.watch(lambda *_: update(), names)


# --- views --------------------------------------------------------------------------------------
def status_banner(model: LiveModel) -> pn.pane.Alert:
    return pn.pane.Alert(model.param.status, alert_type=model.param.status_kind,
                         visible=pn.bind(bool, model.param.status), css_classes=["status"])


def updated_text(last_ok: datetime | None) -> str:
    return f"updated {last_ok:%H:%M:%S} UTC" if last_ok else ""


def kpi(kpis: dict[str, float], key: str) -> float:
    return kpis[key]


def kpi_row(model: LiveModel) -> pn.Row:
    numbers = {
        key: pn.indicators.Number(name=title, value=pn.bind(kpi, model.param.kpis, key),
                                  format=number_format, font_size="30pt", title_size="12pt",
                                  css_classes=[f"kpi-{key}"],
                                  colors=RED_ABOVE_ZERO if key in ("anomalies_1h", "dlq_count")
                                  else None)
        for key, (title, number_format) in KPIS.items()}

    def label() -> None:  # a Number draws its name again only with its value
        for key in MONEY_KPIS:
            numbers[key].name = KPIS[key][0] + unit(model.currency)
            numbers[key].param.trigger("value")
    label()
    follow(model, ["currency"], label)
    return pn.Row(*numbers.values())


def by_currency_note(model: LiveModel) -> pn.pane.Markdown:
    """The last hour's revenue per original currency, each in its own amounts."""
    return pn.pane.Markdown(pn.bind(revenue_by_currency_text, model.param.by_currency),
                            css_classes=["revenue-by-currency"])


def volume_charts(model: LiveModel) -> list[Any]:
    source = ColumnDataSource(model.volume, name="volume-source")
    count_fig = figure(title="Transactions per minute", height=220, **TIME_FIGURE)
    count_fig.vbar(x="minute", top="count", width=50_000, source=source, color=BLUE)
    count_fig.yaxis.ticker = BasicTicker(min_interval=1)  # whole transactions
    revenue_title = Title(text="Revenue per minute" + unit(model.currency))
    revenue_fig = figure(title=revenue_title, height=220, x_range=count_fig.x_range,
                         **TIME_FIGURE)
    revenue_fig.line(x="minute", y="revenue", source=source, line_width=2, color=ORANGE)
    revenue_fig.scatter(x="minute", y="revenue", source=source, size=4, color=ORANGE)
    for fig in (count_fig, revenue_fig):
        fig.add_tools(HoverTool(tooltips=[("minute (UTC)", "@minute{%H:%M}"),
                                          ("count", "@count"), ("revenue", "@revenue{0,0.00}"),
                                          ("anomalies", "@anomalies")],
                                formatters={"@minute": "datetime"}))
        fig.yaxis.formatter = NumeralTickFormatter(format="0,0")
    follow(model, ["volume"], lambda: setattr(source, "data", model.volume))
    follow(model, ["currency"], lambda: setattr(
        revenue_title, "text", "Revenue per minute" + unit(model.currency)))
    return [count_fig, revenue_fig]


def merchants_title(window: str, by: str, currency: str) -> str:
    return f"Top merchants by {by}{unit(currency) if by == 'revenue' else ''}, last {window}"


def merchant_chart(model: LiveModel) -> Any:
    source = ColumnDataSource(model.merchants, name="merchants-source")
    factors = FactorRange()
    title = Title(text=merchants_title(*model.merchants_for))
    fig = figure(title=title, y_range=factors, height=320, **FIGURE)
    fig.hbar(y="merchant", right="value", height=0.7, source=source, color=BLUE)
    fig.add_tools(HoverTool(tooltips=[("merchant", "@merchant"), ("category", "@category"),
                                      ("revenue", "@revenue{0,0.00}"), ("count", "@count"),
                                      ("anomalies", "@anomalies")]))
    fig.xaxis.formatter = NumeralTickFormatter(format="0,0")

    def update() -> None:  # the bars' factors first: data without its factor draws nothing
        factors.factors = model.merchants["merchant"]
        title.text = merchants_title(*model.merchants_for)
        source.data = model.merchants
    follow(model, ["merchants", "merchants_for"], update)
    return fig


def anomaly_note(frame: pd.DataFrame, category: str) -> str:
    if not category:
        return ""
    return (f"**{len(frame)}** newest anomalies ({category}); new ones are highlighted."
            if len(frame) else f"No anomalies yet ({category}).")


def anomaly_titles(currency: str) -> dict[str, str]:
    """The alert table's column titles: ``amount`` is in the transaction's ``currency``, the
    converted amount and the user's statistics in the reporting currency."""
    return {"time": "time (UTC)", "merchant_category": "category", "z_score": "z-score",
            "amount_reporting": "amount" + (unit(currency) or " (reporting)"),
            "mean_prev": "mean before" + unit(currency),
            "std_prev": "std before" + unit(currency), "n_prev": "n before"}


def anomaly_table(model: LiveModel) -> pn.widgets.Tabulator:
    table = pn.widgets.Tabulator(
        model.param.anomalies, show_index=False, disabled=True, selectable=False, height=380,
        layout="fit_data_stretch", hidden_columns=["new"], css_classes=["anomalies"],
        widths={"time": 175},
        formatters={"amount": NumberFormatter(format="0,0.00"),
                    "amount_reporting": NumberFormatter(format="0,0.00"),
                    "z_score": NumberFormatter(format="0.00"),
                    "mean_prev": NumberFormatter(format="0,0.00"),
                    "std_prev": NumberFormatter(format="0,0.00")},
        titles=anomaly_titles(model.currency),
    )
    follow(model, ["currency"], lambda: setattr(table, "titles",
                                                anomaly_titles(model.currency)))
    strong = 2 * settings.anomaly_z_threshold

    def row_style(row: pd.Series) -> list[str]:
        return ["background-color: #fff3bf; font-weight: bold" if row["new"] else ""] * len(row)

    def z_style(value: float) -> str:
        return (f"background-color: {'#f8c4c4' if value >= strong else '#fde2c4'}; "
                "font-weight: bold")

    if table.style is not None:
        table.style.apply(row_style, axis=1).map(z_style, subset=["z_score"])
    return table


def trend_chart(model: LiveModel) -> Any:
    def columns() -> dict[str, list[Any]]:
        return {**model.trend, "color": [RED if a else BLUE for a in model.trend["anomalies"]]}
    source = ColumnDataSource(columns(), name="trend-source")
    def text() -> str:
        return f"Daily spend{unit(model.currency)}, last 30 days (red: days with anomalies)"
    title = Title(text=text())
    fig = figure(title=title, height=240, **TIME_FIGURE)
    fig.vbar(x="day", top="spend", width=0.8 * 86_400_000, source=source, color="color")
    fig.add_tools(HoverTool(tooltips=[("day", "@label"), ("spend", "@spend{0,0.00}"),
                                      ("count", "@count"), ("anomalies", "@anomalies")]))
    fig.yaxis.formatter = NumeralTickFormatter(format="0,0")
    follow(model, ["trend"], lambda: setattr(source, "data", columns()))
    follow(model, ["currency"], lambda: setattr(title, "text", text()))
    return fig


# --- layout -------------------------------------------------------------------------------------
def card(title: str, *objects: Any) -> pn.Card:
    return pn.Card(*objects, title=title, collapsible=False, margin=(6, 8))


def page(model: LiveModel) -> pn.Column:
    """The whole page, a function of the model."""
    radio: dict[str, Any] = {"button_type": "primary", "button_style": "outline", "width": 180,
                             "sizing_mode": "fixed"}
    window_select = pn.widgets.RadioButtonGroup.from_param(
        model.param.window, css_classes=["window-select"], **radio)
    by_select = pn.widgets.RadioButtonGroup.from_param(model.param.by, **radio)
    category_select = pn.widgets.Select.from_param(
        model.param.category, width=220, sizing_mode="fixed", css_classes=["category-select"])
    user_input = pn.widgets.TextInput.from_param(
        model.param.user_id, placeholder="a user id, then Enter", css_classes=["user-input"],
        width=260, sizing_mode="fixed")
    user_button = pn.widgets.Button.from_param(
        model.param.look_up, button_type="primary", align="end", width=100, sizing_mode="fixed")
    return pn.Column(
        pn.Row(pn.pane.Markdown("# Transaction analytics: live"),
               pn.pane.Markdown(pn.bind(updated_text, model.param.last_ok),
                                css_classes=["updated"], align="end")),
        status_banner(model),
        kpi_row(model),
        by_currency_note(model),
        pn.Row(card("Volume per minute, last 60 minutes", *volume_charts(model)),
               card("Top merchants", pn.Row(window_select, by_select), merchant_chart(model))),
        card("Anomaly alerts", category_select,
             pn.pane.Markdown(pn.bind(anomaly_note, model.param.anomalies,
                                      model.param.anomalies_for), css_classes=["anomaly-note"]),
             anomaly_table(model)),
        card("User lookup", pn.Row(
            pn.Column(pn.Row(user_input, user_button),
                      pn.pane.Markdown(model.param.user_text, css_classes=["user-info"])),
            trend_chart(model))),
        sizing_mode="stretch_width",
    )


def next_tick(doc: Document) -> Schedule:
    def schedule(update: Callable[[], None]) -> None:
        doc.add_next_tick_callback(update)
    return schedule


def create_app() -> pn.Column:
    """One session's model and page; served, the model refreshes itself every REFRESH_MS."""
    doc = pn.state.curdoc
    served = doc is not None and doc.session_context is not None
    model = LiveModel(ApiClient(settings.api_url, settings.api_key),
                      schedule=next_tick(doc) if served and doc is not None else run_now)
    if served:
        pn.state.onload(model.refresh)
        # Panel's annotation names only sync callbacks; it awaits async ones too
        pn.state.add_periodic_callback(cast(Callable[[], None], model.refresh),
                                       period=REFRESH_MS)
        pn.state.on_session_destroyed(model.close)
    return page(model)


create_app().servable(title="Transaction analytics")
