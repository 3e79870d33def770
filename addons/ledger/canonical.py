"""The canonical encoding of a ledger record: the exact bytes a Merkle leaf commits to.

JSON with sorted keys and no whitespace (orjson), one key per schema column plus `record` (the
record kind). Values are normalised by column type, so the same record always encodes to the same
bytes and DuckDB can parse every field back into its typed column (`verify` compares them).
Payloads (recorded bodies) are never in the entry, only their SHA-256, so purging a recording
leaves every leaf verifiable.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import orjson

from addons.ledger import schema


class RecordError(ValueError):
    """A record that does not fit its table (unknown kind or column, wrong type)."""


_EPOCH = dt.datetime(1970, 1, 1)


def iso_ts(value: float | dt.datetime | str) -> str:
    """UTC timestamp with microseconds, no zone suffix (DuckDB TIMESTAMP is naive UTC)."""
    if isinstance(value, str):
        # Re-parse so every stored timestamp has one spelling.
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        value = parsed if parsed.tzinfo is None else parsed.astimezone(dt.UTC).replace(tzinfo=None)
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        return value.isoformat(timespec="microseconds")
    # Integer microseconds first: float seconds -> datetime would round differently per path.
    return (_EPOCH + dt.timedelta(microseconds=round(value * 1_000_000))).isoformat(timespec="microseconds")


def _norm(table: str, column: str, ctype: str, value: Any) -> Any:
    if value is None:
        return None
    try:
        if ctype == "TIMESTAMP":
            return iso_ts(value)
        if ctype == "VARCHAR[]":
            if isinstance(value, str | bytes):
                raise TypeError("a list of strings, not one string")
            return [str(v) for v in value]
        if ctype == "VARCHAR":
            return str(value)
        if ctype in ("BIGINT", "INTEGER"):
            if isinstance(value, bool):
                raise TypeError("an integer, not a boolean")
            return int(value)
        if ctype == "DOUBLE":
            return float(value)
        if ctype == "BOOLEAN":
            return bool(value)
        if ctype == "JSON":
            # Round-trip once so the nested object is plain JSON data (no tuples, no enums).
            return orjson.loads(orjson.dumps(value, option=orjson.OPT_SORT_KEYS))
    except (TypeError, ValueError, orjson.JSONEncodeError) as exc:
        raise RecordError(f"{table}.{column}: bad value of type {type(value).__name__} ({exc})") from exc
    raise RecordError(f"{table}.{column}: unsupported column type {ctype}")


class _Plan:
    """Per record kind: the table, a template with every column, and the columns that need work."""

    __slots__ = ("known", "lists", "table", "template", "timestamps", "types")

    def __init__(self, kind: str) -> None:
        self.table = table_for(kind)
        cols = schema.entry_columns(self.table)
        self.types = dict(cols)
        self.template: dict[str, Any] = {"record": kind, **dict.fromkeys(self.types)}
        self.known = frozenset(self.types)
        self.timestamps = tuple(c for c, t in cols if t == "TIMESTAMP")
        self.lists = tuple(c for c, t in cols if t == "VARCHAR[]")


_PLANS: dict[str, _Plan] = {}


def table_for(kind: str) -> str:
    table = schema.LEAF_TABLES.get(kind)
    if table is None:
        raise RecordError(f"unknown record kind {kind!r}; expected one of {sorted(schema.LEAF_TABLES)}")
    return table


def encode(kind: str, seq: int, row: Mapping[str, Any]) -> bytes:
    """Canonical entry bytes for record `kind` at position `seq` (row keys = the table's columns).

    Scalars are taken as given (orjson refuses anything that is not JSON; `verify` compares each typed
    column with what its entry says); timestamps and string lists are normalised to one spelling.
    """
    plan = _PLANS.get(kind) or _PLANS.setdefault(kind, _Plan(kind))
    unknown = row.keys() - plan.known
    if unknown:
        raise RecordError(f"{plan.table}: unknown columns {sorted(unknown)}")
    out = {**plan.template, **row, "seq": seq}
    for column in plan.timestamps:
        value = out[column]
        if value is not None:
            out[column] = _norm(plan.table, column, "TIMESTAMP", value)
    for column in plan.lists:
        value = out[column]
        if value is not None and (type(value) is not list or not all(type(v) is str for v in value)):
            out[column] = _norm(plan.table, column, "VARCHAR[]", value)
    try:
        # OPT_SORT_KEYS sorts nested JSON objects too: one spelling for every JSON column.
        return orjson.dumps(out, option=orjson.OPT_SORT_KEYS)
    except (TypeError, orjson.JSONEncodeError) as exc:
        raise RecordError(f"{plan.table}: a value cannot be encoded as JSON ({exc})") from exc
