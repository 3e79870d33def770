"""Which upstream response headers reach a masked role: standard transport and caching headers, each
with the form its value must have.

Threat: a backend (or whatever answers in its place) relaying record values in headers
(`X-Debug-Record: <name>`, `Warning: 199 - "<MRN>"`) past body masking. Any other header, or an
allowed one whose value is not of the standard form, is dropped. Validators (ETag) are dropped too:
they name the upstream's unmasked representation.
"""

from __future__ import annotations

import re
from collections.abc import Callable

_DAY = rb"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)"
_MONTH = rb"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
_HTTP_DATE = re.compile(_DAY + rb", \d\d " + _MONTH + rb" \d{4} \d\d:\d\d:\d\d GMT")
_DIGITS = re.compile(rb"\d{1,19}")
_MEDIA_TYPE = re.compile(
    rb"(?:application|text)/[a-z0-9.+-]{1,64}(?:\s*;\s*charset=\"?[a-z0-9-]{1,32}\"?)?", re.IGNORECASE
)
_CODINGS = frozenset({b"gzip", b"x-gzip", b"deflate", b"br", b"zstd", b"identity", b"chunked"})
_CACHE_DIRECTIVES = frozenset({b"no-store", b"no-cache", b"private", b"public", b"must-revalidate",
                               b"proxy-revalidate", b"no-transform", b"immutable", b"max-age", b"s-maxage",
                               b"stale-while-revalidate", b"stale-if-error"})
_VARY_NAMES = frozenset({b"accept", b"accept-encoding", b"accept-language", b"origin", b"authorization",
                         b"cookie", b"content-type", b"x-chroma-token", b"api-key", b"*"})


def _tokens(allowed: frozenset[bytes]) -> Callable[[bytes], bool]:
    def ok(value: bytes) -> bool:
        items = [v.strip().lower() for v in value.split(b",")]
        return all(v in allowed for v in items)

    return ok


def _cache_control(value: bytes) -> bool:
    for item in value.split(b","):
        name, eq, arg = item.strip().lower().partition(b"=")
        if name not in _CACHE_DIRECTIVES or (eq and not _DIGITS.fullmatch(arg)):
            return False
    return True


def _date_or_number(value: bytes) -> bool:
    return bool(_HTTP_DATE.fullmatch(value) or re.fullmatch(rb"-?\d{1,10}", value))


ALLOWED: dict[bytes, Callable[[bytes], bool]] = {
    b"content-type": lambda v: bool(_MEDIA_TYPE.fullmatch(v)),
    b"content-length": lambda v: bool(_DIGITS.fullmatch(v)),
    b"content-encoding": _tokens(_CODINGS),
    b"transfer-encoding": _tokens(_CODINGS),
    b"connection": _tokens(frozenset({b"close", b"keep-alive"})),
    b"keep-alive": lambda v: bool(re.fullmatch(rb"timeout=\d{1,6}(?:,\s*max=\d{1,6})?", v)),
    b"date": lambda v: bool(_HTTP_DATE.fullmatch(v)),
    b"last-modified": lambda v: bool(_HTTP_DATE.fullmatch(v)),
    b"expires": _date_or_number,
    b"retry-after": _date_or_number,
    b"age": lambda v: bool(_DIGITS.fullmatch(v)),
    b"cache-control": _cache_control,
    b"pragma": _tokens(frozenset({b"no-cache"})),
    b"vary": _tokens(_VARY_NAMES),
}


def allowed_fields(fields: tuple[tuple[bytes, bytes], ...]) -> tuple[tuple[tuple[bytes, bytes], ...], int]:
    """The header fields a masked role may receive, and how many were dropped."""
    kept = []
    for name, value in fields:
        check = ALLOWED.get(name.lower())
        if check is not None and check(value.strip()):
            kept.append((name, value))
    return tuple(kept), len(fields) - len(kept)
