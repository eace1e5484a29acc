"""`temper report`: one self-contained HTML page, a Markdown twin and a model card from `temper eval` result sets.

    temper report results/ -o report.html --markdown report.md --card MODEL_CARD.md --card-label int4

The HTML page needs nothing else: CSS inline, plots inline SVG, no scripts, no external URL. The Markdown
refers to its plots as PNG files in `<stem>_files/` beside it. Both lay out the same sections
(`temper.eval.sections`); every string from a result set is HTML-escaped, since model replies are untrusted.
"""
from __future__ import annotations

import argparse
import html
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from temper.errors import TemperError
from temper.eval.card import markdown_to_html, model_card
from temper.eval.resultset import label_of, load_results
from temper.eval.sections import SECTION_IDS, Card, Para, Plot, SampleGroup, Section, Table, build_sections

__all__ = ["SECTION_IDS", "load_results", "main", "model_card", "render_html", "render_markdown", "write_report"]

DEFAULT_TITLE = "temper evaluation report"

CSS = """
body{margin:0;color:#1f2328;background:#fff;line-height:1.5;
  font-family:system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:1100px;margin:0 auto;padding:24px 28px 64px}
h1{font-size:1.9em;margin:.3em 0 .1em}
h2{font-size:1.4em;border-bottom:1px solid #d0d7de;padding-bottom:.2em;margin-top:2.2em}
h3,h4,h5,h6{margin:1.2em 0 .4em}
nav{margin:.6em 0 1em;font-size:.92em}
nav a{margin-right:.9em;color:#0969da;text-decoration:none}
.sub{color:#57606a;margin:0}
table{border-collapse:collapse;margin:.8em 0;font-size:.9em;max-width:100%}
th,td{border:1px solid #d0d7de;padding:4px 9px;vertical-align:top;text-align:left}
th{background:#f6f8fa;font-weight:600}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.best{background:#dafbe1;font-weight:600}
.note{display:block;color:#57606a;font-weight:400;font-size:.82em}
p.missing{color:#7d4e00;background:#fff8c5;border:1px solid #eedc82;padding:8px 12px;border-radius:6px}
figure{margin:1em 0}
figure svg{max-width:100%;height:auto}
details{border:1px solid #d0d7de;border-radius:6px;padding:.4em .9em;margin:.6em 0}
summary{cursor:pointer;font-weight:600}
.sample{border-top:1px dashed #d0d7de;margin-top:.6em;padding-top:.4em}
.meta{color:#57606a;font-size:.85em}
.field{font-weight:600;font-size:.85em;margin-top:.3em}
pre{white-space:pre-wrap;overflow-wrap:anywhere;background:#f6f8fa;padding:8px 10px;border-radius:6px;
  font-size:.85em;margin:.2em 0}
code{background:#f6f8fa;padding:0 .25em;border-radius:4px;font-size:.9em}
.card{border:1px solid #d0d7de;border-radius:6px;padding:0 1.2em .6em}
"""


# HTML ----------------------------------------------------------------------------------------------------------

def _text(text: str) -> str:
    """Escape, then show `code` spans as code."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))


def _html_table(table: Table) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in table.header)
    rows = []
    for row in table.rows:
        cells = []
        for cell in row:
            classes = " ".join(c for c in ("num" if cell.is_num else "", "best" if cell.is_best else "") if c)
            text = html.escape(cell.text) + (" ★" if cell.is_best else "")
            note = f'<span class="note">{html.escape(cell.note)}</span>' if cell.note else ""
            cells.append(f'<td class="{classes}">{text}{note}</td>' if classes else f"<td>{text}{note}</td>")
        rows.append(f"<tr>{''.join(cells)}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _html_samples(group: SampleGroup) -> str:
    parts = [f"<details><summary>{html.escape(group.summary)}</summary>"]
    for sample in group.samples:
        fields = "".join(f'<div class="field">{html.escape(name)}</div><pre>{html.escape(text)}</pre>'
                         for name, text in sample.fields)
        meta = f'<div class="meta">{html.escape(sample.meta)}</div>' if sample.meta else ""
        parts.append(f'<div class="sample">{meta}{fields}</div>')
    return "".join(parts) + "</details>"


def _html_block(block) -> str:
    from temper.eval.plots import to_svg

    if isinstance(block, Para):
        return f'<p class="missing">{_text(block.text)}</p>' if block.is_missing else f"<p>{_text(block.text)}</p>"
    if isinstance(block, Table):
        return _html_table(block)
    if isinstance(block, Plot):
        return f'<figure role="img" aria-label="{html.escape(block.alt)}">{to_svg(block.figure)}</figure>'
    if isinstance(block, SampleGroup):
        return _html_samples(block)
    if isinstance(block, Card):
        return f'<div class="card">{markdown_to_html(block.markdown, heading_shift=2)}</div>'
    raise TypeError(f"unknown block {type(block).__name__}")


def _html(sections: list[Section], title: str, results: list[dict]) -> str:
    nav = "".join(f'<a href="#{s.id}">{html.escape(s.title)}</a>' for s in sections)
    body = "\n".join(f'<section id="{s.id}">\n<h2>{html.escape(s.title)}</h2>\n'
                     + "\n".join(_html_block(b) for b in s.blocks) + "\n</section>" for s in sections)
    created = sorted(str(r.get("created", ""))[:10] for r in results if r.get("created"))
    when = f" · measured {created[0]}" + (f" to {created[-1]}" if created[-1] != created[0] else "") if created else ""
    sub = f"{len(results)} result set{'s' if len(results) != 1 else ''}: {', '.join(map(label_of, results))}{when}"
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{html.escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n"
            f'<header><h1>{html.escape(title)}</h1><p class="sub">{html.escape(sub)}</p><nav>{nav}</nav></header>\n'
            f"{body}\n</main>\n</body>\n</html>\n")


def render_html(results: list[dict], title: str = DEFAULT_TITLE, card: str | None = None) -> str:
    """The report as one self-contained HTML page.

    Args:
        results: result sets (`load_results`), one column or point each, in this order.
        card: a model card in Markdown to show in the `model-card` section.
    """
    return _html(build_sections(results, card), title, results)


# Markdown ------------------------------------------------------------------------------------------------------

def _md_text(text: str) -> str:
    return html.escape(text, quote=False)


def _md_cell(text: str) -> str:
    return _md_text(text).replace("|", "\\|").replace("\n", " ")


def _md_table(table: Table) -> str:
    is_num = [sum(r[k].is_num for r in table.rows) * 2 > len(table.rows) for k in range(len(table.header))]
    lines = ["| " + " | ".join(_md_cell(h) for h in table.header) + " |",
             "|" + "|".join("---:" if n else "---" for n in is_num) + "|"]
    for row in table.rows:
        cells = []
        for cell in row:
            text = f"**{_md_cell(cell.text)}** ★" if cell.is_best else _md_cell(cell.text)
            cells.append(text + (f" ({_md_cell(cell.note)})" if cell.note else ""))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _fence(text: str) -> str:
    ticks = "`" * max(3, max((len(m) for m in re.findall(r"`+", text)), default=0) + 1)
    return f"{ticks}text\n{text}\n{ticks}"


def _md_samples(group: SampleGroup) -> str:
    parts = [f"#### {_md_text(group.summary)}"]
    for sample in group.samples:
        if sample.meta:
            parts.append(f"*{_md_text(sample.meta)}*")
        parts += [f"**{name}**\n\n{_fence(text)}" for name, text in sample.fields]
    return "\n\n".join(parts)


def _shift_headings(markdown: str, levels: int) -> str:
    lines, is_code = [], False
    for line in markdown.splitlines():
        is_code ^= line.startswith("```")
        lines.append("#" * levels + line if not is_code and re.match(r"#{1,6}\s", line) else line)
    return "\n".join(lines)


def _md_block(block, files_dir: str) -> str:
    if isinstance(block, Para):
        return f"> {_md_text(block.text)}" if block.is_missing else _md_text(block.text)
    if isinstance(block, Table):
        return _md_table(block)
    if isinstance(block, Plot):
        return f"![{block.alt}]({files_dir}/{block.name}.png)"
    if isinstance(block, SampleGroup):
        return _md_samples(block)
    if isinstance(block, Card):
        return _shift_headings(block.markdown.strip(), 2)
    raise TypeError(f"unknown block {type(block).__name__}")


def _markdown(sections: list[Section], title: str, results: list[dict], files_dir: str) -> str:
    count = f"{len(results)} result set{'s' if len(results) != 1 else ''}"
    parts = [f"# {_md_text(title)}", f"{count}: {_md_text(', '.join(map(label_of, results)))}."]
    for s in sections:
        parts.append(f"## {s.title}")
        parts += [_md_block(b, files_dir) for b in s.blocks]
    return "\n\n".join(parts) + "\n"


def render_markdown(results: list[dict], card: str | None = None, title: str = DEFAULT_TITLE,
                    files_dir: str = "report_files") -> str:
    """The report in Markdown; plots are referenced as `files_dir/<section>.png`, which `write_report` writes."""
    return _markdown(build_sections(results, card), title, results, files_dir)


# Files and CLI -------------------------------------------------------------------------------------------------

def write_report(results: list[dict], out_html: Path, out_md: Path | None = None, card_path: Path | None = None,
                 title: str = DEFAULT_TITLE, card_label: str | None = None) -> list[Path]:
    """Write the HTML report, and the Markdown one with its PNG plots in `<md stem>_files/`.

    Args:
        card_path: a model card (Markdown) to show; default the one `model_card(results, card_label)` writes.
    Returns:
        The files written.
    """
    from temper.eval.plots import to_png

    card = Path(card_path).read_text(encoding="utf-8") if card_path else model_card(results, card_label)
    sections = build_sections(results, card)
    out_html = Path(out_html)
    out_html.parent.mkdir(parents=True, exist_ok=True)
    out_html.write_text(_html(sections, title, results), encoding="utf-8")
    written = [out_html]
    if out_md is not None:
        out_md = Path(out_md)
        files_dir = out_md.parent / f"{out_md.stem}_files"
        files_dir.mkdir(parents=True, exist_ok=True)
        for block in (b for s in sections for b in s.blocks if isinstance(b, Plot)):
            to_png(block.figure, files_dir / f"{block.name}.png")
            written.append(files_dir / f"{block.name}.png")
        out_md.write_text(_markdown(sections, title, results, files_dir.name), encoding="utf-8")
        written.append(out_md)
    return written


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("results", nargs="+", metavar="RESULTS",
                   help="result JSON files of `temper eval`, or folders of them (read in order of creation)")
    p.add_argument("-o", "--output", default="report.html", help="the HTML page to write (default report.html)")
    p.add_argument("--markdown", default=None, metavar="MD", help="also write the report in Markdown, with its plots "
                                                                  "as PNG files in MD_STEM_files/")
    p.add_argument("--card", default=None, metavar="MODEL_CARD.md",
                   help="also write the model card (of --card-label) to this file; the report shows it either way")
    p.add_argument("--card-label", default=None, metavar="LABEL",
                   help="the result set the model card describes (default: the last one)")
    p.add_argument("--title", default=DEFAULT_TITLE, help="the page's title")


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("report", help="an HTML report, a Markdown report and a model card from `temper eval` results",
                       description=__doc__.split("\n\n")[0])
    _add_arguments(p)
    return p


def run(args: argparse.Namespace) -> int:
    try:
        results = load_results(args.results)
        card_path = None
        if args.card:
            card_path = Path(args.card)
            card_path.parent.mkdir(parents=True, exist_ok=True)
            card_path.write_text(model_card(results, args.card_label), encoding="utf-8")
        written = write_report(results, Path(args.output), Path(args.markdown) if args.markdown else None, card_path,
                               args.title, args.card_label)
    except (TemperError, OSError) as e:
        print(f"temper report: error: {e}", file=sys.stderr)
        return 1
    print(f"report: {written[0]} ({len(results)} result sets)")
    if args.markdown:
        print(f"Markdown: {written[-1]} (plots in {written[-1].stem}_files/)")
    if card_path:
        print(f"model card: {card_path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m temper.eval.report RESULTS... -o report.html`, the same as `temper report`."""
    parser = argparse.ArgumentParser(prog="temper report", description=__doc__.split("\n\n")[0])
    _add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
