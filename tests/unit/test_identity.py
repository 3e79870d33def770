"""Unit tests for addons/identity.py and addons/auth/jwks.py: a local key set served by a fake fetcher."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from mitmproxy import exceptions, http
from mitmproxy.test import taddons, tflow

from addons.auth import verifier as verifier_mod
from addons.auth.jwks import FetchError, KeySet, KeysUnavailable, UnknownKey, parse_jwks
from addons.auth.verifier import AuthError, TokenCache, VerifiedToken, extract_token
from addons.config import rulefiles
from addons.config.roles import RoleMapping, compile_role_mapping
from addons.core.context import Stage, context
from addons.core.readiness import not_ready_reasons
from addons.gateway import Gateway
from addons.identity import Identity

ISSUER = "https://idp.test"
AUDIENCE = "phigate"
NOW = 1_800_000_000.0

POLICY = """
roles:
  claim: groups
  map:
    clinicians: clinician
    agents: agent
    privacy-office: approver
    emergency: [emergency, clinician]
rules: []
"""

RSA_1 = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA_2 = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_1 = ec.generate_private_key(ec.SECP256R1())
ED_1 = ed25519.Ed25519PrivateKey.generate()


def public_jwk(private: Any, kid: str, alg: str | None) -> dict[str, Any]:
    pub = private.public_key()
    if isinstance(private, rsa.RSAPrivateKey):
        jwk = jwt.algorithms.RSAAlgorithm.to_jwk(pub, as_dict=True)
    elif isinstance(private, ec.EllipticCurvePrivateKey):
        jwk = jwt.algorithms.ECAlgorithm.to_jwk(pub, as_dict=True)
    else:
        jwk = jwt.algorithms.OKPAlgorithm.to_jwk(pub, as_dict=True)
    jwk.update({"kid": kid, "use": "sig"})
    if alg:
        jwk["alg"] = alg
    return jwk


class FakeIdp:
    """Discovery + JWKS served from memory; counts fetches; can be made unreachable."""

    def __init__(self) -> None:
        self.keys = [public_jwk(RSA_1, "rsa-1", "RS256"), public_jwk(EC_1, "ec-1", None),
                     public_jwk(ED_1, "ed-1", None)]
        self.discovery_issuer = ISSUER
        self.down = False
        self.fetches: list[str] = []

    async def fetch(self, url: str) -> Any:
        self.fetches.append(url)
        if self.down:
            raise FetchError(f"{url} unreachable (connection refused)")
        if url == f"{ISSUER}/.well-known/openid-configuration":
            return {"issuer": self.discovery_issuer, "jwks_uri": f"{ISSUER}/jwks"}
        if url == f"{ISSUER}/jwks":
            return {"keys": list(self.keys)}
        raise FetchError(f"{url} answered HTTP 404")

    @property
    def jwks_fetches(self) -> int:
        return sum(1 for u in self.fetches if u.endswith("/jwks"))


def claims(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"iss": ISSUER, "sub": "clin-1", "aud": AUDIENCE, "iat": int(NOW) - 10,
                            "exp": int(NOW) + 300, "jti": "jti-abc", "client_id": "clin-1",
                            "groups": ["clinicians", "unmapped-group"], "name": "Dr. One",
                            "email": "one@example.org", "purpose_of_use": "treatment"}
    base.update(over)
    return {k: v for k, v in base.items() if v is not None}


def sign(payload: dict[str, Any], key: Any = RSA_1, alg: str = "RS256", kid: str | None = "rsa-1",
         **headers: Any) -> str:
    hdr = {"kid": kid, **headers} if kid is not None else dict(headers)
    return jwt.encode(payload, key, algorithm=alg, headers=hdr)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(payload: dict[str, Any], header: dict[str, Any]) -> str:
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}."


def hs256_with_public_key(payload: dict[str, Any]) -> str:
    # The classic confusion attack: HMAC keyed with the RSA public key, which anyone can fetch.
    pem = RSA_1.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)
    signing_input = f"{b64(json.dumps({'alg': 'HS256', 'kid': 'rsa-1', 'typ': 'JWT'}).encode())}." \
                    f"{b64(json.dumps(payload).encode())}"
    sig = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(sig)}"


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Harness:
    def __init__(self, addon: Identity, idp: FakeIdp, clock: Clock, tctx: taddons.context) -> None:
        self.addon, self.idp, self.clock, self.tctx = addon, idp, clock, tctx

    async def call(self, headers: dict[str, str] | None = None, path: str = "/api/v2/heartbeat",
                   token: str | None = None) -> http.HTTPFlow:
        flow = tflow.tflow()
        flow.request.path = path
        if token is not None:
            flow.request.headers["authorization"] = f"Bearer {token}"
        for k, v in (headers or {}).items():
            flow.request.headers.add(k, v)
        await self.addon.request(flow)
        return flow

    @property
    def verifier(self) -> verifier_mod.Verifier:
        assert self.addon.verifier is not None
        return self.addon.verifier


CHROMA_PROFILE = Path(__file__).resolve().parents[2] / "rules" / "profiles" / "chroma.yaml"


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    (tmp_path / "policy.yaml").write_text(POLICY)
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "chroma.yaml").write_text(CHROMA_PROFILE.read_text())
    return tmp_path


@pytest.fixture
async def h(rules_dir: Path) -> AsyncIterator[Harness]:
    idp, clock = FakeIdp(), Clock()
    addon = Identity(fetch=idp.fetch, clock=clock)
    with taddons.context(Gateway(), addon) as tctx:
        tctx.configure(addon, phigate_rules=str(rules_dir), phigate_profile="chroma",
                       phigate_issuer=ISSUER, phigate_audience=AUDIENCE)
        yield Harness(addon, idp, clock, tctx)


def body(flow: http.HTTPFlow) -> dict[str, Any]:
    assert flow.response is not None
    return json.loads(flow.response.content or b"")  # type: ignore[no-any-return]


# ---------------------------------------------------------------- success


async def test_valid_token_sets_identity_with_mapped_roles(h: Harness) -> None:
    flow = await h.call(token=sign(claims(groups=["clinicians", "emergency", "unmapped-group"])))
    assert flow.response is None
    ident = context(flow).identity
    assert ident is not None
    assert ident.subject == "clin-1"
    assert ident.issuer == ISSUER
    assert ident.roles == frozenset({"clinician", "emergency"})  # unmapped IdP groups grant nothing
    assert ident.token_id == "jti-abc"
    assert ident.expires_at == NOW + 300
    assert (ident.client_id, ident.name, ident.email, ident.purpose) == (
        "clin-1", "Dr. One", "one@example.org", "treatment")
    assert context(flow).purpose == "treatment"
    assert context(flow).auth_failure is None


@pytest.mark.parametrize("key,alg,kid", [(EC_1, "ES256", "ec-1"), (ED_1, "EdDSA", "ed-1"),
                                         (RSA_1, "RS256", "rsa-1")])
async def test_asymmetric_algorithms_on_the_allow_list_verify(h: Harness, key: Any, alg: str, kid: str) -> None:
    flow = await h.call(token=sign(claims(), key, alg, kid))
    assert flow.response is None
    assert context(flow).identity is not None


async def test_token_id_without_jti_is_a_hash_prefix_never_the_token(h: Harness) -> None:
    token = sign(claims(jti=None))
    flow = await h.call(token=token)
    ident = context(flow).identity
    assert ident is not None
    assert ident.token_id == "sha256:" + hashlib.sha256(token.encode()).hexdigest()[:16]
    assert token not in repr(ident)


async def test_purpose_header_overrides_the_claim(h: Harness) -> None:
    flow = await h.call(token=sign(claims()), headers={"X-Purpose-Of-Use": "payment"})
    assert flow.response is None
    assert context(flow).purpose == "payment"
    ident = context(flow).identity
    assert ident is not None and ident.purpose == "treatment"


async def test_malformed_purpose_header_is_refused(h: Harness) -> None:
    flow = await h.call(token=sign(claims()), headers={"X-Purpose-Of-Use": "treatment; drop table"})
    assert flow.response is not None and flow.response.status_code == 400
    assert body(flow)["error"] == "invalid_request"
    assert context(flow).identity is None


async def test_scope_claim_is_split_on_spaces(rules_dir: Path) -> None:
    mapping = compile_role_mapping(rules_dir / "policy.yaml",
                                   {"claim": "scope", "map": {"vectors:read": "agent", "approve": "approver"}})
    assert mapping.roles_for({"scope": "openid vectors:read approve"}) == {"agent", "approver"}
    assert mapping.roles_for({"scope": 7}) == frozenset()
    assert mapping.roles_for({}) == frozenset()


# ---------------------------------------------------------------- bad tokens

BAD_TOKENS: list[tuple[str, Callable[[], str], str]] = [
    ("expired", lambda: sign(claims(exp=int(NOW) - 31, iat=int(NOW) - 400)), "expired"),
    ("not yet valid", lambda: sign(claims(nbf=int(NOW) + 120)), "not_yet_valid"),
    ("lives longer than allowed", lambda: sign(claims(iat=int(NOW) - 10, exp=int(NOW) + 3600)), "lifetime_too_long"),
    ("issued in the future", lambda: sign(claims(iat=int(NOW) + 120)), "issued_in_future"),
    ("wrong issuer", lambda: sign(claims(iss="https://evil.test")), "wrong_issuer"),
    ("wrong audience", lambda: sign(claims(aud="not-phigate")), "wrong_audience"),
    ("no audience", lambda: sign(claims(aud=None)), "missing_claim"),
    ("no subject", lambda: sign(claims(sub=None)), "missing_claim"),
    ("no exp", lambda: sign(claims(exp=None)), "missing_claim"),
    ("no iat", lambda: sign(claims(iat=None)), "missing_claim"),
    ("no iss", lambda: sign(claims(iss=None)), "missing_claim"),
    ("empty subject", lambda: sign(claims(sub="")), "missing_claim"),
    ("exp not a number", lambda: sign(claims(exp="tomorrow")), "malformed_claim"),
    ("alg none", lambda: unsigned(claims(), {"alg": "none", "kid": "rsa-1"}), "alg_not_allowed"),
    ("alg None spelled oddly", lambda: unsigned(claims(), {"alg": "nOnE", "kid": "rsa-1"}), "alg_not_allowed"),
    ("HS256 with the public key", lambda: hs256_with_public_key(claims()), "alg_not_allowed"),
    ("unknown kid", lambda: sign(claims(), RSA_2, kid="made-up"), "unknown_kid"),
    ("no kid", lambda: sign(claims(), kid=None), "unknown_kid"),
    ("signed by another key", lambda: sign(claims(), RSA_2, kid="rsa-1"), "bad_signature"),
    ("tampered payload", lambda: tamper(sign(claims(groups=["agents"]))), "bad_signature"),
    ("EC alg with an RSA key", lambda: sign(claims(), EC_1, "ES256", kid="rsa-1"), "key_mismatch"),
    ("PS256 with a key published for RS256", lambda: sign(claims(), RSA_1, "PS256"), "key_mismatch"),
    ("RS256 with an EC key", lambda: sign(claims(), RSA_1, "RS256", kid="ec-1"), "key_mismatch"),
    ("ES384 with a P-256 key", lambda: sign(claims(), EC_1, "ES256", kid="ec-1").replace(
        b64(b'{"alg":"ES256"'), b64(b'{"alg":"ES384"')), "key_mismatch"),
    ("critical extension", lambda: sign(claims(), crit=["exp"], exp=1), "malformed"),
    ("garbage", lambda: "not-a-jwt", "malformed"),
    ("garbage with dots", lambda: "a.b.c", "malformed"),
    ("JWE shape", lambda: "a.b.c.d.e", "malformed"),
    ("huge", lambda: "a" * 20000 + ".b.c", "malformed"),
]


def tamper(token: str) -> str:
    head, payload, sig = token.split(".")
    forged = json.loads(base64.urlsafe_b64decode(payload + "=="))
    forged["groups"] = ["privacy-office"]
    return f"{head}.{b64(json.dumps(forged).encode())}.{sig}"


@pytest.mark.parametrize("make,reason", [(m, r) for _, m, r in BAD_TOKENS], ids=[n for n, _, _ in BAD_TOKENS])
async def test_bad_tokens_get_401_with_www_authenticate(h: Harness, make: Callable[[], str], reason: str,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="phigate")
    token = make()
    flow = await h.call(token=token)
    assert flow.response is not None, "a bad token must never pass"
    assert flow.response.status_code == 401
    b = body(flow)
    assert b["error"] == "invalid_token"
    assert b["detail"] and token not in b["detail"]
    www = flow.response.headers["www-authenticate"]
    assert www.startswith('Bearer realm="phigate", error="invalid_token", error_description="')
    c = context(flow)
    assert c.identity is None
    assert c.auth_failure is not None and c.auth_failure.reason == reason
    assert c.refusal is not None and c.refusal.stage == Stage.IDENTITY
    assert token not in caplog.text


async def test_claimed_subject_is_recorded_but_not_trusted(h: Harness) -> None:
    flow = await h.call(token=sign(claims(sub="approver-1"), RSA_2, kid="rsa-1"))
    c = context(flow)
    assert c.identity is None
    assert c.auth_failure is not None and c.auth_failure.claimed_subject == "approver-1"


@pytest.mark.parametrize("age,ok", [(29, True), (31, False)])
async def test_expiry_leeway_is_30_seconds(h: Harness, age: int, ok: bool) -> None:
    flow = await h.call(token=sign(claims(exp=int(NOW) - age, iat=int(NOW) - 400)))
    assert (flow.response is None) is ok


# ---------------------------------------------------------------- where the token comes from


async def test_missing_token_is_401_without_error_code(h: Harness) -> None:
    flow = await h.call()
    assert flow.response is not None and flow.response.status_code == 401
    assert flow.response.headers["www-authenticate"] == 'Bearer realm="phigate"'
    assert body(flow)["error"] == "invalid_request"
    assert context(flow).auth_failure is not None
    assert context(flow).auth_failure.reason == "missing_token"  # type: ignore[union-attr]


async def test_native_key_header_is_accepted(h: Harness) -> None:
    flow = await h.call(headers={"X-Chroma-Token": sign(claims())})
    assert flow.response is None and context(flow).identity is not None


async def test_same_token_in_two_headers_is_fine(h: Harness) -> None:
    token = sign(claims())
    flow = await h.call(token=token, headers={"X-Chroma-Token": token})
    assert flow.response is None and context(flow).identity is not None


async def test_two_different_tokens_are_ambiguous(h: Harness) -> None:
    flow = await h.call(token=sign(claims()), headers={"X-Chroma-Token": sign(claims(sub="other"))})
    assert flow.response is not None and flow.response.status_code == 400
    assert body(flow)["error"] == "invalid_request"
    assert 'error="invalid_request"' in flow.response.headers["www-authenticate"]
    assert context(flow).identity is None


async def test_one_header_twice_with_different_tokens_is_ambiguous(h: Harness) -> None:
    flow = tflow.tflow()
    flow.request.headers.add("Authorization", f"Bearer {sign(claims())}")
    flow.request.headers.add("Authorization", f"Bearer {sign(claims(sub='x'))}")
    await h.addon.request(flow)
    assert flow.response is not None and flow.response.status_code == 400
    assert context(flow).auth_failure.reason == "ambiguous_token"  # type: ignore[union-attr]


async def test_basic_auth_is_not_a_bearer_token(h: Harness) -> None:
    flow = await h.call(headers={"Authorization": "Basic YWxpY2U6cGFzcw=="})
    assert flow.response is not None and flow.response.status_code == 401
    assert context(flow).auth_failure is not None
    assert context(flow).auth_failure.reason == "unsupported_scheme"  # type: ignore[union-attr]


async def test_headers_not_in_the_profile_are_ignored(h: Harness) -> None:
    flow = await h.call(headers={"Api-Key": sign(claims())})
    assert flow.response is not None and flow.response.status_code == 401


async def test_token_headers_follow_the_profile(h: Harness, rules_dir: Path) -> None:
    profile = rules_dir / "profiles" / "chroma.yaml"
    text = profile.read_text()
    assert "token_headers: [authorization, x-chroma-token]" in text
    profile.write_text(text.replace("token_headers: [authorization, x-chroma-token]",
                                    "token_headers: [authorization, api-key]"))
    assert rulefiles.reload_all()
    flow = await h.call(headers={"Api-Key": sign(claims())})
    assert flow.response is None and context(flow).identity is not None
    flow = await h.call(headers={"X-Chroma-Token": sign(claims())})
    assert flow.response is not None and flow.response.status_code == 401


def test_extract_token_lists() -> None:
    headers = http.Headers(api_key="tok")
    with pytest.raises(AuthError, match="missing_token"):
        extract_token(headers, ("authorization",))
    headers = http.Headers([(b"api-key", b"Bearer abc.def.ghi")])
    assert extract_token(headers, ("authorization", "api-key")) == "abc.def.ghi"
    with pytest.raises(AuthError, match="empty_token"):
        extract_token(http.Headers(authorization="Bearer "), ("authorization",))


async def test_settled_flows_are_skipped(h: Harness) -> None:
    flow = tflow.tflow(resp=True)
    await h.addon.request(flow)
    assert context(flow).auth_failure is None and context(flow).refusal is None


# ---------------------------------------------------------------- cache


async def test_verified_tokens_are_cached_until_expiry(h: Harness) -> None:
    token = sign(claims(exp=int(NOW) + 60))
    for _ in range(5):
        flow = await h.call(token=token)
        assert flow.response is None
    assert h.verifier.verifications == 1
    h.clock.now = NOW + 60 + 30  # exp + leeway
    flow = await h.call(token=token)
    assert flow.response is not None and flow.response.status_code == 401
    assert context(flow).auth_failure.reason == "expired"  # type: ignore[union-attr]
    assert h.verifier.verifications == 2


async def test_cached_identity_follows_role_mapping_reloads(h: Harness, rules_dir: Path) -> None:
    token = sign(claims(groups=["agents"]))
    assert context(await h.call(token=token)).identity.roles == {"agent"}  # type: ignore[union-attr]
    (rules_dir / "policy.yaml").write_text(POLICY.replace("agents: agent", "agents: [agent, researcher]"))
    assert rulefiles.reload_all()
    assert context(await h.call(token=token)).identity.roles == {"agent", "researcher"}  # type: ignore[union-attr]
    assert h.verifier.verifications == 1


async def test_cached_token_dies_with_its_withdrawn_key(h: Harness) -> None:
    token = sign(claims())
    assert (await h.call(token=token)).response is None
    h.idp.keys = [k for k in h.idp.keys if k["kid"] != "rsa-1"] + [public_jwk(RSA_2, "rsa-2", "RS256")]
    assert await h.verifier.keys.refresh()
    flow = await h.call(token=token)
    assert flow.response is not None and flow.response.status_code == 401
    assert context(flow).auth_failure.reason == "unknown_kid"  # type: ignore[union-attr]


def test_token_cache_is_bounded_and_drops_expired_first() -> None:
    cache = TokenCache(max_entries=3)

    def entry(exp: float, kid: str = "k") -> VerifiedToken:
        return VerifiedToken(claims={}, kid=kid, token_id="t", expires_at=exp)

    cache.put(b"a", entry(100), now=0)
    cache.put(b"b", entry(10), now=0)
    cache.put(b"c", entry(100), now=0)
    assert cache.get(b"a", now=20) is not None  # a is now most recently used
    cache.put(b"d", entry(100), now=20)  # full: expired b goes first
    assert len(cache) == 3 and cache.get(b"b", now=20) is None
    cache.put(b"e", entry(100), now=20)  # full, nothing expired: least recently used (c) goes
    assert cache.get(b"c", now=20) is None
    assert cache.get(b"a", now=20) is not None
    cache.put(b"f", entry(100, kid="gone"), now=20)
    cache.forget_kids(frozenset({"gone"}))
    assert cache.get(b"f", now=20) is None


# ---------------------------------------------------------------- key set: rotation, outages


async def test_key_rotation_refetches_once_and_is_rate_limited(h: Harness) -> None:
    mono = Clock(1000.0)
    keys = KeySet(ISSUER, fetch=h.idp.fetch, clock=mono, refetch_interval=30)
    assert await keys.refresh()
    assert h.idp.jwks_fetches == 1
    h.idp.keys.append(public_jwk(RSA_2, "rsa-2", "RS256"))
    mono.now += 31
    assert (await keys.get("rsa-2")).kid == "rsa-2"  # unknown kid -> one refetch -> found
    assert h.idp.jwks_fetches == 2
    with pytest.raises(UnknownKey):
        await keys.get("made-up-1")  # within 30 s of the last fetch: no refetch
    with pytest.raises(UnknownKey):
        await keys.get("made-up-2")
    assert h.idp.jwks_fetches == 2
    mono.now += 30
    with pytest.raises(UnknownKey):
        await keys.get("made-up-3")
    assert h.idp.jwks_fetches == 3


async def test_rotation_through_the_addon(h: Harness) -> None:
    assert (await h.call(token=sign(claims()))).response is None
    h.idp.keys = [public_jwk(RSA_2, "rsa-2", "RS256")]
    # The first refetch is the one the addon did at the first request; allow another now.
    h.verifier.keys.last_attempt = -1e9
    flow = await h.call(token=sign(claims(), RSA_2, kid="rsa-2"))
    assert flow.response is None and context(flow).identity is not None


async def test_concurrent_unknown_kids_share_one_fetch(h: Harness) -> None:
    import asyncio

    keys = KeySet(ISSUER, fetch=h.idp.fetch)
    results = await asyncio.gather(*(keys.get("rsa-1") for _ in range(20)))
    assert {k.kid for k in results} == {"rsa-1"}
    assert h.idp.jwks_fetches == 1


async def test_unreachable_issuer_with_nothing_cached_is_503(h: Harness) -> None:
    h.idp.down = True
    flow = await h.call(token=sign(claims()))
    assert flow.response is not None and flow.response.status_code == 503
    b = body(flow)
    assert b["error"] == "identity_unavailable" and b["detail"]
    assert context(flow).identity is None
    assert context(flow).refusal is not None and context(flow).refusal.stage == Stage.IDENTITY  # type: ignore[union-attr]
    assert "no signing keys" in not_ready_reasons()["identity"]


async def test_outage_after_keys_were_cached_keeps_serving(h: Harness) -> None:
    assert (await h.call(token=sign(claims()))).response is None
    h.idp.down = True
    assert not await h.verifier.keys.refresh()
    flow = await h.call(token=sign(claims(jti="another")))
    assert flow.response is None
    assert h.verifier.keys.not_ready() is None


async def test_recovers_after_retry_interval() -> None:
    idp, mono = FakeIdp(), Clock(0.0)
    idp.down = True
    keys = KeySet(ISSUER, fetch=idp.fetch, clock=mono, retry_interval=5)
    with pytest.raises(KeysUnavailable):
        await keys.get("rsa-1")
    idp.down = False
    with pytest.raises(KeysUnavailable):
        await keys.get("rsa-1")  # retried too soon: not fetched
    assert len(idp.fetches) == 1
    mono.now = 5
    assert (await keys.get("rsa-1")).kid == "rsa-1"


async def test_discovery_naming_another_issuer_gives_no_keys() -> None:
    idp = FakeIdp()
    idp.discovery_issuer = "https://evil.test"
    keys = KeySet(ISSUER, fetch=idp.fetch)
    assert not await keys.refresh()
    assert keys.last_error is not None and "expected 'https://idp.test'" in keys.last_error
    assert idp.jwks_fetches == 0


async def test_refresher_retries_then_keeps_fresh() -> None:
    import asyncio

    idp = FakeIdp()
    keys = KeySet(ISSUER, fetch=idp.fetch, retry_interval=0.01, max_age=0.05)
    idp.down = True
    task = asyncio.create_task(keys.run_refresher())
    try:
        await asyncio.sleep(0.05)
        assert keys.not_ready() is not None and len(idp.fetches) >= 2
        idp.down = False
        await asyncio.sleep(0.2)
        assert keys.not_ready() is None
        assert idp.jwks_fetches >= 2  # re-read after max_age
    finally:
        task.cancel()


def test_parse_jwks_refuses_unsafe_keys(caplog: pytest.LogCaptureFixture) -> None:
    private = dict(public_jwk(RSA_1, "leaky", "RS256"), d="AAAA")
    doc = {"keys": [
        private,
        {"kty": "oct", "kid": "shared", "k": "c2VjcmV0"},
        public_jwk(RSA_2, "enc", "RSA-OAEP") | {"use": "enc"},
        public_jwk(RSA_1, "dup", "RS256"), public_jwk(RSA_2, "dup", "RS256"),
        public_jwk(RSA_1, "weird-alg", "HS256"),
        public_jwk(EC_1, "good", None),
    ]}
    assert set(parse_jwks(doc, "test")) == {"good"}
    assert "PRIVATE key material" in caplog.text
    with pytest.raises(FetchError, match="not a JWK set"):
        parse_jwks({"no": "keys"}, "test")


# ---------------------------------------------------------------- options and fail-closed


@pytest.mark.parametrize("opts,match", [
    ({"phigate_issuer": "http://idp.example.org"}, "https"),
    ({"phigate_clock_skew_s": 3600}, "phigate_clock_skew_s"),
    ({"phigate_jwks_refetch_s": 0}, "phigate_jwks_refetch_s"),
])
async def test_bad_options_are_refused(h: Harness, opts: dict[str, Any], match: str) -> None:
    with pytest.raises(exceptions.OptionsError, match=match):
        h.tctx.configure(h.addon, **opts)


async def test_loopback_http_issuer_is_allowed(h: Harness) -> None:
    h.tctx.configure(h.addon, phigate_issuer="http://127.0.0.1:9412")
    assert h.verifier.issuer == "http://127.0.0.1:9412"


async def test_policy_without_roles_section_stops_the_load(tmp_path: Path) -> None:
    (tmp_path / "policy.yaml").write_text("rules: []\n")
    addon = Identity(fetch=FakeIdp().fetch)
    with taddons.context(Gateway(), addon) as tctx, pytest.raises(exceptions.OptionsError, match="roles"):
        tctx.configure(addon, phigate_rules=str(tmp_path))


async def test_missing_profile_stops_the_load(rules_dir: Path) -> None:
    addon = Identity(fetch=FakeIdp().fetch)
    with taddons.context(Gateway(), addon) as tctx, \
            pytest.raises(exceptions.OptionsError, match="backend profile"):
        tctx.configure(addon, phigate_rules=str(rules_dir), phigate_profile="nosuch")


async def test_unconfigured_identity_refuses(rules_dir: Path) -> None:
    addon = Identity(fetch=FakeIdp().fetch)
    with taddons.context(Gateway(), addon) as tctx:
        tctx.configure(addon, phigate_rules=str(rules_dir), phigate_profile="chroma")
        flow = tflow.tflow()
        flow.request.headers["authorization"] = f"Bearer {sign(claims())}"
        await addon.request(flow)
        assert flow.response is not None and flow.response.status_code == 503


async def test_an_exception_in_the_hook_is_a_refusal_not_a_pass(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    async def boom(self: Any, token: str) -> Any:
        raise RuntimeError("verifier bug")

    monkeypatch.setattr(verifier_mod.Verifier, "verify", boom)
    flow = await h.call(token=sign(claims()))
    assert flow.response is not None and flow.response.status_code == 500
    assert context(flow).identity is None
    assert context(flow).refusal is not None and context(flow).refusal.stage == Stage.IDENTITY  # type: ignore[union-attr]


async def test_an_exception_in_role_mapping_is_a_refusal(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(self: Any, claims: Any) -> Any:
        raise KeyError("mapping bug")

    monkeypatch.setattr(RoleMapping, "roles_for", boom)
    flow = await h.call(token=sign(claims()))
    assert flow.response is not None and flow.response.status_code == 500
    assert context(flow).identity is None


# ---------------------------------------------------------------- role mapping compiler


@pytest.mark.parametrize("section,match", [
    (None, "'roles:' mapping"),
    ({"claim": "groups"}, "'map'"),
    ({"map": {"a": "b"}}, "'claim'"),
    ({"claim": "groups", "map": {}}, "non-empty"),
    ({"claim": "groups", "map": {"a": "Bad Role"}}, "role name"),
    ({"claim": "groups", "map": {"a": []}}, "role name"),
    ({"claim": "groups", "map": {"a": "b"}, "pass_through": True}, "only the keys"),
])
def test_role_mapping_errors_name_file_rule_and_expectation(section: Any, match: str) -> None:
    with pytest.raises(rulefiles.ConfigError, match=match) as err:
        compile_role_mapping("rules/policy.yaml", section)
    assert "rules/policy.yaml, rule 'roles'" in str(err.value)


def test_role_mapping_compiles() -> None:
    m = compile_role_mapping("p.yaml", {"claim": "roles", "map": {"a": "x", "b": ["x", "y"]}})
    assert m.claim == "roles"
    assert m.roles_for({"roles": ["a", "b", "c", 3]}) == {"x", "y"}


def test_wall_clock_default() -> None:
    # The addon's default clock is wall time (exp/iat are wall-clock seconds).
    assert abs(Identity()._clock() - time.time()) < 5


async def test_request_during_the_startup_fetch_waits_for_it() -> None:
    import asyncio

    idp, gate = FakeIdp(), asyncio.Event()

    async def slow_fetch(url: str) -> Any:
        await gate.wait()
        return await idp.fetch(url)

    keys = KeySet(ISSUER, fetch=slow_fetch)
    startup = asyncio.create_task(keys.refresh())
    await asyncio.sleep(0)  # the start-up fetch holds the lock
    request = asyncio.create_task(keys.get("rsa-1"))
    await asyncio.sleep(0.01)
    assert not request.done()
    gate.set()
    assert (await request).kid == "rsa-1"
    assert await startup
    assert idp.jwks_fetches == 1
