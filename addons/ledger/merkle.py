"""RFC 6962 / RFC 9162 Merkle tree: leaf and node hashes, a streaming frontier, inclusion proofs.

leaf = SHA-256(0x00 || entry), node = SHA-256(0x01 || left || right). The 0x00/0x01 prefixes stop a
second-preimage attack where an inner node is passed off as a leaf.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

_sha256 = hashlib.sha256
EMPTY_ROOT = _sha256(b"").digest()


def leaf_hash(entry: bytes) -> bytes:
    return _sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return _sha256(b"\x01" + left + right).digest()


class Frontier:
    """The perfect-subtree peaks of a growing tree: O(log n) state, amortised one node hash per leaf.

    The RFC 6962 root of n leaves is the right fold of the peaks (largest first), so the root at
    any size is available without keeping the leaves.
    """

    __slots__ = ("peaks", "size")

    def __init__(self, size: int = 0, peaks: Sequence[bytes] = ()) -> None:
        self.size = size
        self.peaks = list(peaks)
        if len(self.peaks) != bin(size).count("1"):
            raise ValueError(f"a frontier of size {size} has {bin(size).count('1')} peaks, got {len(self.peaks)}")

    def append(self, leaf: bytes) -> None:
        peaks = self.peaks
        peaks.append(leaf)
        n = self.size
        # Each trailing 1 bit of the old size is a same-height peak to merge with.
        while n & 1:
            right = peaks.pop()
            peaks[-1] = _sha256(b"\x01" + peaks[-1] + right).digest()
            n >>= 1
        self.size += 1

    def extend(self, leaves: Sequence[bytes]) -> None:
        for leaf in leaves:
            self.append(leaf)

    def root(self) -> bytes:
        if not self.peaks:
            return EMPTY_ROOT
        r = self.peaks[-1]
        for p in reversed(self.peaks[:-1]):
            r = _sha256(b"\x01" + p + r).digest()
        return r

    def copy(self) -> Frontier:
        return Frontier(self.size, self.peaks)


def root_of(leaves: Sequence[bytes]) -> bytes:
    f = Frontier()
    f.extend(leaves)
    return f.root()


def _subtree(leaves: Sequence[bytes], lo: int, hi: int) -> bytes:
    return root_of(leaves[lo:hi])


def inclusion_path(index: int, leaves: Sequence[bytes]) -> list[bytes]:
    """RFC 6962 PATH(m, D[n]) for leaf `index` in the tree over `leaves`."""
    n = len(leaves)
    if not 0 <= index < n:
        raise ValueError(f"leaf {index} is not in a tree of size {n}")
    path: list[bytes] = []
    lo, hi, m = 0, n, index
    # Walk down from the root, collecting siblings; reversed at the end (proofs go leaf -> root).
    while hi - lo > 1:
        k = 1
        while k * 2 < hi - lo:
            k *= 2
        if m < k:
            path.append(_subtree(leaves, lo + k, hi))
            hi = lo + k
        else:
            path.append(_subtree(leaves, lo, lo + k))
            lo, m = lo + k, m - k
    path.reverse()
    return path


def verify_inclusion(index: int, size: int, leaf: bytes, path: Sequence[bytes], root: bytes) -> bool:
    """RFC 9162 section 2.1.3.2."""
    if index >= size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


class Levels:
    """Every complete subtree hash of a tree, level by level, built with one list comprehension per
    level (no per-leaf Python calls): the root at any size is then a fold of at most log2(n) peaks.
    Used by `verify`, which checks roots at every checkpoint size of a million-leaf tree."""

    def __init__(self, leaves: list[bytes]) -> None:
        sha = _sha256
        self.levels = [leaves]
        level = leaves
        while len(level) > 1:
            level = [sha(b"\x01" + a + b).digest() for a, b in zip(level[0::2], level[1::2], strict=False)]
            self.levels.append(level)

    @property
    def size(self) -> int:
        return len(self.levels[0])

    def root(self, size: int) -> bytes:
        if not 0 <= size <= self.size:
            raise ValueError(f"no tree of size {size} in {self.size} leaves")
        if size == 0:
            return EMPTY_ROOT
        peaks: list[bytes] = []
        start = 0
        for k in range(size.bit_length() - 1, -1, -1):
            if size >> k & 1:
                peaks.append(self.levels[k][start >> k])
                start += 1 << k
        r = peaks[-1]
        for p in reversed(peaks[:-1]):
            r = _sha256(b"\x01" + p + r).digest()
        return r
