"""Accounting of disclosures (45 CFR 164.528) for one patient, from keyed subject references.

The ledger never stores a patient's identifier: the masking addon records, per response, HMAC
references of the data subjects it disclosed (addons.phi.tokens: `ref_<key id>_<hex>`). Here the
identifier given on the command line is turned into its reference under every key the operator
holds (so disclosures recorded before a key rotation are found too) and looked up.

Each disclosure lists the four 164.528(b)(2) elements: date, recipient (user and client), a brief
description of the PHI (fields returned unmasked, with the operation and collection), and purpose
(the caller's purpose-of-use claim or header as recorded, else the deciding policy rule's declared
purpose, read from the policy.yaml version in force at that moment).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import duckdb

from addons.config.rulefiles import ConfigError, parse_yaml

LOOKBACK_YEARS = 6  # 164.528(a): disclosures in the six years before the request


@dataclass(frozen=True, slots=True)
class Disclosure:
    date: dt.datetime
    recipient: str
    client: str
    description: str
    purpose: str
    request_id: str
    node_seq: str


def lookback_start(as_of: dt.datetime, years: int = LOOKBACK_YEARS) -> dt.datetime:
    try:
        return as_of.replace(year=as_of.year - years)
    except ValueError:  # 29 February
        return as_of.replace(year=as_of.year - years, day=28)


class _Purposes:
    """Declared purposes of policy rules, by policy version, each version parsed once."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self._versions = [
            (r[0], r[1], r[2]) for r in con.execute(
                """SELECT effective_from, sha256, content FROM rule_versions
                   WHERE path = 'policy.yaml' OR path LIKE '%/policy.yaml' ORDER BY effective_from"""
            ).fetchall()
        ]
        self._parsed: dict[str, dict[str, str]] = {}

    def _rules(self, sha: str, content: str) -> dict[str, str]:
        got = self._parsed.get(sha)
        if got is None:
            got = {}
            try:
                doc = parse_yaml(Path("policy.yaml"), content)
            except ConfigError:
                doc = None
            for rule in (doc or {}).get("rules", []) if isinstance(doc, dict) else []:
                if isinstance(rule, dict) and isinstance(rule.get("purpose"), str):
                    got[str(rule.get("id"))] = rule["purpose"]
            self._parsed[sha] = got
        return got

    def declared(self, at: dt.datetime, rule_ids: Sequence[str]) -> str | None:
        in_force = None
        for eff, sha, content in self._versions:
            if eff is not None and eff <= at:
                in_force = (sha, content)
        if in_force is None:
            return None
        rules = self._rules(*in_force)
        return next((rules[r] for r in rule_ids if r in rules), None)


def _description(fields: Sequence[str] | None, masking: Any, operation: str | None, collection: str | None) -> str:
    shown = ", ".join(f"{f} ({f.upper()})" for f in fields or []) or "no identifier field unmasked"
    by_type: dict[str, int] = {}
    if masking:
        doc = json.loads(masking) if isinstance(masking, str) else masking
        by_type = doc.get("by_type", {}) if isinstance(doc, dict) else {}
    masked = ", ".join(f"{k} x{v}" for k, v in sorted(by_type.items()))
    where = f"{operation or 'request'} on {collection or 'an unresolved collection'}"
    return f"{where}: returned unmasked: {shown}" + (f"; masked: {masked}" if masked else "")


def accounting(con: duckdb.DuckDBPyConnection, refs: Iterable[str], as_of: dt.datetime) -> list[Disclosure]:
    """Every response that disclosed the subject's PHI in the six years up to `as_of`, oldest first."""
    refs = list(refs)
    if not refs:
        raise ValueError("no subject reference to look up")
    rows = con.execute(
        """SELECT ts, subject, name, email, client_id, operation, collection, fields_disclosed, masking,
                  purpose, rule_ids, request_id, node_id, seq
           FROM events
           WHERE decision = 'allow' AND (status IS NULL OR status < 400)
             AND list_has_any(subject_refs, ?::VARCHAR[]) AND ts >= ? AND ts <= ?
           ORDER BY ts, node_id, seq""",
        [refs, lookback_start(as_of), as_of],
    ).fetchall()
    purposes = _Purposes(con)
    out = []
    for ts, subject, name, email, client, op, coll, fields, masking, purpose, rule_ids, rid, node, seq in rows:
        declared = None if purpose else purposes.declared(ts, rule_ids or [])
        who = subject or "(unknown)"
        if name or email:
            who += f" ({', '.join(x for x in (name, email) if x)})"
        out.append(Disclosure(
            date=ts, recipient=who, client=client or "—",
            description=_description(fields, masking, op, coll),
            purpose=purpose or (f"{declared} (declared by rule)" if declared else "not stated"),
            request_id=rid or "", node_seq=f"{node}:{seq}",
        ))
    return out


def as_text(items: Sequence[Disclosure], as_of: dt.datetime) -> str:
    head = (f"Accounting of disclosures (45 CFR 164.528), {lookback_start(as_of):%Y-%m-%d %H:%M} to "
            f"{as_of:%Y-%m-%d %H:%M} UTC: {len(items)} disclosure{'s' if len(items) != 1 else ''}\n")
    lines = [head]
    for i, d in enumerate(items, 1):
        lines.append(
            f"{i}. {d.date:%Y-%m-%d %H:%M:%S} UTC\n"
            f"   recipient:   {d.recipient}, client {d.client}\n"
            f"   PHI:         {d.description}\n"
            f"   purpose:     {d.purpose}\n"
            f"   audit event: {d.node_seq} (request {d.request_id})\n"
        )
    return "\n".join(lines)


def as_json(items: Sequence[Disclosure]) -> str:
    return json.dumps([{**asdict(d), "date": d.date.isoformat() + "Z"} for d in items], indent=2) + "\n"


def as_csv(items: Sequence[Disclosure]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["date", "recipient", "client", "description", "purpose", "request_id", "audit_event"])
    for d in items:
        w.writerow([d.date.isoformat() + "Z", d.recipient, d.client, d.description, d.purpose, d.request_id,
                    d.node_seq])
    return buf.getvalue()
