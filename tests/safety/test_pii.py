"""PII/secret detection, reversible redaction, streaming redaction and the synthetic evaluation."""
from __future__ import annotations

import random
import re

import pytest

from temper.safety.pii import PII_TYPES, PIIMatch, StreamRedactor, Vault, _resolve, detect, redact
from temper.safety.pii_eval import evaluate, synthetic_examples
from temper.safety.pii_patterns import card_brand, iban_ok, luhn_ok, shannon_entropy, ssn_ok

JWT = ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkphbmUifQ"
       ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c")
PEM = ("-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA7bq9Zk3mT1x2yVw8sLq0PfNk2rX9a4Jt6ZcQv1HdYe0uBgRwLs\n"
       "bQ3nF5tY8pK2vM7wX1cZ4dA9eG6hJ0kL3mN5oP8qR2sT4uV7wX9yZ1aB3cD5eF==\n-----END RSA PRIVATE KEY-----")

# (type, text, the entity as it must be reported)
POSITIVES = [
    ("EMAIL", "Write to jane.doe+news@example.co.uk.", "jane.doe+news@example.co.uk"),
    ("EMAIL", '<a href="mailto:J.Smith@Mail.Example.ORG">mail</a>', "J.Smith@Mail.Example.ORG"),
    ("EMAIL", "(cc: li_wang42@acme-corp.io)", "li_wang42@acme-corp.io"),
    ("EMAIL", "https://x.com/u?email=raj@example.com&src=1", "raj@example.com"),
    ("PHONE", "Call (555) 123-4567 today", "(555) 123-4567"),
    ("PHONE", "Call 555-123-4567.", "555-123-4567"),
    ("PHONE", "or 555.123.4567,", "555.123.4567"),
    ("PHONE", "dial +1 555 123 4567 now", "+1 555 123 4567"),
    ("PHONE", "UK: +44 (0)20 7946 0958", "+44 (0)20 7946 0958"),
    ("PHONE", "tel:+447700900123", "+447700900123"),
    ("PHONE", "Paris 01 23 45 67 89", "01 23 45 67 89"),
    ("PHONE", "mobile 06.12.34.56.78", "06.12.34.56.78"),
    ("PHONE", "Berlin 030/12345678", "030/12345678"),
    ("PHONE", "office +49 30 12345678 ext. 12", "+49 30 12345678"),
    ("PHONE", "call me at 555-0143", "555-0143"),
    ("CREDIT_CARD", "card 4111 1111 1111 1111 exp 12/27", "4111 1111 1111 1111"),
    ("CREDIT_CARD", "mc 5555555555554444.", "5555555555554444"),
    ("CREDIT_CARD", "amex 378282246310005", "378282246310005"),
    ("CREDIT_CARD", "amex 3782 822463 10005", "3782 822463 10005"),
    ("CREDIT_CARD", "disc 6011-1111-1111-1117", "6011-1111-1111-1117"),
    ("CREDIT_CARD", "card 4111111111111111 12/27 123", "4111111111111111"),
    ("IBAN", "IBAN GB82 WEST 1234 5698 7654 32.", "GB82 WEST 1234 5698 7654 32"),
    ("IBAN", "IBAN:DE89370400440532013000", "DE89370400440532013000"),
    ("IBAN", "to BE68 5390 0754 7034 from me", "BE68 5390 0754 7034"),
    ("IBAN", "nl91 abna 0417 1643 00", "nl91 abna 0417 1643 00"),
    ("US_SSN", "SSN 078-05-1120.", "078-05-1120"),
    ("US_SSN", "ssn: 078 05 1120", "078 05 1120"),
    ("US_SSN", "social security number 078051120", "078051120"),
    ("IP_ADDRESS", "from 192.168.1.20:8080", "192.168.1.20"),
    ("IP_ADDRESS", "http://203.0.113.9/health", "203.0.113.9"),
    ("IP_ADDRESS", "v6 2001:0db8:85a3:0000:0000:8a2e:0370:7334 up", "2001:0db8:85a3:0000:0000:8a2e:0370:7334"),
    ("IP_ADDRESS", "[2001:db8::8a2e:370:7334]:443", "2001:db8::8a2e:370:7334"),
    ("IP_ADDRESS", "mapped ::ffff:192.168.1.1.", "::ffff:192.168.1.1"),
    ("IP_ADDRESS", "fe80::1ff:fe23:4567:890a%eth0", "fe80::1ff:fe23:4567:890a%eth0"),
    ("API_KEY", "key sk-proj-AbC123dEf456GhI789jKl012MnO345pQr", "sk-proj-AbC123dEf456GhI789jKl012MnO345pQr"),
    ("API_KEY", "sk-ant-api03-Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2Jh1Gf0DdSaQwErTy-AA.",
     "sk-ant-api03-Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2Jh1Gf0DdSaQwErTy-AA"),
    ("API_KEY", "aws AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE"),
    ("API_KEY", "ghp_abcdefghijklmnopqrstuvwxyz0123456789", "ghp_abcdefghijklmnopqrstuvwxyz0123456789"),
    ("API_KEY", "github_pat_11ABCDEFG0123456789abcde_xyz", "github_pat_11ABCDEFG0123456789abcde_xyz"),
    ("API_KEY", "xoxb-123456789012-1234567890123-AbCdEfGh", "xoxb-123456789012-1234567890123-AbCdEfGh"),
    ("API_KEY", "AIzaSyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q", "AIzaSyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q"),
    ("API_KEY", "sk_live_4eC39HqLyjWDarjtT1zdp7dc", "sk_live_4eC39HqLyjWDarjtT1zdp7dc"),
    ("API_KEY", "HF_TOKEN=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", "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"),
    ("API_KEY", f"Authorization: Bearer {JWT}", JWT),
    ("API_KEY", f"key:\n{PEM}\nthanks", PEM),
    ("API_KEY", "DB_PASSWORD=Xk9#mP2$vL8!qR", "Xk9#mP2$vL8!qR"),
    ("API_KEY", 'api_key: "aB3dE6gH9jK2"', "aB3dE6gH9jK2"),
    ("API_KEY", '{"client_secret":"q8W!z3R@t5Y#"}', "q8W!z3R@t5Y#"),
    ("API_KEY", 'passphrase = "orbit velvet lantern quartz"', "orbit velvet lantern quartz"),
    ("API_KEY", "postgres://app:Xk9#mP2vL8qR@db.example.com/app", "Xk9#mP2vL8qR"),
]
# Text in which nothing at all may be flagged.
NEGATIVES = [
    "bad card 4111 1111 1111 1112 and 1234567812345678",
    "bad IBAN DE88370400440532013000 and GB00 WEST 1234 5698 7654 32",
    "never issued 666-12-3456, 000-12-3456, 912-34-5678, 078-00-1120, 078-05-0000",
    "not IPs: 999.1.2.3, 256.1.1.1, 1.2.3.4.5, v1.2.3.4, 10.0.19045.2364",
    "dates 2024-01-15, 15/01/2024, 01.02.2024 at 10:30 and 10:30:45",
    "versions 1.2.3, 2.31.0, v10.15.7; year 2024; 1234567 units; $1,299.99; 1 234 567 €",
    "order ORD-2024-001234, #48213, 112-1234567-1234567, tracking 123456789",
    "ISBN 978-3-16-148410-0 and 0-306-40615-2",
    "uuid 123e4567-e89b-12d3-a456-426614174000 sha e3b0c44298fc1c149afbf4c8996fb92427ae41e4",
    "MAC 00:1A:2B:3C:4D:5E, ratio 1:2:3, std::vector, a::b",
    "password=changeme secret: ******** api_key=${OPENAI_API_KEY} token: <your-token-here>",
    "API_KEY=your_api_key_here password = os.environ['DB'] max_tokens=4096000000 tokenizer=meta-llama/Llama-2",
    "Password: temporarily disabled. sk-learn-compatible-estimators-2",
    "icon@2x.png amqp://guest@mq.example.com:5672/ IMEI 352099001761481",
]


@pytest.mark.parametrize(("kind", "text", "entity"), POSITIVES)
def test_detects_positive(kind: str, text: str, entity: str) -> None:
    found = [(m.type, m.text) for m in detect(text)]
    assert (kind, entity) in found, found


@pytest.mark.parametrize("text", NEGATIVES)
def test_ignores_negative(text: str) -> None:
    assert detect(text) == []


def test_validators() -> None:
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert card_brand("378282246310005") == "amex" and card_brand("5555555555554444") == "mastercard"
    assert card_brand("2221000000000009") == "mastercard" and card_brand("9111111111111111") is None
    assert iban_ok("GB82WEST12345698765432") and not iban_ok("GB82WEST12345698765433")
    assert not iban_ok("GB82WEST1234569876543")  # one character short for GB
    assert ssn_ok("078051120") and not ssn_ok("666051120") and not ssn_ok("078001120")
    assert shannon_entropy("aaaaaaaa") == 0 and shannon_entropy("abcdefgh") == 3.0


def test_matches_are_sorted_non_overlapping_with_offsets() -> None:
    text = "Mail a@example.com, call +44 20 7946 0958, card 4111 1111 1111 1111, ip 10.0.0.1"
    found = detect(text)
    assert [m.type for m in found] == ["EMAIL", "PHONE", "CREDIT_CARD", "IP_ADDRESS"]
    assert all(text[m.start:m.end] == m.text for m in found)
    assert all(a.end <= b.start for a, b in zip(found, found[1:]))


@pytest.mark.parametrize(("text", "kind"), [
    ("4111 1111 1111 1111", "CREDIT_CARD"),          # not a phone
    ("078-05-1120", "US_SSN"),                        # not a national phone number
    ("DE89370400440532013000", "IBAN"),               # not a card or phone inside it
    ("GB82 WEST 1234 5698 7654 32", "IBAN"),
    ("::ffff:192.168.1.1", "IP_ADDRESS"),              # one IPv6, not an IPv4 inside it
    (f"token={JWT}", "API_KEY"),                      # assignment and JWT agree on one span
])
def test_overlaps_resolve_to_one_span(text: str, kind: str) -> None:
    found = detect(text)
    assert len(found) == 1 and found[0].type == kind


def test_resolve_prefers_longest_then_priority() -> None:
    a, b = PIIMatch("PHONE", 0, 12, "x" * 12), PIIMatch("CREDIT_CARD", 0, 16, "x" * 16)
    c = PIIMatch("PHONE", 20, 25, "y" * 5)
    assert _resolve([a, c, b]) == [b, c]
    same = [PIIMatch("PHONE", 0, 11, "z"), PIIMatch("US_SSN", 0, 11, "z")]
    assert [m.type for m in _resolve(same)] == ["US_SSN"]


def test_type_filter_and_unknown_types() -> None:
    text = "a@example.com 10.0.0.1"
    assert [m.type for m in detect(text, ["EMAIL"])] == ["EMAIL"]
    assert [m.type for m in detect(text, "IP_ADDRESS")] == ["IP_ADDRESS"]
    with pytest.raises(ValueError, match="EMAIL") as err:
        detect(text, ["EMAIL", "NAME"])
    assert "NAME" in str(err.value) and all(t in str(err.value) for t in PII_TYPES)
    with pytest.raises(ValueError, match="placeholder"):
        Vault().redact(text, style="blur")


def test_placeholders_are_consistent_per_vault() -> None:
    vault = Vault()
    first = vault.redact("From a@example.com and b@example.com, call 555-123-4567.")
    second = vault.redact("Again a@example.com; new c@example.com")
    assert first == "From <EMAIL_1> and <EMAIL_2>, call <PHONE_1>."
    assert second == "Again <EMAIL_1>; new <EMAIL_3>"
    assert vault.mapping == {"<EMAIL_1>": "a@example.com", "<EMAIL_2>": "b@example.com",
                             "<PHONE_1>": "555-123-4567", "<EMAIL_3>": "c@example.com"}
    assert vault.restore("Reply to <EMAIL_2>, not <EMAIL_9> or <NAME_1>.") == \
        "Reply to b@example.com, not <EMAIL_9> or <NAME_1>."
    vault.mapping.clear()  # a copy: the vault keeps its table
    assert vault.restore("<PHONE_1>") == "555-123-4567"


def test_module_redact_returns_its_vault() -> None:
    text, vault = redact("key AKIAIOSFODNN7EXAMPLE", types=["API_KEY"])
    assert text == "key <API_KEY_1>" and vault.restore(text) == "key AKIAIOSFODNN7EXAMPLE"


def test_round_trip_over_synthetic_examples() -> None:
    for ex in synthetic_examples(300, seed=11):
        vault = Vault()
        redacted = vault.redact(ex.text)
        assert vault.restore(redacted) == ex.text
        assert all(value not in redacted for value in vault.mapping.values() if len(value) >= 8)


def test_mask_and_partial_styles() -> None:
    text = "card 4111111111111111, 4111 1111 1111 1111, ssn 078-05-1120, tel +1 555 123 4567, a@example.com"
    vault = Vault()
    assert vault.redact(text, style="mask") == \
        "card <CREDIT_CARD>, <CREDIT_CARD>, ssn <US_SSN>, tel <PHONE>, <EMAIL>"
    assert vault.redact(text, style="partial") == \
        "card ************1111, **** **** **** 1111, ssn ***-**-1120, tel +* *** *** 4567, <EMAIL>"
    assert vault.mapping == {}  # only the placeholder style is reversible


def _stream(text: str, pieces: list[int], **kwargs: object) -> str:
    """Feed `text` cut at the given offsets, then flush; return everything emitted."""
    redactor = StreamRedactor(**kwargs)  # type: ignore[arg-type]
    bounds = [0, *pieces, len(text)]
    return "".join(redactor.feed(text[a:b]) for a, b in zip(bounds, bounds[1:])) + redactor.flush()


STREAM_TEXTS = [
    "Card 4111 1111 1111 1111 12/27, IBAN GB82 WEST 1234 5698 7654 32 and +44 (0)20 7946 0958.\n"
    "SSN: 078051120; password = \"orbit velvet lantern\" ok",
    f"Authorization: Bearer {JWT}\nprivate_key: |\n  " + PEM.replace("\n", "\n  ") + "\nmail j@example.com",
    "ip 2001:db8::8a2e:370:7334 / 10.0.0.1, call me at 555-0143, key sk-ant-api03-Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2Jh1Gf0DdS",
]


@pytest.mark.parametrize("text", STREAM_TEXTS)
def test_stream_equals_batch_at_every_split(text: str) -> None:
    want = Vault().redact(text)
    for i in range(len(text) + 1):
        assert _stream(text, [i]) == want, i
    assert _stream(text, list(range(1, len(text)))) == want  # one character at a time


def test_stream_equals_batch_for_random_splits() -> None:
    rng = random.Random(0)
    for ex in synthetic_examples(150, seed=5):
        want = Vault().redact(ex.text)
        for _ in range(3):
            cuts = sorted(rng.sample(range(len(ex.text) + 1), min(rng.randint(1, 25), len(ex.text) + 1)))
            assert _stream(ex.text, cuts) == want, (ex.text, cuts)


def test_stream_shares_vault_state_and_options() -> None:
    text = "again a@example.com then b@example.com and 4111 1111 1111 1111"
    batch = Vault()
    batch.redact("first a@example.com")
    streamed = Vault()
    streamed.redact("first a@example.com")
    assert _stream(text, [9, 20, 33], vault=streamed) == batch.redact(text)
    assert streamed.mapping == batch.mapping
    assert _stream(text, [5, 50], types=["CREDIT_CARD"], style="partial") == \
        "again a@example.com then b@example.com and **** **** **** 1111"


def test_stream_holds_entities_and_releases_plain_text() -> None:
    redactor = StreamRedactor()
    assert redactor.feed("Hello there, my card is 4111 ") == "Hello there, my card is "
    assert redactor.feed("1111 1111") == ""
    assert redactor.feed(" 1111. Bye") + redactor.flush() == "<CREDIT_CARD_1>. Bye"
    pem = StreamRedactor()
    out = pem.feed(PEM[:60]) + pem.feed(PEM[60:120])
    assert "MIIE" not in out
    assert out + pem.feed(PEM[120:] + "\n") + pem.flush() == "<API_KEY_1>\n"


def test_stream_caps_the_hold() -> None:
    redactor = StreamRedactor(hold_limit=16, hard_limit=64)
    out = redactor.feed("1 2 3 4 5 6 7 8 9 1 2 3 4 5 6 7 8 9 ")  # a digit chain glues, but not forever
    assert out.startswith("1 2 3") and len(redactor._pending) <= 16
    assert redactor.feed("x" * 100) + redactor.flush() != ""


def test_synthetic_examples_are_labelled_and_reproducible() -> None:
    a, b = synthetic_examples(50, seed=3), synthetic_examples(50, seed=3)
    assert a == b and a != synthetic_examples(50, seed=4)
    kinds = {kind for ex in synthetic_examples(300, seed=3) for kind, _, _ in ex.spans}
    assert kinds == set(PII_TYPES)
    for ex in a:
        assert all(0 <= s < e <= len(ex.text) for _, s, e in ex.spans + ex.decoys)
        assert not re.search(r"(?<!\$)\{(?:d:[a-z_]+|[A-Z0-9_]+)\}", ex.text)  # every template slot was filled


def test_evaluate_reaches_target_on_fixed_seed() -> None:
    report = evaluate(synthetic_examples(400, seed=0))
    assert report["overall"]["f1"] >= 0.95, report
    assert report["decoys"] > 0 and report["decoy_false_positives"] <= 0.01 * report["decoys"]
    assert set(report["per_type"]) == set(PII_TYPES)
    only = evaluate(synthetic_examples(50, seed=0), types=["EMAIL"])
    assert set(only["per_type"]) == {"EMAIL"}
