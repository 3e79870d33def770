"""Masking addon: per-role PHI masking of responses, detokenization of requests.

Request (after policy, approvals and the forward gate): tokens a masked caller sends back as handles
in the route's ids and filters are turned into the real values before forwarding; a token the
gateway cannot open is a 400. The request body is summarised, PHI-free, for the audit.

Response: for every route that carries records, the body is decoded, parsed, masked with the plan
for the caller's roles, and re-serialised. Threat: mitmproxy fails open (a hook that raises lets the
original response through), and a body the gateway cannot read is a body it cannot mask; so every
such case is a deliberate 502, never a pass. Streaming is forced off for these routes at
`responseheaders`, because a streamed body never reaches the `response` hook.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import orjson
from mitmproxy import ctx, exceptions, http

from addons.config import rulefiles
from addons.config.jsonpath import compile_path
from addons.config.masking_rules import MaskingRules, RoleDefaults, Rule, compile_masking
from addons.config.profile_model import Profile, Route
from addons.config.profiles import load_profile
from addons.config.rulefiles import ConfigError, WatchedFile
from addons.config.snapshot import pinned
from addons.core import upstream_errors
from addons.core.context import FlowContext, MaskingSummary, OpKind, Stage, context
from addons.core.guard import fail_closed
from addons.core.readiness import register_readiness
from addons.core.respond import refuse
from addons.phi import shape, tokens
from addons.phi.headers import allowed_fields
from addons.phi.masker import (
    MaskRun,
    detokenize,
    dump_body,
    mask_error_body,
    mask_records,
    parse_body,
    request_summary,
    scan_text,
)
from addons.phi.operators import DROP
from addons.phi.tokens import KeyRing, KeySetError, TokenError
from addons.runtime import wire

log = logging.getLogger("phigate")

DEFAULT_MAX_BYTES = 32 * 1024 * 1024
UNKNOWN_ROUTE = Route("unknown", OpKind.UNKNOWN, "", "")
# (route kept alive, handle paths (ids + filters), filter paths, document paths) of a request
_RequestWalkers = tuple[Route, tuple[Any, ...], tuple[Any, ...], tuple[Any, ...]]
DECODABLE = frozenset({"", "identity", "gzip", "x-gzip", "deflate", "br", "zstd"})
NO_BODY_STATUS = frozenset({204, 304})


_REPLACED_HEADERS = frozenset(
    {b"content-encoding", b"content-length", b"transfer-encoding", b"etag", b"last-modified", b"content-md5",
     b"digest", b"cache-control"}
)


def _header_map(headers: http.Headers) -> dict[bytes, bytes]:
    """Lower-cased header names to values, repeated fields joined: one pass instead of one
    multidict lookup per question."""
    out: dict[bytes, bytes] = {}
    for k, v in headers.fields:
        k = k.lower()
        out[k] = out[k] + b", " + v if k in out else v
    return out


def _is_json(content_type: str) -> bool:
    mime = content_type.split(";", 1)[0].strip().lower()
    return mime == "application/json" or (mime.startswith("application/") and mime.endswith("+json"))


def _charset_ok(content_type: str) -> bool:
    for param in content_type.split(";")[1:]:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in ("utf-8", "utf8"):
            return False
    return True


class Masking:
    def __init__(self, profile_source: Any = None) -> None:
        # Tests may hand a Profile (or a WatchedFile of one); the gateway loads it from the rules.
        self._profile_source = profile_source
        self._rules: WatchedFile[MaskingRules] | None = None
        self._profile: WatchedFile[Profile] | None = None
        self.keyring: KeyRing | None = None
        self._filter_walkers: dict[tuple[str, int], _RequestWalkers] = {}
        self._max_bytes = DEFAULT_MAX_BYTES

    # -- configuration -------------------------------------------------------------------------------

    def load(self, loader: Any) -> None:
        add = loader.add_option
        add("phigate_masking_rules", str, "", "Masking rules file (default: <phigate_rules>/masking.yaml).")
        add("phigate_token_key_file", str, "",
            "File of token keys, `[*]KID=BASE64` entries; '*' marks the key that makes new tokens.")
        add("phigate_token_key_env", str, "PHIGATE_TOKEN_KEYS",
            "Environment variable holding token keys when no key file is set (same format).")
        add("phigate_mask_max_bytes", int, DEFAULT_MAX_BYTES,
            "Largest response body (decoded) the gateway will mask; larger ones on masked routes are a 502.")
        register_readiness("masking", self._not_ready)
        try:
            wire.install()
        except wire.WireError as exc:
            raise exceptions.OptionsError(str(exc)) from exc

    def _not_ready(self) -> str | None:
        if self._rules is None:
            return "masking rules not loaded"
        if self._rules.current.needs_key and self.keyring is None:
            return "no token key loaded"
        return None

    def configure(self, updated: set[str]) -> None:
        if "phigate_mask_max_bytes" in updated:
            # Read once here: an option lookup on every response costs more than the check itself.
            self._max_bytes = int(getattr(ctx.options, "phigate_mask_max_bytes", DEFAULT_MAX_BYTES))
        relevant = {"phigate_rules", "phigate_profile", "phigate_masking_rules", "phigate_token_key_file",
                    "phigate_token_key_env"}
        if not (updated & relevant):
            return
        rules_dir = getattr(ctx.options, "phigate_rules", "")
        path = ctx.options.phigate_masking_rules or (str(Path(rules_dir) / "masking.yaml") if rules_dir else "")
        if not path:
            return  # the Gateway addon reports the missing phigate_rules
        try:
            self._rules = rulefiles.watched(Path(path), compile_masking)
        except ConfigError as exc:
            raise exceptions.OptionsError(f"Cannot load masking rules: {exc.diagnostics()}") from exc
        try:
            self.keyring = tokens.load_keyring(
                ctx.options.phigate_token_key_file or None, ctx.options.phigate_token_key_env or None, os.environ
            )
        except KeySetError as exc:
            if self._rules.current.needs_key:
                raise exceptions.OptionsError(f"Cannot load token keys: {exc}") from exc
            self.keyring = None
        if self._rules.current.needs_key and self.keyring is None:
            # Threat: a tokenize rule with no key would have to release clear values or fail every
            # response; refuse to start instead, and say how to fix it.
            raise exceptions.OptionsError(
                f"{path} has tokenize rules or subjects but no token key is loaded: set phigate_token_key_file "
                f"or the environment variable {ctx.options.phigate_token_key_env or 'PHIGATE_TOKEN_KEYS'} "
                "to '[*]KID=BASE64SECRET' (32+ random bytes; e.g. k1=$(head -c32 /dev/urandom | base64))"
            )
        tokens.install(self.keyring)
        self._profile = self._load_profile(rules_dir)

    def _load_profile(self, rules_dir: str) -> WatchedFile[Profile] | None:
        src = self._profile_source
        if isinstance(src, WatchedFile):
            return src
        if isinstance(src, Profile):
            return None
        name = getattr(ctx.options, "phigate_profile", "")
        if not (rules_dir and name):
            return None
        try:
            return load_profile(Path(rules_dir), name)
        except ConfigError as exc:
            raise exceptions.OptionsError(f"Cannot load profile {name}: {exc.diagnostics()}") from exc

    def current_rules(self, flow: http.HTTPFlow | None = None) -> MaskingRules:
        """The masking rules in force now, or (given a flow) the version that flow is handled under."""
        if self._rules is None:
            raise RuntimeError("masking rules are not loaded")
        return self._rules.current if flow is None else pinned(flow, self._rules)

    def profile(self, flow: http.HTTPFlow | None = None) -> Profile | None:
        if isinstance(self._profile_source, Profile):
            return self._profile_source
        if self._profile is None:
            return None
        return self._profile.current if flow is None else pinned(flow, self._profile)

    def _route(self, flow: http.HTTPFlow) -> tuple[str, Route] | None:
        op = context(flow).operation
        prof = self.profile(flow)
        if op is None or prof is None:
            return None
        route = prof.route(op.route)
        return (op.backend, route) if route is not None else None

    def _roles(self, flow: http.HTTPFlow) -> frozenset[str] | None:
        ident = context(flow).identity
        return ident.roles if ident is not None else None

    # -- requests ------------------------------------------------------------------------------------

    def _request_walkers(self, route: Route) -> tuple[tuple[Any, ...], tuple[Any, ...], tuple[Any, ...]]:
        key = (route.id, id(route))
        hit = self._filter_walkers.get(key)
        if hit is None:
            handles = tuple(compile_path(p) for p in (*route.request.ids, *route.request.filters))
            filters = tuple(compile_path(p) for p in route.request.filters)
            documents = tuple(compile_path(p) for p in route.request.documents)
            hit = (route, handles, filters, documents)
            self._filter_walkers[key] = hit
        return hit[1], hit[2], hit[3]

    @fail_closed(Stage.MASKING, 500)
    def request(self, flow: http.HTTPFlow) -> None:
        found = self._route(flow)
        if found is None:
            return
        _, route = found
        if self.current_rules(flow).route_paths(route).has_records:
            # A partial body cannot be parsed or masked: ask upstream for the whole thing. (One pass
            # over the fields: a multidict lookup per name costs more than the whole list.)
            if any(k.lower() in (b"range", b"if-range") for k, _ in flow.request.headers.fields):
                for name in ("range", "if-range"):
                    if name in flow.request.headers:
                        del flow.request.headers[name]
        raw = flow.request.raw_content
        if not raw or not _is_json(flow.request.headers.get("content-type", "application/json")):
            return
        handles, filters, documents = self._request_walkers(route)
        try:
            doc = orjson.loads(flow.request.get_content(strict=True) or b"null")
        except (ValueError, orjson.JSONDecodeError):
            return  # classify/policy judge malformed bodies; nothing here to detokenize
        c = context(flow)
        c.request_summary = request_summary(doc, filters, self.keyring)
        if documents:
            notes = [v for w in documents for v in w.nodes(doc) if isinstance(v, str) and v]
            if notes:
                c.written_notes = notes
        if b"tok_" not in raw or not handles:
            return
        try:
            n = detokenize(doc, handles, self.keyring)
        except TokenError as exc:
            refuse(flow, Stage.MASKING, 400, "bad_token", f"a token in the request cannot be used: {exc.reason}")
            return
        if n:
            flow.request.content = orjson.dumps(doc)
            summary = c.masking or MaskingSummary()
            summary.detokenized += n
            c.masking = summary

    # -- responses -----------------------------------------------------------------------------------

    @fail_closed(Stage.MASKING, 502)
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        c = context(flow)
        if flow.response is None or c.answered_by_gateway:
            return
        if c.operation is not None:
            # Threat: a streamed body goes to the client chunk by chunk and never reaches `response`;
            # masking would be skipped silently. Buffer every upstream body (mapped route or not).
            flow.response.stream = False

    @fail_closed(Stage.MASKING, 502)
    def response(self, flow: http.HTTPFlow) -> None:
        resp = flow.response
        c = context(flow)
        if resp is None or c.answered_by_gateway:
            return  # the gateway's own answer: no upstream bytes in it
        op = c.operation
        prof = self.profile(flow)
        if op is None or prof is None:
            return  # never classified: the forward gate let no such request reach the backend
        if resp.trailers:
            # Threat: values in trailers travel after the body, past every check made on it.
            self._unmaskable(flow, "upstream_trailers", "the backend sent HTTP trailers, which the gateway refuses")
            return
        rules = self.current_rules(flow)
        roles = self._roles(flow)
        notes, c.written_notes = c.written_notes, None
        if notes and resp.status_code < 300:
            self._prescan(rules, notes)
        defaults = rules.defaults_for(roles)
        if defaults.masked:
            self._masked_response(flow, resp, c, rules, roles, defaults, prof)
        else:
            self._unmasked_response(flow, resp, c, rules, roles, prof)

    def _masked_response(self, flow: http.HTTPFlow, resp: http.Response, c: FlowContext, rules: MaskingRules,
                         roles: frozenset[str] | None, defaults: RoleDefaults, prof: Profile) -> None:
        """Allow-list: headers, error bodies, shapes and record fields reach a masked role only as
        the rules and the profile let them; every branch ends in a pass, a rewrite or a refusal."""
        assert c.operation is not None and defaults.default is not None
        summary = c.masking or MaskingSummary()
        c.masking = summary
        if resp.status_code < 200:
            # A 101 would turn the connection into a tunnel nothing masks.
            self._unmaskable(flow, "unexpected_upgrade", "the backend switched protocols; that cannot be masked")
            return
        if resp.stream:
            self._unmaskable(flow, "streamed_body", "the upstream body was streamed and could not be masked")
            return
        upstream_fields = resp.headers.fields
        self._masked_body(flow, resp, c, rules, roles, defaults, prof, summary)
        if not c.answered_by_gateway:
            # Last, so decoding still saw the upstream's Content-Encoding (an unknown one is refused);
            # counted on what the upstream sent.
            resp.headers.fields = allowed_fields(resp.headers.fields)[0]
            summary.headers_dropped += allowed_fields(upstream_fields)[1]

    def _masked_body(self, flow: http.HTTPFlow, resp: http.Response, c: FlowContext, rules: MaskingRules,
                     roles: frozenset[str] | None, defaults: RoleDefaults, prof: Profile,
                     summary: MaskingSummary) -> None:
        assert c.operation is not None and defaults.default is not None
        if flow.request.method == "HEAD" or resp.status_code in NO_BODY_STATUS:
            if resp.raw_content:
                # Threat: clients ignore such a body, intermediaries and raw readers do not.
                self._unmaskable(flow, "unexpected_body", f"a {resp.status_code} answer must carry no body")
            return
        if resp.status_code >= 400:
            self._error_answer(flow, resp, c, prof, rules)
            return
        route = prof.route(c.operation.route)
        paths = rules.route_paths(route) if route is not None else None
        if paths is not None and not paths.has_records:
            return  # the profile declares this route carries no records (health, counts, admin)
        got = self._decoded(flow, resp)
        if got is None or not got[0]:
            return  # refused, or empty: nothing to mask
        body, content_type = got
        if not _is_json(content_type) or not _charset_ok(content_type):
            self._unmaskable(flow, "unsupported_content_type",
                             f"content type {content_type.split(';', 1)[0][:64] or '(none)'!r} cannot be masked; "
                             "expected JSON")
            return
        run = MaskRun(self.keyring, rules.detector)
        try:
            doc, saved = parse_body(body, paths.splice_keys if paths is not None else ())
        except orjson.JSONDecodeError:
            self._unmaskable(flow, "invalid_json", "the upstream response is not valid JSON")
            return
        problem = "the backend profile does not map this route" if paths is None else shape.problem(doc, paths, saved)
        if problem is not None:
            if paths is not None and prof.shape_mismatch == "refuse":
                self._unmaskable(flow, "unexpected_shape", problem)
                return
            # Masked as a whole: no layout to follow, so nothing passes as it came.
            for key, raw in saved.items():
                doc[key] = orjson.Fragment(raw)  # vectors stay as they came (checked numbers-only)
            doc = shape.mask_whole(doc, defaults.default, run)
            run.by_rule[defaults.rule_id] += 1
            self._set_body(resp, orjson.dumps(None if doc is DROP else doc))
            self._finish(summary, run, applied=True)
            return
        assert route is not None
        plan = rules.plan(roles, c.operation.backend, route)
        mask_records(doc, plan, run, self.keyring, summary)
        if run.changed:
            self._set_body(resp, dump_body(doc, saved))
        self._finish(summary, run, applied=True)

    def _error_answer(self, flow: http.HTTPFlow, resp: http.Response, c: FlowContext, prof: Profile,
                      rules: MaskingRules) -> None:
        """An upstream error body never reaches a masked role: backends echo request values in their
        messages ("bad where: {mrn: ...}"). The gateway's own error replaces it, carrying only the
        fields the profile lists as safe, each matching its pattern, after a scan."""
        out: dict[str, Any] = {"error": "upstream_error", "status": resp.status_code, "request_id": c.request_id}
        if prof.error_fields:
            got = self._decoded(flow, resp, refuse_on_failure=False)
            doc = None
            if got is not None and got[0] and _is_json(got[1]):
                try:
                    doc = orjson.loads(got[0])
                except orjson.JSONDecodeError:
                    doc = None
            if type(doc) is dict:
                run = MaskRun(self.keyring, rules.detector)
                for name, pattern in prof.error_fields.items():
                    value = doc.get(name)
                    if type(value) is str and pattern.fullmatch(value):
                        out[name] = scan_text(value, run)
        # Clients that map errors by class read a message too (the chromadb client does).
        out.setdefault("message", f"the backend answered {resp.status_code}; its error detail is withheld")
        self._set_body(resp, orjson.dumps(out))
        resp.headers["content-type"] = "application/json"

    def _unmasked_response(self, flow: http.HTTPFlow, resp: http.Response, c: FlowContext, rules: MaskingRules,
                           roles: frozenset[str] | None, prof: Profile) -> None:
        """A role that sees records as stored: the rules that name it still apply (e.g. SSNs)."""
        op = c.operation
        assert op is not None
        route = prof.route(op.route)
        generic: tuple[Rule, ...] = ()
        if route is None:
            # A route the profile does not know has no record layout to follow. Threat: records
            # leaving by an unmapped route (a new backend API version). Every rule for the caller
            # applies, by field name anywhere and to every string.
            generic = rules.applicable_any_operation(roles, op.backend)
            if not generic:
                return  # no rule names this role on this backend: it sees records as stored
            route = UNKNOWN_ROUTE
        paths = rules.route_paths(route)
        is_error = resp.status_code >= 400 or bool(generic)
        plan = rules.plan(roles, op.backend, route)
        whole_body_rules = generic or (rules.applicable(roles, op.backend, route) if is_error else ())
        if not paths.has_records and not whole_body_rules:
            return
        summary = c.masking or MaskingSummary()
        c.masking = summary
        if resp.stream:
            self._unmaskable(flow, "streamed_body", "the upstream body was streamed and could not be masked")
            return
        if flow.request.method == "HEAD" or resp.status_code in NO_BODY_STATUS or resp.status_code < 200:
            return  # no body to mask; an unmasked role's headers pass
        got = self._decoded(flow, resp)
        if got is None or not got[0]:
            return
        body, content_type = got
        mime = content_type.split(";", 1)[0].strip().lower()
        run = MaskRun(self.keyring, rules.detector)
        if is_error and mime.startswith("text/"):
            text = body.decode("utf-8", errors="replace")
            self._set_body(resp, scan_text(text, run).encode())
            self._finish(summary, run, applied=True)
            return
        if not _is_json(content_type) or not _charset_ok(content_type):
            self._unmaskable(flow, "unsupported_content_type",
                             f"content type {mime[:64] or '(none)'!r} cannot be masked; expected JSON")
            return
        try:
            doc, saved = parse_body(body, () if is_error else paths.splice_keys)
        except orjson.JSONDecodeError:
            self._unmaskable(flow, "invalid_json", "the upstream response is not valid JSON")
            return
        if is_error:
            if whole_body_rules:
                mask_error_body(doc, whole_body_rules, run)
                self._set_body(resp, orjson.dumps(doc))
            self._finish(summary, run, applied=bool(whole_body_rules))
            return
        # Disclosure facts are read in the same walk, before each record is masked.
        mask_records(doc, plan, run, self.keyring, summary)
        if run.changed:
            self._set_body(resp, dump_body(doc, saved))
        self._finish(summary, run, applied=plan.masks)

    def _decoded(self, flow: http.HTTPFlow, resp: http.Response,
                 refuse_on_failure: bool = True) -> tuple[bytes, str] | None:
        """The response body decoded, with its content type; None when it cannot be (and, unless
        told otherwise, the flow is then refused: a body the gateway cannot read, it cannot mask)."""
        def fail(flow: http.HTTPFlow, error: str, detail: str) -> None:
            if refuse_on_failure:
                self._unmaskable(flow, error, detail)

        hdrs = _header_map(resp.headers)
        if resp.status_code == 206 or b"content-range" in hdrs:
            fail(flow, "partial_content", "a partial (Range) response cannot be masked")
            return None
        raw = resp.raw_content
        if raw is None:
            fail(flow, "streamed_body", "the upstream body was not buffered and could not be masked")
            return None
        content_type = hdrs.get(b"content-type", b"").decode("latin-1")
        if not raw:
            return b"", content_type
        encoding = hdrs.get(b"content-encoding", b"").decode("latin-1").strip().lower()
        if "," in encoding:
            fail(flow, "unsupported_encoding", "stacked content encodings are not decoded by the gateway")
            return None
        if encoding not in DECODABLE:
            fail(flow, "unsupported_encoding", f"content encoding {encoding[:32]!r} is not supported")
            return None
        limit = self._max_bytes
        if len(raw) > limit:
            fail(flow, "body_too_large", f"the response is larger than {limit} bytes")
            return None
        try:
            body = raw if encoding in ("", "identity") else (resp.get_content(strict=True) or b"")
        except ValueError:
            fail(flow, "undecodable_body", "the response's content encoding could not be decoded")
            return None
        if len(body) > limit:
            fail(flow, "body_too_large", f"the decoded response is larger than {limit} bytes")
            return None
        if content_type.split(";", 1)[0].strip().lower() == "text/event-stream":
            fail(flow, "event_stream", "event streams are not masked; this route answers JSON")
            return None
        return body, content_type

    # -- failed exchanges ----------------------------------------------------------------------------

    def error(self, flow: http.HTTPFlow) -> None:
        """A failed exchange (backend down, not HTTP, reset, trailers): the client gets the gateway's
        JSON error with its request id instead of mitmproxy's page, and the audit a classified
        reason (addons/core/upstream_errors.py), never mitmproxy's message."""
        try:
            c = context(flow)
            if flow.error is None or c.answered_by_gateway:
                return
            if flow.response is not None and flow.response.stream:
                return  # its head already left: nothing can replace it; the connection just ends
            if flow.request.method.upper() == "CONNECT" or flow.request.authority:
                # A tunnel request that mitmproxy failed on before any hook could refuse it: the
                # client's mistake, answered as the Gateway addon answers it, never as a 502.
                refuse(flow, Stage.GATEWAY, 400, "tunnel_refused",
                       "CONNECT and absolute-form request targets are refused: send origin-form requests",
                       headers={"connection": "close"})
                flow.metadata[wire.GATEWAY_ANSWER] = True
                return
            failure = upstream_errors.classify(flow.error.msg, flow.request.timestamp_end is not None)
            refuse(flow, Stage.UPSTREAM, failure.status, failure.reason, failure.detail)
            flow.metadata[wire.GATEWAY_ANSWER] = True
        except Exception as exc:  # noqa: BLE001 - an error hook must not raise: mitmproxy's page would follow
            log.warning("phigate masking: error hook failed (%s)", type(exc).__name__)

    def _prescan(self, rules: MaskingRules, notes: list[str]) -> None:
        """Scan notes as they are written, so reads find them already masked (detection is the
        costly part of masking a read). An optimisation only: a failure here never fails the write,
        and a note not prescanned is simply scanned when read."""
        try:
            run = MaskRun(self.keyring, rules.detector)
            for rule in rules.rules:
                if rule.documents and rule.operator.name == "detect":
                    for text in notes:
                        rule.operator.apply(text, "DOCUMENT", run)
        except Exception as exc:  # noqa: BLE001 - see the docstring
            log.warning("phigate masking: prescan of written notes failed (%s)", type(exc).__name__)

    @staticmethod
    def _finish(summary: MaskingSummary, run: MaskRun, applied: bool) -> None:
        summary.applied = summary.applied or applied
        for k, v in run.by_rule.items():
            summary.counts_by_rule[k] = summary.counts_by_rule.get(k, 0) + v
        for k, v in run.by_type.items():
            summary.counts_by_type[k] = summary.counts_by_type.get(k, 0) + v

    @staticmethod
    def _set_body(resp: http.Response, body: bytes) -> None:
        # Sent uncompressed: re-compressing costs more than it saves next to the backend, and
        # identity is always acceptable to a client that offered gzip. Validators and digests are
        # dropped. Threat: a shared HTTP cache serving one role's view to another, or a stale
        # validator naming the upstream's unmasked representation.
        fields = [(k, v) for k, v in resp.headers.fields if k.lower() not in _REPLACED_HEADERS]
        fields += [(b"content-length", str(len(body)).encode()), (b"cache-control", b"no-store")]
        resp.headers.fields = tuple(fields)
        resp.raw_content = body

    @staticmethod
    def _unmaskable(flow: http.HTTPFlow, error: str, detail: str) -> None:
        c = context(flow)
        summary = c.masking or MaskingSummary()
        c.masking = summary
        log.warning("phigate masking refused a response (%s) request_id=%s", error, c.request_id)
        refuse(flow, Stage.MASKING, 502, error, detail)
        # The refusal came from the gateway, but it replaced an upstream answer: keep it visible.
        summary.applied = False
