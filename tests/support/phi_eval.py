"""The evaluation corpus for free-text PHI detection: generator, loader and scorer.

    .phigate/venv/bin/python -m tests.support.phi_eval      # rewrites tests/fixtures/phi_eval/*.jsonl

The notes are written as a clinic's, a payer's and an agent's text is written, not as the detector
reads it: ten note kinds (discharge summaries, referral letters, nursing and social-work notes,
portal and SMS messages, voicemail transcripts, agent memories, insurance and intake forms, lab
reports), each from many hand-written templates; people of many origins (Faker's person lists from
45 locales, romanised Japanese and Chinese names, and names made up from syllables that no list
holds); lower-case chat; and one note in four with no identifier at all but dense look-alikes
(codes, doses, lab values, vitals, times, versions, lot and room numbers, eponyms, public numbers).
The labelling policy is tests/fixtures/phi_eval/README.md. The files are generated once and
committed: the detector is tuned on dev.jsonl only and judged on test.jsonl.
"""

from __future__ import annotations

import json
import random
import re
import string
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "phi_eval"
TYPES = ("NAME", "ADDRESS", "ZIP", "DATE", "AGE", "PHONE", "FAX", "EMAIL", "SSN", "MRN", "HEALTH_PLAN",
         "ACCOUNT", "LICENSE", "VEHICLE", "DEVICE", "URL", "IP", "OTHER_ID")
_IDS = {"MRN", "HEALTH_PLAN", "ACCOUNT", "LICENSE", "VEHICLE", "DEVICE", "OTHER_ID", "SSN"}
# Types a reader accepts for one another: a fax removed as a phone is removed; a ZIP inside an
# address span goes with it; any labelled number removed under another number's type is removed.
COMPATIBLE: dict[str, set[str]] = {"FAX": {"FAX", "PHONE"}, "PHONE": {"PHONE", "FAX"}, "ZIP": {"ZIP", "ADDRESS"},
                                   "ADDRESS": {"ADDRESS", "ZIP"}, **{t: _IDS for t in _IDS}}


@dataclass
class Note:
    id: str
    kind: str
    text: str
    spans: list[tuple[int, int, str]] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------- scoring

@dataclass
class Scores:
    tp: dict[str, int] = field(default_factory=dict)
    fn: dict[str, int] = field(default_factory=dict)
    fp: dict[str, int] = field(default_factory=dict)
    correct_pred: dict[str, int] = field(default_factory=dict)
    misses: list[tuple[str, str, str]] = field(default_factory=list)  # (note id, type, text)
    false: list[tuple[str, str, str]] = field(default_factory=list)

    def recall(self, t: str | None = None) -> float:
        tp = sum(self.tp.values()) if t is None else self.tp.get(t, 0)
        fn = sum(self.fn.values()) if t is None else self.fn.get(t, 0)
        return tp / (tp + fn) if tp + fn else float("nan")

    def precision(self, t: str | None = None) -> float:
        ok = sum(self.correct_pred.values()) if t is None else self.correct_pred.get(t, 0)
        bad = sum(self.fp.values()) if t is None else self.fp.get(t, 0)
        return ok / (ok + bad) if ok + bad else float("nan")

    def gold(self, t: str) -> int:
        return self.tp.get(t, 0) + self.fn.get(t, 0)


def score(notes: Iterable[Note], find: Callable[[str], list[tuple[int, int, str]]], cover: float = 0.8) -> Scores:
    """Recall: a gold span counts when predictions of a compatible type cover `cover` of its
    non-space characters. Precision: a prediction counts when it overlaps a gold span of a
    compatible type."""
    sc = Scores()
    for note in notes:
        preds = find(note.text)
        for s, e, t in note.spans:
            ok = COMPATIBLE.get(t, {t})
            chars = [i for i in range(s, e) if not note.text[i].isspace()]
            covered = sum(1 for i in chars if any(ps <= i < pe and pt in ok for ps, pe, pt in preds))
            hit = bool(chars) and covered / len(chars) >= cover
            d = sc.tp if hit else sc.fn
            d[t] = d.get(t, 0) + 1
            if not hit:
                sc.misses.append((note.id, t, note.text[s:e]))
        for ps, pe, pt in preds:
            good = any(ps < e and s < pe and (pt in COMPATIBLE.get(t, {t}) or t in COMPATIBLE.get(pt, {pt}))
                       for s, e, t in note.spans)
            d = sc.correct_pred if good else sc.fp
            d[pt] = d.get(pt, 0) + 1
            if not good:
                sc.false.append((note.id, pt, note.text[ps:pe]))
    return sc


def load(split: str) -> list[Note]:
    """The committed split `dev` or `test`."""
    out = []
    with open(FIXTURES / f"{split}.jsonl", encoding="utf-8") as fh:
        for line in fh:
            d = json.loads(line)
            out.append(Note(d["id"], d["kind"], d["text"], [tuple(s) for s in d["spans"]]))  # type: ignore[misc]
    return out


# -------------------------------------------------------------------------------------------- generation

_MARK = re.compile("\x02([A-Z_]+)\x03(.*?)\x04", re.DOTALL)


def _finish(raw: str) -> tuple[str, list[tuple[int, int, str]]]:
    out: list[str] = []
    spans = []
    pos = 0
    length = 0
    for m in _MARK.finditer(raw):
        before = raw[pos : m.start()]
        out.append(before)
        length += len(before)
        value = m.group(2)
        spans.append((length, length + len(value), m.group(1)))
        out.append(value)
        length += len(value)
        pos = m.end()
    out.append(raw[pos:])
    return "".join(out), spans


def v(typ: str, value: str) -> str:
    """`value` marked as an identifier of type `typ`."""
    return f"\x02{typ}\x03{value}\x04"


_LATIN_LOCALES = """
en_US en_GB en_IE en_IN en_KE en_NG en_NZ en_PK es_MX es_ES es_CO es_AR es_CL pt_BR pt_PT fr_FR fr_CA
de_DE de_AT it_IT pl_PL cs_CZ sk_SK hu_HU ro_RO hr_HR sl_SI tr_TR vi_VN id_ID nl_NL sv_SE no_NO da_DK
fi_FI et_EE lv_LV lt_LT tw_GH yo_NG zu_ZA ga_IE az_AZ is_IS fil_PH
""".split()
_ROMANISED = ("ja_JP", "zh_CN", "zh_TW")
_SYLLABLES = "ka ri to mo zu na el ban dro vi sha ko tem ul aya lin qu or fe dé ya gor ni sol mba tsi wen jo".split()
_CITIES = """
Fresno|CA Reno|NV Tucson|AZ Albuquerque|NM Boise|ID Spokane|WA Tacoma|WA Eugene|OR Modesto|CA Bakersfield|CA
Stockton|CA Oxnard|CA Provo|UT Ogden|UT Pueblo|CO Amarillo|TX Laredo|TX Waco|TX Lubbock|TX Shreveport|LA
Baton Rouge|LA Mobile|AL Dothan|AL Macon|GA Savannah|GA Gainesville|FL Ocala|FL Tallahassee|FL Asheville|NC
Durham|NC Roanoke|VA Lynchburg|VA Scranton|PA Allentown|PA Erie|PA Utica|NY Albany|NY Yonkers|NY Hartford|CT
Worcester|MA Lowell|MA Bangor|ME Burlington|VT Manchester|NH Akron|OH Dayton|OH Toledo|OH Flint|MI Lansing|MI
Kalamazoo|MI Gary|IN Muncie|IN Peoria|IL Joliet|IL Rockford|IL Madison|WI Duluth|MN Fargo|ND Sioux Falls|SD
Omaha|NE Wichita|KS Topeka|KS Joplin|MO Tulsa|OK Lawton|OK Little Rock|AR Jackson|MS Knoxville|TN Chattanooga|TN
Lexington|KY Huntington|WV Billings|MT Casper|WY Anchorage|AK Hilo|HI Camden|NJ Paterson|NJ Dover|DE
""".split()
_CITY_STATE = [c.replace("_", " ").split("|") for c in " ".join(_CITIES).replace("Baton Rouge", "Baton_Rouge")
               .replace("Little Rock", "Little_Rock").replace("Sioux Falls", "Sioux_Falls").split()]
_COUNTIES = "Washoe Maricopa Kern Tulare Cuyahoga Hennepin Travis Fulton Pima Yakima Dane Bexar Duval Polk".split()
_STREET_NAMES = """Maple Oakwood Cedar Pine Elm Willow Hickory Sycamore Magnolia Juniper Aspen Birch Chestnut
Dogwood Laurel Poplar Spruce Cypress Alder Linden Harbor Ridgeview Sunset Meadowlark Prospect Orchard
Kingsley Delancey Beacon Tremont Hollis Carver Whitmore Ashford""".split()
_SUFFIX = "St Street Ave Avenue Rd Road Blvd Dr Drive Ln Lane Ct Court Way Pl Terrace Pkwy Cir Trail".split()
_NO_SUFFIX = ["Camino Real", "Calle Ocho", "Via Lucca", "Broadway", "Rue Dauphine", "Paseo del Prado",
              "Avenida Juarez", "The Crescent", "Old Post", "Calle Luna"]
_EMPLOYERS = ["Kroger", "Walmart", "Tyson Foods", "Amazon", "Home Depot", "Safeway", "FedEx", "Costco"]
_NUM_WORDS = {90: "ninety", 91: "ninety-one", 92: "ninety-two", 93: "ninety-three", 94: "ninety-four",
              95: "ninety-five", 96: "ninety-six", 97: "ninety-seven", 98: "ninety-eight", 99: "ninety-nine"}
_MONTHS = "January February March April May June July August September October November December".split()
_DRUGS = """Lisinopril Metformin Atorvastatin Eliquis Xarelto Lasix Coumadin Keppra Depakote Zoloft Seroquel
Norco Percocet Tylenol Motrin Keflex Augmentin Bactrim Flomax Synthroid Prednisone Humalog Lantus Ozempic
Jardiance Entresto Plavix Protonix Zofran Ativan Haldol Narcan Suboxone Vancomycin Zosyn Ceftriaxone""".split()
_DEPTS = """Cardiology Nephrology Oncology Hematology Neurology Pulmonology Rheumatology Endocrinology Urology
Dermatology Psychiatry Orthopedics Radiology Hospice Palliative Care Wound Care Physical Therapy""".split()
_EPONYMS = ["Parkinson's disease", "Bell's palsy", "a Foley catheter", "Glasgow Coma Scale 15", "Apgar 8/9",
            "a Whipple procedure", "Graves' disease", "Hodgkin lymphoma", "negative Babinski", "Crohn's flare",
            "Hashimoto thyroiditis", "Alzheimer dementia", "Barrett esophagus", "Cushing syndrome",
            "a Swan-Ganz catheter", "Murphy's sign negative", "Kernig and Brudzinski negative", "Addison crisis",
            "Guillain-Barre", "Tinel sign", "Homans sign negative", "Epley maneuver", "Valsalva", "Trendelenburg",
            "Romberg positive", "McBurney point tenderness", "Kussmaul breathing", "Cheyne-Stokes respirations",
            "a Hickman line", "a Jackson-Pratt drain", "Wells score 1", "CHA2DS2-VASc 4", "Braden 14",
            "Morse fall score 45", "Down syndrome", "Tourette", "Marfan habitus", "Raynaud phenomenon"]
_PUBLIC = ["Poison Control 1-800-222-1222", "the 988 Suicide & Crisis Lifeline", "911",
           "1-800-MEDICARE (1-800-633-4227)", "the CDC at cdc.gov/flu", "https://www.cdc.gov/vaccines/",
           "medlineplus.gov", "the nurse line 1-800-555-0100 on the back of the card", "www.heart.org",
           "the FDA MedWatch line 1-800-332-1088", "https://www.nih.gov/health-information"]


class Generator:
    def __init__(self, seed: int) -> None:
        from faker import Faker

        self.r = random.Random(seed)
        Faker.seed(seed)
        self.fk: dict[str, Faker] = {}
        for i, loc in enumerate(_LATIN_LOCALES + list(_ROMANISED)):
            try:
                f = Faker(loc)
            except AttributeError:
                continue
            f.seed_instance(seed + i)
            self.fk[loc] = f
        self.us = self.fk["en_US"]

    # -- values -------------------------------------------------------------------------------------

    def person(self) -> tuple[str, str]:
        x = self.r.random()
        if x < 0.12:  # a name no list holds
            def made() -> str:
                return "".join(self.r.choice(_SYLLABLES) for _ in range(self.r.randint(2, 3))).capitalize()
            return made(), made()
        if x < 0.20:
            f = self.fk[self.r.choice(_ROMANISED)]
            return f.first_romanized_name(), f.last_romanized_name()
        loc = "en_US" if x < 0.38 else self.r.choice(_LATIN_LOCALES)
        f = self.fk.get(loc, self.us)
        first, last = f.first_name(), f.last_name()
        if " " in first:
            first = first.split()[0]
        return first, last

    def name(self, style: str | None = None) -> str:
        first, last = self.person()
        style = style or self.r.choice(["fl", "fl", "fl", "fml", "lf", "f", "title", "LFM", "fl"])
        if style == "fl":
            return v("NAME", f"{first} {last}")
        if style == "fml":
            return v("NAME", f"{first} {self.r.choice(string.ascii_uppercase)}. {last}")
        if style == "lf":
            return v("NAME", f"{last}, {first}")
        if style == "LFM":
            return v("NAME", f"{last.upper()}, {first.upper()} {self.r.choice(string.ascii_uppercase)}")
        if style == "f":
            return v("NAME", first)
        if style == "l":
            return v("NAME", last)
        title = self.r.choice(["Mr.", "Mrs.", "Ms.", "Mr", "Ms"])
        return f"{title} {v('NAME', last)}"

    def low_name(self) -> str:
        first, last = self.person()
        return v("NAME", f"{first.lower()} {last.lower()}" if self.r.random() < 0.5 else first.lower())

    def doctor(self) -> str:
        first, last = self.person()
        s = self.r.random()
        if s < 0.35:
            return f"Dr. {v('NAME', last)}"
        if s < 0.55:
            return f"Dr. {v('NAME', f'{first} {last}')}"
        if s < 0.75:
            return v("NAME", f"{first} {last}") + self.r.choice([", MD", " MD", ", NP", ", DO", " PA-C", ", RN"])
        if s < 0.9:
            return v("NAME", f"{first[0]}. {last}") + self.r.choice([" MD", ", MD", " DO"])
        return f"Dr {v('NAME', last)}"

    def date(self, style: str | None = None, year: tuple[int, int] = (2015, 2024)) -> str:
        y, m, d = self.r.randint(*year), self.r.randint(1, 12), self.r.randint(1, 28)
        mon = _MONTHS[m - 1]
        styles = {
            "us": f"{m:02d}/{d:02d}/{y}", "us_short": f"{m}/{d}/{y % 100:02d}", "iso": f"{y}-{m:02d}-{d:02d}",
            "slash_iso": f"{y}/{m:02d}/{d:02d}", "dotted": f"{d:02d}.{m:02d}.{y}", "long": f"{mon} {d}, {y}",
            "dmy": f"{d} {mon[:3]} {y}", "upper": f"{d:02d}-{mon[:3].upper()}-{y}", "md": f"{m}/{d}",
            "spaced": f"{m:02d} / {d:02d} / {y}", "mon_d": f"{mon[:3]} {d}", "ord": f"{d}th of {mon}",
            "us_dash": f"{m:02d}-{d:02d}-{y}",
        }
        style = style or self.r.choice(list(styles))
        return ("the " if style == "ord" else "") + v("DATE", styles[style])

    def dob(self) -> str:
        return self.date(self.r.choice(["us", "us", "iso", "long", "dotted", "upper", "us_short", "spaced"]),
                         year=(1925, 2005))

    def old_age(self) -> str:
        a = self.r.randint(90, 104)
        forms = [f"{a}-year-old", f"{a} year old", f"{a} y/o", f"{a}yo", f"{_NUM_WORDS.get(a, 'ninety')}-year-old"
                 if a < 100 else f"{a}-year-old", f"{a}F", f"{a}M", f"aged {a}", f"{a} years old"]
        return v("AGE", self.r.choice(forms))

    def area(self) -> int:
        """An area code a person's line can have: not toll-free (800, 833, ... 888 are organisations')."""
        while True:
            a = self.r.randint(201, 989)
            if a not in (800, 811, 822, 833, 844, 855, 866, 877, 888, 900, 911):
                return a

    def phone(self, style: str | None = None) -> str:
        a, b, c = self.area(), self.r.randint(200, 989), self.r.randint(0, 9999)
        styles = [f"({a}) {b}-{c:04d}", f"{a}-{b}-{c:04d}", f"{a}.{b}.{c:04d}", f"{a}/{b}-{c:04d}",
                  f"+1{a}{b}{c:04d}", f"{a}{b}{c:04d}", f"+1 {a} {b} {c:04d}", f"1-{a}-{b}-{c:04d}",
                  f"{a} {b} {c:04d}", f"({a}){b}-{c:04d} ext {self.r.randint(10, 999)}"]
        return v("PHONE", style or self.r.choice(styles))

    def fax(self) -> str:
        a, b, c = self.area(), self.r.randint(200, 989), self.r.randint(0, 9999)
        return v("FAX", self.r.choice([f"({a}) {b}-{c:04d}", f"{a}-{b}-{c:04d}", f"{a}.{b}.{c:04d}"]))

    def email(self, first: str = "", last: str = "") -> str:
        if not first:
            first, last = self.person()
        user = self.r.choice([f"{first}.{last}", f"{first[0]}{last}{self.r.randint(1, 99)}", f"{last}_{first}",
                              f"{first}{self.r.randint(1950, 2005)}"]).lower()
        user = re.sub(r"[^a-z0-9._]", "", user) or "pt"
        return v("EMAIL", f"{user}@{self.r.choice(['gmail.com', 'yahoo.com', 'outlook.com', 'icloud.com', 'aol.com', 'proton.me', 'comcast.net'])}")

    def ssn(self) -> str:
        a, b, c = self.r.randint(101, 665), self.r.randint(10, 99), self.r.randint(1000, 9999)
        return v("SSN", self.r.choice([f"{a}-{b}-{c}", f"{a} {b} {c}", f"{a}{b}{c}", f"{a}.{b}.{c}"]))

    def mrn(self) -> str:
        r = self.r
        return v("MRN", r.choice([str(r.randint(1000000, 99999999)), f"{r.randint(1000, 9999)}-{r.randint(100, 999)}-{r.randint(100, 999)}",
                                  f"CH-{r.randint(1000, 9999)}-{r.randint(1, 9)}", f"M{r.randint(100000, 9999999)}",
                                  f"00{r.randint(1000000, 9999999)}", f"E{r.randint(10000000, 99999999)}"]))

    def plan_id(self) -> str:
        r = self.r
        return v("HEALTH_PLAN", r.choice([f"{r.choice('HWXJ')}{r.randint(10000000, 999999999)}",
                                          f"{''.join(r.choices(string.ascii_uppercase, k=3))}{r.randint(100000000, 999999999)}",
                                          f"{r.randint(1, 9)}{r.choice('EGKQ')}{r.choice('A4C7')}{r.randint(0, 9)}-{r.choice('RTY')}{r.choice('K8M')}{r.randint(0, 9)}-{r.choice('UVW')}{r.choice('AX')}{r.randint(10, 99)}",
                                          f"{r.choice(['AB', 'CD', 'KL'])}{r.randint(10000, 99999)}{r.choice('KLMN')}",
                                          str(r.randint(10000000000, 99999999999))]))

    def account(self) -> str:
        r = self.r
        x = r.random()
        if x < 0.2:
            return f"FIN {v('ACCOUNT', str(r.randint(10000000, 99999999)))}"
        return v("ACCOUNT", r.choice([str(r.randint(100000, 9999999999)), f"{r.randint(1000, 9999)}-{r.randint(100000, 999999)}",
                                      f"HAR{r.randint(1000000, 9999999)}"]))

    def card(self) -> str:
        digits = [self.r.choice("456")] + [str(self.r.randint(0, 9)) for _ in range(14)]
        if digits[0] != "4":
            digits = ["3", self.r.choice("47"), *digits[2:14]]  # Amex: 15 digits
        total = 0
        for i, ch in enumerate(reversed(digits)):
            d = int(ch) * (2 if i % 2 == 0 else 1)
            total += d - 9 if d > 9 else d
        digits.append(str((10 - total % 10) % 10))
        s = "".join(digits)
        if len(s) == 15:
            return v("ACCOUNT", self.r.choice([s, f"{s[:4]} {s[4:10]} {s[10:]}", f"{s[:4]}-{s[4:10]}-{s[10:]}"]))
        return v("ACCOUNT", self.r.choice([s, " ".join(s[i : i + 4] for i in range(0, 16, 4))]))

    def licence(self) -> str:
        r = self.r
        return v("LICENSE", r.choice([f"{r.choice(string.ascii_uppercase)}{r.randint(1000000, 99999999)}",
                                      str(r.randint(100000000, 999999999)), f"{r.choice(['RN', 'LPN', 'CDL'])}{r.randint(100000, 999999)}",
                                      f"{r.randint(100, 999)}-{r.randint(100, 999)}-{r.randint(100, 999)}"]))

    def plate(self) -> str:
        r = self.r
        return v("VEHICLE", r.choice([f"{r.randint(1, 9)}{''.join(r.choices(string.ascii_uppercase, k=3))}{r.randint(100, 999)}",
                                      f"{''.join(r.choices(string.ascii_uppercase, k=3))}-{r.randint(1000, 9999)}",
                                      f"{''.join(r.choices(string.ascii_uppercase, k=3))} {r.randint(100, 999)}"]))

    def vin(self) -> str:
        return v("VEHICLE", self.us.vin() if hasattr(self.us, "vin") else "1HGCM82633A004352")

    def serial(self) -> str:
        r = self.r
        return v("DEVICE", r.choice([f"{''.join(r.choices(string.ascii_uppercase, k=3))}{r.randint(100000, 9999999)}",
                                     f"{r.randint(10, 99)}{r.choice(string.ascii_uppercase)}{r.randint(10000, 99999)}",
                                     ":".join(f"{r.randint(0, 255):02X}" for _ in range(6)),
                                     str(r.randint(100000000000000, 999999999999999))]))

    def other(self) -> str:
        r = self.r
        cue, val = r.choice([
            ("CSN", str(r.randint(100000000, 9999999999))), ("Accession #", f"{r.choice(['SP', 'CY', 'XR'])}-{r.randint(10, 24)}-{r.randint(10000, 99999)}"),
            ("Specimen ID", f"{r.randint(10, 24)}{r.choice(string.ascii_uppercase)}{r.randint(100000, 999999)}"),
            ("Pathology case", f"S{r.randint(15, 24)}-{r.randint(1000, 99999)}"), ("Order #", str(r.randint(10000000, 999999999))),
            ("Claim number", f"{r.randint(10, 99)}{r.randint(1000000000, 9999999999)}"), ("Rx #", str(r.randint(1000000, 9999999))),
            ("Study subject ID", f"{r.choice(['PRJ', 'TRL', 'STD'])}-{r.randint(100, 999)}-{r.randint(1000, 9999)}"),
            ("Employee ID", f"{r.choice(['E', 'EMP'])}{r.randint(10000, 999999)}"), ("DCF case #", f"{r.randint(10, 99)}-{r.randint(100000, 999999)}"),
            ("SNAP case no.", str(r.randint(100000000, 999999999))), ("A-number", f"A{r.randint(100000000, 999999999)}"),
            ("Ref #", f"{r.choice(['TX', 'RQ'])}{r.randint(1000000, 9999999)}"), ("Case ID", str(r.randint(100000, 99999999))),
        ])
        return f"{cue} {v('OTHER_ID', val)}"

    def street(self) -> str:
        r = self.r
        x = r.random()
        if x < 0.55:
            return f"{r.randint(2, 9899)} {r.choice(['', '', 'N ', 'S. ', 'West '])}{r.choice(_STREET_NAMES)} {r.choice(_SUFFIX)}"
        if x < 0.7:
            return f"{r.randint(2, 999)} {r.choice(_NO_SUFFIX)}"
        if x < 0.8:
            return f"RR {r.randint(1, 9)} Box {r.randint(1, 299)}"
        if x < 0.88:
            return f"{r.randint(100, 9999)} State Hwy {r.randint(1, 199)}"
        return f"PO Box {r.randint(10, 9999)}"

    def address(self) -> str:
        r = self.r
        city, st = r.choice(_CITY_STATE)
        zip_ = f"{r.randint(10000, 99950)}"
        unit = r.choice(["", "", "", f" Apt {r.randint(1, 40)}{r.choice(['', 'B'])}", f", Unit {r.randint(1, 300)}"])
        x = r.random()
        if x < 0.5:
            return v("ADDRESS", f"{self.street()}{unit}, {city}, {st} {zip_}")
        if x < 0.7:
            return v("ADDRESS", f"{self.street()}{unit}") + "\n" + v("ADDRESS", f"{city}, {st}") + " " + v("ZIP", zip_)
        if x < 0.85:
            return v("ADDRESS", f"{self.street()}{unit}, {city}")
        return v("ADDRESS", f"{self.street()}{unit}")

    def city(self) -> str:
        city, st = self.r.choice(_CITY_STATE)
        x = self.r.random()
        if x < 0.5:
            return v("ADDRESS", city)
        if x < 0.8:
            return v("ADDRESS", f"{city}, {st}")
        return v("ADDRESS", f"{self.r.choice(_COUNTIES)} County")

    def zip(self) -> str:
        return v("ZIP", f"{self.r.randint(10000, 99950)}")

    def url(self, first: str = "", last: str = "") -> str:
        if not first:
            first, last = self.person()
        h = re.sub(r"[^a-z]", "", (first + last).lower()) or "home"
        return v("URL", self.r.choice([f"https://www.facebook.com/{h}.{self.r.randint(1, 99)}", f"instagram.com/{h}_",
                                       f"https://{h}.blogspot.com/2021/03/my-story", f"www.gofundme.com/f/help-{h}",
                                       f"linkedin.com/in/{h}"]))

    def ip(self) -> str:
        r = self.r
        return v("IP", r.choice([f"{r.choice([10, 172, 192, 73, 98])}.{r.randint(0, 255)}.{r.randint(0, 255)}.{r.randint(1, 254)}",
                                 f"2601:{r.randint(100, 999)}:{r.randint(1000, 9999)}::{r.randint(10, 99)}"]))

    # -- hard negatives ---------------------------------------------------------------------------------

    def negatives(self, n: int) -> list[str]:
        r = self.r
        parts = [
            lambda: f"CPT {r.choice(['99213', '99214', '99285', '93000', '71046', '36415', '80053', '90471'])} billed",
            lambda: f"ICD-10 {r.choice(['E11.9', 'I10', 'N18.3', 'J44.1', 'F32.A', 'Z79.4', 'I48.91', 'M54.50'])}",
            lambda: f"NDC {r.randint(1000, 99999)}-{r.randint(100, 9999)}-{r.randint(10, 99)}",
            lambda: f"{r.choice(_DRUGS)} {r.choice([5, 10, 20, 25, 40, 81, 500, 1000])} mg {r.choice(['PO daily', 'BID', 'q8h PRN', 'at bedtime', 'IV once'])}",
            lambda: f"BP {r.randint(95, 180)}/{r.randint(50, 110)}, HR {r.randint(50, 130)}, RR {r.randint(12, 28)}, SpO2 {r.randint(88, 100)}% on {r.choice(['RA', '2L NC'])}",
            lambda: f"T {r.randint(36, 39)}.{r.randint(0, 9)} C, wt {r.randint(40, 140)}.{r.randint(0, 9)} kg",
            lambda: f"Na {r.randint(128, 146)}, K {r.randint(3, 5)}.{r.randint(0, 9)}, Cr {r.randint(0, 4)}.{r.randint(1, 9)}, Hgb {r.randint(7, 16)}.{r.randint(0, 9)}, WBC {r.randint(3, 19)}.{r.randint(0, 9)}",
            lambda: f"A1c {r.randint(5, 12)}.{r.randint(0, 9)}%, LDL {r.randint(40, 190)} mg/dL, eGFR {r.randint(15, 90)}, TSH {r.randint(0, 9)}.{r.randint(10, 99)}",
            lambda: f"meds given at {r.randint(0, 23):02d}:{r.randint(0, 59):02d} and {r.randint(1, 12)}:{r.randint(0, 59):02d} {r.choice(['AM', 'PM', 'pm'])}",
            lambda: f"portal app version {r.randint(1, 12)}.{r.randint(0, 9)}.{r.randint(0, 20)}.{r.randint(0, 200)} updated",
            lambda: f"{r.choice(['Flu', 'Tdap', 'COVID', 'Shingrix'])} vaccine lot {r.choice(string.ascii_uppercase)}{r.choice(string.ascii_uppercase)}{r.randint(1000, 9999)}, exp {r.randint(1, 12)}/{r.randint(2025, 2028)}",
            lambda: f"transferred to Room {r.randint(100, 999)}{r.choice(['', 'A', 'B'])}, bed {r.randint(1, 4)}",
            lambda: f"history of {r.choice(_EPONYMS)}",
            lambda: f"follow up with {r.choice(_DEPTS)} in {r.randint(1, 12)} {r.choice(['weeks', 'months'])}",
            lambda: f"resources: {r.choice(_PUBLIC)}",
            lambda: f"{r.randint(18, 89)}-year-old with {r.choice(['CHF', 'COPD', 'T2DM', 'CKD 3b', 'HFrEF (EF 30%)'])}",
            lambda: f"per {r.choice(['POLST', 'MOLST', 'protocol', 'Cardiology', 'ACLS'])} {r.choice(['guidance', 'orders', 'form on file'])}",
            lambda: f"{r.choice(['PATIENT INTAKE FORM', 'DISCHARGE INSTRUCTIONS', 'PROGRESS NOTE', 'Plan of Care', 'Medication Reconciliation'])}",
            lambda: f"Section {r.randint(1, 12)}.{r.randint(1, 9)} of form CMS-{r.choice(['1500', '485', '10114'])}",
            lambda: f"PHQ-9 score {r.randint(0, 27)}, GAD-7 {r.randint(0, 21)}, MoCA {r.randint(10, 30)}/30",
            lambda: f"{r.choice(['Metoprolol', 'Heparin', 'Insulin glargine'])} titrated from {r.randint(1, 20)} to {r.randint(21, 60)} units",
            lambda: f"{r.randint(2, 6)} of {r.randint(7, 12)} criteria met; ratio 1:{r.randint(2, 9)}; {r.randint(10, 99)}% improvement",
            lambda: f"Step {r.randint(1, 5)}: {r.choice(['Tylenol', 'Motrin', 'ice', 'rest'])} every {r.randint(4, 8)} hours",
            lambda: f"ECG: {r.choice(['NSR', 'afib RVR', 'sinus tach'])} at {r.randint(60, 150)}, QTc {r.randint(380, 520)} ms, PR {r.randint(120, 220)}",
            lambda: f"Discussed at {r.choice(['Tumor Board', 'Morning Report', 'Grand Rounds', 'Huddle'])} on {r.choice(['Monday', 'Tuesday', 'Thursday'])}",
            lambda: f"GCS {r.randint(3, 15)}, pain {r.randint(0, 10)}/10, {r.randint(2, 6)}+ edema, {r.randint(1, 4)}/6 murmur",
        ]
        return [r.choice(parts)() for _ in range(n)]

    # -- note kinds ---------------------------------------------------------------------------------------

    def discharge(self) -> str:
        r = self.r
        pt = self.name(r.choice(["fl", "fml", "LFM", "lf"]))
        lines = [r.choice(["DISCHARGE SUMMARY", "Discharge Summary", "HOSPITAL COURSE SUMMARY"]),
                 f"{r.choice(['Patient', 'Name', 'Pt'])}: {pt}    {r.choice(['MRN', 'Med Rec #', 'MR#', 'EMPI', 'Hospital #', 'Unit No.'])}: {self.mrn()}",
                 f"{r.choice(['DOB', 'Date of Birth', 'D.O.B.', 'Birthdate'])}: {self.dob()}",
                 f"Admitted: {self.date()}   Discharged: {self.date()}",
                 f"Attending: {self.doctor()}   PCP: {self.doctor()}", ""]
        body = [
            f"{r.choice(['Pt is a', 'This is a', 'The patient is a'])} {self.old_age() if r.random() < 0.4 else str(r.randint(30, 89)) + '-year-old'} {r.choice(['woman', 'man', 'veteran', 'retired teacher'])} admitted with {r.choice(['NSTEMI', 'CAP', 'DKA', 'hip fracture', 'GI bleed'])}.",
            f"Seen in consult by {self.doctor()} of {r.choice(_DEPTS)} on {self.date('md')}.",
            f"{r.choice(_DRUGS)} started; {'; '.join(self.negatives(2))}.",
            f"Lives with {r.choice(['her daughter', 'his son', 'her husband', 'his wife', 'a roommate'])} {self.name(r.choice(['f', 'fl']))} at {self.address()}.",
            f"Daughter {self.name('f')} ({self.phone()}) is the health care proxy.",
            f"{self.name('fl')} (niece) will drive him home.",
            f"Follow up with {self.doctor()} on {self.date('long')} at {r.randint(8, 4 + 12)}:{r.choice(['00', '15', '30', '45'])}.",
            f"Home health: {r.choice(['Visiting Nurse Service', 'Amedisys', 'BAYADA'])}, fax {self.fax()}.",
            f"Insurance: {r.choice(['Medicare', 'Humana', 'Aetna', 'BCBS'])} {r.choice(['ID', 'Member ID', 'Policy #'])} {self.plan_id()}.",
            f"Pacemaker {r.choice(['S/N', 'serial no.', 'SN'])} {self.serial()} interrogated, normal function.",
            f"{'; '.join(self.negatives(3))}.",
        ]
        r.shuffle(body)
        sign = f"Electronically signed by {self.doctor()} on {self.date()} {r.randint(0, 23):02d}:{r.randint(0, 59):02d}"
        return "\n".join(lines + body[: r.randint(6, len(body))] + ["", sign])

    def referral(self) -> str:
        r = self.r
        first, last = self.person()
        pt = v("NAME", f"{first} {last}")
        to = self.doctor()
        s = [f"{r.choice(['Re', 'RE', 'Regarding', 'Ref'])}: {pt}, {r.choice(['DOB', 'born'])} {self.dob()}",
             "",
             f"Dear {to},",
             "",
             f"Thank you for seeing {r.choice(['my patient', 'this pleasant', 'our mutual patient'])} {v('NAME', first) if r.random() < 0.5 else 'Mr. ' + v('NAME', last)}, "
             f"{r.choice(['a', 'an'])} {self.old_age() if r.random() < 0.3 else str(r.randint(20, 85)) + ' year old'} with {r.choice(['refractory AF', 'CKD stage 4', 'new thyroid nodule', 'uncontrolled T2DM'])}.",
             f"{'. '.join(self.negatives(3))}.",
             f"{v('NAME', first)} {r.choice(['works at', 'recently lost his job at', 'is employed by'])} {v('NAME', r.choice(_EMPLOYERS))} and lives in {self.city()}.",
             f"{r.choice(['She', 'He'])} can be reached at {self.phone()} or {self.email(first, last)}.",
             f"Records were faxed to {self.fax()} on {self.date()}.",
             "",
             r.choice(["Sincerely,", "Kind regards,", "With thanks,", "Best wishes,"]),
             self.doctor(),
             f"{r.choice(['Family Medicine', 'Internal Medicine', 'Riverside Primary Care'])} | NPI {v('OTHER_ID', str(r.choice(['1245319599', '1679576722', '1003000126', '1568476372'])))}"]
        return "\n".join(s)

    def nursing(self) -> str:
        r = self.r
        s = [f"{r.choice(['Nursing note', 'RN shift note', 'NURSING PROGRESS NOTE'])} {self.date()} {r.randint(0, 23):02d}{r.randint(0, 59):02d}",
             f"{r.choice(['Pt', 'Patient'])} {self.name(r.choice(['fl', 'title']))} {r.choice(['resting in bed', 'OOB to chair', 'ambulated in hall'])}. {'. '.join(self.negatives(2))}.",
             f"{r.choice(['Wife', 'Son', 'Daughter', 'Stepson', 'Neighbor', 'Her boyfriend', 'His girlfriend'])} {self.name(r.choice(['f', 'fl']))} at bedside, updated on plan.",
             f"{self.name('f')} ({r.choice(['brother of pt', 'pt daughter', 'grandson', 'caregiver'])}) called {self.phone()} asking for update.",
             f"{self.doctor()} notified of {r.choice(['K 5.9', 'BP 84/50', 'UOP 20 mL/h', 'new confusion'])} at {r.randint(1, 12)}:{r.randint(10, 59)}; orders received.",
             f"Interpreter {self.name('fl')} ({r.choice(['Spanish', 'Vietnamese', 'Tagalog', 'Somali', 'Polish'])}) used for teaching.",
             f"{'; '.join(self.negatives(3))}.",
             f"{r.choice(['Fall risk: Morse 55.', 'Skin intact.', 'Braden 16.'])} Room {r.randint(200, 899)}.",
             f"Report given to {self.name(r.choice(['f', 'fl']))}, RN."]
        r.shuffle(s)
        return "\n".join(s[: r.randint(5, len(s))])

    def social(self) -> str:
        r = self.r
        first, last = self.person()
        s = [f"SOCIAL WORK {r.choice(['ASSESSMENT', 'NOTE', 'FOLLOW-UP'])} - {self.date()}",
             f"Met with {v('NAME', f'{first} {last}')} and {r.choice(['her', 'his'])} {r.choice(['case worker', 'rep payee', 'stepdaughter', 'sister', 'fiancé', 'landlord'])} {self.name(r.choice(['fl', 'f']))}.",
             f"{v('NAME', first)} reports housing instability; currently staying at {self.address()}.",
             f"Previously lived in {self.city()}; moved here {r.randint(2, 9)} months ago.",
             f"{r.choice(['DCF', 'APS', 'CPS'])} involved, {self.other()}.",
             f"Applied for {r.choice(['SNAP', 'SSI', 'Medicaid'])}: {self.other()}; {r.choice(['Medicaid CIN', 'Medicaid ID', 'Tricare DBN', 'Member ID'])} {self.plan_id()}.",
             f"Income from {r.choice(['part-time work at', 'a job at'])} {v('NAME', r.choice(_EMPLOYERS))}; car {r.choice(['plate', 'reg', 'license plate'])} {self.plate()}.",
             f"Emergency contact: {self.name('fl')}, {self.phone()}.",
             f"{v('NAME', last)} family declined {r.choice(['hospice', 'SNF placement', 'home health'])} for now.",
             f"{'. '.join(self.negatives(2))}.",
             f"Plan: SW to follow; {r.choice(['call', 'text'])} {v('NAME', first)} on {self.date('mon_d')}."]
        return "\n".join(s[:2] + r.sample(s[2:], r.randint(5, len(s) - 2)))

    def portal(self) -> str:
        r = self.r
        first, last = self.person()
        greet = r.choice(["Hi", "Hello", "Dear", "Good morning"])
        s = [f"From: {v('NAME', f'{first} {last}')} <{self.email(first, last)}>",
             f"To: {r.choice(['Dr.', 'Nurse'])} {self.name('l')}",
             f"Subject: {r.choice(['refill', 'question about my labs', 'appointment', 'billing'])}",
             "",
             f"{greet} {self.name('f')},",
             f"{r.choice(['I had my labs drawn on', 'My last visit was', 'I was in the ER on'])} {self.date()} and {r.choice(['my potassium was 5.4', 'I still feel dizzy', 'the bill was wrong'])}.",
             f"{r.choice(['My new number is', 'You can call me at', 'Best number:'])} {self.phone()}.",
             f"{r.choice(['My husband', 'My wife', 'My son', 'My mom'])} {self.name('f')} {r.choice(['can pick up the script', 'will come with me', 'has my permission to talk to you'])}.",
             f"{r.choice(['Account', 'Billing acct', 'Guarantor #'])} {self.account()}; card ending {r.randint(1000, 9999)}.",
             f"{'. '.join(self.negatives(1))}.",
             "",
             r.choice(["Thanks,", "thanks,", "Thank you,", "Best,", "Regards,"]),
             v("NAME", first)]
        return "\n".join(s)

    def sms(self) -> str:
        r = self.r
        first, last = self.person()
        lines = [
            f"hey its {v('NAME', f'{first.lower()} {last.lower()}')} {r.choice(['from', 'i saw dr', 'pt of dr'])} {self.low_name() if r.random() < 0.5 else 'the clinic'}",
            f"my number changed its {self.phone(r.choice([None, f'{self.area()}{r.randint(2000000, 9899999)}']))}",
            f"can u send the refill to {v('ADDRESS', f'{r.randint(10, 999)} {r.choice(_STREET_NAMES).lower()} {r.choice(_SUFFIX).lower()}')}",
            f"my dob is {self.date(r.choice(['us', 'us_short', 'md']), (1930, 2004))}",
            f"{r.choice(['her brother', 'my sister', 'my aunt', 'my cousin', 'his mom'])} {self.low_name()} will call",
            f"my ssn is {v('SSN', str(r.randint(100000000, 665999999)))}" if r.random() < 0.4 else f"zip code is {self.zip()}",
            f"text me at {self.phone(f'+1{self.area()}{r.randint(2000000, 9899999)}')}",
            f"{r.choice(['took', 'missed'])} my {r.choice(_DRUGS).lower()} {r.choice([10, 20, 40])}mg at {r.randint(1, 12)}pm",
            f"im in {v('ADDRESS', r.choice(_CITY_STATE)[0].lower())} till {self.date('md')}",
            f"ok thx {r.choice(['-', '', '~'])}{v('NAME', first.lower())}",
        ]
        return "\n".join(r.sample(lines, r.randint(4, len(lines))))

    def voicemail(self) -> str:
        r = self.r
        first, last = self.person()
        s = [f"Voicemail transcript, received {self.date()} {r.randint(1, 12)}:{r.randint(10, 59)} {r.choice(['AM', 'PM'])}, {r.choice(['duration', 'length'])} 0:{r.randint(10, 59)}.",
             f"\"{r.choice(['Hi this is', 'Hello, this is', 'Yeah hi, my name is', 'Good afternoon, it is'])} {v('NAME', f'{first} {last}')}, "
             f"{r.choice(['date of birth', 'birthday', 'DOB'])} {self.dob()}. "
             f"I'm calling {r.choice(['about my mother', 'for my father', 'for myself', 'about my son'])} {self.name(r.choice(['fl', 'f']))}, "
             f"{r.choice(['she', 'he'])} is {self.old_age() if r.random() < 0.5 else 'sixty-two'} and {r.choice(['fell yesterday', 'needs a refill', 'has a fever', 'is confused'])}. "
             f"You can call me back at {self.phone()}, that's {r.choice(['my cell', 'the house', 'work'])}. "
             f"{r.choice(['The chart number is', 'Her medical record number is', 'His hospital number is'])} {self.mrn()}. Thanks, bye.\"",
             f"Caller {self.name('fl')} {r.choice(['left a callback number', 'requests a call'])}; routed to {r.choice(_DEPTS)}."]
        return "\n".join(s)

    def memory(self) -> str:
        r = self.r
        first, last = self.person()
        facts = [
            f"user's name is {self.low_name() if r.random() < 0.5 else v('NAME', f'{first} {last}')}",
            f"user prefers to be called {v('NAME', first)}",
            f"user's {r.choice(['wife', 'husband', 'daughter', 'partner', 'dad'])} is {self.name(r.choice(['f', 'fl']))}",
            f"user lives in {self.city()} near {self.address()}",
            f"user was born on {self.date('long', (1930, 2004))}",
            f"user's cardiologist is {self.doctor()}",
            f"user's insulin pump serial {self.serial()}",
            f"user mentioned {r.choice(['her brother', 'his sister', 'a friend', 'her sponsor'])} {self.low_name()} visits on weekends",
            f"user's email {self.email(first, last)}",
            f"user's blog {self.url(first, last)}",
            f"user logged in from {self.ip()}",
            f"user takes {r.choice(_DRUGS)} {r.choice([5, 10, 25])} mg; {self.negatives(1)[0]}",
            f"user's DL {self.licence()}",
            f"user works at {v('NAME', r.choice(_EMPLOYERS))}",
        ]
        picked = r.sample(facts, r.randint(4, 8))
        return "\n".join(f"- {f}" if r.random() < 0.6 else f"{f}." for f in picked)

    def form(self) -> str:
        r = self.r
        first, last = self.person()
        mi = r.choice(string.ascii_uppercase)
        title = r.choice(["PATIENT INTAKE FORM", "INSURANCE VERIFICATION", "New Patient Registration", "CLAIM FORM"])
        name_line = r.choice([f"Applicant: {v('NAME', f'{last.upper()}, {first.upper()} {mi}')}",
                              f"Name (Last, First): {v('NAME', f'{last}, {first}')}",
                              f"Patient Name: {v('NAME', f'{first} {mi}. {last}')}",
                              f"Identity check: {v('NAME', f'{first} {last}')}"])
        s = [title, name_line,
             f"DOB: {self.dob()}   Sex: {r.choice(['F', 'M', 'X'])}   SSN: {self.ssn()}",
             f"Address: {self.address()}",
             f"Home phone: {self.phone()}   Cell: {self.phone()}",
             f"Email: {self.email(first, last)}",
             f"Primary insurance: {r.choice(['Humana', 'Aetna', 'Cigna', 'UnitedHealthcare', 'Medicaid', 'Tricare'])}   {r.choice(['Humana ID', 'Member ID', 'Subscriber #', 'Medicaid CIN', 'Tricare DBN', 'Policy No.', 'ID#'])}: {self.plan_id()}   Group: {v('HEALTH_PLAN', str(r.randint(10000, 999999)))}",
             f"Subscriber: {self.name('fl')} ({r.choice(['spouse', 'self', 'parent'])})",
             f"Driver's license: {self.licence()} ({r.choice(['CA', 'TX', 'NY', 'FL'])})",
             f"Emergency contact: {self.name('fl')}   Relationship: {r.choice(['Sister', 'Son', 'Friend'])}   Phone: {self.phone()}",
             f"Employer: {v('NAME', r.choice(_EMPLOYERS))}   {r.choice(['Employee ID', 'Work ID'])}: {v('OTHER_ID', 'E' + str(r.randint(10000, 999999)))}",
             f"Card on file: {self.card()}",
             f"Vehicle (parking permit): VIN {self.vin()}",
             f"Signature: ______   Date: {self.date('us')}"]
        return "\n".join(s[:4] + r.sample(s[4:], r.randint(5, len(s) - 4)))

    def lab(self) -> str:
        r = self.r
        s = [r.choice(["LABORATORY REPORT", "Pathology Report", "MICROBIOLOGY"]),
             f"Patient: {self.name(r.choice(['LFM', 'lf', 'fl']))}   {r.choice(['MRN', 'MR #', 'EMPI'])}: {self.mrn()}   {r.choice(['DOB', 'Age/Sex'])}: {self.dob() if r.random() < 0.7 else self.old_age()}",
             f"{self.other()}   {self.other()}",
             f"Collected: {self.date(r.choice(['upper', 'us', 'iso']))} {r.randint(0, 23):02d}:{r.randint(0, 59):02d}   Received: {self.date(r.choice(['upper', 'us', 'iso']))}",
             f"Ordering: {self.doctor()}",
             *self.negatives(r.randint(3, 6)),
             f"Verified by {self.name('fl')}, {r.choice(['MT(ASCP)', 'MLS', 'MD'])} {self.date('us')}",
             f"Results portal: {self.url()}" if r.random() < 0.3 else f"Instrument {r.choice(['cobas', 'Architect', 'Alinity'])} s/n {self.serial()}"]
        return "\n".join(s)

    def negative_note(self) -> str:
        r = self.r
        head = r.choice(["PROGRESS NOTE", "Assessment and Plan", "PATIENT INTAKE FORM", "Clinic Protocol",
                         "Pharmacy Reference", "Nursing Education Handout", "Quality Report Q3", "Order Set"])
        body = self.negatives(r.randint(6, 12))
        return head + "\n" + "\n".join(f"{'- ' if r.random() < 0.5 else ''}{b}." for b in body)

    def build(self, count: int) -> list[Note]:
        kinds: list[tuple[str, Callable[[], str]]] = [
            ("discharge", self.discharge), ("referral", self.referral), ("nursing", self.nursing),
            ("social_work", self.social), ("portal", self.portal), ("sms", self.sms), ("voicemail", self.voicemail),
            ("agent_memory", self.memory), ("form", self.form), ("lab", self.lab)]
        notes = []
        for i in range(count):
            if i % 4 == 3:
                kind, make = "no_phi", self.negative_note
            else:
                kind, make = kinds[(i - i // 4) % len(kinds)]
            text, spans = _finish(make())
            notes.append(Note(f"{kind}-{i:04d}", kind, text, spans))
        return notes


def write(count: int = 1000, seed: int = 20261204) -> None:
    notes = Generator(seed).build(count)
    FIXTURES.mkdir(parents=True, exist_ok=True)
    order = list(range(len(notes)))
    random.Random(seed).shuffle(order)
    half = len(order) // 2
    for split, idx in (("dev", sorted(order[:half])), ("test", sorted(order[half:]))):
        part = [notes[i] for i in idx]
        with open(FIXTURES / f"{split}.jsonl", "w", encoding="utf-8") as fh:
            for n in part:
                fh.write(json.dumps({"id": n.id, "kind": n.kind, "text": n.text, "spans": n.spans},
                                    ensure_ascii=False) + "\n")


if __name__ == "__main__":
    write(*(int(a) for a in sys.argv[1:3]))
