"""Which upstream response headers reach a masked role: standard transport and caching headers, each
with the form its value must have.

Threat: a backend (or whatever answers in its place) relaying record values in headers
(`X-Debug-Record: <name>`, `Warning: 199 - "<MRN>"`) past body masking. Any other header, or an
allowed one whose value is not of the standard form, is dropped. The upstream's caching headers
are replaced by the gateway's `Cache-Control: no-store`: a masked view must not be served from a
shared cache to another role, validators (ETag, Last-Modified) name the upstream's unmasked
representation, and their numbers (max-age, Age) are values an upstream chooses.
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
_VARY_NAMES = frozenset({b"accept", b"accept-encoding", b"accept-language", b"origin", b"authorization",
                         b"cookie", b"content-type", b"x-chroma-token", b"api-key", b"*"})


def _tokens(allowed: frozenset[bytes]) -> Callable[[bytes], bool]:
    def ok(value: bytes) -> bool:
        items = [v.strip().lower() for v in value.split(b",")]
        return all(v in allowed for v in items)

    return ok


def _retry_after(value: bytes) -> bool:
    # Seconds, at most four digits (under three hours): a longer number could be an identifier.
    return bool(_HTTP_DATE.fullmatch(value) or re.fullmatch(rb"\d{1,4}", value))


ALLOWED: dict[bytes, Callable[[bytes], bool]] = {
    b"content-type": lambda v: bool(_MEDIA_TYPE.fullmatch(v)),
    b"content-length": lambda v: bool(_DIGITS.fullmatch(v)),
    b"content-encoding": _tokens(_CODINGS),
    b"transfer-encoding": _tokens(_CODINGS),
    b"connection": _tokens(frozenset({b"close", b"keep-alive"})),
    b"date": lambda v: bool(_HTTP_DATE.fullmatch(v)),
    b"retry-after": _retry_after,
    b"vary": _tokens(_VARY_NAMES),
}
NO_STORE = (b"cache-control", b"no-store")


def allowed_fields(fields: tuple[tuple[bytes, bytes], ...]) -> tuple[tuple[tuple[bytes, bytes], ...], int]:
    """The header fields a masked role may receive (with the gateway's no-store), and how many of the
    upstream's were dropped."""
    kept = []
    dropped = 0
    for name, value in fields:
        check = ALLOWED.get(name.lower())
        if check is not None and check(value.strip()):
            kept.append((name, value))
        elif (name.lower(), value) != NO_STORE:  # the gateway's own, from a rewritten body
            dropped += 1
    kept.append(NO_STORE)
    return tuple(kept), dropped
