"""Gateway-wide settings, start-up checks, rule reloading and the gateway's own health endpoints.

First in the chain. It owns the options every other addon shares (rules folder, backend profile,
node id), refuses to run with a required option missing (mitmproxy silently ignores a misspelt
`--set` name, so absence is the only signal), polls rule files for edits, and answers
`/-/healthz` and `/-/readyz` without touching the backend.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from pathlib import Path

from mitmproxy import ctx, exceptions, http
from mitmproxy.proxy import mode_specs

from addons.config import rulefiles
from addons.config.profiles import load_profile
from addons.config.snapshot import rules_for
from addons.core.context import Operation, OpKind, Stage, context
from addons.core.guard import fail_closed
from addons.core.readiness import not_ready_reasons, register_readiness
from addons.core.respond import json_response, refuse
from addons.ledger import sink
from addons.request import upstream_call
from addons.request.upstream_call import Upstream

log = logging.getLogger("phigate")

# Options every phigate deployment must set. (name, what to set, example)
REQUIRED = (
    ("phigate_rules", "the rules folder", "--set phigate_rules=rules/"),
    ("phigate_profile", "the backend profile name (rules/profiles/NAME.yaml)", "--set phigate_profile=chroma"),
)

RELOAD_INTERVAL_S = 1.0
BACKEND_CHECK_TIMEOUT_S = 3.0
BACKEND_CHECK_MAX_BYTES = 4 << 20

# mitmproxy options that turn an HTTP connection into a relay of uninspected bytes: after a backend's
# `101 Switching Protocols` it would pass WebSocket frames or raw TCP both ways, past identity,
# policy, masking and audit (a caller could then send any request straight to the backend). No
# vector-database route needs an upgrade, so both stay off whatever the command line says.
TUNNEL_OPTIONS = ("rawtcp", "websocket")


def follow_verbosity() -> None:
    """Keep the `phigate` logger's level at the console's verbosity (termlog_verbosity).

    Stock mitmdump sets the root logger to DEBUG and lets each handler filter. So every
    `log.debug` on the request path built a LogRecord, formatted it, and mitmproxy's deprecated
    `add_log` relay then dispatched it as an event to every addon: ~0.2 ms of CPU per request
    for a line nobody prints (measured with py-spy under tests/bench/bench_gateway.py). At the
    verbosity termlog prints, a debug call returns at `isEnabledFor`. Output is unchanged:
    termlog prints from its verbosity up, and nothing in the chain listens to `add_log`.
    (The lean engine does the same for the root logger: addons/runtime/engine.py RootLogLevel.)
    """
    if "termlog_verbosity" not in ctx.options:  # no console log (e.g. unit tests): leave it
        return
    level = logging.getLevelName(str(ctx.options.termlog_verbosity).upper())
    log.setLevel(level if isinstance(level, int) else logging.NOTSET)


def backend_target() -> tuple[Upstream, str] | None:
    """The backend of the reverse-proxy mode and the path of a cheap health call (None: no reverse mode)."""
    for spec in getattr(ctx.options, "mode", ()) or ():
        try:
            mode = mode_specs.ProxyMode.parse(spec)
        except ValueError:
            continue
        if isinstance(mode, mode_specs.ReverseMode):
            host, port = mode.address
            upstream = Upstream(mode.scheme if mode.scheme in ("http", "https") else "http", host, port,
                                verify=not getattr(ctx.options, "ssl_insecure", False),
                                cafile=getattr(ctx.options, "ssl_verify_upstream_trusted_ca", None) or None)
            return upstream, _health_path()
    return None


def _health_path() -> str:
    try:
        prof = load_profile(ctx.options.phigate_rules, ctx.options.phigate_profile).current
    except Exception:  # noqa: BLE001 - no profile yet: the root answers as well as anything
        return "/"
    for route in prof.routes:
        if route.kind == OpKind.HEALTH and "GET" in route.methods and "{" not in route.template:
            return route.template
    return "/"


async def check_backend(upstream: Upstream, path: str) -> str | None:
    """None when the backend answers its health call (any status below 500), else why not."""
    try:
        answer = await asyncio.wait_for(
            upstream_call.call(upstream, "GET", path, {"Accept": "*/*"}, max_bytes=BACKEND_CHECK_MAX_BYTES),
            BACKEND_CHECK_TIMEOUT_S)
    except (OSError, TimeoutError, ValueError, ssl.SSLError) as exc:
        # No address in the reason: readyz is seen by load balancers, not only by operators.
        return f"the backend does not answer its health call GET {path} ({type(exc).__name__})"
    if answer.status >= 500:
        return f"the backend answers its health call GET {path} with {answer.status}"
    return None


def record_rejected_edit(path: str, why: str) -> None:
    """A rejected rule edit is an incident: the rules in force are not the ones on disk."""
    try:
        sink.record("incident", {"kind": "rule_edit_rejected", "detail": why})
    except Exception as exc:  # noqa: BLE001 - no ledger in this process: the log line stands
        log.warning("phigate: could not record the rejected edit of %s as an incident (%s)", path,
                    type(exc).__name__)


class Gateway:
    def __init__(self) -> None:
        self._reloader: asyncio.Task[None] | None = None
        self._backend_checker: asyncio.Task[None] | None = None
        # Why the backend is not ready, from the last health call (None: it answered).
        self._backend_down: str | None = None
        # Read at configure, not per request (`ctx.options.x` deep-copies on every read). Off
        # until configure says otherwise: fail closed.
        self._allow_plain_http = False

    def load(self, loader: object) -> None:
        add = loader.add_option  # type: ignore[attr-defined]
        add("phigate_rules", str, "", "Folder holding policy.yaml, masking.yaml and profiles/ (required).")
        add("phigate_profile", str, "", "Backend profile name: rules/profiles/NAME.yaml (required).")
        add("phigate_node_id", str, socket.gethostname(), "This gateway node's id, recorded in every audit event.")
        add("phigate_allow_plain_http", bool, False,
            "Accept clients over plain HTTP. Off by default: PHI and tokens travel only over TLS.")
        add("phigate_backend_check_s", int, 5,
            "Seconds between health calls to the backend for /-/readyz (the profile's first plain GET "
            "health route, else GET /); the answer is cached in between. 0: no backend check.")

    def configure(self, updated: set[str]) -> None:
        # (The option belongs to mitmproxy's proxy server addon, absent in bare unit-test contexts.)
        if "connection_strategy" in ctx.options and ctx.options.connection_strategy != "lazy":
            # mitmproxy's default ("eager") connects to the backend as soon as a client connects,
            # before any hook has run: a refused or unauthenticated caller would still make the
            # gateway touch the backend, and a dead backend would take /-/healthz down with it.
            ctx.options.connection_strategy = "lazy"
        for name in TUNNEL_OPTIONS:
            if name in ctx.options and getattr(ctx.options, name):
                ctx.options.update(**{name: False})
        if "termlog_verbosity" in updated:
            follow_verbosity()
        if "phigate_allow_plain_http" in updated:
            self._allow_plain_http = bool(ctx.options.phigate_allow_plain_http)
        if "phigate_rules" in updated and ctx.options.phigate_rules:
            rules = Path(ctx.options.phigate_rules)
            if not rules.is_dir():
                raise exceptions.OptionsError(f"phigate_rules: {rules} is not a folder; expected the rules folder")

    def running(self) -> None:
        missing = [(n, what, ex) for n, what, ex in REQUIRED if not getattr(ctx.options, n)]
        if missing:
            for name, what, example in missing:
                log.error("phigate: option %s is not set: set %s (%s)", name, what, example)
            ctx.master.shutdown()
            return
        # The option's first value may have been set before this addon was loaded.
        follow_verbosity()
        loop = asyncio.get_running_loop()
        self._reloader = loop.create_task(self._reload_loop())
        rulefiles.on_rejection(record_rejected_edit)
        target = backend_target()
        if target is not None and ctx.options.phigate_backend_check_s > 0:
            register_readiness("backend", lambda: self._backend_down)
            self._backend_down = "the backend has not been checked yet"
            self._backend_checker = loop.create_task(self._backend_loop(*target, ctx.options.phigate_backend_check_s))

    def done(self) -> None:
        for task in (self._reloader, self._backend_checker):
            if task:
                task.cancel()
        # The logger is process-wide: hand it back to the root's level (as before this gateway
        # ran) so a later master in the same process (tests, embedding) starts from the default.
        log.setLevel(logging.NOTSET)

    async def _backend_loop(self, upstream: Upstream, path: str, interval: float) -> None:
        while True:
            self._backend_down = await check_backend(upstream, path)
            await asyncio.sleep(interval)

    async def _reload_loop(self) -> None:
        # Polling by content hash, not inotify: works the same on every filesystem and catches
        # editors that replace files by rename.
        while True:
            await asyncio.sleep(RELOAD_INTERVAL_S)
            try:
                rulefiles.reload_all()
            except Exception as exc:  # noqa: BLE001 - the loop must survive; last good rules stay
                log.error("phigate: rule reload failed (%s)", type(exc).__name__)

    @staticmethod
    def _tunnel_request(flow: http.HTTPFlow) -> bool:
        """Refuse what asks for a tunnel or names another host; True when refused.

        A reverse proxy forwards origin-form requests to its one backend. CONNECT and absolute-form
        targets (`POST http://other-host/...`) would make it a forward proxy; an `Upgrade` request
        asks the backend for a 101 that would end inspection of the connection.
        """
        req = flow.request
        if req.method == "CONNECT" or req.authority:
            refuse(flow, Stage.GATEWAY, 400, "tunnel_refused",
                   "CONNECT and absolute-form request targets are refused: send origin-form requests")
            return True
        if "upgrade" in req.headers:
            refuse(flow, Stage.GATEWAY, 400, "upgrade_refused",
                   "protocol upgrades are refused: the gateway inspects HTTP requests only",
                   headers={"connection": "close"})
            return True
        return False

    def response(self, flow: http.HTTPFlow) -> None:
        # First in the chain, so no later addon acts on a switched connection. A 101 (or any 1xx
        # left as the final answer) means the backend now speaks another protocol on this
        # connection: refuse it and close the client's connection, so nothing sent after it can
        # reach the backend unchecked (the client never asked to upgrade: such requests are
        # refused above, and h2c upgrades are stripped by mitmproxy's disableh2c).
        resp = flow.response
        if resp is None or resp.status_code >= 200 or context(flow).answered_by_gateway:
            return
        status = resp.status_code
        refuse(flow, Stage.UPSTREAM, 502, "upgrade_refused",
               f"the backend answered {status} (switching protocols); the gateway relays no tunnels",
               headers={"connection": "close"})

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        # The first hook a flow meets: pin the rules version it will be handled under, start to end.
        rules_for(flow)

    @fail_closed(Stage.GATEWAY, 500)
    def request(self, flow: http.HTTPFlow) -> None:
        # 164.312(e)(1): a bearer token or PHI sent in clear text is already exposed; refuse it
        # rather than serve it, unless plain HTTP was asked for explicitly (loopback tests, demo).
        if not flow.client_conn.tls_established and not self._allow_plain_http:
            refuse(flow, Stage.GATEWAY, 400, "tls_required",
                   "this gateway accepts HTTPS only (plain HTTP is off: phigate_allow_plain_http)")
            return
        if self._tunnel_request(flow):
            return
        if not flow.request.path.startswith("/-/"):
            return
        c = context(flow)
        path = flow.request.path.split("?", 1)[0]
        c.answered_by_gateway = True
        c.operation = Operation(
            backend="phigate", kind=OpKind.HEALTH, route=f"phigate{path}", method=flow.request.method, path=path
        )
        if path == "/-/healthz":
            flow.response = json_response(200, {"status": "ok"})
        elif path == "/-/readyz":
            reasons = not_ready_reasons()
            body: dict[str, object] = {"status": "not ready", "reasons": reasons} if reasons else {"status": "ready"}
            rejected = rulefiles.rejected_edits()
            if rejected:
                # Serving the last good rules: still ready, but an operator must see the edit failed.
                body["rejected_rule_edits"] = rejected
            flow.response = json_response(503 if reasons else 200, body)
        else:
            flow.response = json_response(404, {"error": "not_found", "detail": f"no gateway endpoint {path}"})
