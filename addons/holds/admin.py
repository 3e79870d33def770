"""The admin API: JSON for approvers, on its own listener, every call authenticated by OIDC.

    GET  /api/holds[?state=pending|all]       holds (pending by default), every worker's
    GET  /api/holds/ID                        one hold
    POST /api/holds/ID/approve {"justification"}
    POST /api/holds/ID/deny    {"justification"}
    GET  /api/grants[?all=1]                  active grants (all with ?all=1)
    POST /api/grants {"subject", "operation", "collection", "minutes", "justification"}
    POST /api/grants/ID/revoke {"justification"}
    GET  /api/decisions[?limit=N]             recent outcomes (the approvals record)
    GET  /api/me                              who the token says you are
    GET  /  /console.js  /console.css         the reviewer console (no data without a token)
    GET  /console-config.json                 issuer, client id and scope the console signs in with

Any process's listener can serve any hold: the state lives in the shared store, and the process
holding the flow picks the decision up from there.
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson

from addons.holds.httpserver import SECURITY_HEADERS, Request, Response, json_answer
from addons.holds.model import Actor, DecisionError, Grant, Hold, HoldState
from addons.holds.store import AsyncHoldStore, HoldStore, unavailable_reason

ASSETS = Path(__file__).resolve().parent / "console"
_ASSET_TYPES = {"console.html": "text/html; charset=utf-8", "console.js": "text/javascript; charset=utf-8",
                "console.css": "text/css; charset=utf-8"}
_HOLD_ACTION = re.compile(r"/api/holds/([A-Za-z0-9_-]{1,64})(?:/(approve|deny))?")
_GRANT_REVOKE = re.compile(r"/api/grants/([A-Za-z0-9_-]{1,64})/revoke")

MIN_JUSTIFICATION = 4
MAX_JUSTIFICATION = 2000

Authenticate = Callable[[str], Awaitable[Actor]]


class AuthFailed(Exception):
    """The bearer token is missing or does not verify (message is safe to show)."""

    def __init__(self, detail: str, status: int = 401) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status = status


@dataclass(frozen=True, slots=True)
class ConsoleSignIn:
    """What the console needs to sign a reviewer in with the OpenID provider (public, no secret)."""

    issuer: str
    client_id: str
    scope: str


@dataclass(frozen=True, slots=True)
class AdminSettings:
    reviewer_roles: frozenset[str]
    grant_max_minutes: float
    node_id: str
    sign_in: ConsoleSignIn = ConsoleSignIn("", "phigate-console", "openid")


def _justification(body: dict[str, Any]) -> str:
    text = body.get("justification", body.get("reason"))
    if not isinstance(text, str) or len(text.strip()) < MIN_JUSTIFICATION:
        raise DecisionError(400, "justification_required",
                            f"a justification of at least {MIN_JUSTIFICATION} characters is required")
    if len(text) > MAX_JUSTIFICATION:
        raise DecisionError(400, "justification_too_long",
                            f"the justification is limited to {MAX_JUSTIFICATION} characters")
    return text.strip()


def _body(request: Request) -> dict[str, Any]:
    if not request.body:
        return {}
    try:
        parsed = orjson.loads(request.body)
    except orjson.JSONDecodeError:
        raise DecisionError(400, "bad_json", "the request body must be a JSON object") from None
    if not isinstance(parsed, dict):
        raise DecisionError(400, "bad_json", "the request body must be a JSON object")
    return parsed


class AdminApi:
    def __init__(self, store: AsyncHoldStore, authenticate: Authenticate, settings: AdminSettings,
                 on_hold_changed: Callable[[Hold, str, Actor | None], None],
                 on_grant: Callable[[Grant, str], None], clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.authenticate = authenticate
        self.settings = settings
        self.on_hold_changed = on_hold_changed
        self.on_grant = on_grant
        self.clock = clock
        self._assets = {name: (ASSETS / name).read_bytes() for name in _ASSET_TYPES}
        self._page_headers = _console_csp(settings.sign_in.issuer)

    async def handle(self, request: Request) -> Response:
        path = request.path
        if request.method == "GET" and path in ("/", "/console", "/console.html"):
            return Response(200, self._assets["console.html"], _ASSET_TYPES["console.html"], self._page_headers)
        if request.method == "GET" and path.lstrip("/") in _ASSET_TYPES:
            name = path.lstrip("/")
            return Response(200, self._assets[name], _ASSET_TYPES[name])
        if request.method == "GET" and path == "/console-config.json":
            # Public by design: the issuer and the console's client id are what any login page shows.
            c = self.settings.sign_in
            return json_answer(200, {"issuer": c.issuer, "client_id": c.client_id, "scope": c.scope})
        if path == "/healthz":
            return json_answer(200, {"status": "ok", "node_id": self.settings.node_id})
        if not path.startswith("/api/"):
            return json_answer(404, {"error": "not_found", "detail": f"no admin endpoint {path}"})
        try:
            actor = await self._actor(request)
            return await self._api(request, actor)
        except AuthFailed as exc:
            return json_answer(exc.status, {"error": "unauthorized" if exc.status == 401 else "forbidden",
                                            "detail": exc.detail},
                               {"www-authenticate": 'Bearer realm="phigate-admin"'} if exc.status == 401 else None)
        except DecisionError as exc:
            return json_answer(exc.status, {"error": exc.error, "detail": exc.detail})
        except (sqlite3.Error, OSError) as exc:
            # A locked or failing store: nothing was decided; the approver may retry.
            return json_answer(503, {"error": "store_unavailable", "detail": f"{unavailable_reason(exc)}; "
                                     "nothing was changed, try again"}, {"retry-after": "2"})

    async def _actor(self, request: Request) -> Actor:
        auth = request.headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthFailed("send your own access token: Authorization: Bearer <token>")
        actor = await self.authenticate(token.strip())
        # Only reviewers see holds at all: the list reveals who is doing what to which collection.
        if not actor.roles & self.settings.reviewer_roles:
            roles = ", ".join(sorted(self.settings.reviewer_roles))
            raise AuthFailed(f"the admin API is for reviewers (roles {roles})", 403)
        return actor

    async def _api(self, request: Request, actor: Actor) -> Response:
        now = self.clock()
        s = self.store.store
        path, method = request.path, request.method
        if path == "/api/me" and method == "GET":
            return json_answer(200, {"subject": actor.subject, "name": actor.name, "roles": sorted(actor.roles)})
        if path == "/api/holds" and method == "GET":
            state = request.query.get("state", "pending")
            if state == "all":
                holds = await self.store.call(s.holds, limit=_limit(request, 200))
            else:
                try:
                    wanted = HoldState(state)
                except ValueError:
                    raise DecisionError(400, "bad_state", f"unknown state {state!r}") from None
                holds = await self.store.call(s.holds, state=wanted, limit=_limit(request, 500))
            return json_answer(200, {"holds": [self._view(h, actor, now) for h in holds], "now": now})
        if path == "/api/decisions" and method == "GET":
            rows = await self.store.call(s.decisions, _limit(request, 50))
            return json_answer(200, {"decisions": rows})
        if path == "/api/grants" and method == "GET":
            grants = await self.store.call(s.grants, now=now, active_only=request.query.get("all") != "1")
            return json_answer(200, {"grants": [g.public(now) for g in grants]})
        if path == "/api/grants" and method == "POST":
            return await self._grant(request, actor, s, now)
        m = _GRANT_REVOKE.fullmatch(path)
        if m and method == "POST":
            why = _justification(_body(request))
            grant = await self.store.call(s.revoke_grant, m.group(1), actor, why, now)
            self.on_grant(grant, "grant_revoked")
            return json_answer(200, {"grant": grant.public(now)})
        m = _HOLD_ACTION.fullmatch(path)
        if m and m.group(2) is None and method == "GET":
            hold = await self.store.call(s.get, m.group(1))
            if hold is None:
                raise DecisionError(404, "not_found", f"no hold {m.group(1)}")
            return json_answer(200, {"hold": self._view(hold, actor, now)})
        if m and m.group(2) and method == "POST":
            why = _justification(_body(request))
            if m.group(2) == "approve":
                hold = await self.store.call(s.approve, m.group(1), actor, why, now)
            else:
                hold = await self.store.call(s.deny, m.group(1), actor, why, now)
            self.on_hold_changed(hold, m.group(2), actor)
            return json_answer(200, {"hold": self._view(hold, actor, now)})
        return json_answer(404, {"error": "not_found", "detail": f"no admin endpoint {method} {path}"})

    async def _grant(self, request: Request, actor: Actor, s: HoldStore, now: float) -> Response:
        body = _body(request)
        why = _justification(body)
        fields = {}
        for name in ("subject", "operation", "collection"):
            value = body.get(name)
            if not isinstance(value, str) or not value.strip() or len(value) > 256:
                raise DecisionError(400, "bad_grant", f"{name} is required (a non-empty string)")
            fields[name] = value.strip()
        minutes = body.get("minutes")
        if isinstance(minutes, bool) or not isinstance(minutes, int | float) or not (
                0 < minutes <= self.settings.grant_max_minutes):
            raise DecisionError(400, "bad_grant",
                                f"minutes must be a number between 0 and {self.settings.grant_max_minutes:g}")
        # A grant is an approval given in advance: the same separation of duties applies.
        if fields["subject"] == actor.subject:
            raise DecisionError(403, "self_approval", "you cannot grant a window to yourself")
        grant = await self.store.call(s.add_grant, fields["subject"], fields["operation"], fields["collection"],
                                      actor, why, now, float(minutes))
        self.on_grant(grant, "grant_created")
        return json_answer(201, {"grant": grant.public(now)})

    @staticmethod
    def _view(hold: Hold, actor: Actor, now: float) -> dict[str, Any]:
        view = hold.public(now)
        mine = actor.subject == hold.requester and actor.issuer == hold.requester_issuer
        done = {a["approver"] for a in hold.approvals}
        view["can_decide"] = (hold.state == HoldState.PENDING and now < hold.expires_at and not mine
                              and bool(actor.roles & hold.approver_roles) and actor.subject not in done)
        return view


def _console_csp(issuer: str) -> dict[str, str]:
    """The console page's CSP: the listener's own script, and fetches to itself and to the OpenID
    provider (discovery and the token endpoint, for the PKCE sign-in); nothing else."""
    parts = urlsplit(issuer)
    origin = f"{parts.scheme}://{parts.netloc}" if parts.scheme in ("http", "https") and parts.netloc else ""
    connect = "'self'" + (f" {origin}" if origin else "")
    return {"content-security-policy": SECURITY_HEADERS["content-security-policy"].replace(
        "connect-src 'self'", f"connect-src {connect}")}


def _limit(request: Request, default: int) -> int:
    try:
        return max(1, min(1000, int(request.query.get("limit", default))))
    except ValueError:
        return default
