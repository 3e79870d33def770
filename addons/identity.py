"""Identity: verify the caller's OIDC access token and say who they are (ctx.identity).

Second in the chain, before anything reads roles. A request passes only with a JWT access token
that the configured issuer signed (keys from its discovery document, see addons/auth/jwks.py), for our
audience, inside its validity window. Everything else is answered here: 401 with a JSON body and
`WWW-Authenticate` (RFC 6750), 400 for a request that carries its token ambiguously, 503 when the
issuer's keys cannot be had and none are cached. Never a pass.

Roles are not read from the token as-is: the IdP's groups/roles/scope values are mapped to
phigate roles by the `roles:` section of rules/policy.yaml (see `compile_role_mapping`), so a new
group created at the IdP grants nothing until the policy owner maps it.

Verified tokens are cached until they expire, keyed by a hash of the token, so the hot path does
not verify an RSA signature on every request. The raw token is never logged or stored: the
audit sees the `jti` (or a hash prefix).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from mitmproxy import ctx, exceptions, http

from addons.auth.jwks import (
    ALLOWED_ALGORITHMS,
    Fetcher,
    KeySet,
    KeysUnavailable,
    UnknownKey,
    check_trusted_url,
    fetch_json,
)
from addons.config import rulefiles
from addons.config.profile_model import Profile
from addons.config.profiles import load_profile
from addons.core.context import AuthFailure, Stage, context, is_settled
from addons.core.context import Identity as Caller
from addons.core.guard import fail_closed
from addons.core.respond import refuse
from addons.core.startup import runtime_error
from addons.gateway import register_readiness

log = logging.getLogger("phigate")

# Claims a token must carry, checked explicitly (PyJWT only validates the ones that are present).
REQUIRED_CLAIMS = ("iss", "sub", "aud", "exp", "iat")

# Clock skew tolerated on exp/nbf/iat: the IdP and this host keep time independently (NTP drift,
# VM pauses). Small, because every second of leeway is a second an expired token still works.
DEFAULT_LEEWAY_S = 30
# Longest accepted token lifetime: one hour, the common IdP default for access tokens.
DEFAULT_MAX_LIFETIME_S = 3600
MAX_LEEWAY_S = 300

# A JWS in compact form: three base64url parts. Anything else (JWE, opaque tokens, junk with
# spaces or commas from a folded header) is refused before any parsing.
_JWS_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
# Real access tokens are 1-3 KiB; a huge one is a parser-exhaustion attempt.
MAX_TOKEN_CHARS = 16384

PURPOSE_HEADER = "x-purpose-of-use"
_PURPOSE_SHAPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")

TOKEN_CACHE_SIZE = 10_000


def token_fingerprint(token: str) -> str:
    """What logs and the audit may say about a token: a short hash, never the token."""
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()[:16]


def _printable(text: str, limit: int = 200) -> str:
    """Attacker-supplied text made safe for a log line or a header value."""
    return re.sub(r'[^\x20-\x7e]|["\\]', "?", text)[:limit]


# ---------------------------------------------------------------- role mapping (rules/policy.yaml)


@dataclass(frozen=True, slots=True)
class RoleMapping:
    """IdP claim values -> phigate roles. Values the map does not name grant nothing."""

    claim: str
    map: Mapping[str, frozenset[str]]

    def roles_for(self, claims: Mapping[str, Any]) -> frozenset[str]:
        value = claims.get(self.claim)
        if isinstance(value, str):
            values: Iterable[Any] = value.split()  # "scope" is one space-separated string
        elif isinstance(value, list):
            values = value
        else:
            return frozenset()
        roles: set[str] = set()
        for v in values:
            if isinstance(v, str):
                roles |= self.map.get(v, frozenset())
        return frozenset(roles)


_ROLE_NAME = re.compile(r"[a-z][a-z0-9_-]{0,63}")


def compile_role_mapping(path: Path | str, section: Any) -> RoleMapping:
    """Compile the `roles:` section of rules/policy.yaml (engineer B's policy compiler calls this).

        roles:
          claim: groups            # the token claim holding the caller's groups: groups, roles,
                                   # scope (a space-separated string), or any top-level claim
          map:                     # IdP value -> phigate role (or a list of roles)
            clinicians: clinician
            agents: agent
            privacy-office: approver
            emergency: [emergency]

    Raises rulefiles.ConfigError (file, "roles", bad value, expected) on anything else.
    """
    rule = "roles"
    rulefiles.require(path, rule, section, isinstance(section, Mapping),
                      "a 'roles:' mapping with 'claim' and 'map' (IdP groups to phigate roles)")
    unknown = set(section) - {"claim", "map"}
    rulefiles.require(path, rule, sorted(map(str, unknown)), not unknown, "only the keys 'claim' and 'map'")
    claim = section.get("claim")
    rulefiles.require(path, rule, claim, isinstance(claim, str) and bool(claim.strip()),
                      "'claim': the token claim holding groups (e.g. groups, roles, scope)")
    raw_map = section.get("map")
    rulefiles.require(path, rule, raw_map, isinstance(raw_map, Mapping) and bool(raw_map),
                      "'map': a non-empty mapping of IdP value -> phigate role")
    compiled: dict[str, frozenset[str]] = {}
    for source, target in raw_map.items():
        rulefiles.require(path, rule, source, isinstance(source, str) and bool(source),
                          "IdP values (map keys) as non-empty strings")
        targets = [target] if isinstance(target, str) else target
        rulefiles.require(
            path, rule, target,
            isinstance(targets, list) and bool(targets)
            and all(isinstance(t, str) and _ROLE_NAME.fullmatch(t) for t in targets),
            f"map[{source!r}]: a role name or a list of role names (lower case, [a-z0-9_-])",
        )
        compiled[source] = frozenset(targets)
    return RoleMapping(claim=claim.strip(), map=compiled)


def load_role_mapping(rules_dir: Path) -> Callable[[], RoleMapping]:
    """A getter for the current role mapping: the `.roles` of the compiled rules_dir/policy.yaml.

    policy.yaml is compiled (and watched, and versioned) once, by the policy addon's compiler,
    which calls `compile_role_mapping` for its `roles:` section; rulefiles keeps one compiler per
    path, so this addon reads that compiled object rather than watching the file itself.
    Raises ConfigError when the policy cannot be loaded.
    """
    # Imported here: addons/policy.py imports this module (RoleMapping, compile_role_mapping).
    from addons.policy import load_policy

    wf = load_policy(rules_dir)
    return lambda: wf.current.roles


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
            raise AuthError("alg_not_allowed", f"signature algorithm {_printable(str(alg), 20)!r} is not accepted")
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
    return _printable(sub, 200) if isinstance(sub, str) and sub else None


# ---------------------------------------------------------------- the addon


def _www_authenticate(err: AuthError) -> str:
    value = 'Bearer realm="phigate"'
    if err.oauth_error:
        value += f', error="{err.oauth_error}", error_description="{_printable(err.detail)}"'
    return value


class Identity:
    """The mitmproxy addon (chain.py: `identity.Identity()`); sets ctx.identity or refuses."""

    def __init__(self, fetch: Fetcher = fetch_json, clock: Callable[[], float] = time.time) -> None:
        self._fetch = fetch
        self._clock = clock
        self.verifier: Verifier | None = None
        self._roles: Callable[[], RoleMapping] | None = None
        # The backend profile names the headers a caller's token may arrive in (auth.token_headers).
        self._profile: rulefiles.WatchedFile[Profile] | None = None
        self._refresher: asyncio.Task[None] | None = None
        register_readiness("identity", self._not_ready)

    def load(self, loader: object) -> None:
        add = loader.add_option  # type: ignore[attr-defined]
        add("phigate_issuer", str, "",
            "OIDC issuer URL (required); keys come from its /.well-known/openid-configuration.")
        add("phigate_audience", str, "",
            "Audience the access tokens must carry (required); several separated by commas.")
        add("phigate_clock_skew_s", int, DEFAULT_LEEWAY_S,
            f"Seconds of clock skew tolerated on exp/nbf/iat (0-{MAX_LEEWAY_S}).")
        add("phigate_jwks_refetch_s", int, 30,
            "Least seconds between two key-set refetches caused by an unknown key id.")
        add("phigate_max_token_lifetime_s", int, DEFAULT_MAX_LIFETIME_S,
            "Longest token lifetime accepted (exp - iat, seconds): a longer-lived token is refused, so no "
            "session outlives it (automatic logoff, 164.312(a)(2)(iii)).")

    def configure(self, updated: set[str]) -> None:
        opts = ctx.options
        if not 0 <= opts.phigate_clock_skew_s <= MAX_LEEWAY_S:
            raise exceptions.OptionsError(
                f"phigate_clock_skew_s: got {opts.phigate_clock_skew_s}, expected 0-{MAX_LEEWAY_S} seconds")
        if opts.phigate_max_token_lifetime_s < 60:
            raise exceptions.OptionsError(
                f"phigate_max_token_lifetime_s: got {opts.phigate_max_token_lifetime_s}, expected at least 60 seconds")
        if opts.phigate_jwks_refetch_s < 1:
            raise exceptions.OptionsError(
                f"phigate_jwks_refetch_s: got {opts.phigate_jwks_refetch_s}, expected at least 1 second")
        if "phigate_rules" in updated and opts.phigate_rules:
            try:
                self._roles = load_role_mapping(Path(opts.phigate_rules))
            except rulefiles.ConfigError as exc:
                raise exceptions.OptionsError(f"Cannot load the role mapping: {exc.diagnostics()}") from None
        if {"phigate_rules", "phigate_profile"} & updated and opts.phigate_rules and opts.phigate_profile:
            try:
                self._profile = load_profile(opts.phigate_rules, opts.phigate_profile)
            except rulefiles.ConfigError as exc:
                raise exceptions.OptionsError(f"Cannot load the backend profile: {exc.diagnostics()}") from None
        keys = {"phigate_issuer", "phigate_audience", "phigate_clock_skew_s", "phigate_jwks_refetch_s",
                "phigate_max_token_lifetime_s"}
        if updated & keys and opts.phigate_issuer and opts.phigate_audience:
            self._build_verifier(opts.phigate_issuer, opts.phigate_audience)

    def _build_verifier(self, issuer: str, audience: str) -> None:
        why = check_trusted_url(issuer, "phigate_issuer")
        if why:
            raise exceptions.OptionsError(why)
        audiences = tuple(a.strip() for a in audience.split(",") if a.strip())
        if not audiences:
            raise exceptions.OptionsError("phigate_audience: expected at least one audience")
        keyset = KeySet(issuer, fetch=self._fetch, refetch_interval=float(ctx.options.phigate_jwks_refetch_s))
        self.verifier = Verifier(issuer, audiences, keyset, leeway=float(ctx.options.phigate_clock_skew_s),
                                 clock=self._clock, max_lifetime=float(ctx.options.phigate_max_token_lifetime_s))
        if self._refresher is not None:  # options changed while running: refresh the new key set
            self._start_refresher()

    def running(self) -> None:
        missing = [(name, what) for name, what in (
            ("phigate_issuer", "the OIDC issuer URL, e.g. --set phigate_issuer=https://idp.example.org"),
            ("phigate_audience", "the token audience, e.g. --set phigate_audience=phigate"),
            ("phigate_rules", "the rules folder holding policy.yaml (its roles: section)"),
            ("phigate_profile", "the backend profile naming the token headers, e.g. chroma"),
        ) if not getattr(ctx.options, name)]
        if missing:
            for name, what in missing:
                log.error("phigate: option %s is not set: set %s", name, what)
            ctx.master.shutdown()
            return
        self._start_refresher()

    def _start_refresher(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
        if self.verifier is not None:
            self._refresher = asyncio.get_running_loop().create_task(self.verifier.keys.run_refresher())

    def done(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            self._refresher = None

    def _not_ready(self) -> str | None:
        if self.verifier is None:
            return "identity not configured (phigate_issuer, phigate_audience)"
        return self.verifier.keys.not_ready()

    @fail_closed(Stage.IDENTITY, 500)
    async def request(self, flow: http.HTTPFlow) -> None:
        if is_settled(flow):
            return
        verifier, roles, profile = self.verifier, self._roles, self._profile
        if verifier is None or roles is None or profile is None:
            # Started without issuer/audience/rules/profile (running() is shutting down): never a pass.
            refuse(flow, Stage.IDENTITY, 503, "identity_unavailable", "the gateway has no token issuer configured")
            return
        c = context(flow)
        token: str | None = None
        try:
            token = extract_token(flow.request.headers, profile.current.auth.token_headers)
            key, verdict = await verifier.verify(token)
        except AuthError as err:
            self._refuse_auth(flow, err, token)
            return
        except KeysUnavailable as exc:
            runtime_error(log, "phigate: request %s refused: no signing keys (%s)", c.request_id, exc)
            refuse(flow, Stage.IDENTITY, 503, "identity_unavailable",
                   "the token issuer's signing keys are unavailable; try again later",
                   headers={"retry-after": "5"})
            return
        purpose = flow.request.headers.get(PURPOSE_HEADER)
        if purpose is not None and not _PURPOSE_SHAPE.fullmatch(purpose.strip()):
            refuse(flow, Stage.IDENTITY, 400, "invalid_request",
                   f"{PURPOSE_HEADER} must be a short code such as 'treatment' ([A-Za-z0-9_.:-], max 64)")
            return
        ident = verifier.identity(key, verdict, roles())
        c.identity = ident
        c.purpose = purpose.strip() if purpose is not None else ident.purpose
        log.debug("phigate: request %s: %s (token %s) roles %s", c.request_id, ident.subject,
                  ident.token_id, sorted(ident.roles))

    def _refuse_auth(self, flow: http.HTTPFlow, err: AuthError, token: str | None) -> None:
        c = context(flow)
        claimed = claimed_subject(token) if token else None
        c.auth_failure = AuthFailure(reason=err.reason, claimed_subject=claimed)
        log.info("phigate: request %s refused: %s (token %s, claimed sub %r)", c.request_id, err.reason,
                 token_fingerprint(token) if token else "none", claimed)
        refuse(flow, Stage.IDENTITY, err.status, err.oauth_error or "invalid_request", err.detail,
               headers={"www-authenticate": _www_authenticate(err)})
