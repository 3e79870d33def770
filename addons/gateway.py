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
from pathlib import Path

from mitmproxy import ctx, exceptions, http

from addons.config import rulefiles
from addons.config.snapshot import rules_for
from addons.core.context import Operation, OpKind, Stage, context
from addons.core.guard import fail_closed
from addons.core.readiness import not_ready_reasons
from addons.core.respond import json_response, refuse

log = logging.getLogger("phigate")

# Options every phigate deployment must set. (name, what to set, example)
REQUIRED = (
    ("phigate_rules", "the rules folder", "--set phigate_rules=rules/"),
    ("phigate_profile", "the backend profile name (rules/profiles/NAME.yaml)", "--set phigate_profile=chroma"),
)

RELOAD_INTERVAL_S = 1.0


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


class Gateway:
    def __init__(self) -> None:
        self._reloader: asyncio.Task[None] | None = None
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

    def configure(self, updated: set[str]) -> None:
        # (The option belongs to mitmproxy's proxy server addon, absent in bare unit-test contexts.)
        if "connection_strategy" in ctx.options and ctx.options.connection_strategy != "lazy":
            # mitmproxy's default ("eager") connects to the backend as soon as a client connects,
            # before any hook has run: a refused or unauthenticated caller would still make the
            # gateway touch the backend, and a dead backend would take /-/healthz down with it.
            ctx.options.connection_strategy = "lazy"
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
        self._reloader = asyncio.get_running_loop().create_task(self._reload_loop())

    def done(self) -> None:
        if self._reloader:
            self._reloader.cancel()
        # The logger is process-wide: hand it back to the root's level (as before this gateway
        # ran) so a later master in the same process (tests, embedding) starts from the default.
        log.setLevel(logging.NOTSET)

    async def _reload_loop(self) -> None:
        # Polling by content hash, not inotify: works the same on every filesystem and catches
        # editors that replace files by rename.
        while True:
            await asyncio.sleep(RELOAD_INTERVAL_S)
            try:
                rulefiles.reload_all()
            except Exception as exc:  # noqa: BLE001 - the loop must survive; last good rules stay
                log.error("phigate: rule reload failed (%s)", type(exc).__name__)

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
            if reasons:
                flow.response = json_response(503, {"status": "not ready", "reasons": reasons})
            else:
                flow.response = json_response(200, {"status": "ready"})
        else:
            flow.response = json_response(404, {"error": "not_found", "detail": f"no gateway endpoint {path}"})
