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
    s = Section("disclosures", 0, "Accounting of disclosures")
    s.intro = (
        "Disclosures of PHI to callers (164.528) are recorded per request with keyed references of the "
        "data subjects, never the identifiers. The listing for one patient (date, recipient, description "
        "of the PHI, purpose, for the last six years) is produced on request with "
        "./run.sh report disclosures --subject VALUE. Below: what was disclosed in this period, in aggregate."
    )
    n, subjects, users = col.row(
        """SELECT count(*), (SELECT count(DISTINCT r) FROM (SELECT unnest(subject_refs) AS r FROM ev)),
                  count(DISTINCT subject)
           FROM ev WHERE len(coalesce(subject_refs, [])) > 0 AND decision = 'allow'"""
    )
    s.facts += [Fact("Responses disclosing identified PHI", n), Fact("Distinct data subjects (keyed refs)", subjects),
                Fact("Distinct recipients (users)", users)]
    s.tables.append(col.table(
        "disclosed_fields", "Fields disclosed unmasked, by role",
        """SELECT field, role, count(*) AS responses, count(DISTINCT subject) AS users
           FROM (SELECT unnest(fields_disclosed) AS field, subject,
                        unnest(CASE WHEN len(coalesce(roles, [])) = 0 THEN ['(no role)'] ELSE roles END) AS role
                 FROM ev WHERE decision = 'allow' AND len(coalesce(fields_disclosed, [])) > 0)
           GROUP BY ALL ORDER BY field, responses DESC, role""",
        numeric=("responses", "users"),
        empty_text="No field was disclosed unmasked in this period.",
    ))
    s.tables.append(col.table(
        "disclosure_purposes", "Disclosures by stated purpose",
        """SELECT coalesce(purpose, '(the deciding rule''s declared purpose)') AS purpose,
                  count(*) AS responses, count(DISTINCT subject) AS users
           FROM ev WHERE decision = 'allow' AND len(coalesce(subject_refs, [])) > 0
           GROUP BY ALL ORDER BY responses DESC, purpose""",
        numeric=("responses", "users"),
        empty_text="No identified PHI was disclosed in this period.",
    ))
    return s
