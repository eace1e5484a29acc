"""The instruction types of the verifiable-instruction suite and their checkers (see temper.align.verifiable).

Each type has an id, phrasing templates, a deterministic parameter sampler and a checker whose docstring says
exactly what counts; `HELDOUT_TYPES` are never trained on.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["BASE_TASKS", "HELDOUT_TYPES", "INSTRUCTIONS", "TRAIN_TYPES", "Instruction"]


# --------------------------------------------------------------------------------------------------------------------
# Base tasks
# --------------------------------------------------------------------------------------------------------------------

BASE_TASKS: tuple[str, ...] = (
    "Write a short description of a lighthouse.",
    "Explain why the sky is blue.",
    "Give advice to a student starting university.",
    "Describe your ideal weekend.",
    "Explain how a bicycle works.",
    "Write a short story about a lost cat.",
    "Describe the taste of a fresh apple.",
    "Explain why people should drink water.",
    "Give tips for keeping a houseplant alive.",
    "Describe a busy market in the morning.",
    "Explain what a rainbow is.",
    "Write a short note thanking a neighbor for their help.",
    "Describe a walk in the forest.",
    "Explain how to make a cup of tea.",
    "Give advice to someone learning to cook.",
    "Describe the sound of rain on a roof.",
    "Explain why sleep is important.",
    "Write a short poem about the ocean.",
    "Describe your favorite season.",
    "Explain how bees make honey.",
    "Give tips for a long train journey.",
    "Describe a small mountain village.",
    "Explain what a library is for.",
    "Write a short welcome message for a new team member.",
    "Describe a sunset over a lake.",
    "Explain how to plant a tree.",
    "Give advice to someone who wants to start running.",
    "Describe an old wooden bridge.",
    "Explain why the moon changes shape.",
    "Write a short product description for a reusable water bottle.",
    "Describe a quiet café on a rainy day.",
    "Explain how a compass works.",
    "Give tips for studying for an exam.",
    "Describe a snowy morning.",
    "Explain why recycling is useful.",
    "Write a short invitation to a picnic.",
    "Describe a friendly dog.",
    "Explain what clouds are made of.",
    "Give advice for a first job interview.",
    "Describe a visit to a museum.",
    "Explain how to wash your hands properly.",
    "Write a short review of a favorite book.",
    "Describe a garden in spring.",
    "Explain why leaves change color in autumn.",
    "Give tips for saving money.",
    "Describe a campfire at night.",
    "Explain how a letter travels through the post.",
    "Write a short birthday message for a friend.",
    "Describe a city park at noon.",
    "Explain why exercise is good for you.",
    "Give advice to someone moving to a new city.",
    "Describe the view from a hilltop.",
    "Explain how a seed grows into a plant.",
    "Write a short announcement for a school bake sale.",
    "Describe a family dinner.",
    "Explain what a map is used for.",
    "Give tips for a good night's sleep.",
    "Describe a trip to the beach.",
    "Explain why we have seasons.",
    "Write a short apology for arriving late.",
)

# --------------------------------------------------------------------------------------------------------------------
# Text helpers
# --------------------------------------------------------------------------------------------------------------------

_WORD_RE = re.compile(r"[^\W_]+(?:['’-][^\W_]+)*")
_ALNUM_RE = re.compile(r"[^\W_]")


def _words(text: str) -> list[str]:
    """Word tokens: runs of letters/digits, joined by internal apostrophes or hyphens ("don't", "well-known")."""
    return _WORD_RE.findall(text)


def _has_content(text: str) -> bool:
    """True if the text contains at least one letter or digit (guards 'negative' rules against empty replies)."""
    return _ALNUM_RE.search(text) is not None


def _sentences(text: str) -> list[str]:
    """Sentences: split after . ! ? (optionally followed by a closing quote/bracket) plus whitespace, and at line
    breaks; fragments without any letter or digit are dropped. Abbreviations like "e.g. x" split (known limitation)."""
    parts = re.split(r"(?<=[.!?])\s+|(?<=[.!?][\"'”’)\]])\s+|\n+", text.strip())
    return [p for p in parts if _has_content(p)]


def _paragraphs(text: str) -> list[str]:
    """Paragraphs: chunks separated by a blank line or by a line consisting only of ``***``; empty chunks dropped."""
    t = re.sub(r"(?m)^[ \t]*\*{3}[ \t]*$", "\n", text)
    return [c for c in re.split(r"\n[ \t]*\n", t.strip()) if _has_content(c)]


def _word_count(text: str, word: str) -> int:
    """Whole-word, case-insensitive occurrences of ``word`` (which may be a multi-word phrase)."""
    return len(re.findall(rf"(?<![^\W_]){re.escape(word)}(?![^\W_])", text, flags=re.IGNORECASE))


def _strip_fence(text: str) -> str:
    """Strip surrounding whitespace and one optional surrounding ```json / ``` code fence."""
    s = text.strip()
    m = re.fullmatch(r"```[ \t]*(?:json|JSON)?[ \t]*\n?(.*?)\n?[ \t]*```", s, flags=re.DOTALL)
    return m.group(1).strip() if m else s


def _norm_ws(text: str) -> str:
    return " ".join(text.split())


# --------------------------------------------------------------------------------------------------------------------
# Instruction registry
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    """One verifiable instruction type: phrasing templates, a parameter sampler and a checker.

    ``tags`` mark what part of the reply the rule constrains; two types whose tags intersect are never combined in one
    prompt (avoids contradictory pairs). ``combinable=False`` types (e.g. JSON-only output) always stand alone.
    """

    id: str
    templates: tuple[str, ...]
    sampler: Callable[[random.Random, str], dict[str, Any]]
    checker: Callable[..., bool]
    tags: frozenset[str] = field(default_factory=frozenset)
    combinable: bool = True

    def sample(self, rng: random.Random, task: str = "") -> dict[str, Any]:
        """Draw parameters deterministically from ``rng`` (``task`` lets samplers avoid e.g. forbidding task words)."""
        return self.sampler(rng, task)

    def describe(self, params: dict[str, Any], rng: random.Random | None = None) -> str:
        """The instruction sentence for ``params``; the template is chosen by ``rng`` (first template if None)."""
        template = self.templates[0] if rng is None else rng.choice(self.templates)
        fields = {k: _render(v) for k, v in params.items()}
        n = params.get("n", 2)
        items = next((v for v in params.values() if isinstance(v, (list, tuple))), ())
        fields["s"] = "" if n == 1 else "s"  # plural suffix for count parameters
        fields["ws"] = "s" if len(items) > 1 else ""  # plural suffix for keyword lists
        return template.format(**fields)

    def check(self, reply: str, **params: Any) -> bool:
        """True if ``reply`` follows this instruction with ``params`` (see the checker's docstring)."""
        return bool(self.checker(reply, **params))

    @property
    def doc(self) -> str:
        """What exactly counts, from the checker's docstring."""
        return (self.checker.__doc__ or "").strip()

    def compatible(self, other: Instruction) -> bool:
        """Whether the two types may share a prompt."""
        return self.combinable and other.combinable and self.id != other.id and not (self.tags & other.tags)


def _render(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return " and ".join(f'"{v}"' for v in value)
    return str(value)


INSTRUCTIONS: dict[str, Instruction] = {}


def _instruction(
    type_id: str,
    templates: Sequence[str],
    sampler: Callable[[random.Random, str], dict[str, Any]] | None = None,
    tags: Iterable[str] = (),
    combinable: bool = True,
) -> Callable[[Callable[..., bool]], Callable[..., bool]]:
    """Register the decorated checker as instruction type ``type_id``."""

    def register(checker: Callable[..., bool]) -> Callable[..., bool]:
        if type_id in INSTRUCTIONS:
            raise ValueError(f"duplicate instruction type {type_id!r}")
        INSTRUCTIONS[type_id] = Instruction(
            id=type_id,
            templates=tuple(templates),
            sampler=sampler or (lambda rng, task: {}),
            checker=checker,
            tags=frozenset(tags),
            combinable=combinable,
        )
        return checker

    return register


def _choice(name: str, values: Sequence[Any]) -> Callable[[random.Random, str], dict[str, Any]]:
    return lambda rng, task: {name: rng.choice(values)}


# Parameter pools (disjoint where types may be combined, and free of commas).
_KEYWORDS = ("sun", "river", "friend", "bright", "quiet", "journey", "morning", "garden", "history", "future",
             "energy", "balance", "window", "color", "simple", "warm")
_FREQ_WORDS = ("light", "time", "people", "small", "day", "happy", "home", "place")
_FORBIDDEN = ("very", "really", "thing", "things", "nice", "good", "also", "just", "basically", "actually", "lot",
              "many", "important", "beautiful")
_START_WORDS = ("Certainly", "Imagine", "Today", "Well", "Yes", "Honestly", "Picture", "First", "Interestingly",
                "Remember", "Once", "Here")
_END_PHRASES = ("Is there anything else I can help with?", "Let me know if you have more questions.", "That is all.",
                "Thanks for reading.", "Have a wonderful day!", "Hope this helps.")
_COMMON_LETTERS = ("a", "e", "o", "t", "s", "n", "r", "i")
_RARE_LETTERS = ("b", "g", "w", "y", "k", "p", "m", "f")


# ---- length --------------------------------------------------------------------------------------------------------


@_instruction(
    "length:max_words",
    ("Answer in at most {n} words.", "Keep your response under {n} words (no more than {n}).",
     "Use no more than {n} words."),
    _choice("n", (20, 30, 40, 50, 60, 80)),
    tags={"length"},
)
def _max_words(reply: str, n: int) -> bool:
    """At least 1 and at most ``n`` word tokens (letters/digits joined by internal ' or -; punctuation not counted)."""
    count = len(_words(reply))
    return 1 <= count <= n


@_instruction(
    "length:min_words",
    ("Answer with at least {n} words.", "Your response should contain {n} words or more.",
     "Write no fewer than {n} words."),
    _choice("n", (25, 30, 40, 50, 60, 80)),
    tags={"length"},
)
def _min_words(reply: str, n: int) -> bool:
    """At least ``n`` word tokens (letters/digits joined by internal ' or -; punctuation not counted)."""
    return len(_words(reply)) >= n


@_instruction(
    "length:max_sentences",
    ("Answer in at most {n} sentence{s}.", "Use no more than {n} sentence{s}.", "Keep it to {n} sentence{s} or fewer."),
    _choice("n", (1, 2, 3, 4)),
    tags={"length", "structure", "layout"},
)
def _max_sentences(reply: str, n: int) -> bool:
    """Between 1 and ``n`` sentences. Sentences end at . ! ? followed by whitespace (a closing quote or bracket may
    sit between) or at a line break; fragments without letters/digits are ignored."""
    return 1 <= len(_sentences(reply)) <= n


@_instruction(
    "length:exact_sentences",
    ("Answer in exactly {n} sentences.", "Your response must consist of exactly {n} sentences.",
     "Write exactly {n} sentences, no more and no fewer."),
    _choice("n", (2, 3, 4, 5)),
    tags={"length", "structure", "layout"},
)
def _exact_sentences(reply: str, n: int) -> bool:
    """Exactly ``n`` sentences, counted as for ``length:max_sentences`` (split at . ! ? + whitespace, and at line
    breaks; fragments without letters/digits ignored)."""
    return len(_sentences(reply)) == n


@_instruction(
    "length:max_chars",
    ("Keep your response under {n} characters.", "Your entire response must be at most {n} characters long.",
     "Use no more than {n} characters in total."),
    _choice("n", (120, 150, 200, 300, 400)),
    tags={"length"},
)
def _max_chars(reply: str, n: int) -> bool:
    """The reply with surrounding whitespace stripped has at most ``n`` characters (all characters count, including
    inner spaces and newlines) and contains at least one letter or digit."""
    s = reply.strip()
    return _has_content(s) and len(s) <= n


@_instruction(
    "length:one_word",
    ("Answer with exactly one word.", "Reply with a single word only.", "Respond using just one word."),
    tags={"length"},
    combinable=False,
)
def _one_word(reply: str) -> bool:
    """Exactly one word token; punctuation/markdown around it is ignored, hyphenated words count as one."""
    return len(_words(reply)) == 1


# ---- format --------------------------------------------------------------------------------------------------------


@_instruction(
    "format:bullets",
    ("Your answer must contain exactly {n} bullet points, using markdown bullets such as:\n* This is a point.",
     "Use exactly {n} bullet points (lines starting with \"* \" or \"- \").",
     "Format your answer as exactly {n} markdown bullet points."),
    _choice("n", (2, 3, 4, 5)),
    tags={"structure", "list"},
)
def _bullets(reply: str, n: int) -> bool:
    """Exactly ``n`` lines that start (after optional indentation) with ``*`` or ``-`` followed by a space/tab and
    some text. ``**bold**`` lines, ``***`` separators and numbered items are not bullets."""
    return len(re.findall(r"(?m)^[ \t]*[*-][ \t]+\S", reply)) == n


@_instruction(
    "format:numbered_list",
    ("Format your answer as a numbered list with exactly {n} items (1. 2. ...).",
     "Give exactly {n} numbered items, each on its own line starting with its number like \"1.\".",
     "Your response must be a numbered list of exactly {n} points."),
    _choice("n", (2, 3, 4, 5)),
    tags={"structure", "list"},
)
def _numbered_list(reply: str, n: int) -> bool:
    """Exactly ``n`` lines that start (after optional indentation) with digits followed by ``.`` or ``)`` and a
    space/tab and some text. Numbering values are not checked, only the item count."""
    return len(re.findall(r"(?m)^[ \t]*\d+[.)][ \t]+\S", reply)) == n


@_instruction(
    "format:paragraphs",
    ("Your response should have exactly {n} paragraphs separated by a blank line.",
     "Write exactly {n} paragraphs. Separate paragraphs with the markdown divider ***.",
     "Use exactly {n} paragraphs, separated by empty lines."),
    _choice("n", (2, 3, 4)),
    tags={"structure", "layout"},
)
def _paragraphs_check(reply: str, n: int) -> bool:
    """Exactly ``n`` non-empty paragraphs, where paragraphs are separated by a blank (whitespace-only) line or by a
    line consisting only of ``***``. Chunks without letters/digits do not count."""
    return len(_paragraphs(reply)) == n


@_instruction(
    "format:sections",
    ("Your response must have exactly {n} sections. Mark the beginning of each section with Section X, such as: "
     "Section 1.",
     "Divide your answer into exactly {n} sections labelled Section 1, Section 2 and so on.",
     "Organize your response into {n} parts, starting each one with \"Section X\" where X is its number."),
    _choice("n", (2, 3, 4)),
    tags={"structure", "layout", "start"},
)
def _sections(reply: str, n: int) -> bool:
    """Markers ``Section <k>`` (case-insensitive) at the start of a line (after optional whitespace or markdown ``#``
    ``*`` ``_`` ``>``) numbered exactly 1, 2, ..., ``n`` in order, each followed by some text before the next marker.
    Text before the first marker (e.g. a title) is allowed."""
    marker = r"(?im)^[ \t#*_>]*section[ \t]+(\d+)\b"
    numbers = [int(x) for x in re.findall(marker, reply)]
    if numbers != list(range(1, n + 1)):
        return False
    bodies = re.split(marker, reply)[2::2]
    return all(_has_content(b) for b in bodies)


@_instruction(
    "format:json",
    ("Wrap your entire output in JSON format.",
     "Your entire response must be valid JSON; you may use a ```json code block.",
     "Respond only with a JSON object and nothing else."),
    tags={"structure", "layout", "start", "end", "list", "case"},
    combinable=False,
)
def _json(reply: str) -> bool:
    """After stripping whitespace and one optional surrounding ```json (or ```) fence, the whole text parses with
    ``json.loads`` as a JSON object or array. Bare strings/numbers and any prose outside the JSON fail."""
    try:
        value = json.loads(_strip_fence(reply))
    except ValueError:
        return False
    return isinstance(value, (dict, list))


@_instruction(
    "format:title",
    ("Your answer must contain a title, wrapped in double angular brackets, such as <<poem of joy>>.",
     "Give your response a title wrapped in double angular brackets, like <<my title>>.",
     "Include a title in the form <<title>>."),
    tags={"layout", "start"},
)
def _title(reply: str) -> bool:
    """Contains ``<<...>>`` on one line with at least one letter or digit inside (no ``<`` or ``>`` inside)."""
    return re.search(r"<<[^<>\n]*[^\W_][^<>\n]*>>", reply) is not None


@_instruction(
    "format:highlights",
    ("Highlight at least {n} section{s} in your answer with markdown, for example *highlighted section*.",
     "Use markdown to highlight at least {n} part{s} of your response, like *this part*.",
     "Emphasize at least {n} phrase{s} with asterisks, for example *important phrase*."),
    _choice("n", (1, 2, 3)),
)
def _highlights(reply: str, n: int) -> bool:
    """At least ``n`` highlights: ``*text*`` or ``**text**`` on a single line, where the text is non-empty and does
    not start or end with whitespace. Bullet markers (``* `` at line start) are ignored first."""
    t = re.sub(r"(?m)^([ \t]*)[*-][ \t]+", r"\1", reply)
    found = re.findall(r"\*\*(?!\s)[^*\n]+?(?<!\s)\*\*|\*(?!\s)[^*\n]+?(?<!\s)\*", t)
    return len(found) >= n


@_instruction(
    "format:placeholders",
    ("The response must contain at least {n} placeholder{s} represented by square brackets, such as [address].",
     "Include at least {n} placeholder{s} in square brackets, like [name].",
     "Use at least {n} fill-in placeholder{s} written in square brackets, for example [date]."),
    _choice("n", (1, 2, 3)),
)
def _placeholders(reply: str, n: int) -> bool:
    """At least ``n`` occurrences of ``[...]`` on one line with at least one letter or digit inside (no nested
    brackets)."""
    return len(re.findall(r"\[[^\[\]\n]*[^\W_][^\[\]\n]*\]", reply)) >= n


# ---- keywords ------------------------------------------------------------------------------------------------------


def _sample_keywords(rng: random.Random, task: str) -> dict[str, Any]:
    return {"keywords": rng.sample(_KEYWORDS, rng.choice((1, 2)))}


def _sample_forbidden(rng: random.Random, task: str) -> dict[str, Any]:
    task_words = {w.lower() for w in _words(task)}
    pool = [w for w in _FORBIDDEN if w not in task_words]
    return {"forbidden": rng.sample(pool, rng.choice((1, 2)))}


@_instruction(
    "keywords:include",
    ("Include the keyword{ws} {keywords} in your response.", "Make sure to use the word{ws} {keywords}.",
     "Your answer must mention {keywords}."),
    _sample_keywords,
    tags={"keywords"},
)
def _include(reply: str, keywords: list[str]) -> bool:
    """Every keyword occurs as a whole word, case-insensitively ("River" counts for "river"; "rivers" does not)."""
    return all(_word_count(reply, k) >= 1 for k in keywords)


@_instruction(
    "keywords:forbidden",
    ("Do not include the word{ws} {forbidden} in your response.", "Avoid using the word{ws} {forbidden}.",
     "Never use the word{ws} {forbidden} in your answer."),
    _sample_forbidden,
    tags={"keywords"},
)
def _forbidden(reply: str, forbidden: list[str]) -> bool:
    """None of the words occurs as a whole word, case-insensitively (substrings inside longer words are fine); the
    reply must contain at least one letter or digit."""
    return _has_content(reply) and all(_word_count(reply, w) == 0 for w in forbidden)


@_instruction(
    "keywords:frequency",
    ("In your response, the word \"{word}\" should appear at least {n} times.",
     "Use the word \"{word}\" at least {n} times.", "Mention the word \"{word}\" {n} or more times."),
    lambda rng, task: {"word": rng.choice(_FREQ_WORDS), "n": rng.choice((2, 3, 4))},
    tags={"keywords"},
)
def _frequency(reply: str, word: str, n: int) -> bool:
    """``word`` occurs at least ``n`` times as a whole word, case-insensitively."""
    return _word_count(reply, word) >= n


def _sample_letter(rng: random.Random, task: str) -> dict[str, Any]:
    if rng.random() < 0.5:
        return {"letter": rng.choice(_COMMON_LETTERS), "n": rng.choice((10, 15, 20))}
    return {"letter": rng.choice(_RARE_LETTERS), "n": rng.choice((3, 4, 5, 6))}


@_instruction(
    "keywords:letter_frequency",
    ("In your response, the letter '{letter}' should appear at least {n} times.",
     "Use the letter '{letter}' at least {n} times in your answer.",
     "Make sure the letter '{letter}' appears {n} or more times."),
    _sample_letter,
)
def _letter_frequency(reply: str, letter: str, n: int) -> bool:
    """The letter occurs at least ``n`` times anywhere in the reply, case-insensitively."""
    return reply.lower().count(letter.lower()) >= n


# ---- case ----------------------------------------------------------------------------------------------------------


@_instruction(
    "case:lowercase",
    ("Your entire response should be in English, and in all lowercase letters. No capital letters are allowed.",
     "Write your whole answer in lowercase letters only.", "Do not use any capital letters in your response."),
    tags={"case"},
)
def _lowercase(reply: str) -> bool:
    """Contains at least one letter and no uppercase letter at all (``reply == reply.lower()``)."""
    return any(c.isalpha() for c in reply) and reply == reply.lower()


@_instruction(
    "case:uppercase",
    ("Your entire response should be in English, and in all capital letters.",
     "Write your whole answer in uppercase letters only.", "Use only capital letters in your response."),
    tags={"case"},
)
def _uppercase(reply: str) -> bool:
    """Contains at least one letter and no lowercase letter at all (``reply == reply.upper()``)."""
    return any(c.isalpha() for c in reply) and reply == reply.upper()


@_instruction(
    "case:capital_words",
    ("In your response, words with all capital letters should appear at least {n} times.",
     "Write at least {n} words in ALL CAPITAL LETTERS for emphasis.",
     "Include at least {n} words written entirely in capital letters."),
    _choice("n", (2, 3, 4)),
    tags={"case"},
)
def _capital_words(reply: str, n: int) -> bool:
    """At least ``n`` word tokens with two or more letters and no lowercase letter (e.g. "VERY", "DON'T"; single
    letters like "I" or "A" do not count). Repeats of the same word count each time."""
    caps = [w for w in _words(reply) if sum(c.isalpha() for c in w) >= 2 and w == w.upper()]
    return len(caps) >= n


# ---- start / end ---------------------------------------------------------------------------------------------------


@_instruction(
    "startend:start_word",
    ("Start your response with the word \"{word}\".", "The first word of your answer must be \"{word}\".",
     "Begin your reply with \"{word}\"."),
    _choice("word", _START_WORDS),
    tags={"start"},
)
def _start_word(reply: str, word: str) -> bool:
    """The first word token equals ``word`` case-insensitively, and only whitespace or markdown/quote characters
    (``* _ # " ' “ ‘ >``) precede it."""
    m = _WORD_RE.search(reply)
    if m is None or m.group(0).lower() != word.lower():
        return False
    return re.fullmatch(r"[\s*_#\"'“‘>]*", reply[: m.start()]) is not None


@_instruction(
    "startend:end_phrase",
    ("Finish your response with this exact phrase: \"{phrase}\" No other words should follow it.",
     "End your answer with the exact phrase \"{phrase}\"",
     "Your reply must end with exactly these words: \"{phrase}\""),
    _choice("phrase", _END_PHRASES),
    tags={"end", "case"},
)
def _end_phrase(reply: str, phrase: str) -> bool:
    """The reply, with trailing whitespace stripped, ends with ``phrase`` exactly (case and punctuation included) and
    contains some text before it."""
    s = reply.strip()
    return s.endswith(phrase) and _has_content(s[: -len(phrase)])


@_instruction(
    "startend:quotation",
    ("Wrap your entire response with double quotation marks.",
     "Put your whole answer inside double quotes, from the first character to the last.",
     "Your entire reply must be enclosed in double quotation marks."),
    tags={"start", "end", "list"},
)
def _quotation(reply: str) -> bool:
    """After stripping whitespace, the reply starts and ends with a double quote (straight ``"..."`` or curly
    ``“...”``) and contains a letter or digit between them."""
    s = reply.strip()
    wrapped = (s.startswith('"') and s.endswith('"')) or (s.startswith("“") and s.endswith("”"))
    return len(s) >= 2 and wrapped and _has_content(s[1:-1])


@_instruction(
    "startend:end_question",
    ("End your response with a question.", "Your reply must finish with a question mark.",
     "Make the last sentence of your answer a question ending with \"?\"."),
    tags={"end"},
)
def _end_question(reply: str) -> bool:
    """The last non-whitespace character is ``?`` and the reply contains a letter or digit."""
    s = reply.strip()
    return s.endswith("?") and _has_content(s)


@_instruction(
    "startend:end_exclamation",
    ("End your response with an exclamation mark.", "Your reply must finish with \"!\".",
     "Make the last sentence of your answer an exclamation ending with \"!\"."),
    tags={"end"},
)
def _end_exclamation(reply: str) -> bool:
    """The last non-whitespace character is ``!`` and the reply contains a letter or digit."""
    s = reply.strip()
    return s.endswith("!") and _has_content(s)


# ---- misc ----------------------------------------------------------------------------------------------------------


@_instruction(
    "detect:postscript",
    ("At the end of your response, please explicitly add a postscript starting with {marker}",
     "Add a postscript at the end that starts with \"{marker}\".", "Finish with a short note beginning with {marker}"),
    lambda rng, task: {"marker": "P.S."},
    tags={"end", "case", "layout"},
)
def _postscript(reply: str, marker: str = "P.S.") -> bool:
    """A line starts (after optional whitespace or markdown ``*``/``_``) with ``marker`` (exact case, e.g. "P.S."),
    there is text with letters/digits both before that line and after the marker."""
    m = re.search(rf"(?m)^[ \t*_]*{re.escape(marker)}", reply)
    return m is not None and _has_content(reply[: m.start()]) and _has_content(reply[m.end():])


@_instruction(
    "punct:no_comma",
    ("In your entire response, refrain from the use of any commas.", "Do not use any commas in your answer.",
     "Write your reply without a single comma."),
)
def _no_comma(reply: str) -> bool:
    """No ``,`` (nor fullwidth ``，``) anywhere, and the reply contains a letter or digit."""
    return _has_content(reply) and "," not in reply and "，" not in reply


@_instruction(
    "content:numbers",
    ("Include at least {n} number{s} written with digits in your response.",
     "Your answer must contain at least {n} number{s} in digits (like 7 or 42).",
     "Mention at least {n} number{s}, written as digits."),
    _choice("n", (1, 2, 3)),
)
def _numbers(reply: str, n: int) -> bool:
    """At least ``n`` numbers written with digits; a number is a maximal digit run, possibly with inner ``.`` or
    ``,`` groups ("1,000" and "3.5" count once each)."""
    return len(re.findall(r"\d+(?:[.,]\d+)*", reply)) >= n


@_instruction(
    "combo:repeat_prompt",
    ("First repeat the request above word for word without change, then give your answer. Do not say anything "
     "before repeating the request, and do not repeat this sentence.",
     "Before answering, repeat the request above exactly (not including this instruction), then answer it."),
    lambda rng, task: {"prompt_to_repeat": task},
    tags={"start"},
    combinable=False,
)
def _repeat_prompt(reply: str, prompt_to_repeat: str) -> bool:
    """With runs of whitespace collapsed, the reply starts with ``prompt_to_repeat`` exactly (case-sensitive) and
    has an answer (some letter or digit) after it."""
    r, p = _norm_ws(reply), _norm_ws(prompt_to_repeat)
    return r.startswith(p) and _has_content(r[len(p):])


@_instruction(
    "combo:two_responses",
    ("Give two different responses. Separate them with six asterisks: ******.",
     "Write two different answers, separated by a line of exactly six asterisks (******)."),
    tags={"structure", "layout"},
    combinable=False,
)
def _two_responses(reply: str) -> bool:
    """Exactly one separator of exactly six asterisks ``******`` (not part of a longer run), with two non-empty
    parts that differ after whitespace normalization."""
    parts = re.split(r"(?<!\*)\*{6}(?!\*)", reply)
    if len(parts) != 2 or not all(_has_content(p) for p in parts):
        return False
    return _norm_ws(parts[0]) != _norm_ws(parts[1])


# --------------------------------------------------------------------------------------------------------------------
# Split
# --------------------------------------------------------------------------------------------------------------------

# Each held-out type has a train sibling of the same kind: uppercase/lowercase, quotation/title, max_chars/max_words,
# numbered_list/bullets, end_exclamation/end_question, letter_frequency/frequency, placeholders/highlights,
# exact_sentences/max_sentences, sections/paragraphs.
HELDOUT_TYPES: frozenset[str] = frozenset({
    "case:uppercase",
    "startend:quotation",
    "length:max_chars",
    "format:numbered_list",
    "startend:end_exclamation",
    "keywords:letter_frequency",
    "format:placeholders",
    "length:exact_sentences",
    "format:sections",
})
TRAIN_TYPES: frozenset[str] = frozenset(INSTRUCTIONS) - HELDOUT_TYPES
