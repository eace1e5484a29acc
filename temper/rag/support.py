"""Is an answer sentence supported by the passages it cites? An offline entailment judge for RAG faithfulness.

`temper rag eval` reports faithfulness = the share of answer sentences that their cited passages support:
split_sentences() cuts an answer into sentences, citations() reads each sentence's [n] markers, and SupportJudge
scores the sentence (markers stripped) against the union of the cited passages.

There is no NLI model and no NLI data set offline, so the judge is a logistic regression over features that the
sentence embedder and a few lexical rules compute. Each feature targets one way a claim goes wrong:

- sim: the best cosine similarity (all-MiniLM-L6-v2) between the claim and a window of one or two consecutive
  passage sentences. Windows, not the whole passage, because a claim usually restates one or two sentences and a
  120-word passage embeds as a blur of its topics. It separates off-topic claims and rewards paraphrases that share
  few words, but it is nearly blind to small edits: a changed number or a dropped "not" barely moves an embedding.
- coverage: the share of the claim's content words (stopwords removed, light suffix stripping) that occur in the
  passage. A claim that adds facts brings words the passage lacks.
- hard_missing: the share of the claim's "hard" tokens -- numbers (digits or number words), identifiers with dots,
  underscores, call parentheses, digits or inner capitals, quoted strings, capitalized names -- absent from the
  passage. A wrong number, function, parameter, default or product name is a hard token the passage lacks, and
  an embedding or a bag of content words weighs it like any other word.
- negation: a claim clause and the passage clause that states the same thing (the one sharing most of its content
  words, at least MIN_CLAUSE_OVERLAP of them) disagree on negation: one has "not", "never", "cannot", "without",
  "n't", or a negative prefix on a word the other has bare ("unsuitable"/"suitable"), and the other has none.
  Clauses, not sentences, because doc sentences often negate something else in another clause.
- polarity: such a clause pair where the claim has one word of an antonym pair (always/never, first/last,
  shallow/deep, lower/higher, ...) and the passage clause has the other: negated or swapped facts without a
  negation word. "Fractions of a second are preserved" against "... are ignored" is not in the list and not caught.
- substitution: a claim hard token is missing from the passage sentence closest to the claim, which has another
  token of the same shape instead (ValueError for RuntimeError, threshold1 for threshold0, 3 for 2). hard_missing
  cannot see these: the wrong token usually occurs elsewhere in the passage.

The constants below come from an L2-regularized logistic regression (numpy Newton steps, under a second) fitted on
the train half of data/support_pairs.jsonl -- pages whose name hashes to an even first byte, see split_of() -- with
the threshold taken from leave-one-page-out scores on that half (page-grouped CV accuracy 0.851). Per feature:
sim +5.32, coverage +0.30, hard_missing -4.51, negation -3.72, polarity -5.58, substitution -5.72, bias -3.55;
coverage adds little beside sim. On the test half (40 pages, 256 items) accuracy is 0.805, precision/recall/F1 of
"supported" 0.746/0.873/0.805; per kind: paraphrase 0.88, off-topic 1.00, added 0.75, negated 0.63, wrong number 0.94,
wrong name 0.83, wrong value 0.57, swapped 0.36. Negations without a negation word and swapped relations ("fdst
into fsrc", "a higher number is a higher priority") are the judge's blind spot: it sees words, not who does what.
tests/rag/test_support.py recomputes the test-half accuracy from these constants.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import astuple, dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from temper.errors import TemperError

if TYPE_CHECKING:
    import torch

    from temper.embeddings import Embedder

# ---- sentences and citation markers ----

_CODE = re.compile(r"```.*?```|`[^`\n]+`", re.DOTALL)
_BULLET = re.compile(r"^\s*(?:[-*+\u2022]|\d{1,3}[.)])\s+")
_CITE = re.compile(r"\[(\d+(?:\s*,\s*\d+)*)\]")
# sentence end: terminal punctuation, closing quotes or brackets, then any citation markers, then a space
_END = re.compile(r"[.!?]+[\"'\u201d\u2019)]*((?:\s*\[\d+(?:\s*,\s*\d+)*\])*)\s+")
_NO_END_AFTER = {"e.g", "i.e", "cf", "vs", "viz", "approx", "resp", "mr", "mrs", "dr", "prof", "fig", "eq", "al",
                 "ca"}


def _mask_code(text: str) -> str:
    """Code spans overwritten with NUL characters of the same length: offsets stay, nothing splits inside them."""
    return _CODE.sub(lambda m: "\x00" * len(m.group(0)), text)


def _is_end(line: str, m: re.Match) -> bool:
    before = line[:m.start()].rsplit(maxsplit=1)
    word = before[-1].lstrip("([\"'").lower() if before else ""
    if line[m.start()] == "." and (word in _NO_END_AFTER or re.fullmatch(r"[a-z]", word)):
        return False  # "e.g. foo", "J. Smith"
    rest = line[m.end():]
    return not rest[:1].islower()  # a lowercase continuation is not a new sentence ("approx. five", "vs. the")


def split_sentences(text: str) -> list[str]:
    """Sentences of an answer, in order.

    Lines and list items are boundaries; inside a line a sentence ends at . ! or ? followed by a space, except after
    an abbreviation (e.g., i.e., etc.) or an initial, or before a lowercase word. Decimals (3.11) and dotted names
    (os.path.join()) have no space after the dot, code spans in backticks are never split, and citation markers
    after the full stop ("... JSON. [2] Next") stay with the sentence they follow. List bullets are dropped.
    """
    masked = _mask_code(text)
    sentences: list[str] = []
    for line_match in re.finditer(r"[^\n]+", masked):
        line, offset = line_match.group(0), line_match.start()
        bullet = _BULLET.match(line)
        start = bullet.end() if bullet else 0
        for m in _END.finditer(line, start):
            if _is_end(line, m):
                sentences.append(text[offset + start:offset + m.end()].strip())
                start = m.end()
        sentences.append(text[offset + start:offset + len(line)].strip())
    return [s for s in sentences if s]


def _citation_spans(sentence: str) -> list[tuple[int, int, list[int]]]:
    """(start, end, ids) of the citation markers: [n], [n, m], chains [1][3]; not indexing like argv[1] or a[0]."""
    masked = _mask_code(sentence)
    out: list[tuple[int, int, list[int]]] = []
    for m in _CITE.finditer(masked):
        ids = [int(n) for n in m.group(1).split(",")]
        before = masked[:m.start()]
        chained = bool(out) and out[-1][1] == m.start()
        # NOTE: "great[1]" is a citation; "x_1[2]", "argv[1]" (after a dot), "f()[1]" are indexing, and
        # "[10, 5, 30, 5]" (more than three numbers or a repeat) is a list
        is_source_numbers = min(ids) >= 1 and len(ids) <= 3 and len(set(ids)) == len(ids)
        attached_to_word = re.search(r"(?:^|[\s(\"'])[A-Za-z]{2,}$", before) is not None
        is_free = not before or not re.search(r"[\w)\]\x00]$", before)
        if is_source_numbers and (chained or is_free or attached_to_word):
            out.append((m.start(), m.end(), ids))
    return out


def citations(sentence: str) -> list[int]:
    """The 1-based source numbers a sentence cites, in order of first mention: "[1]", "[1, 2]", "[1][3]"."""
    seen: dict[int, None] = {}
    for _, _, ids in _citation_spans(sentence):
        seen.update(dict.fromkeys(ids))
    return list(seen)


def strip_citations(sentence: str) -> str:
    """The sentence without its citation markers ("JSON is text [1]." -> "JSON is text.")."""
    out, last = [], 0
    for start, end, _ in _citation_spans(sentence):
        out.append(sentence[last:start])
        last = end
    text = "".join(out) + sentence[last:]
    return re.sub(r"\s+([.,;:!?])", r"\1", re.sub(r"[ \t]{2,}", " ", text)).strip()


# ---- lexical features ----

STOPWORDS = frozenset({"a", "about", "above", "after", "again", "against", "all", "also", "am", "an", "and", "any",
                       "are", "as", "at", "be", "because", "been", "before", "being", "below", "between", "both",
                       "but", "by", "can", "could", "did", "do", "does", "doing", "down", "during", "each", "few",
                       "for", "from", "further", "had", "has", "have", "having", "he", "her", "here", "hers", "him",
                       "his", "how", "i", "if", "in", "into", "is", "it", "its", "itself", "just", "may", "me",
                       "might", "more", "most", "must", "my", "no", "nor", "not", "of", "off", "on", "once", "only",
                       "or", "other", "our", "out", "over", "own", "same", "she", "should", "so", "some", "such",
                       "than", "that", "the", "their", "them", "then", "there", "these", "they", "this", "those",
                       "through", "to", "too", "under", "until", "up", "very", "was", "we", "were", "what", "when",
                       "where", "which", "while", "who", "whom", "why", "will", "with", "would", "you", "your",
                       "yours", "whether", "either", "neither", "yet", "thus", "however", "instead", "rather", "one",
                       "ones", "via", "etc", "e.g", "i.e"})
NEGATIONS = frozenset({"not", "no", "never", "none", "nothing", "neither", "nor", "cannot", "without", "nobody",
                       "nowhere", "unable"})
ANTONYMS = (("always", "never"), ("first", "last"), ("smallest", "largest"), ("less", "greater"), ("lower", "higher"),
            ("before", "after"), ("left", "right"), ("shallow", "deep"), ("weak", "strong"), ("same", "different"),
            ("required", "optional"), ("true", "false"), ("increase", "decrease"), ("faster", "slower"),
            ("enabled", "disabled"), ("minimum", "maximum"), ("youngest", "oldest"), ("oldest", "newest"),
            ("explicit", "implicit"), ("synchronous", "asynchronous"), ("absolute", "relative"),
            ("include", "exclude"), ("public", "private"), ("input", "output"), ("read", "write"))
_OPPOSITE = {a: b for a, b in ANTONYMS} | {b: a for a, b in ANTONYMS}
NUMBER_WORDS = {"zero": "0", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6", "seven": "7",
                "eight": "8", "nine": "9", "ten": "10", "eleven": "11", "twelve": "12", "twenty": "20",
                "hundred": "100", "thousand": "1000", "once": "1", "twice": "2", "single": "1", "one": "1"}
_CLAIM_NUMBER_WORDS = NUMBER_WORDS.keys() - {"one", "once", "single"}  # "one can", "one of": not a count in a claim
_UBIQUITOUS = {"Python", "I"}
_WORD = re.compile(r"[a-z0-9_]+(?:['\u2019][a-z]+)?")
_HARD = re.compile(r"""(?<!\w)"[^"\n]{1,40}"|(?<!\w)'[^'\n]{1,40}'(?!\w)      # quoted strings
                      |\d+(?:,\d{3})+(?!\d)|\d[\w.]*\w|\d                     # numbers: 32,768  3.11  0o666  7
                      |[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*                        # words and dotted names
                   """, re.VERBOSE)
_SUFFIXES = ("ations", "ation", "ings", "ing", "edly", "ed", "ies", "es", "ly", "ment", "s")


def stem(word: str) -> str:
    """Light suffix stripping so that "captured", "captures", "capture" and "capturing" meet."""
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[:-len(suffix)] + ("y" if suffix == "ies" else "")
            break
    return word.removesuffix("e") if len(word) > 3 else word


def words(text: str) -> list[str]:
    """Lowercase word tokens; dotted names split into parts; curly apostrophes straightened."""
    return _WORD.findall(text.lower().replace("\u2019", "'"))


def content_words(text: str) -> set[str]:
    return {stem(w) for w in words(text) if w not in STOPWORDS and len(w) > 1 and "'" not in w}


def _is_hard_word(token: str, sentence_initial: bool) -> bool:
    if token in _UBIQUITOUS:
        return False
    if "." in token or "_" in token or any(c.isdigit() for c in token) or (token.isupper() and len(token) > 1):
        return True
    if any(c.isupper() for c in token[1:]):
        return True  # CamelCase: FileExistsError, PostgreSQL
    return token[0].isupper() and not sentence_initial


def hard_tokens(claim: str) -> list[str]:
    """The claim's tokens that must appear verbatim: numbers, identifiers, quoted strings, capitalized names.

    Numbers come back as digit strings (number words converted, thousands separators dropped), quoted strings as
    their lowercase content, names lowercased without call parentheses.
    """
    out = []
    for m in _HARD.finditer(claim):
        token = m.group(0)
        if token[0] in "\"'":
            out.append(token[1:-1].lower())
        elif token[0].isdigit():
            out.append(token.replace(",", "").rstrip("."))
        elif token.lower() in _CLAIM_NUMBER_WORDS:
            out.append(NUMBER_WORDS[token.lower()])
        elif claim[m.end():m.end() + 1] == "(" or _is_hard_word(token, claim[:m.start()].strip(" \"'(") == ""):
            out.append(token.lower())
    return out


@dataclass(slots=True)
class _PassageIndex:
    """What the lexical features look up in the union of the cited passages."""

    text: str  # lowercase
    names: set[str]  # lowercase words and dotted names with their parts
    numbers: set[str]
    content: set[str]


def _index(text: str) -> _PassageIndex:
    names, numbers = set(), set()
    for m in _HARD.finditer(text):
        token = m.group(0).lower()
        if token[0].isdigit():
            numbers.add(token.replace(",", "").rstrip("."))
            numbers.update(re.findall(r"\d+", token))
        elif token[0] not in "\"'":
            names.add(token)
            names.update(token.split("."))
            if token in NUMBER_WORDS:
                numbers.add(NUMBER_WORDS[token])
    return _PassageIndex(text.lower(), names, numbers, content_words(text))


def _is_found(token: str, index: _PassageIndex) -> bool:
    if token[0].isdigit():
        return token in index.numbers or token.replace(".", "") in index.numbers
    if token in index.names or token.split(".")[-1] in index.names:
        return True  # a module prefix the passage leaves out ("json.dumps" for "dumps") is fine
    return re.search(rf"(?<![\w.]){re.escape(token)}(?![\w])", index.text) is not None


def missing_tokens(claim: str, text: str) -> list[str]:
    """The claim's hard tokens (numbers, identifiers, quoted strings, names) that the text does not contain.

    Answering uses it on the question and the retrieved sources: a question about `itertools.batched` or Flask whose
    sources never mention it cannot be answered from them, however similar they look to a sentence embedding.
    """
    index = _index(text)
    return [t for t in dict.fromkeys(hard_tokens(claim)) if not _is_found(t, index)]


_CLAUSE_BREAK = re.compile(r"[;:,()\[\]]|--|\u2014|\s(?:but|whereas|while|although|though|however|otherwise|unless|"
                           r"except|instead|so that)\s")
_CALL_ARGS = re.compile(r"(?<=\w)(?:\([^()]*\)|\[[^\[\]]*\])")  # f(x), a[0]
_NEGATIVE_PREFIXES = ("un", "non", "in", "im", "ir", "il", "dis")
MIN_CLAUSE_OVERLAP = 0.5  # share of a claim clause's content words a passage clause must hold to be compared with it


def clauses(sentence: str) -> list[str]:
    """Pieces of a sentence between commas, semicolons, brackets and contrastive conjunctions, with content.

    Call syntax is dropped first, so that "range() is never included" stays one clause.
    """
    sentence = _CALL_ARGS.sub("", sentence)
    return [c.strip() for c in _CLAUSE_BREAK.split(sentence) if c and content_words(c)]


def _is_negated(text: str, other_words: set[str]) -> bool:
    """Has a negation word, or a negative prefix on a word that the other side has bare ("unsuitable"/"suitable")."""
    ws = words(text)
    if any(w in NEGATIONS or w.endswith("n't") for w in ws):
        return True
    return any(w.startswith(p) and len(w) - len(p) >= 4 and w[len(p):] in other_words
               for w in ws for p in _NEGATIVE_PREFIXES)


def _contradictions(claim: str, sentences: list[str]) -> tuple[float, float]:
    """(negation, polarity): does a claim clause disagree with the passage clause that states the same thing?

    Each claim clause with two content words or more is aligned with the passage clause sharing most of them (the
    shorter on a tie); when that clause holds MIN_CLAUSE_OVERLAP of them, negation is set if one side is negated
    and the other not, polarity if the claim clause has a word whose antonym the passage clause has instead.
    """
    passage_clauses = [(c, content_words(c)) for s in sentences for c in clauses(s)]
    negation = polarity = 0.0
    for clause in clauses(claim):
        content = content_words(clause)
        if len(content) < 2 or not passage_clauses:
            continue
        target, their_content = max(passage_clauses, key=lambda c: (len(content & c[1]), -len(c[0])))
        if len(content & their_content) < MIN_CLAUSE_OVERLAP * len(content):
            continue
        clause_words, their_words = set(words(clause)), set(words(target))
        if _is_negated(clause, their_words) != _is_negated(target, clause_words):
            negation = 1.0
        if any(_OPPOSITE.get(w) in their_words and w not in their_words for w in clause_words):
            polarity = 1.0
    return negation, polarity


def _shape(token: str) -> str:
    """The kind of a hard token: a number, a name ending like an exception, a name with digits; "" for others."""
    if token[0].isdigit():
        return "#"
    for suffix in ("error", "exception", "warning"):
        if token.endswith(suffix):
            return suffix
    return re.sub(r"\d+", "#", token) if any(c.isdigit() for c in token) else ""


def _substitution(hard: list[str], content: set[str], sentences: list[str]) -> float:
    """1.0 when a claim hard token stands where the passage sentence closest to the claim has another of its shape.

    The closest sentence shares most content words with the claim; the claim's token is missing from it and the
    sentence has a token of the same shape that the claim lacks: ValueError for RuntimeError, threshold1 for
    threshold0, 3 for 2. Unlike hard_missing, this catches a token that the passage has, but in another sentence.
    """
    if not hard or not content or not sentences:
        return 0.0
    aligned = max(sentences, key=lambda s: (len(content & content_words(s)), -len(s)))
    index = _index(aligned)
    theirs = {_shape(t) for t in hard_tokens(aligned) if t not in hard}
    return float(any(_shape(t) and _shape(t) in theirs and not _is_found(t, index) for t in hard))


@dataclass(slots=True)
class SupportFeatures:
    """The judge's inputs for one (claim, passages) pair; the order of fields is the order of WEIGHTS."""

    sim: float  # best cosine similarity between the claim and a window of one or two passage sentences
    coverage: float  # share of the claim's content words found in the passages
    hard_missing: float  # share of the claim's hard tokens absent from the passages (0 when it has none)
    negation: float  # 1.0 when a claim clause and a matching passage clause disagree on negation
    polarity: float  # 1.0 when a claim clause has the antonym of a word of a matching passage clause
    substitution: float  # 1.0 when a claim hard token replaces one of the same shape in the closest passage sentence


def lexical_features(claim: str, passages: Sequence[str]) -> tuple[float, float, float, float, float]:
    """All SupportFeatures but sim, of a claim (citation markers stripped) against the passages it cites."""
    text = "\n".join(passages)
    index = _index(text)
    content = content_words(claim)
    coverage = len(content & index.content) / len(content) if content else 1.0
    hard = hard_tokens(claim)
    hard_missing = sum(not _is_found(t, index) for t in hard) / len(hard) if hard else 0.0
    sentences = [s for passage in passages for s in split_sentences(passage)]
    return (coverage, hard_missing, *_contradictions(claim, sentences), _substitution(hard, content, sentences))


# ---- the judge ----

FEATURES = tuple(SupportFeatures.__dataclass_fields__)
# fitted on the train half (see the module docstring); sim, coverage, hard_missing, negation, polarity, substitution
WEIGHTS = (5.319, 0.304, -4.509, -3.715, -5.581, -5.717)
BIAS = -3.551
THRESHOLD = 0.46  # supported when score >= THRESHOLD
MAX_CACHED_WINDOWS = 4096  # passage windows whose embeddings a judge keeps between calls


class SupportJudge:
    """Scores how well passages support a claim: a logistic regression over SupportFeatures, in [0, 1]."""

    def __init__(self, embedder: Embedder | None = None, threshold: float | None = None):
        if threshold is not None and not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        self._embedder = embedder
        self.threshold = THRESHOLD if threshold is None else threshold
        # NOTE: an answer's sentences are judged one by one against the same few sources, so passage windows are
        # embedded once and kept (oldest dropped first)
        self._window_vectors: OrderedDict[str, torch.Tensor] = OrderedDict()

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            from temper.embeddings import Embedder

            self._embedder = Embedder.load()
        return self._embedder

    def score(self, claim: str, passages: Sequence[str]) -> float:
        """How well the passages support the claim, in [0, 1]; citation markers in the claim are ignored."""
        return self.score_many([(claim, passages)])[0]

    def supported(self, claim: str, passages: Sequence[str]) -> bool:
        return self.score(claim, passages) >= self.threshold

    def score_many(self, pairs: Sequence[tuple[str, Sequence[str]]]) -> list[float]:
        """Scores of (claim, passages) pairs; all claims and passage windows are embedded in one batch."""
        return [logistic(f) for f in self.features_many(pairs)]

    def features_many(self, pairs: Sequence[tuple[str, Sequence[str]]]) -> list[SupportFeatures]:
        import torch  # NOTE: here, so that split_sentences() and citations() do not pay for importing torch

        claims = [strip_citations(claim) for claim, _ in pairs]
        windows = [_windows(passages) for _, passages in pairs]
        new_windows = [w for ws in windows for w in ws if w not in self._window_vectors]
        texts = list(dict.fromkeys([c for c in claims if c] + new_windows))
        vectors = dict(zip(texts, self.embedder.embed(texts))) if texts else {}  # unit vectors (dim,)
        # cached windows are read before new ones are remembered: remembering may evict them
        vectors |= {w: self._window_vectors[w] for ws in windows for w in ws if w not in vectors}
        self._remember({w: vectors[w].clone() for w in new_windows})  # clones: a row view keeps its whole batch
        out = []
        for claim, (_, passages), pair_windows in zip(claims, pairs, windows):
            if not claim or not pair_windows:
                out.append(SupportFeatures(sim=0.0, coverage=0.0, hard_missing=1.0, negation=0.0, polarity=0.0,
                                           substitution=0.0))
                continue
            window_rows = torch.stack([vectors[w] for w in pair_windows])  # (W, dim)
            sim = float((window_rows @ vectors[claim]).max())
            out.append(SupportFeatures(sim, *lexical_features(claim, passages)))
        return out

    def _remember(self, window_vectors: dict[str, torch.Tensor]) -> None:
        self._window_vectors.update(window_vectors)
        while len(self._window_vectors) > MAX_CACHED_WINDOWS:
            self._window_vectors.popitem(last=False)


def _windows(passages: Sequence[str]) -> list[str]:
    """Each sentence and each pair of consecutive sentences of each passage."""
    out = []
    for passage in passages:
        sentences = split_sentences(passage)
        out += sentences + [f"{a} {b}" for a, b in itertools.pairwise(sentences)]
    return out


def logistic(features: SupportFeatures) -> float:
    """The judge's score: sigmoid(BIAS + WEIGHTS . features)."""
    z = BIAS + sum(w * x for w, x in zip(WEIGHTS, astuple(features)))
    return 1.0 / (1.0 + math.exp(-z))


# ---- the labelled set ----

@dataclass(frozen=True)
class SupportPair:
    """One labelled (claim, passage) item of data/support_pairs.jsonl."""

    id: str
    source: str  # the page, relative to the Python docs root (library/json.html)
    claim: str
    passage: str
    label: str  # supported | unsupported
    kind: str  # paraphrase, extract | off_topic, added, negated, wrong_number, wrong_name, wrong_value, swapped

    @property
    def is_supported(self) -> bool:
        return self.label == "supported"


class SupportSetError(TemperError):
    """A labelled support file is malformed."""


def load_pairs(path: str | Path | None = None) -> list[SupportPair]:
    """The labelled support set (None: the packaged one built from the Python 3.11 docs)."""
    if path is None:
        where = "support_pairs.jsonl"
        text = resources.files("temper.rag.data").joinpath(where).read_text()
    else:
        text, where = Path(path).read_text(), str(path)
    pairs = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            pairs.append(SupportPair(**json.loads(line)))
        except (json.JSONDecodeError, TypeError) as e:
            raise SupportSetError(f"{where}:{n}: not a support pair ({e}); see SupportPair for the fields") from None
    return pairs


def split_of(pair: SupportPair) -> str:
    """The half of a pair, by its page: "train" when blake2b(source) starts with an even byte, else "test"."""
    return "train" if hashlib.blake2b(pair.source.encode(), digest_size=8).digest()[0] % 2 == 0 else "test"
