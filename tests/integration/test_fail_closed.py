"""Fail closed at the edges the other tests do not reach: a dead backend, broken rules at start,
and rule edits while the gateway runs."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from addons.ledger.read import open_ledger
from tests.support.servers import ROOT, Chroma, Gateway, Idp, free_port, http_call

pytestmark = pytest.mark.integration
COLLECTIONS = "/api/v2/tenants/default_tenant/databases/default_database/collections"


def test_unreachable_backend_is_a_502_and_audited(idp: Idp, gateway_factory: Callable[..., Gateway],
                                                  tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens here
    gw = gateway_factory(dead)
    status, _, body = http_call("GET", f"{gw.url}{COLLECTIONS}",
                                headers={"Authorization": f"Bearer {idp.token('admin-1')}"})
    assert status == 502
    assert idp.token("admin-1") not in body.decode(errors="replace")
    gw.stop()
    con = open_ledger(tmp_path / "audit")
    rows = con.sql("SELECT decision, error, subject FROM events WHERE path LIKE '%/collections'").fetchall()
    assert rows, "the failed request has an audit event"
    _decision, error, subject = rows[-1]
    assert subject == "admin-1" and error


def test_broken_rules_stop_the_gateway_with_file_rule_and_value(idp: Idp, tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(ROOT / "rules", rules)
    text = (rules / "policy.yaml").read_text().replace("    action: deny\n", "    action: sometimes\n", 1)
    (rules / "policy.yaml").write_text(text)
    gw = Gateway("http://127.0.0.1:9", {
        "phigate_rules": str(rules), "phigate_profile": "chroma", "phigate_issuer": idp.issuer,
        "phigate_audience": "phigate", "phigate_backend_credential_none": "true",
        "phigate_allow_plain_http": "true", "phigate_audit_dir": str(tmp_path / "audit"),
        "phigate_admin_port": "0", "phigate_holds_db": str(tmp_path / "holds.sqlite"),
    }, env={"PHIGATE_TOKEN_KEYS": "k1=a2tra2tra2tra2tra2tra2tra2tra2tra2tra2tra2s="})
    with pytest.raises(RuntimeError) as err:
        gw.start(timeout=30)
    log = str(err.value)
    assert "policy.yaml" in log and "no-drop" in log and "sometimes" in log


def test_rule_edits_apply_without_restart_and_bad_edits_keep_the_last_good(
    chroma: Chroma, idp: Idp, gateway_factory: Callable[..., Gateway], tmp_path: Path
) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(ROOT / "rules", rules)
    gw = gateway_factory(chroma.url, phigate_rules=str(rules))
    token = idp.token("admin-1")
    url = f"{gw.url}{COLLECTIONS}/reload_probe"

    def drop_status() -> tuple[int, dict[str, object]]:
        status, _, body = http_call("DELETE", url, headers={"Authorization": f"Bearer {token}"})
        return status, json.loads(body or b"{}")

    status, body = drop_status()
    assert status == 403 and body["rule_id"] == "no-drop"
    policy = rules / "policy.yaml"
    good = policy.read_text()
    # A good edit: the deny now names another reason; applied within the reload interval.
    policy.write_text(good.replace("dropping collections, databases or the server is disabled in this deployment",
                                   "drops are frozen during the audit window"))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and "frozen" not in str(drop_status()[1].get("detail")):
        time.sleep(0.3)
    assert "frozen" in str(drop_status()[1]["detail"])
    # A bad edit: the gateway keeps the last good rules (still denies, same reason) and stays ready.
    policy.write_text(good.replace("    action: deny\n", "    action: sometimes\n", 1))
    time.sleep(2.5)
    status, body = drop_status()
    assert status == 403 and "frozen" in str(body["detail"])
    ready, _, _ = http_call("GET", f"{gw.url}/-/readyz")
    assert ready == 200
