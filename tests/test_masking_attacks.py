"""The masking policy attacked as an adversary would, with the default settings: each leak class found, with the
test that plants it, the near misses that must stay readable, and hostile input that must neither hang nor crash
the policy."""

from __future__ import annotations

import base64
import contextlib
import json
import re
import time
import urllib.parse
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gotrails_otel import body, fold, maskrules, redact, sqlmask, urls
from gotrails_otel.redact import Policy, luhn_valid
from gotrails_otel.urls import mask_url

POLICY = Policy()


def masked(text: str) -> str:
    return POLICY.mask_text(text)


def _fold_digits(text: str) -> str:
    return "".join(str(int(ch)) if ch.isdecimal() else ch for ch in text)


# ------------------------------------------------------------------------------------------ hostile input


def _all_expressions() -> dict[str, re.Pattern[Any]]:
    """Every regular expression the policy, the parsers and the fold run on captured text (or bytes)."""
    found: dict[str, re.Pattern[Any]] = {}
    for module in (redact, maskrules, urls, sqlmask, fold, body):
        for name, value in vars(module).items():
            if isinstance(value, re.Pattern):
                found[f"{module.__name__}.{name}"] = value
    for detector in maskrules.DETECTORS:
        found[f"detector {detector.name}"] = re.compile(detector.pattern)
    for dump in maskrules.DRIVER_DUMPS:
        found[f"driver dump {dump.name}"] = re.compile(dump.pattern)
    gate = POLICY._gate  # type: ignore[attr-defined]
    found["detector gate"] = gate
    return found


# Pieces that open a construct an expression looks for and never close it, or that nest ambiguously: each is
# repeated to 50,000 characters, alone and with a filler, against every expression.
_HOSTILE_UNITS = [
    *(dump.hint for dump in maskrules.DRIVER_DUMPS),
    *("[SQL: ", "[parameters: ", "Key (a)=(", "LINE 1: '", "Failing row contains (", "Duplicate entry '"),
    *("/**/ ", "/*", "$$", "'", '"', "\\", '\\"', "{", "[", "(", "<a>", "</", "%7B", "%", "&", "=", ":", "://"),
    *("password=", "password: a ", '"password": ', "Authorization: a ", "bearer ", "basic ", "eyJab.", "ghp_"),
    *("AKIA", "xoxb-", "sk_live_", "AIza", "-----BEGIN PRIVATE KEY-----", "4 ", "4-", "a-", "a.", "a_", "--a"),
    *("https://a@", "?a=", "#a=", "INTO t (", "a = ", " IN (", "@"),
]
_FILLERS = ["", "a", " ", "1", "\n"]


@pytest.mark.parametrize("unit", _HOSTILE_UNITS)
def test_no_expression_backtracks_on_hostile_text(unit: str) -> None:
    """Catastrophic (exponential) or quadratic backtracking shows as seconds on 50,000 characters; the linear
    expressions take milliseconds."""
    expressions = _all_expressions()
    for filler in _FILLERS:
        text = ((unit + filler) * (50_000 // len(unit + filler) + 1))[:50_000]
        raw = text.encode()
        for name, expression in expressions.items():
            subject: Any = raw if isinstance(expression.pattern, bytes) else text
            started = time.perf_counter()
            expression.match(subject)
            for _ in expression.finditer(subject):
                pass
            elapsed = time.perf_counter() - started
            assert elapsed < 1.5, f"{name} took {elapsed:.1f} s on {unit!r}+{filler!r}"


@pytest.mark.parametrize("unit", _HOSTILE_UNITS)
def test_the_policy_masks_hostile_text_in_bounded_time(unit: str) -> None:
    policy = Policy()
    text = (unit * (50_000 // len(unit) + 1))[:50_000]
    statement = text[: sqlmask.MAX_ANALYSED]
    started = time.perf_counter()
    policy._counted(text, error=True)  # type: ignore[attr-defined]
    policy.apply({"request": {"body": {"note": text}, "query": text}, "errors": [{"message": text}]})
    sqlmask.analyse(statement, policy.is_sensitive)
    fold._db_name_of("postgresql", statement, None, None)
    mask_url(text, policy.is_sensitive)
    body.decode_body(text.encode(), "application/json", None, len(text) + 1)
    elapsed = time.perf_counter() - started
    assert elapsed < 5, f"{elapsed:.1f} s on {unit!r}"


def test_sql_analysis_of_a_hostile_statement_fails_closed_quickly() -> None:
    for unit in ("INTO t (", "password = ", "x IN ("):
        statement = (unit * 4000)[: sqlmask.MAX_ANALYSED]
        started = time.perf_counter()
        result = sqlmask.analyse(statement, POLICY.is_sensitive)
        assert time.perf_counter() - started < 3
        assert result.everything  # over the scanning budget: every argument masked
    big_in = "SELECT * FROM t WHERE password IN (" + ", ".join(["%s"] * 2000) + ")"
    assert sqlmask.analyse(big_in, POLICY.is_sensitive).positions == frozenset(range(2000))


# ----------------------------------------------------------------------------------------------- text pairs


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # JSON inside a JSON string, as it shows in an error message or a cut body
        (
            'payload was {\\"user\\": \\"ann\\", \\"password\\": \\"pw-1\\"}',
            'payload was {\\"user\\": \\"ann\\", \\"password\\": \\"***\\"}',
        ),
        # Ruby and PHP hashes in an upstream error
        (':password => "pw-2", :user => "ann"', ':password => "***", :user => "ann"'),
        ("['api_key' => 'pw-3']", "['api_key' => '***']"),
        # Python reprs of bytes (redis-py, kafka headers)
        ("{b'password': b'pw-4', b'user': b'ann'}", "{b'password': b'***', b'user': b'ann'}"),
        # SQL's doubled quotes inside a literal
        ("password='it''s pw-5' AND x=1", "password='***' AND x=1"),
        # command lines in subprocess errors
        ("pg_dump --password=pw-6 --user=ann", "pg_dump --password=*** --user=ann"),
        # a key longer than 64 characters
        ('{"' + "a" * 70 + '_password": "pw-7"} tail', '{"' + "a" * 70 + '_password": "***"} tail'),
        # a key after an escape sequence of a JSON string
        ("line\\npin=1234\\nnext", "line\\npin=***\\nnext"),
    ],
)
def test_pairs_in_text_whatever_their_quoting(text: str, expected: str) -> None:
    assert masked(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "UPDATE users SET password = :1 WHERE id = :2",  # placeholders are not passwords
        "UPDATE users SET password = %s WHERE id = %s",
        "apin=3 and spin: 4",  # a word key inside a longer word
        "x == y and a => b",
        "at 12:30:45 the ratio was 3:2",
    ],
)
def test_pairs_near_misses_stay_readable(text: str) -> None:
    assert masked(text) == text


# ------------------------------------------------------------------------------------------------------ keys


@pytest.mark.parametrize(
    "key",
    [
        # Unicode spellings: full-width, zero-width and format characters, accents, look-alike letters, dashes
        *(
            "\uff50\uff41\uff53\uff53\uff57\uff4f\uff52\uff44",
            "\uff21\uff30\uff29\uff3f\uff2b\uff25\uff39",
            "pass\u200bword",
            "pass\u200dword",
            "pass\u00adword",
            "passwörd",
        ),
        *("p\u0430ssword", "\u0440assword", "api\u2011key", "api\u2013key", "t\u03bfken"),
        # one-time codes, PKCE, SAML, security answers, Redis configuration, master keys
        *("totp", "mfa_code", "2fa_code", "verification_code", "one_time_code", "passcode", "code_verifier"),
        *("SAMLResponse", "security_answer", "requirepass", "masterauth", "master_key", "hmac_key", "hmac"),
        *("card_ccv", "cvn"),
        # "password" in other languages
        *("Passwort", "kennwort", "contraseña", "senha", "mot_de_passe", "wachtwoord", "kata_sandi", "hasło"),
    ],
)
def test_sensitive_key_spellings(key: str) -> None:
    assert POLICY.is_sensitive(key)
    trail = POLICY.apply({"request": {"body": {key: "k-secret-1", "user": "ann"}}})
    assert trail["request"]["body"] == {key: "***", "user": "ann"}


@pytest.mark.parametrize(
    "key",
    [
        *("postcode", "country_code", "status_code", "zip_code", "promo_code", "code", "error_code", "pincode"),
        *("verification_status", "hash", "nonce", "key", "account_key", "hmac_algorithm", "master_data", "sensor"),
        *("session_count", "author", "passage", "compass", "bypass_cache", "sensitivity", "ccvalue"),
    ],
)
def test_near_miss_keys_stay_readable(key: str) -> None:
    assert not POLICY.is_sensitive(key)


GH_TOKEN = "ghp_" + "K3yT0k3n" * 4 + "abcd"


def test_keys_that_hold_secrets_are_masked() -> None:
    """A map keyed by card numbers, tokens or connection URLs: the key is masked like any text, whatever its value."""
    trail = POLICY.apply(
        {
            "request": {
                "body": {
                    "cards": {"4111111111111111": {"last_used": "2024-01-01"}, "5500005555555559": True},
                    "issued": {GH_TOKEN: None},
                    "health": {"postgresql://app:k-pw-1@db:5432/app": "ok", "redis://cache:6379": "ok"},
                    "session:s-3c9f1e7a": {"user": "ann"},
                    "order:1234567": 1,
                }
            }
        }
    )
    body = trail["request"]["body"]
    assert body["cards"] == {"***": {"last_used": "2024-01-01"}, "*** (2)": True}
    assert body["issued"] == {"***": None}
    assert body["health"] == {"postgresql://***@db:5432/app": "ok", "redis://cache:6379": "ok"}
    assert body["session:***"] == {"user": "ann"} and body["order:1234567"] == 1
    raw = str(trail)
    for secret in ("4111111111111111", "5500005555555559", GH_TOKEN, "k-pw-1", "s-3c9f1e7a"):
        assert secret not in raw
    assert trail["redacted"]["card"] == 2


# ----------------------------------------------------------------------------------------------------- cards


def full_width(text: str) -> str:
    return "".join(chr(ord(ch) + 0xFEE0) if "!" <= ch <= "~" else ch for ch in text)


FULL_WIDTH_CARD = full_width("4111111111111111")
ARABIC_INDIC_CARD = "".join(chr(0x0660 + int(d)) for d in "5500005555555559")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("id,card,exp\n1,4111111111111111,1230\n", "id,card,exp\n1,***,1230\n"),  # CSV fields beside numbers
        (f"card {FULL_WIDTH_CARD} ok", "card *** ok"),  # typed with a Japanese input method
        (f"card {ARABIC_INDIC_CARD}", "card ***"),
        ("card 4111\u00a01111\u00a01111\u00a01111 ok", "card *** ok"),  # no-break spaces from a web page
        ("card 4111\u20131111\u20131111\u20131111", "card ***"),  # en dashes
        ("card 4111\u200b1111\u200b1111\u200b1111", "card ***"),  # zero-width spaces
        ("card 4111  1111  1111  1111.", "card ***."),
        (full_width("card:4111111111111111"), "card:***"),  # folded when anything is masked
    ],
)
def test_card_numbers_in_any_spelling(text: str, expected: str) -> None:
    assert masked(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "total 4111111111111111.50 units",  # a decimal amount
        "pi 3.4111111111111111",
        "1,2,3,4,5,6,7,8,9,10,11,12,13,14",
        "at 1732770000000 ms",  # epoch milliseconds start with 1
        "order 4111111111111112 shipped",  # not Luhn-valid
        f"\u4fa1\u683c\u306f{full_width('1234')}\u5186",  # full-width digits that are no card: kept as they are
    ],
)
def test_card_near_misses(text: str) -> None:
    assert masked(text) == text


def test_card_numbers_as_floats_and_negative_numbers() -> None:
    trail = POLICY.apply(
        {"request": {"body": {"n": 4111111111111111.0, "m": -5500005555555559, "list": [4111111111111111.0, 1.5]}}}
    )
    assert trail["request"]["body"] == {"n": "***", "m": "***", "list": ["***", 1.5]}
    kept = POLICY.apply({"request": {"body": {"amount": 4111111111111111.5, "big": 1e15, "t": -1732770000000}}})
    assert kept["request"]["body"] == {"amount": 4111111111111111.5, "big": 1e15, "t": -1732770000000}


_DIGIT_SCRIPTS = (0x30, 0xFF10, 0x0660, 0x06F0, 0x0966)  # ASCII, full-width, Arabic-Indic, Persian, Devanagari
_SEPARATORS = ("", " ", "-", "\u00a0", "\u2013", "\u200b", "  ", "\u3000")


@given(
    st.from_regex(r"[2-6][0-9]{11,17}", fullmatch=True),
    st.sampled_from(_DIGIT_SCRIPTS),
    st.sampled_from(_SEPARATORS),
    st.sampled_from(["card {} ok", "{},12,2030", "7,{}", "paid with {}.", "{}"]),
)
@settings(max_examples=300, deadline=None)
def test_no_card_number_survives_in_any_script_or_spacing(head: str, zero: int, separator: str, shape: str) -> None:
    digits = head + next(str(d) for d in range(10) if luhn_valid(f"{head}{d}"))
    groups = [digits[i : i + 4] for i in range(0, len(digits), 4)]
    spelled = separator.join("".join(chr(zero + int(d)) for d in group) for group in groups)
    text = shape.format(spelled)
    out = masked(text)
    assert "***" in out, (text, out)
    assert digits not in _fold_digits(out) and digits[4:12] not in _fold_digits(out).replace(" ", "")


# ------------------------------------------------------------------------------------------------ cut values

# The secret part of each detector's example: no seven characters of it may survive a cut anywhere.
_SECRET_PART = {
    "bearer": "tok_1a2b3c4d",
    "basic": "dXNlcjpwYXNzd29yZA==",
    "authorization": "0123456789abcdef",
    "password_phrase": "correct horse battery",
    "jwt": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1LTEifQ.c2lnbmF0dXJl",
    "card": "4111111111111111",
    "github": maskrules.DETECTORS[6].example[4:],
    "private_key": "MIIEpAIBAAKCAQEA",
    "aws_access_key_id": "IOSFODNN7EXAMPLE",
    "slack": "1234567890-abcdefghij",
    "stripe": "4eC39HqLyjWDarjtT1zdp7dc",
    "google_api_key": "SyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q",
    "slack_webhook": "T0000AAAA/B0000BBBB/Xy7GhT2kLm9QwErT5yUiOp3a",
    "discord_webhook": "aB3dE5fG7hI9jK1lM3nO5pQ7rS9tU1vW3xY5z",
    "telegram_bot": "AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw0",
    "azure_storage_key": "ZmFrZS1rZXktZm9yLXRlc3RzLW9ubHk",
    "openai": "Ab3De5Fg7Hi9Jk1Lm3No5Pq7Rs9Tu1Vw3Xy5Za7Bc9De1",
    "gitlab": "Ab3De5Fg7Hi9Jk1Lm3No",
    "npm": "Ab3De5Fg7Hi9Jk1Lm3No5Pq7Rs9Tu1Vw3Xy5",
    "pypi": "CJDAwYjU1ZmM1LWE5NTYtNDdkOS04ZmJmLTJkMTU1NTI1OTQ4ZAACKlsz",
    "sendgrid": "Ab3De5Fg7Hi9Jk1Lm3No5P.q7Rs9Tu1Vw3Xy5Za7Bc9De1Fg3Hi5Jk7Lm9No1Pq3Rs",
    "shopify": "0123456789abcdef0123456789abcdef",
    "midtrans": "Ab3De5Fg7Hi9Jk1Lm3No5Pq7R",
    "xendit": "Ab3De5Fg7Hi9Jk1Lm3No5Pq7Rs9Tu1",
    "square": "Ab3De5Fg7Hi9Jk1Lm3No5Pq7Rs9Tu1Vw3Xy5Za7B",
}


def _leaks(secret: str, text: str) -> bool:
    flat = text.replace(" ", "").replace("-", "")
    return any(secret[i : i + 7] in text or secret[i : i + 7] in flat for i in range(len(secret) - 6))


@pytest.mark.parametrize("detector", maskrules.DETECTORS, ids=lambda d: d.name)
def test_a_string_cut_at_max_string_keeps_no_part_of_a_secret(detector: maskrules.Detector) -> None:
    """The cut may fall anywhere in a secret that a detector only matches whole: what it leaves is masked."""
    secret = _SECRET_PART[detector.name]
    assert secret in detector.example or secret in detector.example.replace(" ", "")
    lead = "note: "
    for keep in range(1, len(detector.example) + 1):
        policy = Policy(max_string=len(lead) + keep)
        out = policy.apply({"request": {"body": {"s": lead + detector.example + " tail"}}})["request"]["body"]["s"]
        assert not _leaks(secret, out), (keep, out)


def test_reprs_and_decoding_errors_cut_at_256_characters_keep_no_part_of_a_secret() -> None:
    class Card:
        def __repr__(self) -> str:
            return "Card(" + "x" * 230 + ", number=4111 1111 1111 1111)"  # cut after ten digits

    trail = POLICY.apply({"metadata": {"card": gt_json_safe(Card())}})
    assert trail["metadata"]["card"]["$repr"].endswith("***…")
    assert not _leaks("4111111111111111", str(trail))


def gt_json_safe(value: object) -> object:
    from gotrails_otel._json import json_safe

    return json_safe(value)


@pytest.mark.parametrize(
    ("raw", "content_type"),
    [
        (b'{"a": 1, "n": 4111111111111111, "z": 2}', "application/json"),
        (b'{"a": 1, "n": "4111 1111 1111 1111", "z": 2}', "application/json"),
        (b'{"a": 1, "h": "Bearer QZXJVKWQabcd", "z": 2}', "application/json"),
        (b'{"a": 1, "u": "https://u:QZXJVKWQ@h/x", "z": 2}', "application/json"),
        (b'{"a": 1, "t": ["ghp_QZXJVKWQabcdefghijklmnopqrstuvwxyz12"], "z": 2}', "application/json"),
        (b"a=1&note=card+4111+1111+1111+1111&z=2", "application/x-www-form-urlencoded"),
        (b"log: Authorization: Bearer QZXJVKWQabcd then", "text/plain"),
        (
            b'--B\r\nContent-Disposition: form-data; name="note"\r\n\r\nkey AKIAQZXJVKWQ12345678\r\n--B--\r\n',
            "multipart/form-data; boundary=B",
        ),
    ],
)
def test_a_body_cut_at_any_byte_keeps_no_part_of_a_secret(raw: bytes, content_type: str) -> None:
    secrets = ("4111111111111111", "QZXJVKWQabcd", "QZXJVKWQ12345678", "QZXJVKWQabcdefghijklmnopqrstuvwxyz12")
    for keep in range(1, len(raw)):
        value = body.decode_body(raw[:keep], content_type, None, len(raw))
        out = str(POLICY.apply({"request": {"body": value}})["request"]["body"])
        for secret in secrets:
            assert not _leaks(secret, out), (keep, out)


# ------------------------------------------------------------------------------------------------ XML, HTML


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "<login><user>ann</user><password>x-pw-1</password></login>",
            "<login><user>ann</user><password>***</password></login>",
        ),
        (  # SOAP WS-Security (payment gateways): the whole UsernameToken
            '<wsse:Security><wsse:UsernameToken><wsse:Username>ann</wsse:Username><wsse:Password Type="PasswordText">'
            "x-pw-2</wsse:Password></wsse:UsernameToken></wsse:Security>",
            "<wsse:Security><wsse:UsernameToken>***</wsse:UsernameToken></wsse:Security>",
        ),
        ("<credentials><key>x-key-3</key></credentials><ok>1</ok>", "<credentials>***</credentials><ok>1</ok>"),
        ("<Password><![CDATA[x-pw-4]]></Password>", "<Password>***</Password>"),
        ("<a><password>x-pw-5…", "<a><password>***…"),  # cut
        (
            '<form><input type="hidden" name="csrf_token" value="x-csrf-6"><input name="q" value="kept"></form>',
            '<form><input type="hidden" name="csrf_token" value="***"><input name="q" value="kept"></form>',
        ),
        ('<meta name="csrf-token" content="x-csrf-7">', '<meta name="csrf-token" content="***">'),
        ('<user password="x-pw-8" name="ann"/>', '<user password="***" name="ann"/>'),
    ],
)
def test_xml_and_html_by_element_and_field_name(text: str, expected: str) -> None:
    assert masked(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "<p>1 < 2 and 3 > 2</p>",
        "<tokenType>Bearer</tokenType><author>ann</author>",
        '<meta name="viewport" content="width=device-width"><input id="password" type="password">',
        '<div class="password-field" id="pw">visible</div><password/>',
    ],
)
def test_markup_near_misses(text: str) -> None:
    assert masked(text) == text


# ----------------------------------------------------------------------------------------- nested encodings

_DOC = '{"user": "ann", "password": "n-pw-1"}'


@pytest.mark.parametrize(
    "text",
    [
        base64.b64encode(_DOC.encode()).decode(),  # a Pub/Sub push message's data, an OAuth state
        base64.urlsafe_b64encode(_DOC.encode()).decode().rstrip("="),
        urllib.parse.quote(_DOC),  # URL-encoded JSON in a JSON string or a cookie
        urllib.parse.quote(urllib.parse.quote(_DOC)),  # encoded twice
        "state=" + urllib.parse.quote(_DOC) + "&page=2",  # encoded JSON as a query parameter
        "https://h/cb?state=" + urllib.parse.quote(_DOC),
        urllib.parse.quote("https://u:n-pw-1@idp.example/x", safe=""),  # an encoded URL on its own
        "https://h/x?next=" + urllib.parse.quote(urllib.parse.quote("https://u:n-pw-1@idp/x", safe=""), safe=""),
        "//u:n-pw-1@cdn.example/x.js",  # a URL without a scheme
    ],
)
def test_secrets_inside_encoded_values(text: str) -> None:
    out = masked(text)
    for form in _decodings(out):
        assert "n-pw-1" not in form, form
    assert any("ann" in form or "idp" in form or "cdn" in form for form in _decodings(out))  # the rest is kept


def _decodings(text: str) -> list[str]:
    forms = [text, urllib.parse.unquote(text), urllib.parse.unquote(urllib.parse.unquote(text))]
    with contextlib.suppress(ValueError):  # not base64 (UnicodeDecodeError is a ValueError)
        forms.append(base64.b64decode(text + "==", altchars=b"-_").decode())
    return forms


@pytest.mark.parametrize(
    "text",
    [
        "a%2Fb%2Fc",
        "50% off today",
        "eyJhbGciOiJIUzI1NiJ9",
        "see //cdn.example/x.js",
        base64.b64encode(b'{"a": 1}').decode(),
    ],
)
def test_encoded_near_misses(text: str) -> None:
    assert masked(text) == text


def test_a_text_seen_deep_inside_text_is_not_remembered_as_clean_for_the_top_level() -> None:
    policy = Policy()
    inner = json.dumps({"p": urllib.parse.quote(json.dumps({"password": "n-pw-2"}))})
    deep: object = inner
    for _ in range(5):
        deep = json.dumps({"wrap": deep})
    for value in (deep, inner, urllib.parse.quote(json.dumps({"password": "n-pw-2"}))):
        out = json.dumps(policy.apply({"request": {"body": {"v": value}}}))
        assert "n-pw-2" not in out and "n-pw-2" not in urllib.parse.unquote(out)


def test_detector_hints_start_with_the_few_characters_the_gate_is_built_on() -> None:
    """Every first character of a hint is one more alternative the gate tries at each position of every string."""
    firsts = {hint[0] for detector in maskrules.DETECTORS for hint in detector.hints}
    assert firsts <= set("-abegkpx"), firsts


# -------------------------------------------------------------------------------------------- SQL, GraphQL


def _sql(query: str, args: Any, executemany: bool = False) -> dict[str, Any]:
    request = {"query": query, "args": args, **({"executemany": True} if executemany else {})}
    trail = POLICY.apply({"integrations": [{"type": "database", "name": "db", "request": request}]})
    return dict(trail["integrations"][0]["request"])


@pytest.mark.parametrize(
    ("query", "args", "expected"),
    [
        ("INSERT INTO users (email, password) SELECT %s, %s", ["a@b.c", "q-1"], ["a@b.c", "***"]),
        ("SELECT %s AS email, %s AS password", ["a@b.c", "q-2"], ["a@b.c", "***"]),
        (
            "MERGE INTO users USING (SELECT :e AS email, :p AS password) s ON users.email = s.email "
            "WHEN MATCHED THEN UPDATE SET password = s.password",
            {"e": "a@b.c", "p": "q-3"},
            {"e": "a@b.c", "p": "***"},
        ),
        ("UPDATE users SET password = CASE WHEN id = %s THEN %s ELSE password END", [7, "q-4"], [7, "***"]),
        ("UPDATE users SET password = :1 WHERE id = :2", ["q-5", 7], ["***", 7]),  # Oracle's numbered binds
        ("UPDATE users SET password = ?2 WHERE id = ?1", [7, "q-6"], [7, "***"]),  # SQLite's ?NNN
        ("SELECT * FROM users WHERE api_key BETWEEN %s AND %s", ["q-7", "q-8"], ["***", "***"]),
        # array arguments (not executemany rows): both readings are masked, as nothing says which it is
        ("INSERT INTO t (tags, tokens) VALUES (%s, %s)", [["a", "b"], ["q-9", "q-10"]], [["a", "***"], "***"]),
    ],
)
def test_sql_bindings_beyond_the_simple_forms(query: str, args: Any, expected: Any) -> None:
    assert _sql(query, args)["args"] == expected


def test_sql_executemany_rows_and_inline_passwords() -> None:
    rows = _sql("INSERT INTO t (owner, secret) VALUES ($1, $2)", [["o", "q-11"], ["o", "q-12"]], executemany=True)
    assert rows["args"] == [["o", "***"], ["o", "***"]]
    created = _sql("CREATE USER 'b'@'%' IDENTIFIED WITH mysql_native_password BY 'q-13'", None)
    assert created["query"] == "CREATE USER 'b'@'%' IDENTIFIED WITH mysql_native_password BY '***'"


def test_sql_statements_are_not_read_as_prose() -> None:
    """A statement keeps its placeholders, functions and CASE expressions (no password phrase, no bare-word pair)."""
    for query in (
        "UPDATE users SET password = CASE WHEN id = 1 THEN %s ELSE password END",
        "SELECT id FROM users WHERE password = crypt($1, password) AND email = $2",
        "UPDATE users SET password = :1 WHERE id = :2",
    ):
        assert _sql(query, ["x", "y"])["query"] == query


def test_graphql_variables_bound_to_sensitive_arguments() -> None:
    document = "mutation Login($e: String!, $p: String!) { login(email: $e, password: $p) { token } }"
    trail = POLICY.apply({"request": {"body": {"query": document, "variables": {"e": "a@b.c", "p": "g-pw-1"}}}})
    body = trail["request"]["body"]
    assert body == {"query": document, "variables": {"e": "a@b.c", "p": "***"}}
    inline = 'mutation { login(email: "a@b.c", password: "g-pw-2") { token } }'
    out = POLICY.apply({"request": {"body": {"query": inline, "variables": {}}}})["request"]["body"]["query"]
    assert out == 'mutation { login(email: "a@b.c", password: "***") { token } }'


# ------------------------------------------------------------------------------------------ path parameters


@pytest.mark.parametrize(
    ("path", "route", "expected"),
    [
        ("/reset/rst-7f3a9c", "/reset/{token}", "/reset/***"),  # FastAPI, Starlette
        ("/v1/magic/mgc-1/confirm", "/v1/magic/<string:auth_code>/confirm", "/v1/magic/***/confirm"),  # Flask
        ("/users/42/invite/inv-2", "/users/{user_id}/invite/<invite_token>", "/users/42/invite/***"),
        ("/api/reset/rst-3", "/reset/{token}", "/api/reset/***"),  # a mounted application
        ("/keys/k-4/rotate", "/keys/{api_key:str}/rotate", "/keys/***/rotate"),
        ("/users/42/orders/7", "/users/{user_id}/orders/{order_id}", "/users/42/orders/7"),  # nothing sensitive
        ("/files/a/b/c", "/files/{file_path:path}", "/files/a/b/c"),
    ],
)
def test_path_segments_bound_to_sensitive_route_parameters(path: str, route: str, expected: str) -> None:
    trail = POLICY.apply({"entry": {"kind": "http"}, "request": {"path": path, "route": route}})
    assert trail["request"] == {"path": expected, "route": route}


# ---------------------------------------------------------------------------------------------------- Redis


def _redis(request: dict[str, Any], response: dict[str, Any] | None = None) -> dict[str, Any]:
    item = {"type": "cache", "name": "redis", "request": request, "response": response or {}}
    return dict(POLICY.apply({"integrations": [item]})["integrations"][0])


@pytest.mark.parametrize(
    ("request_", "response", "secret"),
    [
        # replies that hold credentials
        (
            {"command": "CONFIG", "key": "GET", "args": ["*"]},
            {"value": ["maxmemory", "0", "requirepass", "r-1"]},
            "r-1",
        ),
        ({"command": "CONFIG", "key": "GET", "args": ["masterauth"]}, {"value": {"masterauth": "r-2"}}, "r-2"),
        (
            {"command": "ACL", "key": "GETUSER", "args": ["bob"]},
            {"value": ["flags", ["on"], "passwords", ["r3" * 32]]},
            "r3" * 32,
        ),
        ({"command": "ACL", "key": "LIST"}, {"value": ["user bob on #" + "r4" * 32 + " ~* +@all"]}, "r4" * 32),
        ({"command": "HGETALL", "key": "user:1"}, {"value": ["email", "a@b.c", "password", "r-5"]}, "r-5"),
        (
            {"command": "XRANGE", "key": "logins", "args": ["-", "+"]},
            {"value": [["1-0", ["user", "ann", "otp", "r-6"]]]},
            "r-6",
        ),
        # commands whose values are credentials
        ({"command": "MSET", "key": "user:1:token", "args": ["r-7", "user:1:name", "ann"]}, None, "r-7"),
        ({"command": "SENTINEL", "key": "SET", "args": ["mymaster", "auth-pass", "r-8"]}, None, "r-8"),
        ({"command": "SENTINEL", "key": "CONFIG", "args": ["SET", "sentinel-pass", "r-9"]}, None, "r-9"),
        ({"command": "XADD", "key": "logins", "args": ["MAXLEN", "~", "1000", "*", "password", "r-10"]}, None, "r-10"),
        (
            {
                "command": "EVAL",
                "key": "return redis.call('SET', KEYS[1], ARGV[1])",
                "args": ["1", "u:1:api_key", "r-11"],
            },
            None,
            "r-11",
        ),
        # any command on a key naming a secret, whichever segment names it
        ({"command": "SADD", "key": "user:1:tokens", "args": ["r-12"]}, None, "r-12"),
        ({"command": "GETDEL", "key": "otp:4711"}, {"status": "HIT", "value": "r-13"}, "r-13"),
        ({"command": "LPOP", "key": "reset_tokens"}, {"status": "HIT", "value": "r-14"}, "r-14"),
        ({"command": "MGET", "keys": ["user:1:name", "user:1:session"]}, {"value": ["ann", "r-15"]}, "r-15"),
        # redis-py sends these as one two-word command name, the first argument recorded as the key
        ({"command": "CONFIG SET", "key": "masterauth", "args": ["r-16"]}, {"status": "OK"}, "r-16"),
        ({"command": "ACL SETUSER", "key": "bob", "args": ["on", ">r-17", "~*"]}, {"status": "OK"}, "r-17"),
        ({"command": "ACL LIST", "key": None}, {"value": ["user bob on >r-18 ~*"]}, "r-18"),
    ],
)
def test_redis_commands_and_replies_holding_credentials(
    request_: dict[str, Any], response: dict[str, Any] | None, secret: str
) -> None:
    item = _redis(request_, response)
    assert secret not in str(item), item
    assert "***" in str(item)


def test_redis_near_misses() -> None:
    item = _redis({"command": "HGETALL", "key": "user:1"}, {"value": ["email", "a@b.c", "plan", "pro"]})
    assert item["response"]["value"] == ["email", "a@b.c", "plan", "pro"]
    item = _redis({"command": "SET", "key": "payment:pay-1", "args": ["PENDING"]}, {"status": "OK"})
    assert item["request"]["args"] == ["PENDING"]
    item = _redis({"command": "LRANGE", "key": "queue", "args": ["0", "-1"]}, {"value": ["password", "x"]})
    assert item["response"]["value"] == ["password", "x"]  # a list of words, not field/value pairs


def test_urls_inside_other_urls_without_encoding() -> None:
    text = "a=https://u:u-pw-1@h.example/x&b=redis://:u-pw-2@cache&next=https://h/cb?token=u-tok-3"
    out = masked(text)
    assert out == "a=https://***@h.example/x&b=redis://***@cache&next=https://h/cb?token=***"
    assert (
        masked("see https://h/login?next=https://u:u-pw-4@idp/x ok") == "see https://h/login?next=https://***@idp/x ok"
    )


# --------------------------------------------------------------------------------------------------- bodies


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-8-sig"])
def test_json_in_utf16_or_32_without_a_charset_is_masked_as_json(encoding: str) -> None:
    raw = json.dumps({"user": "ann", "password": "b-pw-1"}).encode(encoding)
    value = body.decode_body(raw, "application/json", None, len(raw))
    assert value == {"user": "ann", "password": "b-pw-1"}
    assert POLICY.apply({"request": {"body": value}})["request"]["body"]["password"] == "***"
    cut = body.decode_body(raw[: len(raw) * 3 // 4], "application/json", None, len(raw))
    assert "b-pw-1" not in str(POLICY.apply({"request": {"body": cut}}))


def test_text_with_nul_characters_is_binary() -> None:
    raw = "password=b-pw-2".encode("utf-16-le")
    value = body.decode_body(raw, "text/plain; charset=utf-8", None, len(raw))
    assert "$binary" in value


def test_multipart_extended_and_missing_names() -> None:
    raw = (
        b"--B\r\nContent-Disposition: form-data; name*=UTF-8''pass%77ord\r\n\r\nb-pw-3\r\n"
        b"--B\r\nContent-Disposition: form-data\r\n\r\nb-pw-4\r\n--B--\r\n"
    )
    value = body.decode_body(raw, "multipart/form-data; boundary=B", None, len(raw))
    assert value == {"password": "b-pw-3", "": {"size": 6}}
    assert "b-pw" not in str(POLICY.apply({"request": {"body": value}}))


@pytest.mark.parametrize(
    ("message", "secret"),
    [
        ("invalid input syntax for type integer: \"x\"\nCONTEXT:  unnamed portal parameter $2 = 'd-pw-1'", "d-pw-1"),
        ('invalid input syntax for type integer: "x"\nCONTEXT:  COPY users, line 1: "a@b.c\td-pw-2\tx"', "d-pw-2"),
        ("(1366, \"Incorrect integer value: 'd-pw-3' for column 'age' at row 1\")", "d-pw-3"),
    ],
)
def test_driver_messages_echoing_values(message: str, secret: str) -> None:
    trail = POLICY.apply({"errors": [{"source": "db", "message": message}]})
    assert secret not in trail["errors"][0]["message"]
    assert trail["redacted"]["driver_message"] >= 1


def test_positional_task_arguments_masked_by_their_parameter_names() -> None:
    request = {"task": "shop.reset", "args": ["ann", "t-1", None], "arg_names": ["user", "reset_token", "pin"]}
    trail = POLICY.apply({"integrations": [{"type": "custom", "name": "shop.reset", "request": request}]})
    assert trail["integrations"][0]["request"]["args"] == ["ann", "***", None]
    assert trail["redacted"]["argument"] == 1


@pytest.mark.parametrize(
    ("query", "args", "expected"),
    [
        ("SELECT set_password(%s, %s)", ["bob", "f-1"], ["***", "***"]),  # a function named for a secret
        ("CALL auth.rotate_api_key(:k)", {"k": "f-2"}, {"k": "***"}),
        ("set_password", ["bob", "f-3"], ["***", "***"]),  # cursor.callproc("set_password", …)
        ("SELECT md5(%s), crypt(%s, gen_salt(%s))", ["a", "b", "bf"], ["a", "b", "bf"]),
        ("get_orders", ["ann"], ["ann"]),
    ],
)
def test_sql_calls_of_functions_named_for_a_secret(query: str, args: Any, expected: Any) -> None:
    assert _sql(query, args)["args"] == expected


@pytest.mark.parametrize(
    ("path", "route", "expected"),
    [
        ("/reset/rst-9/", "^reset/(?P<token>[0-9a-z-]+)/$", "/reset/***/"),  # Django re_path
        ("/reset/rst-9/", "reset/<str:token>/", "/reset/***/"),  # Django path (no leading slash)
        ("/u/4/", r"^u/(?P<user_id>\d+)/$", "/u/4/"),
    ],
)
def test_django_routes(path: str, route: str, expected: str) -> None:
    trail = POLICY.apply({"entry": {"kind": "http"}, "request": {"path": path, "route": route}})
    assert trail["request"]["path"] == expected


def test_incoming_ids_that_are_secrets_are_replaced_by_the_trace_id() -> None:
    trace = "0af7651916cd43dd8448eb211c80319c"
    trail = POLICY.apply(
        {
            "trace_id": "AKIAIOSFODNN7EXAMPLE",
            "request_id": "4111111111111111",
            "otel": {"trace_id": trace},
            "request": {"headers": {"x-request-id": ["4111111111111111"]}},
        }
    )
    assert trail["trace_id"] == trace and trail["request_id"] == trace
    assert trail["request"]["headers"]["x-request-id"] == ["***"]
    kept = POLICY.apply({"trace_id": "pay-flow-1", "request_id": "req-42", "otel": {"trace_id": trace}})
    assert kept["trace_id"] == "pay-flow-1" and kept["request_id"] == "req-42"


@pytest.mark.parametrize(
    "query",
    ["password=hunter2&user=bob", "user=bob&api_key=hunter2", "note, password: hunter2", "  password=hunter2"],
)
def test_a_query_beside_args_that_is_no_statement_is_masked_as_text(query: str) -> None:
    # {"query": ..., "args": ...} is read as a SQL statement and its arguments; a "query" that is no statement (a
    # query string in a request body) must not escape the text rules that a statement does not need.
    body = Policy().apply({"request": {"body": {"query": query, "args": None}}})["request"]["body"]
    assert "hunter2" not in json.dumps(body), body
