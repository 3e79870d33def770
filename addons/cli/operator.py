"""Who is running this command: an operator's own OIDC access token, verified like the gateway's.

Commands that put a person's name in the ledger (`report sign`, `rules apply`) take that person's
access token (the same one the approvals CLI sends to the admin API), verify it against the
issuer's published keys with the gateway's own verifier (issuer, audience, expiry, algorithms), map
its groups to roles with policy.yaml's `roles:` section, and record the verified subject. A free-text
name would let anyone record anyone.

    --token (or env PHIGATE_TOKEN)  --issuer (PHIGATE_ISSUER)  --audience (PHIGATE_AUDIENCE, default phigate)
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Iterable
from pathlib import Path

from addons.config.rulefiles import ConfigError, parse_yaml
from addons.core.context import Caller


class OperatorError(Exception):
    """The token is missing or does not verify; the message says what to do."""


def add_arguments(p: argparse.ArgumentParser, roles_default: str) -> None:
    env = os.environ.get
    p.add_argument("--token", default=env("PHIGATE_TOKEN", ""),
                   help="your own OIDC access token (prefer env PHIGATE_TOKEN: command lines are visible to other "
                        "users of the machine)")
    p.add_argument("--issuer", default=env("PHIGATE_ISSUER", ""),
                   help="the OpenID provider the gateway trusts (its phigate_issuer; env PHIGATE_ISSUER)")
    p.add_argument("--audience", default=env("PHIGATE_AUDIENCE", "phigate"),
                   help="the audience tokens are issued for (phigate_audience; env PHIGATE_AUDIENCE, default phigate)")
    p.add_argument("--roles", default=env("PHIGATE_OPERATOR_ROLES", roles_default),
                   help=f"phigate roles allowed to run this command, comma-separated (default {roles_default})")


def verify(args: argparse.Namespace, rules_dir: Path) -> Caller:
    """The verified identity behind `args.token`, holding one of `args.roles`."""
    if not args.token:
        raise OperatorError("no token: set PHIGATE_TOKEN (or pass --token) to your own access token from the "
                            "OpenID provider; the ledger records who you are from it")
    if not args.issuer:
        raise OperatorError("no issuer: pass --issuer (the gateway's phigate_issuer) or set PHIGATE_ISSUER")
    roles = frozenset(r.strip() for r in str(args.roles).split(",") if r.strip())
    if not roles:
        raise OperatorError("--roles: expected at least one role")
    return asyncio.run(_verify(args.token, args.issuer, args.audience, rules_dir, roles))


async def _verify(token: str, issuer: str, audience: str, rules_dir: Path, allowed: Iterable[str]) -> Caller:
    # The gateway's verifier: one implementation of what a valid token is.
    from addons.auth.jwks import KeySet, KeysUnavailable
    from addons.auth.verifier import AuthError, Verifier
    from addons.config.roles import compile_role_mapping

    policy = rules_dir / "policy.yaml"
    try:
        doc = parse_yaml(policy, policy.read_text(encoding="utf-8"))
        mapping = compile_role_mapping(policy, doc.get("roles") if isinstance(doc, dict) else None)
    except (OSError, ConfigError) as exc:
        raise OperatorError(f"cannot read the role mapping in {policy}: {exc}") from None
    verifier = Verifier(issuer, (audience,), KeySet(issuer))
    try:
        key, verdict = await verifier.verify(token)
    except AuthError as err:
        raise OperatorError(f"your token does not verify: {err.detail}") from None
    except KeysUnavailable as err:
        raise OperatorError(f"cannot fetch the signing keys of {issuer}: {err}") from None
    who = verifier.identity(key, verdict, mapping)
    wanted = frozenset(allowed)
    if not who.roles & wanted:
        raise OperatorError(f"{who.subject} holds roles {sorted(who.roles) or 'none'}; this command needs one of "
                            f"{sorted(wanted)}")
    return who
