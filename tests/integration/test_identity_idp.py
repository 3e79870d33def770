"""Identity against the real OpenID provider (npm oidc-provider), through stock mitmdump.

Every bad token gets a 401 with `WWW-Authenticate` and reaches nothing upstream; a key rotation at
the IdP is picked up without restarting the gateway, with the refetch rate-limited; an unreachable
issuer with nothing cached answers 503, never a pass.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.support.servers import (
    ROOT,
    Gateway,
    Idp,
    RecordingUpstream,
    free_port,
    http_call,
    make_rsa_jwks,
)

pytestmark = pytest.mark.integration

CREDENTIAL_ENV = "PHIGATE_TEST_BACKEND_CREDENTIAL"
def start_gateway(upstream: str, issuer: str, args: tuple[str, ...] = (), **extra: Any) -> Gateway:
    options = {
        "phigate_rules": str(ROOT / "rules"),
        "phigate_profile": "chroma",
        "phigate_issuer": issuer,
        "phigate_audience": "phigate",
        "phigate_backend_credential_env": CREDENTIAL_ENV,
        "phigate_allow_plain_http": "true",
        **{k: str(v) for k, v in extra.items()},
    }
    gw = Gateway(upstream, options, env={**os.environ, CREDENTIAL_ENV: "backend-secret"}, args=args)
    return gw.start()


@pytest.fixture(scope="module")
def upstream() -> Iterator[RecordingUpstream]:
    with RecordingUpstream() as server:
        yield server


@pytest.fixture(scope="module")
def gateway(idp: Idp, upstream: RecordingUpstream) -> Iterator[Gateway]:
    # One second of clock skew, so the IdP's 2-second token (client short-1) expires quickly.
    gw = start_gateway(upstream.url, idp.issuer, phigate_clock_skew_s=1)
    yield gw
    gw.stop()


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(part: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def craft(idp: Idp, kid: str | None = None, **over: Any) -> str:
    """A token signed by one of the IdP's real keys (its signing key by default), claims as we choose."""
    now = int(time.time())
    claims = {"iss": idp.issuer, "sub": "clin-1", "aud": "phigate", "iat": now, "exp": now + 300,
              "jti": uuid.uuid4().hex, "client_id": "clin-1", "groups": ["clinicians"]}
    claims.update(over)
    kid = kid or idp.jwks["keys"][0]["kid"]
    return jwt.encode(claims, idp.private_key_pem(kid), algorithm="RS256", headers={"kid": kid})


def alg_none(idp: Idp) -> str:
    head, payload, _ = idp.token("clin-1").split(".")
    header = unb64(head) | {"alg": "none"}
    return f"{b64(json.dumps(header).encode())}.{payload}."


def hs256_with_public_key(idp: Idp) -> str:
    # HMAC keyed with the IdP's *public* key (anyone can fetch it from /jwks).
    public = jwt.algorithms.RSAAlgorithm.from_jwk(json.dumps(idp.jwks["keys"][0])).public_key()  # type: ignore[union-attr]
    pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    _, payload, _ = idp.token("clin-1").split(".")
    head = b64(json.dumps({"alg": "HS256", "typ": "at+jwt", "kid": idp.jwks["keys"][0]["kid"]}).encode())
    sig = hmac.new(pem, f"{head}.{payload}".encode(), hashlib.sha256).digest()
    return f"{head}.{payload}.{b64(sig)}"


STRANGER = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def unknown_kid(idp: Idp) -> str:
    now = int(time.time())
    claims = {"iss": idp.issuer, "sub": "clin-1", "aud": "phigate", "iat": now, "exp": now + 300}
    return jwt.encode(claims, STRANGER, algorithm="RS256", headers={"kid": f"not-published-{uuid.uuid4().hex[:6]}"})


def tampered(idp: Idp) -> str:
    head, payload, sig = idp.token("agent-1").split(".")
    claims = unb64(payload) | {"groups": ["privacy-office"]}
    return f"{head}.{b64(json.dumps(claims).encode())}.{sig}"


def expired_from_idp(idp: Idp) -> str:
    token = idp.token("short-1")  # a 2-second token from the real IdP
    exp = unb64(token.split(".")[1])["exp"]
    time.sleep(max(0.0, exp + 1 + 0.5 - time.time()))  # past exp + the gateway's 1 s of skew
    return token


BAD: list[tuple[str, Any, str]] = [
    ("expired (IdP short-1)", expired_from_idp, 'error="invalid_token"'),
    ("expired (crafted)", lambda i: craft(i, exp=int(time.time()) - 600, iat=int(time.time()) - 900),
     'error="invalid_token"'),
    ("not yet valid", lambda i: craft(i, nbf=int(time.time()) + 600), 'error="invalid_token"'),
    ("wrong issuer", lambda i: craft(i, iss="http://127.0.0.1:1/other"), 'error="invalid_token"'),
    ("wrong audience (other-aud-1)", lambda i: i.token("other-aud-1"), 'error="invalid_token"'),
    ("alg none", alg_none, 'error="invalid_token"'),
    ("HS256 signed with the public key", hs256_with_public_key, 'error="invalid_token"'),
    ("unknown kid", unknown_kid, 'error="invalid_token"'),
    ("tampered claims", tampered, 'error="invalid_token"'),
    ("garbage", lambda i: "garbage-not-a-token", 'error="invalid_token"'),
]


@pytest.mark.parametrize("header,value", [("Authorization", "Bearer {}"), ("X-Chroma-Token", "{}")])
def test_good_token_from_the_real_idp_reaches_the_backend(gateway: Gateway, idp: Idp, upstream: RecordingUpstream,
                                                         header: str, value: str) -> None:
    token = idp.token("clin-1")
    before = len(upstream.requests)
    # The heartbeat is allowed to every verified caller by rules/policy.yaml (health-for-all).
    status, _, body = http_call("GET", f"{gateway.url}/api/v2/heartbeat", headers={header: value.format(token)})
    assert status == 200, body
    assert len(upstream.requests) == before + 1
    forwarded = upstream.requests[-1]["headers"]
    assert token not in json.dumps(forwarded), "the caller's token was forwarded to the backend"


def test_no_token_is_401(gateway: Gateway, upstream: RecordingUpstream) -> None:
    before = len(upstream.requests)
    status, headers, body = http_call("GET", f"{gateway.url}/api/v2/heartbeat")
    assert status == 401
    assert headers["www-authenticate"] == 'Bearer realm="phigate"'
    assert json.loads(body)["error"] == "invalid_request"
    assert len(upstream.requests) == before


@pytest.mark.parametrize("make,www", [(m, w) for _, m, w in BAD], ids=[n for n, _, _ in BAD])
def test_bad_tokens_are_401_and_reach_nothing(gateway: Gateway, idp: Idp, upstream: RecordingUpstream,
                                              make: Any, www: str) -> None:
    token = make(idp)
    before = len(upstream.requests)
    status, headers, body = http_call(
        "POST", f"{gateway.url}/api/v2/tenants/default_tenant/databases/default_database/collections",
        body={"name": "phi"}, headers={"Authorization": f"Bearer {token}"})
    assert status == 401, body
    doc = json.loads(body)
    assert doc["error"] == "invalid_token" and doc["detail"]
    assert token not in body.decode()
    assert www in headers["www-authenticate"]
    assert len(upstream.requests) == before, "a refused request reached the upstream"
    assert token not in gateway.proc.log(), "a raw token was logged"


def test_two_different_tokens_are_refused(gateway: Gateway, idp: Idp, upstream: RecordingUpstream) -> None:
    before = len(upstream.requests)
    status, _, body = http_call("GET", f"{gateway.url}/api/v2/heartbeat", headers={
        "Authorization": f"Bearer {idp.token('agent-1')}", "X-Chroma-Token": idp.token("approver-1")})
    assert status == 400 and json.loads(body)["error"] == "invalid_request"
    assert len(upstream.requests) == before


def refreshes(gw: Gateway, issuer: str) -> int:
    return gw.proc.log().count(f"signing keys of {issuer}:")


def wait_until(t: float) -> None:
    time.sleep(max(0.0, t - time.time()))


def test_key_rotation_without_restart_and_rate_limited_refetch() -> None:
    window = 5  # phigate_jwks_refetch_s for this gateway
    idp = Idp(jwks=make_rsa_jwks(["key-a"]))
    with idp, RecordingUpstream() as upstream:
        gw = start_gateway(upstream.url, idp.issuer, phigate_jwks_refetch_s=window)
        try:
            started = time.time()
            url = f"{gw.url}/api/v2/heartbeat"
            assert http_call("GET", url, headers={"Authorization": f"Bearer {idp.token('clin-1')}"})[0] == 200
            assert refreshes(gw, idp.issuer) == 1

            # Rotate: the IdP restarts signing with key-b (key-a still published).
            idp.restart(jwks={"keys": make_rsa_jwks(["key-b"])["keys"] + idp.jwks["keys"]})
            token_b = idp.token("clin-1")
            assert jwt.get_unverified_header(token_b)["kid"] == "key-b"
            wait_until(started + window + 0.5)
            status, _, body = http_call("GET", url, headers={"Authorization": f"Bearer {token_b}"})
            assert status == 200, body  # the unknown kid caused one refetch; no restart
            assert refreshes(gw, idp.issuer) == 2
            refetched = time.time()

            # A flood of made-up kids inside the window: all 401, and not one more fetch.
            for _ in range(20):
                status, _, _ = http_call("GET", url, headers={"Authorization": f"Bearer {unknown_kid(idp)}"})
                assert status == 401
            assert time.time() < refetched + window, "the flood took longer than the window; test is void"
            assert refreshes(gw, idp.issuer) == 2

            # After the window, the next unknown kid may refetch again: exactly once.
            wait_until(refetched + window + 0.5)
            for _ in range(3):
                http_call("GET", url, headers={"Authorization": f"Bearer {unknown_kid(idp)}"})
            assert refreshes(gw, idp.issuer) == 3
            # Tokens signed by the old key still verify while the IdP still publishes it.
            old = craft(idp, kid="key-a")
            assert http_call("GET", url, headers={"Authorization": f"Bearer {old}"})[0] == 200
        finally:
            gw.stop()


def test_unreachable_issuer_with_nothing_cached_is_503(idp: Idp) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    with RecordingUpstream() as upstream:
        gw = start_gateway(upstream.url, dead)
        try:
            status, _, body = http_call("GET", f"{gw.url}/api/v2/heartbeat",
                                        headers={"Authorization": f"Bearer {idp.token('clin-1')}"})
            assert status == 503, body
            doc = json.loads(body)
            assert doc["error"] == "identity_unavailable" and doc["detail"]
            assert upstream.requests == []
            status, _, body = http_call("GET", f"{gw.url}/-/readyz")
            assert status == 503
            assert "no signing keys" in json.loads(body)["reasons"]["identity"]
        finally:
            gw.stop()


BREAKER = """
import sys
sys.path.insert(0, {root!r})
import addons.identity as identity

async def _broken(self, token):
    raise RuntimeError("injected fault")

identity.Verifier.verify = _broken
addons = []
"""


def test_a_failing_identity_hook_refuses_and_forwards_nothing(tmp_path: Path, idp: Idp) -> None:
    breaker = tmp_path / "break_identity.py"
    breaker.write_text(BREAKER.format(root=str(ROOT)))
    with RecordingUpstream() as upstream:
        gw = start_gateway(upstream.url, idp.issuer, args=("-s", str(breaker)))
        try:
            status, _, body = http_call("GET", f"{gw.url}/api/v2/heartbeat",
                                        headers={"Authorization": f"Bearer {idp.token('clin-1')}"})
            assert status == 500, body
            assert json.loads(body)["error"] == "gateway_error"  # the identity guard, not a later gate
            assert upstream.requests == []
        finally:
            gw.stop()
