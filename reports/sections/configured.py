"""Access-control configuration in force over the period, from the ledger: automatic logoff
(164.312(a)(2)(iii)), the break-glass policy (164.312(a)(2)(ii)), who may approve each hold rule
(164.308(a)(4)) and the configured retention (164.316(b)(2)(i)).

Settings come from the `configuration` records the gateway writes at start and on change; hold rules
and the role map from the policy.yaml versions the ledger holds, compiled with the gateway's own
compiler so defaults (a hold's 5-minute timeout) read as the gateway applied them.
"""

# SQL here is built from this package's own fragments, table names and timestamps formatted from
# datetimes; no ledger value or user-supplied text is ever inlined.
# ruff: noqa: S608

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from addons.config.rulefiles import ConfigError, parse_yaml
from reports.model import Fact, Section
from reports.period import Period
from reports.tables import Collector


def _settings_view(col: Collector, period: Period) -> None:
    """`cfg`: every gateway_settings record in force during the period (the last one before it starts,
    per node, and every one inside it), one row per option."""
    start, end = period.sql_bounds()
    col.con.execute(f"""
        CREATE OR REPLACE TEMP VIEW cfg AS
        WITH c AS (SELECT node_id, ts, content FROM configuration WHERE kind = 'gateway_settings' AND ts < {end}),
             x AS (SELECT * FROM c WHERE ts < {start}
                   QUALIFY row_number() OVER (PARTITION BY node_id ORDER BY ts DESC) = 1
                   UNION ALL SELECT * FROM c WHERE ts >= {start})
        SELECT node_id, ts AS recorded_at, j.key AS option, j.value::VARCHAR AS value FROM x, json_each(x.content) j
    """)


def setting_values(col: Collector, option: str) -> list[str]:
    """The distinct values `option` had over the period, on any node (JSON text, strings unquoted)."""
    return [str(r[0]).strip('"') for r in col.con.execute(
        "SELECT DISTINCT value FROM cfg WHERE option = ? ORDER BY value", [option]).fetchall()]


def _policies(col: Collector, period: Period) -> list[tuple[str, Any]]:
    """(sha256, compiled PolicySet) of each policy.yaml version in force during the period."""
    from addons.config.policy_rules import compile_policy

    start, end = period.sql_bounds()
    out = []
    for sha, content in col.rows(
        f"""SELECT sha256, any_value(content) FROM rule_versions
            WHERE (path = 'policy.yaml' OR path LIKE '%/policy.yaml') AND effective_from < {end}
              AND (effective_to IS NULL OR effective_to > {start})
            GROUP BY sha256 ORDER BY min(effective_from)"""
    ):
        try:
            out.append((str(sha), compile_policy(Path("policy.yaml"), parse_yaml(Path("policy.yaml"), str(content)))))
        except ConfigError:
            continue  # a version the gateway could not have loaded was never in force
    return out


def _join(values: Iterable[Any]) -> str:
    return ", ".join(sorted(str(v) for v in values)) or "—"


def _duration(seconds: float) -> str:
    return f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g} s"


def configured(col: Collector, period: Period) -> Section:
    s = Section("configuration", 0, "Access-control configuration in force")
    s.intro = (
        "What the gateway was configured to do during the period, from the settings each gateway node "
        "recorded in the ledger when it started and whenever they changed, and from the policy versions in "
        "force. A setting with two values changed during the period."
    )
    _settings_view(col, period)
    policies = _policies(col, period)
    nodes = int(col.scalar("SELECT count(DISTINCT node_id) FROM cfg"))
    problems: list[str] = []
    if nodes == 0:
        problems.append("no gateway recorded its settings for the period")

    # 164.312(a)(2)(iii) automatic logoff: no credential or pending request outlives its limit.
    holds = [(sha, r) for sha, p in policies for r in p.rules if r.hold is not None]
    timeouts = sorted({r.hold.timeout_s for _, r in holds})
    logoff = [
        ("Longest access-token lifetime accepted (exp - iat)", setting_values(col, "phigate_max_token_lifetime_s"),
         " s"),
        ("Clock-skew leeway on token expiry", setting_values(col, "phigate_clock_skew_s"), " s"),
        ("Session idle limit (audit sessions)", setting_values(col, "phigate_session_idle_seconds"), " s"),
        ("Longest grant an approver may give", setting_values(col, "phigate_grant_max_minutes"), " min"),
    ]
    for label, values, unit in logoff:
        s.facts.append(Fact(label, ", ".join(v + unit for v in values) or "not recorded"))
    s.facts.append(Fact("Hold timeouts (a pending request is denied after)",
                        ", ".join(_duration(t) for t in timeouts) or "no hold rule"))
    s.facts.append(Fact("Reviewer console sign-in", "the OpenID provider's token, kept in the page's memory only; "
                                                    "the console signs out when it expires"))

    # 164.312(a)(2)(ii) break-glass: who, how long, how access returns to normal.
    bg_roles = setting_values(col, "phigate_break_glass_role")
    groups = sorted({g for _, p in policies for g, granted in p.roles.map.items() if set(granted) & set(bg_roles)})
    header = setting_values(col, "phigate_break_glass_header")
    s.facts += [
        Fact("Break-glass: role that may invoke it", _join(bg_roles) if bg_roles else "not recorded"),
        Fact("Break-glass: IdP groups granting that role", _join(groups)),
        Fact("Break-glass: how it is invoked", f"header {_join(header)} with a justification, on each request"
             if header else "not recorded"),
        Fact("Break-glass: for how long", "one request: each request must carry its own justification; there "
                                          "is no standing emergency session"),
        Fact("Break-glass: return to normal access", "automatic: the next request without the header is decided "
                                                     "by policy again; break-glass passes holds only, never a deny"),
    ]

    # 164.316(b)(2)(i) retention as configured.
    retention = setting_values(col, "phigate_retention_days")
    s.facts.append(Fact("Retention of session recordings (configured)",
                        ", ".join(f"{v} days ({int(v) / 365:.1f} years)" for v in retention) or "not recorded"))
    s.facts.append(Fact("Retention of the ledger", "never purged by the gateway"))
    if retention and min(int(v) for v in retention) < 2190:
        problems.append("recordings are kept for less than six years")

    # 164.308(a)(4): who may approve what.
    col.con.execute("""CREATE OR REPLACE TEMP TABLE _hold_rules (policy_version VARCHAR, rule_id VARCHAR,
                       requesters VARCHAR, operations VARCHAR, collections VARCHAR, approver_roles VARCHAR,
                       approvals_required INTEGER, timeout VARCHAR)""")
    for sha, r in holds:
        assert r.hold is not None
        col.con.execute("INSERT INTO _hold_rules VALUES (?, ?, ?, ?, ?, ?, ?, ?)", [
            sha[:12], r.id, _join(r.roles) if r.roles is not None else "any authenticated caller",
            _join(o.value for o in r.operations) if r.operations is not None else "any",
            ", ".join(r.collections) if r.collections is not None else "any",
            _join(r.hold.approver_roles), r.hold.approvals_required, _duration(r.hold.timeout_s),
        ])
    s.tables.append(col.table(
        "hold_rules", "Hold rules: who must approve, how many, and how long a request may wait",
        "SELECT * FROM _hold_rules ORDER BY policy_version, rule_id",
        numeric=("approvals_required",),
        empty_text="No policy version in force during the period holds requests for approval.",
        note="Approvers act with their own tokens, never on their own request; a grant never satisfies a "
             "two-person rule.",
    ))
    s.tables.append(col.table(
        "gateway_settings", "Gateway settings recorded in the ledger",
        "SELECT node_id, recorded_at, option, value FROM cfg ORDER BY node_id, recorded_at, option",
        empty_text="No gateway recorded its settings for this period.",
    ))
    if problems:
        s.status, s.status_text = "attention", "; ".join(problems)
    return s
