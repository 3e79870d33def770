"""OIDC discovery and the issuer's signing keys (JWKS), fetched asynchronously and cached.

The key set is the root of trust for every request: a token is only as good as the key that
verifies it. So this module is strict about where keys come from and what they may verify:

- keys come only from the `jwks_uri` of the configured issuer's discovery document, and that
  document must name the same issuer (OpenID Connect Discovery 1.0, section 4.3): a document that
  names another issuer could hand us someone else's keys;
- never from a token's own headers (`jku`, `x5u`, `jwk`): a forger would simply point at their key;
- symmetric (`oct`) keys and keys published with private material are refused: a shared secret
  in a public document verifies tokens anyone can mint;
- each key verifies only the algorithms its type allows (an RSA key never verifies an EC or HMAC
  signature), so the classic "HS256 signed with the public key" confusion cannot happen here.

An unknown `kid` triggers one refetch, rate-limited, so key rotation at the IdP works without a
restart while a flood of made-up kids cannot turn the gateway into a load generator against the
IdP. With nothing cached, callers get `KeysUnavailable` (the addon answers 503, never a pass).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from jwt import PyJWK
from jwt.exceptions import PyJWKError

from addons.core import metrics
from addons.core.startup import runtime_error

log = logging.getLogger("phigate")

# alg -> (kty, curves). Asymmetric algorithms only: HS* and "none" are absent on purpose, so no
# lookup here can ever approve them.
ALG_KEY_TYPES: Mapping[str, tuple[str, frozenset[str] | None]] = {
    "RS256": ("RSA", None),
    "RS384": ("RSA", None),
    "RS512": ("RSA", None),
    "PS256": ("RSA", None),
    "PS384": ("RSA", None),
    "PS512": ("RSA", None),
    "ES256": ("EC", frozenset({"P-256"})),
    "ES384": ("EC", frozenset({"P-384"})),
    "ES512": ("EC", frozenset({"P-521"})),
    "EdDSA": ("OKP", frozenset({"Ed25519", "Ed448"})),
}
ALLOWED_ALGORITHMS = frozenset(ALG_KEY_TYPES)

# Members that only a private JWK has (RFC 7518 sections 6.2.2, 6.3.2; RFC 8037 section 2).
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})

FETCH_TIMEOUT_S = 5.0
# A discovery document or key set is a few KiB; a bigger answer is a misconfiguration or an attack.
MAX_DOCUMENT_BYTES = 1 << 20

Fetcher = Callable[[str], Awaitable[Any]]


class FetchError(Exception):
    """A discovery document or key set could not be fetched or used (message has no secrets)."""


class KeysUnavailable(Exception):
    """No signing keys are cached and none could be fetched: requests must get 503, not a pass."""


class UnknownKey(Exception):
    """The token names a key id the issuer does not publish (even after a permitted refetch)."""


def is_loopback_host(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_trusted_url(url: str, what: str) -> str | None:
    """Why `url` may not be used to fetch keys, or None when it may.

    Keys fetched over plain HTTP can be swapped by anyone on the path, which would let them mint
    tokens we accept: HTTPS only, except on loopback (tests, a sidecar IdP on the same host).
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return None
    if parts.scheme == "http" and is_loopback_host(parts.hostname):
        return None
    return f"{what} must be an https:// URL (plain http only on loopback), got {url!r}"


def _get_json(url: str, timeout: float) -> Any:
    req = urllib.request.Request(url, headers={"Accept": "application/json"})  # noqa: S310 - checked scheme
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - checked scheme
            raw = resp.read(MAX_DOCUMENT_BYTES + 1)
    except urllib.error.HTTPError as exc:
        raise FetchError(f"{url} answered HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise FetchError(f"{url} unreachable ({reason})") from None
    if len(raw) > MAX_DOCUMENT_BYTES:
        raise FetchError(f"{url} answered more than {MAX_DOCUMENT_BYTES} bytes")
    try:
        return json.loads(raw)
    except ValueError:
        raise FetchError(f"{url} did not answer JSON") from None


async def fetch_json(url: str) -> Any:
    """GET a JSON document. urllib blocks, so it runs in a worker thread, off the event loop."""
    return await asyncio.to_thread(_get_json, url, FETCH_TIMEOUT_S)


@dataclass(frozen=True, slots=True)
class SigningKey:
    kid: str
    kty: str
    crv: str | None
    alg: str | None  # the JWK's own "alg", when it declares one
    key: Any  # a cryptography public key object

    def refusal_for(self, alg: str) -> str | None:
        """Why this key must not verify a token signed with `alg` (None when it may)."""
        want = ALG_KEY_TYPES.get(alg)
        if want is None:
            return f"algorithm {alg!r} is not allowed"
        kty, curves = want
        if self.kty != kty:
            return f"key {self.kid!r} is {self.kty}, algorithm {alg} needs {kty}"
        if curves is not None and self.crv not in curves:
            return f"key {self.kid!r} is curve {self.crv}, algorithm {alg} needs {sorted(curves)}"
        # A key published for one algorithm verifies only that one (RFC 7517 section 4.4).
        if self.alg is not None and self.alg != alg:
            return f"key {self.kid!r} is published for {self.alg}, token says {alg}"
        return None


def parse_jwks(doc: Any, source: str) -> dict[str, SigningKey]:
    """Usable verification keys by kid. Unusable entries are skipped with a log line, not fatal:
    an IdP may publish encryption keys or algorithms we do not accept beside its signing key."""
    if not isinstance(doc, Mapping) or not isinstance(doc.get("keys"), list):
        raise FetchError(f"{source} is not a JWK set (no 'keys' list)")
    keys: dict[str, SigningKey] = {}
    duplicates: set[str] = set()
    for entry in doc["keys"]:
        if not isinstance(entry, Mapping):
            continue
        kid, kty = entry.get("kid"), entry.get("kty")
        if not isinstance(kid, str) or not kid:
            log.warning("phigate: %s: skipping a key without kid", source)
            continue
        if entry.get("use", "sig") != "sig":
            continue
        if kty not in {"RSA", "EC", "OKP"}:
            log.warning("phigate: %s: skipping key %r of type %r (asymmetric keys only)", source, kid, kty)
            continue
        if _PRIVATE_MEMBERS & set(entry):
            # The IdP is leaking its private key; anyone who read this document can mint tokens.
            runtime_error(log, "phigate: %s publishes PRIVATE key material for key %r; refusing that key", source, kid)
            continue
        alg = entry.get("alg")
        if alg is not None and alg not in ALLOWED_ALGORITHMS:
            log.warning("phigate: %s: skipping key %r published for algorithm %r", source, kid, alg)
            continue
        if kid in keys or kid in duplicates:
            # Two keys with one kid: which one verifies is ambiguous; use neither.
            runtime_error(log, "phigate: %s publishes kid %r twice; refusing both", source, kid)
            duplicates.add(kid)
            continue
        try:
            jwk = PyJWK(dict(entry))
        except PyJWKError as exc:
            log.warning("phigate: %s: skipping key %r (%s)", source, kid, exc)
            continue
        crv = entry.get("crv")
        keys[kid] = SigningKey(kid, str(kty), crv if isinstance(crv, str) else None, alg, jwk.key)
    return {kid: k for kid, k in keys.items() if kid not in duplicates}


class KeySet:
    """The issuer's current verification keys, refreshed on demand and periodically.

    `clock` is monotonic seconds (injectable for tests); `fetch` GETs a URL and returns parsed JSON.
    """

    def __init__(
        self,
        issuer: str,
        *,
        fetch: Fetcher = fetch_json,
        clock: Callable[[], float] = time.monotonic,
        refetch_interval: float = 30.0,
        retry_interval: float = 5.0,
        max_age: float = 600.0,
    ) -> None:
        self.issuer = issuer
        self._fetch = fetch
        self._clock = clock
        # At most one unknown-kid refetch per interval: rotation works, a kid flood does not hammer the IdP.
        self.refetch_interval = refetch_interval
        # With nothing cached, retry this often (every request would otherwise wait on a dead IdP).
        self.retry_interval = retry_interval
        # Re-read the key set this often, so keys the IdP withdrew stop verifying.
        self.max_age = max_age
        self.keys: Mapping[str, SigningKey] = {}
        self.fetched_at: float | None = None
        self.last_attempt: float | None = None
        self.last_error: str | None = None
        self.fetch_count = 0
        self._lock = asyncio.Lock()
        self._generation = 0
        self._listeners: list[Callable[[frozenset[str]], None]] = []

    def on_removed(self, listener: Callable[[frozenset[str]], None]) -> None:
        """Call `listener(kids)` when a refresh drops keys (the token cache forgets their tokens)."""
        self._listeners.append(listener)

    def has(self, kid: str) -> bool:
        return kid in self.keys

    def not_ready(self) -> str | None:
        """The readiness check: why requests cannot be verified now, or None."""
        if self.keys:
            return None
        return "no signing keys" + (f" ({self.last_error})" if self.last_error else " (not fetched yet)")

    async def get(self, kid: str) -> SigningKey:
        """The key for `kid`, refetching once (rate-limited) when it is unknown.

        Raises KeysUnavailable when nothing is cached and fetching fails, UnknownKey otherwise.
        """
        key = self.keys.get(kid)
        if key is not None:
            return key
        if self._lock.locked():
            # A fetch is under way (the start-up fetch, or another request's refetch): its answer
            # is the one refetch this kid gets, so wait for it instead of failing early.
            async with self._lock:
                pass
            key = self.keys.get(kid)
            if key is not None:
                return key
        interval = self.refetch_interval if self.keys else self.retry_interval
        if self.last_attempt is None or self._clock() - self.last_attempt >= interval:
            await self.refresh()
            key = self.keys.get(kid)
            if key is not None:
                return key
        if not self.keys:
            raise KeysUnavailable(self.not_ready() or "no signing keys")
        raise UnknownKey(kid)

    async def refresh(self) -> bool:
        """Fetch discovery + JWKS now; True when a key set was installed.

        Concurrent callers share one fetch. On failure the last good keys stay (an IdP outage must
        not lock every caller out while their tokens are still valid and the keys still known).
        """
        generation = self._generation
        async with self._lock:
            if self._generation != generation:
                return bool(self.keys)  # another caller refreshed while we waited
            self.last_attempt = self._clock()
            self.fetch_count += 1
            try:
                keys = await self._load()
            except FetchError as exc:
                self.last_error = str(exc)
                metrics.jwks_refresh(ok=False)
                runtime_error(log, "phigate: cannot refresh signing keys of %s: %s", self.issuer, exc)
                return False
            finally:
                self._generation += 1
            removed = frozenset(self.keys) - frozenset(keys)
            self.keys, self.fetched_at, self.last_error = keys, self._clock(), None
            metrics.jwks_refresh(ok=True)
            log.info("phigate: signing keys of %s: %s", self.issuer, ", ".join(sorted(keys)) or "none usable")
        if removed:
            log.info("phigate: signing keys withdrawn by %s: %s", self.issuer, ", ".join(sorted(removed)))
            for listener in self._listeners:
                listener(removed)
        return True

    async def _load(self) -> dict[str, SigningKey]:
        discovery_url = self.issuer.rstrip("/") + "/.well-known/openid-configuration"
        doc = await self._fetch(discovery_url)
        if not isinstance(doc, Mapping):
            raise FetchError(f"{discovery_url} is not a discovery document")
        # OIDC Discovery 4.3: the document's issuer MUST equal the URL we configured, exactly.
        if doc.get("issuer") != self.issuer:
            raise FetchError(
                f"{discovery_url} names issuer {doc.get('issuer')!r}, expected {self.issuer!r}"
            )
        jwks_uri = doc.get("jwks_uri")
        if not isinstance(jwks_uri, str):
            raise FetchError(f"{discovery_url} has no jwks_uri")
        why = check_trusted_url(jwks_uri, "jwks_uri")
        if why:
            raise FetchError(why)
        keys = parse_jwks(await self._fetch(jwks_uri), jwks_uri)
        if not keys:
            raise FetchError(f"{jwks_uri} has no usable signing key")
        return keys

    def next_refresh_delay(self) -> float:
        """Seconds until the background refresher should fetch again (<= 0: now)."""
        if self.last_attempt is None:
            return 0.0
        now = self._clock()
        if not self.keys or self.last_error is not None or self.fetched_at is None:
            return self.last_attempt + self.retry_interval - now
        return self.fetched_at + self.max_age - now

    async def run_refresher(self) -> None:
        """Background task: fetch at start, keep the key set fresh, retry quickly while failing."""
        while True:
            delay = self.next_refresh_delay()
            if delay > 0:
                await asyncio.sleep(delay)
                continue
            try:
                await self.refresh()
            except Exception as exc:  # noqa: BLE001 - the refresher must survive anything
                self.last_error = f"refresh failed ({type(exc).__name__})"
                runtime_error(log, "phigate: signing key refresh failed (%s)", type(exc).__name__)
                await asyncio.sleep(self.retry_interval)
