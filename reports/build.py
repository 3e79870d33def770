"""Assemble a packet: open the ledger, restrict it to the period, run every section's queries (which
write the data files), and compute the control table. Rendering and signing are separate steps."""

# SQL here is built from this package's own fragments, table names and timestamps formatted from
# datetimes; no ledger value or user-supplied text is ever inlined.
# ruff: noqa: S608

from __future__ import annotations

import csv
import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from addons.config.rulefiles import ConfigError, parse_yaml
from reports import disclosures, software_version
from reports import matrix as matrix_mod
from reports.figures import figures
from reports.matrix import Matrix
from reports.model import Packet, Section
from reports.period import Period
from reports.sections import access, activity, configured, controls, governance, integrity, minimum, protection
from reports.source import open_ledger
from reports.tables import Collector


@dataclass(frozen=True, slots=True)
class BuildOptions:
    ledger: Path
    period: Period
    out: Path
    rules: Path  # the rules folder (masking.yaml), used when the ledger holds no masking.yaml version
    verify: bool = True
    public_keys: tuple[str, ...] = ()  # trusted checkpoint keys for verify (default: as ./run.sh verify finds them)
    audit_key_file: str = ""
    witness: str | None = None
    tls_cert: Path | None = None
    row_limit: int = 500  # rows kept for display per table (the data files hold all of them)
    generated_at: dt.datetime | None = None


def _period_views(col: Collector, period: Period) -> None:
    start, end = period.sql_bounds()
    col.con.execute(f"CREATE OR REPLACE TEMP VIEW ev AS SELECT * FROM events WHERE ts >= {start} AND ts < {end}")
    col.con.execute(
        "CREATE OR REPLACE TEMP VIEW ap AS SELECT * FROM approvals "
        f"WHERE coalesce(requested_at, ts) >= {start} AND coalesce(requested_at, ts) < {end}"
    )
    col.con.execute(f"CREATE OR REPLACE TEMP VIEW af AS SELECT * FROM auth_failures WHERE ts >= {start} AND ts < {end}")
    col.con.execute(f"CREATE OR REPLACE TEMP VIEW inc AS SELECT * FROM incidents WHERE ts >= {start} AND ts < {end}")
    # The one definition of a disclosure, shared with `report disclosures` (reports.disclosures).
    disclosures.create_view(col.con, "ev", "disclosed")


def build(opts: BuildOptions) -> Packet:
    generated_at = opts.generated_at or dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)
    con = open_ledger(opts.ledger)
    try:
        col = Collector(con, opts.out / "data", opts.row_limit)
        _period_views(col, opts.period)
        outcome = (
            integrity.run_verify(opts.ledger, list(opts.public_keys), opts.audit_key_file, opts.witness) if opts.verify
            else integrity.VerifyOutcome(False, False, "not run for this packet (--no-verify)")
        )
        masking_matrix = _matrix(col, opts)
        prot = protection.protection(col, opts.period, opts.tls_cert, opts.ledger, generated_at)
        sections: list[Section] = [
            activity.scope(col),
            governance.policy_versions(col, opts.period),
            governance.audit_configuration(col),
            configured.configured(col, opts.period),
            integrity.integrity(col, outcome),
            activity.activity(col, opts.period),
            minimum.minimum_necessary(col, masking_matrix),
            access.login_monitoring(col),
            access.approvals(col),
            access.break_glass(col),
            prot,
            minimum.disclosures(col),
            governance.incidents(col),
            governance.reviews(col, opts.period),
        ]
        # Numbered in the order auditors read an evidence packet: the cover is 1.
        for i, s in enumerate(sections, start=2):
            s.number = i
        f = figures(col, opts.period)
        f["verify"] = outcome.summary
        f["verified"] = outcome.performed and outcome.ok
        f["tls"], f["tls_ok"] = prot.status_text, prot.status == "ok"
        f["recording_files"] = next((x.value for x in prot.facts if x.label.startswith("Encrypted session")), 0)
        f.update(configured_figures(sections))
        f["matrix_roles"] = len(masking_matrix.roles)
        f["matrix_rows"] = len(masking_matrix.rows)
        ctl = controls.build(sections, f)
    finally:
        con.close()
    packet = Packet(
        period_label=opts.period.label, period_start=opts.period.start, period_end=opts.period.end,
        generated_at=generated_at, software_version=software_version(), ledger=str(opts.ledger),
        sections=sections, controls=ctl, summary=f,
    )
    _write_summary(packet, col.data_dir)
    return packet


def configured_figures(sections: list[Section]) -> dict[str, Any]:
    """The control table's words for the configuration evidence, from the sections that show it."""
    by_id = {s.id: s for s in sections}
    facts = {x.label: x.value for x in by_id["configuration"].facts}
    hold_rules = next(t for t in by_id["configuration"].tables if t.id == "hold_rules")
    versions = next(t for t in by_id["policy"].tables if t.id == "rule_versions")
    authors = versions.column("author")
    return {
        "token_lifetime": facts["Longest access-token lifetime accepted (exp - iat)"],
        "clock_skew": facts["Clock-skew leeway on token expiry"],
        "session_idle": facts["Session idle limit (audit sessions)"],
        "hold_timeouts": facts["Hold timeouts (a pending request is denied after)"],
        "break_glass_role": facts["Break-glass: role that may invoke it"],
        "retention": facts["Retention of session recordings (configured)"],
        "hold_rules": hold_rules.total,
        "settings_recorded": facts["Longest access-token lifetime accepted (exp - iat)"] != "not recorded",
        "versions_unattributed": sum(1 for a in authors if a == governance.UNATTRIBUTED),
        "versions_attributed": sum(1 for a in authors if a != governance.UNATTRIBUTED),
    }


def _version_in_force(col: Collector, period: Period, name: str) -> tuple[Any, ...] | None:
    """(path, sha256, content) of the version of rule file `name` in force at the end of the period."""
    _, end = period.sql_bounds()
    row = col.con.execute(
        f"""SELECT path, sha256, content FROM rule_versions
            WHERE (path = ? OR path LIKE ?) AND effective_from < {end}
            ORDER BY effective_from DESC LIMIT 1""",
        [name, f"%/{name}"],
    ).fetchone()
    return tuple(row) if row is not None else None


def _policy_roles(col: Collector, opts: BuildOptions) -> list[str]:
    """The phigate roles the policy's role map grants (so the matrix has a column for each)."""
    row = _version_in_force(col, opts.period, "policy.yaml")
    try:
        text = str(row[2]) if row is not None else (opts.rules / "policy.yaml").read_text(encoding="utf-8")
        doc = parse_yaml(Path("policy.yaml"), text)
    except (OSError, ConfigError):
        return []
    roles = doc.get("roles") if isinstance(doc, dict) else None
    mapping = roles.get("map", {}) if isinstance(roles, dict) else {}
    out: list[str] = []
    for granted in mapping.values() if isinstance(mapping, dict) else ():
        out += [granted] if isinstance(granted, str) else [g for g in granted if isinstance(g, str)]
    return out


def _matrix(col: Collector, opts: BuildOptions) -> Matrix:
    """The matrix of the masking.yaml version in force at the end of the period, as the ledger kept
    it; the rules folder's file only when the ledger has no version of it."""
    row = _version_in_force(col, opts.period, "masking.yaml")
    seen = [r[0] for r in col.rows("SELECT DISTINCT unnest(roles) FROM ev ORDER BY 1")]
    seen += _policy_roles(col, opts)
    rules_file = opts.rules / "masking.yaml"
    if row is not None:
        source = f"{row[0]}, version {str(row[1])[:12]} in force at the end of the period (from the ledger)"
        return matrix_mod.load(Path(row[0]), str(row[2]), source, seen)
    return matrix_mod.load(rules_file, None, f"{rules_file} (the ledger holds no version of it)", seen)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat() + "Z"
    return value


def _write_summary(packet: Packet, data_dir: Path) -> None:
    """packet.json: the figures, every section's facts and the control table, as data."""
    doc = {
        "period": {"from": _jsonable(packet.period_start), "to": _jsonable(packet.period_end),
                   "label": packet.period_label},
        "generated_at": _jsonable(packet.generated_at),
        "software_version": packet.software_version,
        "figures": {k: _jsonable(v) for k, v in packet.summary.items()},
        "sections": [
            {"number": s.number, "id": s.id, "title": s.title, "status": s.status, "status_text": s.status_text,
             "facts": [{"label": x.label, "value": _jsonable(x.value)} for x in s.facts],
             "tables": [{"id": t.id, "title": t.title, "rows": t.total, "csv": t.data_file, "json": t.json_file}
                        for t in (*s.tables, *s.data_tables)]}
            for s in packet.sections
        ],
        "controls": [
            {"cite": c.cite, "requirement": c.requirement, "evidence": c.evidence, "status": c.status,
             "where": [w.ref for w in c.where]}
            for c in packet.controls
        ],
    }
    (data_dir / "packet.json").write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    with (data_dir / "controls.csv").open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["cite", "requirement", "evidence", "status", "where"])
        for c in packet.controls:
            w.writerow([c.cite, c.requirement, c.evidence, c.status, "; ".join(x.ref for x in c.where)])
