"""A labelled synthetic corpus of clinical notes for measuring free-text PHI detection.

Notes are assembled from sentence templates; every identifier inserted is recorded as a gold span
(start, end, type). Values come from Faker (seeded) in the formats Faker and real notes use, not in
the formats the detector was written for: phone numbers carry Faker's extensions and `001-`/`+1`
prefixes, dates come in eight styles, names come from several locales (so many are absent from the
detector's Census lexicon), addresses include units, multi-line forms, PO boxes and military
addresses. Sentences with no identifiers but plenty of numbers and capitalised clinical words
(doses, vitals, lab values, drug and ward names) measure precision.

Known limits of the corpus, stated rather than hidden: city names alone ("moved from Denver") and
organisation names are not generated; biometric identifiers and photos (Safe Harbor P, Q) do not
appear as text.
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable
from dataclasses import dataclass, field

from faker import Faker

TYPES = ("NAME", "ADDRESS", "ZIP", "DATE", "AGE", "PHONE", "FAX", "EMAIL", "SSN", "MRN", "HEALTH_PLAN",
         "ACCOUNT", "LICENSE", "VEHICLE", "DEVICE", "URL", "IP")


@dataclass
class Note:
    text: str = ""
    spans: list[tuple[int, int, str]] = field(default_factory=list)

    def add(self, text: str, typ: str | None = None) -> None:
        if typ is not None:
            self.spans.append((len(self.text), len(self.text) + len(text), typ))
        self.text += text


class Generator:
    def __init__(self, seed: int = 1234) -> None:
        self.rnd = random.Random(seed)
        Faker.seed(seed)
        self.fakers = {loc: Faker(loc) for loc in ("en_US", "en_GB", "es_MX", "en_IN", "it_IT", "de_DE",
                                                   "vi_VN", "ga_IE")}
        for i, f in enumerate(self.fakers.values()):
            f.seed_instance(seed + i)
        self.us = self.fakers["en_US"]

    # -- values --------------------------------------------------------------------------------------

    def name(self) -> str:
        loc = self.rnd.choices(list(self.fakers), weights=[55, 8, 12, 8, 4, 4, 4, 5])[0]
        f = self.fakers[loc]
        style = self.rnd.random()
        first, last = f.first_name(), f.last_name()
        if style < 0.75:
            return f"{first} {last}"
        if style < 0.85:
            return f"{first} {self.rnd.choice(string.ascii_uppercase)}. {last}"
        if style < 0.93:
            return f"{last}, {first}"
        return f"{first[0]}. {last}"

    def date(self) -> str:
        d = self.us.date_between(start_date="-90y", end_date="+1y")
        fmt = self.rnd.choice(["%Y-%m-%d", "%m/%d/%Y", "%-m/%-d/%Y", "%m/%d/%y", "%B %-d, %Y", "%b %-d, %Y",
                               "%-d %B %Y", "%d-%b-%Y", "%m-%d-%Y", "%B %Y"])
        return d.strftime(fmt)

    def phone(self) -> str:
        r = self.rnd.random()
        if r < 0.6:
            return self.us.phone_number()
        n = self.us.numerify("###-###-####")
        a, b, c = n.split("-")
        return self.rnd.choice([f"({a}) {b}-{c}", f"{a}.{b}.{c}", f"{a} {b} {c}", f"+1 ({a}) {b}-{c}"])

    def mrn(self) -> str:
        r = self.rnd.random()
        if r < 0.6:
            return self.us.numerify("#######")
        if r < 0.85:
            return self.us.numerify("########")
        return self.rnd.choice(["MR", "H", "AB"]) + self.us.numerify("######")

    def ssn(self) -> str:
        s = self.us.ssn()
        return s if self.rnd.random() < 0.8 else s.replace("-", " ")

    def address(self) -> str:
        r = self.rnd.random()
        if r < 0.45:
            return self.us.street_address()
        if r < 0.85:
            return self.us.address().replace("\n", self.rnd.choice([", ", "\n", " "]))
        if r < 0.93:
            return f"PO Box {self.us.numerify('####')}, {self.us.city()}, {self.us.state_abbr()} {self.us.zipcode()}"
        return f"{self.us.city()}, {self.us.state_abbr()} {self.us.zipcode()}"

    def plate(self) -> str:
        return self.us.license_plate()

    def vin(self) -> str:
        # Real North American VINs carry a check digit; some records hold foreign VINs without one.
        from addons.phi.detect.checks import vin_ok

        for _ in range(200):
            v = self.us.vin()
            if self.rnd.random() < 0.2 or vin_ok(v):
                return v
        return v

    def ident(self, letters: int, digits: int, sep: str = "") -> str:
        return "".join(self.rnd.choices(string.ascii_uppercase, k=letters)) + sep + self.us.numerify("#" * digits)

    # -- sentences -----------------------------------------------------------------------------------

    def sentences(self) -> list[Callable[[Note], None]]:
        r = self.rnd

        def s(*parts: tuple[str, str | None] | str) -> Callable[[Note], None]:
            def emit(note: Note) -> None:
                for p in parts:
                    if isinstance(p, str):
                        note.add(p)
                    else:
                        note.add(p[0], p[1])
            return emit

        title = r.choice(["Mr. ", "Mrs. ", "Ms. ", "", "", ""])
        provider = self.name()
        age = r.randint(90, 104)
        return [
            s(r.choice(["Patient ", "Pt. ", "Pt ", "Name: ", "Patient name: ", title or "Patient "]),
              (self.name(), "NAME"), r.choice([" presented with chest pain.", " is a pleasant patient.",
                                                " was seen today.", ", follow-up visit."])),
            s(r.choice(["MRN: ", "MRN ", "MRN#", "Medical record number ", "MR# ", "(MRN "]), (self.mrn(), "MRN"),
              r.choice([". ", ") ", "; "])),
            s(r.choice(["DOB: ", "Date of birth ", "born ", "Admitted on ", "Discharged ", "Seen on ",
                        "Last visit ", "Surgery scheduled for "]), (self.date(), "DATE"), "."),
            s(r.choice(["Phone: ", "Call ", "cell ", "Contact number ", "reachable at ", "Tel "]),
              (self.phone(), "PHONE"), r.choice([".", " (home).", " after 5pm."])),
            s(r.choice(["Fax: ", "fax ", "Fax results to "]), (self.phone(), "FAX"), "."),
            s(r.choice(["Email ", "email: ", "Contact via "]), (self.us.email(), "EMAIL"), "."),
            s(r.choice(["SSN ", "SSN: ", "Social security number "]), (self.ssn(), "SSN"), " on file."),
            s(r.choice(["Lives at ", "Address: ", "Home address ", "Mailing address: "]),
              (self.address(), "ADDRESS"), "."),
            s(r.choice(["ZIP ", "zip code ", "Postal code "]), (self.us.zipcode(), "ZIP"), "."),
            s(r.choice(["Patient is a ", "A ", "The patient, a "]), (f"{age}-year-old", "AGE"),
              r.choice([" woman", " man", " veteran"]), " with dementia."),
            s(r.choice(["Age: ", "aged "]), (str(age), "AGE"), "."),
            s(r.choice(["Member ID ", "Policy number ", "Medicaid ID: ", "Subscriber ID "]),
              (self.ident(r.randint(0, 3), r.randint(8, 11)), "HEALTH_PLAN"), "."),
            s(r.choice(["Account ", "Acct# ", "Billing account: ", "Account number "]),
              (self.us.numerify("#" * r.randint(7, 12)), "ACCOUNT"), "."),
            s(r.choice(["Driver's license ", "DL# ", "License number ", "State license "]),
              (self.ident(r.randint(0, 2), r.randint(6, 9)), "LICENSE"), "."),
            s(r.choice(["VIN ", "Vehicle identification number "]), (self.vin(), "VEHICLE"), "."),
            s(r.choice(["License plate ", "plate ", "Plate number "]), (self.plate(), "VEHICLE"),
              r.choice([" (blue sedan).", "."])),
            s(r.choice(["Pacemaker serial ", "Device serial number ", "Insulin pump S/N ", "Serial number: "]),
              (self.ident(r.randint(1, 3), r.randint(6, 10), r.choice(["", "-"])), "DEVICE"), "."),
            s(r.choice(["Portal: ", "See ", "Records uploaded to "]), (self.us.uri(), "URL"), "."),
            s(r.choice(["Login from ", "Device IP ", "Accessed from "]),
              (self.us.ipv4() if r.random() < 0.75 else self.us.ipv6(), "IP"), "."),
            s(r.choice(["Seen by Dr. ", "Signed: ", "Attending: Dr. ", "Referred by Dr. "]), (provider, "NAME"),
              r.choice([", MD.", ".", " (cardiology)."])),
            # Names with no cue word before them: only the lexicon or a credential can find these.
            s((self.name(), "NAME"), r.choice([" tolerated the procedure well.", " agrees with the plan.",
                                                " presented to clinic today.", " returned for review."])),
            s(r.choice(["Discussed plan with ", "Spoke with ", "Results reviewed with "]),
              (self.name(), "NAME"), r.choice([" today.", " and family.", "."])),
            s(r.choice(["Daughter ", "Wife ", "Son ", "Emergency contact: "]), (self.name(), "NAME"),
              r.choice([" is at bedside.", " will drive home.", " was updated by phone."])),
        ]

    def filler(self) -> str:
        r = self.rnd
        return r.choice([
            f"BP {r.randint(95, 180)}/{r.randint(55, 110)}, HR {r.randint(50, 120)}, SpO2 {r.randint(88, 100)}%.",
            f"Metformin {r.choice([500, 850, 1000])} mg BID; Lisinopril {r.choice([5, 10, 20])} mg daily.",
            f"HbA1c {r.randint(55, 110) / 10}%, LDL {r.randint(60, 190)} mg/dL, eGFR {r.randint(20, 110)}.",
            f"Follow up in {r.randint(2, 12)} weeks with Cardiology.",
            "Chest X-ray clear. Continue Atorvastatin. Emergency Department visit reviewed.",
            f"Allergies: Penicillin (rash). Weight {r.randint(45, 140)} kg, height {r.randint(150, 195)} cm.",
            f"ICD-10 E11.{r.randint(0, 9)}, I10. CPT 99214. Room {r.randint(100, 999)}, bed {r.choice('AB')}.",
            f"Temp {r.randint(360, 395) / 10} C at {r.randint(1, 12)}:{r.randint(10, 59)}. Pain {r.randint(0, 10)}/10.",
            "Assessment and Plan: Type 2 Diabetes Mellitus, Hypertension; Warfarin held, INR 2.4.",
            f"MRI Brain without contrast. Ordered CBC, BMP. Dose {r.randint(1, 4)} tabs q{r.choice([4, 6, 8])}h PRN.",
            "Patient denies fever. Physical Therapy consult placed. Diet: Cardiac.",
            f"Walked {r.randint(50, 400)} meters in {r.randint(3, 9)} minutes; Oxygen {r.randint(1, 4)} L NC.",
            # Confusers: eponyms, codes, versions, scores and ratios that look like identifiers.
            r.choice(["History of Crohn disease and Hodgkin lymphoma.", "Rule out Guillain-Barre syndrome.",
                      "Parkinson disease, on Sinemet.", "Graves disease treated in 2015.",
                      "Referred to Mayo Clinic neurology.", "Transferred from St. Joseph Hospital.",
                      "Apgar scores 8 and 9.", "Glasgow Coma Scale 15.", "Babinski sign negative."]),
            f"NDC {r.randint(1000, 9999)}-{r.randint(1000, 9999)}-{r.randint(10, 99)}; "
            f"lot expires {r.randint(1, 12)}/{r.randint(25, 30)}.",
            f"Pump firmware v{r.randint(1, 9)}.{r.randint(0, 9)}.{r.randint(0, 9)}.{r.randint(0, 99)}; "
            f"ratio {r.randint(1, 3)}:{r.randint(1, 9)}; take 1/2 tab at {r.randint(1, 12)}:{r.randint(10, 59)}.",
            f"Order #{r.randint(100000, 999999)} sent; specimen A{r.randint(10, 99)}-{r.randint(1000, 9999)}.",
            f"Stage {r.choice(['IIA', 'IIIB', 'IV'])}, ECOG {r.randint(0, 3)}, PHQ-9 score {r.randint(0, 27)}, "
            f"A1c goal < {r.randint(6, 8)}%.",
        ])

    def note(self) -> Note:
        n = Note()
        templates = self.sentences()
        k = self.rnd.randint(4, 8)
        chosen = self.rnd.sample(templates, k)
        for i, emit in enumerate(chosen):
            if i:
                n.add(" ")
            emit(n)
            if self.rnd.random() < 0.6:
                n.add(" " + self.filler())
        return n

    def corpus(self, count: int) -> list[Note]:
        notes = [self.note() for _ in range(count)]
        # Every template at least a few times, whatever the draw.
        for emit in self.sentences() * 3:
            n = Note()
            emit(n)
            n.add(" " + self.filler())
            notes.append(n)
        return notes


def corpus(count: int = 600, seed: int = 1234) -> list[Note]:
    return Generator(seed).corpus(count)


@dataclass
class Scores:
    tp: dict[str, int] = field(default_factory=dict)
    fn: dict[str, int] = field(default_factory=dict)
    fp: dict[str, int] = field(default_factory=dict)
    correct_pred: dict[str, int] = field(default_factory=dict)

    def recall(self, t: str) -> float:
        total = self.tp.get(t, 0) + self.fn.get(t, 0)
        return self.tp.get(t, 0) / total if total else float("nan")

    def precision(self, t: str) -> float:
        total = self.correct_pred.get(t, 0) + self.fp.get(t, 0)
        return self.correct_pred.get(t, 0) / total if total else float("nan")


# Types a reader would accept for one another (a fax found as a phone is still removed; a ZIP inside
# an address span is removed with it).
COMPATIBLE = {"FAX": {"FAX", "PHONE"}, "PHONE": {"PHONE", "FAX"}, "ZIP": {"ZIP", "ADDRESS"}}


def score(notes: list[Note], find: Callable[[str], list[tuple[int, int, str]]], cover: float = 0.8) -> Scores:
    """Recall: a gold span counts when predictions of a compatible type cover `cover` of its
    non-space characters. Precision: a prediction counts when it overlaps a gold span of a
    compatible type."""
    sc = Scores()
    for note in notes:
        preds = find(note.text)
        for s, e, t in note.spans:
            ok_types = COMPATIBLE.get(t, {t})
            chars = [i for i in range(s, e) if not note.text[i].isspace()]
            covered = sum(1 for i in chars if any(ps <= i < pe and pt in ok_types for ps, pe, pt in preds))
            key = "tp" if chars and covered / len(chars) >= cover else "fn"
            d = getattr(sc, key)
            d[t] = d.get(t, 0) + 1
        for ps, pe, pt in preds:
            good = any(ps < e and s < pe and (pt in COMPATIBLE.get(t, {t}) or t in COMPATIBLE.get(pt, {pt}))
                       for s, e, t in note.spans)
            d = sc.correct_pred if good else sc.fp
            d[pt] = d.get(pt, 0) + 1
    return sc
