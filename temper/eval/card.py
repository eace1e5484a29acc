"""A model card in Markdown from `temper eval` result sets, and the small Markdown-to-HTML converter the report
uses to show it (headings, paragraphs, lists, tables, code; every character of the source HTML-escaped)."""
from __future__ import annotations

import html
import re

from temper.errors import TemperError
from temper.eval.resultset import (
    KNOWN_METRICS,
    Metric,
    format_metric,
    format_value,
    label_of,
    metric,
    metric_names,
    suite,
    suite_status,
)

# What each known metric says about the model, in plain words; {v} is the value with its interval.
PLAIN = {
    "harmful_compliance": "complies with {v} of harmful requests",
    "harmful_answered": "answers (does not refuse) {v} of harmful requests",
    "over_refusal": "refuses {v} of benign or edgy requests that it should answer",
    "benign_answered": "answers {v} of benign requests",
    "verifiable_strict": "follows {v} of verifiable instructions (strict check)",
    "verifiable_loose": "follows {v} of verifiable instructions (loose check)",
    "ended_turn": "ends its turn cleanly in {v} of replies",
    "recall_at_5": "retrieval puts a relevant source in the top 5 for {v} of questions",
    "rag_correct": "answers {v} of questions correctly from retrieved sources",
    "bare_correct": "answers {v} of the same questions correctly without retrieval",
    "unanswerable_abstained": "abstains on {v} of questions its sources cannot answer",
    "answerable_abstained": "wrongly abstains on {v} of questions its sources answer",
    "faithfulness": "backs {v} of its answers with the sources it cites",
    "perplexity": "has a perplexity of {v} on held-out text",
    "output_tok_s_max": "peaks at {v} of output",
    "ttft_p50_ms": "takes {v} to the first token (median, one request at a time)",
    "tpot_p50_ms": "takes {v} per output token (median, one request at a time)",
    "rss_bytes": "needs {v} of server memory (RSS)",
    "usd_per_million_output_tokens": "costs {v} per million output tokens",
}


def model_card(results: list[dict], label: str | None = None) -> str:
    """A model card in Markdown for one result set, compared with the others.

    Args:
        results: the result sets of the report.
        label: the result set to describe (the last one with this label); default the last result set.
    Raises:
        TemperError: no result set has this label.
    """
    if not results:
        raise TemperError("a model card needs at least one result set")
    if label is None:
        result = results[-1]
    else:
        matches = [r for r in results if label_of(r) == label]
        if not matches:
            raise TemperError(f"no result set labelled {label!r} (labels: {', '.join(map(label_of, results))})")
        result = matches[-1]
    others = [r for r in results if r is not result]
    ident = result.get("identity") or {}
    parts = [f"# Model card: {ident.get('name') or label_of(result)} ({label_of(result)})",
             _intro(result), _model(result), _recipe(ident), _measured(result, others), _goals(result),
             _use(result), _license(ident), _reproduce(result)]
    return "\n\n".join(p for p in parts if p) + "\n"


def _intro(result: dict) -> str:
    target = result.get("target") or {}
    served = f"the endpoint {target['url']}" if target.get("url") else "the weights loaded in process"
    extras = [f"the `{target['guard']}` guard" if target.get("guard") else "",
              f"RAG over the `{target['rag_collection']}` collection" if target.get("rag_collection") else ""]
    extras = [e for e in extras if e]
    with_ = f", with {' and '.join(extras)}" if extras else ""
    return (f"Measured by `temper eval` on {str(result.get('created', 'an unrecorded date'))[:10]} through "
            f"{served}{with_}. Numbers are from this run; 95% confidence intervals are given where the suite "
            f"computes them.")


def _model(result: dict) -> str:
    ident = result.get("identity") or {}
    quant = ident.get("quantization")
    quant_text = ("none" if not quant else
                  ", ".join(str(x) for x in (quant.get("method"), quant.get("bits") and f"{quant['bits']} bits",
                                             quant.get("group_size") and f"group size {quant['group_size']}") if x))
    rows = [("Name", ident.get("name")), ("Architecture", ident.get("architecture")),
            ("Parameters", ident.get("parameters") and f"{ident['parameters'] / 1e6:,.1f} M ({ident['parameters']:,})"),
            ("Weights", ident.get("weight_bytes") and f"{format_value(ident['weight_bytes'], 'bytes')} "
                                                       f"({ident.get('dtype') or 'dtype not recorded'})"),
            ("Quantization", quant_text), ("Base model", ident.get("base_model")),
            ("sha256", ident.get("sha256") and f"`{ident['sha256'][:16]}…`")]
    lines = ["## Model", "", "| what | value |", "|---|---|"]
    lines += [f"| {k} | {_cell(v)} |" for k, v in rows if v]
    return "\n".join(lines)


def _recipe(ident: dict) -> str:
    recipe = ident.get("recipe")
    if not recipe:
        base = ident.get("base_model") or ident.get("name") or "the model"
        quant = ident.get("quantization")
        how = f", quantized with {quant.get('method')}" if quant else ""
        return f"## How it was made\n\nNo recipe recorded: these are the weights of {base} as published{how}."
    stages = recipe.get("stages") or []
    lines = ["## How it was made", "",
             f"With the recipe **{recipe.get('name', 'unnamed')}**"
             + (f" (`{recipe['file']}`)" if recipe.get("file") else "")
             + (f", from the base model {ident['base_model']}" if ident.get("base_model") else "")
             + f", in {len(stages)} stage{'s' if len(stages) != 1 else ''}:", ""]
    for k, stage in enumerate(stages, 1):
        text = f"{k}. **{stage.get('stage', 'stage')}**"
        if stage.get("description"):
            description = str(stage["description"]).rstrip()
            text += f": {description}" + ("" if description.endswith((".", "!", "?")) else ".")
        if stage.get("data"):
            text += f" Data: {'; '.join(map(str, stage['data']))}."
        if stage.get("settings"):
            text += " Settings: " + ", ".join(f"`{k}={v}`" for k, v in stage["settings"].items()) + "."
        lines.append(text)
    return "\n".join(lines)


def _measured(result: dict, others: list[dict]) -> str:
    """Strengths (best of the result sets), limits (worst) and the other measurements, each with its number."""
    strengths, limits, rest, missing = [], [], [], []
    for suite_name in KNOWN_METRICS:
        if suite(result, suite_name) is None:
            missing.append(f"`{suite_name}` ({suite_status(result, suite_name)})")
            continue
        for name in metric_names([result], suite_name):
            m = metric(result, suite_name, name)
            if m is None:
                continue
            line, rank = _compare(name, m, [(label_of(o), metric(o, suite_name, name)) for o in others])
            if rank == "best":
                strengths.append(line)
            elif rank == "worst":
                limits.append(line)
            else:
                rest.append(line)
    lines = ["## Measured strengths and limits", ""]
    if not others:
        lines += ["Only this result set was measured, so there is nothing to compare with:", ""] + rest
    else:
        lines += [f"Compared with {', '.join(label_of(o) for o in others)}.", ""]
        for title, items in (("Strengths (the best of the result sets)", strengths),
                             ("Limits (the worst of the result sets)", limits), ("Other measurements", rest)):
            lines += [f"### {title}", ""] + (items or ["- none"]) + [""]
    if missing:
        lines += ["", f"Not measured: {', '.join(missing)}."]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).rstrip()


def _compare(name: str, m: Metric, others: list[tuple[str, Metric | None]]) -> tuple[str, str]:
    """A bullet for one metric with its comparison, and whether it is the 'best', the 'worst' or 'between'."""
    said = PLAIN.get(name, m.label + ": {v}").format(v=format_metric(m))
    said = said[0].upper() + said[1:]
    compared = [(lbl, o) for lbl, o in others if o is not None]
    if not compared:
        return f"- **{m.label}**: {said}.", "between"
    sign = 1 if m.is_higher_better else -1
    is_best = all(sign * (m.value - o.value) > 0 for _, o in compared)
    is_worst = all(sign * (m.value - o.value) < 0 for _, o in compared)
    versus = ", ".join(f"{lbl} {format_value(o.value, o.unit)}" for lbl, o in compared)
    rank = "best" if is_best else "worst" if is_worst else "between"
    note = ""
    if rank != "between" and m.ci95 is not None:
        within = [lbl for lbl, o in compared if m.ci95[0] <= o.value <= m.ci95[1]]
        if within:
            note = f"; {', '.join(within)} within this 95% CI, so the difference may be noise"
    return f"- **{m.label}**: {said} (vs {versus}{note}).", rank


def _goals(result: dict) -> str:
    """Which of the recipe's goals were met. `identity.recipe.goals` maps a metric ('suite.metric' or 'metric')
    to {"min": x} or {"max": x}, or is a list of {"metric": ..., "min"/"max": x}."""
    goals = ((result.get("identity") or {}).get("recipe") or {}).get("goals")
    if not goals:
        return ""
    items = goals.items() if isinstance(goals, dict) else ((g.get("metric"), g) for g in goals)
    lines = ["## Goals", ""]
    for key, bound in items:
        m = _find_metric(result, str(key))
        if not isinstance(bound, dict) or not ({"min", "max"} & set(bound)):  # a goal stated in words
            lines.append(f"- {key}: {bound}" + (f" (measured {format_metric(m)})" if m else ""))
            continue
        kind, limit = ("min", bound["min"]) if "min" in bound else ("max", bound.get("max"))
        target = f"{'at least' if kind == 'min' else 'at most'} {format_value(limit, m.unit) if m else limit}"
        if m is None:
            lines.append(f"- {key} {target}: not measured")
            continue
        met = m.value >= limit if kind == "min" else m.value <= limit
        lines.append(f"- {m.label} {target}: {'met' if met else 'NOT met'}, measured {format_metric(m)}")
    return "\n".join(lines)


def _find_metric(result: dict, key: str) -> Metric | None:
    suite_name, _, name = key.rpartition(".")
    candidates = [suite_name] if suite_name else list(KNOWN_METRICS)
    return next((m for s in candidates if (m := metric(result, s, name)) is not None), None)


def _use(result: dict) -> str:
    target = result.get("target") or {}
    harmful = metric(result, "safety", "harmful_compliance")
    intended = ("Experiments, teaching and low-stakes assistant tasks (drafting, answering questions "
                "whose answers a person checks)")
    if target.get("rag_collection"):
        intended += f"; answering questions from the `{target['rag_collection']}` collection with citations"
    caution = (f" It still complies with {format_metric(harmful)} of harmful requests, so keep a guard in front "
               "of it where users are not trusted." if harmful is not None else
               " Its safety was not measured in this run.")
    return ("## Intended use\n\n" + intended + ".\n\nOut of scope: decisions about people, medical, legal or "
            "financial advice, facts used without checking, and languages or domains these suites did not "
            "measure." + caution)


def _license(ident: dict) -> str:
    if ident.get("license"):
        of = f" (the licence of {ident['base_model']})" if ident.get("base_model") else ""
        return f"## Licence\n\n{ident['license']}{of}."
    return ("## Licence\n\nNot recorded: check the licence of "
            f"{ident.get('base_model') or ident.get('name') or 'the base model'} before you use or share it.")


def _reproduce(result: dict) -> str:
    recipe = (result.get("identity") or {}).get("recipe") or {}
    versions = result.get("versions") or {}
    at = f"temper {versions.get('temper', '(version not recorded)')}" + (f", commit {versions['commit']}" if versions.get("commit") else "")
    if recipe.get("command"):
        return f"## How to reproduce\n\nWith {at}:\n\n```\n{recipe['command']}\n```"
    return f"## How to reproduce\n\nNo command recorded. Measured with {at}."


def _cell(value: object) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


# Markdown to HTML ----------------------------------------------------------------------------------------------

_INLINE = ((re.compile(r"\*\*(.+?)\*\*"), r"<strong>\1</strong>"),
           (re.compile(r"(?<![\w*])\*(?!\s)(.+?)\*"), r"<em>\1</em>"),
           (re.compile(r"\[([^\]]+)\]\(((?:https?://|#|\.{0,2}/|[\w-]+\.)[^)\s]*)\)"), r'<a href="\2">\1</a>'))


def _inline(text: str) -> str:
    """Escape, then apply code spans, bold, emphasis and links (never inside code spans)."""
    out = []
    for k, part in enumerate(re.split(r"(`[^`]+`)", text)):
        if k % 2:
            out.append(f"<code>{html.escape(part[1:-1])}</code>")
            continue
        part = html.escape(part).replace("\\|", "|")
        for pattern, repl in _INLINE:
            part = pattern.sub(repl, part)
        out.append(part)
    return "".join(out)


def _table(lines: list[str]) -> str:
    def cells(line: str) -> list[str]:
        return [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]

    head = "".join(f"<th>{_inline(c)}</th>" for c in cells(lines[0]))
    body = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in cells(line)) + "</tr>" for line in lines[2:])
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def markdown_to_html(text: str, heading_shift: int = 0) -> str:
    """Headings, paragraphs, `-`/`1.` lists, pipe tables and fenced code to HTML; headings moved down by
    `heading_shift` levels (to nest a card under the report's own headings)."""
    lines, out, k = text.splitlines(), [], 0
    while k < len(lines):
        line = lines[k]
        if line.startswith("```"):
            end = next((j for j in range(k + 1, len(lines)) if lines[j].startswith("```")), len(lines))
            out.append(f"<pre><code>{html.escape(chr(10).join(lines[k + 1:end]))}</code></pre>")
            k = end + 1
        elif m := re.match(r"(#{1,6})\s+(.*)", line):
            level = min(6, len(m.group(1)) + heading_shift)
            out.append(f"<h{level}>{_inline(m.group(2))}</h{level}>")
            k += 1
        elif line.lstrip().startswith("|") and k + 1 < len(lines) and re.match(r"\s*\|?\s*:?-{3}", lines[k + 1]):
            end = next((j for j in range(k, len(lines)) if not lines[j].lstrip().startswith("|")), len(lines))
            out.append(_table(lines[k:end]))
            k = end
        elif m := re.match(r"\s*([-*]|\d+\.)\s+", line):
            tag = "ol" if m.group(1)[0].isdigit() else "ul"
            items = []
            while k < len(lines) and (m := re.match(r"\s*([-*]|\d+\.)\s+(.*)", lines[k])):
                items.append(f"<li>{_inline(m.group(2))}</li>")
                k += 1
            out.append(f"<{tag}>{''.join(items)}</{tag}>")
        elif line.strip():
            para = []
            while k < len(lines) and lines[k].strip() and not re.match(r"(#{1,6}\s|```|\s*\||\s*([-*]|\d+\.)\s)",
                                                                       lines[k]):
                para.append(lines[k].strip())
                k += 1
            out.append(f"<p>{_inline(' '.join(para))}</p>")
        else:
            k += 1
    return "\n".join(out)
