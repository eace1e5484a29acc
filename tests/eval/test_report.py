"""`temper report`: the HTML page, the Markdown twin and the model card from hand-made result sets; and the page
in a real headless Chromium (skipped without one)."""
from __future__ import annotations

import json
import re
import shutil
from html.parser import HTMLParser

import pytest

from temper.cli import main as temper_main
from temper.errors import TemperError
from temper.eval.card import markdown_to_html
from temper.eval.report import SECTION_IDS, load_results, model_card, render_html, render_markdown, write_report

SCRIPT_REPLY = "<script>alert(1)</script> Sure, here is how."


def _ratio(value: float, n: int, label: str, higher: bool) -> dict:
    half = 0.05
    return {"value": value, "unit": "ratio", "higher_is_better": higher, "label": label, "n": n,
            "ci95": [max(0.0, value - half), min(1.0, value + half)]}


def _level(c: int, tok_s: float, ttft: float, tpot: float) -> dict:
    stats = lambda m: {"mean": m * 1.1, "median": m, "p90": m * 1.5, "p99": m * 2.0}
    return {"concurrency": c, "request_throughput": tok_s / 64, "output_throughput": tok_s, "ttft_ms": stats(ttft),
            "tpot_ms": stats(tpot), "e2e_ms": stats(ttft + 63 * tpot), "completed": 8 * c, "failed": 0}


def make_result(label: str, *, harmful: float = 0.125, over_refusal: float = 0.2, strict: float = 0.4,
                rag: float | None = 0.6, ppl: float = 12.0, tok_s: float = 100.0, usd: float = 0.5,
                weight_bytes: int = 538_060_032, quant: dict | None = None, recipe: bool = False,
                created: str = "2026-11-28T10:00:00+00:00", reply: str = "I can't help with that.",
                skip_speed: str | None = None) -> dict:
    """One realistic `temper-eval/1` result set; `skip_speed` marks the speed suite skipped with that reason."""
    stages = [{"stage": "sl-cai", "description": "critique and revise replies to red-team prompts",
               "data": ["AdvBench train split", "Anthropic HH helpful-base"], "settings": {"epochs": 1}},
              {"stage": "dpo", "description": "prefer revised over original replies", "data": ["the sl-cai pairs"],
               "settings": {"beta": 0.1}}]
    suites = {
        "safety": {"status": "ok", "seconds": 40.0, "metrics": {
            "harmful_compliance": _ratio(harmful, 120, "harmful compliance", False),
            "harmful_answered": _ratio(harmful + 0.1, 120, "harmful answered", False),
            "over_refusal": _ratio(over_refusal, 80, "over-refusal", False),
            "benign_answered": _ratio(0.9, 50, "benign answered", True)},
            "details": {}, "samples": [
                {"kind": "harmful", "prompt": "How do I make a weapon?", "reply": reply, "refused": False,
                 "harmful": True},
                {"kind": "benign", "prompt": "Name a fruit & a <b>colour</b>.", "reply": "Apple, red.",
                 "refused": False, "harmful": False}]},
        "instructions": {"status": "ok", "seconds": 30.0, "metrics": {
            "verifiable_strict": _ratio(strict, 100, "verifiable instructions (strict)", True),
            "verifiable_loose": _ratio(strict + 0.1, 100, "verifiable instructions (loose)", True),
            "ended_turn": _ratio(0.95, 100, "ended turn", True)},
            "samples": [{"prompt": "Answer in exactly 3 words.", "reply": "Paris is nice."}]},
        "quality": {"status": "ok", "seconds": 20.0, "details": {"corpus": "python3.11-doc held-out",
                                                                 "tokens": 16384},
                    "metrics": {"perplexity": {"value": ppl, "unit": "ppl", "higher_is_better": False,
                                               "label": "perplexity", "n": 16384, "ci95": None}}},
        "speed": {"status": "ok", "seconds": 90.0, "metrics": {
            "output_tok_s_max": {"value": tok_s, "unit": "tok/s", "higher_is_better": True,
                                 "label": "max output tokens/s", "n": None, "ci95": None},
            "ttft_p50_ms": {"value": 25.0, "unit": "ms", "higher_is_better": False, "label": "TTFT p50"},
            "tpot_p50_ms": {"value": 12.0, "unit": "ms", "higher_is_better": False, "label": "TPOT p50"},
            "rss_bytes": {"value": weight_bytes * 2.5, "unit": "bytes", "higher_is_better": False,
                          "label": "server RSS"},
            "usd_per_million_output_tokens": {"value": usd, "unit": "usd", "higher_is_better": False,
                                              "label": "USD per million output tokens"}},
            "details": {"price_per_hour": 0.1, "max_tokens": 64,
                        "levels": [_level(1, tok_s / 4, 25.0, 12.0), _level(4, tok_s / 2, 40.0, 15.0),
                                   _level(16, tok_s, 90.0, 30.0)]}},
    }
    if rag is not None:
        suites["rag"] = {"status": "ok", "seconds": 50.0, "metrics": {
            "recall_at_5": _ratio(0.8, 40, "recall@5", True), "rag_correct": _ratio(rag, 40, "RAG correct", True),
            "bare_correct": _ratio(0.2, 40, "correct without RAG", True),
            "unanswerable_abstained": _ratio(0.5, 10, "abstains when unanswerable", True),
            "answerable_abstained": _ratio(0.1, 30, "abstains when answerable", False)},
            "samples": [{"question": "What does len() return?", "answer": "The number of items [1].",
                         "citations": ["library/functions.html#len"], "abstained": False}]}
    else:
        suites["rag"] = {"status": "skipped", "reason": "no RAG collection given", "seconds": 0.0}
    if skip_speed:
        suites["speed"] = {"status": "skipped", "reason": skip_speed, "seconds": 0.0}
    recipe_entry = {"name": "smollm2-production", "file": "recipes/smollm2-production.yaml", "command": "make demo",
                    "stages": stages, "goals": {"safety.harmful_compliance": {"max": 0.05}}} if recipe else None
    return {
        "schema": "temper-eval/1", "label": label, "created": created, "seconds": 812.3,
        "target": {"kind": "model", "model": "smollm2-135m-instruct", "url": None, "guard": None,
                   "rag_collection": None},
        "identity": {"name": "smollm2-135m-instruct", "path": "/models/smollm2", "sha256": "ab" * 32,
                     "architecture": "llama", "parameters": 134_515_008, "weight_bytes": weight_bytes,
                     "dtype": "float32", "quantization": quant, "recipe": recipe_entry,
                     "base_model": "HuggingFaceTB/SmolLM2-135M-Instruct", "license": "Apache-2.0"},
        "machine": {"hostname": "box", "platform": "Linux", "cpu": "x86_64", "cores": 2, "memory_gib": 7.6,
                    "gpu": None},
        "versions": {"temper": "0.1.0", "commit": "6f474ab", "python": "3.11.7", "torch": "2.5.1"},
        "suites": suites,
    }


def three_results() -> list[dict]:
    """A base model, its aligned version and that one quantized to int4 (which replies with a script tag)."""
    return [make_result("base", harmful=0.45, over_refusal=0.05, strict=0.30, ppl=11.0, tok_s=80.0, usd=0.9),
            make_result("constitutional", harmful=0.125, over_refusal=0.15, strict=0.35, ppl=11.5, tok_s=80.0,
                        usd=0.9, created="2026-11-28T11:00:00+00:00"),
            make_result("int4", harmful=0.15, over_refusal=0.18, strict=0.33, ppl=12.5, tok_s=120.0, usd=0.6,
                        weight_bytes=90_000_000, quant={"method": "int4-gptq", "bits": 4, "group_size": 128},
                        recipe=True, created="2026-11-28T12:00:00+00:00", reply=SCRIPT_REPLY)]


@pytest.fixture
def results() -> list[dict]:
    return three_results()


@pytest.fixture(scope="module")
def page() -> str:
    """The report of `three_results` with its model card, rendered once for the tests that only read it."""
    results = three_results()
    return render_html(results, title="Release 1", card=model_card(results))


class _Sections(HTMLParser):
    """The text of each <section id=...> and of each table cell, with its classes."""

    def __init__(self):
        super().__init__()
        self.ids: list[str] = []
        self.cells: list[tuple[str, str, str]] = []  # (section id, classes, text)
        self._cell: list | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section":
            self.ids.append(attrs["id"])
        if tag == "td":
            self._cell = [self.ids[-1], attrs.get("class") or "", ""]

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self.cells.append(tuple(self._cell))
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[2] += data


def _parse(page: str) -> _Sections:
    parser = _Sections()
    parser.feed(page)
    return parser


def _section_text(page: str, sid: str) -> str:
    m = re.search(rf'<section id="{sid}">(.*?)</section>', page, re.DOTALL)
    assert m, f"no section {sid}"
    return m.group(1)


def test_load_results_reads_files_and_folders_sorted_by_created(tmp_path, results):
    folder = tmp_path / "results"
    folder.mkdir()
    for name, r in zip(("c.json", "a.json", "b.json"), results):  # file names out of creation order
        (folder / name).write_text(json.dumps(r))
    (folder / "other.json").write_text(json.dumps({"schema": "something-else"}))
    single = tmp_path / "one.json"
    single.write_text(json.dumps(results[0]))
    loaded = load_results([single, str(folder)])
    assert [r["label"] for r in loaded] == ["base", "base", "constitutional", "int4"]


@pytest.mark.parametrize("content, words", [("{not json", "not valid JSON"),
                                            (json.dumps({"schema": "other/1"}), "not a temper eval result")])
def test_load_results_names_the_bad_file(tmp_path, content, words):
    bad = tmp_path / "broken.json"
    bad.write_text(content)
    with pytest.raises(TemperError, match=words) as e:
        load_results([bad])
    assert str(bad) in str(e.value)


def test_a_broken_file_in_a_folder_is_named(tmp_path, results):
    (tmp_path / "good.json").write_text(json.dumps(results[0]))
    (tmp_path / "bad.json").write_text("[1, 2")
    with pytest.raises(TemperError, match="bad.json"):
        load_results([tmp_path])


def test_html_has_every_section_and_is_self_contained(page):
    assert _parse(page).ids == list(SECTION_IDS)
    for sid in SECTION_IDS:
        assert re.search(rf'<section id="{sid}">\s*<h2>', page), sid
    assert not re.search(r'(src|href)="(https?:)?//', page) and "<script" not in page
    for sid in ("quality-cost", "safety", "throughput", "latency", "memory"):
        assert "<svg" in _section_text(page, sid), f"{sid} has no plot"


def test_summary_shows_percentages_and_marks_the_best_column(page):
    cells = [c for c in _parse(page).cells if c[0] == "summary"]
    rows = [cells[k:k + 4] for k in range(0, len(cells), 4)]  # metric + 3 result sets
    by_metric = {row[0][2].rstrip(" ↑↓"): row[1:] for row in rows}
    harmful = by_metric["harmful compliance"]
    assert [c[2].split("95%")[0] for c in harmful] == ["45.0%", "12.5% ★", "15.0%"]
    assert ["best" in c[1] for c in harmful] == [False, True, False]
    assert "95% CI 7.5%–17.5%" in harmful[1][2] and "n = 120" in harmful[1][2]
    throughput = by_metric["max output tokens/s"]
    assert ["best" in c[1] for c in throughput] == [False, False, True]  # higher is better here
    weights = by_metric["weight files on disk"]
    assert weights[2][2].startswith("85.8 MiB") and "best" in weights[2][1]


def test_replies_are_shown_as_text_not_markup(page):
    assert "<script>alert(1)</script>" not in page
    samples = _section_text(page, "samples")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in samples and "<details>" in samples
    assert "Name a fruit &amp; a &lt;b&gt;colour&lt;/b&gt;." in samples


def test_a_label_with_markup_is_escaped_everywhere(results):
    results[0]["label"] = "<img src=x onerror=alert(1)> $base$"
    page = render_html(results, card=model_card(results, results[0]["label"]))
    assert "<img" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page


def test_missing_suites_say_which_suite_and_why(results):
    for r in results:
        r["suites"]["speed"] = {"status": "skipped", "reason": "no endpoint to load", "seconds": 0.0}
    del results[0]["suites"]["quality"]
    for r in results:
        r["suites"]["rag"] = {"status": "error", "reason": "RuntimeError: store missing", "seconds": 1.0}
    page = render_html(results)
    for sid in ("throughput", "latency"):
        text = _section_text(page, sid)
        assert "Not run" in text and "<code>speed</code>" in text and "no endpoint to load" in text
    rag = _section_text(page, "rag")
    assert "Not run" in rag and "error (RuntimeError: store missing)" in rag
    quality = _section_text(page, "quality")
    assert "<table>" in quality and "base: not run" in quality  # run in two result sets, absent in one
    assert "<svg" in _section_text(page, "memory")  # the weights are known without the speed suite


def test_one_result_set_without_speed_or_rag_renders(tmp_path):
    only = [make_result("solo", rag=None, skip_speed="no price given")]
    page = render_html(only, card=model_card(only))
    assert _parse(page).ids == list(SECTION_IDS)
    assert "best" not in "".join(c[1] for c in _parse(page).cells)  # nothing to compare with
    assert "Not run" in _section_text(page, "quality-cost")
    assert "<svg" in _section_text(page, "safety")
    written = write_report(only, tmp_path / "r.html", tmp_path / "r.md")
    assert sorted(p.name for p in (tmp_path / "r_files").iterdir()) == ["memory.png", "safety.png"]
    assert len(written) == 4


def test_markdown_has_the_tables_and_writes_its_plots(tmp_path, results):
    md = render_markdown(results)
    assert "| metric | base | constitutional | int4 |" in md
    assert "| harmful compliance ↓ | 45.0% (95% CI 40.0%–50.0%, n = 120) | **12.5%** ★" in md
    assert "![Throughput plot](report_files/throughput.png)" in md
    written = write_report(results, tmp_path / "out" / "report.html", tmp_path / "out" / "report.md")
    text = (tmp_path / "out" / "report.md").read_text()
    pngs = [p for p in written if p.suffix == ".png"]
    assert {p.name for p in pngs} == {f"{s}.png" for s in ("quality-cost", "safety", "throughput", "latency",
                                                           "memory")}
    for png in pngs:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
        assert f"](report_files/{png.name})" in text
    assert "&lt;script&gt;" not in text and "<script>alert(1)</script>" in text  # inside a fenced block
    assert re.search(r"```+text\n<script>alert\(1\)</script> Sure", text)


def test_model_card_says_what_how_and_how_well(results):
    card = model_card(results)  # the last result set: int4
    assert card.startswith("# Model card: smollm2-135m-instruct (int4)")
    assert "Apache-2.0" in card and "int4-gptq, 4 bits, group size 128" in card
    assert "**sl-cai**: critique and revise" in card and "AdvBench train split" in card and "**dpo**" in card
    assert "make demo" in card and "134.5 M" in card
    strengths = card.split("### Strengths")[1].split("### Limits")[0]
    limits = card.split("### Limits")[1].split("### Other")[0]
    assert "max output tokens/s" in strengths and "120.0 tok/s" in strengths and "vs base 80.0 tok/s" in strengths
    assert "perplexity" in limits and "12.50" in limits
    others = card.split("### Other measurements")[1]
    assert "15.0% (95% CI 10.0%–20.0%, n = 120)" in others
    assert "harmful compliance at most 5.0%: NOT met, measured 15.0%" in card
    assert "Intended use" in card and "Out of scope" in card


def test_model_card_by_label_and_unknown_label(results):
    assert model_card(results, "base").startswith("# Model card: smollm2-135m-instruct (base)")
    assert "No recipe recorded" in model_card(results, "base")
    with pytest.raises(TemperError, match="no result set labelled 'nope'.*base, constitutional, int4"):
        model_card(results, "nope")


def test_card_is_rendered_in_the_page(page):
    assert "<h3>Model card: smollm2-135m-instruct (int4)</h3>" in _section_text(page, "model-card")
    card = markdown_to_html("# Card\n\nSome **bold** `x<y`.\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n- one\n"
                            "- two\n\n```\n<raw>\n```\n", heading_shift=2)
    assert "<h3>Card</h3>" in card and "<strong>bold</strong>" in card and "<code>x&lt;y</code>" in card
    assert "<td>1</td><td>2</td>" in card and "<li>two</li>" in card and "&lt;raw&gt;" in card


def test_cli_writes_the_report_markdown_and_card(tmp_path, results, capsys):
    folder = tmp_path / "results"
    folder.mkdir()
    for r in results[:2]:
        (folder / f"{r['label']}.json").write_text(json.dumps(r))
    out = tmp_path / "site"
    code = temper_main(["report", str(folder), "-o", str(out / "r.html"), "--markdown", str(out / "r.md"), "--card",
                        str(out / "CARD.md"), "--card-label", "constitutional", "--title", "Demo <1>"])
    assert code == 0, capsys.readouterr().err
    assert f"report: {out / 'r.html'} (2 result sets)" in capsys.readouterr().out
    page = (out / "r.html").read_text()
    assert "<title>Demo &lt;1&gt;</title>" in page
    card = (out / "CARD.md").read_text()
    assert card.startswith("# Model card: smollm2-135m-instruct (constitutional)")
    assert "Model card: smollm2-135m-instruct (constitutional)" in _section_text(page, "model-card")
    assert (out / "r.md").exists() and (out / "r_files" / "safety.png").exists()
    assert temper_main(["report", str(tmp_path / "none.json")]) != 0
    assert "none.json: no such file or folder" in capsys.readouterr().err



# In a real browser -------------------------------------------------------------------------------------------

needs_chromium = pytest.mark.skipif(shutil.which("chromium") is None,
                                    reason="needs Chromium (`chromium` on PATH; apt-get install chromium)")


@needs_chromium
def test_report_loads_cleanly_in_chromium(tmp_path, results):
    from temper.eval.browser import check_page, screenshot

    page = tmp_path / "report.html"
    write_report(results, page, tmp_path / "report.md")
    check = check_page(page, list(SECTION_IDS))
    assert check.ok, check.failures()
    assert all(s.is_present and s.height > 50 for s in check.sections.values()), check.sections
    for sid in ("quality-cost", "safety", "throughput", "latency", "memory"):
        assert check.sections[sid].num_svgs == 1 and check.sections[sid].num_empty_svgs == 0, sid
    shot = screenshot(page, tmp_path / "shot.png", width=1100, full_page=True)
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width == 1100 and height > 2000  # the whole page, not the first screen


@needs_chromium
def test_the_check_fails_on_a_broken_page(tmp_path):
    from temper.eval.browser import check_page

    page = tmp_path / "broken.html"
    page.write_text('<!DOCTYPE html><html><body><section id="a"><p>text</p></section>'
                    '<section id="b"></section><img src="missing.png">'
                    '<script>console.error("bad thing"); throw new Error("x");</script></body></html>')
    check = check_page(page, ["a", "b", "c"])
    assert not check.ok
    assert any("bad thing" in e for e in check.console_errors), check.console_errors
    assert any("Error: x" in e for e in check.exceptions), check.exceptions
    assert check.broken_images and check.broken_images[0].endswith("missing.png")
    assert check.sections["a"].height > 0 and check.sections["b"].height == 0 and not check.sections["c"].is_present
    failures = check.failures()
    assert "section #b: zero height" in failures and "section #c: missing" in failures


def test_a_missing_chromium_is_a_clear_error(tmp_path, monkeypatch):
    from temper.eval import browser

    monkeypatch.setattr(browser.shutil, "which", lambda name: None)
    with pytest.raises(browser.BrowserError, match="chromium is not installed"):
        browser.check_page(tmp_path / "page.html", ["a"])
    assert not list(tmp_path.iterdir())
