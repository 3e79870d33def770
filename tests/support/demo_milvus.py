"""`./run.sh demo --backend milvus`: the same demo with a real Milvus server instead of Chroma.

Starts the OpenID provider, a Milvus 2.3.5 standalone server (authorization on: it only answers
the gateway's injected `root` credential) and the gateway (TLS, full chain, profile `milvus`), then
plays the Chroma demo's story over Milvus's REST v1 API with the repository's own rules: a db-admin
loads patient notes, a clinician and an analytics agent run the same filtered search side by side
(clear vs masked), the agent is denied a delete, the db-admin is denied a drop, a clinician's export
is held until a privacy officer approves it; then the ledger is verified and an evidence packet
written. Everything it starts is stopped at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import ssl
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.support.demo import Demo, demo_dir, finish, held_export_approved, say, step
from tests.support.milvus_server import ROOT_CREDENTIAL, Milvus
from tests.support.servers import Gateway, Idp

COLLECTION = "patients_notes"
PATIENTS = [
    ({"patient_name": "John Smith", "mrn": "1234567", "dob": "1961-03-05", "ward": "cardio",
      "text": "Patient John Smith (MRN 1234567) presented with chest pain; call 617-555-0142."},
     [0.9, 0.1, 0.0, 0.1]),
    ({"patient_name": "Jane Doe", "mrn": "2345678", "dob": "1980-02-14", "ward": "endo",
      "text": "Jane Doe, DOB 02/14/1980, diabetic follow-up, HbA1c 7.2%."}, [0.1, 0.9, 0.1, 0.0]),
    ({"patient_name": "Robert Brown", "mrn": "7654321", "dob": "1990-11-23", "ward": "neuro",
      "text": "Robert Brown MRN 7654321 reports migraine, SSN 123-45-6789 on file."}, [0.0, 0.1, 0.9, 0.1]),
    ({"patient_name": "Alice Green", "mrn": "3456789", "dob": "1975-07-30", "ward": "cardio",
      "text": "Alice Green, DOB 1975-07-30, allergy to penicillin, email alice.green@example.com."},
     [0.8, 0.2, 0.1, 0.0]),
]
FIELDS = ["patient_name", "mrn", "dob", "ward", "text"]


class MilvusCaller:
    """REST v1 calls through the gateway (TLS), as one identity."""

    def __init__(self, gw: Gateway, token: str, cafile: Path) -> None:
        self.gw, self.token = gw, token
        self.tls = ssl.create_default_context(cafile=str(cafile))

    def __call__(self, name: str, body: dict[str, Any] | None = None, method: str = "POST") -> dict[str, Any]:
        req = urllib.request.Request(f"{self.gw.url}/v1/vector/{name}", method=method,
                                     data=json.dumps(body).encode() if body is not None else None)
        req.add_header("Content-Type", "application/json")
        req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=600, context=self.tls) as resp:
                return {"ok": True, "status": resp.status, "result": json.load(resp)}
        except urllib.error.HTTPError as exc:
            answer = json.loads(exc.read() or b"{}")
            return {"ok": False, "status": exc.code, "result": answer}


def show(label: str, r: dict[str, Any]) -> None:
    if r["ok"]:
        say(f"   {label}: ok -> {json.dumps(r['result'])[:300]}")
    else:
        say(f"   {label}: REFUSED {r['status']} -> {r['result'].get('error')}: {r['result'].get('detail', '')[:240]}")


def play(demo: Demo, idp: Idp, milvus: Milvus, gw: Gateway) -> None:
    admin_url = f"http://127.0.0.1:{demo.admin_port}"
    ca = demo.certs["ca.crt"]
    admin, clin, agent = (MilvusCaller(gw, idp.token(who), ca) for who in ("admin-1", "clin-1", "agent-1"))
    say(f"OpenID provider {idp.issuer}  |  Milvus {milvus.url} (REST v1)  |  gateway {gw.url} (TLS)  |  "
        f"reviewer console {admin_url}/")

    step(1, "db-admin-1 (role db-admin) creates a collection and loads four patient notes through the gateway")
    show("create", admin("collections/create", {"collectionName": COLLECTION, "dimension": 4, "metricType": "L2"}))
    show("insert", admin("insert", {"collectionName": COLLECTION,
                                    "data": [{**fields, "vector": vec} for fields, vec in PATIENTS]}))

    search = {"collectionName": COLLECTION, "vector": [0.9, 0.1, 0.0, 0.1], "filter": 'ward == "cardio"',
              "outputFields": FIELDS, "limit": 2}
    step(2, "The same search (ward == cardio) by a clinician and by an analytics agent")
    deadline = time.monotonic() + 30
    while True:  # Milvus makes fresh inserts searchable a moment later
        c, a = clin("search", search), agent("search", search)
        if not (c["ok"] and len(c["result"].get("data", [])) < 2 and time.monotonic() < deadline):
            break
        time.sleep(0.5)
    if c["ok"] and a["ok"]:
        say(f"   {'clinician (clin-1)':<52} | analytics agent (agent-1)")
        for cr, ar in zip(c["result"]["data"], a["result"]["data"], strict=True):
            for key in ("patient_name", "mrn", "dob"):
                say(f"   {key:>12}: {cr.get(key)!s:<38} | {ar.get(key)!s}")
            say(f"   text: {str(cr.get('text'))[:70]}\n         {str(ar.get('text'))[:70]}")
    else:
        show("clinician", c)
        show("agent", a)

    step(3, "The agent tries to delete a record: no rule allows it (default deny)")
    first_id = (c["result"]["data"] or [{}])[0].get("id") if c["ok"] else None
    show("agent delete", agent("delete", {"collectionName": COLLECTION, "id": [first_id or 0]}))

    step(4, "db-admin-1 tries to drop the collection: rule no-drop denies it")
    show("drop", admin("collections/drop", {"collectionName": COLLECTION}))

    step(5, "The clinician pages through the whole collection (an export): held until a privacy officer approves")
    result, seconds = held_export_approved(admin_url, idp, lambda: clin(
        "query", {"collectionName": COLLECTION, "filter": "id > 0", "outputFields": FIELDS, "limit": 100, "offset": 0}))
    show(f"clinician's export, completed after {seconds:.1f}s", result)

def main(argv: list[str] | None = None) -> int:
    """Entry point the lead's `tests/support/demo.py` hands `--backend milvus` to (same flags)."""
    ap = argparse.ArgumentParser(prog="run.sh demo --backend milvus", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", choices=["milvus"], default="milvus")
    ap.add_argument("--keep-running", action="store_true", help="leave the servers up until Ctrl-C")
    ap.add_argument("--dir", default=None, help="where to keep the demo's files (default: a new temp folder)")
    args = ap.parse_args(argv)
    return run(Demo(demo_dir(args.dir, "phigate-demo-milvus-")), args.keep_running)


def run(demo: Demo, keep_running: bool = False) -> int:
    """The Milvus demo in `demo.workdir`: start, play, verify the ledger, write the packet, stop."""
    # The gateway injects Milvus's own credential (the local server's root user), never a caller's token.
    demo.keys["backend-credential"].write_text(ROOT_CREDENTIAL)
    say(f"phigate demo (Milvus): files in {demo.workdir}")
    with Idp() as idp, Milvus() as milvus:
        say(f"   Milvus started in {milvus.started_in:.1f}s")
        gw = demo.gateway(idp, milvus.url, "milvus").start(timeout=120)
        try:
            play(demo, idp, milvus, gw)
            if keep_running:
                say(f"\nServers are up: gateway {gw.url}, console http://127.0.0.1:{demo.admin_port}/. "
                    "Press Ctrl-C to stop them all.")
                with contextlib.suppress(KeyboardInterrupt):
                    threading.Event().wait()
        finally:
            finish(demo, gw.stop)
    say("\nDone. The demo stopped everything it started (gateway, Milvus, OpenID provider); "
        f"its files stay in {demo.workdir}.")
    return 0
