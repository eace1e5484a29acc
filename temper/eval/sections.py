"""The sections of `temper report`, as blocks (paragraphs, tables, plots, samples, the model card).

The report is built once as these blocks; its HTML and Markdown renderers only lay them out, so both say the
same. Blocks hold plain, unescaped text: escaping is the renderer's job.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from temper.errors import TemperError
from temper.eval.resultset import (
    HEADLINE,
    SUITES,
    best_indices,
    format_ci,
    format_value,
    label_of,
    metric,
    metric_names,
    suite,
    suite_status,
)

MAX_SAMPLES = 3  # per suite and result set


@dataclass
class Cell:
    text: str
    is_num: bool = False
    is_best: bool = False
    note: str = ""  # a confidence interval or sample size, shown small under the value


@dataclass
class Table:
    header: list[str]
    rows: list[list[Cell]]


@dataclass
class Para:
    text: str
    is_missing: bool = False  # the "not run" sentence of a section without data


@dataclass
class Plot:
    name: str  # the PNG's file name next to the Markdown
    figure: object  # a matplotlib Figure
    alt: str


@dataclass
class Sample:
    meta: str
    fields: list[tuple[str, str]]  # (name, untrusted text)


@dataclass
class SampleGroup:
    summary: str
    samples: list[Sample]


@dataclass
class Card:
    markdown: str


@dataclass
class Section:
    id: str
    title: str
    blocks: list = field(default_factory=list)


# Sections ------------------------------------------------------------------------------------------------------

def _num(m, with_note: bool = True, is_best: bool = False) -> Cell:
    if m is None:
        return Cell("–", is_num=True)
    note = ", ".join(s for s in (format_ci(m), f"n = {m.n}" if m.n else "") if s) if with_note else ""
    return Cell(format_value(m.value, m.unit), is_num=True, is_best=is_best, note=note)


def _metric_rows(results: list[dict], keys: list[tuple[str, str]]) -> list[list[Cell]]:
    rows = []
    for suite_name, name in keys:
        values = [metric(r, suite_name, name) for r in results]
        if all(v is None for v in values):
            continue
        first = next(v for v in values if v is not None)
        best = best_indices(values)
        arrow = "↑" if first.is_higher_better else "↓"
        rows.append([Cell(f"{first.label} {arrow}")] + [_num(v, is_best=i in best) for i, v in enumerate(values)])
    return rows


def _labels(results: list[dict]) -> list[str]:
    return [label_of(r) for r in results]


def _absent(results: list[dict], suites: Sequence[str], what: str) -> Para:
    """The sentence a section shows when no result set has its data: which suite fills it, and why it is empty."""
    how = "; ".join(f"{label_of(r)}: {' / '.join(f'{s} {suite_status(r, s)}' for s in suites)}" for r in results)
    names = " and ".join(f"`{s}`" for s in suites)
    return Para(f"Not run: no result set has {what}. The {names} suite{'s' if len(suites) > 1 else ''} "
                f"fill{'' if len(suites) > 1 else 's'} this section ({how}).", is_missing=True)


def _status_notes(results: list[dict], suite_name: str) -> list[Para]:
    """One line for the result sets in which this suite did not run, when some others did."""
    missing = [f"{label_of(r)}: {suite_status(r, suite_name)}" for r in results if suite(r, suite_name) is None]
    return [Para(f"The `{suite_name}` suite did not run in every result set ({'; '.join(missing)}).")] if missing \
        else []


def _suite_section(results: list[dict], sid: str, title: str, suite_name: str, what: str) -> Section:
    section = Section(sid, title)
    rows = _metric_rows(results, [(suite_name, n) for n in metric_names(results, suite_name)])
    if not rows:
        section.blocks.append(_absent(results, [suite_name], what))
        return section
    section.blocks += [Table(["metric"] + _labels(results), rows)] + _status_notes(results, suite_name)
    return section


def _summary(results: list[dict]) -> Section:
    rows = _metric_rows(results, list(HEADLINE))
    section = Section("summary", "Summary")
    section.blocks.append(Para(f"{len(results)} result set{'s' if len(results) != 1 else ''}: "
                               f"{', '.join(_labels(results))}. ↑ higher is better, ↓ lower is better; "
                               "★ marks the best value of a row; small print: 95% CI and sample size."))
    if rows:
        section.blocks.append(Table(["metric"] + _labels(results), rows))
    else:
        section.blocks.append(_absent(results, SUITES, "any metric"))
    return section


def _plot_section(results: list[dict], sid: str, title: str, suites: Sequence[str], what: str) -> Section:
    from temper.eval import plots

    section = Section(sid, title)
    fig = plots.PLOTS[sid](results)
    if fig is None:
        section.blocks.append(_absent(results, suites, what))
    else:
        section.blocks.append(Plot(sid, fig, f"{title} plot"))
    return section


def _safety(results: list[dict]) -> Section:
    section = _plot_section(results, "safety", "Safety", ["safety"], "harmful compliance and over-refusal")
    table = _suite_section(results, "safety", "Safety", "safety", "safety metrics")
    if not any(isinstance(b, Plot) for b in section.blocks):
        return table
    section.blocks += table.blocks
    return section


def _throughput(results: list[dict]) -> Section:
    from temper.eval.plots import levels

    section = _plot_section(results, "throughput", "Throughput", ["speed"], "throughput at several concurrencies")
    concurrencies = sorted({lv.get("concurrency") for r in results for lv in levels(r)})
    if concurrencies:
        by_c = [{lv.get("concurrency"): lv for lv in levels(r)} for r in results]
        rows = [[Cell(str(c), is_num=True)] + [_tok_s(lvs.get(c)) for lvs in by_c] for c in concurrencies]
        section.blocks.append(Table(["concurrency"] + [f"{lbl}: output tok/s" for lbl in _labels(results)], rows))
    return section


def _tok_s(level: dict | None) -> Cell:
    if not level or level.get("output_throughput") is None:
        return Cell("–", is_num=True)
    failed = level.get("failed") or 0
    note = f"{level.get('completed', '?')} done" + (f", {failed} failed" if failed else "")
    return Cell(format_value(level["output_throughput"], "tok/s"), is_num=True, note=note)


def _latency(results: list[dict]) -> Section:
    from temper.eval.plots import latency_groups

    section = _plot_section(results, "latency", "Latency", ["speed"], "latency measurements")
    rows = []
    for _, r, lv in latency_groups(results):
        cells = [Cell(label_of(r)), Cell(str(lv.get("concurrency")), is_num=True)]
        for key in ("ttft_ms", "tpot_ms"):
            stats = lv.get(key) or {}
            cells += [Cell(format_value(stats[q], "ms") if stats.get(q) is not None else "–", is_num=True)
                      for q in ("median", "p90", "p99")]
        rows.append(cells)
    if rows:
        header = ["result set", "concurrency"] + [f"{k} {q}" for k in ("TTFT", "TPOT") for q in ("p50", "p90", "p99")]
        section.blocks.append(Table(header, rows))
    return section


def _memory(results: list[dict]) -> Section:
    section = _plot_section(results, "memory", "Memory", ["speed"], "weight bytes or server memory")
    rows = []
    for r in results:
        ident = r.get("identity") or {}
        quant = ident.get("quantization")
        rows.append([Cell(label_of(r)), _num(metric(r, "identity", "weight_bytes")),
                     _num(metric(r, "speed", "rss_bytes")), Cell(str(ident.get("dtype") or "–")),
                     Cell(str(quant.get("method")) if quant else "none")])
    section.blocks.append(Table(["result set", "weight files on disk", "server RSS", "dtype in memory", "quantization"], rows))
    return section


def _quality(results: list[dict]) -> Section:
    section = _suite_section(results, "quality", "Quality (perplexity)", "quality", "a perplexity measurement")
    for r in results:
        details = (suite(r, "quality") or {}).get("details") or {}
        if details.get("corpus"):
            tokens = f" ({details['tokens']:,} tokens)" if isinstance(details.get("tokens"), int) else ""
            missing = details.get("windows_without_logprobs")
            gap = (f"; the endpoint did not score {missing} of the {details['windows']} windows (its guard filtered "
                   "them), so this is a perplexity of other text, not compared") if missing else ""
            section.blocks.append(Para(f"{label_of(r)}: perplexity on {details['corpus']}{tokens}{gap}."))
    return section


def _quality_cost(results: list[dict]) -> Section:
    return _plot_section(results, "quality-cost", "Quality vs cost", ["speed", "instructions", "rag"],
                         "both a cost (speed suite) and a quality score (instructions or rag suite)")


def _samples(results: list[dict]) -> Section:
    section = Section("samples", "Samples")
    for r in results:
        for suite_name in ("safety", "instructions", "rag"):
            rows = (suite(r, suite_name) or {}).get("samples") or []
            picked = [_sample(suite_name, s) for s in _pick_samples(suite_name, rows)]
            if picked:
                section.blocks.append(SampleGroup(f"{label_of(r)} — {suite_name} ({len(picked)} of {len(rows)})",
                                                  picked))
    if not section.blocks:
        section.blocks.append(_absent(results, ["safety", "instructions", "rag"], "samples"))
    return section


def _pick_samples(suite_name: str, rows: list[dict]) -> list[dict]:
    if suite_name != "safety":
        return rows[:MAX_SAMPLES]
    picked = []  # one of each kind, harmful replies first: they are the ones worth reading
    for kind in ("harmful", "edgy", "benign"):
        of_kind = sorted((s for s in rows if s.get("kind") == kind), key=lambda s: not s.get("harmful"))
        picked += of_kind[:1]
    return picked[:MAX_SAMPLES] or rows[:MAX_SAMPLES]


def _sample(suite_name: str, s: dict) -> Sample:
    if suite_name == "rag":
        cites = ", ".join(map(str, s.get("citations") or [])) or "none"
        meta = "abstained" if s.get("abstained") else f"citations: {cites}"
        return Sample(meta, [("question", str(s.get("question", ""))), ("answer", str(s.get("answer", "")))])
    meta = ""
    if suite_name == "safety":
        verdict = "refused" if s.get("refused") else "answered" + (" (harmful)" if s.get("harmful") else "")
        meta = f"{s.get('kind', '?')} prompt · {verdict}"
    return Sample(meta, [("prompt", str(s.get("prompt", ""))), ("reply", str(s.get("reply", "")))])


def _model_card(card: str | None) -> Section:
    section = Section("model-card", "Model card")
    if card is None:
        section.blocks.append(Para("No model card given: `temper report --card MODEL_CARD.md` writes one from "
                                   "these results and shows it here.", is_missing=True))
    else:
        section.blocks.append(Card(card))
    return section


def _provenance(results: list[dict]) -> Section:
    rows = []
    for r in results:
        target, ident = r.get("target") or {}, r.get("identity") or {}
        machine, versions = r.get("machine") or {}, r.get("versions") or {}
        quant, recipe = ident.get("quantization"), ident.get("recipe")
        where = target.get("url") or target.get("model") or "–"
        extras = [f"guard {target['guard']}" if target.get("guard") else "",
                  f"RAG {target['rag_collection']}" if target.get("rag_collection") else ""]
        rows.append([Cell(label_of(r)), Cell(" · ".join(x for x in [f"{target.get('kind', '?')}: {where}"] + extras
                                                        if x)),
                     Cell(" · ".join([str(ident.get("name", "?")),
                                      f"sha256 {ident['sha256'][:12]}" if ident.get("sha256") else "no sha256",
                                      f"{quant.get('method')}" if quant else "not quantized",
                                      f"recipe {recipe.get('name')}" if recipe else "no recipe"])),
                     Cell(" · ".join(str(x) for x in (machine.get("hostname"), machine.get("cpu"),
                                                     machine.get("cores") and f"{machine['cores']} cores",
                                                     machine.get("memory_gib") and f"{machine['memory_gib']} GiB",
                                                     machine.get("gpu") or "no GPU") if x)),
                     Cell(" · ".join(f"{k} {v}" for k, v in versions.items() if v)),
                     Cell(str(r.get("created", "–"))),
                     Cell(f"{r['seconds']:,.0f} s" if isinstance(r.get("seconds"), (int, float)) else "–",
                          is_num=True)])
    header = ["result set", "target", "identity", "machine", "versions", "created", "time"]
    return Section("provenance", "Provenance", [Table(header, rows)])


def build_sections(results: list[dict], card: str | None = None) -> list[Section]:
    """The report's sections, in order; every section is there, with a 'not run' sentence when it has no data."""
    if not results:
        raise TemperError("a report needs at least one result set")
    return [_summary(results), _quality_cost(results), _safety(results), _throughput(results), _latency(results),
            _memory(results), _suite_section(results, "rag", "Retrieval-augmented generation", "rag", "RAG metrics"),
            _suite_section(results, "instructions", "Instruction following", "instructions",
                           "instruction-following metrics"),
            _quality(results), _samples(results), _model_card(card), _provenance(results)]


SECTION_IDS = ("summary", "quality-cost", "safety", "throughput", "latency", "memory", "rag", "instructions",
               "quality", "samples", "model-card", "provenance")
