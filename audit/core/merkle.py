"""RFC 6962 / RFC 9162 Merkle tree hashing as small pure functions.

Invariants:
- A leaf hash is SHA-256(0x00 || data) and an interior node SHA-256(0x01 || left || right);
  the two prefixes keep a leaf from ever being passed off as a node (second preimages).
- The root of the empty tree is SHA-256(b""); the tree over n > 1 leaves splits at the
  largest power of two below n (RFC 6962 section 2.1), so a log only ever grows on the right.
- Proofs are generated from the list of leaf hashes in log order, or from any function
  giving subtree roots (`inclusion_path`, `consistency_path`); verifiers take only
  sizes, hashes and the proof, follow RFC 9162 sections 2.1.3.2 and 2.1.4.2, and raise
  `Unauthenticated` (reasons `BAD_INCLUSION_PROOF`, `BAD_CONSISTENCY_PROOF`) instead of
  returning a bool, so a forgotten check cannot pass silently.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Sequence

from fedscore.errors import InvalidArgument, Unauthenticated

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    """SHA-256(0x00 || data): the hash of one log entry."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right): the hash of an interior node."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly below n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def _subtree_root(hashes: Sequence[bytes], lo: int, hi: int) -> bytes:
    if hi - lo == 1:
        return hashes[lo]
    k = _split(hi - lo)
    return node_hash(_subtree_root(hashes, lo, lo + k), _subtree_root(hashes, lo + k, hi))


def root(leaf_hashes: Sequence[bytes]) -> bytes:
    """The Merkle tree hash (MTH) of the leaves, in log order."""
    if not leaf_hashes:
        return EMPTY_ROOT
    return _subtree_root(leaf_hashes, 0, len(leaf_hashes))


SubtreeRoot = Callable[[int, int], bytes]
"""MTH(D[lo:hi]) of a log's leaves, for the ranges the RFC 6962 recursion asks for."""


def _from_hashes(leaf_hashes: Sequence[bytes]) -> SubtreeRoot:
    return lambda lo, hi: _subtree_root(leaf_hashes, lo, hi)


def inclusion_path(subtree_root: SubtreeRoot, size: int, index: int) -> list[bytes]:
    """PATH(index, D[size]) with subtree hashes taken from `subtree_root`.

    Lets a stored log answer from cached interior nodes instead of every leaf; the
    ranges asked for always start at a multiple of their largest power-of-two part.
    """
    if not 0 <= index < size:
        raise InvalidArgument(f"leaf {index} is not in a tree of {size}", "INDEX_OUT_OF_RANGE")
    proof: list[bytes] = []
    lo, hi = 0, size
    # Walk down from the root; the sibling of each step is collected, then reversed so
    # the proof runs leaf to root as RFC 6962 orders it.
    while hi - lo > 1:
        k = _split(hi - lo)
        if index < lo + k:
            proof.append(subtree_root(lo + k, hi))
            hi = lo + k
        else:
            proof.append(subtree_root(lo, lo + k))
            lo = lo + k
    proof.reverse()
    return proof


def consistency_path(subtree_root: SubtreeRoot, size1: int, size2: int) -> list[bytes]:
    """PROOF(size1, D[size2]) with subtree hashes taken from `subtree_root`."""
    if not 0 <= size1 <= size2:
        raise InvalidArgument(f"size {size1} is not within a tree of {size2}", "INDEX_OUT_OF_RANGE")
    if size1 in (0, size2):
        return []
    proof: list[bytes] = []
    lo, hi, m, complete = 0, size2, size1, True
    while m != hi - lo:
        k = _split(hi - lo)
        if m <= k:
            proof.append(subtree_root(lo + k, hi))
            hi = lo + k
        else:
            proof.append(subtree_root(lo, lo + k))
            lo, m, complete = lo + k, m - k, False
    if not complete:
        proof.append(subtree_root(lo, hi))
    proof.reverse()
    return proof


def inclusion_proof(leaf_hashes: Sequence[bytes], index: int) -> list[bytes]:
    """PATH(index, D[n]): the audit path of leaf `index` in the tree over `leaf_hashes`."""
    return inclusion_path(_from_hashes(leaf_hashes), len(leaf_hashes), index)


def consistency_proof(leaf_hashes: Sequence[bytes], size1: int) -> list[bytes]:
    """PROOF(size1, D[n]): shows the tree of the first `size1` leaves is a prefix of this one."""
    return consistency_path(_from_hashes(leaf_hashes), size1, len(leaf_hashes))


def _check_hashes(reason: str, *hashes: bytes) -> None:
    if any(len(h) != HASH_SIZE for h in hashes):
        raise Unauthenticated(f"every hash must be {HASH_SIZE} bytes", reason)


def verify_inclusion(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Raise unless `proof` shows leaf `index`, hashing to `leaf_hash`, in the tree `root`."""
    reason = "BAD_INCLUSION_PROOF"
    if not 0 <= index < size:
        raise Unauthenticated(f"leaf {index} is not in a tree of {size}", reason)
    _check_hashes(reason, leaf_hash, root, *proof)
    fn, sn, r = index, size - 1, leaf_hash
    for p in proof:
        if sn == 0:
            raise Unauthenticated("inclusion proof is too long", reason)
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            # A right-edge node without a sibling at this level: climb until it has one.
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise Unauthenticated("inclusion proof is too short", reason)
    if not hmac.compare_digest(r, root):
        raise Unauthenticated("inclusion proof does not lead to the root", reason)


def verify_consistency(
    size1: int, size2: int, root1: bytes, root2: bytes, proof: Sequence[bytes]
) -> None:
    """Raise unless `proof` shows the tree (`size1`, `root1`) is a prefix of (`size2`, `root2`)."""
    reason = "BAD_CONSISTENCY_PROOF"
    if not 0 <= size1 <= size2:
        raise Unauthenticated(f"a tree of {size1} cannot precede one of {size2}", reason)
    _check_hashes(reason, root1, root2, *proof)
    if size1 == size2 or size1 == 0:
        if proof:
            raise Unauthenticated("proof must be empty for these sizes", reason)
        expected1 = root2 if size1 == size2 else EMPTY_ROOT
        if not hmac.compare_digest(root1, expected1):
            raise Unauthenticated("roots differ for trees that must be equal", reason)
        return
    if not proof:
        raise Unauthenticated("consistency proof is empty", reason)
    path = list(proof)
    if size1 & (size1 - 1) == 0:
        # The old tree is a complete subtree: its root is the first node of the path.
        path.insert(0, root1)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise Unauthenticated("consistency proof is too long", reason)
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise Unauthenticated("consistency proof is too short", reason)
    if not (hmac.compare_digest(fr, root1) and hmac.compare_digest(sr, root2)):
        raise Unauthenticated("consistency proof does not lead to both roots", reason)
