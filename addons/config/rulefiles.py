"""Loading, validating and hot-reloading rule files (rules/*.yaml).

Rule files are parsed and compiled once, at load, into frozen objects; hooks only match. A file is
watched by content hash: an edit that compiles replaces the rules atomically, an edit that does not
keeps the last good rules and says why. Every version that was ever in force is announced to
`on_version` listeners (the audit addon keeps them: 164.316(b)(2)(i) asks for six years).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, cast

import yaml

from addons.core.errors import ConfigError, require

__all__ = ["ConfigError", "RuleVersion", "RulesSnapshot", "WatchedFile", "require"]

log = logging.getLogger("phigate")


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys: a rule written twice is ambiguous, not last-wins."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def parse_yaml(path: Path, text: str) -> Any:
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        raise ConfigError(path, None, at, f"valid YAML ({getattr(exc, 'problem', exc)})") from exc


@dataclass(frozen=True, slots=True)
class RuleVersion:
    path: str
    sha256: str
    text: str
    effective_from: float


_listeners: list[Callable[[RuleVersion], None]] = []
_history: list[RuleVersion] = []


def on_version(listener: Callable[[RuleVersion], None]) -> None:
    """Register a listener for rule versions; it is first told every version already in force."""
    _listeners.append(listener)
    for version in _history:
        listener(version)


def _announce(version: RuleVersion) -> None:
    _history.append(version)
    for listener in _listeners:
        listener(version)


class WatchedFile[T]:
    """One rule file, compiled by `compile_fn(path, parsed_yaml) -> T`."""

    def __init__(self, path: Path, compile_fn: Callable[[Path, Any], T]) -> None:
        self.path = path
        self._compile = compile_fn
        self._current: T | None = None
        self.sha256: str | None = None
        self.last_error: str | None = None
        self.last_error_at: float | None = None

    @property
    def current(self) -> T:
        if self._current is None:
            raise RuntimeError(f"{self.path} has not been loaded")
        return self._current

    def load(self) -> T:
        """Load now; raise ConfigError if the file is missing or bad (used at start)."""
        try:
            raw = self.path.read_bytes()
        except OSError as exc:
            raise ConfigError(self.path, None, str(self.path), f"a readable file ({exc.strerror})") from exc
        digest = hashlib.sha256(raw).hexdigest()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(self.path, None, f"byte {exc.start}: {raw[exc.start:exc.start + 4]!r}",
                              "UTF-8 text") from None
        compiled = self._compile(self.path, parse_yaml(self.path, text))
        self._current, self.sha256, self.last_error, self.last_error_at = compiled, digest, None, None
        _invalidate()
        _announce(RuleVersion(str(self.path), digest, text, time.time()))
        return compiled

    def reload_if_changed(self) -> bool:
        """Reload after an edit. A bad edit keeps the last good rules; returns True on a swap."""
        try:
            raw = self.path.read_bytes()
        except OSError as exc:
            self._keep_last_good(f"{self.path}: cannot read ({exc.strerror})")
            return False
        if hashlib.sha256(raw).hexdigest() == self.sha256:
            if self.last_error is not None:
                # The file is back to the rules in force (a bad edit undone): nothing is rejected now.
                log.info("phigate: %s is back to the rules in force", self.path)
                self.last_error = self.last_error_at = None
            return False
        try:
            self.load()
        except ConfigError as exc:
            self._keep_last_good(exc.diagnostics())
            return False
        log.info("phigate: reloaded %s (sha256 %s)", self.path, (self.sha256 or "")[:12])
        return True

    def _keep_last_good(self, why: str) -> None:
        if why != self.last_error:
            log.error("phigate: keeping the last good rules; %s", why)
            for listener in _rejection_listeners:
                listener(str(self.path), why)
        self.last_error = why
        self.last_error_at = time.time()


_rejection_listeners: list[Callable[[str, str], None]] = []


def on_rejection(listener: Callable[[str, str], None]) -> None:
    """Register a listener told (path, diagnostics) each time an edit is rejected (once per distinct error)."""
    if listener not in _rejection_listeners:
        _rejection_listeners.append(listener)


# One WatchedFile per path for the whole process: the identity and classify addons both read the
# backend profile, and it must be loaded (and versioned) once.
_registry: dict[Path, WatchedFile[Any]] = {}


def watched[T](path: Path, compile_fn: Callable[[Path, Any], T]) -> WatchedFile[T]:
    """The process-wide WatchedFile for `path`, loaded on first use (raises ConfigError)."""
    key = path.resolve()
    existing = _registry.get(key)
    if existing is not None:
        return existing
    wf = WatchedFile(key, compile_fn)
    wf.load()
    _registry[key] = wf
    _invalidate()
    return wf


def is_registered(wf: WatchedFile[Any]) -> bool:
    """True while `wf` is the process-wide WatchedFile for its path (callers may cache it).

    `watched()` resolves its path on every call (several stat calls); hot paths keep the object and
    check this instead, so `forget_all()` in tests still takes effect.
    """
    return _registry.get(wf.path) is wf


def reload_all() -> list[WatchedFile[Any]]:
    """Reload every watched file that changed, each on its own; returns those swapped in.

    A file that fails in any way keeps its last good rules and never stops the others from
    reloading. The new rules become one new snapshot once every file has been looked at.
    """
    swapped: list[WatchedFile[Any]] = []
    for wf in list(_registry.values()):
        try:
            if wf.reload_if_changed():
                swapped.append(wf)
        except Exception as exc:  # noqa: BLE001 - a compiler bug in one file must not stop the others
            wf._keep_last_good(f"{wf.path}: could not be compiled ({type(exc).__name__})")
    return swapped


def forget_all() -> None:
    """Drop every watched file (tests load rules from several temporary folders)."""
    _registry.clear()
    _invalidate()


def rejected_edits() -> dict[str, str]:
    """Rule files whose last edit was rejected (their last good version is in force): path -> why."""
    return {str(wf.path): wf.last_error for wf in _registry.values() if wf.last_error}


# ---------------------------------------------------------------- one version of all rules


_MISSING: Any = object()


@dataclass(frozen=True, slots=True)
class RulesSnapshot:
    """Every loaded rule file's compiled object, as one immutable version.

    A flow takes the snapshot in force when it arrives and keeps it to the end: a request decided
    under one version is masked under the same version, however long its hold lasts.
    """

    version: str
    files: tuple[tuple[str, str], ...]  # (path, sha256), sorted by path
    compiled: Mapping[Path, Any]

    def of[T](self, wf: WatchedFile[T]) -> T:
        """The version of `wf`'s rules in this snapshot (a file first loaded after it: its current)."""
        got = self.compiled.get(wf.path, _MISSING)
        return wf.current if got is _MISSING else cast(T, got)


_snapshot: RulesSnapshot | None = None


def _invalidate() -> None:
    global _snapshot
    _snapshot = None


def current_snapshot() -> RulesSnapshot:
    """The rules in force now, as one immutable snapshot (rebuilt only after a load or reload)."""
    global _snapshot
    snap = _snapshot
    if snap is None:
        loaded = sorted((wf for wf in _registry.values() if wf.sha256 is not None), key=lambda wf: str(wf.path))
        files = tuple((str(wf.path), wf.sha256 or "") for wf in loaded)
        version = hashlib.sha256("\n".join(f"{p} {h}" for p, h in files).encode()).hexdigest()[:16]
        snap = RulesSnapshot(version, files, MappingProxyType({wf.path: wf.current for wf in loaded}))
        _snapshot = snap
    return snap
