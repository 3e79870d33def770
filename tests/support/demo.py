"""`./run.sh demo`: the whole gateway on loopback, driven by the real chromadb client.

Starts a local OpenID provider, a Chroma server and the gateway (TLS, the full addon chain), then
plays a short scripted session and prints what happened: one role allowed to search, another denied
a delete, the same query answered for a clinician and an agent side by side, a token used as a
handle, an export held until a second identity approves it, the ledger verified, and an evidence
packet written. Everything it starts is stopped at the end (or on Ctrl-C); with --keep-running the
servers stay up until Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from addons.cli.approvals import AdminClient
from addons.cli.certs import make_certs
from addons.cli.keys import gateway_options, make_keys
from tests.support.servers import ROOT, Chroma, Gateway, Idp, chroma_steps, free_port

COLLECTION = "patients_notes"
PATIENTS = {
    "ids": ["p1", "p2", "p3", "p4"],
    "embeddings": [[0.9, 0.1, 0.0, 0.1], [0.1, 0.9, 0.1, 0.0], [0.0, 0.1, 0.9, 0.1], [0.8, 0.2, 0.1, 0.0]],
    "metadatas": [
        {"patient_name": "John Smith", "mrn": "1234567", "dob": "1961-03-05", "ward": "cardio"},
        {"patient_name": "Jane Doe", "mrn": "2345678", "dob": "1980-02-14", "ward": "endo"},
        {"patient_name": "Robert Brown", "mrn": "7654321", "dob": "1990-11-23", "ward": "neuro"},
        {"patient_name": "Alice Green", "mrn": "3456789", "dob": "1975-07-30", "ward": "cardio"},
    ],
    "documents": [
        "Patient John Smith (MRN 1234567) presented with chest pain; call 617-555-0142.",
        "Jane Doe, DOB 02/14/1980, diabetic follow-up, HbA1c 7.2%.",
        "Robert Brown MRN 7654321 reports migraine, SSN 123-45-6789 on file.",
        "Alice Green, DOB 1975-07-30, allergy to penicillin, email alice.green@example.com.",
    ],
}


def say(text: str = "") -> None:
    print(text, flush=True)


def step(n: int, title: str) -> None:
    say(f"\n== {n}. {title}")


def show(label: str, result: dict[str, Any]) -> None:
    if result["ok"]:
        say(f"   {label}: ok -> {json.dumps(result['result'])[:300]}")
    else:
        say(f"   {label}: REFUSED -> {result['error']['message'][:300]}")


class Demo:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.certs = make_certs(workdir / "certs", ["127.0.0.1", "localhost"])
        self.keys = make_keys(workdir / "keys")
        self.ssl_env = {"SSL_CERT_FILE": str(self.certs["ca.crt"])}
        self.admin_port = free_port()

    def gateway(self, idp: Idp, upstream: str, profile: str) -> Gateway:
        opts = {
            "phigate_rules": str(ROOT / "rules"), "phigate_profile": profile,
            "phigate_issuer": idp.issuer, "phigate_audience": "phigate",
            "phigate_audit_dir": str(self.workdir / "audit"),
            "phigate_witness": str(self.workdir / "witness"),
            "phigate_holds_db": str(self.workdir / "holds.sqlite"),
            "phigate_admin_port": str(self.admin_port), "phigate_console_scope": "openid vectors",
            **gateway_options(self.keys),
        }
        gw = Gateway(upstream, opts, runner="launch", tls_cert=str(self.certs["server.pem"]),
                     tls_ca=str(self.certs["ca.crt"]))
        return gw

    def run_client(self, gw: Gateway, idp: Idp, who: str, steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return chroma_steps(gw.url, idp.token(who), steps, env=self.ssl_env)


def play(demo: Demo, idp: Idp, chroma: Chroma, gw: Gateway) -> None:
    admin_url = f"http://127.0.0.1:{demo.admin_port}"
    say(f"OpenID provider {idp.issuer}  |  Chroma {chroma.url}  |  gateway {gw.url} (TLS)  |  "
        f"reviewer console {admin_url}/")

    step(1, "db-admin-1 (role db-admin) loads four patient notes through the gateway")
    res = demo.run_client(gw, idp, "admin-1", [{"op": "create", "collection": COLLECTION},
                                              {"op": "add", "collection": COLLECTION, **PATIENTS}])
    for r in res:
        show(r["op"], r)

    query = {"op": "query", "collection": COLLECTION, "query_embeddings": [[0.9, 0.1, 0.0, 0.1]],
             "n_results": 2, "where": {"ward": "cardio"}, "include": ["documents", "metadatas", "distances"]}
    step(2, "The same query (ward = cardio) by a clinician and by an analytics agent")
    clin = demo.run_client(gw, idp, "clin-1", [query])[0]
    agent = demo.run_client(gw, idp, "agent-1", [query])[0]
    if clin["ok"] and agent["ok"]:
        say(f"   {'clinician (clin-1)':<52} | analytics agent (agent-1)")
        for cm, am in zip(clin["result"]["metadatas"][0], agent["result"]["metadatas"][0], strict=True):
            for key in ("patient_name", "mrn", "dob"):
                say(f"   {key:>12}: {cm.get(key)!s:<38} | {am.get(key)!s}")
        for cd, ad in zip(clin["result"]["documents"][0], agent["result"]["documents"][0], strict=True):
            say(f"   doc: {cd[:70]}\n        {ad[:70]}")
        say(f"   distances identical for both: {clin['result']['distances'] == agent['result']['distances']}")
    else:
        show("clinician", clin)
        show("agent", agent)

    step(3, "The agent uses a token it received as a handle: search where mrn = <token>")
    if agent["ok"]:
        token = next(m["mrn"] for m in agent["result"]["metadatas"][0] if m.get("ward") == "cardio")
        got = demo.run_client(gw, idp, "agent-1", [{
            "op": "query", "collection": COLLECTION, "query_embeddings": [[0.9, 0.1, 0.0, 0.1]], "n_results": 1,
            "where": {"mrn": token}, "include": ["metadatas"]}])[0]
        show(f"query where mrn={token[:24]}...", got)
        say("   (the gateway turned the token back into the MRN before forwarding, and masked the answer again)")

    step(4, "The agent tries to delete a record: no rule allows it (default deny)")
    show("agent delete p1", demo.run_client(gw, idp, "agent-1", [{"op": "delete", "collection": COLLECTION,
                                                                   "ids": ["p1"]}])[0])

    step(5, "db-admin-1 tries to drop the collection: rule no-drop denies it")
    show("drop", demo.run_client(gw, idp, "admin-1", [{"op": "drop", "collection": COLLECTION}])[0])

    step(6, "The clinician exports the whole collection: held until a privacy officer approves")
    result, seconds = held_export_approved(admin_url, idp, lambda: demo.run_client(
        gw, idp, "clin-1", [{"op": "get", "collection": COLLECTION, "include": ["metadatas"]}])[0])
    show(f"clinician's export, completed after {seconds:.1f}s", result)


def held_export_approved(admin_url: str, idp: Idp,
                         export: Callable[[], dict[str, Any]]) -> tuple[dict[str, Any], float]:
    """Run `export` (a client call the gateway holds) in the background, approve its hold as a second
    identity (approver-1) through the admin API, and return the client's result and its wait."""
    held: dict[str, Any] = {}
    t0 = time.monotonic()
    worker = threading.Thread(target=lambda: held.update(result=export()))
    worker.start()
    approver = AdminClient(admin_url, idp.token("approver-1"))
    hold = approver.wait_for_pending(lambda h: h.get("operation") == "export", timeout=60)
    say(f"   held: hold {hold['hold_id']} for {hold.get('requester') or hold.get('subject')}, "
        f"rule {hold.get('rule_id')}; the clinician's client is waiting")
    decided = approver.approve(str(hold["hold_id"]), "quarterly chart review, ticket PRIV-1042")
    say(f"   approver-1 (privacy-office) approved: state {decided.get('state')}")
    worker.join(timeout=120)
    no_answer = {"ok": False, "status": 0, "result": {"error": "no answer"}, "error": {"message": "no answer"}}
    return held.get("result", no_answer), time.monotonic() - t0


def finish(demo: Demo, stop_gateway: Callable[[], None]) -> None:
    stop_gateway()  # the ledger is read after the gateway has stopped and sealed it
    step(7, "Audit ledger: recompute the Merkle tree and check every signed checkpoint and the witness")
    from addons.cli.verify import main as verify_main

    verify_main(["--dir", str(demo.workdir / "audit"), "--witness", str(demo.workdir / "witness")])

    step(8, "HIPAA evidence packet for this session (HTML, PDF, CSV/JSON data, signed manifest)")
    from reports.cli import main as report_main

    out = demo.workdir / "packet"
    today = time.strftime("%Y-%m-%d", time.gmtime())
    report_main(["--ledger", str(demo.workdir / "audit"), "--from", today, "--to", today, "--out", str(out),
                 "--signing-key", str(demo.keys["audit-signing.pem"]),
                 "--witness", str(demo.workdir / "witness"), "--tls-cert", str(demo.certs["server.crt"]),
                 "--audit-key-file", str(demo.keys["audit-signing.pem"])])
    say(f"   packet written to {out} (open {out / 'packet.html'} or {out / 'packet.pdf'})")
    say("   accounting of disclosures (164.528) for Jane Doe, MRN 2345678, released by the approved export:")
    report_main(["disclosures", "--subject", "2345678", "--ledger", str(demo.workdir / "audit"),
                 "--token-key-file", str(demo.keys["token-keys"])])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="run.sh demo", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", choices=["chroma", "milvus"], default="chroma",
                    help="which vector database to put behind the gateway (default chroma)")
    ap.add_argument("--keep-running", action="store_true", help="leave the servers up until Ctrl-C")
    ap.add_argument("--dir", default=None, help="where to keep the demo's files (default: a new temp folder)")
    args = ap.parse_args(argv)
    if args.backend == "milvus":
        from tests.support.demo_milvus import main as milvus_main

        return milvus_main(argv)
    workdir = Path(args.dir or tempfile.mkdtemp(prefix="phigate-demo-"))
    if args.dir and workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    demo = Demo(workdir)
    say(f"phigate demo: files in {workdir}")
    with Idp() as idp, Chroma() as chroma:
        gw = demo.gateway(idp, chroma.url, "chroma").start(timeout=120)
        try:
            play(demo, idp, chroma, gw)
            if args.keep_running:
                say(f"\nServers are up: gateway {gw.url}, console http://127.0.0.1:{demo.admin_port}/. "
                    "Press Ctrl-C to stop them all.")
                try:
                    while True:
                        time.sleep(3600)
                except KeyboardInterrupt:
                    pass
        finally:
            finish(demo, gw.stop)
    say("\nDone. The demo stopped everything it started (gateway, Chroma, OpenID provider); "
        f"its files stay in {workdir}. Run it again with ./run.sh demo; stop a --keep-running demo with Ctrl-C.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
