"""Invariants of masking for arbitrary JSON documents and rules (hypothesis)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from addons.config.masking_rules import compile_masking
from addons.config.rulefiles import parse_yaml
from addons.phi.masker import MaskRun, apply_plan, dump_body, parse_body
from addons.phi.tokens import KeyRing
from tests.support.masking_fixtures import TEST_KEY, chroma_profile

RING = KeyRing.parse(f"k1={TEST_KEY}")
FIELDS = ["mrn", "name", "dob", "note"]
OPERATORS = ["redact", "tokenize", "partial", "drop", "generalize-date"]

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.text(max_size=12),
                    st.sampled_from([0, "", False, "1234567", "1961-03-05"]))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                                         max_size=3), max_leaves=6)
records = st.dictionaries(st.sampled_from([*FIELDS, "ward", "x"]), values, max_size=6)
vectors = st.lists(st.lists(st.floats(-1, 1, allow_nan=False, width=32), min_size=0, max_size=4), max_size=3)


def rules_for(op: str, fields: list[str]) -> Any:
    operator, params = ("generalize", "{kind: date}") if op == "generalize-date" else (op, "{}")
    text = ("version: 2\nroles: {'*': {default: clear}}\n"
            f"rules:\n  - id: r\n    roles: [agents]\n    fields: [{', '.join(fields)}]\n"
            f"    operator: {operator}\n    params: {params}\n")
    return compile_masking(Path("m.yaml"), parse_yaml(Path("m.yaml"), text))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(metas=st.lists(records, max_size=5), vecs=vectors, op=st.sampled_from(OPERATORS),
       fields=st.lists(st.sampled_from(FIELDS), min_size=1, max_size=3, unique=True))
def test_masking_invariants(metas: list[dict[str, Any]], vecs: list[list[float]], op: str, fields: list[str]) -> None:
    rules = rules_for(op, fields)
    route = chroma_profile().by_id["chroma.get"]
    plan = rules.plan(frozenset({"agents"}), "chroma", route)
    doc = {"ids": [f"id{i}" for i in range(len(metas))], "metadatas": metas, "embeddings": vecs,
           "documents": None}
    raw = orjson.dumps(doc)
    original = copy.deepcopy(doc)
    parsed, saved = parse_body(raw, ("embeddings",))
    apply_plan(parsed, plan, MaskRun(RING, rules.detector))
    out = orjson.loads(dump_body(parsed, saved))
    # Vectors and unmasked values are untouched; the list keeps its length and order.
    assert out["embeddings"] == original["embeddings"]
    assert out["ids"] == original["ids"]
    assert len(out["metadatas"]) == len(original["metadatas"])
    for before, after in zip(original["metadatas"], out["metadatas"], strict=True):
        # No key is created that was absent; only dropped keys disappear.
        assert set(after) <= set(before)
        for key, value in before.items():
            if key not in fields:
                assert after[key] == value
                continue
            if op == "drop":
                assert key not in after
                continue
            masked = after[key]
            # Masked like any other value, falsy ones included; the original never survives...
            assert masked != value or (op == "partial" and isinstance(value, str) and set(value) <= {"*"}) \
                or (op == "partial" and value == "")
            if op == "tokenize":
                # ...and each element keeps its own value: the token opens to exactly this record's value.
                assert RING.detokenize(masked) == value
