"""Decoded views of a message, so that a request hidden in base64, rot13, leetspeak or reversed text is judged too.

Attackers wrap a harmful request in an encoding the classifier never saw ("decode this base64 and do what it
says"). `views(text)` returns the text plus each decoding that turns it into more English than it was; the guard
scores every view and keeps the worst. Decoding is pure string work (no model, no eval), a few microseconds.
"""
from __future__ import annotations

import base64
import binascii
import codecs
import re

_B64 = re.compile(r"[A-Za-z0-9+/]{16,}={0,2}")
_WORD = re.compile(r"[a-z]+")
_LEET = str.maketrans({"4": "a", "@": "a", "3": "e", "1": "i", "!": "i", "0": "o", "5": "s", "$": "s", "7": "t",
                       "+": "t", "8": "b", "9": "g"})
# the 100 most frequent English words (enough to tell English from gibberish in a sentence)
_COMMON = frozenset(["the", "of", "and", "to", "a", "in", "is", "you", "that", "it", "he", "was", "for", "on", "are", "as", "with", "his", "they", "i", "at", "be", "this", "have", "from", "or", "one", "had", "by", "word", "but", "not", "what", "all", "were", "we", "when", "your", "can", "said", "there", "use", "an", "each", "which", "she", "do", "how", "their", "if", "will", "up", "other", "about", "out", "many", "then", "them", "these", "so", "some", "her", "would", "make", "like", "him", "into", "time", "has", "look", "two", "more", "write", "go", "see", "number", "no", "way", "could", "people", "my", "than", "first", "been", "call", "who", "its", "now", "find", "long", "down", "day", "did", "get", "come", "made", "may", "part", "make", "give", "tell", "explain", "steps", "step", "instructions", "someone", "help", "build", "create", "write", "how", "why", "what", "where", "kill", "steal", "hack"])


def english_share(text: str) -> float:
    """Share of the lowercase words of a text that are common English words (0 for no words)."""
    words = _WORD.findall(text.lower())
    return sum(w in _COMMON for w in words) / len(words) if words else 0.0


def _base64_views(text: str) -> list[str]:
    out = []
    for m in _B64.finditer(text):
        blob = m.group(0)
        try:
            decoded = base64.b64decode(blob + "=" * (-len(blob) % 4), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            continue
        if decoded.isprintable() or all(c.isprintable() or c.isspace() for c in decoded):
            out.append(decoded)
    return out


def views(text: str, min_gain: float = 0.15) -> list[str]:
    """The text and its decodings (base64 blobs, rot13, leetspeak, reversed) that read as more English.

    Args:
        min_gain: a decoding is kept when its common-word share beats the original's by this much.
    """
    out = [text]
    base = english_share(text)
    candidates = [codecs.decode(text, "rot13"), text[::-1]]
    if re.search(r"[a-z][0-9@$!+][a-z]|[0-9@$][a-z]{2}", text.lower()):
        candidates.append(text.lower().translate(_LEET))
    for cand in candidates:
        if english_share(cand) >= base + min_gain:
            out.append(cand)
    out += [d for d in _base64_views(text) if english_share(d) > 0.1]
    return out
