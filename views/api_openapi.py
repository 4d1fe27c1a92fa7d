"""The API's OpenAPI 3.0 description (``GET /openapi.json``) and its docs page (``GET /docs``).

Written by hand: the parameters' rules here are exactly the checks that
:mod:`views.api_params` and :mod:`views.api_handlers` make (schemathesis tests that they agree).
The docs page is one self-contained HTML file that renders this schema; it loads nothing from the
internet.
"""

from __future__ import annotations

from typing import Any

from app.contract import CATEGORIES, MAX_ID_LENGTH

__all__ = ["DOCS_HTML", "LIMITS", "openapi_schema"]

#: Caps of the numeric parameters: a larger value is accepted and capped to this.
LIMITS = {"days": 366, "minutes": 7 * 24 * 60, "anomalies": 200, "merchants": 100}

_NUM = {"type": "number"}
_INT = {"type": "integer"}
_STR = {"type": "string"}
_TS = {"type": "string", "format": "date-time"}
#: The reporting currency every money figure of an answer is in (``REPORTING_CURRENCY``).
_CURRENCY = {"type": "string", "pattern": "^[A-Z]{3}$", "example": "USD",
             "description": "ISO 4217 code of the reporting currency: every money figure of "
                            "this answer is in it (REPORTING_CURRENCY)"}
_MONEY = {"type": "number", "description": "in the reporting currency (`currency`)"}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {**schema, "nullable": True}


def _obj(props: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {"type": "object", "properties": props,
            "required": list(props) if required is None else required}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _capped(name: str, default: int, cap: int, what: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False,
            "description": f"{what}; at least 1, values above {cap} are capped to {cap}",
            "schema": {"type": "integer", "minimum": 1, "default": default}}


SCHEMAS: dict[str, Any] = {
    "Error": _obj({"detail": _STR}),
    "ValidationError": _obj({
        "detail": _STR,
        "errors": {"type": "array", "items": _obj({
            "param": _STR, "in": {"type": "string", "enum": ["query", "path"]},
            "message": _STR})},
    }),
    "Unavailable": {**_obj({"detail": {"type": "string", "enum": ["database unavailable"]}}),
                    "description": "which server failed, and why, is in the API's log"},
    "Dependency": {**_obj({"status": {"type": "string", "enum": ["ok", "unavailable"]},
                           "latency_ms": {**_NUM, "description": "of the check, when ok"}},
                          ["status"]),
                   "additionalProperties": False},
    "Health": {**_obj({
        "status": {"type": "string", "enum": ["ok", "unavailable"],
                   "description": "ok when MongoDB answers (the worker is optional)"},
        "mongo": _ref("Dependency"),
        "worker": _ref("Dependency"),
    }), "additionalProperties": False,
        "description": "statuses and latencies only (no hosts, ports or URLs: see the log)"},
    "TrendDay": _obj({"day": {"type": "string", "format": "date"}, "spend": _MONEY,
                      "count": {"type": "integer", "minimum": 0},
                      "anomalies": {"type": "integer", "minimum": 0}}),
    "Trends": _obj({
        "user_id": _STR,
        "currency": _CURRENCY,
        "days": {"type": "array", "items": _ref("TrendDay")},
        "live": {"type": "object", "nullable": True, "additionalProperties": True,
                 "description": "the worker's stats view of this user, null when unavailable"},
        "live_error": _nullable(_STR),
    }),
    "Anomaly": _obj({
        "txn_id": _STR, "user_id": _nullable(_STR), "amount": _nullable(_NUM),
        "currency": {**_nullable(_STR), "description": "the currency of `amount`"},
        "amount_reporting": {**_nullable(_NUM),
                             "description": "`amount` in `reporting_currency`"},
        "reporting_currency": _nullable(_STR), "merchant_id": _nullable(_STR),
        "merchant_category": _nullable(_STR), "timestamp": _nullable(_TS),
        "z_score": _nullable(_NUM),
        "mean_prev": {**_nullable(_NUM), "description": "in `reporting_currency`"},
        "std_prev": {**_nullable(_NUM), "description": "in `reporting_currency`"},
        "n_prev": _nullable(_INT), "detected_at": _nullable(_TS),
    }),
    "AnomalyPage": _obj({"currency": _CURRENCY,
                         "items": {"type": "array", "items": _ref("Anomaly")},
                         "next_cursor": _nullable(_STR)}),
    "Merchant": _obj({"merchant_id": _STR, "merchant_category": _nullable(_STR),
                      "revenue": _MONEY, "count": _INT, "anomalies": _INT}),
    "MerchantsTop": _obj({
        "window": {"type": "string", "enum": ["1h", "24h", "7d"]},
        "by": {"type": "string", "enum": ["revenue", "count"]},
        "currency": _CURRENCY,
        "items": {"type": "array", "items": _ref("Merchant")},
        "since": {**_TS, "description": "the start of the window: whole UTC hours (1h, 24h) "
                                        "or days (7d) up to the current, partial one"},
        "as_of": {**_TS, "description": "the moment the window ends at"},
    }),
    "VolumeMinute": _obj({"minute": _TS, "count": _INT, "revenue": _MONEY, "anomalies": _INT}),
    "Volume": _obj({"minutes": _INT, "currency": _CURRENCY,
                    "items": {"type": "array", "items": _ref("VolumeMinute")},
                    "as_of": {**_TS, "description": "the moment the last minute contains"}}),
    "Summary": _obj({
        "tps_now": {**_NUM, "description": "transactions in the last complete minute / 60"},
        "count_1h": _INT, "revenue_1h": _MONEY, "currency": _CURRENCY,
        "revenue_by_currency": {
            "type": "object", "additionalProperties": _NUM, "example": {"EUR": 1234.5},
            "description": "the same hour's revenue per original currency (ISO 4217 code -> "
                           "the sum of the amounts in that currency, not converted)"},
        "anomalies_1h": _INT, "dlq_count": _INT, "as_of": _TS,
    }),
}


def _too_many() -> dict[str, Any]:
    return {**_json(_ref("Error"), "over API_RATE_LIMIT requests per second from this client"),
            "headers": {"Retry-After": {"description": "seconds to wait before retrying",
                                        "schema": {"type": "integer", "minimum": 1}}}}


def _get(summary: str, description: str, ok: dict[str, Any], params: list[dict[str, Any]],
         secured: bool, rate_limited: bool,
         extra: dict[str, Any] | None = None) -> dict[str, Any]:
    responses: dict[str, Any] = {"200": ok}
    if params:
        responses["422"] = _json(_ref("ValidationError"), "a parameter is invalid (named)")
    if secured:
        responses["401"] = _json(_ref("Error"), "missing or wrong X-API-Key")
    if rate_limited:
        responses["429"] = _too_many()
    responses["503"] = _json(_ref("Unavailable"), "the database is unavailable")
    responses.update(extra or {})
    op: dict[str, Any] = {"summary": summary, "description": description,
                          "parameters": params, "responses": responses}
    return {"get": op}


def openapi_schema(secured: bool, rate_limited: bool = False) -> dict[str, Any]:
    """The OpenAPI document; ``secured`` when an API key is configured, ``rate_limited`` when
    API_RATE_LIMIT is on (every endpoint but /health may answer 429)."""
    paths = {
        "/health": {"get": {
            "summary": "Can the API serve?",
            "description": "200 when MongoDB answers (the worker is reported but optional), "
                           "503 when not; each dependency's status (`ok` or `unavailable`), "
                           "nothing about where it runs. Never needs the API key, never "
                           "rate-limited.",
            "security": [],
            "responses": {"200": _json(_ref("Health"), "MongoDB is up"),
                          "503": _json(_ref("Health"), "MongoDB is unavailable")},
        }},
        "/users/{user_id}/trends": _get(
            "A user's daily spend, count and anomalies, plus live statistics",
            "Per UTC day, the last `days` days up to today, oldest first (days without "
            "transactions are zeros), from the `users_by_day` document of the user's group, "
            "one per day; `spend` and `count` "
            "cover the transactions in the reporting currency `currency`; "
            "`live` is the Faust worker's stats "
            "view of the user, or null with `live_error` saying why.",
            _json(_ref("Trends"), "the trends"),
            [{"name": "user_id", "in": "path", "required": True,
              "schema": {"type": "string", "minLength": 1, "maxLength": MAX_ID_LENGTH}},
             _capped("days", 30, LIMITS["days"], "number of UTC days")],
            secured, rate_limited,
            {"404": _json(_ref("Error"), "no such route (e.g. an empty path segment)")}),
        "/anomalies": _get(
            "Anomalies, newest first, cursor-paginated",
            "Ordered by timestamp then txn_id, both descending. `next_cursor` (null on the last "
            "page) fetches the next page; pages stay stable while new anomalies arrive. Each "
            "request reads a bounded number of documents: with a rare filter a page may hold "
            "fewer than `limit` items (or none) and still have a `next_cursor`.",
            _json(_ref("AnomalyPage"), "a page"),
            [_capped("limit", 50, LIMITS["anomalies"], "page size"),
             {"name": "cursor", "in": "query", "required": False,
              "description": "`next_cursor` of the previous page",
              "schema": {"type": "string", "minLength": 1}},
             {"name": "category", "in": "query", "required": False,
              "schema": {"type": "string", "enum": list(CATEGORIES)}},
             {"name": "min_z", "in": "query", "required": False,
              "description": "only anomalies with z_score >= min_z", "schema": _NUM},
             {"name": "since", "in": "query", "required": False,
              "description": "only anomalies with timestamp >= since (ISO-8601; no offset = "
                             "UTC)", "schema": _TS}],
            secured, rate_limited),
        "/merchants/top": _get(
            "Top merchants by revenue or count over a window",
            "From the `merchant_hours` (1h: the current and the previous UTC hour; 24h: the "
            "current and the 24 previous hours) or `merchant_days` (7d: today and the 7 "
            "previous UTC days) aggregates: `since` is the window's start, `as_of` its end. "
            "Exact sums; ties by merchant_id. Revenue is in the reporting currency `currency`.",
            _json(_ref("MerchantsTop"), "the ranking"),
            [{"name": "window", "in": "query", "required": False,
              "schema": {"type": "string", "enum": ["1h", "24h", "7d"], "default": "1h"}},
             {"name": "by", "in": "query", "required": False,
              "schema": {"type": "string", "enum": ["revenue", "count"], "default": "revenue"}},
             _capped("limit", 10, LIMITS["merchants"], "number of merchants")],
            secured, rate_limited),
        "/volume": _get(
            "Per-minute count, revenue and anomalies",
            "From `volume_hours`: one item per minute, the last `minutes` minutes up to the "
            "current (partial) minute, oldest first; minutes without data are zeros. Revenue "
            "is in the reporting currency `currency`.",
            _json(_ref("Volume"), "the series"),
            [_capped("minutes", 60, LIMITS["minutes"], "number of minutes")],
            secured, rate_limited),
        "/summary": _get(
            "KPIs for the dashboard",
            "`tps_now` = count of the last complete minute / 60; the `_1h` sums cover the same "
            "60 minutes as `/volume?minutes=60`; `revenue_1h` is in the reporting currency "
            "`currency`, `revenue_by_currency` the same hour per original currency in its own "
            "amounts; `dlq_count` = documents in `dlq` (the collection's count from its "
            "metadata).",
            _json(_ref("Summary"), "the KPIs"), [], secured, rate_limited),
        "/metrics": {"get": {
            "summary": "Prometheus metrics",
            "parameters": [],
            "responses": {"200": {"description": "Prometheus text format",
                                  "content": {"text/plain": {"schema": _STR}}},
                          **({"401": _json(_ref("Error"), "missing or wrong X-API-Key")}
                             if secured else {}),
                          **({"429": _too_many()} if rate_limited else {})},
        }},
    }
    doc: dict[str, Any] = {
        "openapi": "3.0.3",
        "info": {"title": "Transaction analytics API", "version": "1.0.0",
                 "description": "Reads the MongoDB collections of docs/data-model.md. See "
                                "docs/api.md."},
        "paths": paths,
        "components": {"schemas": SCHEMAS},
    }
    if secured:
        doc["components"]["securitySchemes"] = {
            "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}}
        doc["security"] = [{"ApiKey": []}]
    return doc


DOCS_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Transaction analytics API</title>
<style>
body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}
code,pre{background:#f4f4f4;padding:.1rem .3rem} pre{padding:.6rem;overflow:auto;max-height:24rem}
section{border-top:1px solid #ddd;padding:.5rem 0} .m{font-weight:bold;color:#06c}
</style></head><body>
<h1>Transaction analytics API</h1>
<p>The machine-readable description: <a href="openapi.json">openapi.json</a>.
API key for the requests below (only when the server sets <code>API_KEY</code>):
<input id="key" size="30">
<button onclick="load()">reload</button></p>
<div id="paths">loading...</div>
<script>
const ENT={'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;',"'":'&#39;'};
function esc(s){return String(s).replace(/[&<>"']/g,c=>ENT[c])}
function headers(){const k=document.getElementById('key').value;return k?{'X-API-Key':k}:{}}
async function tryIt(path,i){
  const form=document.getElementById('f'+i);let url=path;const q=new URLSearchParams();
  for(const el of form.elements){if(!el.name||!el.value)continue;
    if(el.dataset.in==='path')url=url.replace('{'+el.name+'}',encodeURIComponent(el.value));
    else q.append(el.name,el.value);}
  const r=await fetch(url.replace(/^\\//,'')+(q.toString()?'?'+q:''),{headers:headers()});
  document.getElementById('o'+i).textContent=r.status+'\\n'+await r.text();
}
async function load(){
  const r=await fetch('openapi.json',{headers:headers()});
  if(!r.ok){document.getElementById('paths').textContent='openapi.json: HTTP '+r.status;return}
  const spec=await r.json();let html='',i=0;
  for(const [path,ops] of Object.entries(spec.paths)){const op=ops.get;i++;
    html+=`<section><span class="m">GET</span> <code>${esc(path)}</code> ${esc(op.summary||'')}`+
      `<p>${esc(op.description||'')}</p><form id="f${i}" onsubmit="return false">`;
    for(const p of op.parameters||[]){
      const hint=p.schema.default??(p.schema.enum||[]).join('|');
      html+=`<label>${esc(p.name)} <input name="${esc(p.name)}" data-in="${esc(p.in)}" `+
        `placeholder="${esc(hint)}"></label> `}
    html+=`<button onclick="tryIt('${esc(path)}',${i})">try</button></form>`+
      `<pre id="o${i}"></pre></section>`}
  document.getElementById('paths').innerHTML=html;
}
load();
</script></body></html>
"""
