"""Minimum necessary (164.502(b), 164.514(d)) and the accounting-of-disclosures summary (164.528):
the role-to-field masking matrix, what masking did, and what reached callers unmasked."""

# SQL here is built from this package's own fragments, table names and timestamps formatted from
# datetimes; no ledger value or user-supplied text is ever inlined.
# ruff: noqa: S608

from __future__ import annotations

from markupsafe import Markup

from reports import charts
from reports.matrix import Matrix
from reports.model import Fact, Section
from reports.tables import Collector

_BY_TYPE = "json_each(coalesce(masking->'by_type', '{}'))"
_BY_RULE = "json_each(coalesce(masking->'by_rule', '{}'))"


def masked_totals(col: Collector) -> tuple[int, int]:
    """(values masked, responses with at least one masked value) in the period."""
    masked = int(col.scalar(f"SELECT coalesce(sum(j.value::BIGINT), 0) FROM ev, {_BY_TYPE} j"))
    responses = int(col.scalar(
        "SELECT count(*) FROM ev WHERE len(json_keys(coalesce(masking->'by_type', '{}'))) > 0"
    ))
    return masked, responses


def minimum_necessary(col: Collector, matrix: Matrix) -> Section:
    s = Section("minimum-necessary", 0, "Minimum necessary: masking")
    s.intro = (
        "What each role receives from each field under the masking rules in force at the end of the period "
        "(rules file " + matrix.source + "), and how many values masking replaced in responses during the period."
    )
    masked, events_masked = masked_totals(col)
    s.facts += [Fact("Values masked", masked), Fact("Responses with masked values", events_masked)]
    if matrix.error:
        s.status, s.status_text = "attention", matrix.error
    s.html = Markup(matrix.html())  # noqa: S704 - Matrix.html escapes every value it inserts
    by_type = col.rows(
        f"SELECT j.key, sum(j.value::BIGINT) AS n FROM ev, {_BY_TYPE} j GROUP BY 1 ORDER BY n DESC, 1 LIMIT 20"
    )
    s.charts.append(charts.horizontal_bars(
        "Values masked by identifier type", [r[0] for r in by_type],
        [charts.Series("masked", charts.ACCENT, [r[1] for r in by_type])],
        empty_message="Nothing was masked in this period",
    ))
    for key, what, each in (("type", "identifier type", _BY_TYPE), ("rule", "masking rule", _BY_RULE)):
        s.tables.append(col.table(
            f"masking_by_{key}", f"Values masked by {what}",
            f"""SELECT j.key AS {what.replace(" ", "_")}, sum(j.value::BIGINT) AS values_masked,
                       count(*) AS responses
                FROM ev e, {each} j GROUP BY 1 ORDER BY values_masked DESC, 1""",
            numeric=("values_masked", "responses"),
            empty_text="Nothing was masked in this period.",
        ))
    # The matrix is drawn above as a grid; its table form is written for the CSV/JSON data files.
    s.data_tables.append(col.table("masking_matrix", "Role-to-field masking matrix", matrix.sql()))
    return s


def disclosures(col: Collector) -> Section:
    """Reads the `disclosed` view (reports.disclosures.create_view over the period's events)."""
    s = Section("disclosures", 0, "Accounting of disclosures")
    s.intro = (
        "Disclosures of PHI to callers (164.528): every response that reached a caller with identified PHI, "
        "whatever released it (a policy allow, an approved hold, an approver's grant, break-glass). Patients "
        "are recorded per response by keyed reference (one per patient), never by identifier. The listing "
        "for one patient (date, recipient, description of the PHI, purpose, for the last six years) is "
        "produced on request with ./run.sh report disclosures --subject MRN. Below: this period, in aggregate."
    )
    n, patients, users = disclosure_totals(col)
    s.facts += [Fact("Responses disclosing identified PHI", n), Fact("Distinct patients (keyed references)", patients),
                Fact("Distinct recipients (users)", users)]
    s.tables.append(col.table(
        "disclosures_by_release", "Disclosures by how they were released",
        """WITH n AS (SELECT released_by, count(*) AS responses, count(DISTINCT subject) AS users
                      FROM disclosed GROUP BY ALL),
                p AS (SELECT released_by, count(DISTINCT r) AS patients
                      FROM (SELECT released_by, unnest(subject_refs) AS r FROM disclosed) GROUP BY ALL)
           SELECT released_by, responses, patients, users FROM n JOIN p USING (released_by)
           ORDER BY responses DESC, released_by""",
        numeric=("responses", "patients", "users"),
        empty_text="No identified PHI was disclosed in this period.",
    ))
    # Fields and roles are unnested at two levels, so every field pairs with every role of the caller
    # (unnest() twice in one SELECT would pair them by position).
    s.tables.append(col.table(
        "disclosed_fields", "Fields disclosed unmasked, by role",
        """WITH f AS (SELECT node_id, seq, subject, unnest(fields_disclosed) AS field,
                             CASE WHEN len(coalesce(roles, [])) = 0 THEN ['(no role)'] ELSE roles END AS roles
                      FROM disclosed),
                fr AS (SELECT node_id, seq, subject, field, unnest(roles) AS role FROM f)
           SELECT field, role, count(DISTINCT (node_id, seq)) AS responses, count(DISTINCT subject) AS users
           FROM fr GROUP BY ALL ORDER BY field, responses DESC, role""",
        numeric=("responses", "users"),
        empty_text="No field was disclosed unmasked in this period.",
    ))
    s.tables.append(col.table(
        "disclosure_purposes", "Disclosures by purpose",
        """SELECT purpose, count(*) AS responses, count(DISTINCT subject) AS users
           FROM disclosed GROUP BY ALL ORDER BY responses DESC, purpose""",
        numeric=("responses", "users"),
        empty_text="No identified PHI was disclosed in this period.",
        note="Purpose: the caller's purpose-of-use claim or header, else the purpose the deciding rule declares.",
    ))
    return s


def disclosure_totals(col: Collector) -> tuple[int, int, int]:
    """(responses disclosing identified PHI, distinct patients, distinct recipients) in the period."""
    n, patients, users = col.row(
        """SELECT count(*), (SELECT count(DISTINCT r) FROM (SELECT unnest(subject_refs) AS r FROM disclosed)),
                  count(DISTINCT subject)
           FROM disclosed"""
    )
    return int(n), int(patients), int(users)
