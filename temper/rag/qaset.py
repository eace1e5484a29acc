"""QA sets for `temper rag eval`: questions with reference answers and the evidence that supports them.

One JSON object per line:
    {"id": "json-001", "question": "...", "answer": "json.dumps()", "accept": ["dumps"],
     "source": "library/json.html", "evidence": "a verbatim phrase of the page", "answerable": true}
Unanswerable questions have "answerable": false and null answer, source and evidence.

`source` is relative to the corpus root (for the packaged Python docs set: /usr/share/doc/python3.11/html), and
`evidence` is a phrase of that page's visible text: a retrieved chunk is relevant when it comes from the source
page and contains the evidence (compared as lowercase word sequences, so markup and line breaks don't matter).

One evidence phrase per question misses the other places a documentation set states the same fact (a signature
showing the default, a HOWTO repeating a reference page). Judged passages fill that in, the way TREC builds its
relevance judgments: the top 10 chunks of several retrieval runs were pooled for every question, each pooled chunk
that mentions the reference answer was judged by a reader (does this passage alone answer the question, in
agreement with the reference answer?), and each relevant one is recorded by a verbatim phrase of its page:
    {"id": "lib-012", "source": "howto/regex.html", "evidence": "Makes the '.' special character match any ..."}
(python_docs_qrels.jsonl beside the QA set). A chunk is relevant when it holds the item's own evidence or one of
its judged passages on their page; `strict` relevance counts the item's own evidence only. Chunks that were never
pooled count as not relevant, so a new retriever is, if anything, underrated (judge its new top chunks to fix).
"""
from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from temper.errors import TemperError

PYTHON_DOCS_ROOT = Path("/usr/share/doc/python3.11/html")
_WORD = re.compile(r"[a-z0-9_]+")
_TAG = re.compile(r"<[^>]+>")
_SKIP = re.compile(r"<(script|style)\b.*?</\1>", re.DOTALL | re.IGNORECASE)


class QASetError(TemperError):
    """A QA file is malformed."""


@dataclass
class QAItem:
    id: str
    question: str
    answer: str | None
    source: str | None
    evidence: str | None
    answerable: bool = True
    accept: list[str] = field(default_factory=list)
    context: str | None = None  # set for context-given items (evals' unsolvable_questions)
    judged: list[tuple[str, str]] = field(default_factory=list)  # more relevant passages: (source, evidence)


def words(text: str) -> str:
    """Lowercase word sequence joined by single spaces: the form evidence and chunks are compared in."""
    return " ".join(_WORD.findall(text.lower()))


def html_visible_text(raw: str) -> str:
    return html.unescape(_TAG.sub(" ", _SKIP.sub(" ", raw)))


def load_qa(path: str | Path | None = None, qrels: str | Path | bool | None = None) -> list[QAItem]:
    """Read a QA jsonl file (None: the packaged Python 3.11 docs set) and attach its judged passages.

    qrels: a judged-passages file; None for the packaged one with the packaged set (none with another set); False
    for none.
    """
    items = _read_qa(path)
    if qrels is None:
        qrels = path is None
    if qrels is True:
        text = resources.files("temper.rag.data").joinpath("python_docs_qrels.jsonl").read_text()
        _attach_judged(items, text, "python_docs_qrels.jsonl")
    elif qrels:
        _attach_judged(items, Path(qrels).read_text(), str(qrels))
    return items


def _attach_judged(items: list[QAItem], text: str, where: str) -> None:
    by_id = {it.id: it for it in items}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
            qid, source, evidence = str(raw["id"]), str(raw["source"]), str(raw["evidence"])
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise QASetError(f"{where}:{n}: not a judged passage ({e}); need id, source and evidence") from None
        item = by_id.get(qid)
        if item is not None:  # judgments for items outside this (limited or edited) set are ignored
            if not item.answerable:
                raise QASetError(f"{where}:{n}: {qid} is unanswerable and cannot have a relevant passage")
            item.judged.append((source, evidence))


def _read_qa(path: str | Path | None) -> list[QAItem]:
    if path is None:
        text = resources.files("temper.rag.data").joinpath("python_docs_qa.jsonl").read_text()
        where = "python_docs_qa.jsonl"
    else:
        text, where = Path(path).read_text(), str(path)
    items, seen = [], set()
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
            item = QAItem(id=str(raw["id"]), question=raw["question"], answer=raw.get("answer"),
                          source=raw.get("source"), evidence=raw.get("evidence"),
                          answerable=bool(raw.get("answerable", True)), accept=list(raw.get("accept") or []),
                          context=raw.get("context"))
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise QASetError(f"{where}:{n}: not a QA item ({e}); see temper/rag/qaset.py for the format") from None
        if item.id in seen:
            raise QASetError(f"{where}:{n}: duplicate id {item.id!r}")
        seen.add(item.id)
        if item.answerable and not (item.answer and item.source and item.evidence):
            raise QASetError(f"{where}:{n}: an answerable item needs answer, source and evidence")
        items.append(item)
    return items


def check_evidence(items: list[QAItem], root: Path = PYTHON_DOCS_ROOT) -> list[str]:
    """Problems found: missing source pages, evidence (own or judged) not on its page. Empty when consistent."""
    problems, pages = [], {}
    for it in items:
        if not it.answerable:
            continue
        for source, evidence in [(it.source, it.evidence), *it.judged]:
            page = root / source
            if source not in pages:
                pages[source] = words(html_visible_text(page.read_text(errors="replace"))) if page.is_file() else None
            if pages[source] is None:
                problems.append(f"{it.id}: source {source} does not exist under {root}")
            elif words(evidence) not in pages[source]:
                problems.append(f"{it.id}: evidence {evidence!r} is not on {source}")
    return problems


if __name__ == "__main__":  # python -m temper.rag.qaset FILE: check a QA file against the docs
    import sys

    qa = load_qa(sys.argv[1] if len(sys.argv) > 1 else None)
    issues = check_evidence(qa)
    print("\n".join(issues) or f"{len(qa)} items, {sum(q.answerable for q in qa)} answerable, "
          f"{sum(len(q.judged) for q in qa)} judged passages: all evidence found")
    sys.exit(1 if issues else 0)
