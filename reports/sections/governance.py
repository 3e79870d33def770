"""Policy versions in force (164.308(a)(4), 164.316(b)(2)(i)), audit configuration (164.312(b)),
incidents, and the reviews already recorded for the period (164.308(a)(1)(ii)(D))."""

# SQL here is built from this package's own fragments, table names and timestamps formatted from
# datetimes; no ledger value or user-supplied text is ever inlined.
# ruff: noqa: S608

from __future__ import annotations

from reports.model import Fact, Section
from reports.period import Period
from reports.tables import Collector, sql_str

UNATTRIBUTED = "unattributed"

# What each event field records, for the audit configuration section (the ledger's own schema is
# listed next to it, so a column added later shows up even before this text names it).
EVENT_FIELDS = {
    "seq": "position in the node's tamper-evident log",
    "ts": "time (UTC)",
    "node_id": "gateway node",
    "request_id": "request id (also returned to the client)",
    "session_id": "session (one caller's run)",
    "subject": "OIDC subject: the unique user (164.312(a)(2)(i))",
    "name": "user's name from the token",
    "email": "user's email from the token",
    "client_id": "OAuth client (agent, application)",
    "roles": "roles from the token",
    "client_addr": "client network address",
    "user_agent": "client software",
    "backend": "vector database kind",
    "operation": "classified operation (search, get, write, delete, ...)",
    "collection": "collection addressed",
    "method": "HTTP method",
    "path": "canonical request path",
    "request_summary": "summary of the request, PHI masked (never the raw body)",
    "status": "HTTP status returned",
    "decision": "allow, deny, hold or error",
    "rule_ids": "policy rules that decided",
    "stage": "where a refusal happened",
    "masking": "masking counts by rule and identifier type",
    "fields_disclosed": "fields returned unmasked",
    "subject_refs": "keyed references of the data subjects disclosed (never identifiers)",
    "purpose": "purpose of use",
    "hold_id": "approval hold",
    "break_glass": "emergency access used",
    "bytes_in": "request size",
    "bytes_out": "response size",
    "latency_ms": "gateway latency",
    "error": "error text (no PHI)",
    "payload_sha256": "hash of the encrypted session recording",
    "entry": "canonical bytes hashed into the Merkle tree",
    "leaf_hash": "Merkle leaf hash",
}


def policy_versions(col: Collector, period: Period) -> Section:
    start, end = period.sql_bounds()
    in_force = f"effective_from < {end} AND (effective_to IS NULL OR effective_to > {start})"
    s = Section("policy", 0, "Policy versions in force")
    s.intro = (
        "Every version of every rule file that was in force at any moment of the period, by content hash. "
        "The full text of each version is in the data file rule_versions.json; the ledger keeps every "
        "version for the retention period."
    )
    n = int(col.scalar(f"SELECT count(DISTINCT (path, sha256)) FROM rule_versions WHERE {in_force}"))
    changes = int(col.scalar(
        f"SELECT count(DISTINCT (path, sha256)) FROM rule_versions WHERE effective_from >= {start} "
        f"AND effective_from < {end}"
    ))
    s.facts += [Fact("Rule-file versions in force", n), Fact("Versions that took effect during the period", changes)]
    if n == 0:
        s.status, s.status_text = "attention", "no rule-file version recorded for the period"
    # Attribution: the `./run.sh rules apply` record of exactly this content for this file, made before
    # the version first took effect (a minute's slack for clocks). Anything else is unattributed.
    base = f"""WITH v AS (
                 SELECT path, sha256, min(effective_from) AS effective_from,
                        CASE WHEN bool_or(effective_to IS NULL) THEN NULL ELSE max(effective_to) END AS effective_to,
                        string_agg(DISTINCT node_id, ', ' ORDER BY node_id) AS nodes, any_value(content) AS content
                 FROM rule_versions WHERE {in_force} GROUP BY path, sha256),
               a AS (
                 SELECT name, content->>'sha256' AS sha256, ts, content->>'author' AS author,
                        content->>'reason' AS reason
                 FROM configuration WHERE kind = 'rule_change')
               SELECT v.path, v.sha256, v.effective_from, v.effective_to, v.nodes,
                      coalesce(arg_max(a.author, a.ts), '{UNATTRIBUTED}') AS author,
                      arg_max(a.reason, a.ts) AS reason{{extra}}
               FROM v LEFT JOIN a ON a.sha256 = v.sha256 AND (v.path = a.name OR v.path LIKE '%/' || a.name)
                                     AND a.ts <= v.effective_from + INTERVAL 1 MINUTE
               GROUP BY ALL ORDER BY v.path, v.effective_from"""
    table = col.table(
        "rule_versions", "Rule-file versions",
        base.format(extra=""),
        data_sql=base.format(extra=", v.content"),
        note="An empty 'effective to' means the version is still in force. Author: the verified subject who "
             f"applied it with ./run.sh rules apply; '{UNATTRIBUTED}': it appeared without that record.",
        empty_text="No rule-file version was recorded for this period.",
    )
    s.tables.append(table)
    unattributed = sum(1 for a in table.column("author") if a == UNATTRIBUTED)
    s.facts.append(Fact("Versions without a recorded author", unattributed))
    if unattributed and s.status is None:
        s.status, s.status_text = "attention", f"{unattributed} version(s) unattributed (changed outside rules apply)"
    return s


def audit_configuration(col: Collector) -> Section:
    s = Section("audit-config", 0, "Audit configuration")
    s.intro = (
        "One audit event is written for every request, whatever the decision, and committed durably before "
        "the response is released; if the audit store cannot be written the gateway refuses traffic. "
        "Authentication failures, approvals, rule-file versions, reviews and incidents are recorded in "
        "the same tamper-evident log. The tables list what the ledger records."
    )
    counts = []
    for table in ("events", "approvals", "auth_failures", "rule_versions", "reviews", "incidents", "checkpoints"):
        counts.append(f"SELECT '{table}' AS record_kind, (SELECT count(*) FROM {table}) AS records_in_ledger")
    s.tables.append(col.table(
        "audit_record_kinds", "Record kinds in the ledger (all time)", " UNION ALL ".join(counts),
        numeric=("records_in_ledger",),
    ))
    described = ", ".join(f"({sql_str(k)}, {sql_str(v)})" for k, v in EVENT_FIELDS.items())
    s.tables.append(col.table(
        "audit_event_fields", "Fields of each audit event",
        f"""SELECT c.column_name AS field, c.data_type AS type, coalesce(d.meaning, '') AS meaning
            FROM (SELECT column_name, data_type, min(ordinal_position) AS pos FROM information_schema.columns
                  WHERE table_name = 'events' GROUP BY ALL) c
            LEFT JOIN (VALUES {described}) d(field, meaning) ON d.field = c.column_name
            ORDER BY c.pos""",
    ))
    cps, last_ts = col.row("SELECT count(*), max(ts) FROM checkpoints")
    s.facts += [Fact("Signed checkpoints in the ledger", cps), Fact("Latest checkpoint", last_ts)]
    return s


def incidents(col: Collector) -> Section:
    s = Section("incidents", 0, "Incidents and exceptions")
    s.intro = (
        "Fail-closed events (a step of the gateway failed and the request was refused rather than passed), "
        "audit write failures, and every request that ended in a gateway error."
    )
    n_inc = int(col.scalar("SELECT count(*) FROM inc"))
    n_err = int(col.scalar("SELECT count(*) FROM ev WHERE decision = 'error'"))
    s.facts += [Fact("Recorded incidents", n_inc), Fact("Requests refused by a gateway error", n_err)]
    if n_inc or n_err:
        s.status, s.status_text = "attention", f"{n_inc:,} incident(s), {n_err:,} error refusal(s)"
    s.tables.append(col.table(
        "incidents_by_kind", "Incidents by kind",
        "SELECT kind, count(*) AS incidents, min(ts) AS first, max(ts) AS last FROM inc GROUP BY ALL "
        "ORDER BY incidents DESC, kind",
        numeric=("incidents",),
        empty_text="No incident was recorded in this period.",
    ))
    s.tables.append(col.table(
        "incidents", "Incidents",
        "SELECT ts, node_id, kind, detail FROM inc ORDER BY ts, node_id",
        empty_text="No incident was recorded in this period.",
    ))
    s.tables.append(col.table(
        "error_refusals", "Requests refused by a gateway error, by stage",
        """SELECT coalesce(stage, '(unknown)') AS stage, coalesce(error, '') AS error, status,
                  count(*) AS requests, min(ts) AS first, max(ts) AS last
           FROM ev WHERE decision = 'error' GROUP BY ALL ORDER BY requests DESC, stage""",
        numeric=("status", "requests"),
        empty_text="No request ended in a gateway error in this period.",
    ))
    return s


def reviews(col: Collector, period: Period) -> Section:
    start, end = period.sql_bounds()
    s = Section("sign-off", 0, "Reviewer sign-off")
    s.intro = (
        "Information system activity review (164.308(a)(1)(ii)(D)) is documented by recording the review of "
        "this packet in the ledger with the reviewer's own access token (PHIGATE_TOKEN): ./run.sh report sign "
        "--packet manifest.json --public-key KEY. The ledger records the token's verified subject. "
        "Reviews already recorded for periods overlapping this one are listed below."
    )
    s.tables.append(col.table(
        "reviews", "Recorded reviews",
        f"""SELECT signed_at, reviewer, period_from, period_to, packet_sha256, notes FROM reviews
            WHERE period_from < {end} AND period_to > {start} ORDER BY signed_at""",
        empty_text="No review has been recorded yet for this period.",
    ))
    return s
