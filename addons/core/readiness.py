"""Readiness: each part of the gateway registers a check answering "why is this gateway not ready?"
(None when ready); `/-/readyz` and the balancer's health checks read them all."""

from __future__ import annotations

from collections.abc import Callable

# Each entry answers "why is this gateway not ready?" (None when ready). Addons register theirs
# at load: the audit store, the key set, the rules.
ReadinessCheck = Callable[[], str | None]
_readiness: dict[str, ReadinessCheck] = {}


def register_readiness(name: str, check: ReadinessCheck) -> None:
    _readiness[name] = check


def readiness_of(name: str) -> str | None:
    """Why the part registered as `name` is not ready (None when ready, or when nothing registered it)."""
    check = _readiness.get(name)
    if check is None:
        return None
    try:
        return check()
    except Exception as exc:  # noqa: BLE001 - a failing check means "not ready"
        return f"readiness check failed ({type(exc).__name__})"


def not_ready_reasons() -> dict[str, str]:
    reasons: dict[str, str] = {}
    for name, check in _readiness.items():
        try:
            why = check()
        except Exception as exc:  # noqa: BLE001 - a failing check means "not ready", never "ready"
            why = f"readiness check failed ({type(exc).__name__})"
        if why:
            reasons[name] = why
    return reasons
def loaded_check(what: str, load: Callable[[], object]) -> Callable[[], str | None]:
    """A readiness check: None while `load()` works, else why not (any failure means not ready)."""

    def check() -> str | None:
        try:
            load()
        except Exception as exc:  # noqa: BLE001
            return f"{what} not loaded ({type(exc).__name__})"
        return None

    return check
