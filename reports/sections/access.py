"""Log-in monitoring (164.308(a)(5)(ii)(C)), approvals (164.308(a)(4)) and the break-glass register
(164.312(a)(2)(ii)). Reads the `af` (authentication failures) and `ap` (approvals) period views."""

# SQL here is built from this package's own fragments, table names and timestamps formatted from
# datetimes; no ledger value or user-supplied text is ever inlined.
# ruff: noqa: S608

from __future__ import annotations

from reports import charts
from reports.model import Fact, Section
from reports.tables import Collector

# An address with this many failures inside one clock hour is flagged as a possible guessing attack.
BURST = 10

# Time-to-decision histogram bins: (label, upper bound in seconds).
_BINS = (("< 1 min", 60), ("1-5 min", 300), ("5-15 min", 900), ("15-60 min", 3600), ("1-4 h", 14400),
         ("4-24 h", 86400), ("> 1 day", None))
_OUTCOME_COLOURS = {"approved": "#2e7d32", "denied": "#c62828", "timeout": "#8d6e63", "cancelled": "#78909c"}


def login_monitoring(col: Collector) -> Section:
    s = Section("login", 0, "Log-in monitoring")
    s.intro = (
        "Every request whose access token failed verification (missing, expired, bad signature, wrong "
        "issuer or audience) is refused and recorded. For each client address the table shows whether "
        f"authenticated access from it followed, and flags addresses with {BURST} or more failures in one hour."
    )
    total, addrs, subjects = col.row(
        "SELECT count(*), count(DISTINCT client_addr), count(DISTINCT claimed_subject) FROM af"
    )
    bursts = int(col.scalar(
        f"""SELECT count(DISTINCT client_addr) FROM
            (SELECT client_addr FROM af GROUP BY client_addr, date_trunc('hour', ts) HAVING count(*) >= {BURST})"""
    ))
    s.facts += [Fact("Authentication failures", total), Fact("Distinct client addresses", addrs),
                Fact("Distinct claimed subjects", subjects),
                Fact(f"Addresses with ≥ {BURST} failures in an hour", bursts)]
    if bursts:
        s.status, s.status_text = "attention", f"{bursts} address(es) with bursts of failures"
    s.tables.append(col.table(
        "auth_failures_by_reason", "Authentication failures by reason",
        "SELECT reason, count(*) AS failures, count(DISTINCT client_addr) AS addresses FROM af "
        "GROUP BY ALL ORDER BY failures DESC, reason",
        numeric=("failures", "addresses"),
        empty_text="No authentication failures in this period.",
    ))
    s.tables.append(col.table(
        "auth_failures_by_address", "Authentication failures by client address, and what followed",
        f"""WITH f AS (
              SELECT client_addr, count(*) AS failures, min(ts) AS first_failure, max(ts) AS last_failure,
                     count(DISTINCT claimed_subject) AS claimed_subjects
              FROM af GROUP BY client_addr),
            h AS (SELECT client_addr, max(n) AS worst_hour FROM
                    (SELECT client_addr, count(*) AS n FROM af GROUP BY client_addr, date_trunc('hour', ts))
                  GROUP BY client_addr),
            later AS (
              SELECT f.client_addr, count(e.ts) AS later_requests
              FROM f LEFT JOIN ev e ON e.client_addr = f.client_addr AND e.ts > f.first_failure
                                       AND e.subject IS NOT NULL
              GROUP BY f.client_addr)
            SELECT f.client_addr, f.failures, h.worst_hour AS max_per_hour, f.claimed_subjects,
                   f.first_failure, f.last_failure, later.later_requests AS authenticated_after,
                   CASE WHEN h.worst_hour >= {BURST} THEN 'burst: investigate'
                        WHEN later.later_requests > 0 THEN 'later authenticated'
                        ELSE 'no authenticated access' END AS outcome
            FROM f JOIN h USING (client_addr) JOIN later USING (client_addr)
            ORDER BY f.failures DESC, f.client_addr""",
        numeric=("failures", "max_per_hour", "claimed_subjects", "authenticated_after"),
        empty_text="No authentication failures in this period.",
    ))
    s.tables.append(col.table(
        "auth_failures", "Authentication failures",
        "SELECT ts, node_id, client_addr, reason, claimed_subject, request_id FROM af ORDER BY ts, request_id",
        empty_text="No authentication failures in this period.",
    ))
    return s


def approvals(col: Collector) -> Section:
    s = Section("approvals", 0, "Approvals")
    s.intro = (
        "Requests held for a human decision, who asked, who decided, the justification, how long the "
        "decision took and its outcome. Approver identities come from their own verified tokens."
    )
    where = "kind IS DISTINCT FROM 'break_glass'"
    total, decided, med, p90, longest = col.row(
        f"""SELECT count(*), count(decided_at),
                   median(epoch(decided_at - requested_at)), quantile_cont(epoch(decided_at - requested_at), 0.9),
                   max(epoch(decided_at - requested_at))
            FROM ap WHERE {where}"""
    )
    s.facts += [Fact("Approval requests", total), Fact("Decided", decided),
                Fact("Median time to decision", _duration(med)), Fact("90th percentile", _duration(p90)),
                Fact("Longest", _duration(longest))]
    for outcome, n in col.rows(
        f"SELECT coalesce(outcome, 'pending'), count(*) FROM ap WHERE {where} GROUP BY 1 ORDER BY 2 DESC"
    ):
        s.facts.append(Fact(f"Outcome: {outcome}", n))
    bin_case = "CASE " + " ".join(
        f"WHEN secs < {hi} THEN {i}" for i, (_, hi) in enumerate(_BINS) if hi is not None
    ) + f" ELSE {len(_BINS) - 1} END"
    outcomes = [r[0] for r in col.rows(
        f"SELECT DISTINCT coalesce(outcome, 'pending') FROM ap WHERE {where} AND decided_at IS NOT NULL ORDER BY 1"
    )]
    series_counts = {o: [0] * len(_BINS) for o in outcomes}
    for outcome, b, n in col.rows(
        f"""SELECT coalesce(outcome, 'pending'), {bin_case} AS b, count(*)
            FROM (SELECT outcome, epoch(decided_at - requested_at) AS secs FROM ap
                  WHERE {where} AND decided_at IS NOT NULL)
            GROUP BY ALL"""
    ):
        series_counts[outcome][b] = n
    s.charts.append(charts.stacked_columns(
        "Time to approval decision", [label for label, _ in _BINS],
        [charts.Series(o, _OUTCOME_COLOURS.get(o, charts.ACCENT), series_counts[o]) for o in outcomes],
        y_label="requests", empty_message="No approval decisions in this period",
    ))
    s.tables.append(col.table(
        "approvals", "Approval requests and decisions",
        f"""SELECT hold_id, requester, array_to_string(approvers, ', ') AS approvers, rule_id, operation,
                   collection, requested_at, decided_at,
                   round(epoch(decided_at - requested_at), 1) AS seconds_to_decision,
                   coalesce(outcome, 'pending') AS outcome, justification
            FROM ap WHERE {where} ORDER BY requested_at, hold_id""",
        numeric=("seconds_to_decision",),
        empty_text="No request was held for approval in this period.",
    ))
    return s


def break_glass(col: Collector) -> Section:
    s = Section("break-glass", 0, "Break-glass register")
    s.intro = (
        "Emergency access (164.312(a)(2)(ii)): each use of the break-glass path with its justification, and "
        "the requests made under it. Every entry should be reviewed after the fact; the reviewer's "
        "sign-off below covers this register."
    )
    uses = int(col.scalar("SELECT count(*) FROM ap WHERE kind = 'break_glass'"))
    reqs = int(col.scalar("SELECT count(*) FROM ev WHERE break_glass"))
    s.facts += [Fact("Break-glass invocations", uses), Fact("Requests made under break-glass", reqs)]
    if uses or reqs:
        s.status, s.status_text = "attention", "break-glass was used: review each entry"
    s.tables.append(col.table(
        "break_glass", "Break-glass invocations",
        """SELECT requested_at AS at, requester, operation, collection, rule_id, justification, hold_id,
                  decided_at AS until
           FROM ap WHERE kind = 'break_glass' ORDER BY requested_at, hold_id""",
        empty_text="Break-glass was not used in this period.", complete=True,
        note="Every entry is shown, however many: each must be reviewed.",
    ))
    s.tables.append(col.table(
        "break_glass_request_log", "Requests made under break-glass",
        """SELECT ts, coalesce(subject, '(unknown)') AS subject, client_id, operation, collection, status,
                  len(coalesce(subject_refs, [])) AS patients, hold_id, request_id
           FROM ev WHERE break_glass ORDER BY ts, node_id, seq""",
        numeric=("status", "patients"),
        empty_text="No request was made under break-glass in this period.", complete=True,
        note="Every entry is shown, however many: each must be reviewed.",
    ))
    s.tables.append(col.table(
        "break_glass_requests", "Requests made under break-glass, by user",
        """SELECT coalesce(subject, '(unknown)') AS subject, count(*) AS requests,
                  string_agg(DISTINCT operation, ', ' ORDER BY operation) AS operations,
                  string_agg(DISTINCT collection, ', ' ORDER BY collection) AS collections,
                  min(ts) AS first, max(ts) AS last
           FROM ev WHERE break_glass GROUP BY ALL ORDER BY requests DESC, subject""",
        numeric=("requests",),
        empty_text="No request was made under break-glass in this period.",
    ))
    return s


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"
