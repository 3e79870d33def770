"""Free-text detection: check digits, single cases, and recall/precision on the labelled corpus."""

from __future__ import annotations

import functools

import pytest

from addons.phi.detect.checks import dea_ok, luhn_ok, npi_ok, vin_ok
from addons.phi.detect.detector import Detector
from tests.support.phi_corpus import Scores, corpus, score

PATTERN_TYPES = ("PHONE", "EMAIL", "SSN", "MRN", "DATE", "IP", "URL")


def test_check_digits() -> None:
    assert vin_ok("1HGCM82633A004352") and not vin_ok("1HGCM82643A004352")
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert npi_ok("1234567893") and not npi_ok("1234567890")
    assert dea_ok("AB1234563") and not dea_ok("AB1234567")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Patient John Smith (MRN 1234567) presented", {("NAME", "John Smith"), ("MRN", "1234567")}),
        ("SSN 123-45-6789 on file", {("SSN", "123-45-6789")}),
        ("fax 217.555.0123, phone (217) 555-0199", {("FAX", "217.555.0123"), ("PHONE", "(217) 555-0199")}),
        ("VIN 1HGCM82633A004352", {("VEHICLE", "1HGCM82633A004352")}),
        ("from 10.2.3.4. ok", {("IP", "10.2.3.4")}),
        ("Pt is 93 y/o", {("AGE", "93 y/o")}),
        ("Lives at 4721 Oak Ridge Dr, Springfield, IL 62704.",
         {("ADDRESS", "4721 Oak Ridge Dr, Springfield, IL 62704")}),
    ],
)
def test_single_cases(text: str, expected: set[tuple[str, str]]) -> None:
    found = {(s.type, text[s.start : s.end]) for s in Detector().find(text)}
    assert expected <= found


@pytest.mark.parametrize("text", [
    "BP 120/80, HR 72, HbA1c 7.2%, Metformin 500 mg BID.",
    "Follow up in 2 weeks with Cardiology. ICD-10 E11.9, CPT 99214.",
    "Patient is 45 years old; age 67 at diagnosis.",
])
def test_clinical_numbers_are_not_identifiers(text: str) -> None:
    assert Detector().find(text) == []


def test_org_mrn_format_from_rules() -> None:
    from addons.phi.detect.detector import DetectConfig

    d = Detector(DetectConfig(mrn_pattern=r"H\d{6}", mrn_standalone=True))
    found = {(s.type, "x H123456 y"[s.start : s.end]) for s in d.find("x H123456 y")}
    assert ("MRN", "H123456") in found


@functools.cache
def _scores() -> Scores:
    d = Detector()
    return score(corpus(600, seed=1234), lambda t: [(s.start, s.end, s.type) for s in d.find(t)])


def test_corpus_has_every_type_and_enough_notes() -> None:
    notes = corpus(600, seed=1234)
    assert len(notes) >= 500
    seen = {t for n in notes for _, _, t in n.spans}
    assert seen >= {"NAME", "ADDRESS", "ZIP", "DATE", "AGE", "PHONE", "FAX", "EMAIL", "SSN", "MRN", "HEALTH_PLAN",
                    "ACCOUNT", "LICENSE", "VEHICLE", "DEVICE", "URL", "IP"}


@pytest.mark.parametrize("typ", PATTERN_TYPES)
def test_recall_pattern_types(typ: str) -> None:
    assert _scores().recall(typ) >= 0.98


@pytest.mark.parametrize("typ", ["NAME", "ADDRESS"])
def test_recall_names_and_addresses(typ: str) -> None:
    assert _scores().recall(typ) >= 0.90


@pytest.mark.parametrize("typ", [*PATTERN_TYPES, "NAME", "ADDRESS"])
def test_precision(typ: str) -> None:
    assert _scores().precision(typ) >= 0.85


def _by_scan(d: Detector, text: str) -> list[tuple[int, int, str, float]]:
    """What `Detector.find` must return, the slow way: every label pattern tried at every place one
    of its label words occurs, every number pattern at every run of digits, every other pattern
    scanned over the whole text. The detector only tries the places where a match can start."""
    import re

    from addons.phi.detect.detector import _RUNS, Span, resolve
    from addons.phi.detect.names import find_names

    low = text.lower()
    candidates = []
    for rec, keys, anchored in d._all:
        if anchored and len(low) == len(text):  # else lower() moved positions: scanned below
            places = sorted({m.start() for k in keys for m in re.finditer(f"(?={re.escape(k)})", low)})
            matches = [rec.pattern.match(text, i) for i in places]
        elif rec.digits:
            matches = [rec.pattern.match(text, m.start()) for m in _RUNS.finditer(text)]
        else:
            matches = list(rec.pattern.finditer(text))
        for m in matches:
            if not isinstance(m, re.Match) or (rec.validate is not None and not rec.validate(m)):
                continue
            s, e = m.span(rec.group)
            if e > s:
                candidates.append(Span(s, e, rec.retype(text, s) if rec.retype else rec.type, rec.score))
    candidates += [Span(s, e, typ, score) for s, e, score, typ in find_names(text)]
    return [(sp.start, sp.end, sp.type, sp.score) for sp in resolve(candidates)]


EDGE_TEXTS = [
    "x(555) 123-4567 and +1 555 123 4567, fax:(217)555-0123; 001-934-705-8278x12",
    "a@b.co,(c.d@e.org) http://x.com/a?b=1 see portal.health/login. www.x.io",
    "fe80::1 and ::1 and 2001:db8::ff00:42:8329 at 3:36, ratio 1:6, MRN: 1234567",
    "VIN:1HGCM82633A004352 1HGCM82633A004352x AB1234563 (AB1234563)",
    "SSN 123 45 6789 / 123-45 6789, DOB 03.04.1950 vs 03/04.1950, 5th of March 2020, 05-Mar-20",
    "Lives at 4721 N. Oak Ridge Dr Apt 5, Springfield, IL 62704\tPO Box 12, Troy, NY 12180",
    "Smith, John A. went home; Dr. O'Brien-Smith saw pt.\nJ. Smith, MD; seen by Ana de la Cruz",
    "card 4111 1111 1111 1111, ref 1EG4TE5MK73, 95 y/o, aged 101, acct# 5500-0000-0000-0004",
    "İstanbul 12 Main St, date of birth 1950-03-04; member id XG-1234-55; birth 04/05/88",
]


def test_fast_paths_find_what_a_full_scan_finds() -> None:
    from tests.support.phi_corpus import Generator

    d = Detector()
    gen = Generator(5)
    texts = [n.text for n in corpus(150, seed=99)] + EDGE_TEXTS
    texts += [" ".join(gen.note().text for _ in range(4)) for _ in range(20)]
    for text in texts:
        assert [(s.start, s.end, s.type, s.score) for s in d.find(text)] == _by_scan(d, text), text
