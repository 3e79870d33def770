"""Role mapping: IdP claim values (groups, roles, scope) -> phigate roles, from rules/policy.yaml `roles:`.

A new group created at the IdP grants nothing until the policy owner maps it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from addons.config import rulefiles

# ---------------------------------------------------------------- role mapping (rules/policy.yaml)


@dataclass(frozen=True, slots=True)
class RoleMapping:
    """IdP claim values -> phigate roles. Values the map does not name grant nothing."""

    claim: str
    map: Mapping[str, frozenset[str]]

    def roles_for(self, claims: Mapping[str, Any]) -> frozenset[str]:
        value = claims.get(self.claim)
        if isinstance(value, str):
            values: Iterable[Any] = value.split()  # "scope" is one space-separated string
        elif isinstance(value, list):
            values = value
        else:
            return frozenset()
        roles: set[str] = set()
        for v in values:
            if isinstance(v, str):
                roles |= self.map.get(v, frozenset())
        return frozenset(roles)


_ROLE_NAME = re.compile(r"[a-z][a-z0-9_-]{0,63}")


def compile_role_mapping(path: Path | str, section: Any) -> RoleMapping:
    """Compile the `roles:` section of rules/policy.yaml (the policy compiler calls this).

        roles:
          claim: groups            # the token claim holding the caller's groups: groups, roles,
                                   # scope (a space-separated string), or any top-level claim
          map:                     # IdP value -> phigate role (or a list of roles)
            clinicians: clinician
            agents: agent
            privacy-office: approver
            emergency: [emergency]

    Raises rulefiles.ConfigError (file, "roles", bad value, expected) on anything else.
    """
    rule = "roles"
    rulefiles.require(path, rule, section, isinstance(section, Mapping),
                      "a 'roles:' mapping with 'claim' and 'map' (IdP groups to phigate roles)")
    unknown = set(section) - {"claim", "map"}
    rulefiles.require(path, rule, sorted(map(str, unknown)), not unknown, "only the keys 'claim' and 'map'")
    claim = section.get("claim")
    rulefiles.require(path, rule, claim, isinstance(claim, str) and bool(claim.strip()),
                      "'claim': the token claim holding groups (e.g. groups, roles, scope)")
    raw_map = section.get("map")
    rulefiles.require(path, rule, raw_map, isinstance(raw_map, Mapping) and bool(raw_map),
                      "'map': a non-empty mapping of IdP value -> phigate role")
    compiled: dict[str, frozenset[str]] = {}
    for source, target in raw_map.items():
        rulefiles.require(path, rule, source, isinstance(source, str) and bool(source),
                          "IdP values (map keys) as non-empty strings")
        targets = [target] if isinstance(target, str) else target
        rulefiles.require(
            path, rule, target,
            isinstance(targets, list) and bool(targets)
            and all(isinstance(t, str) and _ROLE_NAME.fullmatch(t) for t in targets),
            f"map[{source!r}]: a role name or a list of role names (lower case, [a-z0-9_-])",
        )
        compiled[source] = frozenset(targets)
    return RoleMapping(claim=claim.strip(), map=compiled)
