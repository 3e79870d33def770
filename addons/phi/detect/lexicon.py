"""The word lists the name detector judges words by, loaded once per process from packages.

- Given names and surnames: philter-lite's lists (UCSF Philter, BSD-3: 97k given names, 161k
  surnames drawn from census and birth records of many countries) and the person lists of every
  Faker locale (MIT: 86 locales; Latin-script entries, and the romanised Japanese and Chinese lists).
- Safe words: philter-lite's 195k words that are not names (English, clinical and drug vocabulary),
  and this module's own clinical additions. A word on both lists is ambiguous ("Rose", "Brown",
  "June"): context decides.

Every list is compared accent-folded and in lower case ("María" and "maria" are one word).
Missing data is an error, never an empty lexicon: a detector without its lists would quietly
stop finding most names.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import pkgutil
import re
import tomllib
import unicodedata
from dataclasses import dataclass

# Letters NFKD does not split into a base letter and a mark (dotless i, l with stroke, ...).
_UNSPLIT = str.maketrans({"\u0131": "i", "\u0142": "l", "\u00f8": "o", "\u0111": "d", "\u00df": "ss", "\u00e6": "ae",
                          "\u0153": "oe", "\u00fe": "th", "\u00f0": "d", "\u0259": "e", "\u0127": "h"})
_LATIN = re.compile(r"[a-z][a-z'\-]*")


class LexiconError(RuntimeError):
    """A name list could not be loaded: the detector must not run without it."""


def fold(word: str) -> str:
    """Lower case without accents or apostrophes: the form every list is kept in."""
    w = word.lower()
    if not w.isascii():
        w = "".join(c for c in unicodedata.normalize("NFKD", w) if not unicodedata.combining(c))
        w = w.translate(_UNSPLIT)
    return w.replace("'", "").replace("\u2019", "")


@dataclass(frozen=True)
class Lexicon:
    given: frozenset[str]
    surnames: frozenset[str]
    safe: frozenset[str]


def _philter() -> tuple[set[str], set[str], set[str]]:
    spec = importlib.util.find_spec("philter_lite")
    if spec is None or not spec.submodule_search_locations:
        raise LexiconError("the name lists need the philter-lite package (pip install philter-lite)")
    path = os.path.join(next(iter(spec.submodule_search_locations)), "filters", "set.toml")
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise LexiconError(f"cannot read philter-lite's name lists at {path}: {exc}") from exc

    def words(key: str) -> set[str]:
        # Most entries are already folded (plain lower-case ASCII): only the rest pay for `fold`.
        return {w if w.isascii() and w.islower() and "'" not in w else fold(w)
                for w in data.get(key, ()) if isinstance(w, str) and w}

    return words("firstnames"), words("lastnames"), words("nonames")


def _names_of(value: object) -> list[str]:
    if isinstance(value, dict):
        return [k for k in value if isinstance(k, str)]
    if isinstance(value, (list, tuple)):
        return [k for k in value if isinstance(k, str)]
    return []


def _faker() -> tuple[set[str], set[str]]:
    try:
        import faker.providers.person as people
    except ImportError as exc:
        raise LexiconError("the name lists need the faker package (pip install faker)") from exc
    given: set[str] = set()
    surnames: set[str] = set()
    for mod in pkgutil.iter_modules(people.__path__):
        provider = getattr(importlib.import_module(f"{people.__name__}.{mod.name}"), "Provider", None)
        if provider is None:
            continue
        for attr, into in (("first_names", given), ("first_names_male", given), ("first_names_female", given),
                           ("first_romanized_names", given), ("last_names", surnames),
                           ("last_romanized_names", surnames)):
            for name in _names_of(getattr(provider, attr, None)):
                for part in re.split(r"[\s-]+", fold(name)):
                    if _LATIN.fullmatch(part) and len(part) > 1:
                        into.add(part)
    return given, surnames


# Clinical words philter's safe list lacks, and words of notes that are never names here.
EXTRA_SAFE = frozenset(
    """
    patient pt pts name names mr mrs ms dr no yes none unknown male female sex age dob mrn ssn phone fax email
    hospital clinic center centre medical health university department unit ward room floor suite
    cardiology neurology oncology radiology pediatrics surgery nephrology hematology pulmonology rheumatology
    endocrinology urology dermatology psychiatry orthopedics hospice palliative wound therapy icu er ed pacu nicu
    history assessment plan diagnosis impression exam review vitals labs medications allergies discharge
    admission summary progress consult report results protocol section order set form intake registration
    insurance verification claim policy member subscriber group primary secondary medicare medicaid tricare
    humana aetna cigna unitedhealthcare bcbs amedisys bayada cobas alinity architect polst molst acls
    nursing note notes shift reference handout quality education pharmacy laboratory pathology microbiology
    instrument collected received ordering verified electronically signed attending pcp home cell work
    subject refill appointment billing guarantor account acct card vehicle parking permit signature date
    employer relationship emergency contact driver license licence interpreter caller voicemail transcript
    duration length routed resources lifeline crisis suicide poison control nurse line fda medwatch cdc nih
    tumor board morning grand rounds huddle monday tuesday wednesday thursday friday saturday sunday
    january february march april may june july august september october november december
    jan feb mar apr jun jul aug sep sept oct nov dec am pm ok thx thanks regards sincerely best
    step criteria ratio improvement score edema murmur ecg nsr qtc afib rvr tach sinus hfref chf copd
    ckd dm t2dm cad mi nstemi stemi cap dka gi bleed fracture na cr hgb wbc tsh ldl egfr bp hr rr spo2
    ra nc po bid tid qid prn iv im sq qd qhs mg ml kg cm mm units vaccine lot exp flu tdap covid shingrix
    portal app version updated bed transferred mcg mmhg ef phq gad moca gcs pain
    spanish vietnamese tagalog somali polish english arabic russian mandarin cantonese haitian creole
    portuguese french korean hmong navajo
    bye hi hey hello lol ok okay pls plz u ur im ive dont cant wont btw asap tmrw tmr yeah yep nope thx ty
    postal x-ray xray x-rays chest
    um uh er erm hmm umm uhh rd st ave blvd ln ct pl pkwy hwy ter cir apt ste
    maori hmong somali latina latino latinx hispanic navajo cherokee lakota samoan tongan hawaiian filipino
    filipina haitian cuban mexican guatemalan salvadoran honduran dominican korean japanese chinese vietnamese
    cambodian laotian thai burmese nepali bhutanese tibetan punjabi sikh afghan pashto dari farsi persian
    iranian iraqi syrian kurdish arab arabic yemeni eritrean ethiopian amharic tigrinya oromo swahili congolese
    sudanese nigerian yoruba igbo ghanaian akan twi liberian senegalese wolof ukrainian bosnian serbian croatian
    albanian romanian roma greek armenian georgian turkish jewish muslim christian catholic hindu buddhist mormon
    amish aboriginal inuit metis jamaican trinidadian guyanese brazilian italian irish scottish welsh german dutch
    swedish norwegian finnish danish african asian european caucasian indigenous native pacific islander
    till til gonna wanna gotta kinda idk omg brb ttyl np
    """.split()
)


@functools.cache
def load() -> Lexicon:
    """The lists, folded. Raises LexiconError when a source is missing or empty."""
    p_given, p_surnames, p_safe = _philter()
    f_given, f_surnames = _faker()
    given, surnames = p_given | f_given, p_surnames | f_surnames
    safe = p_safe | EXTRA_SAFE
    for label, words in (("given-name", given), ("surname", surnames), ("safe-word", safe)):
        if len(words) < 10_000 and not (label == "safe-word" and len(p_safe) >= 10_000):
            raise LexiconError(f"the {label} list holds {len(words)} words: expected tens of thousands; "
                               "reinstall philter-lite and faker")
    return Lexicon(frozenset(given), frozenset(surnames), frozenset(safe))
