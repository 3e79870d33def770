"""Masking operators: a registry of small classes, each validating its params at load and
transforming one value per call (the presidio-anonymizer shape, typed).

`apply(value, label, run)` returns the new value, or `DROP` to remove the key. `label` is the
identifier type of the target (MRN, PATIENT_NAME, DOCUMENT) used in placeholders and counts.
"""

from __future__ import annotations

import abc
import datetime as dt
import functools
import hashlib
import os
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Protocol

from addons.phi.detect.detector import Detector, Span
from addons.phi.tokens import TYPE_RE, KeyRing

MEMO_ENTRIES = 20_000


class _Drop:
    def __repr__(self) -> str:
        return "DROP"


DROP: Any = _Drop()


class OperatorError(ValueError):
    """Bad params for an operator; the message says what was expected."""


class Run(Protocol):
    """What an operator may use while masking one response."""

    keyring: KeyRing | None
    detector: Detector

    def count_type(self, label: str, n: int = 1) -> None: ...


class Operator(abc.ABC):
    name: ClassVar[str]
    # Params this operator accepts (anything else is a load error: a typo must not mask less).
    params_allowed: ClassVar[frozenset[str]] = frozenset()
    needs_key: ClassVar[bool] = False

    def __init__(self, params: Mapping[str, Any]) -> None:
        extra = set(params) - self.params_allowed
        if extra:
            allowed = ", ".join(sorted(self.params_allowed)) or "none"
            raise OperatorError(f"unknown params {sorted(extra)} for {self.name}; allowed: {allowed}")
        self.validate(params)

    def validate(self, params: Mapping[str, Any]) -> None:  # noqa: B027 - optional hook: most operators take no params
        """Check and keep params (raise OperatorError)."""

    @abc.abstractmethod
    def apply(self, value: Any, label: str, run: Run) -> Any:
        """The masked form of one value (or DROP)."""


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    return str(value)


class Redact(Operator):
    name = "redact"
    params_allowed = frozenset({"type"})

    def validate(self, params: Mapping[str, Any]) -> None:
        typ = params.get("type")
        if typ is not None and not (isinstance(typ, str) and re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,31}", typ)):
            raise OperatorError("type: a label such as MRN")
        self.type = typ.upper() if isinstance(typ, str) else None

    def apply(self, value: Any, label: str, run: Run) -> Any:
        lab = self.type or label
        run.count_type(lab)
        return f"[REDACTED:{lab}]"


@functools.lru_cache(maxsize=1024)  # a handful of labels, asked for once per span detected
def token_type(label: str) -> str:
    return re.sub(r"[^a-z0-9-]", "-", label.lower()).strip("-")[:32] or "value"


class Tokenize(Operator):
    name = "tokenize"
    params_allowed = frozenset({"type"})
    needs_key = True

    def validate(self, params: Mapping[str, Any]) -> None:
        typ = params.get("type")
        if typ is not None and not (isinstance(typ, str) and TYPE_RE.match(typ)):
            raise OperatorError("type: 1-32 lower-case letters, digits or '-' (it is part of the token)")
        self.type = typ

    def apply(self, value: Any, label: str, run: Run) -> Any:
        if run.keyring is None:  # load refuses this; kept so a missing key can never mean clear text
            raise RuntimeError("tokenize without a key")
        run.count_type(label)
        return run.keyring.tokenize(value, self.type or token_type(label))


class Partial(Operator):
    name = "partial"
    params_allowed = frozenset({"keep", "char"})

    def validate(self, params: Mapping[str, Any]) -> None:
        keep = params.get("keep", 4)
        if not isinstance(keep, int) or isinstance(keep, bool) or not 0 <= keep <= 8:
            raise OperatorError("keep: an integer from 0 to 8 (characters kept at the end)")
        char = params.get("char", "*")
        if not isinstance(char, str) or len(char) != 1:
            raise OperatorError("char: one character")
        self.keep, self.char = keep, char

    def apply(self, value: Any, label: str, run: Run) -> Any:
        text = _text(value)
        run.count_type(label)
        # A value no longer than twice what is kept would be mostly disclosed: mask it whole.
        if len(text) <= self.keep * 2:
            return self.char * len(text)
        return self.char * (len(text) - self.keep) + text[len(text) - self.keep :]


# ZIP3 areas of 20,000 people or fewer (HHS de-identification guidance, 2000 Census): their first
# three digits are replaced by 000.
RESTRICTED_ZIP3 = frozenset(
    "036 059 063 102 203 556 692 790 821 823 830 831 878 879 884 890 893".split()
)
_DATE_FORMATS = ("%Y-%m-%d", "%m/%d/%Y", "%m/%d/%y", "%Y/%m/%d", "%d %B %Y", "%B %d, %Y", "%b %d, %Y", "%Y%m%d")


def _year_of(value: Any) -> int | None:
    text = _text(value).strip()
    iso = re.match(r"^((?:1[89]|20)\d{2})(?:[-/](\d{1,2})[-/](\d{1,2}))?(?:[T ].*)?$", text)
    if iso:
        return int(iso.group(1))
    for fmt in _DATE_FORMATS:
        try:
            return dt.datetime.strptime(text, fmt).year
        except ValueError:
            continue
    return None


class Generalize(Operator):
    name = "generalize"
    params_allowed = frozenset({"kind"})
    KINDS: ClassVar[frozenset[str]] = frozenset({"date", "zip", "age"})

    def validate(self, params: Mapping[str, Any]) -> None:
        kind = params.get("kind")
        if kind not in self.KINDS:
            raise OperatorError(f"kind: one of {', '.join(sorted(self.KINDS))}")
        self.kind: str = kind

    def apply(self, value: Any, label: str, run: Run) -> Any:
        run.count_type(label)
        if self.kind == "date":
            year = _year_of(value)
            if year is None:
                return f"[REDACTED:{label}]"  # unparseable: never pass a date we could not reduce
            # A year that reveals an age over 89 is itself an identifier (164.514(b)(2)(i)(C)).
            cutoff = dt.date.today().year - 90
            return f"{cutoff} or earlier" if year <= cutoff else str(year)
        if self.kind == "zip":
            digits = re.sub(r"\D", "", _text(value))
            if len(digits) < 5:
                return "000"
            zip3 = digits[:3]
            return "000" if zip3 in RESTRICTED_ZIP3 else zip3
        # age
        try:
            age = float(_text(value))
        except ValueError:
            return f"[REDACTED:{label}]"
        if age > 89:
            return "90+"
        return value


class Drop(Operator):
    name = "drop"

    def apply(self, value: Any, label: str, run: Run) -> Any:
        run.count_type(label)
        return DROP


class Clear(Operator):
    """Lets a value through as stored: how an allow-list entry says "this field passes"."""

    name = "clear"

    def apply(self, value: Any, label: str, run: Run) -> Any:
        return value


class Detect(Operator):
    name = "detect"
    params_allowed = frozenset({"replace", "types"})

    def validate(self, params: Mapping[str, Any]) -> None:
        replace = params.get("replace", "placeholder")
        if replace not in ("placeholder", "token"):
            raise OperatorError("replace: placeholder or token")
        types = params.get("types")
        if types is not None and (not isinstance(types, list) or not all(isinstance(t, str) for t in types)):
            raise OperatorError("types: a list of identifier types (NAME, MRN, ...)")
        self.replace = replace
        self.types = frozenset(t.upper() for t in types) if types else None
        self.needs_key = replace == "token"  # type: ignore[misc]
        # Masked text per input text: a vector store returns the same notes again and again. Keyed
        # by a keyed hash (no note text kept); values are what callers receive anyway.
        self._memo: OrderedDict[bytes, tuple[str, tuple[str, ...]]] = OrderedDict()
        self._memo_key = os.urandom(32)

    def apply(self, value: Any, label: str, run: Run) -> Any:
        if not isinstance(value, str) or not value:
            return value
        ring = run.keyring
        if self.replace == "token" and ring is None:
            raise RuntimeError("detect with tokens without a key")
        key = hashlib.blake2b(value.encode("utf-8", "surrogatepass"), digest_size=16, key=self._memo_key,
                              person=(ring.active if ring else "").encode()[:16]).digest()
        hit = self._memo.get(key)
        if hit is not None:
            self._memo.move_to_end(key)
            for t in hit[1]:
                run.count_type(t)
            return hit[0]
        found_types: list[str] = []

        def repl(span: Span, found: str) -> str:
            if self.types is not None and span.type not in self.types:
                return found
            found_types.append(span.type)
            if self.replace == "token" and ring is not None:
                return ring.tokenize(found, token_type(span.type))
            return f"[{span.type}]"

        text, _ = run.detector.replace(value, repl)
        for t in found_types:
            run.count_type(t)
        self._memo[key] = (text, tuple(found_types))
        if len(self._memo) > MEMO_ENTRIES:
            self._memo.popitem(last=False)
        return text


REGISTRY: dict[str, Callable[[Mapping[str, Any]], Operator]] = {
    cls.name: cls for cls in (Redact, Tokenize, Partial, Generalize, Drop, Clear, Detect)
}


def build(name: Any, params: Any) -> Operator:
    if name not in REGISTRY:
        raise OperatorError(f"operator: one of {', '.join(sorted(REGISTRY))}")
    if params is None:
        params = {}
    if not isinstance(params, Mapping):
        raise OperatorError("params: a mapping")
    return REGISTRY[name](params)
