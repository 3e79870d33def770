"""The packet's headline figures (cover, control table, packet.json), each one aggregate query."""

# SQL here is built from this package's own fragments, table names and timestamps formatted from
# datetimes; no ledger value or user-supplied text is ever inlined.
# ruff: noqa: S608

from __future__ import annotations

from typing import Any

from reports.period import Period
from reports.sections.access import BURST
from reports.sections.minimum import disclosure_totals, masked_totals
from reports.tables import Collector


def figures(col: Collector, period: Period) -> dict[str, Any]:
    start, end = period.sql_bounds()
    f: dict[str, Any] = {}
    (f["events"], f["allow"], f["deny"], f["hold"], f["error"], f["users"], f["clients"],
     f["allowed_without_subject"], f["break_glass_requests"], f["writes_refused"], f["first_event"],
     f["last_event"], f["held"]) = col.row(
        """SELECT count(*), count(*) FILTER (WHERE decision = 'allow'), count(*) FILTER (WHERE decision = 'deny'),
                  count(*) FILTER (WHERE decision = 'hold'), count(*) FILTER (WHERE decision = 'error'),
                  count(DISTINCT subject), count(DISTINCT client_id),
                  count(*) FILTER (WHERE decision = 'allow' AND subject IS NULL),
                  count(*) FILTER (WHERE break_glass),
                  count(*) FILTER (WHERE (decision = 'deny' OR hold_id IS NOT NULL)
                                   AND operation IN ('write', 'delete', 'drop')),
                  min(ts), max(ts), count(*) FILTER (WHERE hold_id IS NOT NULL)
           FROM ev"""
    )
    f["masked"], f["masked_responses"] = masked_totals(col)
    f["disclosing_responses"], f["disclosed_subjects"], f["disclosure_recipients"] = disclosure_totals(col)
    f["auth_failures"], f["auth_failure_addresses"] = col.row(
        "SELECT count(*), count(DISTINCT client_addr) FROM af"
    )
    f["auth_bursts"] = col.scalar(
        f"""SELECT count(DISTINCT client_addr) FROM (SELECT client_addr FROM af
            GROUP BY client_addr, date_trunc('hour', ts) HAVING count(*) >= {BURST})"""
    )
    f["approvals"] = col.scalar("SELECT count(*) FROM ap WHERE kind IS DISTINCT FROM 'break_glass'")
    f["break_glass_uses"] = col.scalar("SELECT count(*) FROM ap WHERE kind = 'break_glass'")
    f["incidents"] = col.scalar("SELECT count(*) FROM inc")
    f["policy_versions"] = col.scalar(
        f"""SELECT count(DISTINCT (path, sha256)) FROM rule_versions
            WHERE effective_from < {end} AND (effective_to IS NULL OR effective_to > {start})"""
    )
    f["reviews"] = col.scalar(
        f"SELECT count(*) FROM reviews WHERE period_from < {end} AND period_to > {start}"
    )
    f["ledger_records"] = col.scalar(
        "SELECT " + " + ".join(f"(SELECT count(*) FROM {t})" for t in
                   ("events", "approvals", "auth_failures", "rule_versions", "reviews", "incidents"))
    )
    return f
