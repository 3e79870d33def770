"""The Merkle tree against a direct transcription of RFC 6962's recursive definition."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from addons.ledger import merkle


def mth(leaves: list[bytes]) -> bytes:
    """RFC 6962 section 2.1, literally."""
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return leaves[0]
    k = 1
    while k * 2 < n:
        k *= 2
    return hashlib.sha256(b"\x01" + mth(leaves[:k]) + mth(leaves[k:])).digest()


def leaves_of(n: int) -> list[bytes]:
    return [merkle.leaf_hash(str(i).encode()) for i in range(n)]


def test_leaf_and_node_hashes_use_domain_prefixes() -> None:
    assert merkle.leaf_hash(b"a") == hashlib.sha256(b"\x00a").digest()
    assert merkle.node_hash(b"l", b"r") == hashlib.sha256(b"\x01lr").digest()


@given(st.integers(min_value=0, max_value=300))
@settings(max_examples=60, deadline=None)
def test_frontier_root_matches_rfc6962_at_every_size(n: int) -> None:
    leaves = leaves_of(n)
    f = merkle.Frontier()
    for i, leaf in enumerate(leaves):
        f.append(leaf)
        if i % 17 == 0 or i == n - 1:
            assert f.root() == mth(leaves[: i + 1])
    assert merkle.root_of(leaves) == mth(leaves)


def test_frontier_resumes_from_its_peaks() -> None:
    leaves = leaves_of(77)
    f = merkle.Frontier()
    f.extend(leaves[:50])
    resumed = merkle.Frontier(f.size, list(f.peaks))
    resumed.extend(leaves[50:])
    assert resumed.root() == mth(leaves)
    with pytest.raises(ValueError, match="peaks"):
        merkle.Frontier(5, [b"x"])


@given(st.integers(min_value=1, max_value=130), st.data())
@settings(max_examples=80, deadline=None)
def test_inclusion_proofs_verify_and_bind_index_and_root(n: int, data: st.DataObject) -> None:
    leaves = leaves_of(n)
    i = data.draw(st.integers(min_value=0, max_value=n - 1))
    root = mth(leaves)
    path = merkle.inclusion_path(i, leaves)
    assert merkle.verify_inclusion(i, n, leaves[i], path, root)
    assert not merkle.verify_inclusion(i, n, merkle.leaf_hash(b"other"), path, root)
    assert not merkle.verify_inclusion(i, n, leaves[i], path, merkle.leaf_hash(b"root"))
    if n > 1:
        j = (i + 1) % n
        assert not merkle.verify_inclusion(j, n, leaves[i], path, root)


@given(st.integers(min_value=0, max_value=200))
@settings(max_examples=40, deadline=None)
def test_levels_give_the_rfc6962_root_at_every_size(n: int) -> None:
    leaves = leaves_of(n)
    levels = merkle.Levels(leaves)
    for size in range(n + 1):
        assert levels.root(size) == mth(leaves[:size])
    with pytest.raises(ValueError, match="no tree of size"):
        levels.root(n + 1)
