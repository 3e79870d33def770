"""What a hold binds to (a hash of the exact request) and what a reviewer may see of it (no PHI)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import orjson

# Numbers a reviewer needs to judge a bulk read, under keys that never carry a patient value.
SAFE_NUMBER_KEYS = frozenset({"limit", "offset", "n_results", "k", "top_k", "topK", "size", "page_size"})
MAX_KEYS = 30


def request_hash(method: str, path: str, body: bytes) -> str:
    """sha256 over method, path (as forwarded, query included) and raw body, length-prefixed so that
    no two different requests share an encoding (a body byte cannot pass for a path byte)."""
    h = hashlib.sha256()
    for part in (method.upper().encode(), path.encode(), body):
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.hexdigest()


def _shape(key: str | None, value: Any, depth: int) -> Any:
    if isinstance(value, bool) or value is None:
        return value  # a flag, never a patient value
    if isinstance(value, int | float):
        return value if key in SAFE_NUMBER_KEYS else {"type": "number"}
    if isinstance(value, str):
        return {"type": "string", "length": len(value)}
    if isinstance(value, list):
        return {"type": "array", "length": len(value)}
    if isinstance(value, dict):
        keys = [str(k) for k in list(value)[:MAX_KEYS]]
        if depth == 0:
            return {k: _shape(k, value[k], depth + 1) for k in keys}
        # Nested objects (a `where` filter) show their keys (field names), never their values.
        return {"type": "object", "keys": keys}
    return {"type": type(value).__name__}


def masked_summary(body: bytes, content_type: str | None, facts: Mapping[str, Any] | None,
                   masked: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A PHI-free description of a request body for reviewers.

    Prefer the masking addon's summary when there is one; otherwise keys, counts and types only:
    document text, ids, metadata values and filter values never reach the console, the webhook or
    the store (the store and its copies are not covered by the ledger's access controls).
    """
    if masked is not None:
        return {"masked": dict(masked)}
    out: dict[str, Any] = {"bytes": len(body)}
    if facts:
        out["facts"] = {k: v for k, v in facts.items()
                        if isinstance(v, bool) or (isinstance(v, int) and k in SAFE_NUMBER_KEYS)
                        or (isinstance(v, int) and k.endswith(("_count", "count")))}
    if not body:
        return out
    if content_type and "json" not in content_type.lower():
        out["content_type"] = content_type.split(";")[0].strip()
        return out
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        out["body"] = {"type": "unparsed"}
        return out
    out["body"] = _shape(None, parsed, 0)
    return out


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def estimate_records(operation: str | None, facts: Mapping[str, Any]) -> str:
    """How many records the request would release, from the request facts the profile extracts
    (ids named, limits, results per query), in words a reviewer reads. The backend is not asked:
    an estimate from the request alone is what is known before anything is released."""
    ids, limit = _int(facts.get("ids_count")), _int(facts.get("limit"))
    n, queries = _int(facts.get("n_results")), _int(facts.get("query_count") or facts.get("search_count")) or 1
    filtered = bool(facts.get("has_filter"))
    if facts.get("has_ids") and ids is not None:
        return f"{ids} record(s), named by id"
    if n is not None:
        return f"up to {n * queries} record(s) ({queries} quer{'y' if queries == 1 else 'ies'} x {n} results)"
    if limit is not None:
        return f"up to {limit} record(s)" + (" matching a filter" if filtered else "")
    if operation in ("write", "delete", "schema-write", "drop", "admin"):
        return "no records returned (a change to the collection)" if not filtered else "records matching a filter"
    return "every record matching a filter (no limit)" if filtered else "every record in the collection (no limit)"
