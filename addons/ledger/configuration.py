"""Configuration in force, recorded in the ledger as evidence (the `configuration` records).

The packet shows what was configured during its period from these records, never from the host
the packet is made on: the gateway records its settings and the TLS certificates its listeners
serve when it starts and whenever one of them changes.

    kind gateway_settings  name NODE        content {option: value} for SETTINGS
    kind tls_certificate   name LISTENER    content the certificate (addons.core.certinfo) or why none
    kind rule_change       name RULE FILE   content {sha256, author, issuer, name, reason} (rules apply)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from addons.core.certinfo import as_record, read_certificate

# Options recorded as evidence, grouped by the control they support. Only options the running
# gateway defines are recorded (an addon left out of a chain defines none of its own).
SETTINGS: dict[str, tuple[str, ...]] = {
    # 164.312(a)(2)(iii) automatic logoff: how long a credential or a pending request lives.
    "logoff": ("phigate_max_token_lifetime_s", "phigate_clock_skew_s", "phigate_session_idle_seconds",
               "phigate_grant_max_minutes"),
    # 164.312(a)(2)(ii) emergency access.
    "break_glass": ("phigate_break_glass_role", "phigate_break_glass_header"),
    # 164.308(a)(4) who may decide holds.
    "approvals": ("phigate_reviewer_roles",),
    # 164.316(b)(2)(i) retention.
    "retention": ("phigate_retention_days",),
    # 164.312(d) person or entity authentication.
    "identity": ("phigate_issuer", "phigate_audience", "phigate_jwks_refetch_s"),
    # 164.312(e)(1) transmission security.
    "transmission": ("phigate_allow_plain_http", "phigate_admin_host", "phigate_admin_port"),
}
RECORDED = frozenset(name for names in SETTINGS.values() for name in names) | {"certs", "phigate_admin_certfile"}


def gateway_settings(options: Any) -> dict[str, Any]:
    """{option: value} of every recorded setting the options object defines."""
    out: dict[str, Any] = {}
    for names in SETTINGS.values():
        for name in names:
            if hasattr(options, name):
                out[name] = getattr(options, name)
    return out


def _cert_paths(options: Any) -> list[tuple[str, str]]:
    """(listener, certificate file) pairs: mitmproxy's `certs` specs ("[domain=]path") and the admin API's."""
    pairs = []
    for spec in getattr(options, "certs", None) or ():
        domain, sep, path = str(spec).partition("=")
        pairs.append((f"gateway {domain}" if sep else "gateway *", path if sep else domain))
    admin = getattr(options, "phigate_admin_certfile", "")
    if admin:
        pairs.append(("admin", str(admin)))
    return pairs


def tls_certificates(options: Any) -> list[tuple[str, dict[str, Any]]]:
    """(listener, content) for each certificate the listeners serve; a listener without TLS says so."""
    out: list[tuple[str, dict[str, Any]]] = []
    for listener, path in _cert_paths(options):
        try:
            out.append((listener, as_record(read_certificate(Path(path)))))
        except (OSError, ValueError) as exc:
            out.append((listener, {"path": path, "error": f"cannot read the certificate: {exc}"}))
    if not any(name.startswith("gateway") for name, _ in out):
        plain = bool(getattr(options, "phigate_allow_plain_http", False))
        out.append(("gateway *", {"error": "no certificate file configured (option certs)"
                                  + (", plain HTTP allowed" if plain else "")}))
    return out
