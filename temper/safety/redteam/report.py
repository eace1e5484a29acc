"""Red-team reports: summary.json, a Markdown report and a self-contained HTML report with an ASR chart.

Prompts and replies are untrusted (model output, attack text): the HTML is rendered with autoescaping and the
Markdown escapes HTML and table syntax, so a reply can never inject markup or scripts.
"""
from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jinja2
from matplotlib.figure import Figure

from temper.safety.redteam.attacks import BENIGN_FAMILY

EXAMPLES_PER_FAMILY = 4
PROMPT_CHARS, REPLY_CHARS = 300, 300


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _ci(ci: Sequence[float]) -> str:
    return f"[{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"


def _secs(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def _short(text: str | None, limit: int) -> str:
    text = " ".join(str(text or "").split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _rows(groups: Mapping[str, Mapping[str, Any]], latency: bool) -> list[list[str]]:
    """Table rows: name, n, successes, ASR, 95% CI, blocked, errors (, p50/p95 latency)."""
    out = []
    for name, g in groups.items():
        row = [name, str(g["n"]), str(g["successes"]), _pct(g["asr"]), _ci(g["ci"]), str(g["blocked"]),
               str(g["errors"])]
        if latency:
            row += [_secs(g["latency_s"]["p50"]), _secs(g["latency_s"]["p95"])]
        out.append(row)
    return out


HEAD = ["n", "successes", "ASR", "95% CI", "blocked", "errors"]
FAMILY_HEAD = ["family", *HEAD, "p50 s", "p95 s"]
CATEGORY_HEAD = ["category", *HEAD]


def _pick(rows: Sequence[Mapping[str, Any]], hit_key: str, k: int) -> list[Mapping[str, Any]]:
    """Up to k rows: about half hits (successes, or refusals for benign prompts), the rest misses, by id."""
    ordered = sorted(rows, key=lambda r: r["id"])
    hits = [r for r in ordered if r.get(hit_key)]
    misses = [r for r in ordered if not r.get(hit_key)]
    n_hits = min(len(hits), max(k - len(misses), (k + 1) // 2))
    return hits[:n_hits] + misses[:k - n_hits]


def examples(results: Sequence[Mapping[str, Any]], per_family: int = EXAMPLES_PER_FAMILY) -> dict[str, list]:
    """A few results per family, hits and misses, with prompt and reply (or error) truncated."""
    by_family: dict[str, list[Mapping[str, Any]]] = {}
    for r in results:
        by_family.setdefault(r["family"], []).append(r)
    out = {}
    for fam, rows in by_family.items():
        picked = _pick(rows, "refused" if fam == BENIGN_FAMILY else "success", per_family)
        out[fam] = [{"id": r["id"], "success": r.get("success"), "refused": r.get("refused"),
                     "prompt": _short(r.get("prompt"), PROMPT_CHARS),
                     "reply": _short(r.get("error") or r.get("reply"), REPLY_CHARS)} for r in picked]
    return out


def chart_png(summary: Mapping[str, Any], title: str) -> bytes:
    """Bars of ASR per family with 95% CI error bars, and one bar for over-refusal; a PNG (Agg, no pyplot)."""
    bars = [(fam, g["asr"], g["ci"], "#c0392b") for fam, g in summary["families"].items() if g["asr"] is not None]
    over = summary.get("over_refusal")
    if over and over["rate"] is not None:
        bars.append(("over-refusal\n(benign)", over["rate"], over["ci"], "#2e86c1"))
    names = [b[0] for b in bars]
    fig = Figure(figsize=(max(6.0, 1.1 * len(names) + 2), 4.2), dpi=100)
    ax = fig.add_subplot()
    if names:
        ax.bar(range(len(bars)), [100 * v for _, v, _, _ in bars], color=[c for *_, c in bars], capsize=4,
               yerr=[[100 * (v - ci[0]) for _, v, ci, _ in bars], [100 * (ci[1] - v) for _, v, ci, _ in bars]])
        ax.set_xticks(range(len(names)), names, rotation=20, ha="right")
    else:
        ax.text(0.5, 0.5, "no answered attacks", ha="center", va="center", transform=ax.transAxes)
    ax.set_ylim(0, 105)
    ax.set_ylabel("% (95% Wilson CI)")
    ax.set_title(f"{title}: attack success rate per family".replace("$", r"\$"))  # no mathtext
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _md_cell(text: Any) -> str:
    """Markdown table cell: HTML-escaped, pipes escaped, on one line."""
    return html.escape(" ".join(str(text).split()), quote=False).replace("|", "\\|")


def _md_table(head: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return lines + ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]


def _over_refusal_line(over: Mapping[str, Any] | None) -> str:
    if not over:
        return "Not measured (no benign prompts)."
    return (f"{over['refused']}/{over['n']} benign prompts refused: {_pct(over['rate'])} "
            f"(95% CI {_ci(over['ci'])}); blocked {over['blocked']}, errors {over['errors']}.")


def render_markdown(summary: Mapping[str, Any], results: Sequence[Mapping[str, Any]], title: str,
                    config: Mapping[str, Any] | None = None) -> str:
    """The Markdown report: overall, per-family and per-category tables, over-refusal, examples, config."""
    ov = summary["overall"]
    broken = ov["objectives_broken"]
    lines = [f"# {_md_cell(title)}", "",
             f"Overall ASR: {ov['successes']}/{ov['n']} = {_pct(ov['asr'])} (95% CI {_ci(ov['ci'])}); "
             f"blocked {ov['blocked']}, errors {ov['errors']}. Objectives broken by at least one attack: "
             f"{broken['successes']}/{broken['n']} = {_pct(broken['rate'])}.", "",
             "## Attack success rate per family", "", *_md_table(FAMILY_HEAD, _rows(summary["families"], True)),
             "", "## Attack success rate per harm category", "",
             *_md_table(CATEGORY_HEAD, _rows(summary["categories"], False)), "",
             "## Over-refusal", "", _over_refusal_line(summary.get("over_refusal")), "", "## Examples", ""]
    for fam, rows in examples(results).items():
        key = "refused" if fam == BENIGN_FAMILY else "success"
        lines += [f"### {_md_cell(fam)}", "", *_md_table(["id", key, "prompt", "reply"],
                                                         [[r["id"], r[key], r["prompt"], r["reply"]] for r in rows]),
                  ""]
    if config is not None:
        block = ["    " + line for line in json.dumps(config, indent=2).splitlines()]  # an indented code block
        lines += ["## Configuration", "", *block, ""]
    return "\n".join(lines)


HTML_TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }}</title>
<style>
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
table{border-collapse:collapse;margin:1em 0;width:100%}th,td{border:1px solid #ccc;padding:4px 8px;
text-align:left;vertical-align:top;font-size:0.92em}th{background:#f3f3f3}td.num{text-align:right}
pre{background:#f7f7f7;padding:1em;overflow:auto}img{max-width:100%}.ok{color:#c0392b;font-weight:bold}
</style></head><body>
<h1>{{ title }}</h1>
<p>{{ overall }}</p>
<img src="data:image/png;base64,{{ png }}" alt="attack success rate per family">
<h2>Attack success rate per family</h2>
<table><tr>{% for h in family_head %}<th>{{ h }}</th>{% endfor %}</tr>
{% for row in family_rows %}<tr>{% for c in row %}<td>{{ c }}</td>{% endfor %}</tr>
{% endfor %}</table>
<h2>Attack success rate per harm category</h2>
<table><tr>{% for h in category_head %}<th>{{ h }}</th>{% endfor %}</tr>
{% for row in category_rows %}<tr>{% for c in row %}<td>{{ c }}</td>{% endfor %}</tr>
{% endfor %}</table>
<h2>Over-refusal</h2><p>{{ over_refusal }}</p>
<h2>Examples</h2>
{% for fam, rows in examples.items() %}<h3>{{ fam }}</h3>
<table><tr><th>id</th><th>{{ "refused" if fam == benign else "success" }}</th><th>prompt</th><th>reply</th></tr>
{% for r in rows %}<tr><td>{{ r.id }}</td><td>{{ r.refused if fam == benign else r.success }}</td>
<td>{{ r.prompt }}</td><td>{{ r.reply }}</td></tr>
{% endfor %}</table>
{% endfor %}
{% if config %}<h2>Configuration</h2><pre>{{ config }}</pre>{% endif %}
</body></html>
"""


def render_html(summary: Mapping[str, Any], results: Sequence[Mapping[str, Any]], title: str,
                config: Mapping[str, Any] | None = None) -> str:
    """The self-contained HTML report (inline CSS, the chart as a base64 PNG), every text autoescaped."""
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    ov = summary["overall"]
    return env.from_string(HTML_TEMPLATE).render(
        title=title, png=base64.b64encode(chart_png(summary, title)).decode("ascii"),
        overall=f"Overall ASR: {ov['successes']}/{ov['n']} = {_pct(ov['asr'])} (95% CI {_ci(ov['ci'])}); "
                f"blocked {ov['blocked']}, errors {ov['errors']}.",
        family_head=FAMILY_HEAD, family_rows=_rows(summary["families"], True),
        category_head=CATEGORY_HEAD, category_rows=_rows(summary["categories"], False),
        over_refusal=_over_refusal_line(summary.get("over_refusal")), examples=examples(results),
        benign=BENIGN_FAMILY, config=json.dumps(config, indent=2) if config is not None else "")


def write_reports(summary: Mapping[str, Any], results: Sequence[Mapping[str, Any]], output_dir: str | Path,
                  title: str, config: Mapping[str, Any] | None = None) -> dict[str, Path]:
    """Write summary.json, report.md and report.html into output_dir; return their paths by name."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"summary": out / "summary.json", "markdown": out / "report.md", "html": out / "report.html"}
    paths["summary"].write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    paths["markdown"].write_text(render_markdown(summary, results, title, config), encoding="utf-8")
    paths["html"].write_text(render_html(summary, results, title, config), encoding="utf-8")
    return paths
