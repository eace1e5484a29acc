"""Regexes, tables and validators behind `temper.safety.pii`.

Every rule is a regex that proposes a candidate and a check that accepts it (returning the span to report, which
for `password=...` assignments is only the value) or rejects it. Checksums (Luhn, ISO 7064 mod 97), IIN prefixes,
IBAN lengths, SSN ranges, octet ranges and Shannon entropy keep look-alikes (order numbers, versions, dates) out.

Whitespace inside any entity is a single literal space (cards, phones, IBANs, SSNs), spaces and tabs next to the
`:`/`=` of an assignment or after `Bearer`, or spaces inside a quoted assignment value (`"correct horse battery"`);
only PEM blocks span newlines. `StreamRedactor` relies on this.
"""
from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import math
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

PII_TYPES = ("EMAIL", "PHONE", "CREDIT_CARD", "IBAN", "US_SSN", "IP_ADDRESS", "API_KEY")
# When two candidates overlap and have the same length, the lower number wins (PEM blocks are API_KEY).
PRIORITY = {"API_KEY": 0, "IBAN": 1, "CREDIT_CARD": 2, "US_SSN": 3, "EMAIL": 4, "IP_ADDRESS": 5, "PHONE": 6}
# Generic `password=...` values count as secrets at or above this many bits per character: an 8-character value
# needs 8 distinct characters; `changeme` (2.75) and `password` (2.75) stay below, `Summer2024!` (3.1) is above.
ENTROPY_BITS = 3.0
MIN_SECRET_LEN = 8

# IBAN length by country (SWIFT IBAN registry): the SEPA countries, GB, and common non-SEPA ones.
IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29, "CH": 21,
    "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FO": 18,
    "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23,
    "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21,
    "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15, "PK": 24, "PL": 28,
    "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24, "SC": 31, "SE": 24, "SI": 19, "SK": 24, "SM": 27,
    "ST": 25, "SV": 28, "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}

Span = tuple[int, int]


@dataclass(frozen=True, slots=True)
class Rule:
    """One candidate regex for a PII type and the check that accepts a candidate (returning its span) or not."""

    type: str
    pattern: re.Pattern[str]
    check: Callable[[re.Match[str]], Span | None]


def _whole(m: re.Match[str]) -> Span | None:
    """Accept the match as it is (the regex alone is specific enough)."""
    return m.span()


def shannon_entropy(s: str) -> float:
    """Bits per character of `s`'s character distribution (0 for a repeated character, log2(len) at most)."""
    n = len(s)
    return -sum(c / n * math.log2(c / n) for c in Counter(s).values()) if n else 0.0


# ---- EMAIL ----------------------------------------------------------------------------------------------------
_EMAIL = re.compile(
    r"(?<![\w.%+-])[A-Za-z0-9](?:[A-Za-z0-9._%+-]{0,62}[A-Za-z0-9_%+-])?"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?!\.?[A-Za-z0-9-])")
_URL_AUTHORITY = re.compile(r"://[^\s/@]*$")
_FILE_TLDS = {"png", "jpg", "jpeg", "gif", "svg", "webp", "ico", "bmp", "tiff"}  # icon@2x.png is not an address


def _email(m: re.Match[str]) -> Span | None:
    """Reject `..` in the local part, image names (`logo@2x.png`) and URL user info (`amqp://user@host`)."""
    local, _, domain = m.group().rpartition("@")
    if ".." in local or domain.rsplit(".", 1)[1].lower() in _FILE_TLDS:
        return None
    return None if _URL_AUTHORITY.search(m.string, max(0, m.start() - 80), m.start()) else m.span()


# ---- PHONE ----------------------------------------------------------------------------------------------------
# Not glued to a word, a `+`, a `-`/`.`/`/` (IDs, versions, paths) or to a preceding "digit space" (a longer number);
# not followed by a word character or another digit group, so only a whole digit run can match.
_LB = r"(?<![\w+\-./])(?<!\d )"
_LA = r"(?![\w]|[ .-]?\d)"
_GROUP = r"(?:\(\d{1,4}\)|\d{1,12})"
_PHONE_INTL = re.compile(_LB + r"(?:\(\+[1-9]\d{0,2}\)|(?:\+|00)[1-9]\d{0,2})(?:[ .-]?\(0\))?[ .-]?" + _GROUP
                         + r"(?:[ .-]" + _GROUP + r"){0,6}" + _LA)
_PHONE_NANP = re.compile(_LB + r"(?:1[ .-]?)?[2-9]\d{2}(?P<s>[ .-])\d{3}(?P=s)\d{4}" + _LA)
_PHONE_NANP_PAREN = re.compile(_LB + r"(?:1[ .-]?)?\([2-9]\d{2}\) ?\d{3}[ .-]\d{4}" + _LA)
_PHONE_TRUNK = re.compile(_LB + r"0[1-9]\d{0,4}(?P<s>[ ./-])\d{2,8}(?:(?P=s)\d{2,8}){0,3}" + _LA)  # 030/1234567
_PHONE_TRUNK_PAREN = re.compile(_LB + r"\(0\d{1,4}\) ?\d{2,8}(?:[ .-]\d{2,8}){0,2}" + _LA)
_PHONE_PAIRS = re.compile(_LB + r"[6-9]\d{2}(?P<s>[ .])\d{2}(?P=s)\d{2}(?P=s)\d{2}" + _LA)  # Spanish 612 34 56 78
_IBAN_RUN = re.compile(r"(?<![A-Za-z0-9])[A-Za-z]{2}\d{2}(?: [A-Za-z0-9]{4})* $")
_PHONE_LOCAL = re.compile(_LB + r"[2-9]\d{2}[ .-]\d{4}" + _LA)  # 555-0143: only after a phone word
_PHONE_CONTEXT = re.compile(r"(?i)\b(?:call|phone|tel|mobile|cell|text|ring|reach|fax|whatsapp|sms|ph)\b")
PHONE_CONTEXT_CHARS = 20
_SSN_SHAPE = re.compile(r"\d{3}([ -])\d{2}\1\d{4}")
_DATE_SHAPE = re.compile(r"\d{1,4}([./-])\d{1,2}\1\d{1,4}")


def _after_iban_head(m: re.Match[str]) -> bool:
    """Whether the match continues an IBAN-shaped run (`NL91 ABNA 0417...`): its digits belong to that IBAN."""
    return _IBAN_RUN.search(m.string, max(0, m.start() - 40), m.start()) is not None


def _phone(lo: int, hi: int) -> Callable[[re.Match[str]], Span | None]:
    """A phone check accepting lo..hi digits, never an SSN or date shape, and `00` prefixes only when grouped."""
    def check(m: re.Match[str]) -> Span | None:
        """Digit count in range; not an SSN/date shape nor an IBAN's tail."""
        s = m.group()
        digits = sum(c.isdigit() for c in s)
        if not lo <= digits <= hi or _SSN_SHAPE.fullmatch(s) or _DATE_SHAPE.fullmatch(s) or _after_iban_head(m):
            return None
        if s.startswith("00") and not re.search(r"[ .()-]", s):
            return None
        return m.span()
    return check


def _phone_local(m: re.Match[str]) -> Span | None:
    """A 7-digit local number, only right after a word such as "call", "phone" or "text"."""
    before = m.string[max(0, m.start() - PHONE_CONTEXT_CHARS):m.start()]
    return m.span() if _PHONE_CONTEXT.search(before) else None


# ---- CREDIT_CARD ----------------------------------------------------------------------------------------------
# Compact, or 2-6 groups of 3-6 digits with one kind of separator; not followed by another digit group unless it
# is an expiry date (`4111 1111 1111 1111 12/27`).
_CARD = re.compile(r"(?<![\w.+-])(?<!\d )(?:\d{13,19}|\d{3,6}(?P<s>[ -])\d{3,6}(?:(?P=s)\d{3,6}){0,4})"
                   r"(?![\w]|[ .-]\d(?!\d?/))")


def luhn_ok(digits: str) -> bool:
    """The Luhn (mod 10) checksum every payment card number carries in its last digit."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def card_brand(d: str) -> str | None:
    """The network whose IIN prefix and length `d` (digits only) fits, or None."""
    n, p2, p3, p4, p6 = len(d), int(d[:2]), int(d[:3]), int(d[:4]), int(d[:6])
    brands = (
        ("visa", d[0] == "4" and n in (13, 16, 19)),
        ("mastercard", (51 <= p2 <= 55 or 2221 <= p4 <= 2720) and n == 16),
        ("amex", p2 in (34, 37) and n == 15),
        ("discover", (p4 == 6011 or p2 == 65 or 644 <= p3 <= 649 or 622126 <= p6 <= 622925) and 16 <= n <= 19),
        ("jcb", 3528 <= p4 <= 3589 and 16 <= n <= 19),
        ("diners", (p2 in (36, 38, 39) or 300 <= p3 <= 305) and 14 <= n <= 19),
    )
    return next((name for name, ok in brands if ok), None)


def _card(m: re.Match[str]) -> Span | None:
    """13-19 digits with a known IIN and a valid Luhn digit, not the tail of an IBAN."""
    digits = re.sub(r"\D", "", m.group())
    if not 13 <= len(digits) <= 19 or _after_iban_head(m):
        return None
    return m.span() if card_brand(digits) and luhn_ok(digits) else None


# ---- IBAN -----------------------------------------------------------------------------------------------------
_IBAN_COMPACT = re.compile(r"(?<![A-Za-z0-9])[A-Za-z]{2}\d{2}[A-Za-z0-9]{11,30}(?![A-Za-z0-9])")
_IBAN_SPACED = re.compile(r"(?<![A-Za-z0-9])[A-Za-z]{2}\d{2}(?: [A-Za-z0-9]{4}){2,7}(?: [A-Za-z0-9]{1,4})?"
                          r"(?![A-Za-z0-9])")


def iban_ok(iban: str) -> bool:
    """Known country, the registry length and the ISO 7064 mod-97 check (`iban` without spaces)."""
    iban = iban.upper()
    if IBAN_LENGTHS.get(iban[:2]) != len(iban) or not iban.isalnum():
        return False
    return int("".join(str(int(c, 36)) for c in iban[4:] + iban[:4])) % 97 == 1


def _iban(m: re.Match[str]) -> Span | None:
    """Cut a spaced candidate back to its country's length (a word may follow it) and verify it."""
    s = m.group()
    want = IBAN_LENGTHS.get(s[:2].upper())
    if want is None:
        return None
    seen, end = 0, len(s)
    for i, ch in enumerate(s):
        seen += ch != " "
        if seen == want:
            end = i + 1
            break
    if end < len(s) and s[end] != " ":
        return None
    return (m.start(), m.start() + end) if iban_ok(s[:end].replace(" ", "")) else None


# ---- US_SSN ---------------------------------------------------------------------------------------------------
_SSN = re.compile(r"(?<![\w-])(?<!\d )(\d{3})([- ])(\d{2})\2(\d{4})(?![\w]|[ -]\d)")
_SSN_BARE = re.compile(r"(?<![\w-])\d{9}(?![\w-])")
_SSN_CONTEXT = re.compile(r"(?i)\bssn|social\s+sec|security\s+(?:number|no\b)|\bss#")
SSN_CONTEXT_CHARS = 20  # a bare 9-digit SSN needs "SSN"/"social security" this close before it


def ssn_ok(digits: str) -> bool:
    """Area not 000, 666 or 9xx; group not 00; serial not 0000 (never issued)."""
    area, group, serial = int(digits[:3]), int(digits[3:5]), int(digits[5:])
    return area not in (0, 666) and area < 900 and group != 0 and serial != 0


def _ssn(m: re.Match[str]) -> Span | None:
    """A grouped SSN in the issued ranges."""
    return m.span() if ssn_ok(m.group(1) + m.group(3) + m.group(4)) else None


def _ssn_bare(m: re.Match[str]) -> Span | None:
    """A bare 9-digit SSN, only right after a context word."""
    before = m.string[max(0, m.start() - SSN_CONTEXT_CHARS):m.start()]
    return m.span() if _SSN_CONTEXT.search(before) and ssn_ok(m.group()) else None


# ---- IP_ADDRESS -----------------------------------------------------------------------------------------------
_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w]|\.\d)")
_IPV6 = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f:]{2,32}:(?:\d{1,3}\.){3}\d{1,3}|[0-9A-Fa-f:]{2,39})"
                   r"(?:%[A-Za-z0-9]+)?(?![\w:]|\.\d)")


def _octets_ok(s: str) -> bool:
    """Four decimal octets 0-255 without leading zeros (`010` is ambiguous, often octal)."""
    return all(int(o) <= 255 and (o == "0" or o[0] != "0") for o in s.split("."))


def _ipv4(m: re.Match[str]) -> Span | None:
    """A dotted quad with valid octets."""
    return m.span() if _octets_ok(m.group()) else None


def _ipv6(m: re.Match[str]) -> Span | None:
    """Valid for `ipaddress` and with 3+ groups, so `a::b` in code or `12:30:45` never counts."""
    addr = m.group().split("%")[0]
    try:
        ipaddress.IPv6Address(addr)
    except ValueError:
        return None
    groups = [g for g in addr.split(":") if g]
    weight = sum(2 if "." in g else 1 for g in groups)
    return m.span() if weight >= 3 else None


# ---- API_KEY (keys, tokens, PEM private keys and secret assignments) ------------------------------------------
# Private keys are not a type of their own: a leaked key is redacted and restored like any other secret.
_OPENAI = re.compile(r"(?<![\w-])sk-(?:proj-|ant-(?:api\d\d-|admin\d\d-)?|svcacct-|admin-)?[A-Za-z0-9_-]{20,}"
                     r"(?![\w-])")
_AWS = re.compile(r"(?<![A-Za-z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Za-z0-9])")
_GITHUB = re.compile(r"(?<![A-Za-z0-9_])(?:gh[pousr]_[A-Za-z0-9]{36,251}|github_pat_[A-Za-z0-9_]{22,255})"
                     r"(?![A-Za-z0-9_])")
_SLACK = re.compile(r"(?<![A-Za-z0-9-])xox[baprs]-[A-Za-z0-9-]{10,250}(?![A-Za-z0-9-])")
_HUGGINGFACE = re.compile(r"(?<![A-Za-z0-9_])hf_[A-Za-z0-9]{30,64}(?![A-Za-z0-9_])")
_GOOGLE = re.compile(r"(?<![A-Za-z0-9_-])AIza[0-9A-Za-z_-]{35}(?![0-9A-Za-z_-])")
_STRIPE = re.compile(r"(?<![A-Za-z0-9_])(?:(?:sk|rk|pk)_live|(?:sk|rk)_test)_[0-9A-Za-z]{16,247}(?![0-9A-Za-z_])")
_JWT = re.compile(r"(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}(?![A-Za-z0-9_-])")
PEM_HEADER = re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----")
PEM_END = re.compile(r"-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----")
# A block runs to its END line; an unterminated one (a truncated reply) runs over the base64/header lines after it.
PEM_BLOCK = re.compile(PEM_HEADER.pattern + r"(?:[\s\S]*?" + PEM_END.pattern
                       + r"|(?:\r?\n(?:[A-Za-z0-9+/=]+|(?:Proc-Type|DEK-Info):[^\r\n]*))+(?=\r?\n|$))")
_KEYWORDS = (r"password|passwd|passphrase|pass|pwd|secret|token|credential"
             r"|(?:secret|api|access|private|auth|signing|encryption|master)[_-]?key")
_ASSIGN_HEAD = (r"(?i)(?<![A-Za-z0-9_.-])(?P<key>[A-Za-z0-9_.-]{0,40}?(?:" + _KEYWORDS + r")s?)[\"']?[ \t]{0,16}"
                r"(?P<op>:=|[:=])[ \t]{0,16}")
# A quoted value may hold spaces (a passphrase) but not a newline; an unquoted one ends at whitespace or , ; &.
ASSIGN = re.compile(_ASSIGN_HEAD + r"(?:\"(?P<dq>[^\"\n]{8,})\"|'(?P<sq>[^'\n]{8,})'|(?P<bare>[^\s\"'`,;&]{8,}))")
ASSIGN_OPEN_QUOTE = re.compile(_ASSIGN_HEAD + r"(?:\"[^\"\n]*|'[^'\n]*)\Z")  # a quoted value still arriving
_KEY_SUFFIX = re.compile(r"(?:" + _KEYWORDS + r")$")
_SK_PREFIX = re.compile(r"^sk-(?:proj-|ant-(?:api\d\d-|admin\d\d-)?|svcacct-|admin-)?")
_BEARER = re.compile(r"(?i)(?<![A-Za-z0-9])(?:bearer|basic)[ \t]+(?P<bare>[A-Za-z0-9._~+/=-]{12,})")
_URL_PASSWORD = re.compile(r"(?<=://)[^\s:/@]{1,64}:(?P<bare>[^\s:/@]{8,128})@")  # scheme://user:password@host
_PLACEHOLDER = re.compile(r"(?i)your|example|placeholder|changeme|change_me|redacted|dummy|xxxx|\*\*\*")
_NOT_A_SECRET = re.compile(  # variables, templates, calls, paths and dotted names that only point at a secret
    r"\$[{(]|\$[A-Za-z_]\w*$|<[^>]*>$|\{\{|%\(|%\w+%$|[\w.]+[(\[]|(?:~|\.{1,2})?/|[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+$")


def _body_random(m: re.Match[str]) -> Span | None:
    """An `sk-` key body looks random: a digit, 16+ letters/digits in a row, high entropy (not `sk-learn-...`)."""
    body = _SK_PREFIX.sub("", m.group())
    random_run = re.search(r"[A-Za-z0-9]{16}", body) is not None
    return m.span() if random_run and re.search(r"\d", body) and shannon_entropy(body) >= ENTROPY_BITS else None


def _mixed_case(m: re.Match[str]) -> Span | None:
    """Hugging Face tokens are random mixed-case letters (digits optional), unlike `hf_` identifiers."""
    body = m.group()[3:]
    mixed = body.lower() != body and body.upper() != body
    return m.span() if mixed and shannon_entropy(body) >= ENTROPY_BITS else None


def _has_digit(m: re.Match[str]) -> Span | None:
    """Slack tokens carry numeric workspace/user ids."""
    return m.span() if re.search(r"\d", m.group()) else None


def _jwt(m: re.Match[str]) -> Span | None:
    """The first segment must decode to a JSON object (the JOSE header)."""
    head = m.group().split(".", 1)[0]
    try:
        decoded = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    except (ValueError, binascii.Error):
        return None
    return m.span() if isinstance(decoded, dict) else None


def secret_value_ok(value: str) -> bool:
    """Long enough, random enough (`ENTROPY_BITS`), and not a placeholder, variable, path or call."""
    if len(value) < MIN_SECRET_LEN or _PLACEHOLDER.search(value) or _NOT_A_SECRET.match(value):
        return False
    return shannon_entropy(value) >= ENTROPY_BITS


def _key_name_ok(key: str) -> bool:
    """The key ends in a secret keyword at a word boundary (`db_password`, `apiKey`; not `mytoken`, `max_tokens`)."""
    low = key.lower()
    if low.endswith("tokens"):
        return False
    if low.endswith("s") and not _KEY_SUFFIX.search(low):
        key, low = key[:-1], low[:-1]
    found = _KEY_SUFFIX.search(low)
    if found is None:
        return False
    i = found.start()
    return i == 0 or key[i - 1] in "_.-" or (key[i - 1].islower() and key[i].isupper())


def _assign(m: re.Match[str]) -> Span | None:
    """`password = value`: only the value is reported; an unquoted `key: Word` must not be a plain word (prose)."""
    group = next(g for g in ("dq", "sq", "bare") if m.group(g) is not None)
    value = m.group(group)
    if not _key_name_ok(m.group("key")) or not secret_value_ok(value):
        return None
    if group == "bare" and m.group("op") == ":" and value.isalpha() and (value.islower() or value.istitle()):
        return None
    return m.span(group)


def _url_password(m: re.Match[str]) -> Span | None:
    """The password in `scheme://user:password@host`, when it is not a placeholder."""
    return m.span("bare") if secret_value_ok(m.group("bare")) else None


def _bearer(m: re.Match[str]) -> Span | None:
    """`Authorization: Bearer <token>`: the token is reported when it looks random."""
    return m.span("bare") if secret_value_ok(m.group("bare")) else None


RULES: tuple[Rule, ...] = (
    Rule("EMAIL", _EMAIL, _email),
    Rule("PHONE", _PHONE_INTL, _phone(8, 15)),
    Rule("PHONE", _PHONE_NANP, _phone(10, 11)),
    Rule("PHONE", _PHONE_NANP_PAREN, _phone(10, 11)),
    Rule("PHONE", _PHONE_TRUNK, _phone(9, 12)),
    Rule("PHONE", _PHONE_TRUNK_PAREN, _phone(9, 12)),
    Rule("PHONE", _PHONE_PAIRS, _phone(9, 9)),
    Rule("PHONE", _PHONE_LOCAL, _phone_local),
    Rule("CREDIT_CARD", _CARD, _card),
    Rule("IBAN", _IBAN_COMPACT, _iban),
    Rule("IBAN", _IBAN_SPACED, _iban),
    Rule("US_SSN", _SSN, _ssn),
    Rule("US_SSN", _SSN_BARE, _ssn_bare),
    Rule("IP_ADDRESS", _IPV4, _ipv4),
    Rule("IP_ADDRESS", _IPV6, _ipv6),
    Rule("API_KEY", _OPENAI, _body_random),
    Rule("API_KEY", _AWS, _whole),
    Rule("API_KEY", _GITHUB, _whole),
    Rule("API_KEY", _SLACK, _has_digit),
    Rule("API_KEY", _GOOGLE, _whole),
    Rule("API_KEY", _HUGGINGFACE, _mixed_case),
    Rule("API_KEY", _STRIPE, _whole),
    Rule("API_KEY", _JWT, _jwt),
    Rule("API_KEY", PEM_BLOCK, _whole),
    Rule("API_KEY", ASSIGN, _assign),
    Rule("API_KEY", _BEARER, _bearer),
    Rule("API_KEY", _URL_PASSWORD, _url_password),
)
