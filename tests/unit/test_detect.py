"""Free-text detection: check digits, single cases, and recall/precision on the labelled corpus."""

from __future__ import annotations

import functools

import pytest

from addons.detect import Detector
from addons.detect_checks import dea_ok, luhn_ok, npi_ok, vin_ok
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
    from addons.detect import DetectConfig

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
