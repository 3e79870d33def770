"""One rules version per flow, end to end: a request decided under one version of the rules is masked
under that version even when the rules change while it waits for an approver, and its audit event
names the version it was handled under (a real Chroma, the real OpenID provider, a real gateway)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from addons.ledger.read import open_ledger
from tests.integration.test_approvals_chroma import Env, HeldClient, pending_for
from tests.support.servers import Chroma, Gateway, Idp

pytestmark = pytest.mark.integration

# The shipped rules let clinicians read notes in the clear; the edit masks them for everyone.
CLEAR_FOR_CLINICIANS = "    roles_except: [clinician]\n    operations: [search, get, export]\n    documents: true\n"
MASKED_FOR_ALL = "    roles_except: [nobody]\n    operations: [search, get, export]\n    documents: true\n"


def documents_of(result: list[dict[str, object]]) -> list[str]:
    [step] = result
    assert step["ok"], step
    docs = step["result"]["documents"]  # type: ignore[index]
    return [str(d) for d in docs]


def test_a_held_request_is_masked_under_the_rules_it_was_decided_with(
        gateway_factory: Callable[..., Gateway], chroma: Chroma, idp: Idp, tmp_path: Path) -> None:
    env = Env(gateway_factory, chroma, idp, tmp_path, phigate_audit_dir=str(tmp_path / "audit"))
    masking = env.rules / "masking.yaml"
    text = masking.read_text()
    assert CLEAR_FOR_CLINICIANS in text, "the shipped masking rules changed: update this test's edit"
    name, _ = env.collection("patients")
    held = env.export("clin-1", name)
    admin = env.approver()
    hold = pending_for(admin, name)

    masking.write_text(text.replace(CLEAR_FOR_CLINICIANS, MASKED_FOR_ALL))
    # Wait on the condition, not a timer: a fresh (non-held) read by ids shows the new rules.
    deadline = time.monotonic() + 20
    while True:
        fresh = HeldClient(env.gw.url, idp.token("clin-1"),
                           [{"op": "get", "collection": name, "ids": ["n1"], "include": ["documents"]}]).result()
        if "Jane Roe" not in documents_of(fresh)[0]:
            break
        assert time.monotonic() < deadline, "the masking edit was never applied"
        time.sleep(0.3)
    assert held.running(), "the held request must still be waiting"

    admin.approve(hold["hold_id"], "ticket PRIV-9: quality review")
    released = documents_of(held.result())
    assert any("Jane Roe" in d for d in released), f"masked under the newer rules: {released}"

    env.gw.stop()
    rows = open_ledger(tmp_path / "audit").execute(
        "SELECT hold_id, rules_version FROM events WHERE operation IN ('export', 'get') AND status = 200 "
        "ORDER BY seq").fetchall()
    versions = {hold_id: version for hold_id, version in rows}
    held_version = versions[hold["hold_id"]]
    later = [v for h, v in rows if h is None]
    assert held_version and later, rows
    # The held export was recorded under the version before the edit, the last read under the new one.
    assert later[-1] != held_version
