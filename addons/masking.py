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
from addons.config.masking_rules import MaskingRules, Rule, compile_masking
from addons.config.profile_model import Profile, Route
from addons.config.profiles import load_profile
from addons.config.rulefiles import ConfigError, WatchedFile
from addons.config.snapshot import pinned
from addons.core.context import MaskingSummary, OpKind, Stage, context
from addons.core.guard import fail_closed
from addons.core.readiness import register_readiness
from addons.core.respond import refuse
from addons.phi import tokens
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
from addons.phi.tokens import KeyRing, KeySetError, TokenError

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
            return
        rules = self.current_rules(flow)
        roles = self._roles(flow)
        found = self._route(flow)
        generic: tuple[Rule, ...] = ()
        if found is None:
            op = c.operation
            if op is None or self.profile(flow) is None:
                return
            # A route the profile does not know has no record layout to follow, yet policy let it
            # through. Threat: records leaving by an unmapped route (a new backend API version).
            # Every rule for the caller applies, by field name anywhere and to every string.
            generic = rules.applicable_any_operation(roles, op.backend)
            if not generic:
                return
            backend, route = op.backend, UNKNOWN_ROUTE
        else:
            backend, route = found
        notes, c.written_notes = c.written_notes, None
        if notes and resp.status_code < 300:
            self._prescan(rules, notes)
        paths = rules.route_paths(route)
        is_error = resp.status_code >= 400 or bool(generic)
        plan = rules.plan(roles, backend, route)
        whole_body_rules = generic or (rules.applicable(roles, backend, route) if is_error else ())
        if not paths.has_records and not whole_body_rules:
            return
        summary = c.masking or MaskingSummary()
        c.masking = summary
        if resp.stream:
            self._unmaskable(flow, "streamed_body", "the upstream body was streamed and could not be masked")
            return
        if flow.request.method == "HEAD" or resp.status_code in NO_BODY_STATUS:
            return  # no body: nothing to mask (headers carry no records)
        hdrs = _header_map(resp.headers)
        if resp.status_code == 206 or b"content-range" in hdrs:
            self._unmaskable(flow, "partial_content", "a partial (Range) response cannot be masked")
            return
        raw = resp.raw_content
        if raw is None:
            self._unmaskable(flow, "streamed_body", "the upstream body was not buffered and could not be masked")
            return
        if not raw:
            return
        encoding = hdrs.get(b"content-encoding", b"").decode("latin-1").strip().lower()
        if "," in encoding:
            self._unmaskable(flow, "unsupported_encoding", "stacked content encodings are not decoded by the gateway")
            return
        if encoding not in DECODABLE:
            self._unmaskable(flow, "unsupported_encoding", f"content encoding {encoding[:32]!r} is not supported")
            return
        limit = self._max_bytes
        if len(raw) > limit:
            self._unmaskable(flow, "body_too_large", f"the response is larger than {limit} bytes")
            return
        try:
            body = raw if encoding in ("", "identity") else (resp.get_content(strict=True) or b"")
        except ValueError:
            self._unmaskable(flow, "undecodable_body", "the response's content encoding could not be decoded")
            return
        if len(body) > limit:
            self._unmaskable(flow, "body_too_large", f"the decoded response is larger than {limit} bytes")
            return
        content_type = hdrs.get(b"content-type", b"").decode("latin-1")
        mime = content_type.split(";", 1)[0].strip().lower()
        if mime == "text/event-stream":
            self._unmaskable(flow, "event_stream", "event streams are not masked; this route answers JSON")
            return
        run = MaskRun(self.keyring, rules.detector)
        if is_error and mime.startswith("text/") and mime != "text/event-stream":
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
