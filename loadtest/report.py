"""Results of a load run: one JSON document, markdown tables, PNG plots, and the serving cost they imply.

Cost, with a price per hour for the server measured (all its GPUs): a request costs the price of the seconds it
occupies at the measured throughput, price / 3600 / (requests/s), shown per 1,000 requests; a day of a stated
traffic needs enough servers that their goodput (requests/s within the SLOs) covers its mean rate, each billed for
24 hours.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

from loadtest.driver import Load, Measured
from loadtest.metrics import METRICS, SLO, Summary, by_assistant, ratios, summarize

Result = dict[str, Any]


def cost(summary: Summary, price_per_hour: float, traffic_per_day: float) -> dict[str, float | int | None]:
    """$ per 1,000 requests at the measured throughput, and servers and $ per day for `traffic_per_day`."""
    per_1k = price_per_hour / 3600 / summary.request_throughput * 1000 if summary.request_throughput else None
    servers = math.ceil(traffic_per_day / 86400 / summary.goodput) if summary.goodput else None
    return {
        "price_per_hour": price_per_hour,
        "traffic_per_day": traffic_per_day,
        "cost_per_1k_requests": per_1k,
        "servers": servers,
        "cost_per_day": servers * price_per_hour * 24 if servers is not None else None,
    }


def level_result(
    load: Load,
    measured: dict[str, Measured],
    slo: SLO,
    price_per_hour: float | None = None,
    traffic_per_day: float = 10_000,
) -> Result:
    """Everything one load level measured: per target, per assistant, ratios and cost."""
    targets: dict[str, Any] = {}
    summaries = {}
    for name, m in measured.items():
        summaries[name] = summary = summarize(m.records, m.busy, slo)
        # Per assistant over the same duration: their throughputs add up to the target's.
        assistants = {a: asdict(summarize(rs, m.busy, slo)) for a, rs in sorted(by_assistant(m.records).items())}
        targets[name] = asdict(summary) | {"blocks": m.blocks, "assistants": assistants}
        if price_per_hour is not None:
            targets[name]["cost"] = cost(summary, price_per_hour, traffic_per_day)
    result: Result = {"load": asdict(load) | {"label": load.label}, "targets": targets}
    if "gateway" in summaries and "direct" in summaries:
        result["ratios"] = ratios(summaries["gateway"], summaries["direct"])
    return result


def _n(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _dist(d: dict[str, float | None], stats: tuple[str, ...] = ("mean", "p50", "p90", "p99")) -> str:
    return " / ".join(_n(d.get(s)) for s in stats)


def _errors(t: Result) -> str:
    return ", ".join(f"{k}: {v}" for k, v in t["errors"].items()) or "0"


def markdown(levels: list[Result]) -> str:
    """The tables: each target at each level; gateway/direct ratios; per assistant; cost (when priced)."""
    out = [
        "| load | target | completed | errors | req/s | output tok/s | goodput req/s | TTFT ms mean / p50 / p90 / p99 "
        "| TPOT ms mean / p50 / p90 / p99 | ITL ms mean / p50 / p90 / p99 | E2EL ms mean / p50 / p90 / p99 |",
        "|" + "---|" * 11,
    ]
    for level in levels:
        for name, t in level["targets"].items():
            cells = [level["load"]["label"], name, str(t["completed"]), _errors(t)]
            cells += [_n(t["request_throughput"], 2), _n(t["output_throughput"]), _n(t["goodput"], 2)]
            cells += [_dist(t[f"{m}_ms"]) for m in METRICS]
            out.append("| " + " | ".join(cells) + " |")
    if any("ratios" in level for level in levels):
        out += [
            "",
            "Gateway / direct (1.00 = the same; above 1 for latencies means the gateway is slower):",
            "",
            "| load | TTFT mean / p50 / p90 / p99 | TPOT mean / p50 / p90 / p99 | ITL mean / p50 / p90 / p99 "
            "| E2EL mean / p50 / p90 / p99 | req/s | output tok/s | goodput |",
            "|" + "---|" * 8,
        ]
        for level in levels:
            if r := level.get("ratios"):
                cells = [level["load"]["label"]]
                cells += [" / ".join(_n(r[f"{m}_{s}"], 2) for s in ("mean", "p50", "p90", "p99")) for m in METRICS]
                cells += [_n(r[k], 2) for k in ("request_throughput", "output_throughput", "goodput")]
                out.append("| " + " | ".join(cells) + " |")
    out += [
        "",
        "| load | target | assistant | completed | errors | req/s | goodput req/s | TTFT ms p50 / p99 "
        "| E2EL ms p50 / p99 |",
        "|" + "---|" * 9,
    ]
    for level in levels:
        for name, t in level["targets"].items():
            for assistant, a in t["assistants"].items():
                cells = [level["load"]["label"], name, assistant, str(a["completed"]), _errors(a)]
                cells += [_n(a["request_throughput"], 2), _n(a["goodput"], 2)]
                cells += [_dist(a["ttft_ms"], ("p50", "p99")), _dist(a["e2el_ms"], ("p50", "p99"))]
                out.append("| " + " | ".join(cells) + " |")
    priced = [(level, n, t["cost"]) for level in levels for n, t in level["targets"].items() if "cost" in t]
    if priced:
        c0 = priced[0][2]
        out += [
            "",
            f"Cost at ${c0['price_per_hour']:g} per server-hour; per day for {c0['traffic_per_day']:,.0f} requests "
            "(servers: enough goodput for the mean rate, each billed 24 h):",
            "",
            "| load | target | req/s | goodput req/s | $ per 1,000 requests | servers | $ per day |",
            "|" + "---|" * 7,
        ]
        for level, name, c in priced:
            t = level["targets"][name]
            cells = [level["load"]["label"], name, _n(t["request_throughput"], 2), _n(t["goodput"], 2)]
            cells += [_n(c["cost_per_1k_requests"], 4), str(c["servers"] or "SLO not met"), _n(c["cost_per_day"], 2)]
            out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def _levels_axis(ax: Any, xs: list[float], log_x: bool) -> None:
    """Ticks at the levels measured, on a log scale when they span a factor of ten or more."""
    if log_x:
        ax.set_xscale("log")
        ax.minorticks_off()
    ax.set_xticks(xs, labels=[f"{x:g}" for x in xs])


def plots(levels: list[Result], out: Path, slo: SLO) -> list[Path]:
    """latency_vs_load.png (each metric's p50 and p99 per target) and latency_per_assistant.png (E2EL)."""
    from matplotlib.figure import Figure  # Figure alone needs no pyplot state and no display: Agg writes the PNG

    xs = [level["load"]["level"] for level in levels]
    mode = levels[0]["load"]["mode"]
    xlabel = "concurrent clients" if mode == "closed" else "arrival rate (req/s)"
    log_x = len(xs) > 1 and max(xs) / min(xs) >= 10
    names = list(levels[0]["targets"])
    bounds = {"ttft": slo.ttft_ms, "tpot": slo.tpot_ms, "e2el": slo.e2el_ms}

    fig = Figure(figsize=(11, 8), layout="constrained")
    for ax, metric in zip(fig.subplots(2, 2).flat, METRICS, strict=True):
        for i, name in enumerate(names):
            for stat, style in (("p50", "-o"), ("p99", "--s")):
                ys = [level["targets"][name][f"{metric}_ms"][stat] for level in levels]
                ax.plot(xs, [math.nan if y is None else y for y in ys], style, color=f"C{i}", label=f"{name} {stat}")
        if bounds.get(metric):
            ax.axhline(bounds[metric], color="grey", linestyle=":", label="SLO")
        ax.set(title=metric.upper(), xlabel=xlabel, ylabel="ms")
        _levels_axis(ax, xs, log_x)
        ax.legend(fontsize="small")
    written = [out / "latency_vs_load.png"]
    fig.savefig(written[0], dpi=100)

    fig = Figure(figsize=(5.5 * len(names), 4.5), layout="constrained")
    axes = fig.subplots(1, len(names), squeeze=False, sharey=True)[0]
    for ax, name in zip(axes, names, strict=True):
        assistants = sorted({a for level in levels for a in level["targets"][name]["assistants"]})
        for i, assistant in enumerate(assistants):
            for stat, style in (("p50", "-o"), ("p99", "--s")):
                ys = [
                    level["targets"][name]["assistants"].get(assistant, {}).get("e2el_ms", {}).get(stat)
                    for level in levels
                ]
                ax.plot(
                    xs, [math.nan if y is None else y for y in ys], style, color=f"C{i}", label=f"{assistant} {stat}"
                )
        ax.set(title=f"{name}: end-to-end latency", xlabel=xlabel, ylabel="ms")
        _levels_axis(ax, xs, log_x)
        ax.legend(fontsize="small")
    written.append(out / "latency_per_assistant.png")
    fig.savefig(written[1], dpi=100)
    return written
