"""Synthetic evaluation of `temper.safety.pii`: labelled messages, span-level precision/recall/F1, decoy hits.

The generator builds entities from their own definitions (brand prefixes + Luhn, IBAN BBAN layouts + mod 97,
SSN ranges, E.164 plans...), not from the detector's regexes, and writes them the ways people do: spaced or not,
in parentheses, quotes, URLs and `mailto:` links, before a full stop, in odd casing. Around them it puts decoys
that must not be flagged: Luhn-invalid card numbers, IBANs with a wrong check, SSNs in never-issued ranges,
999.x IPs, dates, times, versions, order numbers, prices, ISBNs, UUIDs, git SHAs, MAC addresses and placeholder
secrets (`password=changeme`, `${API_KEY}`): a low-entropy or templated value is a placeholder, not a secret.

    python -m temper.safety.pii_eval --n 2000 --seed 0
"""
from __future__ import annotations

import argparse
import base64
import json
import random
import re
import statistics
import string
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field

from temper.safety.pii import PII_TYPES, detect

Part = str | tuple[str, str, str]  # plain text, or ("E", type, value) / ("D", decoy label, value)


@dataclass(frozen=True)
class LabelledText:
    """A message with its gold entity spans (type, start, end) and the spans of decoys that must stay unflagged."""

    text: str
    spans: list[tuple[str, int, int]]
    decoys: list[tuple[str, int, int]] = field(default_factory=list)


def _assemble(parts: Sequence[Part]) -> LabelledText:
    """Join text parts, recording where each entity and decoy lands."""
    out, spans, decoys, pos = [], [], [], 0
    for part in parts:
        value = part if isinstance(part, str) else part[2]
        if not isinstance(part, str):
            (spans if part[0] == "E" else decoys).append((part[1], pos, pos + len(value)))
        out.append(value)
        pos += len(value)
    return LabelledText("".join(out), spans, decoys)


# ---- entity generators ----------------------------------------------------------------------------------------
FIRST = ["jane", "john", "maria", "li", "ahmed", "sofia", "lukas", "chloe", "raj", "emma", "olga", "mateo", "yuki"]
LAST = ["doe", "smith", "garcia", "wang", "khan", "rossi", "muller", "martin", "patel", "novak", "silva", "tanaka"]
DOMAINS = ["example.com", "mail.example.org", "acme-corp.io", "uni-heidelberg.de", "company.co.uk", "gmail.com",
           "outlook.fr", "post.example.net", "shop.example.com.au", "my-startup.ai"]


def _digits(r: random.Random, n: int) -> str:
    """`n` random decimal digits."""
    return "".join(r.choice(string.digits) for _ in range(n))


def gen_email(r: random.Random) -> str:
    """An address in one of the usual local-part shapes, sometimes in mixed case."""
    f, l = r.choice(FIRST), r.choice(LAST)
    local = r.choice([f"{f}.{l}", f"{f[0]}{l}", f"{f}_{l}{r.randint(1, 99)}", f"{f}+{r.choice(['news', 'x'])}",
                      f"{l}.{f}", f"{f}{r.randint(1970, 2005)}", f"{f}-{l}"])
    email = f"{local}@{r.choice(DOMAINS)}"
    return email.title() if r.random() < 0.1 else email


def gen_phone(r: random.Random) -> str:
    """A phone number in a US, UK, German, French, Dutch, Spanish, Italian, Irish or Swiss format."""
    a, e, ln = str(r.randint(201, 989)), str(r.randint(200, 999)), _digits(r, 4)
    d = lambda n: _digits(r, n)
    formats = [
        f"({a}) {e}-{ln}", f"{a}-{e}-{ln}", f"{a}.{e}.{ln}", f"+1 {a} {e} {ln}", f"+1-{a}-{e}-{ln}",
        f"1-{a}-{e}-{ln}", f"+1 ({a}) {e}-{ln}", f"+1{a}{e}{ln}", f"{a} {e} {ln}",
        f"+44 20 {d(4)} {d(4)}", f"+44 (0)20 {d(4)} {d(4)}", f"020 {d(4)} {d(4)}", f"07{d(3)} {d(6)}",
        f"+44 7{d(3)} {d(6)}", f"+447{d(9)}", f"+49 30 {d(8)}", f"030 {d(8)}", f"+49 171 {d(7)}",
        f"0171 {d(7)}", f"+33 1 {d(2)} {d(2)} {d(2)} {d(2)}", f"01 {d(2)} {d(2)} {d(2)} {d(2)}",
        f"06.{d(2)}.{d(2)}.{d(2)}.{d(2)}", f"+33 6 {d(2)} {d(2)} {d(2)} {d(2)}", f"+31 6 {d(8)}", f"06-{d(8)}",
        f"+34 6{d(2)} {d(2)} {d(2)} {d(2)}", f"6{d(2)} {d(2)} {d(2)} {d(2)}", f"+39 06 {d(4)} {d(4)}",
        f"+39 3{d(2)} {d(3)} {d(4)}", f"+353 1 {d(3)} {d(4)}", f"+41 44 {d(3)} {d(2)} {d(2)}",
        f"0044 20 {d(4)} {d(4)}", f"(+44) 20 {d(4)} {d(4)}", f"+1 ({a}) {e} {ln}", f"({a}){e}-{ln}",
        f"+33 (0)1 {d(2)} {d(2)} {d(2)} {d(2)}", f"+49-30-{d(8)}", f"030/{d(8)}", f"0171/{d(7)}",
    ]
    return r.choice(formats)


def _luhn_digit(body: str) -> str:
    """The check digit that makes `body + digit` pass Luhn."""
    total = 0
    for i, ch in enumerate(reversed(body)):
        v = int(ch) * (2 if i % 2 == 0 else 1)
        total += v - 9 if v > 9 else v
    return str((10 - total % 10) % 10)


CARD_PREFIXES = [("4", 16), ("4", 13), ("51", 16), ("55", 16), ("2221", 16), ("2720", 16), ("34", 15), ("37", 15),
                 ("6011", 16), ("65", 16), ("644", 16), ("3528", 16), ("3589", 16), ("36", 14), ("38", 14),
                 ("300", 14), ("6011", 19)]
TEST_CARDS = ["4111111111111111", "5555555555554444", "378282246310005", "6011111111111117", "3530111333300000",
              "4012888888881881", "5105105105105100", "30569309025904"]


def _card_number(r: random.Random) -> str:
    """Digits of a valid card: a brand prefix, random digits and a Luhn check digit (or a well-known test card)."""
    if r.random() < 0.15:
        return r.choice(TEST_CARDS)
    prefix, n = r.choice(CARD_PREFIXES)
    body = prefix + _digits(r, n - len(prefix) - 1)
    return body + _luhn_digit(body)


def _group_card(d: str, r: random.Random) -> str:
    """Write card digits compact, in 4s with spaces or dashes, or 4-6-5 / 4-6-4 for Amex and Diners."""
    sep = r.choice(["", " ", " ", "-"])
    if not sep:
        return d
    sizes = {13: [4, 3, 3, 3], 14: [4, 6, 4], 15: [4, 6, 5]}.get(len(d), [4] * (len(d) // 4) + [len(d) % 4])
    groups, i = [], 0
    for s in sizes:
        if s:
            groups.append(d[i:i + s])
            i += s
    return sep.join(groups)


def gen_card(r: random.Random) -> str:
    """A valid card number in a common grouping."""
    return _group_card(_card_number(r), r)


# BBAN layouts from the SWIFT registry: n = digits, a = upper-case letters, c = alphanumerics.
BBAN = {"DE": "18n", "GB": "4a14n", "FR": "10n11c2n", "ES": "20n", "IT": "1a10n12c", "NL": "4a10n", "BE": "12n",
        "AT": "16n", "CH": "5n12c", "PL": "24n", "PT": "21n", "IE": "4a14n", "SE": "20n", "NO": "11n", "DK": "14n",
        "FI": "14n", "LU": "3n13c", "CZ": "20n", "HU": "24n", "RO": "4a16c", "GR": "7n16c", "MT": "4a5n18c"}


def _bban(r: random.Random, layout: str) -> str:
    """Random characters following a BBAN layout such as `4a14n`."""
    out, num = [], ""
    for ch in layout:
        if ch.isdigit():
            num += ch
            continue
        pool = {"n": string.digits, "a": string.ascii_uppercase, "c": string.digits + string.ascii_uppercase}[ch]
        out += [r.choice(pool) for _ in range(int(num))]
        num = ""
    return "".join(out)


def _iban_check(country: str, bban: str) -> str:
    """The two ISO 7064 mod-97 check digits of an IBAN."""
    n = int("".join(str(int(c, 36)) for c in bban + country + "00"))
    return f"{98 - n % 97:02d}"


def _format_iban(iban: str, r: random.Random) -> str:
    """Compact, or in groups of four (the paper format); now and then in lower case."""
    s = iban if r.random() < 0.4 else " ".join(iban[i:i + 4] for i in range(0, len(iban), 4))
    return s.lower() if r.random() < 0.05 else s


def _iban_raw(r: random.Random) -> str:
    """A valid IBAN without spaces."""
    if r.random() < 0.1:
        return r.choice(["GB82WEST12345698765432", "DE89370400440532013000", "NL91ABNA0417164300"])
    country = r.choice(sorted(BBAN))
    bban = _bban(r, BBAN[country])
    return country + _iban_check(country, bban) + bban


def gen_iban(r: random.Random) -> str:
    """A valid IBAN, written compact or spaced."""
    return _format_iban(_iban_raw(r), r)


def _ssn_digits(r: random.Random) -> tuple[str, str, str]:
    """Area, group and serial in the issued ranges."""
    area = r.choice([a for a in range(1, 900) if a != 666])
    return f"{area:03d}", f"{r.randint(1, 99):02d}", f"{r.randint(1, 9999):04d}"


def gen_ssn(r: random.Random) -> str:
    """A grouped SSN (dashes or spaces)."""
    return r.choice(["-", "-", " "]).join(_ssn_digits(r))


def gen_ip(r: random.Random) -> str:
    """An IPv4 (private or public) or IPv6 (full, compressed, link-local, IPv4-mapped) address."""
    q = lambda: str(r.randint(1, 254))
    h = lambda: f"{r.randint(1, 0xffff):x}"
    v6 = [f"2001:db8:{h()}:{h()}::{h()}", f"2001:0db8:{r.randint(0, 0xffff):04x}:0000:0000:8a2e:0370:{h()}",
          f"fe80::{h()}:{h()}:{h()}:{h()}", f"2a00:1450:4001:{h()}::{h()}", f"::ffff:{q()}.{q()}.{q()}.{q()}",
          f"2001:db8:{h()}:{h()}:{h()}:{h()}:{h()}:{h()}".upper()]
    v4 = [f"10.{q()}.{q()}.{q()}", f"192.168.{q()}.{q()}", f"172.{r.randint(16, 31)}.{q()}.{q()}",
          f"{r.randint(11, 223)}.{q()}.{q()}.{q()}", f"8.8.{r.choice([4, 8])}.{r.choice([4, 8])}"]
    return r.choice(v6) if r.random() < 0.3 else r.choice(v4)


def _rand(r: random.Random, pool: str, n: int) -> str:
    """`n` random characters from `pool`."""
    return "".join(r.choice(pool) for _ in range(n))


ALNUM = string.ascii_letters + string.digits
B64URL = ALNUM + "-_"


def _b64url(obj: dict) -> str:
    """Base64url of compact JSON, without padding (a JWT segment)."""
    return base64.urlsafe_b64encode(json.dumps(obj, separators=(",", ":")).encode()).decode().rstrip("=")


def gen_jwt(r: random.Random) -> str:
    """A signed JWT with a realistic header and claims."""
    head = _b64url({"alg": r.choice(["HS256", "RS256", "ES256"]), "typ": "JWT"})
    iat = r.randint(1_600_000_000, 1_800_000_000)
    body = _b64url({"sub": str(r.randint(10**6, 10**9)), "name": r.choice(FIRST).title(), "iat": iat})
    return f"{head}.{body}.{_rand(r, B64URL, r.choice([43, 86]))}"


def gen_pem(r: random.Random) -> str:
    """A PEM private-key block (RSA, EC, OpenSSH or PKCS#8) with random base64 lines."""
    label = r.choice(["RSA PRIVATE KEY", "EC PRIVATE KEY", "OPENSSH PRIVATE KEY", "PRIVATE KEY"])
    pool = string.ascii_letters + string.digits + "+/"
    lines = [_rand(r, pool, 64) for _ in range(r.randint(2, 6))] + [_rand(r, pool, r.randint(8, 60)) + "=="]
    return "\n".join([f"-----BEGIN {label}-----", *lines, f"-----END {label}-----"])


def gen_known_key(r: random.Random) -> str:
    """A key in one of the provider formats (OpenAI, Anthropic, AWS, GitHub, Slack, Google, Stripe) or a JWT."""
    makers: list[Callable[[], str]] = [
        lambda: "sk-" + _rand(r, ALNUM, 48),
        lambda: "sk-proj-" + _rand(r, B64URL, 156),
        lambda: "sk-ant-api03-" + _rand(r, B64URL, 93) + "AA",
        lambda: r.choice(["AKIA", "ASIA"]) + _rand(r, string.ascii_uppercase + string.digits, 16),
        lambda: f"gh{r.choice('pousr')}_" + _rand(r, ALNUM, 36),
        lambda: "github_pat_" + _rand(r, ALNUM, 22) + "_" + _rand(r, ALNUM, 59),
        lambda: f"xox{r.choice('bp')}-{_digits(r, 12)}-{_digits(r, 13)}-" + _rand(r, ALNUM, 24),
        lambda: "AIza" + _rand(r, B64URL, 35),
        lambda: "hf_" + _rand(r, ALNUM, 34),
        lambda: r.choice(["sk_live_", "rk_live_", "pk_live_", "sk_test_"]) + _rand(r, ALNUM, 24),
        lambda: gen_jwt(r),
    ]
    return r.choice(makers)()


def gen_password(r: random.Random, quoted: bool) -> str:
    """A random password as a manager would make it; `,;&` only where the value is quoted."""
    pool = ALNUM + "!@#%^*-_+=?~" + (",;&" if quoted else "")
    return _rand(r, pool, r.randint(12, 28))


# ---- decoy generators -----------------------------------------------------------------------------------------
def _bad_card(r: random.Random) -> str:
    """A brand-prefixed card number whose Luhn digit is wrong."""
    d = _card_number(r)
    return _group_card(d[:-1] + str((int(d[-1]) + r.randint(1, 9)) % 10), r)


def _bad_iban(r: random.Random) -> str:
    """An IBAN with one BBAN digit changed, so mod 97 fails."""
    s = _iban_raw(r)
    i = r.choice([k for k in range(4, len(s)) if s[k].isdigit()])
    return _format_iban(s[:i] + str((int(s[i]) + r.randint(1, 9)) % 10) + s[i + 1:], r)


def _bad_ssn(r: random.Random) -> str:
    """An SSN-shaped number in a never-issued range (area 000/666/9xx, group 00 or serial 0000)."""
    a, g, s = _ssn_digits(r)
    which = r.randrange(4)
    a = r.choice(["000", "666", str(r.randint(900, 999))]) if which < 2 else a
    g, s = ("00", s) if which == 2 else (g, "0000") if which == 3 else (g, s)
    return f"{a}-{g}-{s}"


def _n(r: random.Random, lo: int, hi: int, width: int = 0) -> str:
    """A random integer in [lo, hi], zero-padded to `width`."""
    return f"{r.randint(lo, hi):0{width}d}"


def _bad_ip(r: random.Random) -> str:
    """A dotted quad with an octet above 255."""
    return r.choice([f"999.{_n(r, 1, 9)}.{_n(r, 1, 9)}.{_n(r, 1, 9)}", f"256.{_n(r, 0, 255)}.1.1",
                     f"10.0.0.{_n(r, 256, 999)}"])


def _date(r: random.Random) -> str:
    """ISO, US-slash or European-dot date."""
    d, m = _n(r, 1, 28, 2), _n(r, 1, 12, 2)
    return r.choice([f"2024-{m}-{d}", f"{d}/{m}/2023", f"{d}.{m}.2024"])


def _time(r: random.Random) -> str:
    """HH:MM or HH:MM:SS."""
    return ":".join(_n(r, 0, hi, 2) for hi in (23, 59, 59)[:r.choice([2, 3])])


def _timestamp(r: random.Random) -> str:
    """An ISO 8601, Apache or Python-logging timestamp."""
    d, hh, mm, ss = _n(r, 1, 28, 2), _n(r, 0, 23, 2), _n(r, 0, 59, 2), _n(r, 0, 59, 2)
    return r.choice([f"2024-03-{d}T{hh}:{mm}:{ss}Z", f"[{d}/Jan/2024:{hh}:{mm}:{ss} +0000]",
                     f"2024-03-{d} {hh}:{mm}:{ss},{_digits(r, 3)}"])


def _version(r: random.Random) -> str:
    """Semantic, v-prefixed four-part, five-part or Windows-build version strings."""
    x = lambda: _n(r, 0, 9)
    return r.choice([f"{x()}.{_n(r, 0, 30)}.{_n(r, 0, 99)}", f"v{x()}.{x()}.{x()}.{x()}",
                     f"{x()}.{x()}.{x()}.{x()}.{_n(r, 1, 9)}", f"10.0.{_n(r, 19041, 22631)}.{_n(r, 100, 4000)}"])


def _order(r: random.Random) -> str:
    """Order, invoice or tracking numbers."""
    return r.choice([f"ORD-2024-{_digits(r, 6)}", f"#{_digits(r, 5)}", f"A{_digits(r, 9)}",
                     f"{_digits(r, 3)}-{_digits(r, 7)}-{_digits(r, 7)}", _digits(r, 10)])


def _price(r: random.Random) -> str:
    """Prices with thousands separators in US and European styles."""
    return r.choice([f"${_n(r, 1, 9)},{_digits(r, 3)}.{_digits(r, 2)}", f"€{_n(r, 5, 999)},{_digits(r, 2)}",
                     f"{_n(r, 100, 999)} {_digits(r, 3)} USD", f"${_n(r, 1, 999)}.99",
                     f"{_n(r, 1, 9)} {_digits(r, 3)} {_digits(r, 3)} €"])


def _user_agent(r: random.Random) -> str:
    """A browser user agent (four-part Chrome build numbers look like dotted quads)."""
    return (f"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/{_n(r, 100, 131)}.0."
            f"{_n(r, 1000, 6999)}.{_n(r, 10, 200)} Safari/537.36")


def _imei(r: random.Random) -> str:
    """A phone's IMEI: 15 digits with a Luhn check, like a card number but not one."""
    body = r.choice(["35", "86", "01"]) + _digits(r, 12)
    imei = body + _luhn_digit(body)
    return imei if r.random() < 0.5 else f"{imei[:2]}-{imei[2:8]}-{imei[8:14]}-{imei[14]}"


WORDS = ["correct", "horse", "battery", "staple", "orbit", "velvet", "lantern", "quartz", "meadow", "copper"]
PLACEHOLDER_SECRETS = ["changeme", "password", "********", "xxxxxxxxxxxx", "${DB_PASSWORD}", "<your-api-key>",
                       "your_api_key_here", "REPLACE_ME", "${{ secrets.TOKEN }}", "os.environ['API_KEY']"]
DECOYS: dict[str, Callable[[random.Random], str]] = {
    "luhn_invalid_card": _bad_card,
    "bad_iban": _bad_iban,
    "invalid_ssn": _bad_ssn,
    "invalid_ip": _bad_ip,
    "date": _date,
    "time": _time,
    "timestamp": _timestamp,
    "version": _version,
    "order_number": _order,
    "price": _price,
    "expiry": lambda r: f"{_n(r, 1, 12, 2)}/{_n(r, 25, 31)}",
    "isbn": lambda r: r.choice(["978-3-16-148410-0", "0-306-40615-2", "978-0-596-52068-7", "9780306406157"]),
    "uuid": lambda r: "-".join(_rand(r, "0123456789abcdef", n) for n in (8, 4, 4, 4, 12)),
    "git_sha": lambda r: _rand(r, "0123456789abcdef", r.choice([7, 40])),
    "mac_address": lambda r: ":".join(_rand(r, "0123456789ABCDEF", 2) for _ in range(6)),
    "plain_number": lambda r: r.choice([_n(r, 1990, 2030), _digits(r, 9), f"{_n(r, 1, 999)},{_digits(r, 3)}"]),
    "user_agent": _user_agent,
    "imei": _imei,
    "data_uri": lambda r: "data:image/png;base64,iVBORw0KGgo" + _rand(r, ALNUM + "+/", 40) + "=",
    "url_userinfo": lambda r: f"amqp://{r.choice(FIRST)}@mq.example.com:5672/",
    "placeholder_secret": lambda r: r.choice(PLACEHOLDER_SECRETS),
}

# ---- message templates ----------------------------------------------------------------------------------------
# `{TYPE}` slots become gold entities, `{d:label}` slots decoys; everything else is plain text.
ENTITY_SLOTS: dict[str, tuple[str, Callable[[random.Random], str]]] = {
    "EMAIL": ("EMAIL", gen_email),
    "PHONE": ("PHONE", gen_phone),
    "CARD": ("CREDIT_CARD", gen_card),
    "IBAN": ("IBAN", gen_iban),
    "SSN": ("US_SSN", gen_ssn),
    "PHONE_LOCAL": ("PHONE", lambda r: f"{r.randint(200, 999)}{r.choice('-.')}{_digits(r, 4)}"),
    "SSN_BARE": ("US_SSN", lambda r: "".join(_ssn_digits(r))),
    "IP": ("IP_ADDRESS", gen_ip),
    "IPV4": ("IP_ADDRESS", lambda r: ".".join(str(r.randint(lo, 254)) for lo in (11, 0, 0, 1))),
    "KEY": ("API_KEY", gen_known_key),
    "JWT": ("API_KEY", gen_jwt),
    "PEM": ("API_KEY", gen_pem),
    "PEM_INDENTED": ("API_KEY", lambda r: gen_pem(r).replace("\n", "\n  ")),
    "PASSWORD": ("API_KEY", lambda r: gen_password(r, quoted=False)),
    "PASSWORD_Q": ("API_KEY", lambda r: gen_password(r, quoted=True)),
    "PASSPHRASE": ("API_KEY", lambda r: " ".join(r.sample(WORDS, 4))),
}
EMAIL_SENTENCES = [
    "Please send the invoice to {EMAIL} instead of my old address.", "You can reach me at <{EMAIL}>.",
    "My new email is {EMAIL}.", "(cc: {EMAIL})", "Unsubscribe: https://news.example.com/u?email={EMAIL}&src=mail",
    '<a href="mailto:{EMAIL}">write to us</a>', "Call me on {PHONE} after 6pm.", "My mobile: {PHONE}",
    "Best number is {PHONE}, or the office ({PHONE}).", "tel:{PHONE}", "You can also text {PHONE}, thanks!",
    "Please refund the card {CARD} (expires 09/27).", "Card number: {CARD}",
    "I paid with {CARD} but was charged twice.",
    "Please wire the refund to IBAN {IBAN}.", "Bank details: {IBAN} (BIC DEUTDEFF)", "IBAN: {IBAN}",
    "My SSN is {SSN}.", "SSN: {SSN_BARE}", "social security number {SSN_BARE}, as requested.",
    "The error came from {IP} around noon.", "Our server at http://{IPV4}:8080/status is down.",
    "Here is the key you asked for: {KEY} (please rotate it).", "I accidentally pasted my token {JWT} in the chat.",
    "The temporary password: {PASSWORD}", "Login blocked from {IP}; please check.",
    "Card: {CARD} {d:expiry}, CVV on request.", "Or call me at {PHONE_LOCAL} (home).",
    "Office: {PHONE} ext. 204.", "My phone's IMEI is {d:imei}, if that helps.",
]
DECOY_SENTENCES = [
    "My order {d:order_number} placed on {d:date} at {d:time} hasn't arrived.",
    "Total was {d:price}, invoice {d:order_number}.", "We are on version {d:version} now.",
    "The book ISBN {d:isbn} is out of stock.", "The old card {d:luhn_invalid_card} was declined.",
    "IBAN {d:bad_iban} was rejected by the bank.", "The form rejected {d:invalid_ssn} as invalid.",
    "Ping to {d:invalid_ip} failed.", "Reference {d:uuid}, commit {d:git_sha}.", "Device MAC {d:mac_address}.",
    "We have {d:plain_number} users.", "The call is at {d:time} on {d:date}.",
]
CHAT_LINES = [
    "hey! my number's {PHONE} text me", "lol my email is {EMAIL} btw", "here's the api key: {KEY}",
    "use this token {JWT} for staging", "server is {IP}, ssh in as root", "my card {CARD} keeps failing??",
    "can u send the rent to {IBAN} pls", "ok my ssn is {SSN} dont share it", "try {IPV4}:3000",
    "my key is {KEY}.", "meeting at {d:time} tmrw", "we're on {d:version} rn", "it was {d:price} lol",
    "see commit {d:git_sha}", "order {d:order_number} still not here", "is {d:invalid_ip} even valid?",
    "just call {PHONE_LOCAL} lol", "JANE: my email is {EMAIL}!!", "its like {d:price} total",
]
LOG_LINES = [
    "{d:timestamp} INFO  auth: login ok user={EMAIL} ip={IP} session={d:uuid}",
    "{d:timestamp} WARN  payments: declined card={CARD} order={d:order_number} amount={d:price}",
    "{d:timestamp} DEBUG http: GET /api/v1/me?access_token={PASSWORD} from {IPV4}",
    "{d:timestamp} ERROR build {d:version} commit {d:git_sha} failed",
    "{d:timestamp} INFO  request_id={d:uuid} Authorization: Bearer {JWT}",
    "{d:timestamp} INFO  sms: sent OTP to {PHONE}", "{IPV4} - - {d:timestamp} \"GET /index.html HTTP/1.1\" 200 2326",
    "{d:timestamp} WARN  kyc: ssn={SSN} flagged for review",
    "{d:timestamp} INFO  sepa: payout to {IBAN} ok", "{d:timestamp} DEBUG mac={d:mac_address} dhcp lease",
    "{d:timestamp} INFO  config loaded api_key={KEY}",
    "{IPV4} - - {d:timestamp} \"GET /login HTTP/1.1\" 302 0 \"-\" \"{d:user_agent}\"",
    "{d:timestamp} DEBUG avatar={d:data_uri}",
]
ENV_LINES = [
    "OPENAI_API_KEY={KEY}", "DB_PASSWORD={PASSWORD}", "ADMIN_EMAIL={EMAIL}", "ALLOWED_HOST={IP}",
    "SMTP_PASSWORD={d:placeholder_secret}", "APP_VERSION={d:version}", "export GITHUB_TOKEN={KEY}",
    "JWT_SECRET='{PASSWORD_Q}'", "SUPPORT_PHONE=\"{PHONE}\"", "HF_TOKEN={KEY}",
    "BACKUP_PASSPHRASE=\"{PASSPHRASE}\"", "BROKER_URL={d:url_userinfo}",
    "API_KEY={d:placeholder_secret}", "RELEASE_SHA={d:git_sha}", "DB_PASS={PASSWORD}", "ENCRYPTION_KEY={PASSWORD}",
]
YAML_LINES = [
    "database:\n  host: {IP}\n  user: app\n  password: \"{PASSWORD_Q}\"", "stripe:\n  secret_key: {KEY}",
    "admin:\n  email: {EMAIL}\n  phone: \"{PHONE}\"", "private_key: |\n  {PEM_INDENTED}",
    "token: {d:placeholder_secret}", "image: registry.example.com/app:{d:version}",
    "billing:\n  iban: {IBAN}\n  card: \"{CARD}\"", "device:\n  imei: \"{d:imei}\"\n  mac: {d:mac_address}",
]
JSON_FIELDS = [
    '"api_key": "{KEY}"', '"client_secret": "{PASSWORD_Q}"', '"contact": "{EMAIL}"', '"webhook_ip": "{IP}"',
    '"build": "{d:version}"', '"id": "{d:uuid}"', '"password": "{d:placeholder_secret}"', '"phone": "{PHONE}"',
    '"ssn": "{SSN}"', '"created": "{d:date}"',
]
TICKET_FIELDS = [
    "Customer: {name} <{EMAIL}>", "Phone: {PHONE}", "Account IBAN: {IBAN}", "Card on file: {CARD}",
    "SSN: {SSN}", "SSN# {SSN_BARE}", "Source IP: {IP}", "Temporary password: {PASSWORD}", "Order: {d:order_number}",
    "Created: {d:date} {d:time}", "App version: {d:version}", "Refund: {d:price}",
    "Rejected card: {d:luhn_invalid_card}",
    "Old IBAN (closed): {d:bad_iban}", "Device: {d:mac_address}",
]
SLOT = re.compile(r"\{(d:[a-z_]+|[A-Z0-9_]+|name)\}")


def _fill(template: str, r: random.Random) -> list[Part]:
    """Turn a template into parts, generating a fresh value for each slot."""
    parts: list[Part] = []
    last = 0
    for m in SLOT.finditer(template):
        parts.append(template[last:m.start()])
        slot = m.group(1)
        if slot == "name":
            parts.append(f"{r.choice(FIRST).title()} {r.choice(LAST).title()}")
        elif slot.startswith("d:"):
            parts.append(("D", slot[2:], DECOYS[slot[2:]](r)))
        else:
            kind, make = ENTITY_SLOTS[slot]
            parts.append(("E", kind, make(r)))
        last = m.end()
    parts.append(template[last:])
    return parts


def _join(pieces: list[list[Part]], sep: str) -> list[Part]:
    """Concatenate part lists with a separator between them."""
    out: list[Part] = []
    for i, p in enumerate(pieces):
        out += ([sep] if i else []) + p
    return out


def _email_msg(r: random.Random) -> list[Part]:
    """A customer email: greeting, a few sentences with entities and decoys, sign-off."""
    templates = r.sample(EMAIL_SENTENCES, r.randint(1, 3)) + r.sample(DECOY_SENTENCES, r.randint(1, 2))
    body = [_fill(t, r) for t in templates]
    r.shuffle(body)
    head = [r.choice(["Hi team,", "Hello,", "Dear Support,", "Good morning,"]) + "\n\n"]
    return head + _join(body, " ") + [f"\n\nBest regards,\n{r.choice(FIRST).title()}"]


def _chat_msg(r: random.Random) -> list[Part]:
    """A few chat lines."""
    return _join([_fill(t, r) for t in r.sample(CHAT_LINES, r.randint(2, 4))], "\n")


def _log_msg(r: random.Random) -> list[Part]:
    """A few application log lines."""
    return _join([_fill(t, r) for t in r.sample(LOG_LINES, r.randint(2, 4))], "\n")


def _config_msg(r: random.Random) -> list[Part]:
    """A .env, YAML or JSON config file."""
    kind = r.randrange(3)
    if kind == 0:
        return ["# .env\n"] + _join([_fill(t, r) for t in r.sample(ENV_LINES, r.randint(3, 5))], "\n")
    if kind == 1:
        return ["# config.yaml\n"] + _join([_fill(t, r) for t in r.sample(YAML_LINES, r.randint(2, 4))], "\n")
    fields = _join([_fill(t, r) for t in r.sample(JSON_FIELDS, r.randint(3, 5))], ", ")
    return ["{"] + fields + ["}"]


def _ticket_msg(r: random.Random) -> list[Part]:
    """A support ticket: header fields, then a free-text message."""
    head = [f"Ticket {r.choice(['#', 'T-'])}{r.randint(10000, 99999)} | Priority: {r.choice(['High', 'Low'])}\n"]
    fields = _join([_fill(t, r) for t in r.sample(TICKET_FIELDS, r.randint(3, 6))], "\n")
    msg = _fill(r.choice(EMAIL_SENTENCES + DECOY_SENTENCES), r)
    return head + fields + ["\nMessage: "] + msg


SCENARIOS = (_email_msg, _chat_msg, _log_msg, _config_msg, _ticket_msg)


def synthetic_examples(n: int, seed: int) -> list[LabelledText]:
    """`n` labelled messages (emails, chats, logs, configs, tickets), reproducible from `seed`."""
    r = random.Random(seed)
    return [_assemble(r.choice(SCENARIOS)(r)) for _ in range(n)]


# ---- scoring --------------------------------------------------------------------------------------------------
def _prf(tp: int, fp: int, fn: int) -> dict[str, float | int]:
    """Precision, recall and F1 from counts (1.0 when there is nothing to find and nothing found)."""
    p = tp / (tp + fp) if tp + fp else 1.0
    rec = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * p * rec / (p + rec) if p + rec else 0.0
    return {"precision": round(p, 4), "recall": round(rec, 4), "f1": round(f1, 4), "tp": tp, "fp": fp, "fn": fn}


def evaluate(examples: Sequence[LabelledText], types: Collection[str] | None = None) -> dict:
    """Span-level exact-match P/R/F1 per type and overall (micro), plus how many predictions hit a decoy."""
    kinds = sorted(PII_TYPES if types is None else types)
    counts = {k: [0, 0, 0] for k in kinds}
    decoy_hits, decoy_total = 0, 0
    for ex in examples:
        gold = {s for s in ex.spans if s[0] in counts}
        pred = {(m.type, m.start, m.end) for m in detect(ex.text, kinds)}
        for kind, *_ in pred & gold:
            counts[kind][0] += 1
        for kind, *_ in pred - gold:
            counts[kind][1] += 1
        for kind, *_ in gold - pred:
            counts[kind][2] += 1
        decoy_total += len(ex.decoys)
        decoy_hits += sum(any(s < de and ds < e for _, ds, de in ex.decoys) for _, s, e in pred - gold)
    total = [sum(c[i] for c in counts.values()) for i in range(3)]
    return {"per_type": {k: _prf(*c) for k, c in counts.items()}, "overall": _prf(*total),
            "decoys": decoy_total, "decoy_false_positives": decoy_hits}


def median_latency_ms(examples: Sequence[LabelledText]) -> float:
    """Median wall time of one `detect` call per message, in milliseconds."""
    times = []
    for ex in examples:
        t0 = time.perf_counter()
        detect(ex.text)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def _table(report: dict) -> str:
    """The per-type report as a fixed-width table."""
    rows = [f"{'type':<12} {'precision':>9} {'recall':>7} {'f1':>7} {'tp':>6} {'fp':>5} {'fn':>5}"]
    for name, s in [*report["per_type"].items(), ("OVERALL", report["overall"])]:
        rows.append(f"{name:<12} {s['precision']:>9.4f} {s['recall']:>7.4f} {s['f1']:>7.4f} {s['tp']:>6} "
                    f"{s['fp']:>5} {s['fn']:>5}")
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> None:
    """Generate, score and print a table plus one JSON line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    examples = synthetic_examples(args.n, args.seed)
    report = evaluate(examples)
    report["median_latency_ms"] = round(median_latency_ms(examples), 4)
    print(_table(report))
    print(f"decoys: {report['decoys']}, flagged: {report['decoy_false_positives']}; "
          f"median detect latency: {report['median_latency_ms']} ms/message")
    print(json.dumps({"n": args.n, "seed": args.seed, **report}, sort_keys=True))


if __name__ == "__main__":
    main()
