"""Free-text detection of Safe Harbor identifiers (45 CFR 164.514(b)(2)(i)) in documents and notes.

Recognisers are regexes compiled once, each with a type, a validator where a check digit or a
calendar exists, and, for numbers that look like any other number (an MRN, a member id, a licence,
a plate), a context cue that must sit just before the value ("MRN:", "Member ID", "plate"). Found
spans are resolved by score then length, so "DOB 03/04/1950" is one DATE, not a DATE and a number.

Organisation-specific formats (the MRN format, extra patterns) come from masking.yaml's `detect:`
section and are compiled with the rest at load.
"""

from __future__ import annotations

import bisect
import hashlib
import os
import re
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from addons.phi.detect import checks
from addons.phi.detect.lexicon import fold
from addons.phi.detect.lexicon import load as load_lexicon
from addons.phi.detect.names import find_names

TYPES = (
    "NAME", "ADDRESS", "ZIP", "DATE", "AGE", "PHONE", "FAX", "EMAIL", "SSN", "MRN", "HEALTH_PLAN",
    "ACCOUNT", "LICENSE", "VEHICLE", "DEVICE", "URL", "IP", "OTHER_ID",
)


CACHE_ENTRIES = 50_000


class Span(NamedTuple):
    """One identifier found: [start, end) of the text. A tuple, not a frozen dataclass: a note
    never seen before makes dozens of these, and a frozen dataclass's __init__ costs 3x more."""

    start: int
    end: int
    type: str
    score: float


@dataclass(frozen=True, slots=True)
class Recogniser:
    type: str
    pattern: re.Pattern[str]
    score: float = 0.9
    group: str | int = 0  # the part of the match that is the identifier
    validate: Callable[[re.Match[str]], bool] | None = None
    # Set on context-typed recognisers: a match's type may change with nearby words (phone vs fax).
    retype: Callable[[str, int], str] | None = None
    # Lower-case strings one of which every match contains: a text holding none of them is not
    # scanned with this pattern (a C-speed substring test instead of a Python regex pass).
    # Empty: always scan. Label patterns get theirs from their label words (see `literal_keys`).
    keys: tuple[str, ...] = ()
    # Every match starts at the start of a run of digits (or a '(' / '+' right before one): tried
    # only there, with `match`, instead of a regex pass over every character.
    digits: bool = False
    # A cheap pattern that must be found in the text first (the distinctive part of a costly one).
    gate: re.Pattern[str] | None = None
    # No match holds whitespace and every one holds a key (or, without keys, a match of `gate`):
    # only the whitespace-delimited words holding one are scanned, not the whole text (a pattern
    # with no fixed first character costs a regex attempt at every position of a scanned text).
    token: bool = False
    # Matches hold no digit, '@' or 'www.' ("ninety-two-year-old", "Washoe County"): tried on every
    # text, not only on texts holding one of those.
    wordy: bool = False


_MONTH_WORDS = (
    "Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?"
    "|Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?"
)
# Title case or upper case ("08-NOV-2019"), never lower case: "may" and "mar" are words.
_MONTH = f"(?:{_MONTH_WORDS}|{_MONTH_WORDS.upper()})"
_STATES = (
    "AL AK AZ AR CA CO CT DE FL GA HI ID IL IN IA KS KY LA ME MD MA MI MN MS MO MT NE NV NH NJ NM NY NC ND OH"
    " OK OR PA RI SC SD TN TX UT VT VA WA WV WI WY DC AS GU MP PR VI UM AA AE AP FM MH PW"
).split()


def _by_first_letter(words: Sequence[str]) -> str:
    """An alternation of `words` grouped by first letter, each group in the given order.

    The same matches in the same order of preference (words of different first letters never
    compete at one place), but `re` tries each alternative of a flat alternation one after the
    other: a street-suffix list of 300 words cost about a microsecond at every number it follows."""
    groups: dict[str, list[str]] = {}
    for w in words:
        groups.setdefault(w[0], []).append(re.escape(w[1:]))
    return "(?:" + "|".join(f"{re.escape(c)}(?:{'|'.join(rest)})" for c, rest in groups.items()) + ")"


_STATE = _by_first_letter(_STATES)
# "Lee, MD" is a credential and "Soft, ND" an exam finding: those need a ZIP to be a place.
_STATE_PLACE = _by_first_letter([s for s in _STATES if s not in ("MD", "PA", "MS", "AS", "PR", "ND")])
# USPS Publication 28, appendix C1 street suffixes (common and standard abbreviations).
_SUFFIXES = """
Alley Aly Annex Anx Arcade Arc Avenue Ave Av Bayou Byu Beach Bch Bend Bnd Bluff Blf Bluffs Blfs Bottom Btm
Boulevard Blvd Branch Br Bridge Brg Brook Brk Brooks Brks Burg Bg Burgs Bgs Bypass Byp Camp Cp Canyon Cyn
Cape Cpe Causeway Cswy Center Ctr Centers Ctrs Circle Cir Circles Cirs Cliff Clf Cliffs Clfs Club Clb
Common Cmn Commons Cmns Corner Cor Corners Cors Course Crse Court Ct Courts Cts Cove Cv Coves Cvs Creek Crk
Crescent Cres Crest Crst Crossing Xing Crossroad Xrd Crossroads Xrds Curve Curv Dale Dl Dam Dm Divide Dv
Drive Dr Drives Drs Estate Est Estates Ests Expressway Expy Extension Ext Extensions Exts Fall Falls Fls
Ferry Fry Field Fld Fields Flds Flat Flt Flats Flts Ford Frd Fords Frds Forest Frst Forge Frg Forges Frgs
Fork Frk Forks Frks Fort Ft Freeway Fwy Garden Gdn Gardens Gdns Gateway Gtwy Glen Gln Glens Glns Green Grn
Greens Grns Grove Grv Groves Grvs Harbor Hbr Harbors Hbrs Haven Hvn Heights Hts Highway Hwy Hill Hl Hills
Hls Hollow Holw Inlet Inlt Island Is Islands Iss Isle Junction Jct Junctions Jcts Key Ky Keys Kys Knoll
Knl Knolls Knls Lake Lk Lakes Lks Land Landing Lndg Lane Ln Light Lgt Lights Lgts Loaf Lf Lock Lck Locks
Lcks Lodge Ldg Loop Mall Manor Mnr Manors Mnrs Meadow Mdw Meadows Mdws Mews Mill Ml Mills Mls Mission Msn
Motorway Mtwy Mount Mt Mountain Mtn Mountains Mtns Neck Nck Orchard Orch Oval Overpass Opas Park Parks
Parkway Pkwy Parkways Pass Passage Psge Path Pike Pine Pne Pines Pnes Place Pl Plain Pln Plains Plns Plaza
Plz Point Pt Points Pts Port Prt Ports Prts Prairie Pr Radial Radl Ramp Ranch Rnch Rapid Rpd Rapids Rpds
Rest Rst Ridge Rdg Ridges Rdgs River Riv Road Rd Roads Rds Route Rte Row Rue Run Shoal Shl Shoals Shls
Shore Shr Shores Shrs Skyway Skwy Spring Spg Springs Spgs Spur Spurs Square Sq Squares Sqs Station Sta
Stravenue Stra Stream Strm Street St Streets Sts Summit Smt Terrace Ter Throughway Trwy Trace Trce Track
Trak Trafficway Trfy Trail Trl Trailer Trlr Tunnel Tunl Turnpike Tpke Underpass Upas Union Un Unions Uns
Valley Vly Valleys Vlys Viaduct Via Vw View Views Vws Village Vlg Villages Vlgs Ville Vl Vista Vis Walk
Walks Wall Way Ways Well Wl Wells Wls
""".split()
_SUFFIX = _by_first_letter(sorted(set(_SUFFIXES), key=len, reverse=True)) + r"\.?"
_CAPW = "[A-Z][A-Za-z'\u2019\\-]*"
_SP = "[ \\t]+"  # an address never runs across a line break (a year, a blank line, "Dear Dr. Cohen")
_UNIT = (
    r"(?:,?[ \t]*(?:Apt|Apartment|Suite|Ste|Unit|Bldg|Building|Floor|Fl|Room|Rm|Lot|#)\.?[ \t]*#?[ \t]*[A-Za-z0-9\-]+)"
)
_CITY_STATE_ZIP = (
    rf"(?:,?{_SP}(?:{_CAPW}{_SP}){{0,3}}{_CAPW},?{_SP}{_STATE}\b(?:{_SP}\d{{5}}(?:-\d{{4}})?)?)"
)
# A street's town without its state ("12 Main St, Springfield").
_CITY_TAIL = r"(?:,[ \t]*[A-Z][a-z]+(?:[ \t][A-Z][a-z]+)?(?![\w\-]))"
_LABEL_SEP = r"\s*(?:#|no\.?|num(?:ber)?\.?|id|nbr)?\s*(?:(?:is|was|of)\s+)?[:#=\-]?\s*"


def _label(words: str, value: str, flags: int = re.IGNORECASE) -> re.Pattern[str]:
    """`<label words> [#|no.|number] [:] <value>`: the value is group "v"."""
    return re.compile(rf"\b(?:{words}){_LABEL_SEP}(?P<v>{value})", flags)


def _ok_date(m: re.Match[str]) -> bool:
    g = m.groupdict()
    y, mo, d = g.get("y"), g.get("m"), g.get("d")
    if not (mo and d):
        return True
    year = int(y) if y else 2000
    if year < 100:
        year += 1900 if year > 30 else 2000
    return checks.date_ok(year, int(mo), int(d))


def _age_over_89(m: re.Match[str]) -> bool:
    return int(m.group("v")) >= 90


_PHONE_CUES = re.compile(r"fax|facsimile|phone|tel\b|cell|mobile|call|pager|contact", re.IGNORECASE)


def _phone_or_fax(text: str, start: int) -> str:
    # The nearest cue before the number decides: "fax 555-1111, phone 555-2222" holds one of each.
    cues = _PHONE_CUES.findall(text, max(0, start - 30), start)
    return "FAX" if cues and cues[-1].lower().startswith("fa") else "PHONE"


_ID_VALUE = r"(?=[A-Z0-9\-.]*\d)[A-Z0-9](?:[A-Z0-9]|[\-.](?=[A-Z0-9])){3,24}"


_VERSION_CUE = re.compile(r"(?:version|ver\.?|v|build|release|firmware|software|app|os|android|ios|chrome)\s*$",
                          re.IGNORECASE)


def _not_version(m: re.Match[str]) -> bool:
    """"app version 2.1.0.4" is not an address: a version cue just before the dotted number."""
    return _VERSION_CUE.search(m.string, max(0, m.start() - 16), m.start()) is None


# Public sites a note cites for patients (agencies, societies): not the individual's identifiers.
_PUBLIC_HOSTS = re.compile(
    r"(?:https?://)?(?:www\.)?(?:[a-z0-9\-]+\.)*(?:[a-z0-9\-]+\.(?:gov|mil|int)|heart\.org|cancer\.org"
    r"|mayoclinic\.org|medlineplus\.gov|who\.int|aap\.org|diabetes\.org|lung\.org|alz\.org|samhsa\.gov"
    r"|988lifeline\.org|poison\.org|clinicaltrials\.gov)(?![\w.\-])",
    re.IGNORECASE,
)


def _personal_url(m: re.Match[str]) -> bool:
    return _PUBLIC_HOSTS.match(m.group(0)) is None


# Public service numbers (poison control, crisis lines, Medicare): nobody's identifier.
_PUBLIC_NUMBERS = frozenset({"8002221222", "8006334227", "8003321088", "8002738255", "8006624357", "8009855990"})


_TOLL_FREE = frozenset({"800", "833", "844", "855", "866", "877", "888"})


def _not_public(m: re.Match[str]) -> bool:
    """Public and toll-free numbers belong to organisations, never to a patient."""
    digits = re.sub(r"\D", "", m.group(0))[-10:]
    return digits not in _PUBLIC_NUMBERS and digits[:3] not in _TOLL_FREE


_NOT_PLACES = frozenset(
    """the a an my his her their our this that bed pain room icu er ed hospital rehab jail town care treatment
    and but for with on at it is was be here there touch contact charge person school work home order
    stable good fair serious critical distress tears shock labor labour remission recovery agony trouble love
    class church court surgery traffic line bed bathroom kitchen hall lobby waiting clinic office car bus
    mood much more some any all too so very really just still also here now today tonight tomorrow time
    general private public section assisted foster group nursing skilled memory independent senior low
    transitional sober halfway supportive residential shelter housing""".split()
)


def _place(m: re.Match[str]) -> bool:
    words = m.group("v").split()
    return not any(w.lower() in _NOT_PLACES for w in words)


_DOSE = re.compile(r"\d+(?:\.\d+)?(?:mg|mcg|ug|ml|g|kg|mm|cm|iu|u|units?|tabs?|caps?|hrs?|h|min|x|yo|y)", re.IGNORECASE)


def _id_ok(m: re.Match[str], group: str = "v") -> bool:
    """A labelled identifier holds two digits and is not a dose or a duration ("Rx 500mg")."""
    value: str = m.group(group)
    return _has_digits(m, group=group) and _DOSE.fullmatch(value) is None


_EXPIRY = re.compile(r"(?:exp\.?|expiry|expires|expiration(?: date)?|use by|best by|lot \S+,?)\s*:?\s*$", re.IGNORECASE)


def _not_expiry(m: re.Match[str]) -> bool:
    """A lot's or a card's expiry ("exp 7/2028") dates a product, not a person."""
    return _EXPIRY.search(m.string, max(0, m.start() - 24), m.start()) is None


def _has_digits(m: re.Match[str], n: int = 2, group: str = "v") -> bool:
    value: str = m.group(group)
    return sum(ch.isdigit() for ch in value) >= n


BUILTIN: tuple[Recogniser, ...] = (
    # "jane dot doe at gmail dot com": an address spelled out so that filters miss it.
    Recogniser(
        "EMAIL",
        re.compile(r"\b[A-Za-z0-9_]+(?:[ \t]+dot[ \t]+[A-Za-z0-9_]+)*[ \t]+(?:at|\[at\]|\(at\))[ \t]+[A-Za-z0-9\-]+"
                   r"(?:[ \t]+dot[ \t]+[A-Za-z0-9\-]+)*[ \t]+dot[ \t]+(?:com|net|org|edu|gov|us|io|me|co|info)\b",
                   re.IGNORECASE),
        0.9,
        keys=(" dot ",),
        wordy=True,
    ),
    # A social media handle ("@janedoe77"): a web identifier of its own.
    Recogniser("URL", re.compile(r"(?<![\w.@])@[A-Za-z0-9_](?:[A-Za-z0-9_.]{1,28}[A-Za-z0-9_])\b"), 0.85, keys=("@",),
               token=True, wordy=True, validate=lambda m: fold(m.group(0)[1:]) not in load_lexicon().safe),
    Recogniser("EMAIL", re.compile(r"\b[A-Za-z0-9._%+\-]+@(?:[A-Za-z0-9\-]+\.)+[A-Za-z]{2,24}\b"), 0.99, keys=("@",),
               token=True),
    Recogniser(
        "URL",
        re.compile(r"\b(?:https?://|ftp://|www\.)[^\s<>\"'()\[\]{}]+[^\s<>\"'()\[\]{}.,;:!?]", re.IGNORECASE),
        0.95,
        validate=_personal_url,
    ),
    Recogniser(
        "URL",
        re.compile(
            r"\b(?:[a-z0-9\-]+\.)+(?:com|org|net|edu|gov|info|biz|io|us|health|care|mil|co)"
            r"/[^\s<>\"'()\[\]{}]*[^\s<>\"'()\[\]{}.,;:!?]",
            re.IGNORECASE,
        ),
        0.95,
        keys=tuple(f".{tld}/" for tld in "com org net edu gov info biz io us health care mil co".split()),
        token=True,
        validate=_personal_url,
    ),
    Recogniser(
        "IP",
        re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?!\w|\.\d)"),
        0.95,
        keys=(".",),
        digits=True,
        validate=lambda m: checks.ip_ok(m.group(0)) and _not_version(m),
    ),
    Recogniser(
        "IP",
        re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])"),
        0.95,
        keys=(":",),
        token=True,
        # Two groups ending in ':' follow each other in every match; times ("3:36") and labels
        # ("MRN:") put a ':' in nearly every note, this pair in few.
        gate=re.compile(r":[0-9A-Fa-f]{0,4}:"),
        validate=lambda m: m.group(0).count(":") >= 2 and checks.ip_ok(m.group(0)) and len(m.group(0)) > 6,
    ),
    Recogniser(
        "SSN",
        re.compile(r"(?<![\w-])(?!000|666)\d{3}([- ])(?!00)\d{2}\1(?!0000)\d{4}(?![\w-])"),
        0.9,
        digits=True,
    ),
    Recogniser(
        "SSN",
        # The last four digits, named as such ("SSN ending in 6789").
        re.compile(r"\b(?:SSN|SS#|social security(?: number| no\.?| #)?|social)[ \t]*"
                   r"(?:ending|ends|last[ \t]+(?:4|four))"
                   r"(?:[ \t]+(?:in|with|of|digits))*[ \t:#]*(?P<v>\d{4})\b", re.IGNORECASE),
        0.95,
        "v",
    ),
    Recogniser(
        "SSN",
        _label(r"SSN|SS#|S\.S\.N\.?|social security(?: number| no\.?| #)?|soc\.? sec\.?|social",
               r"\d{3}[- .]?\d{2}[- .]?\d{4}(?![\d\-])"),
        0.99,
        "v",
    ),
    Recogniser(
        "PHONE",
        re.compile(
            r"(?<![\w+-])(?:(?:\+?1|001)[ \t.\-]?)?(?:\(\d{3}\)[ \t]?\d{3}[ \t.\-]?|\d{3}[ \t.\-/]\d{3}[ \t.\-])\d{4}"
            r"(?:[ \t]*(?:x|ext\.?|extension)[ \t]*\d{1,6})?(?![\w-])",
            re.IGNORECASE,
        ),
        0.9,
        retype=_phone_or_fax,
        digits=True,
        validate=_not_public,
    ),
    # E.164 ("+13125550199") stands alone; ten bare digits after a cue ("text me at"), or alone when
    # they are a valid North American number (a labelled identifier of ten digits outscores this).
    Recogniser("PHONE", re.compile(r"\+1[2-9]\d{9}(?!\d)"), 0.9, digits=True),
    # International: a country code and groups of digits ("+353 87 123 4567", "+44 20 7946 0958").
    Recogniser("PHONE", re.compile(r"\+(?:[2-9]\d{0,2})[ \t.\-]?\(?\d{1,4}\)?(?:[ \t.\-]?\d{2,4}){2,4}(?![\w\-])"), 0.9,
               digits=True, validate=lambda m: 8 <= sum(c.isdigit() for c in m.group(0)) <= 15),
    Recogniser("PHONE", re.compile(r"(?<![\w\-./+])[2-9][0-8]\d[2-9]\d{6}(?![\w\-/])"), 0.6, digits=True,
               validate=lambda m: len(set(m.group(0))) > 3 and _not_public(m)),
    Recogniser(
        "PHONE",
        re.compile(
            r"\b(?:number|text(?:\s+me)?|call(?:\s+me)?|cell|mobile|phone|reach(?:\s+me)?|whatsapp|sms|changed)"
            r"(?:\s+(?:is|its|it's|at|on|to|changed|now|back|me|her|him|us))*[\s:]*(?P<v>(?:\+?1)?[2-9]\d{9})(?!\d)",
            re.IGNORECASE,
        ),
        0.9,
        "v",
        retype=_phone_or_fax,
    ),
    Recogniser(
        "PHONE",
        _label(
            r"phone|tel|telephone|cell|mobile|call(?:ed)?(?: (?:at|on))?|contact(?: number)?|pager|beeper"
            r"|ph|home|work|fax|facsimile|reach(?:ed|able)? at",
            r"(?:\+?1[\s.\-]?)?\(?\d{3}\)?[\s.\-/]?\d{3}[\s.\-]?\d{4}(?:\s*(?:x|ext\.?)\s*\d{1,6})?|\d{3}[\s.\-]\d{4}",
        ),
        0.95,
        "v",
        retype=_phone_or_fax,
        validate=_not_public,
    ),
    # Dates: ISO, US numeric, month names either side, day-month-year with a month abbreviation.
    Recogniser(
        "DATE",
        re.compile(
            r"(?<![\w/.-])(?P<y>(?:19|20)\d{2})-(?P<m>0?[1-9]|1[0-2])-(?P<d>0?[1-9]|[12]\d|3[01])"
            r"(?:[T ]\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?(?![\w/-])"
        ),
        0.95,
        keys=("-",),
        validate=_ok_date,
        digits=True,
    ),
    Recogniser(
        "DATE",
        re.compile(
            r"(?<![\w/.-])(?P<m>0?[1-9]|1[0-2])(?P<sep>[/.\-])(?P<d>0?[1-9]|[12]\d|3[01])(?P=sep)"
            r"(?P<y>(?:19|20)?\d{2})(?![\w/-]|\.\d)"
        ),
        0.9,
        validate=_ok_date,
        digits=True,
    ),
    Recogniser(
        "DATE",
        # Year first with slashes or dots ("2021/04/09"), day first with dots ("23.05.2021"), spaced
        # numbers ("09 / 11 / 1950").
        re.compile(
            r"(?<![\w/.-])(?:(?P<y>(?:19|20)\d{2})(?P<s1>[/.])(?P<m>0?[1-9]|1[0-2])(?P=s1)(?P<d>0?[1-9]|[12]\d|3[01])"
            r"|(?P<d2>0?[1-9]|[12]\d|3[01])\.(?P<m2>0?[1-9]|1[0-2])\.(?P<y2>(?:19|20)\d{2})"
            r"|(?P<m3>0?[1-9]|1[0-2])[ \t]+/[ \t]+(?P<d3>0?[1-9]|[12]\d|3[01])[ \t]+/[ \t]+(?P<y3>(?:19|20)?\d{2}))"
            r"(?![\w/-]|\.\d)"
        ),
        0.9,
        validate=lambda m: _ok_date(m) and checks.date_ok(
            int(m.group("y2") or 2000), int(m.group("m2") or 1), int(m.group("d2") or 1)),
        digits=True,
    ),
    Recogniser(
        "DATE",
        # Month and day alone ("signed 2/3") after a word that introduces a date: a bare "2/3" is as
        # often a fraction, a score or a ratio.
        re.compile(
            r"\b(?:on|since|signed|dated|till|until|thru|through|from|by|due|before|after|date|dob|born|birthday"
            r"|admitted|discharged|visit|seen|returned|starting|last|next|cath|surgery|appt|review"
            r"|note|call|called|update|f/u|appointment|scan|echo|labs|procedure|scheduled|planned)"
            r"(?:[ \t]+(?:is|was|on|of))?[ \t:]+(?:the[ \t]+)?(?P<v>(?:0?[1-9]|1[0-2])/(?:0?[1-9]|[12]\d|3[01]))"
            # Not a fraction, a score or a dose range ("from 1/2 to 1 tab").
            r"(?![\d/]|\.\d|[ \t]*(?:pain|scale|murmur|strength|criteria|score|tabs?|tablets?|caps?|cups?|doses?"
            r"|of\b)|[ \t]*(?:to|-)[ \t]*\d+(?![\d/]))",
            re.IGNORECASE,
        ),
        0.85,
        "v",
    ),
    Recogniser(
        "DATE",
        # A month with a two-digit year that cannot be a day ("CABG in 3/80"), after a word that
        # introduces a date.
        re.compile(r"\b(?:in|since|from|until|till|by|of|on|dated)[ \t]+"
                   r"(?P<v>(?:0?[1-9]|1[0-2])/[4-9]\d)(?![\d/]|\.\d)"),
        0.85,
        "v",
    ),
    Recogniser(
        "DATE",
        # A month alone is an element of a date ("not seen since November"). Never "May" (a verb),
        # and never before a number (a full date, found above).
        re.compile(r"\b(?:in|since|until|till|by|from|during|early|late|mid|last|next|this|of|on|before|after)"
                   r"[ \t]+(?P<v>(?:January|February|March|April|June|July|August|September|October|November"
                   r"|December))\b(?![ \t]*,?[ \t]*\d)"),
        0.8,
        "v",
        wordy=True,
    ),
    Recogniser(
        "DATE",
        # Chat writes months in lower case ("october 4th 1990"); never "may", a verb.
        re.compile(r"\b(?:january|february|march|april|june|july|august|september|sept|october|november|december)"
                   r"[ \t]+\d{1,2}(?:st|nd|rd|th)?\b(?![ \t]*(?:mg|ml|units?|tabs?|pills?|%"
                   r"|miles?|km|times|days?|weeks?|months?|years?|hours?|min(?:ute)?s?|steps|blocks|laps|reps|lbs?"
                   r"|pounds|kg)\b)(?:,?[ \t]+(?:19|20)\d{2}\b)?"),
        0.85,
        keys=("january", "february", "march", "april", "june", "july", "august", "september", "october", "november",
              "december"),
    ),
    Recogniser(
        "NAME",
        # A dictation line's typists and their user names ("GPP/church/olinger", "XGT:holmes").
        re.compile(r"^[ \t]*[A-Z]{2,4}[:/][a-z]{2,}(?:/[a-z]{2,})*[ \t]*$", re.MULTILINE),
        0.8,
        keys=("/", ":"),
        wordy=True,
    ),
    Recogniser(
        "PHONE",
        re.compile(r"\b(?:pager|beeper|bleep|ext\.?|extension)[ \t]*#?:?[ \t]*(?P<v>\d{4,5})\b(?![\-/.]\d)",
                   re.IGNORECASE),
        0.85,
        "v",
    ),
    Recogniser(
        "DATE",
        # Month first: "March 5, 2020", "Mar 5", "March 2020".
        re.compile(
            rf"\b{_MONTH}\.?(?:\s+\d{{1,2}}(?:st|nd|rd|th)?(?:,?\s+(?:19|20)\d{{2}}\b|,?[ \t]*['\u2019]\d{{2}}(?!\d))?"
            rf"|,?\s+(?:19|20)\d{{2}})\b"
        ),
        0.85,
    ),
    Recogniser(
        "DATE",
        # Day first: "5 March 2020", "5th of March", "05-Mar-20"; and month/year "03/2020".
        re.compile(
            rf"\b\d{{1,2}}(?:st|nd|rd|th)?(?:\s+of)?[ \t]+{_MONTH}\.?,?(?:[ \t]+(?:19|20)\d{{2}})?\b"
            rf"|\b\d{{1,2}}-{_MONTH}-(?:(?:19|20)?\d{{2}})\b"
            rf"|\b(?:0?[1-9]|1[0-2])/(?:19|20)\d{{2}}\b"
        ),
        0.85,
        validate=_not_expiry,
        keys=("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec", "/"),
        digits=True,
    ),
    Recogniser(
        "DATE",
        _label(r"DOB|D\.O\.B\.|date of birth|born(?: on)?|birth ?date|DOD|date of death|admitted(?: on)?"
               r"|discharged(?: on)?|date of service|DOS",
               r"\d{1,2}[/.\-]\d{1,2}[/.\-]\d{2,4}|\d{4}[/.\-]\d{1,2}[/.\-]\d{1,2}|\d{8}"),
        0.97,
        "v",
    ),
    Recogniser(
        "AGE",
        re.compile(r"\b(?P<v>9\d|1[01]\d)(?:\s*|-)(?:years?|yrs?|y/?o|yo|year-old|-year-old)\b(?:[ \t-]+old\b)?",
                   re.IGNORECASE),
        0.95,
        validate=_age_over_89,
        keys=("year", "yr", "y/o", "yo"),
        digits=True,
    ),
    Recogniser(
        "AGE",
        # "age 90+" is already the generalised form: never masked again.
        re.compile(r"\b(?:age[ds]?|aged|died at|death at|passed away at|deceased at)\s*[:=]?\s*"
                   r"(?P<v>9\d|1[01]\d)\b(?!\+)",
                   re.IGNORECASE),
        0.95,
        validate=_age_over_89,
    ),
    Recogniser(
        "AGE",
        # "she's 92", "he turned 101": an age over 89 said of a person, without "years".
        re.compile(r"\b(?:she|he|they|pt|patient|who|mom|dad|mother|father)"
                   r"(?:'s|\u2019s|[ \t]+is|[ \t]+was|[ \t]+turned|[ \t]+turns|[ \t]+is now)[ \t]+"
                   r"(?P<v>9\d|1[01]\d)\b(?![ \t]*(?:%|mg|kg|lbs?|bpm|/|\.\d|degrees|\u00b0))",
                   re.IGNORECASE),
        0.9,
        "v",
        validate=_age_over_89,
    ),
    Recogniser(
        "AGE",
        # Decades and words that say "over 89" on their own; a person's decade only: "sats in the
        # 90s" and "BP in the mid 90s" are readings.
        re.compile(r"\b(?:(?:in|into)[ \t]+(?:his|her|their|my)[ \t]+"
                   r"(?:late[ \t]+|early[ \t]+|mid[ \t-]*)?"
                   r"(?:90s|nineties|100s|hundreds)|(?:super)?centenarian|nonagenarian)\b", re.IGNORECASE),
        0.9,
        keys=("90s", "nineties", "100s", "hundreds", "centenarian", "nonagenarian"),
        wordy=True,
    ),
    Recogniser(
        "AGE",
        re.compile(r"\b(?:ninety|one hundred(?: and)?)(?:[- ](?:one|two|three|four|five|six|seven|eight|nine))?"
                   r"[- ](?:years?[- ]old|y/?o\b)", re.IGNORECASE),
        0.95,
        keys=("ninety", "hundred"),
        wordy=True,
    ),
    Recogniser("AGE", re.compile(r"(?P<v>9\d|1[01]\d)(?:F|M|Y|yo[FM]|y/o[FM]?)\b"), 0.9, validate=_age_over_89,
               digits=True),
    Recogniser(
        "ADDRESS",
        re.compile(
            rf"\b\d{{1,6}}[A-Z]?{_SP}(?:(?:[NSEW]|North|South|East|West|NE|NW|SE|SW)\.?{_SP})?"
            rf"(?:{_CAPW}{_SP}){{0,3}}{_SUFFIX}(?![A-Za-z]){_UNIT}?(?:{_CITY_STATE_ZIP}|{_CITY_TAIL})?"
        ),
        0.9,
        digits=True,
    ),
    Recogniser(
        "ADDRESS",
        # Streets named without a USPS suffix: other languages' street words, highways, rural routes.
        re.compile(
            rf"\b\d{{1,6}}{_SP}(?:(?:Camino|Calle|Via|Avenida|Av\.|Paseo|Rue|Rua|Carrera|Calzada|Strada|Chemin"
            rf"|Broadway|Boardwalk|The)(?:{_SP}(?:del|de|la|los|las|dos|do|da|di)\b)?(?:{_SP}{_CAPW}){{0,2}}"
            rf"|(?:State|US|U\.S\.|County|Co\.|Farm to Market|FM|Interstate){_SP}(?:Hwy|Highway|Route|Rte|Road|Rd)\.?"
            rf"{_SP}\d{{1,4}}|{_CAPW}{_SP}(?:Hwy|Highway|Route|Rte)\.?{_SP}\d{{1,4}})"
            rf"{_UNIT}?(?:{_CITY_STATE_ZIP}|{_CITY_TAIL})?"
        ),
        0.9,
        digits=True,
    ),
    Recogniser(
        "ADDRESS",
        re.compile(rf"\b(?:RR|R\.R\.|HC|Rural Route|Star Route){_SP}?\d{{1,3}},?{_SP}Box{_SP}\d{{1,5}}{_UNIT}?"
                   rf"(?:{_CITY_STATE_ZIP}|{_CITY_TAIL})?",
                   re.IGNORECASE),
        0.9,
        keys=("box",),
    ),
    Recogniser(
        "ADDRESS",
        re.compile(rf"\b(?:State|US|U\.S\.|County|Farm to Market|FM){_SP}(?:Hwy|Highway|Route|Rte|Road|Rd)\.?"
                   rf"{_SP}\d{{1,4}}\b"),
        0.88,
        keys=("hwy", "highway", "route", "rte", "road", "rd"),
    ),
    Recogniser(
        "ADDRESS",
        # A street named without a number after "on", "off", "at", "near" ("on Veterans Pkwy").
        re.compile(r"\b(?:on|off|at|near|along)[ \t]+(?P<v>(?:[A-Z][a-z]+[ \t]){1,3}(?:St|Street|Ave|Avenue|Rd|Road"
                   r"|Blvd|Boulevard|Ln|Lane|Pkwy|Parkway|Hwy|Highway|Drive|Way|Ct|Court|Pl|Place|Ter|Terrace|Cir"
                   r"|Circle|Trail)\b\.?)"),
        0.88,
        "v",
    ),
    Recogniser(
        "ADDRESS",
        # Town, state and ZIP in lower case ("boise id 83702").
        re.compile(rf"\b[a-z]+(?:[ \t][a-z]+)?,?[ \t]+(?:{'|'.join(st.lower() for st in _STATES)}),?[ \t]+"
                   rf"\d{{5}}(?:-\d{{4}})?\b"),
        0.9,
        gate=re.compile(r"\b[a-z]{2},?[ \t]+\d{5}\b"),
    ),
    Recogniser(
        "ADDRESS",
        # Chat writes addresses in lower case ("575 spruce ln").
        re.compile(
            r"\b\d{1,6}[ \t]+(?:[nsew]\.?[ \t]+)?(?:[a-z]+[ \t]+){1,2}"
            r"(?:st|street|ave|avenue|rd|road|dr|drive|ln|lane|ct|court|blvd"
            r"|boulevard|way|pl|place|terrace|ter|pkwy|parkway|cir|circle|trail|trl|hwy|highway)\b\.?"
        ),
        0.85,
        digits=True,
    ),
    Recogniser(
        "ADDRESS",
        re.compile(r"\b(?:[A-Z][a-z]+[ \t]){0,2}[A-Z][a-z]+[ \t]+(?:County|Parish|Borough)\b"),
        0.9,
        keys=("county", "parish", "borough"),
    ),
    Recogniser(
        "ADDRESS",
        # "City, ST" without a ZIP. States that are also credentials ("Lee, MD") need a ZIP.
        re.compile(rf"(?:\b(?:St|Ste|Ft|Mt)\.[ \t]|\b)(?:[A-Z][a-z]+[ \t]){{0,2}}[A-Z][a-z]+,[ \t]+{_STATE_PLACE}\b"
                   r"(?![\w\-])"),
        0.88,
        keys=(",",),
        gate=re.compile(r",[ \t]+[A-Z]{2}\b"),
    ),
    Recogniser(
        "ADDRESS",
        # A place after words that introduce one ("lives in Fresno", "moved here from Tulsa", "im in reno").
        re.compile(
            r"\b(?:lives?|living|lived|resides?|residing|moved|relocated|relocating|staying|stays|stay|located|visiting"
            r"|based|grew up|originally|im|i'm|i am|currently|home|born|raised|travel(?:l?ed|l?ing)?|drove|driving"
            r"|back|going)(?:[ \t]+(?:here|back|out|up|down|over|now|currently|temporarily))?"
            r"[ \t]+(?:in|to|from|near|at)[ \t]+"
            r"(?P<v>[A-Z][a-z]+(?:[ \t][A-Z][a-z]+){0,2}"
            r"|[a-z]{3,}(?:[ \t][a-z]{3,})?(?=[ \t]+(?:till|until|for|since|now|rn|tonight"
            r"|this|next|with|and|but)\b|[ \t]*[.,!;\-\u2013]|[ \t]*$))",
            re.MULTILINE,
        ),
        0.95,
        "v",
        validate=_place,
    ),
    Recogniser(
        "ADDRESS",
        re.compile(rf"\b(?:P\.?[ \t]?O\.?[ \t]*Box|Post Office Box)[ \t]+\d{{1,6}}{_UNIT}?"
                   rf"(?:{_CITY_STATE_ZIP}|{_CITY_TAIL})?",
                   re.IGNORECASE),
        0.9,
        keys=("box",),
    ),
    Recogniser(
        "ADDRESS",
        re.compile(
            r"\b(?:(?:USNS|USNV|USS|USCGC)\s+[A-Z][a-z]+|PSC\s+\d{4},\s+Box\s+\d{4}|Unit\s+\d{4}\s+Box\s+\d{4})"
            r",?\s+(?:APO|FPO|DPO)\s+A[AEP]\s+\d{5}\b"
        ),
        0.9,
        keys=("apo", "fpo", "dpo"),
    ),
    Recogniser(
        "ADDRESS",
        re.compile(rf"\b(?:{_CAPW}{_SP}){{0,2}}{_CAPW},{_SP}{_STATE},?{_SP}\d{{5}}(?:-\d{{4}})?\b"),
        0.92,
        keys=(",",),
        gate=re.compile(r",[ \t]+[A-Z]{2},?[ \t]+\d{5}"),
    ),
    Recogniser("ZIP", _label(r"zip(?: ?code)?|postal code|zip/postal", r"\d{5}(?:-\d{4})?"), 0.95, "v"),
    Recogniser(
        "HEALTH_PLAN",
        _label(
            r"member|member id|subscriber(?: id)?|beneficiary|health plan(?: id| number)?|insurance(?: id)?"
            r"|policy|group(?: number)?|medicaid|medicare|MBI|HICN|plan id|payer id|BCBS|insurer"
            # Payers' own names as labels ("Humana ID", "Medicaid CIN", "Tricare DBN").
            r"|humana|aetna|cigna|tricare|uhc|unitedhealthcare|united healthcare|kaiser|anthem|blue cross|blue shield"
            r"|molina|centene|wellcare|medi-cal|ambetter|oscar|caresource|highmark|amerigroup|champva",
            r"(?:(?:CIN|DBN|MBI|HICN|ID|No\.?|#)\s*[:#]?\s*)?(?P<w>" + _ID_VALUE + ")",
        ),
        0.85,
        "w",
        validate=lambda m: _id_ok(m, group="w"),
    ),
    Recogniser(
        "HEALTH_PLAN",
        # Medicare Beneficiary Identifier (CMS format): distinctive enough to stand alone.
        re.compile(r"\b[1-9][AC-HJKMNP-RT-Y][AC-HJKMNP-RT-Y0-9]\d[AC-HJKMNP-RT-Y][AC-HJKMNP-RT-Y0-9]\d"
                   r"[AC-HJKMNP-RT-Y]{2}\d{2}\b"),
        0.85,
        digits=True,
    ),
    Recogniser(
        "ACCOUNT",
        _label(r"account|acct|a/c|billing(?: account)?|invoice|encounter|financial|iban|bank account"
               r"|routing|guarantor|FIN|HAR|hospital account", _ID_VALUE),
        0.85,
        "v",
        validate=_has_digits,
    ),
    Recogniser("ACCOUNT", re.compile(r"\b(?:HAR|FIN)\d{6,12}\b"), 0.9, keys=("har", "fin"), token=True),
    Recogniser(
        "ACCOUNT",
        # American Express: 15 digits grouped 4-6-5, Luhn-checked.
        re.compile(r"(?<![\w-])(?P<v>3[47]\d{2}[ -]?\d{6}[ -]?\d{5})(?![\w-])"),
        0.86,
        "v",
        validate=lambda m: checks.luhn_ok(re.sub(r"\D", "", m.group("v"))),
        digits=True,
    ),
    Recogniser(
        "ACCOUNT",
        # Card-like numbers only with a valid Luhn check digit.
        re.compile(r"(?<![\w-])(?P<v>\d{4}[ -]?\d{4}[ -]?\d{4}[ -]?\d{1,7})(?![\w-])"),
        # A valid check digit over 13-19 digits outweighs a label's reading of the first group.
        0.86,
        "v",
        validate=lambda m: 13 <= len(re.sub(r"\D", "", m.group("v"))) <= 19
        and checks.luhn_ok(re.sub(r"\D", "", m.group("v"))),
        digits=True,
    ),
    Recogniser(
        "LICENSE",
        _label(r"driver'?s? licen[cs]e|licen[cs]e|DL|lic\.?|certificate|cert|registration|reg\.?\s*no\.?|DEA"
               r"|state license"
               r"|board certification|permit|CDL|state ID|passport", _ID_VALUE),
        0.85,
        "v",
        validate=_has_digits,
    ),
    Recogniser("LICENSE", re.compile(r"\b[A-Z]{2}\d{7}\b"), 0.8, validate=lambda m: checks.dea_ok(m.group(0)),
               gate=re.compile(r"[A-Z]{2}\d{7}"), token=True),
    Recogniser(
        "VEHICLE",
        re.compile(r"\b[A-HJ-NPR-Z0-9]{17}\b"),
        0.9,
        gate=re.compile(r"[A-HJ-NPR-Z0-9]{17}"),
        token=True,
        validate=lambda m: checks.vin_ok(m.group(0)),
    ),
    Recogniser("VEHICLE", _label(r"VIN|vehicle identification number|chassis", r"[A-HJ-NPR-Z0-9]{11,17}"), 0.95, "v"),
    Recogniser(
        "VEHICLE",
        _label(r"license plate|licence plate|registration plate|plates|plate|tag|car reg|reg|registration",
               r"[A-Z0-9]{1,8}(?:[ \-\u2022\u00b7][A-Z0-9]{1,8})?"),
        0.85,
        "v",
        validate=lambda m: any(c.isdigit() for c in m.group("v")) and 4 <= len(m.group("v")) <= 10,
    ),
    Recogniser(
        "DEVICE",
        # Not "lot": a vaccine or drug lot names a batch, not a person's device.
        _label(r"serial(?: number| no\.?)?|S/N|SN|device(?: id| serial)?|UDI|IMEI|MAC(?: address)?|implant(?: id)?"
               r"|pacemaker|model/serial|pump|ICD(?![\-\s]*(?:9|10|11)\b)|defibrillator|hearing aid|insulin pump",
               r"(?:\(01\))?" + _ID_VALUE + r"|(?:[0-9A-F]{2}[:\-]){5}[0-9A-F]{2}"),
        0.85,
        "v",
        validate=_has_digits,
    ),
    Recogniser("DEVICE", re.compile(r"\(01\)\d{14}(?:\(\d{2}\)[A-Za-z0-9]+)*"), 0.9, keys=("(01)",)),
    Recogniser("DEVICE", re.compile(r"(?<![\w:\-])(?:[0-9A-Fa-f]{2}[:\-]){5}[0-9A-Fa-f]{2}(?![\w:\-])"), 0.9,
               keys=(":", "-"), token=True, gate=re.compile(r"[0-9A-Fa-f]{2}[:\-][0-9A-Fa-f]{2}[:\-][0-9A-Fa-f]{2}")),
)

# Labels of the numbers Safe Harbor's catch-all (R) covers: any other unique identifying number.
# Organisations add theirs in masking.yaml (`detect: other_id: [cue, ...]`).
OTHER_ID_CUES = (
    "CSN", "contact serial number", "accession", "accession number", "specimen", "specimen id", "pathology case",
    "surgical case", "case", "case id", "case number", "order", "order number", "order id", "requisition",
    "claim", "claim number", "claim id", "rx", "prescription", "prescription number", "study subject", "subject id",
    "study id", "participant id", "subject", "employee", "employee id", "employee number", "work id", "badge",
    "DCF case", "SNAP case", "TANF case", "CPS case", "APS case", "A-number", "alien number", "USCIS", "NPI",
    "ref", "reference", "reference number", "confirmation", "confirmation number", "ticket", "voucher",
    "authorization", "auth", "prior auth", "referral number", "tracking number", "ID", "identifier", "EMPI",
    "file no.", "file number", "C-file", "docket", "inmate", "booking number", "application", "application number",
    "app #",
    # Safe Harbor (P): biometric identifiers appear in text as the enrolment's number.
    "biometric id", "fingerprint id", "voiceprint id", "palm vein id", "photo id",
)


def _other_id(cues: Sequence[str]) -> Recogniser:
    words = "|".join(re.escape(c).replace("\\ ", r"\s+") for c in sorted(set(cues), key=len, reverse=True))
    return Recogniser("OTHER_ID", _label(words, _ID_VALUE), 0.84, "v", validate=_id_ok)


def _mrn_recognisers(pattern: str, standalone: bool) -> list[Recogniser]:
    out = [
        Recogniser(
            "MRN",
            _label(
                r"MRN|MR#|MR|medical record(?: number| no\.?| #)?|med rec(?: no\.?)?|record(?: number| no\.?)?"
                r"|chart(?: number| no\.?)?|patient id|pt id|hospital(?:\s*#|\s+no\.?|\s+number)"
                r"|unit(?:\s*#|\s+no\.?|\s+number)|EMPI|enterprise id",
                # The organisation's format first; any labelled identifier after an MRN label is one too.
                rf"(?:{pattern})(?![\w\-])|{_ID_VALUE}",
            ),
            0.97,
            "v",
            validate=_id_ok,
        )
    ]
    if standalone:
        out.append(Recogniser("MRN", re.compile(rf"\b(?:{pattern})\b"), 0.9))
    return out


@dataclass(frozen=True)
class DetectConfig:
    """The `detect:` section of masking.yaml, compiled."""

    mrn_pattern: str = r"[A-Z]{0,3}-?\d{6,10}"
    mrn_standalone: bool = False
    extra: tuple[Recogniser, ...] = ()
    names: bool = True
    disabled: frozenset[str] = field(default_factory=frozenset)
    other_id_cues: tuple[str, ...] = ()  # added to OTHER_ID_CUES


class Detector:
    """All recognisers, compiled once. `find(text)` returns non-overlapping spans in text order.

    Speed (masking a never-seen note is on the response path): Python's `re` skips quickly only to
    a pattern's fixed first character, and almost no recogniser has one, so a plain scan costs a
    regex attempt per recogniser at every position of the text. Instead each recogniser is tried
    only where a match can start: label patterns where one of their label words begins, number
    patterns at the start of a run of digits (after one combined attempt there says that at least
    one of them matches), no-whitespace patterns inside the words holding their key. Each of these
    is a superset of the places the pattern can match, so the spans found are the same as a scan's.
    """

    def __init__(self, config: DetectConfig | None = None) -> None:
        cfg = config or DetectConfig()
        recs = [*BUILTIN, *_mrn_recognisers(cfg.mrn_pattern, cfg.mrn_standalone),
                _other_id((*OTHER_ID_CUES, *cfg.other_id_cues)), *cfg.extra]
        self.recognisers = tuple(r for r in recs if r.type not in cfg.disabled)
        # A vector store returns the same records again and again; detection is the costly part of
        # masking, so its result is kept per text. Keyed by a keyed hash, not the text: the cache
        # must not become a second copy of the notes in the gateway's memory.
        self._cache: OrderedDict[bytes, tuple[Span, ...]] = OrderedDict()
        self._cache_key = os.urandom(32)
        self.names = cfg.names and "NAME" not in cfg.disabled
        if self.names:
            # Loaded here, when the rules load, not on the first request: a missing list stops the
            # load with its reason, and no response waits for the lists to be read.
            load_lexicon()
        # (recogniser, keys, anchored): an anchored recogniser is a label pattern whose every match
        # starts at one of its keys, so it is tried only where a key occurs, not scanned.
        gated = [
            (r, r.keys or literal_keys(r.pattern), not r.keys and bool(literal_keys(r.pattern)))
            for r in self.recognisers
        ]
        self._all = tuple(gated)
        # Only texts holding a digit, '@' or 'www.' can hold most pattern types: skip those scans else.
        self._digitless = frozenset(i for i, g in enumerate(gated)
                                    if g[0].type in ("ADDRESS",) or g[0].wordy or g[0] in cfg.extra)
        self._anchored = tuple(i for i, g in enumerate(gated) if g[2])
        self._digits = tuple(i for i, g in enumerate(gated) if not g[2] and g[0].digits)
        self._tokens = tuple(i for i, g in enumerate(gated)
                             if not g[2] and not g[0].digits and g[0].token and (g[1] or g[0].gate is not None))
        self._scans = tuple(i for i, g in enumerate(gated)
                            if i not in self._anchored and i not in self._digits and i not in self._tokens)
        # Label words by their first two letters (every key has two): where a key occurs, only the
        # recognisers with a key there are tried.
        by_pair: dict[str, list[tuple[str, int]]] = {}
        for i in self._anchored:
            for k in gated[i][1]:
                by_pair.setdefault(k[:2], []).append((k, i))
        self._by_pair = {pair: tuple(sorted(v, key=lambda ki: ki[1])) for pair, v in by_pair.items()}
        # Where a label word begins (every label pattern starts with \b before a word character).
        # The class of first letters lets `re` jump between candidate letters in C; the first
        # look-behind keeps word starts only (most letters are inside words: they stop there); the
        # second steps back onto the letter and looks ahead for the label words, without consuming
        # them, so that a label inside another ("birth" in "date of birth") is found too.
        rests: dict[str, set[str]] = {}
        for i in self._anchored:
            for k in gated[i][1]:
                rests.setdefault(k[0], set()).add(k[1:])
        alts = "|".join(
            f"{re.escape(c)}(?:{'|'.join(re.escape(x) for x in sorted(rest, key=len, reverse=True))})"
            for c, rest in sorted(rests.items())
        )
        firsts = "".join(re.escape(c) for c in sorted(rests))
        self._key_re = (
            re.compile(f"[{firsts}](?<!\\w.)(?<=(?={alts}).)", re.DOTALL)
            if by_pair and all(len(pair) == 2 and pair[0].isalnum() for pair in by_pair) else None
        )
        # One attempt of all number patterns at once at a digit run: most runs (doses, vitals,
        # times) start none of them, and those are dismissed with one regex call, not a dozen.
        # `_rest[k]`: the same for the patterns from the k-th on; the branch that matched tells
        # which patterns cannot match there (those before it), so few are tried one by one.
        self._rest = tuple(_combined([gated[i][0].pattern for i in self._digits[k:]])
                           for k in range(len(self._digits)))
        # The first of those at every run start, as one scan: `re` jumps from digit to digit in C
        # (the pattern leads with the character class), and the look-behind steps back onto that
        # character to check it starts a run (as `_RUNS` finds them) and the patterns match there.
        first = self._rest[0] if self._rest and all(r is not None for r in self._rest) else None
        self._digit_re = (
            re.compile(rf"[\d(+](?<=(?=[(+]\d|(?<!\d)\d)(?={first.pattern})[\d(+])")
            if first is not None else None
        )

    def find(self, text: str) -> list[Span]:
        """Spans of identifiers in `text`, remembered per text (see `_cache`)."""
        if len(text) < 24:
            return self._find(text)
        key = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16, key=self._cache_key).digest()
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return list(hit)
        spans = self._find(text)
        self._cache[key] = tuple(spans)
        if len(self._cache) > CACHE_ENTRIES:
            self._cache.popitem(last=False)
        return spans

    def _find(self, text: str) -> list[Span]:
        has_digit = any(ch.isdigit() for ch in text) if len(text) < 64 else _DIGIT.search(text) is not None
        every = has_digit or "@" in text or "www." in text
        low = text.lower()
        aligned = len(low) == len(text)  # lower() can lengthen some letters; then positions differ
        # Matches per recogniser, concatenated in recogniser order at the end: `resolve` breaks
        # ties by that order, so it must not depend on the order in which places were visited.
        found: list[list[re.Match[str]]] = [[] for _ in self._all]

        def wanted(i: int) -> bool:
            rec, keys, _ = self._all[i]
            if not every and i not in self._digitless:
                return False
            if keys and not any(map(low.__contains__, keys)):  # map: the loop stays in C
                return False
            return rec.gate is None or rec.gate.search(text) is not None

        if aligned and self._key_re is not None and (every or not self._digitless.isdisjoint(self._anchored)):
            self._at_keys(text, low, found, every)
        else:
            for i in self._anchored:
                if wanted(i):
                    found[i].extend(self._all[i][0].pattern.finditer(text))
        digits = [i for i in self._digits if wanted(i)]
        if digits:
            self._at_runs(text, frozenset(digits), found)
        for i in self._tokens:
            # Gated without keys: `_in_words` looks for the gate's matches itself.
            if (not self._all[i][1] and (every or i in self._digitless)) or wanted(i):
                found[i].extend(self._in_words(i, text, low, aligned))
        for i in self._scans:
            if wanted(i):
                found[i].extend(self._all[i][0].pattern.finditer(text))
        candidates: list[Span] = []
        for i, matches in enumerate(found):
            rec = self._all[i][0]
            for m in matches:
                if rec.validate is not None and not rec.validate(m):
                    continue
                s, e = m.span(rec.group)
                if s < 0 or e <= s:
                    continue
                typ = rec.retype(text, s) if rec.retype else rec.type
                candidates.append(Span(s, e, typ, rec.score))
        if self.names:
            for s, e, score, typ in find_names(text):
                candidates.append(Span(s, e, typ, score))
        return resolve(candidates)

    def _at_runs(self, text: str, wanted: frozenset[int], found: list[list[re.Match[str]]]) -> None:
        """Number patterns, tried at the start of each run of digits."""
        order, rest, recs = self._digits, self._rest, self._all
        if self._digit_re is None:  # a pattern `_combined` could not rewrite
            for run in _RUNS.finditer(text):
                for i in wanted:
                    m = recs[i][0].pattern.match(text, run.start())
                    if m is not None:
                        found[i].append(m)
            return
        hit: re.Match[str] | None
        for hit in self._digit_re.finditer(text):
            r = hit.start()
            k = 0
            while hit is not None:
                k += (hit.lastindex or 1) - 1  # the branch that matched, counted from k
                i = order[k]
                if i in wanted:
                    m = recs[i][0].pattern.match(text, r)
                    if m is not None:
                        found[i].append(m)
                k += 1
                nxt = rest[k] if k < len(rest) else None
                hit = nxt.match(text, r) if nxt is not None else None

    def _at_keys(self, text: str, low: str, found: list[list[re.Match[str]]], every: bool) -> None:
        """Label patterns, each tried at the places where one of its label words begins."""
        assert self._key_re is not None
        by_pair = self._by_pair
        allowed = None if every else self._digitless
        for m in self._key_re.finditer(low):
            p = m.start()
            last = -1
            for key, i in by_pair.get(low[p : p + 2], ()):
                if i != last and low.startswith(key, p) and (allowed is None or i in allowed):
                    last = i
                    hit = self._all[i][0].pattern.match(text, p)
                    if hit is not None:
                        found[i].append(hit)

    def _in_words(self, i: int, text: str, low: str, aligned: bool) -> list[re.Match[str]]:
        """A token recogniser's matches: a match holds no whitespace and holds a key, so it lies in
        a whitespace-delimited word holding a key; each such word is scanned once. Words bounded by
        anything but a plain space (a tab, a newline, an unusual space) fall back to a full scan."""
        rec, keys, _ = self._all[i]
        if not aligned:
            return list(rec.pattern.finditer(text)) if keys or rec.gate is None or rec.gate.search(text) else []
        words: set[tuple[int, int]] = set()
        hits: Iterable[int]
        if keys:
            hits = (at for k in keys for at in _finds(low, k))
        else:
            assert rec.gate is not None
            hits = (g.start() for g in rec.gate.finditer(text))
        for at in hits:
            start = text.rfind(" ", 0, at) + 1
            end = text.find(" ", at)
            if end < 0:
                end = len(text)
            if not text[start:end].isprintable():  # other whitespace in the word: be exact
                return list(rec.pattern.finditer(text))
            words.add((start, end))
        out: list[re.Match[str]] = []
        for start, end in sorted(words):
            out.extend(rec.pattern.finditer(text, start, end))
        return out

    def replace(self, text: str, replacement: Callable[[Span, str], str]) -> tuple[str, list[Span]]:
        spans = self.find(text)
        if not spans:
            return text, spans
        out: list[str] = []
        pos = 0
        for sp in spans:
            out.append(text[pos : sp.start])
            out.append(replacement(sp, text[sp.start : sp.end]))
            pos = sp.end
        out.append(text[pos:])
        return "".join(out), spans


_DIGIT = re.compile(r"\d")


def _structure(p: str, i: int, depth: int = 0) -> Iterator[tuple[int, str, int]]:
    """The structural characters of regex text `p` from index `i`, as (index, char, group depth
    after it): escapes and character classes are stepped over, so `\\(` or `[|]` never count."""
    in_class = False
    while i < len(p):
        c = p[i]
        if c == "\\":
            i += 2
            continue
        if in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
        else:
            if c == "(":
                depth += 1
            elif c == ")":
                depth -= 1
            yield i, c, depth
        i += 1


def _top_level_bar(p: str, i: int) -> bool:
    return any(c == "|" and depth == 0 for _, c, depth in _structure(p, i))


# Where a number pattern may start: a '(' or '+' before a digit, and the first digit of a run (also
# right after a '(': "(07/19/2021)" and "(96 years old)" are found by patterns that start at a digit).
_RUNS = re.compile(r"[(+](?=\d)|(?<!\d)\d")


def _finds(text: str, key: str) -> Iterable[int]:
    at = text.find(key)
    while at >= 0:
        yield at
        at = text.find(key, at + 1)
# The parts of a pattern's text `_combined` rewrites or must step over: an escape (or a numbered
# back-reference), a named group, a named back-reference, a character class, a group's opening and
# closing parenthesis.
_PARTS = re.compile(r"\\(?:[1-9]\d?|.)|\(\?P<\w+>|\(\?P=\w+\)|\[(?:\\.|[^\]\\])+\]|\(\??|\)", re.DOTALL)


def _groups(pattern: str) -> dict[str, str]:
    """The text of each capturing group of `pattern`, by number and by name."""
    out: dict[str, str] = {}
    stack: list[tuple[int, list[str]]] = []
    count = 0
    for part in _PARTS.finditer(pattern):
        tok = part.group(0)
        if tok == "(" or tok.startswith("(?P<"):
            count += 1
            ids = [str(count)] + ([tok[4:-1]] if tok.startswith("(?P<") else [])
            stack.append((part.end(), ids))
        elif tok == "(?":
            stack.append((part.end(), []))
        elif tok == ")" and stack:
            start, ids = stack.pop()
            for gid in ids:
                out[gid] = pattern[start : part.start()]
    return out


def _loosen(pattern: str) -> str:
    """`pattern` without capturing groups (names would clash between patterns, and each combined
    pattern's branch is one group of its own), each back-reference replaced by the group it names."""
    groups = _groups(pattern)

    def part(m: re.Match[str]) -> str:
        tok = m.group(0)
        if tok == "(" or tok.startswith("(?P<"):
            return "(?:"
        ref = tok[4:-1] if tok.startswith("(?P=") else tok[1:] if tok[1:].isdigit() else None
        if ref is not None:
            body = groups[ref]
            if "(?=" in body or "(?!" in body or "(?<" in body:
                raise KeyError(ref)  # a look-around may not hold at the reference: no rewrite
            return f"(?:{_loosen(body)})"  # what the group matched, it matches again
        return tok

    return _PARTS.sub(part, pattern)


def _combined(patterns: Sequence[re.Pattern[str]]) -> re.Pattern[str] | None:
    """One pattern matching wherever any of `patterns` matches (at least there: a pre-check).
    None when one cannot be made (a pattern the rewrite does not understand)."""
    if not patterns:
        return None
    parts = []
    try:
        for p in patterns:
            if p.flags & ~(re.IGNORECASE | re.UNICODE):
                return None
            body = _loosen(p.pattern)
            parts.append(f"((?i:{body}))" if p.flags & re.IGNORECASE else f"({body})")
        return re.compile("|".join(parts))
    except (re.error, KeyError):
        return None


_META = set("()[]{}|.+*?^$")


def literal_keys(pattern: re.Pattern[str]) -> tuple[str, ...]:
    """For a label pattern `\\b(?:alt1|alt2|...)...`, the literal start of each alternative,
    lower-cased: every match contains one of them. () when that cannot be said safely."""
    p = pattern.pattern
    if not p.startswith("\\b(?:"):
        return ()
    alts: list[str] = []
    cur = 5
    for i, c, depth in _structure(p, 5, depth=1):
        if c == ")" and depth == 0:
            alts.append(p[cur:i])
            if _top_level_bar(p, i + 1):
                return ()  # another alternative of the whole pattern may start elsewhere
            break
        if c == "|" and depth == 1:
            alts.append(p[cur:i])
            cur = i + 1
    else:
        return ()
    keys = []
    for alt in alts:
        key = ""
        j = 0
        while j < len(alt):
            c = alt[j]
            nxt = alt[j + 1] if j + 1 < len(alt) else ""
            if c == "\\" and nxt in "./#-":
                c, step = nxt, 2
            elif c in _META or c == "\\":
                break
            else:
                step = 1
            after = alt[j + step] if j + step < len(alt) else ""
            if after in ("?", "*", "{"):
                break  # an optional character is no part of a guaranteed prefix
            key += c
            j += step
        if not key:
            return ()
        keys.append(key.lower())
    return tuple(keys)


def _join_same_type(candidates: Iterable[Span]) -> list[Span]:
    out: list[Span] = []
    for sp in sorted(candidates, key=lambda c: (c.type, c.start)):
        prev = out[-1] if out else None
        if prev is not None and prev.type == sp.type and sp.start < prev.end:
            out[-1] = Span(prev.start, max(prev.end, sp.end), sp.type, max(prev.score, sp.score))
        else:
            out.append(sp)
    return out


def resolve(candidates: Iterable[Span]) -> list[Span]:
    """Keep the best non-overlapping spans: higher score, then longer, wins an overlap.

    Overlapping candidates of one type are first joined ("12 Oak St" and "Springfield, IL 62704"
    found by two address patterns are one address)."""
    ordered = sorted(_join_same_type(candidates), key=lambda sp: (-sp.score, -(sp.end - sp.start), sp.start))
    # Kept spans never overlap, so in start order only the neighbours of a newcomer can overlap
    # it: two bisects per span instead of a comparison with every span kept (notes hold dozens).
    kept: list[Span] = []
    starts: list[int] = []
    for sp in ordered:
        i = bisect.bisect_right(starts, sp.start)
        if (i > 0 and kept[i - 1].end > sp.start) or (i < len(kept) and kept[i].start < sp.end):
            continue
        kept.insert(i, sp)
        starts.insert(i, sp.start)
    return kept


def compile_config(
    raw: Mapping[str, Any] | None, fail: Callable[[Any, str], Exception]
) -> DetectConfig:
    """Compile masking.yaml's `detect:` mapping. `fail(value, expected)` builds the load error."""
    if raw is None:
        return DetectConfig()
    if not isinstance(raw, Mapping):
        raise fail(raw, "a mapping with mrn / patterns / disable")
    unknown = set(raw) - {"mrn", "patterns", "disable", "names", "other_id"}
    if unknown:
        raise fail(sorted(unknown), "only the keys mrn, patterns, disable, names, other_id")
    other = raw.get("other_id") or {}
    cues = other.get("cues", []) if isinstance(other, Mapping) else None
    if not isinstance(cues, list) or not all(isinstance(c, str) and c.strip() for c in cues):
        raise fail(other, "other_id: {cues: [label words before an identifying number]}")
    mrn = raw.get("mrn") or {}
    if not isinstance(mrn, Mapping):
        raise fail(mrn, "mrn: {pattern: REGEX, standalone: true|false}")
    pattern = mrn.get("pattern", DetectConfig.mrn_pattern)
    _check_regex(pattern, fail)
    standalone = mrn.get("standalone", False)
    if not isinstance(standalone, bool):
        raise fail(standalone, "mrn.standalone: true or false")
    extra: list[Recogniser] = []
    for item in raw.get("patterns") or []:
        if not isinstance(item, Mapping) or not {"type", "pattern"} <= set(item):
            raise fail(item, "a pattern entry {type: TYPE, pattern: REGEX, context: [words]}")
        typ = str(item["type"]).upper()
        if not re.fullmatch(r"[A-Z][A-Z0-9_]{0,31}", typ):
            raise fail(item["type"], "a type name such as MRN or EMPLOYEE_ID")
        _check_regex(item["pattern"], fail)
        context: Sequence[str] = item.get("context") or []
        if not isinstance(context, list) or not all(isinstance(c, str) and c for c in context):
            raise fail(context, "context: a list of cue words")
        score = item.get("score", 0.96)
        if isinstance(score, bool) or not isinstance(score, int | float) or not 0 < score <= 1:
            raise fail(score, f"score of pattern {typ}: a number above 0 and at most 1")
        if context:
            words = "|".join(re.escape(c) for c in context)
            pat = _label(words, item["pattern"])
            extra.append(Recogniser(typ, pat, float(score), "v"))
        else:
            extra.append(Recogniser(typ, re.compile(item["pattern"]), float(score)))
    disable = raw.get("disable") or []
    if not isinstance(disable, list) or not set(disable) <= set(TYPES):
        raise fail(disable, f"disable: a list of types among {', '.join(TYPES)}")
    names = raw.get("names", True)
    if not isinstance(names, bool):
        raise fail(names, "names: true or false")
    return DetectConfig(pattern, standalone, tuple(extra), names, frozenset(disable), tuple(c.strip() for c in cues))


def _check_regex(pattern: Any, fail: Callable[[Any, str], Exception]) -> None:
    if not isinstance(pattern, str) or not pattern:
        raise fail(pattern, "a regular expression string")
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise fail(pattern, f"a valid regular expression ({exc.msg} at position {exc.pos})") from exc
    if compiled.match(""):
        raise fail(pattern, "a regular expression that cannot match the empty string")
