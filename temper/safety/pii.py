"""Detection and reversible redaction of personal data and secrets, for a guard in front of the server.

`detect` finds EMAIL, PHONE, CREDIT_CARD, IBAN, US_SSN, IP_ADDRESS and API_KEY spans (API_KEY covers provider
keys, JWTs, PEM private-key blocks, which have no type of their own, and high-entropy `password=`/`token:` values
of at least 8 characters and `pii_patterns.ENTROPY_BITS` bits per character; see `pii_patterns`). A `Vault`
replaces them with numbered placeholders (`<EMAIL_1>`) for one conversation and puts the originals back in the
model's answer; `StreamRedactor` does the same to streamed output without cutting an entity in half.
"""
from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass

from temper.safety.pii_patterns import (
    ASSIGN,
    ASSIGN_OPEN_QUOTE,
    PEM_BLOCK,
    PEM_END,
    PEM_HEADER,
    PII_TYPES,
    PRIORITY,
    RULES,
)

STYLES = ("placeholder", "mask", "partial")
_PARTIAL_TYPES = {"CREDIT_CARD", "PHONE", "US_SSN", "IBAN"}  # "partial" keeps their last 4; others are masked
_PLACEHOLDER = re.compile(r"<[A-Z_]+_\d+>")
_TOKEN = re.compile(r"\S+")
_PEM_BEGIN = re.compile(r"-----BEGIN")
_PEM_HEADER_SO_FAR = re.compile(r"-----BEGIN[A-Z0-9 -]*")  # a header that may still be arriving
_KEY_ENDINGS = ("password", "passwd", "passphrase", "pass", "pwd", "secret", "token", "credential", "key")
CONTEXT_CHARS = 64  # raw text kept before a streamed piece, for look-behinds and the SSN context word

__all__ = ["PII_TYPES", "PIIMatch", "StreamRedactor", "Vault", "detect", "redact"]


@dataclass(frozen=True, slots=True)
class PIIMatch:
    """One detected entity: its type and where it is in the text."""

    type: str
    start: int
    end: int
    text: str


def _check_types(types: Collection[str] | None) -> frozenset[str]:
    """The requested types (all when None); unknown names are an error that lists the valid ones."""
    if types is None:
        return frozenset(PII_TYPES)
    wanted = frozenset([types] if isinstance(types, str) else types)
    unknown = sorted(wanted - set(PII_TYPES))
    if unknown:
        raise ValueError(f"unknown PII type(s) {unknown}; valid types are {list(PII_TYPES)}")
    return wanted


def _check_style(style: str) -> str:
    """A known redaction style, or a ValueError naming the valid ones."""
    if style not in STYLES:
        raise ValueError(f"unknown redaction style {style!r}; valid styles are {list(STYLES)}")
    return style


def _resolve(candidates: list[PIIMatch]) -> list[PIIMatch]:
    """Keep the longest candidate (then the highest-priority type) of each overlapping group, sorted by start."""
    chosen: list[PIIMatch] = []
    for c in sorted(candidates, key=lambda c: (c.start - c.end, PRIORITY[c.type], c.start)):
        if all(c.end <= k.start or k.end <= c.start for k in chosen):
            chosen.append(c)
    return sorted(chosen, key=lambda c: c.start)


def _find(text: str, types: frozenset[str], pos: int = 0) -> list[PIIMatch]:
    """Entities starting at or after `pos`; the text before `pos` is context only (look-behinds, SSN words)."""
    candidates = []
    for rule in RULES:
        if rule.type not in types:
            continue
        for m in rule.pattern.finditer(text, pos):
            span = rule.check(m)
            if span is not None:
                candidates.append(PIIMatch(rule.type, span[0], span[1], text[span[0]:span[1]]))
    return _resolve(candidates)


def detect(text: str, types: Collection[str] | None = None) -> list[PIIMatch]:
    """Every PII/secret span in `text` (of `types`, default all), non-overlapping and sorted by start."""
    return _find(text, _check_types(types))


def _keep_last4(value: str) -> str:
    """Star every letter and digit but the last four, keeping separators (`**** **** **** 1111`)."""
    alnum = [i for i, c in enumerate(value) if c.isalnum()]
    hide = set(alnum[:-4])
    return "".join("*" if i in hide else c for i, c in enumerate(value))


class Vault:
    """The placeholder <-> original table of one request or conversation, so a reply can be restored."""

    def __init__(self) -> None:
        """An empty table."""
        self._originals: dict[str, str] = {}
        self._issued: dict[tuple[str, str], str] = {}
        self._counts: dict[str, int] = {}

    @property
    def mapping(self) -> dict[str, str]:
        """A copy of placeholder -> original for the placeholders issued so far."""
        return dict(self._originals)

    def redact(self, text: str, types: Collection[str] | None = None, style: str = "placeholder") -> str:
        """`text` with each entity replaced; only the "placeholder" style can be restored."""
        return self._redact(text, 0, _check_types(types), _check_style(style))

    def restore(self, text: str) -> str:
        """Put back the originals of placeholders this vault issued; other `<X_n>` strings stay as they are."""
        return _PLACEHOLDER.sub(lambda m: self._originals.get(m.group(), m.group()), text)

    def _redact(self, text: str, pos: int, types: frozenset[str], style: str) -> str:
        """Redact `text[pos:]`, with `text[:pos]` as context only (the streaming path)."""
        out, last = [], pos
        for m in _find(text, types, pos):
            out.append(text[last:m.start])
            out.append(self._replacement(m, style))
            last = m.end
        out.append(text[last:])
        return "".join(out)

    def _replacement(self, m: PIIMatch, style: str) -> str:
        """What one entity becomes in the given style."""
        if style == "placeholder":
            return self._placeholder(m.type, m.text)
        if style == "partial" and m.type in _PARTIAL_TYPES:
            return _keep_last4(m.text)
        return f"<{m.type}>"

    def _placeholder(self, kind: str, value: str) -> str:
        """The placeholder of (kind, value): the same one every time, numbered per type in order of first sight."""
        key = (kind, value)
        if key not in self._issued:
            self._counts[kind] = self._counts.get(kind, 0) + 1
            name = f"<{kind}_{self._counts[kind]}>"
            self._issued[key] = name
            self._originals[name] = value
        return self._issued[key]


def redact(text: str, types: Collection[str] | None = None, style: str = "placeholder") -> tuple[str, Vault]:
    """Redact `text` with a fresh vault, returned so that a reply can be restored."""
    vault = Vault()
    return vault.redact(text, types, style), vault


def _glued(left: str, gap: str, right: str) -> bool:
    """Could one entity run from token `left` across whitespace `gap` into the token starting with `right`?

    The only whitespace inside an entity is one space between digit groups (cards, phones, SSNs: `5 5`, `) 1`,
    `4 (`), one space after a 4-character IBAN group, and spaces/tabs after `Bearer` or around an assignment's
    `:`/`=`. PEM blocks and quoted assignment values (which may hold spaces) are handled by `_safe_cut`.
    """
    if gap.strip(" \t"):
        return False
    if left[-1] in ":=" or right[0] in ":=" or left.lower() in ("bearer", "basic"):
        return True
    if gap != " ":
        return False
    if (left[-1].isdecimal() or left[-1] == ")") and (right[0].isdecimal() or right[0] == "("):
        return True
    return right[0].isalnum() and re.search(r"(?:^|[^A-Za-z0-9])[A-Za-z0-9]{4}$", left) is not None


def _token_start(text: str, i: int) -> int:
    """Start of the whitespace-delimited token that contains position `i`."""
    while i > 0 and not text[i - 1].isspace():
        i -= 1
    return i


def _open_pem(text: str) -> int | None:
    """Where a private-key block that has not ended yet begins in `text` (start of its token), or None."""
    for m in _PEM_BEGIN.finditer(text):
        header = PEM_HEADER.match(text, m.start())
        if header is not None and PEM_END.search(text, header.end()) is None:
            return _token_start(text, m.start())
        if header is None and _PEM_HEADER_SO_FAR.fullmatch(text, m.start()):
            return _token_start(text, m.start())
    return None


def _has_assignment(text: str) -> bool:
    """Whether some `:`/`=` in `text` may follow a secret key name (a cheap, linear superset of `ASSIGN`)."""
    for op in ":=":
        i = text.find(op)
        while i != -1:
            before = text[max(0, i - 40):i].rstrip(" \t\"':").lower()
            if before.endswith(_KEY_ENDINGS) or before[:-1].endswith(_KEY_ENDINGS):
                return True
            i = text.find(op, i + 1)
    return False


def _open_quote(text: str) -> int | None:
    """Where a `password: "...` assignment whose quoted value has not closed yet begins (its token), or None."""
    m = ASSIGN_OPEN_QUOTE.search(text)
    return None if m is None else _token_start(text, m.start())


def _last_safe_token(text: str, tokens: list[tuple[int, int]], limit: int, blocks: list[tuple[int, int]]) -> int:
    """The latest token start at or before `limit`, outside every block, that no entity can run across."""
    for i in range(len(tokens) - 1, -1, -1):
        start = tokens[i][0]
        if start > limit or any(a < start < b for a, b in blocks):
            continue
        if i == 0 or not _glued(text[tokens[i - 1][0]:tokens[i - 1][1]], text[tokens[i - 1][1]:start], text[start]):
            return start
    return 0


def _safe_cut(text: str, hold_limit: int, hard_limit: int) -> int:
    """How much of the pending `text` can be redacted and emitted now without splitting a possible entity."""
    tokens = [m.span() for m in _TOKEN.finditer(text)]
    if not tokens:
        return len(text)
    assigns = _has_assignment(text)
    opened = [p for p in (_open_pem(text), _open_quote(text) if assigns else None) if p is not None]
    limit = min(opened, default=len(text))
    blocks = [m.span() for m in PEM_BLOCK.finditer(text)]
    blocks += [m.span() for m in ASSIGN.finditer(text)] if assigns else []
    if not opened and tokens[-1][1] < len(text) and "\n" in text[tokens[-1][1]:]:
        cut = len(text)  # nothing can run across a newline (PEM blocks aside)
    else:
        cut = _last_safe_token(text, tokens, limit, blocks)
    if len(text) - cut > hold_limit:  # too much held: release all but an open block or the last token
        anchor = limit if opened else (tokens[-1][0] if tokens[-1][1] == len(text) else len(text))
        anchor = next((b for a, b in blocks if a < anchor < b), anchor)  # never split a complete block
        cut = max(cut, anchor)
    return len(text) if len(text) - cut > hard_limit else cut


class StreamRedactor:
    """Redacts streamed model output: `feed` returns what is safe to send now, `flush` the rest.

    It holds back the last token, plus any earlier tokens an entity could still join (`4111 1111 ...`,
    `GB82 WEST ...`, `password: ...`), a quoted secret until its closing quote and a private-key block until its
    END line. The pieces it emits add up to `vault.redact(full_text)` as long as the held tail stays within
    `hold_limit` characters; past it, everything but the last token (a long token is the shape of a key or JWT)
    or the open PEM block is released, redacted; past `hard_limit`, everything is.
    """

    def __init__(self, vault: Vault | None = None, types: Collection[str] | None = None,
                 style: str = "placeholder", hold_limit: int = 256, hard_limit: int = 16384) -> None:
        """Redact into `vault` (a new one by default), for `types` in `style`, holding at most the given limits."""
        self.vault = vault if vault is not None else Vault()
        self._types = _check_types(types)
        self._style = _check_style(style)
        self.hold_limit, self.hard_limit = hold_limit, hard_limit
        self._pending = ""
        self._context = ""

    def feed(self, chunk: str) -> str:
        """Take the next chunk; return the redacted text that can be emitted now (often empty)."""
        self._pending += chunk
        return self._emit(_safe_cut(self._pending, self.hold_limit, self.hard_limit))

    def flush(self) -> str:
        """End of stream: return everything still held, redacted, and start over."""
        out = self._emit(len(self._pending))
        self._context = ""
        return out

    def _emit(self, cut: int) -> str:
        """Redact and release `pending[:cut]`, with the previously released raw text as context."""
        if cut <= 0:
            return ""
        piece, self._pending = self._pending[:cut], self._pending[cut:]
        text = self._context + piece
        self._context = text[-CONTEXT_CHARS:]
        return self.vault._redact(text, len(text) - len(piece), self._types, self._style)
