"""Person (and employer) names in free text, without a language model, recall first.

Every word of a note is judged against three accent-folded lists (`lexicon.py`): given names,
surnames and safe words (English, clinical and drug vocabulary). A capitalised word that is on a
name list and not a safe word is a name; a capitalised word on no list (a name nobody listed) is a
name when context says so; a safe word is a name only right after a title ("Dr. Brown"). Context:
a cue before the words (a title, a relation "niece", a role "interpreter", a greeting "Hi", a label
"Re:", a closing line "thanks,"), or after them (a credential "MD", "(brother of pt)", ", her
son", "family"), or a "Last, First" form. In lower-case chat the same cues mark names ("its priya
menon", "her brother dmitri"). Finally the note is read as a whole: a word found as a name once is
a name everywhere in that note ("Mr. Okafor ... Okafor agrees").
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from itertools import accumulate
from typing import NamedTuple

from addons.phi.detect.lexicon import Lexicon, fold, load

# A word: letters (any script) with inner apostrophes or hyphens, and a trailing dot (initials, titles).
_TOKEN = re.compile(r"(?<![\w@./])[^\W\d_]+(?:['\u2019\-][^\W\d_]+)*(?![\d_@])\.?")
_PARTICLES = frozenset(
    """de del della la las los da das do dos du des di van vander der den von zu le bin ibn al el y ben bint st mac
    ter ten""".split()
)
TITLES = frozenset("mr mrs ms miss mx dr dra prof sr sra srta mister madam fr rev".split())
# Cue words right before a name (a colon, comma or dash may sit between).
RELATIONS = frozenset(
    """
    daddy mommy hubby wifey bro sis bf gf bff babe ex
    son daughter wife husband mother mom mum mama father dad papa spouse partner brother sister sibling
    guardian caregiver grandmother grandma grandfather grandpa grandson granddaughter grandchild aunt uncle
    niece nephew cousin friend neighbor neighbour landlord landlady roommate fiance fiancee fiancé fiancée
    boyfriend girlfriend stepson stepdaughter stepmother stepfather stepmom stepdad sponsor boss coworker
    """.split()
)
ROLES = frozenset(
    """
    patient pt name nok interpreter caller caseworker payee attending resident physician provider pcp
    nurse rn np surgeon therapist pharmacist author witness informant subscriber insured guarantor
    applicant named dear hi hello hey hiya attn cc re regarding ref agent member beneficiary recipient
    cardiologist oncologist nephrologist neurologist psychiatrist dentist doctor counselor counsellor
    chaplain aide doula midwife proxy poa representative rep executor morning afternoon evening kin
    """.split()
) | RELATIONS
# Only with a colon: "From: Ana Ruiz", never "from Cardiology".
LABELS = frozenset("from to by contact check signature verified ordering referring first last".split())
BY_VERBS = frozenset(
    """
    seen examined evaluated referred accompanied signed dictated transcribed reviewed attended verified
    authored cosigned co-signed entered called contacted visited cared covered supervised read approved goes go
    """.split()
)
TALK_VERBS = frozenset("met spoke speaking talked discussed consulted conferred given texted emailed called".split())
SELF_CUES = frozenset("its it's im i'm iam".split())
CLOSINGS = frozenset("thanks thank thx ty regards sincerely best cheers love warmly respectfully xo yours".split())
EMPLOYER_BEFORE = re.compile(
    r"(?:works?|working|worked|job|employed|employee|shift|shifts|hired)(?:\s+(?:nights|days|evenings|weekends"
    r"|part-time|full-time|there|now))?\s+(?:at|for|by|with)\s+$"
    r"|employer\s*[:\-]\s*$", re.IGNORECASE)
CREDENTIAL = re.compile(
    r"[ \t]*,?[ \t]*(?:MD|M\.D\.|DO|D\.O\.|RN|NP|PA-C|PA|PhD|DDS|DMD|PharmD|LCSW|LICSW|MSW|FNP|FNP-C|CNM|LPN|CNA"
    r"|DNP|APRN|MLS|MT|CRNA|BSN|MSN|LMFT|PsyD|OD|DPM|MBBS|FACP|FACC)\b(?![\-/])")
_REL = "|".join(sorted(RELATIONS | {"pt", "patient", "caregiver", "interpreter", "proxy"}, key=len, reverse=True))
AFTER = re.compile(
    rf"[ \t]*\((?:[\w' ]{{0,20}}\b)?(?:{_REL})\b"
    rf"|[ \t]*,[ \t]*(?:her|his|their|the|my|pt'?s|patient'?s)[ \t]+(?:{_REL})\b"
    rf"|[ \t]+family\b|'s[ \t]+(?:{_REL})\b"
    # "Ngata, a 45-year-old woman": a person introduced by age.
    r"|,[ \t]+(?:a|an)[ \t]+\d{1,3}[ \t-]*(?:-?year|yo\b|y/o|y\.o\.|month|[MF]\b)", re.IGNORECASE)
VERB_AFTER = re.compile(
    r"[ \t]+(?:reports|reported|states|stated|denies|denied|agrees|agreed|called|calls|presented|presents"
    r"|tolerated|tolerates|was seen|was admitted|is a \d|underwent|verbalized|consented|declined|requests"
    r"|requested|left a|will (?:call|drive|come|pick|visit)|can (?:pick|be reached)|has my|visits|arrived"
    r"|prefers|was born|lives|is staying|is employed|works)\b")
# Capitalised words before these are eponyms or named things, not people ("Bell's palsy").
EPONYM_AFTER = re.compile(
    r"(?:'s|\u2019s|s')?[ \t\-]+(?:disease|syndrome|sign|signs|palsy|catheter|procedure|scale|score|maneuver"
    r"|manoeuvre|line|drain|lymphoma|dementia|esophagus|oesophagus|thyroiditis|habitus|phenomenon|breathing"
    r"|respirations|point|flare|crisis|test|reflex|criteria|classification|fracture|tube|needle|repair"
    r"|operation|hernia|ulcer|cyst|node|nodes|body|bodies|tumor|tumour|anemia|anaemia|lesion|position"
    r"|view|stain|block|fistula|formula|equation|index|law|rule|score|stage|type|contracture|diverticulum"
    r"|ligament|triad|duct|gland|canal|space|fascia|membrane|artery|nerve|muscle|tendon|bursa|cells?|loop|pouch"
    r"|capsule|pyramid|valve|tetralogy|pentad|angle|line|incision|criteria|solution|lotion|paste|splint|cast"
    r"|malformation|deformity|anomaly|(?:I|II|III|IV)[ \t]+malformation)\b",
    re.IGNORECASE)
EPONYMS = frozenset(
    """
    parkinson parkinsons alzheimer alzheimers bell bells foley glasgow apgar whipple graves hodgkin hodgkins
    babinski crohn crohns hashimoto barrett cushing swan ganz murphy murphys kernig brudzinski addison
    guillain barre tinel homans epley valsalva trendelenburg romberg mcburney kussmaul cheyne stokes hickman
    jackson pratt wells braden morse down tourette marfan raynaud apley lachman phalen finkelstein
    heimlich lasix coumadin tylenol motrin keflex
    """.split()
)


# English function words: never a name without a title, whatever the name lists hold ("Will", "May").
FUNCTION = frozenset(
    """
    will can may might must shall should would could is are was were be been am do does did has have had the a
    an and or but if of in on at to for from with by as not no yes so then than this that these those there here
    when where who what which how why all any some each every my your his her its our their me him them us you
    he she it we they i till until about after before over under up down out off just also very too only still
    now again ever never always pick call come go see saw get got let make take give tell ask said says say
    back home today tomorrow tonight morning please thanks thank sorry new old good bad well per via
    """.split()
)


_SAINTS = frozenset(("st", "saint", "ste", "sainte"))


Found = tuple[int, int, float, str]  # start, end, score, "NAME" or "ADDRESS"


# Everyday words that are also names, missing from the safe-word list (which leaves out every
# name): a capitalised one at the start of a sentence ("Grant funding", "Chase the result") needs
# a cue or a neighbouring name to be a name.
WORD_NAMES = frozenset(
    """
    grant grace mercy hope faith joy will bill sue chase hunter mason jack amber crystal art max rose iris ivy
    lily daisy violet dawn summer autumn april june may august gene guy mark frank pat rob ray sandy rusty penny
    ruby pearl jade angel baby king prince duke earl major bishop deacon page young brown white green black gray
    grey long short little small strong stone wood woods hill field lake rivers banks bush price cash gold silver
    gates waters bond bell rich rush sharp wise best love hale hardy moody noble sunny storm rain river sky star
    trust honor justice liberty melody harmony destiny serenity trinity unity patience prudence charity constance
    cherry berry olive hazel holly heather laurel myrtle willow fern flora sage basil jasmine poppy austin dallas
    jordan madison paris florence lincoln georgia virginia victoria carolina phoenix denver houston brooklyn
    cooper baker miller carter porter turner fisher hunter walker parker taylor tanner booker butler chandler
    dean drew lane marshall reed rhodes sterling wells west north south east shepherd gay gaye hart hunt joiner
    """.split()
)
# Words after capitalised words that make them an organisation's name ("Grace Hospital").
ORG_AFTER = re.compile(
    r"[ \t]+(?:Hospital|Clinic|Health|Healthcare|Medical|Center|Centre|Foundation|University|College|School"
    r"|Church|Pharmacy|Institute|Hospice|Manor|Village|Memorial|Regional|Community|Labs?|Laboratory|Group"
    r"|Associates|Partners|Inc|LLC|Corp|Company|Bank|Insurance|Plan|Network|Services|Society|Association|Care"
    r"|Living|Home|Homes|House|Housing|Program|LTAC|LTACH|SNF|ALF|LTC|Rehab|Rehabilitation|Hospitals?)\b"
)


class _Tok(NamedTuple):
    start: int
    end: int  # without a trailing dot
    raw: str
    low: str  # folded, no trailing dot, no possessive
    cap: bool
    kind: str  # N name-only, A name and safe word, U on no list, S safe word, I initial
    i: int  # index among the text's words


def _kind(low: str, raw: str, lex: Lexicon) -> str:
    core = raw.rstrip(".")
    if len(core) == 1:
        return "I" if core.isupper() else "S"
    if low in FUNCTION or low in ROLES:
        return "S"  # "Son", "Nurse", "Daddy" cue a name; after a title they are one ("Mr. Son")
    parts = [p for p in low.split("-") if p]
    if len(parts) > 1 and low not in lex.safe:
        # Hyphenated: a name when a part is a name and not a word ("Smith-Jones"), a word when a
        # part is a word and none is only a name ("Status-post", "X-ray", "Guillain-Barre").
        kinds = [_kind(p, p, lex) for p in parts]
        if "N" in kinds:
            return "N"
        if "S" in kinds or any(p in EPONYMS for p in parts):
            return "S"
        return "A" if "A" in kinds else "U"
    named = low in lex.given or low in lex.surnames
    safe = low in lex.safe or low in EPONYMS or low in WORD_NAMES
    if named:
        return "A" if safe else "N"
    return "S" if safe else "U"


# Folded form of the words judged safe, by spelling: most words of every note are common words,
# judged once per process. Only safe words are kept (they are dictionary words, never a person's
# name), so this never becomes a store of the names it has seen.
_SAFE_SEEN: dict[str, str] = {}
_SAFE_SEEN_MAX = 300_000


_SPLIT = re.compile(f"({_TOKEN.pattern})")


def _tokens(text: str, lex: Lexicon) -> list[_Tok]:
    # Words and the text between them, split and their offsets summed in C: cheaper per word than
    # a match object each.
    parts = _SPLIT.split(text)
    ends = list(accumulate(map(len, parts)))
    out = []
    seen = _SAFE_SEEN
    for i, raw in enumerate(parts[1::2]):
        start = ends[2 * i]
        low = seen.get(raw)
        if low is not None:
            out.append(_Tok(start, start + len(raw) - (raw[-1] == "."), raw, low, raw[0].isupper(), "S", i))
            continue
        core = raw[:-1] if raw.endswith(".") else raw
        low = fold(core)
        if low.endswith("s") and (core.endswith("'s") or core.endswith("\u2019s")):
            low = low[:-1]  # possessive: folding dropped the apostrophe
        kind = _kind(low, raw, lex)
        if kind == "S" and len(seen) < _SAFE_SEEN_MAX:
            seen[raw] = low
        out.append(_Tok(start, start + len(core), raw, low, raw[0].isupper(), kind, i))
    return out


def _gap(text: str, a: _Tok, b: _Tok) -> str:
    return text[a.end : b.start]


def _cue_before(text: str, toks: Sequence[_Tok], i: int) -> bool:
    """A cue right before token i."""
    if i == 0:
        return False
    p = toks[i - 1]
    gap = _gap(text, p, toks[i])
    if "\n" in gap:
        return _closing_line(text, toks, i)
    g = gap.strip(" \t")
    w = p.low
    if len(gap) - len(g) > 2:
        return False  # form fields apart: "Relationship: Sister   Phone:"
    if w in TITLES and g in ("", ".", ":"):
        # "MR." in capitals is mitral regurgitation ending a sentence, unless the note shouts
        # the name too ("DR. SMITH").
        return not (p.raw.isupper() and len(p.raw.rstrip(".")) > 1 and not toks[i].raw.isupper())
    if g not in ("", ":", ",", "-", "\u2013", ".", ":-", "~", "):", "("):
        return False
    if w in LABELS:
        return g == ":"
    if w in ROLES and not (w == "patient" and g == "."):
        return True
    if w in CLOSINGS and g in ("", ",", "-", "~", "!"):
        return True
    if w in SELF_CUES or (w == "is" and i >= 2 and toks[i - 2].low in ("this", "name", "names", *RELATIONS)):
        return True
    if w == "me" and i >= 2 and toks[i - 2].low in SELF_CUES:  # "its me wanda"
        return True
    if w == "called" and i >= 2 and toks[i - 2].low in ("be", "prefers", "named"):
        return True
    if i >= 2:
        w2 = toks[i - 2].low
        if w == "by" and w2 in BY_VERBS:
            return True
        if w in ("with", "to") and (w2 in TALK_VERBS or (i >= 3 and toks[i - 3].low in TALK_VERBS)):
            return True
        if w in ("worker", "manager", "payee", "of", "contact", "name", "physician") and w2 in (
            "case", "social", "rep", "next", "emergency", "full", "patient", "primary"
        ):
            return True
    return False


def _closing_line(text: str, toks: Sequence[_Tok], i: int) -> bool:
    """Token i starts a line right after a closing line ("Thanks," / "Best regards,")."""
    line_start = text.rfind("\n", 0, toks[i].start) + 1
    if text[line_start : toks[i].start].strip(" \t-~") != "":
        return False
    prev_end = text.rfind("\n", 0, line_start - 1) + 1
    prev = text[prev_end : line_start - 1].strip().lower()
    words = re.findall(r"[a-z]+", prev)
    closing = bool(words) and len(words) <= 3 and words[-1] in CLOSINGS | {"you", "wishes", "regards"}
    return closing and not prev.endswith(".")


_EMPLOYER_LAST = frozenset(("at", "for", "by", "with", "employer"))  # the last word EMPLOYER_BEFORE can match


def _employer(text: str, start: int) -> bool:
    return EMPLOYER_BEFORE.search(text, max(0, start - 24), start) is not None


def find_names(text: str) -> list[Found]:
    """(start, end, score) of person and employer names in `text`."""
    lex = load()
    toks = _tokens(text, lex)
    out: list[Found] = []
    named: set[str] = set()
    n = len(toks)
    i = 0
    while i < n:
        t = toks[i]
        if not t.cap and t.kind not in ("N", "U", "A"):
            i += 1
            continue
        if not t.cap:
            i += _judge_lower(text, toks, i, out, named, lex)
            continue
        # The run of words that could be one name: same line, single spaces, particles inside.
        j = i + 1
        while j < n:
            gap = _gap(text, toks[j - 1], toks[j])
            nxt = toks[j]
            prev = toks[j - 1]
            # A dot ends a sentence unless it ends an initial or a title ("J. Smith", "Dr. Lee").
            short = prev.end - prev.start == 1 or prev.low in TITLES or prev.low in _SAINTS
            dotted = prev.raw.endswith(".") and short
            if gap not in (" ", "\t", "  ") and not (gap in (". ", ".") and dotted):
                break
            k = j
            while k < n and toks[k].low in _PARTICLES and k - j < 2 and (
                toks[k].raw.islower() or (toks[k].raw.isupper() and t.raw.isupper())
            ):
                k += 1
            particle = k > j and k < n and toks[k].cap
            if t.cap and not (nxt.cap or particle):
                break
            if not t.cap and nxt.cap:
                break
            j += 1
        run = toks[i:j]
        i = j
        _judge_capitalised(text, toks, run, out, named, lex)
    if named:
        _everywhere(text, toks, named, out)
    return out


def _index(toks: Sequence[_Tok], tok: _Tok) -> int:
    return tok.i


def _judge_capitalised(text: str, toks: Sequence[_Tok], run: list[_Tok], out: list[Found],
                       named: set[str], lex: Lexicon) -> None:
    before = toks[run[0].i - 1].low if run[0].i else ""
    if before in _EMPLOYER_LAST and _employer(text, run[0].start):
        end = run[min(len(run), 3) - 1]
        out.append((run[0].start, end.end, 0.85, "NAME"))
        return
    if len(run) == 1 and run[0].kind == "S" and before not in TITLES:
        return  # one common word: the most frequent run by far
    # Leading titles and cue words are evidence, not part of the name.
    k = 0
    while k < len(run) and (run[k].low in TITLES or run[k].low in ROLES):
        k += 1
    while k < len(run):
        # A piece of the run between safe words; a safe word right after a title is a name ("Dr. Brown").
        start_k = k
        while k < len(run):
            tk = run[k]
            title_before = k > 0 and run[k - 1].low in TITLES
            if tk.kind == "S" and not (title_before or (k == start_k and _cue_strong(text, toks, tk))):
                break
            k += 1
        piece = run[start_k:k]
        if piece:
            _judge_piece(text, toks, piece, out, named, lex)
        k = max(k, start_k + 1)
        while k < len(run) and run[k].low in TITLES:
            k += 1


def _cue_strong(text: str, toks: Sequence[_Tok], tk: _Tok) -> bool:
    i = _index(toks, tk)
    return i > 0 and toks[i - 1].low in TITLES and toks[i - 1].raw[0].isupper()


def _judge_piece(text: str, toks: Sequence[_Tok], piece: list[_Tok], out: list[Found],
                 named: set[str], lex: Lexicon) -> None:
    while piece and piece[-1].raw.islower() and piece[-1].low in _PARTICLES:
        piece = piece[:-1]
    if not piece:
        return
    kinds = [p.kind for p in piece]
    words = [p for p in piece if p.kind != "I"]
    if not words:
        return
    first_i = _index(toks, piece[0])
    s, e = piece[0].start, piece[-1].end
    after = text[e : e + 40]
    if EPONYM_AFTER.match(after) and len(words) == 1:
        return  # "Bell's palsy", "Chiari I malformation"
    org = ORG_AFTER.match(after) or (len(piece) > 1 and ORG_AFTER.fullmatch(" " + piece[-1].raw.rstrip(".")))
    if org and not _cue_before(text, toks, first_i):
        return  # "Grace Hospital", "Mercy Health", "Kindred LTAC": an organisation
    if len(piece) > 1 and piece[0].low in _SAINTS and piece[0].cap:
        piece = piece[1:]
        first_i += 1
    if first_i and toks[first_i - 1].low in _SAINTS and toks[first_i - 1].cap:
        # A saint's name is a hospital's, a church's or a town's ("St. Joseph"), unless a person cue
        # comes before it: then "St." is part of a surname ("Mr. St. Pierre").
        if not _cue_before(text, toks, first_i - 1):
            return
        first_i -= 1
        s = toks[first_i].start
        piece = [toks[first_i], *piece]
    cue = _cue_before(text, toks, first_i) or CREDENTIAL.match(after) is not None or AFTER.match(after) is not None
    comma = _given_after(text, toks, piece, lex, cue)
    if comma is not None:
        e = comma[1]
        piece = piece + comma[0]
        cue = True
    all_caps = all(p.raw.isupper() for p in words)
    score = 0.0
    if cue:
        score = 0.9
    elif "N" in kinds and (len(words) > 1 or not all_caps):
        score = 0.85 if len(words) > 1 else 0.75
    elif len(words) > 1 and not all_caps and all(k in ("U", "N", "A", "I") for k in kinds) and "U" in kinds:
        score = 0.7
    elif len(words) == 2 and words[0].kind == "A" and words[0].low in lex.given and words[1].kind in ("N", "U"):
        score = 0.7
    elif VERB_AFTER.match(after) and kinds[-1] in ("N", "U") and not all_caps:
        score = 0.7
    if len(words) == 1 and words[0].kind == "A" and not _cue_strong(text, toks, words[0]) and (
        not cue or words[0].low not in lex.given or _gap(text, toks[first_i - 1], words[0]).strip(" :") != ""
        if first_i else True
    ):
        score = 0.0 if words[0].low not in lex.given or not cue else score
    if not cue and (score or not all_caps) and _place(text, toks, piece, first_i, out, lex):
        return
    if score and not (len(words) == 1 and words[0].kind == "A" and not cue):
        out.append((s, e, score, "NAME"))
        # Only words that are nothing but names carry over to the rest of the note: "Date" in
        # "Rajata Date" must not make every "Date:" a name.
        named.update(p.low for p in piece if p.kind in ("N", "U") and len(p.low) > 2)
        if len(words) > 1 and words[0].kind == "A" and words[0].low in lex.given:
            named.add(words[0].low)  # "Grace Smith ... Grace agreed"


STREET_WORDS = frozenset(
    "rd road st street ave avenue blvd boulevard ln lane way ct court pl place pkwy parkway hwy highway terrace ter"
    " circle cir drive trail".split()
)
PLACE_BEFORE = frozenset("in from near outside around".split())


def _place(text: str, toks: Sequence[_Tok], piece: list[_Tok], first_i: int, out: list[Found], lex: Lexicon) -> bool:
    """Capitalised words that name a street ("on Kingsbridge Rd") or a place ("called from
    Dearborn", "in the Bronx") rather than a person: recorded as an address. False when not one."""
    if len(piece) > 1 and piece[-1].low in STREET_WORDS:
        out.append((piece[0].start, piece[-1].end, 0.9, "ADDRESS"))
        return True
    last = _index(toks, piece[-1])
    if last + 1 < len(toks):
        nxt = toks[last + 1]
        if nxt.cap and nxt.low in STREET_WORDS and text[piece[-1].end : nxt.start] == " ":
            out.append((piece[0].start, nxt.end + (1 if nxt.raw.endswith(".") else 0), 0.9, "ADDRESS"))
            return True
    k = first_i - 1
    if k >= 0 and toks[k].low == "the" and not toks[k].cap:
        k -= 1
    if k < 0 or toks[k].low not in PLACE_BEFORE or toks[k].cap or "\n" in text[toks[k].end : piece[0].start]:
        return False
    if toks[k].low == "from" and piece[0].low in lex.given:
        return False  # "a message from Maria"
    out.append((piece[0].start, piece[-1].end, 0.85, "ADDRESS"))
    return True


def _given_after(text: str, toks: Sequence[_Tok], piece: list[_Tok], lex: Lexicon,
                 cue: bool) -> tuple[list[_Tok], int] | None:
    """"Last, First [M]": the given-name words after the comma, and the end of the name."""
    last = piece[-1]
    if not text.startswith(",", last.end) or len(piece) > 2:
        return None
    i = _index(toks, last) + 1
    if i >= len(toks) or text[last.end : toks[i].start] not in (", ", ",  ", ","):
        return None
    given: list[_Tok] = []
    while i < len(toks) and len(given) < 5:
        tk = toks[i]
        if given and _gap(text, given[-1], tk) not in (" ",):
            break
        particle = bool(given) and tk.low in _PARTICLES and i + 1 < len(toks) and toks[i + 1].cap
        if not (particle or (tk.cap and tk.kind != "S")):
            break
        given.append(tk)
        i += 1
    while given and given[-1].low in _PARTICLES:
        given.pop()
    if not given or (given[0].kind == "I" and not cue):
        return None
    if given[0].kind == "I":
        # "MORRISON, J." after a cue: the initial and its dot.
        end = given[0].end + (1 if text.startswith(".", given[0].end) else 0)
        return given[:1], end
    surname_ok = last.kind in ("N", "U") or (last.kind == "A" and last.low in lex.surnames)
    given_ok = given[0].low in lex.given or given[0].kind in ("N", "U")
    if not (surname_ok and given_ok and (cue or given[0].low in lex.given or last.low in lex.surnames)):
        return None
    if not cue and given[0].kind == "U" and last.kind == "U":
        return None
    return given, given[-1].end


def _judge_lower(text: str, toks: Sequence[_Tok], i: int, out: list[Found],
                 named: set[str], lex: Lexicon) -> int:
    """Lower-case words from token i: a name only after a cue, or two name-list words together.
    Returns how many tokens were used (at least one)."""
    cue = _cue_before(text, toks, i)
    take: list[_Tok] = []
    for k in range(i, min(i + 3, len(toks))):
        t = toks[k]
        if t.cap or (take and _gap(text, take[-1], t) != " "):
            break
        pair = k + 1 < len(toks) and toks[k + 1].kind == "N" and not toks[k + 1].cap
        if t.kind == "N" or (cue and k == i and len(t.low) > 2 and (t.kind == "U" or (
                t.kind == "A" and t.low in lex.given and pair))):
            take.append(t)
        elif t.kind == "A" and take and k == i + 1 and t.low in lex.surnames:
            take.append(t)
        else:
            break
    if not take:
        return 1
    if cue and len(take) == 1 and text.startswith(", ", take[0].end):
        # "pt name: oyelaran, bisi": surname, comma, given name, in lower case.
        j = _index(toks, take[0]) + 1
        if j < len(toks) and not toks[j].cap and toks[j].kind in ("N", "U") and toks[j].start == take[0].end + 2:
            take.append(toks[j])
    if cue or (len(take) >= 2 and take[0].kind == "N"):
        out.append((take[0].start, take[-1].end, 0.8, "NAME"))
        named.update(p.low for p in take if p.kind in ("N", "U") and len(p.low) > 2)
        return len(take)
    return 1


def _everywhere(text: str, toks: Sequence[_Tok], named: set[str], out: list[Found]) -> None:
    """Every other mention of a word found as a name in this note."""
    covered = sorted((f[0], f[1]) for f in out)
    import bisect

    starts = [s for s, _ in covered]
    for t in toks:
        if t.low not in named or not (t.cap or t.kind in ("N", "U")):
            continue
        k = bisect.bisect_right(starts, t.start) - 1
        if k >= 0 and covered[k][1] > t.start:
            continue
        if EPONYM_AFTER.match(text, t.end, t.end + 40):
            continue
        out.append((t.start, t.end, 0.8, "NAME"))
