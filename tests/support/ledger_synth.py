"""A synthetic audit ledger with the ledger's schema, for report tests and the report benchmark.

Generation is columnar DuckDB SQL over `range()` (no Python row objects), so a million events take
a few seconds. Every pseudo-random choice derives from `hash(i, salt)`, so a given (count, seed)
always yields the same ledger and tests can recompute the numbers they expect independently.

`create_schema` writes the same tables the ledger holds (see the ledger schema's "Audit event
schema"); `add_event` and friends insert one hand-made row for small, exact tests.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb

from addons.ledger import schema

USERS = 40
COLLECTIONS = ("patients", "notes", "claims", "labs", "imaging", "scheduling")
OPERATIONS = ("search", "get", "search", "search", "get", "write", "delete", "export")
ROLES = ("clinician", "analyst", "billing", "support", "researcher")
DENY_RULES = ("deny-export-analyst", "deny-delete", "default-deny", "deny-unfiltered-search")
HOLD_RULES = ("hold-bulk-export", "hold-delete-patients")
PHI_TYPES = ("PERSON", "SSN", "PHONE", "EMAIL", "MRN", "DATE", "ADDRESS")
FIELDS = ("patient_name", "dob", "mrn", "phone", "diagnosis")

POLICY_YAML = """rules:
  - id: allow-search
    roles: [clinician]
    operations: [search]
    action: allow
    purpose: treatment
  - id: allow-get
    operations: [get]
    action: allow
    purpose: healthcare operations
"""

MASKING_YAML = """version: 2
roles:
  clinician: {default: clear}
  "*": {default: redact}
subjects: [mrn, patient_name]
rules:
  - id: clinicians-see-names
    roles: [clinician]
    fields: [ssn]
    operator: redact
  - id: analysts-tokenize
    roles: [analyst, researcher]
    fields: [mrn, patient_name, ssn]
    operator: tokenize
  - id: billing-partial
    roles: [billing]
    operations: [search, get]
    fields: [phone, ssn]
    operator: partial
  - id: everyone-else-redact
    roles_except: [clinician]
    fields: [mrn, patient_name, phone, dob, ssn]
    documents: true
    operator: redact
"""


def create_schema(con: duckdb.DuckDBPyConnection) -> None:
    """The ledger's own tables (the ledger's migrations), so the columns are exactly the real ones."""
    schema.apply_migrations(con)


def _sql_list(values: Sequence[str]) -> str:
    return "[" + ", ".join("'" + v.replace("'", "''") + "'" for v in values) + "]"


def generate(
    path: str | Path,
    events: int,
    start: dt.datetime,
    end: dt.datetime,
    seed: int = 7,
) -> None:
    """Write a ledger with `events` events spread evenly over [start, end) into the DuckDB file."""
    span_us = int((end - start).total_seconds() * 1_000_000)
    step = span_us / max(events, 1)
    con = duckdb.connect(str(path))
    try:
        con.execute("SET enable_progress_bar = false")
        create_schema(con)
        # h(k) is a per-row, per-purpose pseudo-random number in [0, 1000).
        h = f"(hash(i, {seed}, {{k}}) % 1000)::BIGINT"
        decision = (
            f"CASE WHEN {h.format(k=1)} < 820 THEN 'allow' WHEN {h.format(k=1)} < 930 THEN 'deny' "
            f"WHEN {h.format(k=1)} < 990 THEN 'hold' ELSE 'error' END"
        )
        ts0 = f"TIMESTAMP '{start:%Y-%m-%d %H:%M:%S}'"
        reads = "decision = 'allow' AND op IN ('search', 'get', 'export')"
        con.execute(
            f"""
            INSERT INTO events BY NAME
            WITH base AS (
              SELECT i, {decision} AS decision,
                     {h.format(k=2)} % {USERS} AS u,
                     {_sql_list(OPERATIONS)}[1 + {h.format(k=3)} % {len(OPERATIONS)}] AS op
              FROM range({events}) t(i)
            )
            SELECT
              i + 1 AS seq,
              {ts0} + to_microseconds(CAST(i * {step} AS BIGINT)) AS ts,
              'node-' || (i % 2) AS node_id, md5(i::VARCHAR || 'r') AS request_id, 'sess-' || (i // 50) AS session_id,
              'user-' || u AS subject, 'User ' || u AS name, 'user' || u || '@example.org' AS email,
              'agent-' || (u % 5) AS client_id,
              [{_sql_list(ROLES)}[1 + u % {len(ROLES)}]] AS roles,
              '10.0.0.' || (u % 250) AS client_addr, 'chromadb-python/1.0' AS user_agent, 'chroma' AS backend,
              op AS operation,
              {_sql_list(COLLECTIONS)}[1 + {h.format(k=4)} % {len(COLLECTIONS)}] AS collection,
              'POST' AS method,
              '/api/v2/tenants/t/databases/d/collections/c/' || op AS path,
              '{{"n_results": 5}}'::JSON AS request_summary,
              CASE decision WHEN 'allow' THEN 200 WHEN 'deny' THEN 403 WHEN 'hold' THEN 202 ELSE 503 END AS status,
              decision,
              CASE decision
                WHEN 'allow' THEN ['allow-' || op]
                WHEN 'deny' THEN [{_sql_list(DENY_RULES)}[1 + {h.format(k=5)} % {len(DENY_RULES)}]]
                WHEN 'hold' THEN [{_sql_list(HOLD_RULES)}[1 + {h.format(k=5)} % {len(HOLD_RULES)}]]
                ELSE []::VARCHAR[] END AS rule_ids,
              CASE decision WHEN 'allow' THEN NULL WHEN 'deny' THEN 'policy'
                WHEN 'hold' THEN 'approval' ELSE 'audit' END AS stage,
              CASE WHEN {reads} THEN
                json_object('by_rule', json_object('mask-' || op, 1 + {h.format(k=6)} % 4),
                            'by_type', json_object(
                              {_sql_list(PHI_TYPES)}[1 + {h.format(k=7)} % {len(PHI_TYPES)}],
                              1 + {h.format(k=6)} % 4))
                ELSE '{{"by_rule": {{}}, "by_type": {{}}}}'::JSON END AS masking,
              CASE WHEN {reads} THEN [{_sql_list(FIELDS)}[1 + {h.format(k=8)} % {len(FIELDS)}]]
                   ELSE []::VARCHAR[] END AS fields_disclosed,
              CASE WHEN {reads} THEN ['sref-' || ({h.format(k=9)} % 500)] ELSE []::VARCHAR[] END AS subject_refs,
              CASE WHEN {h.format(k=10)} < 300 THEN 'treatment' ELSE NULL END AS purpose,
              CASE WHEN decision = 'hold' THEN 'hold-' || i ELSE NULL END AS hold_id,
              {h.format(k=11)} = 0 AND decision = 'allow' AS break_glass,
              200 + {h.format(k=12)} AS bytes_in, 500 + 10 * {h.format(k=12)} AS bytes_out,
              1.0 + {h.format(k=13)} / 100.0 AS latency_ms,
              CASE WHEN decision = 'error' THEN 'audit store unavailable' ELSE NULL END AS error,
              '{{}}' AS entry, md5(i::VARCHAR || 'leaf') AS leaf_hash
            FROM base
            """
        )
        con.execute(
            f"""
            INSERT INTO approvals BY NAME
            SELECT seq, ts, node_id, hold_id, 'hold' AS kind, subject AS requester,
                   CASE WHEN {h.format(k=14)} < 800 THEN ['privacy-officer'] ELSE []::VARCHAR[] END AS approvers,
                   rule_ids[1] AS rule_id, operation, collection, ts AS requested_at,
                   ts + to_microseconds(CAST((5 + {h.format(k=15)} * 3) * 1000000 AS BIGINT)) AS decided_at,
                   CASE WHEN {h.format(k=14)} < 600 THEN 'approved' WHEN {h.format(k=14)} < 800 THEN 'denied'
                        ELSE 'timeout' END AS outcome,
                   'synthetic request ' || seq AS justification, md5(hold_id) AS request_hash,
                   '{{}}' AS entry, md5(hold_id) AS leaf_hash
            FROM (SELECT *, seq - 1 AS i FROM events WHERE decision = 'hold')
            """
        )
        con.execute(
            """
            INSERT INTO approvals BY NAME
            SELECT seq, ts, node_id, 'bg-' || seq AS hold_id, 'break_glass' AS kind, subject AS requester,
                   []::VARCHAR[] AS approvers, 'break-glass' AS rule_id, operation, collection,
                   ts AS requested_at, ts + INTERVAL 1 HOUR AS decided_at, 'break_glass' AS outcome,
                   'emergency: patient in ED, seq ' || seq AS justification, md5('bg' || seq) AS request_hash,
                   '{}' AS entry, md5('bg' || seq) AS leaf_hash
            FROM events WHERE break_glass
            """
        )
        n_fail = max(events // 100, 0)
        fstep = span_us / max(n_fail, 1)
        con.execute(
            f"""
            INSERT INTO auth_failures BY NAME
            SELECT i + 1 AS seq, {ts0} + to_microseconds(CAST(i * {fstep} AS BIGINT)) AS ts,
                   'node-0' AS node_id, md5(i::VARCHAR || 'af') AS request_id, '10.9.0.' || (i % 20) AS client_addr,
                   ['expired', 'bad_signature', 'wrong_audience', 'missing_token'][1 + i % 4] AS reason,
                   CASE WHEN i % 4 = 3 THEN NULL ELSE 'user-' || (i % 50) END AS claimed_subject,
                   '{{}}' AS entry, md5(i::VARCHAR || 'af') AS leaf_hash
            FROM range({n_fail}) t(i)
            """
        )
        mid = start + (end - start) / 2
        for name, content in (("rules/policy.yaml", POLICY_YAML), ("rules/masking.yaml", MASKING_YAML)):
            add_rule_version(con, name, content + "# v1\n", start - dt.timedelta(days=30), mid)
            add_rule_version(con, name, content + "# v2\n", mid, None)
        if events:
            con.execute(
                "INSERT INTO checkpoints BY NAME SELECT node_id, 'phigate/' || node_id AS origin, max(seq) AS size, "
                "md5('root') AS root, max(ts) AS ts, 'synth-key' AS key_id, 'c2lnbmF0dXJl' AS signature "
                "FROM events GROUP BY node_id"
            )
        for k in range(min(3, events)):
            add_incident(con, start + (end - start) * (k + 1) / 4, "fail_closed", f"synthetic incident {k}")
    finally:
        con.close()


def add_event(con: duckdb.DuckDBPyConnection, **fields: Any) -> None:
    """Insert one event; unspecified columns take plausible defaults."""
    row: dict[str, Any] = {
        "seq": (con.execute("SELECT coalesce(max(seq), 0) + 1 FROM events").fetchone() or (1,))[0],
        "ts": dt.datetime(2026, 1, 1, 12, 0, 0),
        "node_id": "node-0",
        "request_id": "req",
        "session_id": "sess",
        "subject": "alice",
        "name": "Alice",
        "email": "alice@example.org",
        "client_id": "agent",
        "roles": ["clinician"],
        "client_addr": "127.0.0.1",
        "user_agent": "test",
        "backend": "chroma",
        "operation": "search",
        "collection": "patients",
        "method": "POST",
        "path": "/api/v2/x",
        "request_summary": {},
        "status": 200,
        "decision": "allow",
        "rule_ids": ["allow-search"],
        "stage": None,
        "masking": {"by_rule": {}, "by_type": {}},
        "fields_disclosed": [],
        "subject_refs": [],
        "purpose": None,
        "hold_id": None,
        "break_glass": False,
        "bytes_in": 100,
        "bytes_out": 1000,
        "latency_ms": 2.5,
        "error": None,
        "entry": "{}",
        "leaf_hash": "00",
    }
    unknown = set(fields) - set(row)
    if unknown:
        raise KeyError(f"not event columns: {sorted(unknown)}")
    row.update(fields)
    for key in ("request_summary", "masking"):
        row[key] = json.dumps(row[key])
    cols = ", ".join(row)
    marks = ", ".join("?" for _ in row)
    con.execute(f"INSERT INTO events ({cols}) VALUES ({marks})", list(row.values()))


def _insert(con: duckdb.DuckDBPyConnection, table: str, row: dict[str, Any]) -> None:
    # Leaf columns the real ledger fills itself; values here are placeholders (not verifiable).
    row = {"seq": (con.execute(f"SELECT coalesce(max(seq), 0) + 1 FROM {table}").fetchone() or (1,))[0],
           "entry": "{}", "leaf_hash": "00", **row}
    cols = ", ".join(row)
    marks = ", ".join("?" for _ in row)
    con.execute(f"INSERT INTO {table} ({cols}) VALUES ({marks})", list(row.values()))


def add_approval(con: duckdb.DuckDBPyConnection, **fields: Any) -> None:
    row: dict[str, Any] = {
        "hold_id": "h1", "kind": "hold", "requester": "alice", "approvers": ["bob"], "rule_id": "hold-x",
        "operation": "delete", "collection": "patients", "requested_at": dt.datetime(2026, 1, 1, 12),
        "decided_at": dt.datetime(2026, 1, 1, 12, 1), "outcome": "approved", "justification": "cleanup",
        "request_hash": "ab",
    }
    row.update(fields)
    _insert(con, "approvals", row)


def add_auth_failure(con: duckdb.DuckDBPyConnection, **fields: Any) -> None:
    row: dict[str, Any] = {
        "ts": dt.datetime(2026, 1, 1, 12), "node_id": "node-0", "request_id": "r", "client_addr": "127.0.0.1",
        "reason": "expired", "claimed_subject": None,
    }
    row.update(fields)
    _insert(con, "auth_failures", row)


def add_rule_version(
    con: duckdb.DuckDBPyConnection, path: str, content: str, effective_from: dt.datetime,
    effective_to: dt.datetime | None,
) -> None:
    import hashlib

    _insert(con, "rule_versions", {
        "path": path, "sha256": hashlib.sha256(content.encode()).hexdigest(), "content": content,
        "effective_from": effective_from, "effective_to": effective_to,
    })


def add_incident(con: duckdb.DuckDBPyConnection, ts: dt.datetime, kind: str, detail: str) -> None:
    _insert(con, "incidents", {"ts": ts, "node_id": "node-0", "kind": kind, "detail": detail})


def empty(path: str | Path) -> None:
    con = duckdb.connect(str(path))
    try:
        create_schema(con)
    finally:
        con.close()


def add_configuration(con: duckdb.DuckDBPyConnection, ts: dt.datetime, kind: str, name: str,
                      content: dict[str, Any], node_id: str = "node-0") -> None:
    """A `configuration` record: gateway_settings, tls_certificate or rule_change."""
    _insert(con, "configuration", {"ts": ts, "node_id": node_id, "kind": kind, "name": name,
                                   "content": json.dumps(content)})
