"""One URL masker for every place a URL appears: incoming query strings, outgoing request URLs, and any URL inside
a string value or a text.

At least as strict as OpenTelemetry's own URL redaction (semantic conventions): the whole userinfo
(``https://user:pw@host``, ``https://TOKEN@host``, ``redis://:pw@host``, passwords containing ``@``) and the values of
the query keys ``AWSAccessKeyId``, ``Signature``, ``sig`` and ``X-Goog-Signature``; plus every query (and fragment)
parameter whose key is sensitive, also when the key is bracketed or percent-encoded (``user[password]``,
``user%5Bpassword%5D``). Values already redacted (``REDACTED``, ``***``) stay as they are. A percent-encoded value
is decoded (twice at most, for double encoding) and handed to ``text`` — the policy's text masker, which reads URLs,
JSON and forms — and encoded again when anything in it was masked. A URL without a scheme (``//user:pw@host``) has
its userinfo masked too.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import quote, unquote, unquote_plus

from .maskrules import URL_SIGNATURE_KEYS

__all__ = ["MASK", "mask_encoded", "mask_query", "mask_url", "mask_urls_in_text", "redact_url"]

MASK = "***"
_REDACTED = frozenset({"", MASK, "REDACTED"})
# A URL inside text: a scheme, "://", then everything up to whitespace, a quote or an angle bracket; or a URL without
# a scheme ("//user:pw@host/…") when it has userinfo.
_URL_IN_TEXT = re.compile(
    r"""[A-Za-z][A-Za-z0-9+.\-]{0,31}://[^\s"'<>`]+|(?<![:/\w])//[^/\s"'<>`@]{1,256}@[^\s"'<>`]*"""
)
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]{0,31}://")
_AUTHORITY_END = re.compile(r"""[/?#\s"'<>`&]""")
# Percent-encoded structure: { } [ ] " : = & / @ (JSON, a form, a URL inside a value).
ENCODED = re.compile(r"%(?:7[BbDd]|5[BbDd]|22|3[AaDd]|26|2[Ff]|40|25)")

Sensitive = Callable[[str], bool]
Count = Callable[[str], None]
Text = Callable[[str], str]


def _never(key: str) -> bool:
    return False


def _ignore(kind: str) -> None:
    return None


def mask_encoded(value: str, text: Text) -> str | None:
    """A percent-encoded ``value`` decoded and masked by ``text``, encoded again; ``None`` when nothing in it is
    masked (or it encodes no structure)."""
    if "%" not in value or not ENCODED.search(value):
        return None
    decoded = unquote_plus(value) if " " not in value else unquote(value)
    masked = text(decoded)
    if masked == decoded:
        return None
    return quote(masked, safe="*-._~")


def mask_url(url: str, is_sensitive: Sensitive = _never, count: Count = _ignore, text: Text | None = None) -> str:
    """``url`` with its userinfo, signature query values and sensitive query/fragment parameters masked; ``text``
    masks percent-encoded parameter values (default: as URLs)."""
    scheme = _SCHEME.match(url)
    start = scheme.end() if scheme else (2 if url.startswith("//") else 0)
    if start:
        end = len(url)
        for stop in "/?#":
            found = url.find(stop, start)
            if found != -1 and found < end:
                end = found
        authority = url[start:end]
        at = authority.rfind("@")
        if at != -1:
            userinfo = authority[:at]
            if userinfo not in ("REDACTED:REDACTED", "REDACTED", MASK):
                url = f"{url[:start]}{MASK}{url[start + at :]}"
                count("url_userinfo")
    question = url.find("?", start)
    hash_at = url.find("#", start)
    if question != -1 and (hash_at == -1 or question < hash_at):
        query_end = hash_at if hash_at != -1 else len(url)
        query = mask_query(url[question + 1 : query_end], is_sensitive, count, text)
        url = f"{url[: question + 1]}{query}{url[query_end:]}"
        hash_at = url.find("#", question + 1 + len(query))
    if hash_at != -1 and "=" in url[hash_at:]:
        url = url[: hash_at + 1] + mask_query(url[hash_at + 1 :], is_sensitive, count, text)
    rest = url.find("/", start)
    if rest != -1 and "://" in url[rest + 1 :]:
        url = url[: rest + 1] + _inner_userinfo(url[rest + 1 :], count)
    return url


def _inner_userinfo(rest: str, count: Count) -> str:
    """The userinfo of every further URL in the rest of a URL, when it is in no query of its own (a form text:
    ``a=https://…&b=https://u:pw@…``). Their parameters are pairs the policy masks in the text."""
    pieces: list[str] = []
    last = 0
    for scheme in _SCHEME.finditer(rest):
        start = scheme.end()
        end = _AUTHORITY_END.search(rest, start)
        stop = end.start() if end else len(rest)
        at = rest.rfind("@", start, stop)
        if at == -1 or start < last or rest[start:at] in ("REDACTED:REDACTED", "REDACTED", MASK):
            continue
        pieces.append(rest[last:start])
        pieces.append(MASK)
        last = at
        count("url_userinfo")
    return "".join(pieces) + rest[last:] if pieces else rest


def mask_query(query: str, is_sensitive: Sensitive = _never, count: Count = _ignore, text: Text | None = None) -> str:
    """A query string (``a=1&password=x``, without ``?``) with sensitive parameters masked, and percent-encoded
    values masked by ``text`` (default: URLs inside them)."""
    if "=" not in query:
        return query
    pieces = query.split("&")
    changed = False
    for index, piece in enumerate(pieces):
        key, sep, value = piece.partition("=")
        if not sep or value in _REDACTED:
            continue
        name = unquote_plus(key) if ("%" in key or "+" in key) else key
        if name.lower() in URL_SIGNATURE_KEYS or is_sensitive(name):
            pieces[index] = f"{key}={MASK}"
            count("url_query")
            changed = True
        elif "//" in value and (_SCHEME.match(value) or value.startswith("//")):
            # A URL passed as a parameter without encoding (…?redirect=https://u:pw@host/x)
            masked_url = mask_url(value, is_sensitive, count, text)
            if masked_url != value:
                pieces[index] = f"{key}={masked_url}"
                changed = True
        elif "%" in value:
            # A URL, JSON or a form passed as a parameter (redirect_uri=https%3A%2F%2Fu%3Apw%40host, state=%7B…%7D).
            masked = mask_encoded(value, text or (lambda inner: _encoded_url(inner, is_sensitive, count)))
            if masked is not None:
                pieces[index] = f"{key}={masked}"
                changed = True
    return "&".join(pieces) if changed else query


def _encoded_url(inner: str, is_sensitive: Sensitive, count: Count) -> str:
    if "%" in inner and ENCODED.search(inner):  # encoded twice
        again = mask_encoded(inner, lambda twice: _encoded_url(twice, is_sensitive, count))
        return inner if again is None else again
    return mask_url(inner, is_sensitive, count) if _SCHEME.match(inner) else inner


def mask_urls_in_text(
    text: str, is_sensitive: Sensitive = _never, count: Count = _ignore, masker: Text | None = None
) -> str:
    """``text`` with every URL in it masked by :func:`mask_url` (``masker`` masks percent-encoded values)."""
    if "//" not in text:
        return text
    return _URL_IN_TEXT.sub(lambda m: mask_url(m.group(0), is_sensitive, count, masker), text)


def redact_url(url: object) -> str:
    """A URL as a capture hook records it: OpenTelemetry's redaction (userinfo, signature keys), never less.

    The policy masks sensitive query keys on top of it when the trail is flushed.
    """
    return mask_url(str(url))
