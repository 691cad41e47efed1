"""One URL masker for every place a URL appears: incoming query strings, outgoing request URLs, and any URL inside
a string value or a text.

At least as strict as OpenTelemetry's own URL redaction (semantic conventions): the whole userinfo
(``https://user:pw@host``, ``https://TOKEN@host``, ``redis://:pw@host``, passwords containing ``@``) and the values of
the query keys ``AWSAccessKeyId``, ``Signature``, ``sig`` and ``X-Goog-Signature``; plus every query (and fragment)
parameter whose key is sensitive, also when the key is bracketed or percent-encoded (``user[password]``,
``user%5Bpassword%5D``). Values already redacted (``REDACTED``, ``***``) stay as they are.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import quote, unquote, unquote_plus

from .maskrules import URL_SIGNATURE_KEYS

__all__ = ["MASK", "mask_query", "mask_url", "mask_urls_in_text", "redact_url"]

MASK = "***"
_REDACTED = frozenset({"", MASK, "REDACTED"})
# A URL inside text: a scheme, "://", then everything up to whitespace, a quote or an angle bracket.
_URL_IN_TEXT = re.compile(r"""[A-Za-z][A-Za-z0-9+.\-]{0,31}://[^\s"'<>`]+""")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]{0,31}://")
_ENCODED_URL = re.compile(r"(?i)%3A%2F%2F")

Sensitive = Callable[[str], bool]
Count = Callable[[str], None]


def _never(key: str) -> bool:
    return False


def _ignore(kind: str) -> None:
    return None


def mask_url(url: str, is_sensitive: Sensitive = _never, count: Count = _ignore) -> str:
    """``url`` with its userinfo, signature query values and sensitive query/fragment parameters masked."""
    scheme = _SCHEME.match(url)
    start = scheme.end() if scheme else 0
    if scheme:
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
        query = mask_query(url[question + 1 : query_end], is_sensitive, count)
        url = f"{url[: question + 1]}{query}{url[query_end:]}"
        hash_at = url.find("#", question + 1 + len(query))
    if hash_at != -1 and "=" in url[hash_at:]:
        url = url[: hash_at + 1] + mask_query(url[hash_at + 1 :], is_sensitive, count)
    return url


def mask_query(query: str, is_sensitive: Sensitive = _never, count: Count = _ignore) -> str:
    """A query string (``a=1&password=x``, without ``?``) with sensitive parameters masked."""
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
        elif "%" in value and _ENCODED_URL.search(value):
            # A URL passed as a parameter (redirect_uri=https%3A%2F%2Fu%3Apw%40host): masked as a URL.
            inner = unquote(value)
            masked = mask_url(inner, is_sensitive, count)
            if masked != inner:
                pieces[index] = f"{key}={quote(masked, safe='*')}"
                changed = True
    return "&".join(pieces) if changed else query


def mask_urls_in_text(text: str, is_sensitive: Sensitive = _never, count: Count = _ignore) -> str:
    """``text`` with every URL in it masked by :func:`mask_url`."""
    if "://" not in text:
        return text
    return _URL_IN_TEXT.sub(lambda m: mask_url(m.group(0), is_sensitive, count), text)


def redact_url(url: object) -> str:
    """A URL as a capture hook records it: OpenTelemetry's redaction (userinfo, signature keys), never less.

    The policy masks sensitive query keys on top of it when the trail is flushed.
    """
    return mask_url(str(url))
