"""Classify: what does this request do, to which collection? (chain slot after Identity)

The request hook canonicalises the target (addons/request/canonical_form.py), refuses with 400 whatever a backend
could read differently from the gateway, matches the backend profile (addons/config/profiles.py) and sets
`ctx.operation`. The canonical target replaces the original, so the backend receives exactly what
was classified. A request no route matches becomes `unknown`: not refused here, denied by policy
(default deny), so the audit shows it like any other denial.

Collection ids: Chroma's data routes carry a collection UUID while policies name collections. The
response hook learns id -> name pairs from the backend's own successful answers (create, get, list,
fork, an accepted rename), as the profile's `learn` entries say. A caller cannot poison the map to
reach another collection: nothing a caller sends is learned unless the backend accepted it, and the
backend is the authority on which name an id has. An unmodified chromadb client always creates or
gets a collection by name before using its id, so the name is normally known; an id this process
has not seen (learned by another worker, or before a restart) is looked up once from the backend
with the gateway's own credential when the profile says how (`resolve`, addons/request/name_lookup.py).
Failing that, it classifies with no collection name, which no collection glob matches (default deny).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any

import orjson
from mitmproxy import ctx, exceptions, http

from addons.config.credentials import read_credential
from addons.config.profile_model import CollectionLearning, Profile, RequestParts, Route
from addons.config.profiles import classify_request, load_profile
from addons.config.rulefiles import ConfigError
from addons.config.snapshot import pinned
from addons.core.context import Operation, OpKind, Stage, context
from addons.core.guard import fail_closed
from addons.core.readiness import loaded_check, register_readiness
from addons.core.respond import refuse
from addons.request.canonical_form import Ambiguous, canonical_target, check_headers, parse_query
from addons.request.name_lookup import NameLookup
from addons.request.upstream_call import Upstream

log = logging.getLogger("phigate")


class CollectionNames:
    """Collection id -> name, learned from backend answers only; bounded so it cannot grow forever."""

    def __init__(self, limit: int = 100_000) -> None:
        self._names: OrderedDict[str, str] = OrderedDict()
        self._limit = limit

    def learn(self, collection_id: str, name: str) -> None:
        self._names[collection_id] = name
        self._names.move_to_end(collection_id)
        while len(self._names) > self._limit:
            self._names.popitem(last=False)

    def name_of(self, collection_id: str) -> str | None:
        return self._names.get(collection_id)

    def __len__(self) -> int:
        return len(self._names)


class Classify:
    def __init__(self) -> None:
        self.names = CollectionNames()
        self.lookup = NameLookup()
        # (rules folder, profile name), read at configure: `ctx.options.x` deep-copies the value on
        # every read, and _profile() runs on every request and response.
        self._profile_key: tuple[str, str] = ("", "")
        register_readiness("profile", loaded_check("backend profile", self._profile))

    def configure(self, updated: set[str]) -> None:
        if not updated & {"phigate_rules", "phigate_profile"}:
            return
        self._profile_key = (ctx.options.phigate_rules, ctx.options.phigate_profile)
        if not (ctx.options.phigate_rules and ctx.options.phigate_profile):
            return  # the Gateway addon stops the gateway with a message saying what to set
        try:
            load_profile(ctx.options.phigate_rules, ctx.options.phigate_profile)
        except ConfigError as exc:
            raise exceptions.OptionsError(f"Cannot load the backend profile: {exc.diagnostics()}") from None

    def _profile(self, flow: http.HTTPFlow | None = None) -> Profile:
        # A dict lookup per call (the profile is hot-reloaded); unset options raise ConfigError.
        wf = load_profile(*self._profile_key)
        return wf.current if flow is None else pinned(flow, wf)

    @fail_closed(Stage.CLASSIFY, 500)
    async def request(self, flow: http.HTTPFlow) -> None:
        profile = self._profile(flow)
        req = flow.request
        if req.raw_content is None:
            # A streamed body was never seen by the gateway: it cannot be judged or masked.
            refuse(flow, Stage.CLASSIFY, 413, "body_not_inspectable",
                   "the request body is too large for the gateway to inspect")
            return
        try:
            target = canonical_target(req.path)
            query = parse_query(target.query)
            check_headers(req.headers, query)
            # Content-Encoding other than identity was refused above: the raw bytes are the body.
            result = classify_request(profile, req.method, target.path, query, req.raw_content)
        except Ambiguous as exc:
            refuse(flow, Stage.CLASSIFY, 400, "ambiguous_request", exc.detail)
            return
        if target.forwarded != req.path:
            req.path = target.forwarded  # forward exactly what was classified
        context(flow).request_parts = result.parts
        route, collection, collection_id = result.route, result.collection, result.collection_id
        if route is not None and route.collection_is_id and collection_id is not None:
            collection = self.names.name_of(collection_id)
            if collection is None and profile.resolve is not None:
                collection = await self._look_up(flow, profile, collection_id, result.parts)
        context(flow).operation = self._operation(profile, req.method, target.path, route,
                                                  result.facts, collection, collection_id)

    async def _look_up(self, flow: http.HTTPFlow, profile: Profile, collection_id: str,
                       parts: RequestParts) -> str | None:
        """Ask the backend (with its own credential) for the name of an id this process never saw."""
        assert profile.resolve is not None
        opts = ctx.options
        headers: dict[str, str] = {}
        credential = read_credential(getattr(opts, "phigate_backend_credential_env", ""),
                                     getattr(opts, "phigate_backend_credential_file", ""))
        if profile.auth.upstream_header and credential:
            headers[profile.auth.upstream_header] = profile.auth.upstream_format.format(credential=credential)
        upstream = Upstream(flow.request.scheme, flow.request.host, flow.request.port,
                            verify=not getattr(opts, "ssl_insecure", False),
                            cafile=getattr(opts, "ssl_verify_upstream_trusted_ca", None) or None)
        name = await self.lookup.name_of(profile.resolve, collection_id, parts.vars, upstream, headers)
        if name is not None:
            self.names.learn(collection_id, name)
        return name

    def _operation(self, profile: Profile, method: str, path: str, route: Route | None,
                   facts: Any, collection: str | None, collection_id: str | None) -> Operation:
        if route is None:
            return Operation(backend=profile.backend, kind=OpKind.UNKNOWN, route="unknown",
                             method=method, path=path)
        return Operation(backend=profile.backend, kind=route.kind, route=route.id, method=method,
                         path=path, collection=collection, collection_id=collection_id, facts=dict(facts))

    def response(self, flow: http.HTTPFlow) -> None:
        # Not an enforcing hook: a failure to learn only means later requests on that id are
        # denied until the client names the collection again. Never let it break the response.
        c = context(flow)
        op = c.operation
        if op is None or c.answered_by_gateway or flow.response is None or not 200 <= flow.response.status_code < 300:
            return
        try:
            route = self._profile().route(op.route)
            if route is not None and route.learn:
                self._learn(flow, route)
        except Exception as exc:  # noqa: BLE001
            log.warning("phigate: could not learn collection names from %s (%s)", op.route, type(exc).__name__)

    def _learn(self, flow: http.HTTPFlow, route: Route) -> None:
        parts = context(flow).request_parts
        response_doc: Any = None
        for spec in route.learn:
            if spec.source == "request":
                doc = parts.body if parts is not None else None
            else:
                if response_doc is None and flow.response is not None:
                    response_doc = orjson.loads(flow.response.get_content(strict=True) or b"null")
                doc = response_doc
            if doc is None:
                continue
            for item in spec.find(doc):
                self._learn_item(spec, item, parts)

    def _learn_item(self, spec: CollectionLearning, item: Any, parts: RequestParts | None) -> None:
        if not isinstance(item, dict):
            return
        name = item.get(spec.name_key)
        if spec.id_var is not None:
            ident = parts.vars.get(spec.id_var) if parts is not None else None
        else:
            ident = item.get(spec.id_key) if spec.id_key else None
        if isinstance(ident, str) and isinstance(name, str) and ident and name:
            self.names.learn(ident, name)
