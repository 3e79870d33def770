"""The role-to-field masking matrix (164.502(b), 164.514(d)): for each field or identifier type, what
each role receives. Built from the masking rules file (rules/masking.yaml)."""

# SQL here is built from this package's own fragments, table names and timestamps formatted from
# datetimes; no ledger value or user-supplied text is ever inlined.
# ruff: noqa: S608

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from addons.config.rulefiles import ConfigError, parse_yaml
from reports.tables import sql_str

# How a cell reads and is coloured; anything else is shown as written, uncoloured.
ACTION_CLASS = {
    "clear": "m-clear", "allow": "m-clear", "none": "m-clear", "keep": "m-clear",
    "mask": "m-mask", "partial": "m-mask", "generalize": "m-mask", "generalise": "m-mask", "year": "m-mask",
    "detect": "m-mask", "tokenize": "m-token", "token": "m-token", "hash": "m-token", "pseudonymize": "m-token",
    "redact": "m-redact", "drop": "m-redact", "remove": "m-redact", "deny": "m-redact", "null": "m-redact",
}


@dataclass(frozen=True, slots=True)
class Matrix:
    source: str  # the rules file, as named to the reader
    roles: tuple[str, ...]
    rows: tuple[str, ...]  # fields or identifier types
    cells: dict[tuple[str, str], str] = field(default_factory=dict)  # (row, role) -> action
    default: str = "clear"  # what a role no rule covers receives
    error: str | None = None  # why the matrix could not be built (shown in the packet)
    notes: tuple[str, ...] = ()

    def action(self, row: str, role: str) -> str:
        return self.cells.get((row, role), self.default)

    def sql(self) -> str:
        """The matrix as a SQL VALUES query (for the packet's CSV/JSON data files)."""
        values = [
            f"({sql_str(r)}, {sql_str(role)}, {sql_str(self.action(r, role))})"
            for r in self.rows for role in self.roles
        ]
        if not values:
            return "SELECT NULL::VARCHAR AS field, NULL::VARCHAR AS role, NULL::VARCHAR AS receives WHERE false"
        return f"SELECT * FROM (VALUES {', '.join(values)}) m(field, role, receives)"

    def html(self) -> str:
        if self.error and not self.rows:
            return f'<p class="attention">Masking matrix unavailable: {escape(self.error)}</p>'
        head = "".join(f"<th>{escape(r)}</th>" for r in self.roles)
        body = []
        for row in self.rows:
            cells = []
            for role in self.roles:
                act = self.action(row, role)
                cls = ACTION_CLASS.get(act.split()[0].lower(), "")
                cells.append(f'<td class="{cls}">{escape(act)}</td>')
            body.append(f"<tr><th scope=\"row\">{escape(row)}</th>{''.join(cells)}</tr>")
        legend = (
            '<p class="legend"><span class="m-clear">clear</span> returned as stored · '
            '<span class="m-mask">mask</span> partly shown or generalised · '
            '<span class="m-token">tokenize</span> replaced by a consistent token · '
            '<span class="m-redact">redact/drop</span> removed · <b>detect</b>: recognised identifiers '
            "in free text masked · a role no rule covers gets "
            f"<b>{escape(self.default)}</b>; a caller without a verified identity gets every rule.</p>"
        )
        notes = "".join(f"<p class=\"note\">{escape(n)}</p>" for n in self.notes)
        return (
            '<table class="matrix"><caption>Role-to-field masking matrix</caption>'
            f"<thead><tr><th>field / identifier</th>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
            + legend + notes
        )


NO_IDENTITY = "(no identity)"
OTHER_ROLES = "(any other role)"
RECORD_KINDS = frozenset({"search", "get", "export"})
_OTHER = "\x00other"  # a role name no rule can mention
UNLISTED = "(any other field)"


def from_rules(source: str, compiled: Any, seen_roles: Iterable[str]) -> Matrix:
    """The matrix of the compiled MaskingRules (addons.config.masking_rules.compile_masking).

    Columns: every role the rules or the policy's role map name, every role seen in the period, any
    other role, and a caller without an identity (all rules apply: fail closed). Rows: each field,
    free-text documents, record ids and raw JSONPaths the rules target. A cell is the first rule in
    file order that covers the role; a rule limited to some operations or backends says so and the
    next rule decides the rest."""
    rules = list(compiled.rules)
    roles: set[str] = set(seen_roles)
    for r in rules:
        roles |= set(r.roles or ()) | set(r.roles_except)
    columns = (*sorted(roles), OTHER_ROLES, NO_IDENTITY)
    rows: list[str] = []
    for r in rules:
        targets = [*r.fields, *(["(documents)"] if r.documents else []), *(["(ids)"] if r.ids else []),
                   *(w.text for w in r.paths)]
        rows += [t for t in targets if t not in rows]
    rows.append(UNLISTED)

    def unlisted(role_set: frozenset[str] | None, row: str) -> str:
        """What a role receives of what no rule names: its `roles:` default (an allow-list)."""
        d = compiled.defaults_for(role_set)
        if d.default is None:
            return "clear"
        op = d.text if row == "(documents)" and d.text is not None else d.default
        return str(op.name)

    cells: dict[tuple[str, str], str] = {}
    for row in rows:
        for role in columns:
            role_set = None if role == NO_IDENTITY else frozenset({_OTHER if role == OTHER_ROLES else role})
            rest = unlisted(role_set, row)
            parts: list[str] = []
            for r in rules:
                if not _targets(r, row) or not _covers(r, role_set):
                    continue
                ops = set(r.operations or ())
                # Masking acts on the records a response carries, which only record-returning
                # operations return: a rule over all of them is unrestricted in effect.
                scope = ([] if ops >= RECORD_KINDS else sorted(ops)) + sorted(r.backends or ())
                parts.append(r.operator.name + (f" [{', '.join(scope)}]" if scope else ""))
                if not scope:
                    break
            else:
                if parts:
                    parts.append(f"{rest} otherwise")
            cells[(row, role)] = "; ".join(parts) if parts else rest
    # What each role receives of free text: the (documents) row, or its default when no rule names it.
    docs = {role: cells.get(("(documents)", role)) or unlisted(
        None if role == NO_IDENTITY else frozenset({_OTHER if role == OTHER_ROLES else role}), "(documents)")
        for role in columns}
    notes = _free_text_caveat(rows, docs, cells)
    subjects = ", ".join(compiled.subjects) or "none"
    notes += (f"Fields identifying a data subject (recorded as keyed references for the accounting of "
              f"disclosures): {subjects}.",)
    return Matrix(source, columns, tuple(rows), cells, "its role's default (roles: in masking.yaml)", None, notes)


def _free_text_caveat(rows: list[str], docs: dict[str, str], cells: dict[tuple[str, str], str]) -> tuple[str, ...]:
    """Mark field cells whose identifier still reaches the role in free text.

    A rule on the `ssn` field masks that field only: an SSN written in a note reaches every role whose
    documents are returned clear. The cell says so, so the matrix never claims a role cannot see an
    identifier that it receives in notes."""
    field_rows = [r for r in rows if r not in ("(documents)", "(ids)", UNLISTED) and not r.startswith("$")]
    exposed = [role for role, got in docs.items() if "clear" in got]
    changed = False
    for row in field_rows:
        for role in exposed:
            if cells[(row, role)] != "clear":
                cells[(row, role)] += "; in free text: clear"
                changed = True
    if not changed:
        return ()
    return (f"\"in free text: clear\": the rule masks the field, but free-text documents reach {', '.join(exposed)} "
            "without identifier detection, so the same identifier written in a note (an SSN, a phone number) "
            "is disclosed to them.",)


def _targets(rule: Any, row: str) -> bool:
    if row == "(documents)":
        return bool(rule.documents)
    if row == "(ids)":
        return bool(rule.ids)
    return row in rule.fields or any(w.text == row for w in rule.paths)


def _covers(rule: Any, roles: frozenset[str] | None) -> bool:
    if roles is None:
        return True
    if roles & rule.roles_except:
        return False
    return rule.roles is None or bool(roles & rule.roles)


def load(rules_file: Path, content: str | None, source: str, seen_roles: Iterable[str]) -> Matrix:
    """Compile masking rules with C's compiler: `content` (a version from the ledger) if given, else
    the file. A matrix that cannot be built is reported in the packet, never silently left out."""
    try:
        from addons.config.masking_rules import compile_masking
    except ImportError as exc:
        return Matrix(source, (), (), error=f"the masking rules compiler is not available ({exc})")
    try:
        text = content if content is not None else rules_file.read_text(encoding="utf-8")
    except OSError as exc:
        return Matrix(source, (), (), error=f"cannot read {rules_file} ({exc.strerror})")
    try:
        compiled = compile_masking(rules_file, parse_yaml(rules_file, text))
    except ConfigError as exc:
        return Matrix(source, (), (), error=exc.diagnostics())
    return from_rules(source, compiled, seen_roles)
