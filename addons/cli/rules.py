"""`./run.sh rules apply`: change a rule file with your name and reason recorded in the audit ledger.

    PHIGATE_TOKEN=<your access token> ./run.sh rules apply NEW_FILE --reason "ticket SEC-12: ..." \
        [--to policy.yaml | masking.yaml | profiles/NAME.yaml] [--rules DIR] [--ledger DIR]

The new file is compiled exactly as the gateway compiles it (a bad file is refused here, naming the
rule and the bad value), your token is verified (addons/cli/operator.py), and a `rule_change`
record (the new content's SHA-256, your verified subject, the reason) is made durable in the ledger
before the file replaces the old one atomically. Running gateways pick the new version up within a
second and record it as a rule version; the packet attributes that version to you. A version that
appears without such a record (an edit by hand) is shown as "unattributed".

Exit status: 0 applied, 1 the file does not compile, 2 bad usage, token or ledger.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import socket
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from addons.cli import operator
from addons.config.rulefiles import ConfigError, parse_yaml
from addons.ledger import sink
from addons.ledger.writer import LedgerError

ROOT = Path(__file__).resolve().parents[2]


def _compiler(target: str) -> Callable[[Path, Any], Any]:
    """The gateway's own compile function for the rule file at `target` (relative to the rules folder)."""
    if target == "policy.yaml":
        from addons.config.policy_rules import compile_policy

        return compile_policy
    if target == "masking.yaml":
        from addons.config.masking_rules import compile_masking

        return compile_masking
    parts = Path(target).parts
    if len(parts) == 2 and parts[0] == "profiles" and parts[1].endswith(".yaml"):
        from addons.config.profiles import compile_profile

        return compile_profile
    raise ValueError(f"--to {target}: expected policy.yaml, masking.yaml or profiles/NAME.yaml")


def _parser() -> argparse.ArgumentParser:
    env = os.environ.get
    p = argparse.ArgumentParser(prog="run.sh rules", description="Change rule files, attributed in the audit ledger.")
    sub = p.add_subparsers(dest="command", required=True)
    a = sub.add_parser("apply", help="replace a rule file with a new version, recording who and why",
                       description="Replace a rule file with a new version, recording who and why in the ledger.")
    a.add_argument("file", help="the new version of the rule file")
    a.add_argument("--reason", required=True, help="why (ticket, change request); recorded in the ledger")
    a.add_argument("--to", help="which rule file it replaces, relative to the rules folder (default: the file's "
                                "own name: policy.yaml or masking.yaml; profiles/NAME.yaml for a profile)")
    a.add_argument("--rules", default=env("PHIGATE_RULES", str(ROOT / "rules")),
                   help="the rules folder the gateways load (phigate_rules; env PHIGATE_RULES)")
    a.add_argument("--ledger", default=env("PHIGATE_AUDIT_DIR", ""),
                   help="the audit ledger folder (phigate_audit_dir; env PHIGATE_AUDIT_DIR)")
    a.add_argument("--audit-key-file", default=env("PHIGATE_AUDIT_KEY_FILE", ""),
                   help="the audit signing key, to sign a checkpoint over the record (env PHIGATE_AUDIT_KEY_FILE)")
    a.add_argument("--witness", default=env("PHIGATE_WITNESS", ""), help="the checkpoint witness (env PHIGATE_WITNESS)")
    operator.add_arguments(a, "approver,db-admin")
    return p


def apply(args: argparse.Namespace) -> str:
    """Check, attribute, then replace; returns what was done. Raises ValueError / ConfigError / OperatorError."""
    rules_dir = Path(args.rules)
    new = Path(args.file)
    target = args.to or new.name
    compile_fn = _compiler(target)
    if not args.ledger or not Path(args.ledger).is_dir():
        raise ValueError("--ledger must be the gateway's ledger folder (phigate_audit_dir; env PHIGATE_AUDIT_DIR)")
    if not rules_dir.is_dir():
        raise ValueError(f"--rules {rules_dir}: no such folder")
    raw = new.read_bytes()
    dest = rules_dir / target
    # Compiled under its destination's name, so errors name the file the gateway would report.
    compile_fn(dest, parse_yaml(dest, raw.decode("utf-8")))
    who = operator.verify(args, rules_dir)
    digest = hashlib.sha256(raw).hexdigest()
    # Durable before the file changes: a version must never be in force before its author is recorded.
    sink.record_to(args.ledger, "configuration", {
        "kind": "rule_change", "name": target,
        "content": {"sha256": digest, "author": who.subject, "issuer": who.issuer, "name": who.name,
                    "reason": args.reason},
    }, key_file=args.audit_key_file, witness=args.witness or None, node_id=_node_id())
    tmp = dest.with_name(f".{dest.name}.apply-{os.getpid()}")
    tmp.write_bytes(raw)
    os.replace(tmp, dest)
    return f"applied {target} (sha256 {digest[:12]}) as {who.subject}: {args.reason}"


def _node_id() -> str:
    """This tool's own ledger node, so it never contends with a gateway's writer."""
    host = "".join(c if c.isalnum() or c in "._-" else "-" for c in socket.gethostname())[:100]
    return f"rules-{host or 'host'}"


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        print(apply(args))
    except ConfigError as exc:
        print(f"error: the new file does not compile, nothing changed: {exc.diagnostics()}", file=sys.stderr)
        return 1
    except (ValueError, OSError, operator.OperatorError, LedgerError) as exc:
        print(f"error: nothing changed: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
