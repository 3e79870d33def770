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
import logging
import time
from collections.abc import Callable
from pathlib import Path

from mitmproxy import ctx, exceptions, http

from addons.auth.jwks import (
    Fetcher,
    KeySet,
    KeysUnavailable,
    check_trusted_url,
    fetch_json,
)
from addons.auth.verifier import (
    DEFAULT_LEEWAY_S,
    DEFAULT_MAX_LIFETIME_S,
    MAX_LEEWAY_S,
    PURPOSE_HEADER,
    PURPOSE_SHAPE,
    AuthError,
    Verifier,
    claimed_subject,
    extract_token,
    printable,
    share,
    token_fingerprint,
)
from addons.config import rulefiles
from addons.config.policy_rules import PolicySet, load_policy
from addons.config.profile_model import Profile
from addons.config.profiles import load_profile
from addons.config.snapshot import pinned
from addons.core.context import AuthFailure, Stage, context
from addons.core.guard import fail_closed
from addons.core.readiness import register_readiness
from addons.core.respond import refuse
from addons.core.startup import runtime_error

log = logging.getLogger("phigate")

# ---------------------------------------------------------------- the addon


def _www_authenticate(err: AuthError) -> str:
    value = 'Bearer realm="phigate"'
    if err.oauth_error:
        value += f', error="{err.oauth_error}", error_description="{printable(err.detail)}"'
    return value


class Identity:
    """The mitmproxy addon (chain.py: `identity.Identity()`); sets ctx.identity or refuses."""

    def __init__(self, fetch: Fetcher = fetch_json, clock: Callable[[], float] = time.time) -> None:
        self._fetch = fetch
        self._clock = clock
        self.verifier: Verifier | None = None
        # policy.yaml's compiled rules, whose `roles:` section maps IdP claims to phigate roles.
        self._policy: rulefiles.WatchedFile[PolicySet] | None = None
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
                self._policy = load_policy(Path(opts.phigate_rules))
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
        share(self.verifier)
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
        verifier, policy, profile = self.verifier, self._policy, self._profile
        if verifier is None or policy is None or profile is None:
            # Started without issuer/audience/rules/profile (running() is shutting down): never a pass.
            refuse(flow, Stage.IDENTITY, 503, "identity_unavailable", "the gateway has no token issuer configured")
            return
        c = context(flow)
        token: str | None = None
        try:
            token = extract_token(flow.request.headers, pinned(flow, profile).auth.token_headers)
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
        if purpose is not None and not PURPOSE_SHAPE.fullmatch(purpose.strip()):
            refuse(flow, Stage.IDENTITY, 400, "invalid_request",
                   f"{PURPOSE_HEADER} must be a short code such as 'treatment' ([A-Za-z0-9_.:-], max 64)")
            return
        ident = verifier.identity(key, verdict, pinned(flow, policy).roles)
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
