"""The long-run benchmark's arithmetic, pure (no I/O): samples aggregated per minute,
percentiles, histogram quantiles from Prometheus buckets, and the pass/fail verdicts.

Criteria (``docs/longrun.md``):

- every endpoint's p99 stays under ``CLIENT_P99_MS`` client-side and ``SERVER_P99_MS``
  server-side in every minute;
- the sink's lag stays under ``SINK_LAG_SECONDS`` in every minute;
- no response is a 5xx;
- stability: each series' last window is within ``DRIFT`` of its first (no more than 20% above
  it, plus a small absolute noise floor per kind of series). The windows are the first and last
  15 minutes of a run of 60 minutes or more, the first and last quarter of a shorter one.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = ["CLIENT_P99_MS", "DRIFT", "NOISE_FLOOR", "SERVER_P99_MS", "SINK_LAG_SECONDS",
           "bucket_quantile", "drift", "latency_minutes", "max_per_minute", "percentile",
           "verdicts", "windows"]

CLIENT_P99_MS = 100.0
SERVER_P99_MS = 50.0
SINK_LAG_SECONDS = 5.0
DRIFT = 0.20
#: Absolute slack added to the 20% per kind of series (by name prefix), so that a p99 of 3 ms
#: becoming 4 ms is noise, not drift.
NOISE_FLOOR = {"client_p99_ms": 5.0, "server_p99_ms": 5.0, "sink_lag_s": 0.5,
               "dbt_build_s": 3.0, "rss_mb": 16.0}


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100) by linear interpolation between the closest ranks
    (numpy's default); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    lo = math.floor(rank)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (rank - lo)


def latency_minutes(samples: Iterable[tuple[float, str, float, int]]
                    ) -> dict[str, list[dict[str, Any]]]:
    """Per endpoint, per minute of the run: requests, p50 and p99 (ms) and 5xx count, from
    samples ``(seconds since the start, endpoint, latency ms, status)``; a status of 0 is a
    request that got no answer (counted in ``failed``)."""
    grouped: dict[str, dict[int, list[tuple[float, int]]]] = defaultdict(lambda: defaultdict(list))
    for t, endpoint, ms, status in samples:
        grouped[endpoint][int(t // 60)].append((ms, status))
    out: dict[str, list[dict[str, Any]]] = {}
    for endpoint, minutes in sorted(grouped.items()):
        rows = []
        for minute, pairs in sorted(minutes.items()):
            answered = [ms for ms, status in pairs if status]
            rows.append({"minute": minute, "requests": len(pairs),
                         "p50_ms": _round(percentile(answered, 50)),
                         "p99_ms": _round(percentile(answered, 99)),
                         "5xx": sum(1 for _, status in pairs if status >= 500),
                         "failed": sum(1 for _, status in pairs if not status)})
        out[endpoint] = rows
    return out


def max_per_minute(samples: Iterable[tuple[float, float]]) -> list[dict[str, Any]]:
    """The largest value of each minute of ``(seconds since the start, value)`` samples."""
    best: dict[int, float] = {}
    for t, value in samples:
        minute = int(t // 60)
        best[minute] = max(value, best.get(minute, value))
    return [{"minute": m, "max": _round(v)} for m, v in sorted(best.items())]


def bucket_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """Prometheus' ``histogram_quantile``: the ``q`` (0-1) quantile from cumulative
    ``(upper bound, count)`` buckets (the last one ``+inf``), interpolated inside its bucket;
    None when the buckets count nothing."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for upper, count in buckets:
        if count >= rank:
            if math.isinf(upper):
                return lower
            inside = count - below
            return lower + (upper - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = upper, count
    return lower


def windows(minutes: int) -> tuple[int, str]:
    """The length (minutes) of the first and last windows compared, and how it was chosen."""
    if minutes >= 60:
        return 15, "first and last 15 minutes"
    return max(1, minutes // 4), "first and last quarter of the run (shorter than 60 minutes)"


def _median(values: list[float]) -> float | None:
    return percentile(values, 50)


def drift(name: str, series: Mapping[int, float], minutes: int) -> dict[str, Any]:
    """Whether ``series`` (minute -> value) ends within the drift bound of how it started:
    the median of its last window against the median of its first."""
    width, _ = windows(minutes)
    first = [v for m, v in series.items() if m < width and v is not None]
    last = [v for m, v in series.items() if m >= minutes - width and v is not None]
    floor = next((v for k, v in NOISE_FLOOR.items() if name.startswith(k)), 0.0)
    a, b = _median(first), _median(last)
    if a is None or b is None:
        return {"series": name, "first": a, "last": b, "pass": None,
                "why": "no values in a window"}
    limit = a * (1 + DRIFT) + floor
    return {"series": name, "first": _round(a), "last": _round(b), "limit": _round(limit),
            "pass": b <= limit}


def verdicts(report: Mapping[str, Any], minutes: int) -> dict[str, Any]:
    """The verdict per criterion of a run's per-minute ``report`` (``client``/``server``:
    endpoint -> rows with ``p99_ms``; ``sink_lag_s``: rows with ``max``; ``dbt_build_s``:
    rows with ``max``; ``rss_mb``: process -> rows with ``max``) and ``pass``: all of them."""
    out: dict[str, Any] = {}
    worst_client = {e: max((r["p99_ms"] or 0.0 for r in rows), default=None)
                    for e, rows in report.get("client", {}).items()}
    out["client_p99"] = {"limit_ms": CLIENT_P99_MS, "worst_ms": worst_client,
                         "pass": all(v is not None and v < CLIENT_P99_MS
                                     for v in worst_client.values()) and bool(worst_client)}
    worst_server = {e: max((r["p99_ms"] or 0.0 for r in rows), default=None)
                    for e, rows in report.get("server", {}).items()}
    out["server_p99"] = {"limit_ms": SERVER_P99_MS, "worst_ms": worst_server,
                         "pass": all(v is None or v < SERVER_P99_MS
                                     for v in worst_server.values())}
    lag = [r["max"] for r in report.get("sink_lag_s", [])]
    out["sink_lag"] = {"limit_s": SINK_LAG_SECONDS, "worst_s": max(lag, default=None),
                       "pass": bool(lag) and max(lag) < SINK_LAG_SECONDS}
    errors = sum(r["5xx"] + r.get("failed", 0) for rows in report.get("client", {}).values()
                 for r in rows)
    out["no_5xx"] = {"5xx_or_failed": errors, "pass": errors == 0}
    series: dict[str, dict[int, float]] = {}
    for e, rows in report.get("client", {}).items():
        series[f"client_p99_ms {e}"] = {r["minute"]: r["p99_ms"] for r in rows}
    for e, rows in report.get("server", {}).items():
        series[f"server_p99_ms {e}"] = {r["minute"]: r["p99_ms"] for r in rows}
    series["sink_lag_s"] = {r["minute"]: r["max"] for r in report.get("sink_lag_s", [])}
    series["dbt_build_s"] = {r["minute"]: r["max"] for r in report.get("dbt_build_s", [])}
    for proc, rows in report.get("rss_mb", {}).items():
        series[f"rss_mb {proc}"] = {r["minute"]: r["max"] for r in rows}
    checks = [drift(name, values, minutes) for name, values in sorted(series.items())
              if values]
    _, how = windows(minutes)
    out["stability"] = {"windows": how, "series": checks,
                        "pass": all(c["pass"] is not False for c in checks)}
    out["pass"] = all(v["pass"] for v in out.values() if isinstance(v, dict))
    return out


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)
