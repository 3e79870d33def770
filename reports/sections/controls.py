"""The control table: each HIPAA cite, the evidence this packet holds for it, and where it is."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from reports.model import Control, Section

# (cite, what it asks, section ids holding the evidence, evidence template over the summary figures)
CONTROLS: tuple[tuple[str, str, tuple[str, ...], str], ...] = (
    ("164.312(a)(1)", "Access control: access only for persons or software granted rights",
     ("activity", "policy"),
     "Default-deny policy by role, collection and operation: {allow:,} request(s) allowed by policy, {deny:,} "
     "denied, {held:,} held for a human decision ({hold:,} of them released: approved, granted or break-glass); "
     "{policy_versions:,} rule-file version(s) in force."),
    ("164.312(a)(2)(i)", "Unique user identification (Required)",
     ("activity",),
     "Every event carries the caller's OIDC subject: {users:,} distinct user(s) across {clients:,} client(s); "
     "{allowed_without_subject:,} allowed request(s) without a subject."),
    ("164.312(a)(2)(ii)", "Emergency access procedure (Required)",
     ("configuration", "break-glass"),
     "Break-glass policy: role {break_glass_role} may pass a hold (never a deny) one request at a time, each "
     "with its justification; access returns to normal with the next request. Register: "
     "{break_glass_uses:,} invocation(s), {break_glass_requests:,} request(s) made under it, every entry shown."),
    ("164.312(a)(2)(iii)", "Automatic logoff (Addressable)",
     ("configuration",),
     "Access tokens live at most {token_lifetime} (clock-skew leeway {clock_skew}) and are refused after "
     "expiry; audit sessions end after {session_idle} idle; held requests are denied after {hold_timeouts}; "
     "the reviewer console signs out when its token expires."),
    ("164.312(a)(2)(iv)", "Encryption and decryption (Addressable)",
     ("protection",),
     "TLS certificates in force over the period, from the gateway's own records: {tls}; session recordings "
     "encrypted with AES-GCM ({recording_files:,} file(s))."),
    ("164.312(b)", "Audit controls: record and examine activity",
     ("audit-config", "activity", "integrity"),
     "{events:,} audit event(s) in the period, one per request, with who, what, when and the decision; "
     "the audit fields recorded are listed."),
    ("164.312(c)(1)", "Integrity: protect ePHI from improper alteration or destruction",
     ("integrity", "activity"),
     "Log integrity: {verify}. Writes and deletes under policy: {writes_refused:,} write/delete request(s) "
     "denied or held."),
    ("164.312(d)", "Person or entity authentication",
     ("login", "activity"),
     "OIDC signature, issuer, audience and expiry checked on every request; {auth_failures:,} failed "
     "authentication(s) refused and recorded."),
    ("164.312(e)(1)", "Transmission security",
     ("protection", "minimum-necessary"),
     "TLS on the listener: {tls}; {masked:,} PHI value(s) masked before leaving the gateway."),
    ("164.308(a)(1)(ii)(D)", "Information system activity review",
     ("activity", "approvals", "sign-off"),
     "This packet: activity, denials and holds for the period; {reviews:,} review(s) recorded for it "
     "so far (sign with ./run.sh report sign)."),
    ("164.308(a)(4)", "Information access management: authorization, establishment and modification",
     ("policy", "configuration", "approvals"),
     "{policy_versions:,} rule-file version(s) by hash, {versions_attributed:,} with their author's verified "
     "identity and reason, {versions_unattributed:,} unattributed; approver roles for each of {hold_rules:,} "
     "hold rule(s); {approvals:,} approval request(s), each with the approver's identity and time to decision."),
    ("164.308(a)(5)(ii)(C)", "Log-in monitoring (Addressable)",
     ("login",),
     "{auth_failures:,} authentication failure(s) from {auth_failure_addresses:,} address(es), with what "
     "followed; {auth_bursts:,} burst(s) flagged."),
    ("164.316(b)(2)(i)", "Retain documentation for six years",
     ("policy", "audit-config", "configuration"),
     "Every rule-file version kept with its content and hash; the ledger is never purged; session recordings "
     "kept {retention} as configured; {ledger_records:,} record(s) in the ledger."),
    ("164.502(b), 164.514(d)", "Minimum necessary",
     ("minimum-necessary", "disclosures"),
     "Role-to-field masking matrix ({matrix_roles} role(s) x {matrix_rows} field(s)); {masked:,} value(s) "
     "masked in {masked_responses:,} response(s)."),
    ("164.528", "Accounting of disclosures",
     ("disclosures",),
     "{disclosing_responses:,} response(s) disclosed identified PHI of {disclosed_subjects:,} patient(s) to "
     "{disclosure_recipients:,} user(s), whatever released them (policy, approved hold, grant, break-glass), "
     "recorded by keyed reference; per-patient listing with ./run.sh report disclosures."),
)


def attention(cite: str, f: Mapping[str, Any]) -> bool:
    """Whether a control's evidence needs the reviewer's attention (shown, never hidden)."""
    if cite == "164.312(a)(2)(i)":
        return bool(f["allowed_without_subject"])
    if cite == "164.312(c)(1)":
        return not bool(f["verified"])
    if cite in ("164.312(a)(2)(iv)", "164.312(e)(1)"):
        return not bool(f["tls_ok"])
    if cite == "164.308(a)(5)(ii)(C)":
        return bool(f["auth_bursts"])
    if cite == "164.308(a)(4)":
        return not f["policy_versions"] or bool(f["versions_unattributed"])
    if cite in ("164.312(a)(2)(iii)", "164.316(b)(2)(i)"):
        return not f["settings_recorded"]
    if cite == "164.502(b), 164.514(d)":
        return not f["matrix_rows"]
    return False


def build(sections: list[Section], figures: Mapping[str, Any]) -> list[Control]:
    by_id = {s.id: s for s in sections}
    out = []
    for cite, requirement, where, evidence in CONTROLS:
        out.append(Control(
            cite, requirement, evidence.format(**figures), tuple(by_id[w] for w in where if w in by_id),
            "attention" if attention(cite, figures) else "evidence",
        ))
    return out
