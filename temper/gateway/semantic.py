"""The semantic cache's key and match decision: embedding similarity above a threshold, then a key-term guard.

A sentence embedder (all-MiniLM-L6-v2) is close to a bag of words: "convert a list to a string" and "convert a
string to a list" score 0.996, "plants that are toxic to cats" and "... not toxic to cats" 0.98, "capital of France"
and "capital of Germany" far above most paraphrase pairs. No threshold separates those from real paraphrases, so a
hit also needs the two texts to agree on their key terms: the few tokens that decide the answer (numbers, quoted
strings, names, programming languages, units and their direction, negation, opposite words). Each rule is a small
pure function in `GUARD_RULES` that says when two texts disagree; a hit needs none of them to fire. The rules only
ever refuse a hit, so their cost is missed paraphrases (a typo in a name, "2" vs "a couple"), never a wrong answer.

`benchmarks/semantic_cache.py` measures hit and false-hit rates per threshold on benchmarks/data/semantic_pairs.jsonl;
`DEFAULT_THRESHOLD` was chosen on its dev split only.
"""
from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

# NOTE: chosen on the dev split by benchmarks/semantic_cache.py (similarities of `embed_key` vectors): the threshold
# with the highest guarded hit rate whose false-hit rate is at most 1% (dev: 0.857 hits, 1/145 false hits).
DEFAULT_THRESHOLD = 0.81

_QUOTED = re.compile(r"\"([^\"]+)\"|“([^”]+)”|‘([^’]+)’|(?<![\w])'([^']+)'(?!\w)")
_SENTENCE_END = re.compile(r"(?<=[.!?:;])\s+|\s+[-–—]\s+")
_TOKEN = re.compile(r"[$€£]|[\w°][\w+#'’./^%-]*")
_TRAILING = ".,'’-:;!?/%^"
_NUMBER = re.compile(r"(?<![A-Za-z])(\d+(?:,\d{3})*(?:\.\d+)?)(st|nd|rd|th)?(?![A-Za-z]{2})")

# Generic function words: neither content for the direction rule nor evidence of a name.
_FUNCTION_WORDS = frozenset("""
a an the my your his her its our their this that these those some any all each every i me you we he she it they
them is are was were be been being am do does did have has had can could should would will shall may might must
how what which who whom whose why when where there here please just also very really so too than then
""".split())
# Words after which the direction windows stop: the phrase around "to"/"from" ends there.
_BOUNDARY_WORDS = frozenset("from to into in on for with at by and or via using of as".split())
_PRONOUNS_NOT_NAMES = frozenset({"i", "i'm", "i'd", "i've", "i'll", "ok"})

_NEGATIONS = frozenset("not no never none nothing nobody nowhere neither nor without cannot dont doesnt didnt isnt "
                       "arent wasnt werent cant wont shouldnt wouldnt couldnt havent hasnt".split())
_NUMBER_WORDS = {w: str(i) for i, w in enumerate(
    "zero _ two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split()) if w != "_"}  # "one" is left out: it reads as "a" ("in one cup")
_NUMBER_WORDS |= {"thirty": "30", "forty": "40", "fifty": "50", "sixty": "60", "seventy": "70", "eighty": "80",
                  "ninety": "90", "hundred": "100", "thousand": "1000", "million": "1000000", "billion": "1000000000"}
_ORDINAL_WORDS = {w: f"#{i}" for i, w in enumerate(
    "first second third fourth fifth sixth seventh eighth ninth tenth".split(), start=1)}

_LANGUAGES = {"python": "python", "javascript": "javascript", "js": "javascript", "typescript": "typescript",
              "java": "java", "kotlin": "kotlin", "swift": "swift", "rust": "rust", "golang": "go", "ruby": "ruby",
              "php": "php", "perl": "perl", "scala": "scala", "haskell": "haskell", "lua": "lua", "dart": "dart",
              "elixir": "elixir", "clojure": "clojure", "matlab": "matlab", "fortran": "fortran", "cobol": "cobol",
              "bash": "bash", "powershell": "powershell", "sql": "sql", "c++": "c++", "cpp": "c++", "c#": "c#",
              "csharp": "c#", "objective-c": "objective-c", "html": "html", "css": "css", "node": "node",
              "node.js": "node", "nodejs": "node"}
# One-letter or common-word names count as languages only right after these words ("in C", "using R", "learn Go").
_LANGUAGE_CUES = frozenset("in using with learn for from of".split())
_AMBIGUOUS_LANGUAGES = {"C": "c", "R": "r", "Go": "go"}

_UNIT_GROUPS = {
    "mm": "mm millimeter millimeters millimetre millimetres", "cm": "cm centimeter centimeters centimetre centimetres",
    "meter": "meter meters metre metres", "km": "km kilometer kilometers kilometre kilometres",
    "inch": "inch inches", "foot": "foot feet ft", "yard": "yard yards yd", "mile": "mile miles mi",
    "mcg": "mcg microgram micrograms", "mg": "mg milligram milligrams", "gram": "g gram grams gramme grammes",
    "kg": "kg kilo kilos kilogram kilograms", "pound": "lb lbs pound pounds gbp £", "ounce": "oz ounce ounces",
    "ton": "ton tons tonne tonnes", "ml": "ml milliliter milliliters millilitre millilitres",
    "liter": "liter liters litre litres", "cup": "cup cups", "tbsp": "tbsp tablespoon tablespoons",
    "tsp": "tsp teaspoon teaspoons", "gallon": "gallon gallons", "quart": "quart quarts", "pint": "pint pints",
    "celsius": "celsius °c", "fahrenheit": "fahrenheit °f", "kelvin": "kelvin",
    "second": "seconds sec secs", "minute": "minute minutes mins", "hour": "hour hours hr hrs", "day": "day days",
    "week": "week weeks", "month": "month months", "year": "year years",
    "byte": "byte bytes", "kb": "kb kilobyte kilobytes", "mb": "mb megabyte megabytes",
    "gb": "gb gigabyte gigabytes", "tb": "tb terabyte terabytes", "mph": "mph", "kph": "kph km/h",
    "acre": "acre acres", "hectare": "hectare hectares", "calorie": "calorie calories kcal",
    "dollar": "dollar dollars usd bucks $", "euro": "euro euros eur €", "yen": "yen jpy",
}
_UNITS = {variant: unit for unit, variants in _UNIT_GROUPS.items() for variant in variants.split()}
_TEMPERATURE_LETTERS = {"c": "celsius", "f": "fahrenheit"}
_TEMPERATURE_CONTEXT = re.compile(r"°|\bdegrees?\b|\bcelsius\b|\bfahrenheit\b|\bkelvin\b|\btemperature\b"
                                  r"|\d\s*[CF]\b|\b[CF]\s+(?:to|into|in)\s+[CF]\b", re.IGNORECASE)
_SOURCE_CUES = frozenset("a an one per each every".split())
_TARGET_CUES = frozenset("to into in".split())

# Opposite words that flip the answer of an otherwise identical question: extremes, order, and reversing actions.
_OPPOSITES = [("max", "min"), ("maximum", "minimum"), ("maximize", "minimize"), ("largest", "smallest"),
              ("biggest", "smallest"), ("highest", "lowest"), ("high", "low"), ("higher", "lower"),
              ("hottest", "coldest"), ("hot", "cold"), ("longest", "shortest"), ("long", "short"),
              ("fastest", "slowest"), ("faster", "slower"), ("fast", "slow"), ("oldest", "youngest"),
              ("oldest", "newest"), ("most", "least"), ("more", "less"), ("best", "worst"), ("better", "worse"),
              ("ascending", "descending"), ("start", "stop"), ("open", "close"), ("push", "pull"), ("add", "remove"),
              ("add", "subtract"), ("multiply", "divide"), ("plus", "minus"), ("raise", "lower"), ("gain", "lose"),
              ("win", "lose"), ("buy", "sell"), ("accept", "decline"), ("accept", "reject"), ("up", "down"),
              ("before", "after"), ("above", "below"), ("positive", "negative"), ("true", "false"),
              ("early", "late"), ("cheap", "expensive"), ("strong", "weak"), ("left", "right"),
              ("north", "south"), ("east", "west"), ("enter", "exit"), ("input", "output"),
              ("in", "out"), ("on", "off")]  # particles of phrasal verbs: log in/out, zoom in/out, turn on/off
# Prefix pairs that make opposites of the same stem: install/uninstall, enable/disable, import/export, ...
_OPPOSING_PREFIXES = [("", "un"), ("", "dis"), ("", "non"), ("", "anti"), ("in", "de"), ("in", "ex"), ("im", "ex"),
                      ("en", "de"), ("en", "dis"), ("up", "down"), ("upper", "lower"), ("over", "under"),
                      ("pre", "post")]
_MIN_STEM = 3


def normalize_text(text: str) -> str:
    """The exact-match cache key: NFKC, case-folded, whitespace collapsed, trailing ?!. dropped."""
    text = " ".join(unicodedata.normalize("NFKC", text).casefold().split())
    return text.rstrip("?!. ")


def embed_key(embedder, texts: Sequence[str]) -> torch.Tensor:
    """L2-normalized embeddings of the normalized texts, [n, dim]; their dot products are cosine similarities."""
    return embedder.embed([normalize_text(t) for t in texts])


@dataclass(frozen=True, slots=True)
class KeyTerms:
    """What in a text decides its answer; computed once per text (a cache entry keeps its own)."""

    flat: str  # case-folded words, punctuation dropped, one space apart
    words: frozenset[str]  # case-folded tokens, plus their de-hyphenated forms
    numbers: frozenset[str]  # "15", "3.12", "#2" for ordinals ("second", "2nd")
    quoted: tuple[str, ...]  # normalized contents of quotes
    names: frozenset[str]  # capitalized (not sentence-initial), camelCase, ALLCAPS or code-like tokens
    languages: frozenset[str]
    units: frozenset[tuple[str, str]]  # (unit, "source" | "target")
    is_negated: bool
    links: tuple[tuple[frozenset[str], frozenset[str]], ...]  # (from side, to side) of each "X to/in Y"


def _norm_word(token: str) -> str:
    word = token.casefold().replace("’", "'")
    word = word.removesuffix("'s")
    return re.sub(r"[^\w+#]", "", word)


def _flatten(text: str) -> str:
    return " ".join(re.sub(r"[^\w+#]+", " ", text.casefold()).split())


def _stem(word: str) -> str:
    """Plural folding only: enough to match "inch"/"inches", "lists"/"list" in the direction rule."""
    if len(word) > 4 and word.endswith(("ches", "shes", "xes", "sses")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def _sentences(text: str) -> list[list[str]]:
    out = []
    for sentence in _SENTENCE_END.split(text):
        tokens = [t.rstrip(_TRAILING) if not t.endswith(("++", "#")) else t for t in _TOKEN.findall(sentence)]
        out.append([t for t in tokens if t])
    return out


def _is_name(token: str, initial: bool) -> bool:
    if len(token) < 2 or token.casefold() in _PRONOUNS_NOT_NAMES or not token[0].isalpha():
        return False
    letters = [c for c in token if c.isalpha()]
    if any(c.isupper() for c in token[1:]) and any(c.islower() for c in letters):
        return True  # camelCase / iPhone / GitHub
    if len(letters) >= 2 and all(c.isupper() for c in letters):
        return True  # API, HTTP, CSS
    if re.search(r"\w[._]\w|\(\)$", token):
        return True  # os.path, node.js, snake_case, f()
    return token[0].isupper() and not initial


def _numbers(text: str, words: list[str]) -> set[str]:
    found = {m.group(1).replace(",", "") if not m.group(2) else f"#{m.group(1)}" for m in _NUMBER.finditer(text)}
    for i, w in enumerate(words):
        if w in _NUMBER_WORDS:
            found.add(_NUMBER_WORDS[w])
        elif w in _ORDINAL_WORDS and (w != "second" or (i > 0 and words[i - 1] == "the")):
            found.add(_ORDINAL_WORDS[w])  # "second" is a time unit unless "the second ..."
    return found


def _languages(tokens: list[str], has_temperature: bool) -> set[str]:
    found = {_LANGUAGES[t.casefold()] for t in tokens if t.casefold() in _LANGUAGES}
    for prev, tok in zip(tokens, tokens[1:]):
        if tok in _AMBIGUOUS_LANGUAGES and prev.casefold() in _LANGUAGE_CUES:
            if not (has_temperature and tok == "C"):
                found.add(_AMBIGUOUS_LANGUAGES[tok])
    return found


def _unit_role(words: list[str], i: int) -> str:
    """A unit is a target after "how many/much" or "to/in/into"; a source after a number or "a/per"."""
    prev = [w for w in words[max(i - 3, 0):i] if w not in ("degree", "degrees", "fluid", "square", "cubic")]
    if prev and (prev[-1] in _SOURCE_CUES or _NUMBER.fullmatch(prev[-1]) or prev[-1] in _NUMBER_WORDS):
        return "source"
    if "how" in words[max(i - 4, 0):i] and any(w in ("many", "much") for w in words[max(i - 3, 0):i]):
        return "target"
    return "target" if prev and prev[-1] in _TARGET_CUES else "source"


def _units(text: str, words: list[str]) -> set[tuple[str, str]]:
    has_temperature = bool(_TEMPERATURE_CONTEXT.search(text))
    parts = [p for w in words for p in (w.split("-") if w not in _UNITS else [w]) if p]
    found = set()
    for i, w in enumerate(parts):
        unit = _UNITS.get(w) or (_TEMPERATURE_LETTERS.get(w) if has_temperature else None)
        if unit:
            found.add((unit, _unit_role(parts, i)))
    return found


def _window(words: list[str], start: int, step: int, size: int = 2) -> set[str]:
    """Up to `size` content words from `start` in direction `step`, stopping at a boundary word."""
    out, i = set(), start
    while 0 <= i < len(words) and len(out) < size:
        w = words[i]
        if w in _BOUNDARY_WORDS:
            break
        if w not in _FUNCTION_WORDS:
            out.add(_stem(w))
        i += step
    return out


def _links(sentences: list[list[str]]) -> list[tuple[frozenset[str], frozenset[str]]]:
    """(source words, target words) around each "to"/"into"/"in", the words after an earlier "from" as sources."""
    links = []
    for words in sentences:
        origin: set[str] = set()
        for i, w in enumerate(words):
            if w == "from":
                origin = _window(words, i + 1, 1)
            elif w in ("to", "into", "in"):
                left, right = _window(words, i - 1, -1) | origin, _window(words, i + 1, 1)
                if left and right:
                    links.append((frozenset(left - right), frozenset(right - left)))
    return links


def key_terms(text: str) -> KeyTerms:
    """The key terms of a (raw, not normalized) text: case and quotes carry information here."""
    text = unicodedata.normalize("NFKC", text)
    quoted = tuple(" ".join(q.casefold().strip(" .?!").split()) for m in _QUOTED.finditer(text) for q in m.groups()
                   if q)
    unquoted = _QUOTED.sub(" ", text)
    sentences = _sentences(unquoted)
    tokens = [t for s in sentences for t in s]
    words = [t.casefold().replace("’", "'") for t in tokens]
    names = {_norm_word(t) for s in sentences for j, t in enumerate(s) if _is_name(t, initial=j == 0)}
    normed = {_norm_word(t) for t in tokens}
    return KeyTerms(
        flat=_flatten(text), words=frozenset(normed | {_stem(w) for w in normed} | set(words)),
        numbers=frozenset(_numbers(text, words)), quoted=quoted, names=frozenset(names),
        languages=frozenset(_languages(tokens, bool(_TEMPERATURE_CONTEXT.search(unquoted)))),
        units=frozenset(_units(unquoted, words)),
        is_negated=any(w in _NEGATIONS or w.endswith("n't") for w in words),
        links=tuple(_links([[t.casefold() for t in s] for s in sentences])))


# ---- the guard's rules: each returns True when the two texts disagree (so the cached answer may be wrong) ----

def numbers_differ(a: KeyTerms, b: KeyTerms) -> bool:
    """Numbers (digits, number words, ordinals) are almost always the answer's input: 15% vs 20% of 200."""
    return a.numbers != b.numbers


def quotes_differ(a: KeyTerms, b: KeyTerms) -> bool:
    """A quoted string is verbatim input (a word to translate, an error message); each side's must be in the other."""
    def inside(x: KeyTerms, y: KeyTerms) -> bool:
        return all(q in y.quoted or f" {_flatten(q)} " in f" {y.flat} " for q in x.quoted)
    return not (inside(a, b) and inside(b, a))


def names_differ(a: KeyTerms, b: KeyTerms) -> bool:
    """A proper name or identifier on one side (France, useState, os.path) must appear, in any case, on the other.

    Names are what a question is about; paraphrases keep them, while same-template questions about another
    entity swap them. The check is one-sided per text, so a lower-case casual paraphrase still matches.
    """
    return not (a.names <= b.words and b.names <= a.words)


def languages_differ(a: KeyTerms, b: KeyTerms) -> bool:
    """The programming language decides the code in the answer; a question without one differs from one with one."""
    return a.languages != b.languages


def units_differ(a: KeyTerms, b: KeyTerms) -> bool:
    """Units with their role (source or target of a conversion): cups in a liter vs liters in a cup, C→F vs F→C.

    Compared only when both sides name units: "how long to boil an egg" and "how many minutes to boil an egg" agree.
    """
    return bool(a.units) and bool(b.units) and a.units != b.units


def negation_differs(a: KeyTerms, b: KeyTerms) -> bool:
    """A negation on one side only inverts the question: foods that are (not) safe during pregnancy."""
    return a.is_negated != b.is_negated


def _opposite_stems(x: str, y: str) -> bool:
    for p, q in _OPPOSING_PREFIXES:
        for u, v in ((x, y), (y, x)):
            if u.startswith(p) and v.startswith(q) and len(u) - len(p) >= _MIN_STEM and u[len(p):] == v[len(q):]:
                return True
    return False


def opposites_differ(a: KeyTerms, b: KeyTerms) -> bool:
    """An opposite word on each side, each absent from the other: min/max, ascending/descending, install/uninstall.

    Two generic sources: a short list of polar opposites (extremes, order, reversing actions) and prefix morphology
    (un-, dis-, in-/de-, im-/ex-, en-/de-, up-/down-, ...) that makes opposites of the same stem.
    """
    only_a, only_b = a.words - b.words, b.words - a.words
    if any((x in only_a and y in only_b) or (y in only_a and x in only_b) for x, y in _OPPOSITES):
        return True
    return any(_opposite_stems(x, y) for x in only_a for y in only_b if x.isalpha() and y.isalpha())


def direction_differs(a: KeyTerms, b: KeyTerms) -> bool:
    """The same terms on swapped sides of "X to/into/in Y" or "from X": list to string vs string to list, Python 2
    code in Python 3 vs the reverse. Terms on both sides of a text are dropped, so only a real swap counts."""
    return any(sa & tb and ta & sb for sa, ta in a.links for sb, tb in b.links)


GUARD_RULES: dict[str, Callable[[KeyTerms, KeyTerms], bool]] = {
    "numbers": numbers_differ, "quotes": quotes_differ, "names": names_differ, "languages": languages_differ,
    "units": units_differ, "negation": negation_differs, "opposites": opposites_differ,
    "direction": direction_differs,
}


def guard_mismatches(a: KeyTerms, b: KeyTerms) -> list[str]:
    """The names of the rules under which the two texts disagree; empty when the guard allows a hit."""
    return [name for name, differs in GUARD_RULES.items() if differs(a, b)]


def semantic_match(query_text: str, cached_text: str, similarity: float, threshold: float = DEFAULT_THRESHOLD,
                   enable_guard: bool = True) -> bool:
    """Whether a cached answer to `cached_text` may serve `query_text`, given their embeddings' cosine similarity.

    Args:
        similarity: cosine similarity of `embed_key` vectors of the two texts.
        threshold: the least similarity for a hit.
        enable_guard: also require the key terms to agree (`GUARD_RULES`); an exact match after
            `normalize_text` needs no guard.
    """
    if normalize_text(query_text) == normalize_text(cached_text):
        return True
    if similarity < threshold:
        return False
    return not enable_guard or not guard_mismatches(key_terms(query_text), key_terms(cached_text))
