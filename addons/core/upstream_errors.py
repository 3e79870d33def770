"""Failed upstream exchanges, classified: what a client and the audit are told instead of mitmproxy's words.

mitmproxy's message for a failed exchange (`flow.error.msg`) can quote the upstream's bytes
(`unexpected server response: b'...'`), PHI included. Threat: those bytes reaching a client in
mitmproxy's error page, or the ledger in the event's `error` field. Only the reason below leaves.
"""

from __future__ import annotations

from dataclasses import dataclass

# Marker in the protocol error raised for trailers (addons/runtime/wire.py), recognised below.
TRAILERS_REFUSED = "trailers are refused by the gateway"


@dataclass(frozen=True, slots=True)
class UpstreamFailure:
    reason: str  # upstream_unavailable, upstream_reset, upstream_protocol_error, ...
    status: int  # what the client is answered with
    detail: str  # a fixed sentence per reason: no upstream text


_DETAILS = {
    "upstream_unavailable": (502, "the backend could not be reached"),
    "upstream_timeout": (504, "the backend did not answer in time"),
    "upstream_reset": (502, "the backend closed the connection before answering completely"),
    "upstream_trailers": (502, "the backend sent HTTP trailers, which the gateway refuses"),
    "upstream_too_large": (502, "the backend's answer exceeds the gateway's body size limit"),
    "upstream_protocol_error": (502, "the backend's answer is not valid HTTP"),
    "client_protocol_error": (400, "the request is not valid HTTP"),
    "client_disconnected": (499, "the client closed the connection"),
    "killed": (502, "the gateway stopped this exchange"),
    "upstream_error": (502, "the exchange with the backend failed"),
}

# (substring of mitmproxy's message, lower-cased) -> reason; first match wins.
_PATTERNS = (
    (TRAILERS_REFUSED, "upstream_trailers"),
    ("body_size_limit", "upstream_too_large"),
    ("connection killed", "killed"),
    ("client disconnected", "client_disconnected"),
    ("timed out", "upstream_timeout"),
    ("timeout", "upstream_timeout"),
    ("connect call failed", "upstream_unavailable"),
    ("connection refused", "upstream_unavailable"),
    ("name or service not known", "upstream_unavailable"),
    ("no route to host", "upstream_unavailable"),
    ("network is unreachable", "upstream_unavailable"),
    ("temporary failure in name resolution", "upstream_unavailable"),
    ("server disconnected", "upstream_reset"),
    ("connection reset", "upstream_reset"),
    ("peer closed", "upstream_reset"),
    ("broken pipe", "upstream_reset"),
    ("protocol error", "upstream_protocol_error"),
    ("unexpected server response", "upstream_protocol_error"),
    ("bad http", "upstream_protocol_error"),
    ("invalid", "upstream_protocol_error"),
    ("from server", "upstream_protocol_error"),
)


def classify(message: str, request_complete: bool = True) -> UpstreamFailure:
    """The failure class of mitmproxy's `flow.error.msg`; never any of its text.

    `request_complete` False: the client's request itself was not fully read, so a protocol error
    is the client's."""
    text = message.lower()
    reason = next((r for needle, r in _PATTERNS if needle in text), "upstream_error")
    if reason == "upstream_protocol_error" and not request_complete:
        reason = "client_protocol_error"
    status, detail = _DETAILS[reason]
    return UpstreamFailure(reason, status, detail)
