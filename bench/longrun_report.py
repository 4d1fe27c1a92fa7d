"""The long-run benchmark's outputs (``bench/longrun.py``): the per-minute report from the raw
samples, ``bench/results/longrun.json``, the result section of ``docs/longrun.md`` (between
its markers) and the chart ``docs/longrun.png``."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from longrun_probe import ROUTE_OF, Samples
from longrun_stats import bucket_quantile, latency_minutes, max_per_minute, verdicts

__all__ = ["BEGIN", "END", "build_report", "server_minutes", "write_chart", "write_json",
           "write_markdown"]

BEGIN = "<!-- longrun:result:begin -->"
END = "<!-- longrun:result:end -->"


def server_minutes(snapshots: list[tuple[float, dict[str, list[tuple[float, float]]]]]
                   ) -> dict[str, list[dict[str, Any]]]:
    """Per route, per minute: p50/p99 (ms) of the requests the server measured in that minute
    (the difference of the cumulative histograms at the minute's last snapshot and the one
    before)."""
    last_of: dict[int, dict[str, list[tuple[float, float]]]] = {}
    for t, hist in snapshots:
        last_of[int(t // 60)] = hist
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    previous: dict[str, list[tuple[float, float]]] = {}
    for minute in sorted(last_of):
        hist = last_of[minute]
        for route, buckets in hist.items():
            name = ROUTE_OF.get(route)
            if name is None:
                continue
            before = dict(previous.get(route, []))
            diff = [(le, count - before.get(le, 0.0)) for le, count in buckets]
            p50, p99 = bucket_quantile(0.5, diff), bucket_quantile(0.99, diff)
            if diff and diff[-1][1] > 0:
                out[name].append({"minute": minute, "requests": int(diff[-1][1]),
                                  "p50_ms": None if p50 is None else round(p50 * 1000, 2),
                                  "p99_ms": None if p99 is None else round(p99 * 1000, 2)})
        previous = hist
    return dict(out)


def build_report(samples: Samples, minutes: int) -> dict[str, Any]:
    """The per-minute series of a run and their verdicts."""
    processes: dict[str, list[tuple[float, float]]] = defaultdict(list)
    cpu: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for t, name, rss, pct in samples.processes:
        processes[name].append((t, rss))
        cpu[name][int(t // 60)].append(pct)
    rollups: list[dict[str, Any]] = []
    by_minute = {int(t // 60): (s, c) for t, s, c in samples.rollup_seconds}
    prev: tuple[float, float] | None = None
    for minute in sorted(by_minute):
        s, c = by_minute[minute]
        if prev is not None and c > prev[1]:
            rollups.append({"minute": minute, "mean_s": round((s - prev[0]) / (c - prev[1]), 3),
                            "writes": int(c - prev[1])})
        prev = (s, c)
    report: dict[str, Any] = {
        "client": latency_minutes(samples.requests),
        "server": server_minutes(samples.histograms),
        "sink_lag_s": max_per_minute(samples.sink_lag),
        "sink_consumer_lag_messages": max_per_minute(samples.sink_consumer_lag),
        "aggregate_write_s": rollups,
        "dbt_build_s": max_per_minute((t, s) for t, s, _ in samples.dbt),
        "dbt_failed": sum(1 for *_, ok in samples.dbt if not ok),
        "rss_mb": {n: max_per_minute(v) for n, v in sorted(processes.items())},
        "cpu_pct": {n: [{"minute": m, "mean": round(sum(v) / len(v), 1)}
                        for m, v in sorted(rows.items())] for n, rows in sorted(cpu.items())},
    }
    report["verdicts"] = verdicts(report, minutes)
    return report


def write_json(path: Path, config: dict[str, Any], report: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {"config": config, "pass": report["verdicts"]["pass"], **report}
    path.write_text(json.dumps(body, indent=1, default=str) + "\n")


def _worst(rows: list[dict[str, Any]], key: str) -> str:
    values = [r[key] for r in rows if r.get(key) is not None]
    return f"{max(values):,.1f}" if values else "-"


def _mark(ok: Any) -> str:
    return "pass" if ok else ("n/a" if ok is None else "**FAIL**")


def result_markdown(config: dict[str, Any], report: dict[str, Any]) -> str:
    v = report["verdicts"]
    lines = [f"Last run: {config['finished_at']} on {config['host']}, history "
             f"{config['seed']:,} transactions over {config['days']:g} days (seeded at "
             f"{config['seed_rate']}), {config['minutes']} minutes at {config['tps']}/s, "
             f"{config['rps']:g} API requests/s. **{'PASS' if v['pass'] else 'FAIL'}**"
             + (" (a trial: shorter than 60 minutes or a smaller history)"
                if config["minutes"] < 60 or config["seed"] < 10_000_000 else "") + ".", "",
             "| endpoint | requests | worst p50 ms | worst p99 ms (client) | worst p99 ms "
             "(server) | 5xx |", "|---|---|---|---|---|---|"]
    for endpoint, rows in report["client"].items():
        server = report["server"].get("merchants_top" if endpoint.startswith("top_") else
                                      endpoint.removesuffix("_next"), [])
        lines.append(f"| {endpoint} | {sum(r['requests'] for r in rows):,} | "
                     f"{_worst(rows, 'p50_ms')} | {_worst(rows, 'p99_ms')} | "
                     f"{_worst(server, 'p99_ms')} | {sum(r['5xx'] for r in rows)} |")
    lines += ["", "| criterion | measured | verdict |", "|---|---|---|",
              f"| client p99 < {v['client_p99']['limit_ms']:g} ms | worst "
              f"{max((x or 0 for x in v['client_p99']['worst_ms'].values()), default=0):,.1f} ms"
              f" | {_mark(v['client_p99']['pass'])} |",
              f"| server p99 < {v['server_p99']['limit_ms']:g} ms | worst "
              f"{max((x or 0 for x in v['server_p99']['worst_ms'].values()), default=0):,.1f} ms"
              f" | {_mark(v['server_p99']['pass'])} |",
              f"| sink lag < {v['sink_lag']['limit_s']:g} s | worst "
              f"{v['sink_lag']['worst_s']} s | {_mark(v['sink_lag']['pass'])} |",
              f"| no 5xx (nor unanswered) | {v['no_5xx']['5xx_or_failed']} | "
              f"{_mark(v['no_5xx']['pass'])} |",
              f"| stability ({v['stability']['windows']}) | "
              f"{sum(1 for c in v['stability']['series'] if c['pass'] is False)} of "
              f"{len(v['stability']['series'])} series drifted | "
              f"{_mark(v['stability']['pass'])} |", ""]
    drifted = [c for c in v["stability"]["series"] if c["pass"] is False]
    for c in drifted:
        lines.append(f"- drifted: {c['series']}: {c['first']} -> {c['last']} "
                     f"(limit {c['limit']})")
    builds = [r["max"] for r in report["dbt_build_s"]]
    lines.append(f"- dbt builds: {len(builds)}, longest {max(builds, default=0):,.1f} s, "
                 f"{report['dbt_failed']} failed")
    for name, rows in report["rss_mb"].items():
        first, last = rows[0]["max"], rows[-1]["max"]
        cpu = [r["mean"] for r in report["cpu_pct"].get(name, [])]
        lines.append(f"- {name}: RSS {first:,.0f} -> {last:,.0f} MB, CPU "
                     f"{sum(cpu) / max(len(cpu), 1):,.0f}% of a core on average")
    lines += ["", "![p99 per endpoint, sink lag, dbt builds and RSS per minute](longrun.png)"]
    return "\n".join(lines)


def write_markdown(path: Path, config: dict[str, Any], report: dict[str, Any]) -> None:
    """Replace the text between the markers of ``path`` with the result (a file that does
    not exist yet gets only the result, between the markers)."""
    text = path.read_text() if path.exists() else ""
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    path.write_text(f"{head}{BEGIN}\n{result_markdown(config, report)}\n{END}{tail}")


def write_chart(path: Path, report: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(13, 8), sharex=True)
    ax = axes[0][0]
    for endpoint, rows in report["client"].items():
        ax.plot([r["minute"] for r in rows], [r["p99_ms"] for r in rows], label=endpoint)
    ax.axhline(100, color="red", linestyle=":")
    ax.set_title("client p99 (ms) per endpoint")
    ax.legend(fontsize=7)
    ax = axes[0][1]
    rows = report["sink_lag_s"]
    ax.plot([r["minute"] for r in rows], [r["max"] for r in rows], label="sink lag (max, s)")
    ax.axhline(5, color="red", linestyle=":")
    ax.set_title("sink lag (s)")
    ax = axes[1][0]
    rows = report["dbt_build_s"]
    ax.plot([r["minute"] for r in rows], [r["max"] for r in rows], "o-")
    ax.set_title("dbt build (s)")
    ax = axes[1][1]
    for name, rows in report["rss_mb"].items():
        ax.plot([r["minute"] for r in rows], [r["max"] for r in rows], label=name)
    ax.set_title("RSS (MB) per process")
    ax.legend(fontsize=7)
    for ax in axes[1]:
        ax.set_xlabel("minute of the run")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
