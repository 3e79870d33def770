"""Scope and activity review (164.308(a)(1)(ii)(D), 164.312(b)): who did what, where, and what the
policy decided. Reads the `ev` view (the period's events) the builder sets up."""

# SQL here is built from this package's own fragments, table names and timestamps formatted from
# datetimes; no ledger value or user-supplied text is ever inlined.
# ruff: noqa: S608

from __future__ import annotations

from reports import charts
from reports.buckets import choose
from reports.model import Fact, Section
from reports.period import Period
from reports.tables import Collector

DECISIONS = ("allow", "deny", "hold", "error")
_BY_DECISION = ", ".join(f"count(*) FILTER (WHERE decision = '{d}') AS {d}" for d in DECISIONS)
_COUNTS = ("requests", *DECISIONS)


def scope(col: Collector) -> Section:
    backends = [r[0] for r in col.rows("SELECT DISTINCT backend FROM ev WHERE backend IS NOT NULL ORDER BY 1")]
    n_coll = int(col.scalar("SELECT count(DISTINCT collection) FROM ev WHERE collection IS NOT NULL"))
    s = Section("scope", 0, "Scope and data flow")
    s.intro = (
        "Every request from a client to a vector database passes through the gateway, which authenticates "
        "the caller, classifies the operation, applies default-deny policy, holds risky requests for "
        "approval, masks PHI in responses and writes one audit event before the response is released. "
        "The tables list what the ledger saw in this period."
    )
    s.charts.append(charts.data_flow(backends, n_coll))
    s.tables.append(col.table(
        "scope_collections", "Backends and collections seen",
        """SELECT coalesce(backend, '(none)') AS backend, coalesce(collection, '(none)') AS collection,
                   count(*) AS requests, count(DISTINCT subject) AS users, min(ts) AS first_seen,
                   max(ts) AS last_seen
            FROM ev GROUP BY ALL ORDER BY requests DESC, backend, collection""",
        numeric=("requests", "users"),
    ))
    s.tables.append(col.table(
        "scope_nodes", "Gateway nodes",
        """SELECT node_id, count(*) AS requests, min(ts) AS first_event, max(ts) AS last_event
           FROM ev GROUP BY ALL ORDER BY node_id""",
        numeric=("requests",),
    ))
    return s


def activity(col: Collector, period: Period) -> Section:
    s = Section("activity", 0, "Activity review")
    total, allow, deny, hold, error, users, clients, held, held_refused = col.row(
        f"""SELECT count(*), {_BY_DECISION}, count(DISTINCT subject), count(DISTINCT client_id),
                   count(*) FILTER (WHERE hold_id IS NOT NULL),
                   count(*) FILTER (WHERE hold_id IS NOT NULL AND decision <> 'hold')
            FROM ev"""
    )
    s.intro = (
        "Requests by user, role, operation and collection, and every denial with the rule that decided it. "
        "Decision 'hold' marks a request that was held and then released (approved, under a grant or by "
        "break-glass); a held request that was denied, timed out or cancelled is counted as denied. Holds "
        "are detailed under Approvals."
    )
    s.facts += [
        Fact("Requests", total), Fact("Allowed by policy", allow), Fact("Denied", deny),
        Fact("Held for a human decision (any outcome)", held),
        Fact("Released after a hold (approval, grant, break-glass)", hold),
        Fact("Held, then denied, timed out or cancelled", held_refused),
        Fact("Errors (refused by the gateway)", error), Fact("Distinct users", users),
        Fact("Distinct clients", clients),
    ]
    b = choose(period)
    counts = {d: [0] * len(b.starts) for d in DECISIONS}
    index = {start: i for i, start in enumerate(b.starts)}
    for bucket, decision, n in col.rows(f"SELECT {b.sql()} AS b, decision, count(*) FROM ev GROUP BY ALL"):
        if bucket in index and decision in counts:
            counts[decision][index[bucket]] = n
    s.charts.append(charts.stacked_columns(
        f"Requests per {b.unit} by decision", b.labels(),
        [charts.Series(d, charts.DECISION_COLOURS[d], counts[d]) for d in DECISIONS],
    ))
    rules = col.rows(
        """SELECT rule, count(*) FILTER (WHERE decision = 'deny'), count(*) FILTER (WHERE decision = 'hold')
           FROM (SELECT decision, unnest(CASE WHEN len(coalesce(rule_ids, [])) = 0 THEN ['(default deny)']
                                              ELSE rule_ids END) AS rule
                 FROM ev WHERE decision IN ('deny', 'hold'))
           GROUP BY rule ORDER BY count(*) DESC, rule LIMIT 15"""
    )
    s.charts.append(charts.horizontal_bars(
        "Denials and holds by rule (top 15)", [r[0] for r in rules],
        [charts.Series("deny", charts.DECISION_COLOURS["deny"], [r[1] for r in rules]),
         charts.Series("hold", charts.DECISION_COLOURS["hold"], [r[2] for r in rules])],
        empty_message="No denials or holds in this period",
    ))
    s.tables.append(col.table(
        "activity_by_user", "Requests by user",
        # Distinct (subject, client, roles) combinations first: a few hundred rows, not a million lists.
        f"""WITH u AS (
              SELECT subject, any_value(name) AS name, count(*) AS requests, {_BY_DECISION},
                     min(ts) AS first, max(ts) AS last
              FROM ev GROUP BY subject),
            c AS (SELECT DISTINCT subject, client_id, roles FROM ev),
            cr AS (SELECT subject, string_agg(DISTINCT client_id, ', ' ORDER BY client_id) AS clients,
                          array_to_string(list_sort(list_distinct(flatten(list(roles)))), ', ') AS roles
                   FROM c GROUP BY subject)
            SELECT coalesce(u.subject, '(unauthenticated)') AS subject, u.name, cr.clients, cr.roles,
                   u.requests, u.allow, u.deny, u.hold, u.error, u.first, u.last
            FROM u LEFT JOIN cr ON cr.subject IS NOT DISTINCT FROM u.subject
            ORDER BY u.requests DESC, u.subject""",
        numeric=_COUNTS,
    ))
    s.tables.append(col.table(
        "activity_by_role", "Requests by role",
        f"""SELECT role, count(*) AS requests, {_BY_DECISION}, count(DISTINCT subject) AS users
            FROM (SELECT *, unnest(CASE WHEN len(coalesce(roles, [])) = 0 THEN ['(no role)'] ELSE roles END)
                            AS role FROM ev)
            GROUP BY role ORDER BY requests DESC, role""",
        numeric=(*_COUNTS, "users"),
        note="A request made by a caller with several roles counts once under each role.",
    ))
    s.tables.append(col.table(
        "activity_by_operation", "Requests by operation",
        f"""SELECT coalesce(operation, '(unclassified)') AS operation, count(*) AS requests, {_BY_DECISION}
            FROM ev GROUP BY ALL ORDER BY requests DESC, operation""",
        numeric=_COUNTS,
    ))
    s.tables.append(col.table(
        "activity_by_collection", "Requests by collection",
        f"""SELECT coalesce(collection, '(none)') AS collection, count(*) AS requests, {_BY_DECISION}
            FROM ev GROUP BY ALL ORDER BY requests DESC, collection""",
        numeric=_COUNTS,
    ))
    s.tables.append(col.table(
        "denials_by_rule", "Denials and holds by rule",
        """SELECT rule, count(*) FILTER (WHERE decision = 'deny') AS denied,
                  count(*) FILTER (WHERE decision = 'hold') AS held, count(DISTINCT subject) AS users
           FROM (SELECT decision, subject,
                        unnest(CASE WHEN len(coalesce(rule_ids, [])) = 0 THEN ['(default deny)'] ELSE rule_ids END)
                        AS rule
                 FROM ev WHERE decision IN ('deny', 'hold'))
           GROUP BY rule ORDER BY denied + held DESC, rule""",
        numeric=("denied", "held", "users"),
    ))
    s.tables.append(col.table(
        "denials", "Denied requests",
        """SELECT seq, ts, coalesce(subject, '(unauthenticated)') AS subject, client_id,
                  array_to_string(roles, ', ') AS roles, operation, collection,
                  CASE WHEN len(coalesce(rule_ids, [])) = 0 THEN '(default deny)'
                       ELSE array_to_string(rule_ids, ', ') END AS rule_ids,
                  stage, status
           FROM ev WHERE decision = 'deny' ORDER BY ts, node_id, seq""",
        numeric=("seq", "status"),
        empty_text="No request was denied in this period.",
    ))
    if deny or held:
        s.status, s.status_text = "ok", f"{deny:,} denied and {held:,} held requests, each with its rule"
    return s
