"""The final gate and the credential swap (addons/forward.py)."""

from __future__ import annotations

import pytest
from mitmproxy.test import taddons, tflow

from addons.config.profile_model import BackendAuth
from addons.core.context import Action, Decision, HoldInfo, HoldSpec, context
from addons.forward import Forward
from addons.gateway import Gateway

AUTH = BackendAuth(token_headers=("authorization", "x-chroma-token"), upstream_header="x-chroma-token",
                   upstream_format="{credential}")


def flow_with(decision: Decision | None, hold_state: str | None = None) -> tflow.HTTPFlow:
    f = tflow.tflow()
    f.request.headers["authorization"] = "Bearer caller-token"
    f.request.headers["x-chroma-token"] = "caller-token"
    f.request.headers["api-key"] = "smuggled"
    c = context(f)
    c.decision = decision
    if hold_state:
        c.hold = HoldInfo(hold_id="h1", state=hold_state, rule_id="r", requested_at=0.0, request_hash="x")
    return f


@pytest.fixture
def forward(monkeypatch: pytest.MonkeyPatch) -> Forward:
    monkeypatch.setenv("PHIGATE_T_CRED", "backend-secret")
    fw = Forward()
    monkeypatch.setattr(Forward, "_auth", lambda self, flow: AUTH)
    return fw


HOLD = Decision(Action.HOLD, "hold-export", "export needs approval", hold=HoldSpec(frozenset({"approver"})))


@pytest.mark.parametrize(
    ("decision", "hold_state", "status", "error"),
    [
        (None, None, 403, "forbidden"),
        (Decision(Action.DENY, "no-drop", "drops are not allowed"), None, 403, "forbidden"),
        (HOLD, None, 403, "approval_required"),
        (HOLD, "pending", 403, "approval_required"),
        (HOLD, "denied", 403, "approval_required"),
        (HOLD, "timeout", 403, "approval_required"),
    ],
)
def test_final_gate_refuses_what_was_not_allowed(forward: Forward, decision: Decision | None,
                                                 hold_state: str | None, status: int, error: str) -> None:
    with taddons.context(Gateway(), forward) as tctx:
        tctx.configure(forward, phigate_backend_credential_env="PHIGATE_T_CRED")
        f = flow_with(decision, hold_state)
        forward.request(f)
        assert f.response is not None and f.response.status_code == status
        assert f.response.json()["error"] == error
        assert context(f).refusal is not None
        # A refused flow keeps nothing of the backend's credential.
        assert "backend-secret" not in f.request.headers.values()


@pytest.mark.parametrize(
    ("decision", "hold_state"),
    [(Decision(Action.ALLOW, "clin-search"), None), (HOLD, "approved"), (HOLD, "granted"), (HOLD, "break_glass")],
)
def test_allowed_flows_lose_caller_tokens_and_get_the_backend_credential(
    forward: Forward, decision: Decision, hold_state: str | None
) -> None:
    with taddons.context(Gateway(), forward) as tctx:
        tctx.configure(forward, phigate_backend_credential_env="PHIGATE_T_CRED")
        f = flow_with(decision, hold_state)
        forward.request(f)
        assert f.response is None
        assert "authorization" not in f.request.headers
        assert "api-key" not in f.request.headers
        assert f.request.headers["x-chroma-token"] == "backend-secret"


def test_credential_from_file_and_bearer_format(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "cred"
    secret.write_text("file-secret\n")
    fw = Forward()
    auth = BackendAuth(token_headers=("authorization",), upstream_header="authorization",
                       upstream_format="Bearer {credential}")
    monkeypatch.setattr(Forward, "_auth", lambda self, flow: auth)
    with taddons.context(Gateway(), fw) as tctx:
        tctx.configure(fw, phigate_backend_credential_file=str(secret))
        f = flow_with(Decision(Action.ALLOW, "r"))
        fw.request(f)
        assert f.request.headers["authorization"] == "Bearer file-secret"


def test_hook_failure_refuses_never_forwards(forward: Forward, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(self: Forward, flow: object) -> BackendAuth:
        raise RuntimeError("profile exploded")

    monkeypatch.setattr(Forward, "_auth", boom)
    with taddons.context(Gateway(), forward) as tctx:
        tctx.configure(forward, phigate_backend_credential_env="PHIGATE_T_CRED")
        f = flow_with(Decision(Action.ALLOW, "r"))
        forward.request(f)
        assert f.response is not None and f.response.status_code == 500
        assert context(f).refusal is not None and context(f).refusal.stage == "credentials"


def test_none_and_a_credential_contradict() -> None:
    fw = Forward()
    with taddons.context(Gateway(), fw) as tctx, pytest.raises(Exception, match="contradicts"):
        tctx.configure(fw, phigate_backend_credential_none=True, phigate_backend_credential_env="X")


def test_every_copy_of_every_credential_header_is_stripped_whatever_its_case() -> None:
    fw = Forward()
    with taddons.context(Gateway(), fw) as tctx:
        tctx.configure(fw, phigate_backend_credential_none=True)
        auth = BackendAuth(token_headers=("authorization", "X-Custom-Key"), upstream_header=None,
                           upstream_format="{credential}")
        f = tflow.tflow()
        h = f.request.headers
        h.add("Authorization", "Bearer one")
        h.add("authorization", "Bearer two")
        h.add("X-API-KEY", "smuggled")
        h.add("Cookie", "session=1")
        h.add("x-custom-key", "caller")
        h.add("x-kept", "yes")
        fw.swap_credentials(f, auth)
        left = {name.lower() for name in h.keys()}
        assert left.isdisjoint({"authorization", "x-api-key", "cookie", "x-custom-key"})
        assert h["x-kept"] == "yes"
        # A reloaded profile naming another token header is honoured at once.
        other = BackendAuth(token_headers=("x-other-key",), upstream_header=None, upstream_format="{credential}")
        f = tflow.tflow()
        f.request.headers["x-other-key"] = "caller"
        f.request.headers["x-custom-key"] = "not a credential header any more"
        fw.swap_credentials(f, other)
        assert "x-other-key" not in f.request.headers
        assert f.request.headers["x-custom-key"] == "not a credential header any more"
