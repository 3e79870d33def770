"""Accounting of disclosures (45 CFR 164.528) for one patient, from keyed subject references.

The ledger never stores a patient's identifier: the masking addon records, per response, HMAC
references of the data subjects it disclosed (addons.phi.tokens: `ref_<key id>_<hex>`). Here the
identifier given on the command line is turned into its reference under every key the operator
holds (so disclosures recorded before a key rotation are found too) and looked up.

Every response that reached the caller with identified PHI counts, whatever released it (a policy
allow, an approved hold, an approver's grant, break-glass): `create_view` defines that set once, and
the packet's disclosures section, its control table and this accounting all read it.

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
    released_by: str  # policy allow, approved hold (approved by ...), grant (granted by ...), break-glass
    request_id: str
    node_seq: str


def lookback_start(as_of: dt.datetime, years: int = LOOKBACK_YEARS) -> dt.datetime:
    try:
        return as_of.replace(year=as_of.year - years)
    except ValueError:  # 29 February
        return as_of.replace(year=as_of.year - years, day=28)


# What "disclosed identified PHI" means, once for the packet, the control table and the per-patient
# accounting: a response that named at least one data subject and reached the caller (not a refusal,
# not a gateway error), whatever released it: a policy allow, an approved hold, an approver's grant or
# break-glass. Holds are recorded with decision 'hold' and the status the backend answered.
RELEASED = ("len(coalesce(subject_refs, [])) > 0 AND decision IN ('allow', 'hold') "
            "AND (status IS NULL OR status < 400)")
# How the response was released, from the event and the approval record of its hold.
_RELEASED_BY = """CASE WHEN d.break_glass OR a.kind = 'break_glass' THEN 'break-glass'
                       WHEN d.hold_id IS NULL THEN 'policy allow'
                       WHEN a.kind = 'grant' THEN 'grant'
                       ELSE 'approved hold' END"""
NOT_STATED = "not stated"


def _policy_purposes(con: duckdb.DuckDBPyConnection) -> None:
    """A temp table: each policy.yaml version (sha256, effective_from) with its rules' declared purposes."""
    versions = con.execute(
        """SELECT sha256, min(effective_from), any_value(content) FROM rule_versions
           WHERE path = 'policy.yaml' OR path LIKE '%/policy.yaml' GROUP BY sha256"""
    ).fetchall()
    con.execute("""CREATE OR REPLACE TEMP TABLE _policy_purposes
                   (sha256 VARCHAR, effective_from TIMESTAMP, purposes STRUCT(rule_id VARCHAR, purpose VARCHAR)[])""")
    for sha, eff, content in versions:
        try:
            doc = parse_yaml(Path("policy.yaml"), str(content))
        except ConfigError:
            doc = None
        rules = doc.get("rules", []) if isinstance(doc, dict) else []
        declared = [{"rule_id": str(r.get("id")), "purpose": r["purpose"]} for r in rules
                    if isinstance(r, dict) and isinstance(r.get("purpose"), str)]
        con.execute("INSERT INTO _policy_purposes VALUES (?, ?, ?)", [sha, eff, declared])


def create_view(con: duckdb.DuckDBPyConnection, source: str = "events", name: str = "disclosed") -> None:
    """Create temp view `name`: the released disclosures among `source`'s events (a table or view
    with the events' columns), with `released_by`, `approved_by` and the resolved `purpose`.

    Purpose: the caller's purpose-of-use claim or header as recorded, else the purpose the deciding
    policy rule declares in the policy.yaml version in force at that moment, else "not stated"; the
    same words wherever a disclosure is shown."""
    _policy_purposes(con)
    con.execute(f"""
        CREATE OR REPLACE TEMP VIEW {name} AS
        WITH apv AS (
          SELECT hold_id, arg_max(kind, seq) AS kind, list_distinct(flatten(list(approvers))) AS approvers
          FROM approvals WHERE hold_id IS NOT NULL GROUP BY hold_id),
        rel AS (SELECT * FROM {source} WHERE {RELEASED})
        SELECT d.* REPLACE (coalesce(
                 d.purpose,
                 list_filter(list_transform(coalesce(d.rule_ids, []), lambda r:
                               list_filter(p.purposes, lambda x: x.rule_id = r)[1].purpose),
                             lambda x: x IS NOT NULL)[1] || ' (declared by rule)',
                 '{NOT_STATED}') AS purpose),
               {_RELEASED_BY} AS released_by,
               coalesce(a.approvers, []) AS approved_by
        FROM rel d
        ASOF LEFT JOIN _policy_purposes p ON d.ts >= p.effective_from
        LEFT JOIN apv a ON a.hold_id = d.hold_id
    """)  # noqa: S608 - `source` and `name` are this package's own view names


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
    create_view(con, "events", "_accounting")
    rows = con.execute(
        """SELECT ts, subject, name, email, client_id, operation, collection, fields_disclosed, masking,
                  purpose, released_by, approved_by, request_id, node_id, seq
           FROM _accounting
           WHERE list_has_any(subject_refs, ?::VARCHAR[]) AND ts >= ? AND ts <= ?
           ORDER BY ts, node_id, seq""",
        [refs, lookback_start(as_of), as_of],
    ).fetchall()
    out = []
    for ts, subject, name, email, client, op, coll, fields, masking, purpose, by, approvers, rid, node, seq in rows:
        who = subject or "(unknown)"
        if name or email:
            who += f" ({', '.join(x for x in (name, email) if x)})"
        verb = "granted" if by == "grant" else "approved"
        released = by + (f" ({verb} by {', '.join(approvers)})" if approvers and by != "break-glass" else "")
        out.append(Disclosure(
            date=ts, recipient=who, client=client or "—",
            description=_description(fields, masking, op, coll), purpose=purpose, released_by=released,
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
            f"   released by: {d.released_by}\n"
            f"   audit event: {d.node_seq} (request {d.request_id})\n"
        )
    return "\n".join(lines)


def as_json(items: Sequence[Disclosure]) -> str:
    return json.dumps([{**asdict(d), "date": d.date.isoformat() + "Z"} for d in items], indent=2) + "\n"


def as_csv(items: Sequence[Disclosure]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["date", "recipient", "client", "description", "purpose", "released_by", "request_id",
                "audit_event"])
    for d in items:
        w.writerow([d.date.isoformat() + "Z", d.recipient, d.client, d.description, d.purpose, d.released_by,
                    d.request_id, d.node_seq])
    return buf.getvalue()
