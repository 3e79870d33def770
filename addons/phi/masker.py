"""Masking one JSON body with a compiled plan; detokenizing requests; PHI-free request summaries.

Speed: a 1 MB Chroma query response is ~95% vector floats. Parsing them (orjson, ~10 ms) and writing
them back would cost more than all the masking, and risks changing their text. Top-level keys that
hold only vectors (the route's vector paths) are cut out of the bytes before parsing and put back
verbatim with `orjson.Fragment`, so vectors are byte-identical by construction. The cut is checked:
the span must hold nothing but numbers, brackets, commas and `null`, balanced, and after parsing the
placeholder must sit at that top-level key; anything else falls back to a full parse.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from addons.config.jsonpath import Walker
from addons.config.masking_rules import Plan, Rule, field_key
from addons.core.context import MaskingSummary
from addons.phi.detect.detector import Detector
from addons.phi.operators import DROP, Clear
from addons.phi.tokens import TOKEN_RE, KeyRing, TokenError

_VECTOR_BYTES = b"0123456789.eE+-,[] \t\r\nnul"


@dataclass(slots=True)
class MaskRun:
    """State of masking one body (operators count through it)."""

    keyring: KeyRing | None
    detector: Detector
    by_rule: Counter[str] = field(default_factory=Counter)
    by_type: Counter[str] = field(default_factory=Counter)
    changed: int = 0  # values actually changed: none means the body goes out byte for byte

    def count_type(self, label: str, n: int = 1) -> None:
        self.by_type[label] += n


@functools.lru_cache(maxsize=64)
def _needle(key: str) -> bytes:
    return orjson.dumps(key)


def _find_key_value(raw: bytes, key: str) -> tuple[int, int] | None:
    """Byte span of the value of `"key":` when it looks like a vector block, else None."""
    needle = _needle(key)
    n = len(raw)
    found: list[int] = []  # positions just past `"key":` (the name used as a key, not as a value)
    at = raw.find(needle)
    while at >= 0:
        i = at + len(needle)
        while i < n and raw[i] in b" \t\r\n":
            i += 1
        if i < n and raw[i] == ord(":"):
            found.append(i + 1)
        at = raw.find(needle, at + 1)
    if len(found) != 1:
        return None  # absent, or a key of that name nested elsewhere too: parse everything
    i = found[0]
    while i < n and raw[i] in b" \t\r\n":
        i += 1
    start = i
    end = raw.find(b'"', start)
    if end < 0:
        end = n
    seg_end = end
    # Trim back to the value's end: whitespace, the member comma, or the closing brace.
    while seg_end > start and raw[seg_end - 1] in b" \t\r\n,}":
        seg_end -= 1
    seg = raw[start:seg_end]
    if not seg or seg.translate(None, _VECTOR_BYTES):
        return None
    if seg.count(b"[") != seg.count(b"]"):
        return None
    return start, seg_end


def parse_body(raw: bytes, splice_keys: Iterable[str]) -> tuple[Any, dict[str, bytes]]:
    """Parse a JSON body, leaving vector blocks at `splice_keys` unparsed (see module docstring)."""
    cuts: list[tuple[int, int, str]] = []
    for key in splice_keys:
        span = _find_key_value(raw, key)
        if span is not None and span[1] - span[0] > 256:  # not worth it for small blocks
            cuts.append((span[0], span[1], key))
    if not cuts:
        return orjson.loads(raw), {}
    cuts.sort()
    nonce = os.urandom(12).hex()
    parts: list[bytes] = []
    pos = 0
    saved: dict[str, bytes] = {}
    for start, end, key in cuts:
        parts.append(raw[pos:start])
        parts.append(orjson.dumps(f"\x00phigate-splice-{nonce}-{key}"))
        saved[key] = raw[start:end]
        pos = end
    parts.append(raw[pos:])
    doc = orjson.loads(b"".join(parts))
    if not isinstance(doc, dict) or any(doc.get(k) != f"\x00phigate-splice-{nonce}-{k}" for k in saved):
        return orjson.loads(raw), {}
    return doc, saved


def dump_body(doc: Any, saved: Mapping[str, bytes]) -> bytes:
    if saved:
        for key, raw in saved.items():
            doc[key] = orjson.Fragment(raw)
    return orjson.dumps(doc)


def apply_plan(doc: Any, plan: Plan, run: MaskRun) -> set[str]:
    """Mask `doc` in place; returns the metadata fields that were masked."""
    return mask_records(doc, plan, run, None, None)


def _apply_op(container: Any, key: Any, op: Any, label: str, run: MaskRun) -> bool:
    """Apply one operator at one location; True when the value changed."""
    old = container[key]
    new = op.apply(old, label, run)
    if new is DROP:
        if type(container) is dict:
            del container[key]
        else:
            container[key] = None  # removing a list element would shift its neighbours
    elif new is old or (type(new) is type(old) and new == old):
        return False
    else:
        container[key] = new
    run.changed += 1
    return True


def _mask_object(obj: dict[str, Any], plan: Plan, run: MaskRun, masked: set[str],
                 parts: Mapping[str, Any] | None = None) -> None:
    """Mask one record object: a listed field with its rule's operator, any other key with the role's
    default (masked roles). A listed field that passes (`clear`) and holds objects is judged again
    inside, so the allow-list holds at any depth. `parts`: keys another record path treats (a
    document, an id, a vector inside the record), left to it."""
    fields, unlisted, by_rule = plan.fields, plan.unlisted, run.by_rule
    for key in list(obj):
        fop = fields.get(field_key(key)) if fields else None
        if fop is None:
            if unlisted is None:
                continue
            if parts and key in parts:
                sub = parts[key]
                if sub is not None and type(obj[key]) is dict:
                    _mask_object(obj[key], plan, run, masked, sub)
                elif sub is not None:
                    _apply_op(obj, key, unlisted.operator, unlisted.label, run)  # not the object declared
                continue
            fop = unlisted
        elif type(fop.operator) is Clear:
            value = obj[key]
            if unlisted is not None and type(value) in (dict, list):
                _mask_nested(value, plan, run, masked)
            continue
        _apply_op(obj, key, fop.operator, fop.label, run)
        by_rule[fop.rule_id] += 1
        masked.add(key)


def _mask_nested(node: Any, plan: Plan, run: MaskRun, masked: set[str]) -> None:
    if type(node) is dict:
        _mask_object(node, plan, run, masked)
    elif type(node) is list:
        for v in node:
            _mask_nested(v, plan, run, masked)


def mask_records(doc: Any, plan: Plan, run: MaskRun, keyring: KeyRing | None,
                 summary: MaskingSummary | None) -> set[str]:
    """Mask `doc` in place with `plan`; with a summary, also record what was disclosed: the fields
    present and left clear, and keyed references of the data subjects (read before masking)."""
    masked: set[str] = set()
    acts = bool(plan.fields) or plan.unlisted is not None
    present: set[str] = set()
    refs: set[str] = set()
    subjects = plan.subject_keys
    by_rule = run.by_rule
    for walker, parts in zip(plan.paths.metadata, plan.paths.parts, strict=True):
        for record in walker.nodes(doc):
            if type(record) is not dict:
                continue
            if summary is not None:
                present.update(record)
                if keyring is not None and subjects:
                    ref = patient_ref(record, plan.subjects, keyring)
                    if ref is not None:
                        refs.add(ref)
            if acts:
                _mask_object(record, plan, run, masked, parts)
    docs_clear = False
    if summary is not None:
        doc_masked = any(s.label == "DOCUMENT" for s in plan.other_steps)
        docs_clear = not doc_masked and any(
            v is not None for w in plan.paths.documents for v in w.nodes(doc)
        )
    for step in plan.other_steps:
        n = 0
        for container, key in list(step.walker.locations(doc)):
            # Counted when something was masked: a note with no identifier in it is not "masked".
            n += _apply_op(container, key, step.operator, step.label, run)
        if n:
            by_rule[step.rule_id] += n
    if summary is not None:
        disclosed = sorted(present - masked)
        if docs_clear:
            disclosed.append("#document")
        summary.fields_disclosed = disclosed
        summary.subject_refs = sorted(refs)
    return masked


def patient_ref(record: dict[str, Any], subjects: Sequence[str], keyring: KeyRing) -> str | None:
    """One keyed reference per record: its first `subjects:` field (any spelling) that holds a value.

    One patient must count once in the accounting of disclosures: a reference per identifier field
    (MRN and name) would count every patient twice. The first listed field is the patient's primary
    identifier, the one `report disclosures --subject` is given; later ones stand in when it is absent."""
    rank = {field_key(f): i for i, f in enumerate(subjects)}
    best: tuple[int, Any] | None = None
    for k, v in record.items():
        i = rank.get(field_key(k))
        if i is not None and v is not None and v != "" and (best is None or i < best[0]):
            best = (i, v)
    return keyring.subject_ref(best[1]) if best is not None else None


def mask_error_body(doc: Any, rules: Iterable[Rule], run: MaskRun) -> None:
    """Error bodies have no record layout: mask named fields wherever they sit and scan every string.

    Backends echo values in error messages ("no record with mrn 1234567"); error bodies are small,
    so walking all of it is cheap here, unlike on a record response."""
    fields: dict[str, Rule] = {}
    for rule in rules:
        for f in rule.fields:
            fields.setdefault(f, rule)

    def visit(node: Any) -> Any:
        if type(node) is dict:
            for k in list(node):
                rule = fields.get(k)
                if rule is not None:
                    new = rule.operator.apply(node[k], k.upper(), run)
                    run.by_rule[rule.id] += 1
                    if new is DROP:
                        del node[k]
                    else:
                        node[k] = new
                else:
                    node[k] = visit(node[k])
            return node
        if type(node) is list:
            for i, v in enumerate(node):
                node[i] = visit(v)
            return node
        if type(node) is str:
            return scan_text(node, run)
        return node

    visit(doc)


def scan_text(text: str, run: MaskRun) -> str:
    def repl(span: Any, found: str) -> str:
        run.count_type(span.type)
        run.by_rule["error-body-detect"] += 1
        return f"[{span.type}]"

    out, _ = run.detector.replace(text, repl)
    return out


# -- requests ----------------------------------------------------------------------------------------


def detokenize(doc: Any, walkers: Iterable[Walker], keyring: KeyRing | None) -> int:
    """Turn tokens at the given request paths back into values; returns how many.

    Raises TokenError for a token the gateway cannot open (unknown key id, altered)."""
    count = 0

    def restore(value: Any) -> Any:
        nonlocal count
        if type(value) is str and "tok_" in value:
            whole = TOKEN_RE.fullmatch(value)
            if keyring is None:
                raise TokenError("this gateway holds no token key")
            if whole:
                count += 1
                return keyring.detokenize_match(whole.group(1), whole.group(2), whole.group(3))

            def sub(m: Any) -> str:
                nonlocal count
                count += 1
                plain = keyring.detokenize_match(m.group(1), m.group(2), m.group(3))
                return plain if isinstance(plain, str) else orjson.dumps(plain).decode()

            return TOKEN_RE.sub(sub, value)
        if type(value) is list:
            return [restore(v) for v in value]
        if type(value) is dict:
            return {k: restore(v) for k, v in value.items()}
        return value

    for w in walkers:
        for container, key in list(w.locations(doc)):
            container[key] = restore(container[key])
    return count


# Request scalars that carry no PHI and help an auditor read what was asked.
_SAFE_SCALARS = frozenset(
    {"limit", "n_results", "offset", "top_k", "topK", "k", "include", "read_level", "with_payload",
     "with_vector", "with_vectors", "get_or_create", "namespace", "size", "from", "exact"}
)


def request_summary(doc: Any, filter_walkers: Iterable[Walker], keyring: KeyRing | None) -> dict[str, Any]:
    """A PHI-free description of a request body for the audit: keys, list sizes, the filter shape
    with every value replaced by a keyed reference (so two requests for the same MRN correlate
    without the MRN being stored)."""
    if not isinstance(doc, dict):
        return {"type": type(doc).__name__, "count": len(doc) if isinstance(doc, list) else None}
    summary: dict[str, Any] = {"keys": sorted(doc)}
    counts = {k: len(v) for k, v in doc.items() if isinstance(v, list)}
    if counts:
        summary["counts"] = counts
    scalars = {k: v for k, v in doc.items() if k in _SAFE_SCALARS and _is_safe_scalar(v)}
    if scalars:
        summary["params"] = scalars
    filters: dict[str, Any] = {}
    for w in filter_walkers:
        for container, key in w.locations(doc):
            if container[key] is not None:
                filters[w.text] = _mask_values(container[key], keyring)
    if filters:
        summary["filters"] = filters
    return summary


def _is_safe_scalar(v: Any) -> bool:
    if isinstance(v, bool | int | float) or v is None:
        return True
    return isinstance(v, list) and all(isinstance(x, str) and len(x) < 40 for x in v)


def _mask_values(node: Any, keyring: KeyRing | None) -> Any:
    if isinstance(node, dict):
        # Keys of a filter are field names and operators ($eq, $and), not values.
        return {str(k)[:64]: _mask_values(v, keyring) for k, v in node.items()}
    if isinstance(node, list):
        return [_mask_values(v, keyring) for v in node]
    return value_ref(node, keyring)


def value_ref(value: Any, keyring: KeyRing | None) -> str:
    if keyring is None:
        return "[value]"
    digest = hmac.new(b"request-summary", orjson.dumps(value), hashlib.sha256).hexdigest()
    # Keyed through the subject-ref key so the same value in two requests gives the same ref.
    return "v:" + keyring.subject_ref(digest)[-12:]
