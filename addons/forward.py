"""The last request hook before a flow leaves for the backend: a final gate and the credential swap.

- Final gate: forward only what the policy allowed, or a hold an approver released. Each earlier
  addon already refuses what it must; this re-check means a missing, misordered or failing addon
  can never turn into a forwarded request (defence in depth against fail-open chains).
- Credential swap: every header that can carry the caller's token is removed (the backend must never
  see, log or accept a caller's token), and the backend's own credential, read from an env var or a
  file named in the options (never from a committed file), is injected in the profile's header.
"""

from __future__ import annotations

import logging

from mitmproxy import ctx, exceptions, http

from addons.config.credentials import read_credential
from addons.config.profile_model import BackendAuth
from addons.config.profiles import load_profile
from addons.config.snapshot import pinned
from addons.core.context import Action, Stage, context
from addons.core.guard import fail_closed
from addons.core.readiness import register_readiness
from addons.core.respond import refuse

log = logging.getLogger("phigate")

# Hold states that mean "an authorised human (or a recorded break-glass) let this request through".
RELEASED_HOLD_STATES = frozenset({"approved", "granted", "break_glass"})

# Headers that carry credentials on some backend, stripped whatever the profile says: a caller must
# not smuggle a credential to a backend that happens to accept a second header.
ALWAYS_STRIPPED = ("authorization", "proxy-authorization", "x-chroma-token", "api-key", "x-api-key",
                   "cookie")



class Forward:
    def __init__(self) -> None:
        self.credential: str | None = None
        # (rules folder, profile name), read at configure: `ctx.options.x` deep-copies the value on
        # every read, and this runs on every request.
        self._profile_key: tuple[str, str] = ("", "")
        # Header names to strip for the profile's current BackendAuth (rebuilt when it changes).
        self._strip_for: BackendAuth | None = None
        self._strip: frozenset[str] = frozenset()
        register_readiness("backend_credential", self._not_ready)

    def load(self, loader: object) -> None:
        add = loader.add_option  # type: ignore[attr-defined]
        add("phigate_backend_credential_env", str, "",
            "Env var holding the backend's own credential, injected upstream.")
        add("phigate_backend_credential_file", str, "",
            "File holding the backend's own credential (used when the env var is unset or empty).")
        add("phigate_backend_credential_none", bool, False,
            "Set to true, explicitly, for a backend that takes no credential at all.")

    def configure(self, updated: set[str]) -> None:
        if updated & {"phigate_rules", "phigate_profile"}:
            self._profile_key = (ctx.options.phigate_rules, ctx.options.phigate_profile)
        keys = {"phigate_backend_credential_env", "phigate_backend_credential_file",
                "phigate_backend_credential_none"}
        if not updated & keys:
            return
        opts = ctx.options
        if opts.phigate_backend_credential_none:
            if opts.phigate_backend_credential_env or opts.phigate_backend_credential_file:
                raise exceptions.OptionsError(
                    "phigate_backend_credential_none=true contradicts a configured backend credential"
                )
            self.credential = None
            return
        self.credential = read_credential(opts.phigate_backend_credential_env,
                                          opts.phigate_backend_credential_file)

    def running(self) -> None:
        if not ctx.options.phigate_backend_credential_none and self.credential is None:
            log.error(
                "phigate: no backend credential: set phigate_backend_credential_env to an env var "
                "that holds it, or phigate_backend_credential_file to a file, or "
                "phigate_backend_credential_none=true for a backend without authentication"
            )
            ctx.master.shutdown()

    def _not_ready(self) -> str | None:
        if self.credential is None and not ctx.options.phigate_backend_credential_none:
            return "no backend credential configured"
        return None

    @fail_closed(Stage.CREDENTIALS, 500)
    def request(self, flow: http.HTTPFlow) -> None:
        c = context(flow)
        decision = c.decision
        if decision is None:
            refuse(flow, Stage.POLICY, 403, "forbidden", "no policy decision was made for this request")
            return
        if decision.action == Action.HOLD:
            if c.hold is None or c.hold.state not in RELEASED_HOLD_STATES:
                refuse(flow, Stage.APPROVAL, 403, "approval_required",
                       f"rule {decision.rule_id} requires approval and none was given",
                       extra={"rule_id": decision.rule_id})
                return
        elif decision.action != Action.ALLOW:
            refuse(flow, Stage.POLICY, 403, "forbidden", decision.reason or "denied by policy",
                   extra={"rule_id": decision.rule_id})
            return
        self.swap_credentials(flow, self._auth(flow))

    def _auth(self, flow: http.HTTPFlow) -> BackendAuth:
        # Still looked up per request (a dict lookup): the profile is hot-reloaded, and an unset
        # option raises here, which the fail_closed guard turns into a refusal.
        auth: BackendAuth = pinned(flow, load_profile(*self._profile_key)).auth
        return auth

    def swap_credentials(self, flow: http.HTTPFlow, auth: BackendAuth) -> None:
        headers = flow.request.headers
        if auth is not self._strip_for:
            self._strip = frozenset((*ALWAYS_STRIPPED, *(h.lower() for h in auth.token_headers)))
            self._strip_for = auth
        # One pass over the names the request carries instead of a pop per strippable name: a
        # missing name costs Headers a raised KeyError, and most of these are always missing.
        # Names decoded and lower-cased exactly as Headers matches them, so `del` removes every
        # occurrence of a name, in any case, as pop did.
        present = {name.decode("utf-8", "surrogateescape").lower() for name, _ in headers.fields}
        for name in present & self._strip:
            del headers[name]
        if auth.upstream_header and self.credential is not None:
            headers[auth.upstream_header] = auth.upstream_format.format(credential=self.credential)

