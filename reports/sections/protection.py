"""Transmission and storage protection in force (164.312(a)(2)(iv), 164.312(e)(1)): the TLS certificates
the gateway recorded in the ledger over the period, and the encryption of session recordings."""

# SQL here is built from this package's own fragments, table names and timestamps formatted from
# datetimes; no ledger value or user-supplied text is ever inlined.
# ruff: noqa: S608

from __future__ import annotations

import datetime as dt
from pathlib import Path

import orjson

from addons.core.certinfo import read_certificate
from reports.model import Fact, Section
from reports.period import Period
from reports.tables import Collector


def recording_keys(ledger: Path) -> tuple[int, dict[str, int]]:
    """(recording files, {key id: files}) from each file's first line; the ciphertext is never read."""
    files = sorted(ledger.glob("nodes/*/recordings/*.ndjson")) if ledger.is_dir() else []
    keys: dict[str, int] = {}
    for f in files:
        with f.open("rb") as fh:
            first = fh.readline()
        try:
            kid = str(orjson.loads(first).get("key_id", "?"))
        except orjson.JSONDecodeError:
            kid = "(unreadable)"
        keys[kid] = keys.get(kid, 0) + 1
    return len(files), keys


def protection(col: Collector, period: Period, tls_cert: Path | None, ledger: Path,
               generated_at: dt.datetime) -> Section:
    s = Section("protection", 0, "Transmission and storage protection")
    s.intro = (
        "Clients reach the gateway over TLS only (the launcher refuses plain HTTP except for loopback tests); "
        "callers' tokens are stripped before forwarding and the backend's own credential is injected; PHI "
        "in responses is masked per role before it leaves the gateway. Session recordings are encrypted "
        "at rest with AES-GCM under a key held outside the ledger. The certificates below are those the "
        "gateway recorded in the ledger when it started and whenever they changed: what served during the period."
    )
    start, end = period.sql_bounds()
    table = col.table(
        "tls_certificates", "TLS certificates in force during the period",
        f"""WITH c AS (SELECT node_id, name AS listener, ts, content FROM configuration
                       WHERE kind = 'tls_certificate' AND ts < {end}),
                 before AS (SELECT * FROM c WHERE ts < {start}
                            QUALIFY row_number() OVER (PARTITION BY node_id, listener ORDER BY ts DESC) = 1),
                 x AS (SELECT * FROM before UNION ALL SELECT * FROM c WHERE ts >= {start})
            SELECT node_id, listener, ts AS recorded_at, content->>'subject' AS subject, content->>'names' AS names,
                   content->>'issuer' AS issuer, content->>'key' AS key,
                   try_cast(rtrim(content->>'not_before', 'Z') AS TIMESTAMP) AS valid_from,
                   try_cast(rtrim(content->>'not_after', 'Z') AS TIMESTAMP) AS valid_to,
                   content->>'sha256' AS sha256_fingerprint,
                   coalesce(content->>'error',
                            CASE WHEN try_cast(rtrim(content->>'not_after', 'Z') AS TIMESTAMP) < {end}
                                 THEN 'expires before the end of the period' END) AS problem
            FROM x ORDER BY node_id, listener, recorded_at""",
        empty_text="No TLS certificate was recorded in the ledger for this period.",
        complete=True,
    )
    s.tables.append(table)
    recorded = table.total
    problems = [str(p) for p in table.column("problem") if p]
    s.facts.append(Fact("TLS certificate records for the period (from the ledger)", recorded))
    if recorded == 0:
        problems.append("no TLS certificate recorded by the gateway for the period")
        _certificate_on_disk(s, tls_cert, generated_at)
    n, keys = recording_keys(ledger)
    s.facts.append(Fact("Encrypted session recording files", n))
    if keys:
        used = ", ".join(f"{k} ({v} files)" for k, v in sorted(keys.items()))
        s.facts.append(Fact("Recording key ids (AES-GCM)", used))
    if problems:
        s.status, s.status_text = "attention", "; ".join(dict.fromkeys(problems))
    else:
        s.status, s.status_text = "ok", f"{recorded} TLS certificate record(s) in force, each valid over the period"
    return s


def _certificate_on_disk(s: Section, tls_cert: Path | None, generated_at: dt.datetime) -> None:
    """For a ledger without certificate records: the file on this host now, labelled as such."""
    if tls_cert is None:
        s.facts.append(Fact("Certificate file on this host now", "not given (--tls-cert)"))
        return
    try:
        c = read_certificate(tls_cert)
    except (OSError, ValueError) as exc:
        s.facts.append(Fact("Certificate file on this host now", f"cannot read {tls_cert}: {exc}"))
        return
    expired = " (EXPIRED)" if c.not_after < generated_at else ""
    s.facts.append(Fact("Certificate file on this host now (not evidence of the period)",
                        f"{c.path}: {c.subject}, valid {c.not_before:%Y-%m-%d} to {c.not_after:%Y-%m-%d}{expired}, "
                        f"SHA-256 {c.sha256}"))
