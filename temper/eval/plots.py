"""The report's plots, made with matplotlib's object API (no pyplot, so no GUI back end and no global figures).

Each function takes the result sets and returns a Figure, or None when no result set has the data it needs.
A result set keeps its colour in every plot.
"""
from __future__ import annotations

import io

from matplotlib import rc_context
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from temper.eval.resultset import label_of, metric, suite

COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
          "#17becf")
RC = {"font.family": "sans-serif", "font.size": 9, "axes.grid": True, "grid.alpha": 0.3, "svg.fonttype": "none"}


def to_svg(fig: Figure) -> str:
    """The figure as an inline <svg> element (no XML prologue), text kept as text."""
    buf = io.StringIO()
    with rc_context(RC):
        fig.savefig(buf, format="svg", metadata={"Date": None})
    svg = buf.getvalue()
    return svg[svg.index("<svg"):]


def to_png(fig: Figure, path) -> None:
    with rc_context(RC):
        fig.savefig(path, format="png", dpi=110)


def _figure(width: float = 8.5, height: float = 4.6, ncols: int = 1) -> tuple[Figure, list]:
    with rc_context(RC):
        fig = Figure(figsize=(width, height), layout="constrained")
        axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, list(axes)


def _label(result: dict) -> str:
    """A result set's label as plot text: `$` would start matplotlib's math mode."""
    return label_of(result).replace("$", r"\$")


def _offset(i: int) -> tuple[int, int]:
    """Where a point's label goes, in points: staggered by result set, so that equal points keep readable labels."""
    return 6, 5 - 11 * (i % 4)


def _color(i: int) -> str:
    return COLORS[i % len(COLORS)]


def _err(m) -> list[list[float]] | None:
    """Asymmetric error bar lengths from a metric's 95% interval."""
    if m is None or m.ci95 is None:
        return None
    return [[max(0.0, m.value - m.ci95[0])], [max(0.0, m.ci95[1] - m.value)]]


def quality_cost(results: list[dict]) -> Figure | None:
    """Quality (instruction following, RAG correctness) against the cost per million output tokens."""
    series = [("instructions", "verifiable_strict", "o", "instructions (strict)"),
              ("rag", "rag_correct", "s", "RAG correct")]
    points = [(i, r, cost, s) for i, r in enumerate(results)
              if (cost := metric(r, "speed", "usd_per_million_output_tokens")) is not None
              for s in series if metric(r, s[0], s[1]) is not None]
    if not points:
        return None
    fig, (ax,) = _figure()
    with rc_context(RC):
        for i, r, cost, (suite_name, name, marker, what) in points:
            q = metric(r, suite_name, name)
            ax.errorbar([cost.value], [q.value], yerr=_err(q), fmt=marker, color=_color(i), capsize=3, ms=7)
            ax.annotate(f"{_label(r)}: {what}", (cost.value, q.value), textcoords="offset points",
                        xytext=_offset(i), fontsize=8)
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
        ax.set_xlabel("USD per million output tokens (lower is cheaper)")
        ax.set_ylabel("quality (higher is better)")
        ax.set_title("Quality vs cost (o: instructions strict, s: RAG correct)")
        ax.margins(0.2)
    return fig


def safety(results: list[dict]) -> Figure | None:
    """Harmful compliance against over-refusal, with 95% intervals: lower-left is better."""
    points = [(i, r, x, y) for i, r in enumerate(results)
              if (x := metric(r, "safety", "over_refusal")) is not None
              and (y := metric(r, "safety", "harmful_compliance")) is not None]
    if not points:
        return None
    fig, (ax,) = _figure(8.0, 5.0)
    with rc_context(RC):
        for i, r, x, y in points:
            ax.errorbar([x.value], [y.value], xerr=_err(x), yerr=_err(y), fmt="o", color=_color(i), capsize=3, ms=7)
            ax.annotate(_label(r), (x.value, y.value), textcoords="offset points", xytext=_offset(i), fontsize=8)
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_formatter(PercentFormatter(1.0))
        ax.set_xlim(left=0)
        ax.set_ylim(bottom=0)
        ax.set_xlabel("over-refusal of benign and edgy requests")
        ax.set_ylabel("harmful compliance")
        ax.set_title("Safety: lower-left is better (bars: 95% CI)")
        ax.margins(0.15)
    return fig


def levels(result: dict) -> list[dict]:
    """The load levels a speed run measured, by concurrency."""
    entry = suite(result, "speed") or {}
    return sorted((entry.get("details") or {}).get("levels") or [], key=lambda lv: lv.get("concurrency", 0))


def throughput(results: list[dict]) -> Figure | None:
    """Output tokens/s against concurrency, one line per result set."""
    lines = [(i, r, lvs) for i, r in enumerate(results) if (lvs := [lv for lv in levels(r)
                                                                     if lv.get("output_throughput") is not None])]
    if not lines:
        return None
    fig, (ax,) = _figure()
    with rc_context(RC):
        all_c = sorted({lv["concurrency"] for _, _, lvs in lines for lv in lvs})
        for i, r, lvs in lines:
            ax.plot([lv["concurrency"] for lv in lvs], [lv["output_throughput"] for lv in lvs], marker="o",
                    color=_color(i), label=_label(r))
        if all_c[-1] >= 4 * max(all_c[0], 1):
            ax.set_xscale("log", base=2)
        ax.set_xticks(all_c, [str(c) for c in all_c])
        ax.set_ylim(bottom=0)
        ax.set_xlabel("concurrent requests")
        ax.set_ylabel("output tokens/s")
        ax.set_title("Throughput")
        ax.legend(fontsize=8)
    return fig


def latency_groups(results: list[dict]) -> list[tuple[int, dict, dict]]:
    """(result index, result, level) at concurrency 1 (or the lowest) and at the highest level, per result set."""
    groups = []
    for i, r in enumerate(results):
        lvs = levels(r)
        for lv in {id(lv): lv for lv in (lvs[:1] + lvs[-1:])}.values():
            groups.append((i, r, lv))
    return groups


def latency(results: list[dict]) -> Figure | None:
    """TTFT and TPOT p50/p90/p99, grouped bars per result set at the lowest and the highest concurrency."""
    groups = [g for g in latency_groups(results) if g[2].get("ttft_ms") or g[2].get("tpot_ms")]
    if not groups:
        return None
    fig, axes = _figure(max(9.0, 1.4 * len(groups) + 2), 4.6, ncols=2)
    quantiles = (("median", "p50", 1.0), ("p90", "p90", 0.7), ("p99", "p99", 0.4))
    width = 0.26
    with rc_context(RC):
        for ax, key, title in zip(axes, ("ttft_ms", "tpot_ms"), ("time to first token", "time per output token")):
            for q, (field, name, alpha) in enumerate(quantiles):
                xs = [g + (q - 1) * width for g in range(len(groups))]
                ys = [(lv.get(key) or {}).get(field) or 0.0 for _, _, lv in groups]
                ax.bar(xs, ys, width, color=[_color(i) for i, _, _ in groups], alpha=alpha,
                       label=name, edgecolor="black", linewidth=0.4)
            ax.set_xticks(range(len(groups)), [f"{_label(r)}, c={lv.get('concurrency')}" for _, r, lv in groups],
                          fontsize=7, rotation=30, ha="right", rotation_mode="anchor")
            ax.set_ylabel("ms")
            ax.set_title(f"{title} (bars: p50, p90, p99)")
        axes[0].legend(fontsize=7, title="quantile", title_fontsize=7)
    return fig


def memory(results: list[dict]) -> Figure | None:
    """The server's resident memory and the weights' bytes, per result set."""
    rows = [(i, r, metric(r, "identity", "weight_bytes"), metric(r, "speed", "rss_bytes"))
            for i, r in enumerate(results)]
    rows = [row for row in rows if row[2] is not None or row[3] is not None]
    if not rows:
        return None
    top = max(m.value for row in rows for m in row[2:] if m is not None)
    scale, unit = (2**30, "GiB") if top >= 2 * 2**30 else (2**20, "MiB")
    fig, (ax,) = _figure(max(6.5, 1.4 * len(rows) + 2), 4.4)
    width = 0.38
    with rc_context(RC):
        for k, (what, hatch) in enumerate((("weights", ""), ("server RSS", "//"))):
            xs = [g + (k - 0.5) * width for g in range(len(rows))]
            ys = [(row[2 + k].value / scale) if row[2 + k] is not None else 0.0 for row in rows]
            ax.bar(xs, ys, width, color=[_color(row[0]) for row in rows], hatch=hatch, edgecolor="black",
                   linewidth=0.4, label=what)
        ax.set_xticks(range(len(rows)), [_label(row[1]) for row in rows], fontsize=8)
        ax.set_ylabel(unit)
        ax.set_title("Memory: weights (plain) and server RSS (hatched)")
        ax.legend(fontsize=8)
    return fig


PLOTS = {"quality-cost": quality_cost, "safety": safety, "throughput": throughput, "latency": latency,
         "memory": memory}
