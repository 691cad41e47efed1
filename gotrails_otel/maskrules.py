"""The masking policy's tables: sensitive keys, value detectors, driver-message dumps, Redis credential commands,
URL query keys and client-IP headers.

Every default rule of the policy is data in this module, so that one test per detector can run its own examples and
the README's "What is masked" section is generated from here (:func:`markdown`; a test fails when the README drifts).
"""

from __future__ import annotations

import base64
import binascii
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "CLIENT_IP_HEADERS",
    "CUT_MARK",
    "CUT_URL",
    "DETECTORS",
    "DRIVER_DUMPS",
    "EXACT_KEYS",
    "EXEMPT_KEYS",
    "REDIS_CREDENTIALS",
    "SUBSTRING_KEYS",
    "URL_SIGNATURE_KEYS",
    "WORD_KEYS",
    "Detector",
    "DriverDump",
    "fold_key",
    "key_words",
    "luhn_valid",
    "markdown",
]

# ------------------------------------------------------------------------------------------------ keys
# Keys are compared normalised: lower case, without "-", "_", ".", spaces (and percent-escapes decoded).

SUBSTRING_KEYS: tuple[str, ...] = (
    "password",
    "passwd",
    "passphrase",
    "mysqlpwd",
    "secret",
    "token",
    "apikey",
    "accesskey",
    "appkey",
    "applicationkey",
    "consumerkey",
    "privatekey",
    "signingkey",
    "encryptionkey",
    "authorization",
    "authentication",
    "authcode",
    "oauthstate",
    "cookie",
    "credential",
    "signature",
    "sessionid",
    "sessid",
    "sessionkey",
    "sessionstate",
    "usersession",
    "aiohttpsession",
    "connectsid",
    "jwt",
    "csrf",
    "xsrf",
    "cardnumber",
    "cardnum",
    "cardno",
    "creditcard",
    "ccnumber",
    "ccnum",
    "cvv",
    "cvc",
    "securitycode",
    "socialsecurity",
    # one-time and second-factor codes, PKCE verifiers, SAML assertions, security answers
    "passcode",
    "totp",
    "mfacode",
    "2facode",
    "verificationcode",
    "onetimecode",
    "codeverifier",
    "samlresponse",
    "securityanswer",
    # Redis' own configuration names for passwords, and master keys
    "requirepass",
    "masterauth",
    "masterkey",
    "hmackey",
    # "password" in other languages (de, es, pt, fr, nl, id, pl)
    "passwort",
    "kennwort",
    "contrasena",
    "senha",
    "motdepasse",
    "wachtwoord",
    "katasandi",
    "haslo",
)
"""Matched anywhere inside a normalised key: ``user_password``, ``X-Api-Key``, ``card_cvv``, ``cvv2``, ``PHPSESSID``."""

WORD_KEYS: tuple[str, ...] = ("pwd", "pw", "pass", "pin", "pan", "ssn", "otp", "sid", "auth", "sig", "ccv", "cvn")
"""Matched as one word of a key (words split at ``-_.``, spaces, brackets and camelCase): ``mysql_pwd``, ``x-auth``,
``card_pin``, ``userSSN``, ``connect.sid`` — but not ``author``, ``spin`` or ``passenger``."""

EXACT_KEYS: tuple[str, ...] = ("session", "sign", "signed", "symfony", "hmac")
"""Matched only as the whole key (``session``, ``_session``), because as words they name harmless things
(``session_count``)."""

EXEMPT_KEYS: tuple[str, ...] = (
    "author",
    "authors",
    "authority",
    "authored",
    "sessioncount",
    "tokencount",
    "tokentype",
    "maxtokens",
    "prompttokens",
    "completiontokens",
    "totaltokens",
)
"""Known harmless keys that the rules above would otherwise match (the peers' known false positives)."""

URL_SIGNATURE_KEYS: frozenset[str] = frozenset({"awsaccesskeyid", "signature", "sig", "x-goog-signature"})
"""Query keys whose values OpenTelemetry's semantic conventions redact in ``url.full`` (compared lower-cased)."""

CLIENT_IP_HEADERS: tuple[str, ...] = (
    "x-forwarded-for",
    "x-real-ip",
    "forwarded",
    "true-client-ip",
    "cf-connecting-ip",
    "x-client-ip",
    "x-cluster-client-ip",
    "fastly-client-ip",
)
"""Headers that carry the client's IP address: kept by default, masked with ``GOTRAILS_MASK_CLIENT_IP=true``."""

_WORDS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")
# Letters that look like Latin ones (Cyrillic, Greek) and Unicode dashes, for keys spelled to slip past the rules.
_LOOKALIKES = str.maketrans(
    "аеорсухіјѕкмнтвԁԛԝАВЕКМНОРСТХУІЈЅ"
    + "οαεικνρτυχΑΒΕΖΗΙΚΜΝΟΡΤΥΧ"
    + "łŁđĐøØ"
    + "\u2010\u2011\u2012\u2013\u2014\u2015\u2212",
    "aeopcyxijskmhtbdqwABEKMHOPCTXYIJS" + "oaeikvptuxABEZHIKMNOPTYX" + "lLdDoO" + "-------",
)


def fold_key(key: str) -> str:
    """A non-ASCII key as the rules read it: compatibility forms folded (full-width letters), accents,
    zero-width and other format characters removed (``pass\\u200bword``, ``passwörd``), look-alike Cyrillic and Greek
    letters and Unicode dashes replaced by their ASCII twins."""
    decomposed = unicodedata.normalize("NFKD", key)
    kept = "".join(ch for ch in decomposed if not unicodedata.combining(ch) and unicodedata.category(ch) != "Cf")
    return kept.translate(_LOOKALIKES)


def key_words(key: str) -> list[str]:
    """The lower-cased words of a key: ``cardCvc`` → ``card, cvc``; ``X-API-KEY`` → ``x, api, key``."""
    return [word.lower() for word in _WORDS.findall(key)]


# ------------------------------------------------------------------------------------------- detectors


def luhn_valid(digits: str) -> bool:
    """Whether a string of digits passes the Luhn check used by payment card numbers."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if index % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def _card(match: str) -> bool:
    digits = "".join(ch for ch in match if ch.isdigit())
    return 13 <= len(digits) <= 19 and luhn_valid(digits)


def _basic(match: str) -> bool:
    encoded = match.split()[-1]
    try:
        decoded = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        return False
    return b":" in decoded


@dataclass(frozen=True)
class Detector:
    """A value masked whatever its key.

    ``pattern`` is a regular expression; when it has a group named ``secret`` only that group is masked (the
    ``Authorization:`` before it stays readable). ``hints`` are lower-case literals of which one must occur in the
    lower-cased text before the expression runs (empty: always run; each starts with one of the few characters the
    others start with — ``- a b e g k p x`` — so that the one expression finding them all stays as fast as it is);
    ``check`` confirms a match (Luhn for cards).
    ``example`` must be masked and ``near_miss`` kept: the tests run both. ``cut`` matches what a cut leaves of such
    a secret at the end of a text (the start of a card number, a token without its end), which a cut text masks
    (see :data:`CUT_MARK`).
    """

    name: str
    what: str
    pattern: str
    example: str
    near_miss: str
    hints: tuple[str, ...] = ()
    check: Callable[[str], bool] | None = None
    cut: str | None = None


_TOKEN_VALUE = r"""[^\s"',;&}\]]+"""
# A SQL placeholder is not a password (``SET password = :p WHERE …``).
_NOT_A_PLACEHOLDER = r"(?!(?:\?\d*|%s|\$\d+|:\w+|%\(\w+\)s)(?:[\s,;)]|$))"

DETECTORS: tuple[Detector, ...] = (
    Detector(
        "bearer",
        "bearer credentials",
        r"(?i:\bbearer\s+)[A-Za-z0-9\-._~+/]{6,}=*",
        "Authorization: Bearer tok_1a2b3c4d",
        "the bearer of bad news",
        ("bearer",),
        cut=r"(?i:\bbearer\s+)[A-Za-z0-9\-._~+/]*=*",
    ),
    Detector(
        "basic",
        "basic credentials (base64 of `user:password`)",
        r"(?i:\bbasic\s+)[A-Za-z0-9+/]{8,}=*",
        "Basic dXNlcjpwYXNzd29yZA==",
        "basic authentication required",
        ("basic",),
        _basic,
        cut=r"(?i:\bbasic\s+)[A-Za-z0-9+/]*=*",
    ),
    Detector(
        "authorization",
        "the value of an `Authorization:` header written in text, any scheme (`token …`, `Digest …`)",
        r"(?i:(?:proxy-)?authorization)[\"']?\s*[:=]\s*[\"']?(?P<secret>[A-Za-z][\w.-]*[ \t]+" + _TOKEN_VALUE + r")",
        "Authorization: token 0123456789abcdef",
        "authorization failed for this request",
        ("authorization",),
        cut=r"(?i:(?:proxy-)?authorization)[\"']?\s*[:=]\s*[\"']?[A-Za-z][\w.-]*[ \t]+\S*",
    ),
    Detector(
        "password_phrase",
        "a password with spaces in `password=…` / `password: …` text",
        r"(?i:(?:password|passwd|passphrase|pwd)\s*(?:=>|[=:](?!>))\s*)(?P<secret>"
        + _NOT_A_PLACEHOLDER
        + _TOKEN_VALUE
        + r"(?:[ \t]+(?![\w.\-\[\]%]+\s*[=:])"
        + _TOKEN_VALUE
        + r")*)",
        "login user_password=correct horse battery",
        "password reset requested for ann",
        ("pass", "pwd"),
    ),
    Detector(
        "jwt",
        "JSON Web Tokens",
        r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1LTEifQ.c2lnbmF0dXJl",
        "eyJhbGciOiJIUzI1NiJ9 alone",
        ("eyj",),
        cut=r"\beyJ[A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]*){0,2}",
    ),
    Detector(
        "card",
        "payment card numbers: 13 to 19 digits, spaces or dashes allowed (also full-width digits and Unicode spaces), "
        "Luhn-checked; also JSON numbers and CSV fields",
        r"[2-6](?<!\d.)(?<!\d\..)(?:[ -]{0,2}[0-9]){12,18}(?![0-9]|\.[0-9])",
        "paid with 4111 1111 1111 1111.",
        "order 4111111111111112 shipped",
        (),
        _card,
        cut=r"[2-6](?<!\d.)(?<!\d\..)(?:[ -]{0,2}[0-9]){6,17}[ -]*",  # beyond the first six digits (PCI DSS)
    ),
    Detector(
        "github",
        "GitHub tokens (`ghp_`, `gho_`, `ghs_`, `ghu_`, `ghr_`, `github_pat_`)",
        r"\b(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})\b",
        "ghp_" + "a1B2c3D4e5" * 3 + "f6G7h8",
        "ghp_short",
        ("gh",),
        cut=r"\b(?:gh[pousr]_|github_pat_)[A-Za-z0-9_]*",
    ),
    Detector(
        "private_key",
        "PEM private-key blocks (to the end of the text when the block is cut)",
        r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----[\s\S]*?(?:-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----|\Z)",
        "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA\n-----END RSA PRIVATE KEY-----",
        "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEF\n-----END PUBLIC KEY-----",
        ("-----begin",),
    ),
    Detector(
        "aws_access_key_id",
        "AWS access key ids (`AKIA…`, `ASIA…`)",
        r"\b(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}\b",
        "AKIAIOSFODNN7EXAMPLE",
        "AKIA is a prefix",
        ("akia", "asia", "abia", "acca"),
        cut=r"\b(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]*",
    ),
    Detector(
        "slack",
        "Slack tokens (`xoxb-`, `xoxp-`, `xoxa-`, …)",
        r"\bxox[abposr]-[A-Za-z0-9-]{10,}",
        "xoxb-1234567890-abcdefghij",
        "xoxo-hugs",
        ("xox",),
        cut=r"\bxox[abposr]-[A-Za-z0-9-]*",
    ),
    Detector(
        "stripe",
        "Stripe secret and restricted keys (`sk_live_`, `rk_live_`, test keys too) and webhook secrets (`whsec_`)",
        r"\b(?:[rs]k_(?:live|test)_|whsec_)[A-Za-z0-9]{10,}",
        "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
        "task_live_view",
        ("k_live_", "k_test_", "ec_"),
        cut=r"\b(?:[rs]k_(?:live|test)_|whsec_)[A-Za-z0-9]*",
    ),
    Detector(
        "google_api_key",
        "Google API keys (`AIza…`)",
        r"\bAIza[0-9A-Za-z_-]{35}(?![\w-])",
        "AIzaSyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q",
        "AIzaShort",
        ("aiza",),
        cut=r"\bAIza[0-9A-Za-z_-]*",
    ),
    # Secrets in URL paths: whoever has the URL can post as the application.
    Detector(
        "slack_webhook",
        "Slack incoming-webhook and workflow URLs (the path is the secret)",
        r"(?i:hooks\.slack\.com/(?:services|workflows|triggers)/)(?P<secret>[A-Za-z0-9_/-]{8,})",
        "https://hooks.slack.com/services/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",
        "see https://api.slack.com/messaging/webhooks",
        ("k.com/",),
        cut=r"(?i:hooks\.slack\.com/)[A-Za-z0-9_/-]*",
    ),
    Detector(
        "discord_webhook",
        "Discord webhook URLs (the token in the path)",
        r"(?i:discord(?:app)?\.com/api/webhooks/\d+/)(?P<secret>[A-Za-z0-9_-]{20,})",
        "https://discord.com/api/webhooks/123456789012345678/aB3dE5fG7hI9jK1lM3nO5pQ7rS9tU1vW3xY5z",
        "https://discord.com/api/webhooks/123456789012345678",
        ("api/webhooks/",),
        cut=r"(?i:/api/webhooks/\d+/)[A-Za-z0-9_-]*",
    ),
    Detector(
        "telegram_bot",
        "Telegram bot tokens (also inside `api.telegram.org/bot<token>/…` URLs)",
        r"(?<![\w:])(?:bot)?\d{8,10}:AA[A-Za-z0-9_-]{33}(?![\w-])",
        "https://api.telegram.org/bot123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw0/sendMessage",
        "at 12:AA the meeting starts",
        ("aa",),
        cut=r"(?<![\w:])(?:bot)?\d{8,10}:AA[A-Za-z0-9_-]*",
    ),
    Detector(
        "azure_storage_key",
        "Azure storage account keys in connection strings (`AccountKey=…`)",
        r"(?i:\bAccountKey=)(?P<secret>[A-Za-z0-9+/]{20,}={0,2})",
        "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=ZmFrZS1rZXktZm9yLXRlc3RzLW9ubHk=;EndpointSuffix=x",
        "AccountKey=short",
        ("accountkey=",),
        cut=r"(?i:\bAccountKey=)[A-Za-z0-9+/]*=*",
    ),
    Detector(
        "openai",
        "OpenAI and Anthropic API keys (`sk-proj-…`, `sk-ant-api03-…`, `sk-…`)",
        r"\bsk-(?:proj-|svcacct-|admin-|ant-(?:api|admin)\d\d-)?[A-Za-z0-9_-]{32,}",
        "sk-proj-Ab3De5Fg7Hi9Jk1Lm3No5Pq7Rs9Tu1Vw3Xy5Za7Bc9De1",
        "the sk-learn package",
        ("k-",),
        cut=r"\bsk-(?:proj-|svcacct-|admin-|ant-(?:api|admin)\d\d-)?[A-Za-z0-9_-]*",
    ),
    Detector(
        "gitlab",
        "GitLab personal, deploy and runner tokens (`glpat-`, `gldt-`, `glrt-`)",
        r"\bgl(?:pat|dt|rt|ptt|cbt)-[A-Za-z0-9_-]{20,}",
        "glpat-Ab3De5Fg7Hi9Jk1Lm3No",
        "glpat-short",
        ("glpat-", "gldt-", "glrt-", "glptt-", "glcbt-"),
        cut=r"\bgl(?:pat|dt|rt|ptt|cbt)-[A-Za-z0-9_-]*",
    ),
    Detector(
        "npm",
        "npm access tokens (`npm_…`)",
        r"\bnpm_[A-Za-z0-9]{36}\b",
        "npm_Ab3De5Fg7Hi9Jk1Lm3No5Pq7Rs9Tu1Vw3Xy5",
        "npm_config_cache",
        ("pm_",),
        cut=r"\bnpm_[A-Za-z0-9]*",
    ),
    Detector(
        "pypi",
        "PyPI upload tokens (`pypi-AgEIcHlwaS5vcmc…`)",
        r"\bpypi-AgEIcHlwaS5vcmc[A-Za-z0-9_-]{40,}",
        "pypi-AgEIcHlwaS5vcmcCJDAwYjU1ZmM1LWE5NTYtNDdkOS04ZmJmLTJkMTU1NTI1OTQ4ZAACKlsz",
        "pypi-package",
        ("pypi-ageichlwas5vcmc",),
        cut=r"\bpypi-AgEI[A-Za-z0-9_-]*",
    ),
    Detector(
        "sendgrid",
        "SendGrid API keys (`SG.….…`)",
        r"\bSG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}(?![\w-])",
        "SG.Ab3De5Fg7Hi9Jk1Lm3No5P.q7Rs9Tu1Vw3Xy5Za7Bc9De1Fg3Hi5Jk7Lm9No1Pq3Rs",
        "SG.short.value",
        ("g.",),
        cut=r"\bSG\.[A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]*)?",
    ),
    Detector(
        "shopify",
        "Shopify access tokens and shared secrets (`shpat_`, `shpss_`, `shpca_`, `shppa_`)",
        r"\bshp(?:at|ss|ca|pa)_[a-fA-F0-9]{32}\b",
        "shpat_0123456789abcdef0123456789abcdef",
        "shpat_short",
        ("pat_", "pss_", "pca_", "ppa_"),
        cut=r"\bshp(?:at|ss|ca|pa)_[a-fA-F0-9]*",
    ),
    # Payment gateways' server keys (the example service charges through Midtrans).
    Detector(
        "midtrans",
        "Midtrans server keys (`Mid-server-…`, sandbox `SB-Mid-server-…`)",
        r"\b(?:SB-)?Mid-server-[A-Za-z0-9_-]{16,}",
        "SB-Mid-server-Ab3De5Fg7Hi9Jk1Lm3No5Pq7R",
        "the Mid-server-side setting",
        ("-server-",),
        cut=r"\b(?:SB-)?Mid-server-[A-Za-z0-9_-]*",
    ),
    Detector(
        "xendit",
        "Xendit secret keys (`xnd_production_…`, `xnd_development_…`)",
        r"\bxnd_(?:production|development)_[A-Za-z0-9]{20,}",
        "xnd_development_Ab3De5Fg7Hi9Jk1Lm3No5Pq7Rs9Tu1",
        "xnd_production_",
        ("xnd_",),
        cut=r"\bxnd_(?:production|development)_[A-Za-z0-9]*",
    ),
    Detector(
        "square",
        "Square access tokens and application secrets (`EAAA…`, `sq0atp-…`, `sq0csp-…`)",
        r"\b(?:EAAA[A-Za-z0-9_-]{60}|sq0(?:atp|csp)-[A-Za-z0-9_-]{22,43})(?![\w-])",
        "sq0csp-Ab3De5Fg7Hi9Jk1Lm3No5Pq7Rs9Tu1Vw3Xy5Za7B",
        "sq0csp-short",
        ("eaaa", "p-"),
        cut=r"\b(?:EAAA|sq0(?:atp|csp)-)[A-Za-z0-9_-]*",
    ),
)
"""The value detectors, in the order they run. Remove one with ``GOTRAILS_MASK_PATTERNS='["-name"]'``."""

CUT_MARK = "\u2026"
"""How a cut string ends (``…``): a body cut at ``GOTRAILS_MAX_BODY_BYTES`` (its last value), a string cut at
``GOTRAILS_MAX_STRING``, a ``$repr`` cut at 256 characters. Before the mark, what a cut may have left of a secret is
masked: the ``cut`` expression of each detector, and a URL cut inside its authority (where the userinfo is)."""

CUT_URL = r"[A-Za-z][A-Za-z0-9+.\-]{0,31}://[^/?#\s\"'<>`]*"
"""A URL cut before its authority ended: what is there may be userinfo (``https://user:pass``)."""


# ------------------------------------------------------------------------------------ driver messages


@dataclass(frozen=True)
class DriverDump:
    """Values that database drivers echo in error messages; ``pattern``'s group ``secret`` is replaced by
    ``replacement`` (``None``: the SQL inside is masked like a statement). ``hint`` is a lower-case literal that
    must occur in the lower-cased message before the expression runs."""

    name: str
    what: str
    hint: str
    pattern: str
    replacement: str | None
    example: str


DRIVER_DUMPS: tuple[DriverDump, ...] = (
    DriverDump(
        "sqlalchemy_parameters",
        "SQLAlchemy's `[parameters: …]` line (the arguments are in the integration's `args`, masked); an unusual shape "
        "drops the rest of the message",
        "[parameters: ",
        r"(?m:\[parameters: (?P<secret>.*?)(?:\]$|$))",
        "***",
        "[SQL: INSERT INTO users (id, api_key) VALUES (%(id)s, %(api_key)s)]\n[parameters: ('o2', 'KEY-1')]",
    ),
    DriverDump(
        "sqlalchemy_sql",
        "SQLAlchemy's `[SQL: …]`: masked like any statement (inline literals for sensitive columns)",
        "[sql: ",
        r"\[SQL: (?P<secret>(?:[^\]]|\](?!\n|\Z))*)",
        None,
        "[SQL: INSERT INTO users (email, password) VALUES ('a@b.c', 'PW-1')]",
    ),
    DriverDump(
        "postgres_key",
        "PostgreSQL's `DETAIL: Key (col)=(value)`",
        "key (",
        r"(?i:\bKey )\([^)\n]{0,512}\)=\((?P<secret>.*?)(?:\)(?=\s+(?:already exists|is not present|"
        r"is still referenced|is duplicated|conflicts with)|\.?(?m:$))|(?m:$))",
        "***",
        "DETAIL:  Key (api_key)=(KEY-1) already exists.",
    ),
    DriverDump(
        "postgres_row",
        "PostgreSQL's `Failing row contains (…)`",
        "failing row contains",
        r"Failing row contains \((?P<secret>.*?)(?:\)\.?(?m:$)|(?m:$))",
        "***",
        "DETAIL:  Failing row contains (7, null, PW-1).",
    ),
    DriverDump(
        "postgres_input",
        'PostgreSQL\'s `invalid input syntax for type …: "value"`',
        "invalid input",
        r"invalid input (?:syntax|value) for [^:\n]+: \"(?P<secret>[^\"\n]*)",
        "***",
        'invalid input syntax for type integer: "PW-1"',
    ),
    DriverDump(
        "postgres_line",
        "string literals in PostgreSQL's `LINE n:` statement excerpt",
        "line ",
        r"(?m:^LINE \d+: (?P<secret>.*)$)",
        None,
        "LINE 1: INSERT INTO users VALUES ('PW-1')\n                                  ^",
    ),
    DriverDump(
        "postgres_portal",
        "PostgreSQL's `CONTEXT: unnamed portal parameter $n = '…'` (shown when `log_parameter_max_length_on_error` "
        "is set)",
        "portal parameter",
        r"portal parameter \$\d+ = '(?P<secret>(?:[^'\n]|'')*)",
        "***",
        "CONTEXT:  unnamed portal parameter $2 = 'PW-1'",
    ),
    DriverDump(
        "postgres_copy",
        'PostgreSQL\'s `CONTEXT: COPY t, line n[, column c]: "…"` (the row or value being copied)',
        "copy ",
        r"COPY [^,\n]{1,256}, line \d+(?:, column [^:\n]{1,256})?: \"(?P<secret>[^\n]*?)\"?(?m:$)",
        "***",
        'CONTEXT:  COPY users, line 1: "a@b.c\tPW-1"',
    ),
    DriverDump(
        "mysql_value",
        "MySQL's `Incorrect … value: '…' for column`",
        "incorrect ",
        r"Incorrect [\w ]{1,64} value: '(?P<secret>.*?)(?:' for column|(?m:$))",
        "***",
        "Incorrect integer value: 'PW-1' for column 'age' at row 1",
    ),
    DriverDump(
        "mysql_duplicate",
        "MySQL's `Duplicate entry '…' for key`",
        "duplicate entry",
        r"Duplicate entry '(?P<secret>.*?)(?:' for key|(?m:$))",
        "***",
        "Duplicate entry 'KEY-1' for key 'users.api_key'",
    ),
)
"""Driver error dumps rewritten in every error message (``errors[]`` and each step's or integration's ``error``)."""


# ------------------------------------------------------------------------------------------------ Redis

REDIS_CREDENTIALS: dict[str, str] = {
    "AUTH": "every argument",
    "HELLO": "the username and password after `AUTH`",
    "MIGRATE": "the arguments after `AUTH` / `AUTH2`",
    "ACL SETUSER": "password rules (`>pw`, `<pw`, `#hash`, `!hash`)",
    "CONFIG SET, SENTINEL SET, SENTINEL CONFIG SET": "values of password settings (`requirepass`, `masterauth`, "
    "`auth-pass`, `sentinel-pass`, TLS key passphrases)",
    "CONFIG GET, ACL GETUSER, ACL LIST, HGETALL, XRANGE, XREAD, …": "replies: values of sensitive fields and settings, "
    "password rules",
    "MSET, MSETNX": "values whose key is sensitive",
    "XADD": "values whose field name is sensitive",
    "EVAL, EVALSHA, FCALL": "the arguments when one of the keys is sensitive",
    "HSET, HMSET, HSETNX": "values whose field name is sensitive (`HSET user password …`)",
    "HGET, HMGET, HGETDEL": "replies for sensitive field names",
    "any command on a sensitive key": "values and replies of keys with a sensitive segment (`user:1:token`, "
    "`otp:4711`, `session:…`; MGET by position)",
}
"""Redis commands whose arguments or replies are masked (arguments are recorded with
``GOTRAILS_CAPTURE_CACHE_VALUES=true``; ``AUTH``'s first argument always)."""


# ---------------------------------------------------------------------------------------------- README


def markdown() -> str:
    """The README's "What is masked" tables, generated from the tables above."""
    lines = [
        "| rule | default entries |",
        "|---|---|",
        f"| key contains | {', '.join(f'`{k}`' for k in SUBSTRING_KEYS)} |",
        f"| key has the word | {', '.join(f'`{k}`' for k in WORD_KEYS)} |",
        f"| key is | {', '.join(f'`{k}`' for k in EXACT_KEYS)} |",
        f"| never (known false positives) | {', '.join(f'`{k}`' for k in EXEMPT_KEYS)} |",
        f"| URL query keys (OpenTelemetry) | {', '.join(f'`{k}`' for k in sorted(URL_SIGNATURE_KEYS))} |",
        f"| client-IP headers (`GOTRAILS_MASK_CLIENT_IP`) | {', '.join(f'`{k}`' for k in CLIENT_IP_HEADERS)} |",
        "",
        "| value detector | masks | example |",
        "|---|---|---|",
    ]
    lines += [f"| `{d.name}` | {d.what} | `{_one_line(d.example)}` |" for d in DETECTORS]
    lines += ["", "| driver message | masks | example |", "|---|---|---|"]
    lines += [f"| `{d.name}` | {d.what} | `{_one_line(d.example)}` |" for d in DRIVER_DUMPS]
    lines += ["", "| Redis command | masked |", "|---|---|"]
    lines += [f"| `{command}` | {what} |" for command, what in REDIS_CREDENTIALS.items()]
    return "\n".join(lines) + "\n"


def _one_line(text: str) -> str:
    return text.replace("\n", "\\n").replace("|", "\\|")
