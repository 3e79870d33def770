"""Consistent, reversible tokens for masked values, and keyed references of data subjects.

A token is `tok_<type>_<key id>_<hex of AES-SIV(value)>` (lower-case hex: case-proof in filters and
text search, and encoded in C; base32 from the standard library cost more than the encryption).
AES-SIV is deterministic: the same value always gives the same token (for every caller and every
response), so an agent can join and filter on tokens; and it is reversible by the gateway alone, so
a token used in a request's ids or where filter is turned back into the real value before
forwarding. An unkeyed hash would be neither: it falls to enumeration (an MRN space of 10^7 is
hashed in seconds) and cannot be reversed for filtering.

The token type is bound into the ciphertext as associated data: a `tok_mrn_...` token cannot be
relabelled `tok_name_...` and still decrypt. The value is encrypted as its JSON text, so an integer
MRN comes back as an integer in a `where` filter.

Keys: `KID=BASE64SECRET` entries separated by commas, spaces or new lines; a leading `*` marks the
active key (it makes new tokens); every listed key decrypts. A single entry is active by itself.
Each secret is at least 32 random bytes; separate subkeys for tokens and subject references are
derived from it with HKDF, so one kind of output never helps attack the other.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

TYPE_RE = re.compile(r"^[a-z0-9-]{1,32}$")
KID_RE = re.compile(r"^[a-z0-9]{1,16}$")
# Anywhere in a string (a where_document `$contains` may embed a token in other text).
TOKEN_RE = re.compile(r"tok_([a-z0-9-]{1,32})_([a-z0-9]{1,16})_([0-9a-f]{34,})")
TOKEN_CACHE_ENTRIES = 200_000
MIN_SECRET_BYTES = 32


class KeySetError(ValueError):
    """A key set that cannot be used (bad format, too short, no active key)."""


class TokenError(ValueError):
    """A token the gateway cannot turn back into a value. `reason` is safe to show and log."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def _subkey(secret: bytes, purpose: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=b"phigate-v1", info=purpose).derive(secret)


@dataclass(frozen=True, slots=True)
class _Key:
    kid: str
    siv: AESSIV
    ref_key: bytes


def normalise_subject(value: Any) -> str:
    """The canonical text of an identifier for subject references: case, spacing and Unicode form
    must not split one patient into several subjects in the accounting of disclosures."""
    text = value if isinstance(value, str) else orjson.dumps(value).decode()
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


class KeyRing:
    """The token keys the gateway holds: one active (tokenizes), all of them detokenize."""

    def __init__(self, secrets: Mapping[str, bytes], active: str) -> None:
        if active not in secrets:
            raise KeySetError(f"active key id {active!r} is not among the keys")
        self._keys: dict[str, _Key] = {}
        for kid, secret in secrets.items():
            if not KID_RE.match(kid):
                raise KeySetError(f"key id {kid!r}: expected 1-16 lower-case letters or digits")
            if len(secret) < MIN_SECRET_BYTES:
                raise KeySetError(f"key {kid!r}: secret has {len(secret)} bytes; expected at least {MIN_SECRET_BYTES}")
            self._keys[kid] = _Key(
                kid, AESSIV(_subkey(secret, b"token-aes-siv", 64)), _subkey(secret, b"subject-ref", 32)
            )
        self.active = active
        self._active = self._keys[active]
        # The same values come back in response after response: remember their tokens, keyed by a
        # keyed hash of (type, value) so the cache holds no identifier in the clear.
        self._cache: dict[bytes, str] = {}
        self._ref_cache: dict[bytes, str] = {}  # its own: a token's cache key could equal a ref's
        self._cache_key = os.urandom(32)

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(self._keys)

    @classmethod
    def parse(cls, text: str) -> KeyRing:
        """Parse `[*]KID=BASE64` entries (see the module docstring)."""
        secrets: dict[str, bytes] = {}
        marked: list[str] = []
        for entry in re.split(r"[\s,]+", text.strip()):
            if not entry:
                continue
            kid, sep, b64 = entry.partition("=")
            if not sep:
                raise KeySetError("a key entry without '='; expected KID=BASE64SECRET")
            if kid.startswith("*"):
                kid = kid[1:]
                marked.append(kid)
            if kid in secrets:
                raise KeySetError(f"key id {kid!r} listed twice")
            try:
                secrets[kid] = base64.b64decode(b64 + "=" * (-len(b64) % 4), altchars=b"-_", validate=False)
            except (binascii.Error, ValueError) as exc:
                raise KeySetError(f"key {kid!r}: secret is not base64") from exc
        if not secrets:
            raise KeySetError("no keys; expected at least one KID=BASE64SECRET entry")
        if len(marked) > 1:
            raise KeySetError(f"several keys marked active ({', '.join(marked)}); mark exactly one with '*'")
        if not marked and len(secrets) > 1:
            raise KeySetError("several keys and none marked active; mark the one that tokenizes with '*'")
        return cls(secrets, marked[0] if marked else next(iter(secrets)))

    # -- tokens -----------------------------------------------------------------------------------

    def tokenize(self, value: Any, token_type: str) -> str:
        """The token for a JSON value; the same (value, type) always gives the same token."""
        plain = orjson.dumps(value)
        tag = token_type.encode()

        def make() -> str:
            sealed = self._active.siv.encrypt(plain, [b"phigate-token", tag])
            return f"tok_{token_type}_{self._active.kid}_{sealed.hex()}"

        return self._remembered(self._cache, tag + b"\0" + plain, make)

    def _remembered(self, cache: dict[bytes, str], plain: bytes, make: Callable[[], str]) -> str:
        """`make()`, remembered in `cache` under a keyed hash of `plain` (never the value itself)."""
        ck = hashlib.blake2b(plain, digest_size=16, key=self._cache_key).digest()
        hit = cache.get(ck)
        if hit is None:
            hit = make()
            if len(cache) >= TOKEN_CACHE_ENTRIES:
                cache.clear()
            cache[ck] = hit
        return hit

    def detokenize_match(self, token_type: str, kid: str, body: str) -> Any:
        key = self._keys.get(kid)
        if key is None:
            # A token made under a key this gateway does not hold: refuse rather than forward a
            # filter that silently matches nothing (or the literal token string).
            raise TokenError(f"token key id {kid!r} is not held by this gateway")
        try:
            plain = key.siv.decrypt(bytes.fromhex(body), [b"phigate-token", token_type.encode()])
        except (InvalidTag, binascii.Error, ValueError) as exc:
            raise TokenError("token does not verify (altered, truncated or relabelled)") from exc
        return orjson.loads(plain)

    def detokenize(self, token: str) -> Any:
        m = TOKEN_RE.fullmatch(token)
        if m is None:
            raise TokenError("not a phigate token")
        return self.detokenize_match(m.group(1), m.group(2), m.group(3))

    # -- subject references ----------------------------------------------------------------------

    def subject_ref(self, value: Any) -> str:
        """Keyed reference of a data subject's identifier under the active key: `ref_<kid>_<hex>`.

        HMAC, not a hash: the accounting of disclosures stores these, and an unkeyed hash of an MRN
        or a name is reversed by enumeration. Every response names its subjects, and the same ones
        again and again: refs are remembered as tokens are, by a keyed hash of the value."""
        return self._remembered(self._ref_cache, orjson.dumps(value), lambda: self._ref(self._active, value))

    def subject_refs_all(self, value: Any) -> list[str]:
        """The reference under every held key (to find a subject across key rotations)."""
        return [self._ref(k, value) for k in self._keys.values()]

    @staticmethod
    def _ref(key: _Key, value: Any) -> str:
        digest = hmac.new(key.ref_key, normalise_subject(value).encode(), hashlib.sha256).hexdigest()
        return f"ref_{key.kid}_{digest[:32]}"


# The process's key ring, installed by the masking addon at configure (or by a CLI that loaded the
# same key file), so `subject_ref(value)` gives other modules (reports, accounting) the same refs.
_installed: KeyRing | None = None


def install(ring: KeyRing | None) -> None:
    global _installed
    _installed = ring


def installed() -> KeyRing | None:
    return _installed


def subject_ref(value: Any) -> str:
    """The keyed reference of a data subject's identifier (MRN, name), as the audit stores it."""
    if _installed is None:
        raise RuntimeError("no token key is loaded; set phigate_token_key_file or phigate_token_key_env")
    return _installed.subject_ref(value)


def load_keyring(file: str | None, env_name: str | None, environ: Mapping[str, str]) -> KeyRing | None:
    """Load keys from a file or an environment variable (file wins when both are given).

    Returns None when neither is configured; raises KeySetError when one is configured but unusable."""
    if file:
        try:
            with open(file, encoding="utf-8") as fh:
                text = fh.read()
        except OSError as exc:
            raise KeySetError(f"key file {file}: cannot read ({exc.strerror})") from exc
        return KeyRing.parse(text)
    if env_name:
        env_text = environ.get(env_name)
        if not env_text:
            raise KeySetError(f"environment variable {env_name} is not set or empty")
        return KeyRing.parse(env_text)
    return None
