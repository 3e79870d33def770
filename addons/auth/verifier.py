"""Access-token verification: signature against the issuer's published keys, required claims, validity
window with leeway, and a cache of verified tokens keyed by a hash of the token.

The raw token is never logged or stored: logs and the audit see its `jti` or a hash prefix.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import jwt
from mitmproxy import http

from addons.auth.jwks import (
    ALLOWED_ALGORITHMS,
    KeySet,
    UnknownKey,
)
from addons.config.roles import RoleMapping
from addons.core.context import Caller

# Claims a token must carry, checked explicitly (PyJWT only validates the ones that are present).
REQUIRED_CLAIMS = ("iss", "sub", "aud", "exp", "iat")

# Clock skew tolerated on exp/nbf/iat: the IdP and this host keep time independently (NTP drift,
# VM pauses). Small, because every second of leeway is a second an expired token still works.
DEFAULT_LEEWAY_S = 30
# Longest accepted token lifetime (automatic logoff): one hour, the common IdP default for access tokens.
DEFAULT_MAX_LIFETIME_S = 3600
MAX_LEEWAY_S = 300

# A JWS in compact form: three base64url parts. Anything else (JWE, opaque tokens, junk with
# spaces or commas from a folded header) is refused before any parsing.
_JWS_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
# Real access tokens are 1-3 KiB; a huge one is a parser-exhaustion attempt.
MAX_TOKEN_CHARS = 16384

PURPOSE_HEADER = "x-purpose-of-use"
PURPOSE_SHAPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")

TOKEN_CACHE_SIZE = 10_000


def token_fingerprint(token: str) -> str:
    """What logs and the audit may say about a token: a short hash, never the token."""
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()[:16]


def printable(text: str, limit: int = 200) -> str:
    """Attacker-supplied text made safe for a log line or a header value."""
    return re.sub(r'[^\x20-\x7e]|["\\]', "?", text)[:limit]



# ---------------------------------------------------------------- finding the token


class AuthError(Exception):
    """Why a request is not authenticated, in the words the client and the audit get.

    `reason` is a short code for the audit's auth_failures table; `detail` is shown to the client
    and never contains the token.
    """

    def __init__(self, reason: str, detail: str, *, status: int = 401,
                 oauth_error: str | None = "invalid_token") -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail
        self.status = status
        self.oauth_error = oauth_error


def extract_token(headers: http.Headers, token_headers: Iterable[str]) -> str:
    """The caller's token from `Authorization: Bearer` or the backend's native key headers.

    Two different tokens (in two headers, or one header twice) are refused, never one picked:
    a proxy or client bug that sends two credentials must not decide whose request this is.
    """
    found: set[str] = set()
    for name in token_headers:
        for value in headers.get_all(name):
            value = value.strip()
            if name == "authorization":
                scheme, _, rest = value.partition(" ")
                if scheme.lower() != "bearer":
                    raise AuthError("unsupported_scheme",
                                    "the Authorization header must use the Bearer scheme",
                                    oauth_error="invalid_request")
                value = rest.strip()
            else:
                # Native "api key" headers carry the bare token; tolerate a Bearer prefix.
                if value[:7].lower() == "bearer ":
                    value = value[7:].strip()
            if not value:
                raise AuthError("empty_token", f"the {name} header carries no token",
                                oauth_error="invalid_request")
            found.add(value)
    if not found:
        # RFC 6750 3.1: no credentials at all is answered without an error code in the header.
        raise AuthError("missing_token",
                        "no access token: send Authorization: Bearer <token>", oauth_error=None)
    if len(found) > 1:
        # RFC 6750 3.1: more than one way of sending a token is invalid_request (400).
        raise AuthError("ambiguous_token", "the request carries more than one different token",
                        status=400, oauth_error="invalid_request")
    return found.pop()


# ---------------------------------------------------------------- verification and cache


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    claims: Mapping[str, Any]  # the verified payload
    kid: str
    token_id: str  # jti, or a hash prefix of the token
    expires_at: float  # exp + leeway: until then the cached verdict stands


class TokenCache:
    """Verified tokens by SHA-256 of the token: bounded, least recently used evicted, expired dropped."""

    def __init__(self, max_entries: int = TOKEN_CACHE_SIZE) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[bytes, VerifiedToken] = OrderedDict()
        # The Identity built for an entry under a given role mapping (mapping reloads rebuild it).
        self._identities: dict[bytes, tuple[RoleMapping, Caller]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: bytes, now: float) -> VerifiedToken | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if now >= entry.expires_at:
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return entry

    def put(self, key: bytes, entry: VerifiedToken, now: float) -> None:
        if key not in self._entries and len(self._entries) >= self.max_entries:
            for k in [k for k, e in self._entries.items() if now >= e.expires_at]:
                self._drop(k)
            while len(self._entries) >= self.max_entries:
                self._drop(next(iter(self._entries)))
        self._entries[key] = entry
        self._entries.move_to_end(key)

    def identity(self, key: bytes, mapping: RoleMapping) -> Caller | None:
        memo = self._identities.get(key)
        return memo[1] if memo is not None and memo[0] is mapping else None

    def remember_identity(self, key: bytes, mapping: RoleMapping, ident: Caller) -> None:
        if key in self._entries:
            self._identities[key] = (mapping, ident)

    def forget_kids(self, kids: frozenset[str]) -> None:
        """A key the issuer withdrew no longer vouches for anything it signed."""
        for k in [k for k, e in self._entries.items() if e.kid in kids]:
            self._drop(k)

    def clear(self) -> None:
        self._entries.clear()
        self._identities.clear()

    def _drop(self, key: bytes) -> None:
        self._entries.pop(key, None)
        self._identities.pop(key, None)


def _numeric(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise AuthError("malformed_claim", f"claim {name!r} is not a number")
    return float(value)


def _optional_str(claims: Mapping[str, Any], name: str, limit: int = 256) -> str | None:
    value = claims.get(name)
    return value[:limit] if isinstance(value, str) and value else None


class Verifier:
    """Checks one token against the issuer's keys, the audience and the clock; caches verdicts."""

    def __init__(self, issuer: str, audiences: tuple[str, ...], keys: KeySet, *,
                 leeway: float = DEFAULT_LEEWAY_S, clock: Callable[[], float] = time.time,
                 cache: TokenCache | None = None, max_lifetime: float = DEFAULT_MAX_LIFETIME_S) -> None:
        self.issuer = issuer
        self.audiences = audiences
        self.keys = keys
        self.leeway = leeway
        self.max_lifetime = max_lifetime
        self.clock = clock
        self.cache = cache or TokenCache()
        keys.on_removed(self.cache.forget_kids)
        self.verifications = 0  # signature checks done (the cache's effect is visible in tests)

    async def verify(self, token: str) -> tuple[bytes, VerifiedToken]:
        """(cache key, verdict) for a good token; raises AuthError, or KeysUnavailable (503)."""
        if len(token) > MAX_TOKEN_CHARS:
            raise AuthError("malformed", "the token is too large")
        key = hashlib.sha256(token.encode()).digest()
        now = self.clock()
        hit = self.cache.get(key, now)
        if hit is not None and self.keys.has(hit.kid):
            return key, hit
        verdict = await self._verify(token, now)
        self.cache.put(key, verdict, now)
        return key, verdict

    async def _verify(self, token: str, now: float) -> VerifiedToken:
        if not _JWS_SHAPE.fullmatch(token):
            raise AuthError("malformed", "the token is not a signed JWT")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthError("malformed", "the token header cannot be read") from None
        alg = header.get("alg")
        # RFC 8725 2.1: the algorithm comes from our allow-list, never from the token. "none" and
        # HS* (an HMAC keyed with our *public* key, which anyone can compute) are not on it.
        if not isinstance(alg, str) or alg not in ALLOWED_ALGORITHMS:
            raise AuthError("alg_not_allowed", f"signature algorithm {printable(str(alg), 20)!r} is not accepted")
        if "crit" in header:
            # We implement no JWS extensions; a critical one we do not understand must fail (RFC 7515 4.1.11).
            raise AuthError("malformed", "the token uses a critical header extension")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise AuthError("unknown_kid", "the token header names no key id (kid)")
        try:
            signing_key = await self.keys.get(kid)
        except UnknownKey:
            raise AuthError("unknown_kid", "the token is signed by a key the issuer does not publish") from None
        why = signing_key.refusal_for(alg)
        if why:
            raise AuthError("key_mismatch", why)
        self.verifications += 1
        try:
            claims = jwt.decode(
                token,
                signing_key.key,
                algorithms=[alg],  # exactly the one this key may verify, checked above
                audience=list(self.audiences),
                issuer=self.issuer,
                options={
                    "require": list(REQUIRED_CLAIMS),
                    # Time claims are checked below against our clock with our leeway.
                    "verify_exp": False, "verify_nbf": False, "verify_iat": False,
                    "enforce_minimum_key_length": True,
                },
            )
        except jwt.InvalidSignatureError:
            raise AuthError("bad_signature", "the token signature does not verify") from None
        except jwt.MissingRequiredClaimError as exc:
            raise AuthError("missing_claim", f"the token lacks the required claim {exc.claim!r}") from None
        except jwt.InvalidIssuerError:
            raise AuthError("wrong_issuer", f"the token was not issued by {self.issuer}") from None
        except jwt.InvalidAudienceError:
            raise AuthError("wrong_audience", "the token is not meant for this gateway (audience)") from None
        except jwt.PyJWTError as exc:
            raise AuthError("malformed", f"the token is invalid ({type(exc).__name__})") from None
        return self._check_time(claims, kid, token, now)

    def _check_time(self, claims: Mapping[str, Any], kid: str, token: str, now: float) -> VerifiedToken:
        exp, iat, nbf = _numeric(claims, "exp"), _numeric(claims, "iat"), _numeric(claims, "nbf")
        if exp is None or iat is None:  # required, so decode() refused this already; never assume
            raise AuthError("missing_claim", "the token lacks exp or iat")
        if now >= exp + self.leeway:
            raise AuthError("expired", "the token has expired")
        if exp - iat > self.max_lifetime:
            # A token living for days would keep a session open long after its user left the screen.
            raise AuthError("lifetime_too_long", f"the token lives {int(exp - iat)} s; this gateway accepts at "
                                                 f"most {int(self.max_lifetime)} s")
        if nbf is not None and now + self.leeway < nbf:
            raise AuthError("not_yet_valid", "the token is not valid yet (nbf)")
        if now + self.leeway < iat:
            raise AuthError("issued_in_future", "the token was issued in the future (iat)")
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub:
            raise AuthError("missing_claim", "the token's subject (sub) is empty")
        jti = _optional_str(claims, "jti", 128)
        return VerifiedToken(claims=claims, kid=kid, token_id=jti or token_fingerprint(token),
                             expires_at=exp + self.leeway)

    def identity(self, key: bytes, verdict: VerifiedToken, mapping: RoleMapping) -> Caller:
        ident = self.cache.identity(key, mapping)
        if ident is not None:
            return ident
        c = verdict.claims
        ident = Caller(
            subject=str(c["sub"]),
            issuer=self.issuer,
            roles=mapping.roles_for(c),
            token_id=verdict.token_id,
            expires_at=float(c["exp"]),
            client_id=_optional_str(c, "client_id") or _optional_str(c, "azp"),
            name=_optional_str(c, "name"),
            email=_optional_str(c, "email"),
            purpose=_optional_str(c, "purpose_of_use", 64),
        )
        self.cache.remember_identity(key, mapping, ident)
        return ident


def claimed_subject(token: str) -> str | None:
    """The `sub` a rejected token claims, for the audit's log-in monitoring ONLY (never trusted)."""
    if len(token) > MAX_TOKEN_CHARS or not _JWS_SHAPE.fullmatch(token):
        return None
    try:
        payload = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    sub = payload.get("sub") if isinstance(payload, dict) else None
    return printable(sub, 200) if isinstance(sub, str) and sub else None


# The one verifier of this process, set by the Identity addon when it is configured: the admin API
# checks approvers' tokens with the same keys, issuer, audience and leeway as the traffic path.
_shared: Verifier | None = None


def share(verifier: Verifier | None) -> None:
    global _shared
    _shared = verifier


def shared() -> Verifier | None:
    return _shared
