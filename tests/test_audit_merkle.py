"""RFC 6962 Merkle hashing: Certificate Transparency test vectors, an independent naive
implementation written straight from the RFC text, and property tests over random sizes."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from audit.core import merkle
from fedscore.errors import InvalidArgument, Unauthenticated

# Published test vectors of the Certificate Transparency implementations, as in
# transparency-dev/merkle (proof/verify_test.go and rfc6962/rfc6962_test.go, formerly
# google/certificate-transparency-go merkletree tests): eight leaves, the roots of every
# prefix, inclusion paths and consistency proofs. Their inclusion vectors number leaves
# from 1; here indexes are 0-based.
LEAVES = [
    bytes.fromhex(h)
    for h in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]
# ROOTS[n - 1] is the root of the tree over the first n leaves.
ROOTS = [
    bytes.fromhex(h)
    for h in (
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    )
]
# (leaf index, tree size, audit path)
INCLUSION_VECTORS = [
    (
        0,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        1,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (0, 1, []),
]
# (size1, size2, consistency proof)
CONSISTENCY_VECTORS = [
    (1, 1, []),
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        6,
        7,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
]
LEAF_HASHES = [merkle.leaf_hash(leaf) for leaf in LEAVES]
SOME_HASH = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")


# --- an independent naive implementation, transcribed from RFC 6962 section 2.1 -----------


def _naive_k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def naive_mth(data: list[bytes]) -> bytes:
    if not data:
        return hashlib.sha256(b"").digest()
    if len(data) == 1:
        return hashlib.sha256(b"\x00" + data[0]).digest()
    k = _naive_k(len(data))
    return hashlib.sha256(b"\x01" + naive_mth(data[:k]) + naive_mth(data[k:])).digest()


def naive_path(m: int, data: list[bytes]) -> list[bytes]:
    if len(data) == 1:
        return []
    k = _naive_k(len(data))
    if m < k:
        return [*naive_path(m, data[:k]), naive_mth(data[k:])]
    return [*naive_path(m - k, data[k:]), naive_mth(data[:k])]


def naive_subproof(m: int, data: list[bytes], b: bool) -> list[bytes]:
    n = len(data)
    if m == n:
        return [] if b else [naive_mth(data)]
    k = _naive_k(n)
    if m <= k:
        return [*naive_subproof(m, data[:k], b), naive_mth(data[k:])]
    return [*naive_subproof(m - k, data[k:], False), naive_mth(data[:k])]


def naive_proof(m: int, data: list[bytes]) -> list[bytes]:
    return naive_subproof(m, data, True)


def _data(n: int) -> list[bytes]:
    return [i.to_bytes(4, "big") for i in range(n)]


# --- known answers ------------------------------------------------------------------------


def test_empty_tree_root_is_hash_of_nothing() -> None:
    assert merkle.root([]) == hashlib.sha256(b"").digest() == merkle.EMPTY_ROOT


def test_rfc6962_hasher_vectors() -> None:
    """transparency-dev/merkle rfc6962_test.go: empty root, empty leaf, a leaf, a node."""
    assert merkle.EMPTY_ROOT.hex() == (
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )
    assert merkle.leaf_hash(b"").hex() == (
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    )
    assert merkle.leaf_hash(b"L123456").hex() == (
        "395aa064aa4c29f7010acfe3f25db9485bbd4b91897b6ad7ad547639252b4d56"
    )
    assert merkle.node_hash(b"N123", b"N456").hex() == (
        "aa217fe888e47007fa15edab33c2b492a722cb106c64667fc2b044444de66bbb"
    )


def test_leaf_and_node_hashes_use_domain_prefixes() -> None:
    assert merkle.leaf_hash(b"") == ROOTS[0]
    assert merkle.node_hash(LEAF_HASHES[0], LEAF_HASHES[1]) == ROOTS[1]


def test_well_known_root_of_eight_leaves() -> None:
    assert merkle.root(LEAF_HASHES).hex() == (
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"
    )


@pytest.mark.parametrize("size", range(1, 9))
def test_roots_of_every_prefix_match_vectors(size: int) -> None:
    assert merkle.root(LEAF_HASHES[:size]) == ROOTS[size - 1]
    assert naive_mth(LEAVES[:size]) == ROOTS[size - 1]


@pytest.mark.parametrize(("index", "size", "path"), INCLUSION_VECTORS)
def test_inclusion_vectors(index: int, size: int, path: list[str]) -> None:
    proof = [bytes.fromhex(h) for h in path]
    assert merkle.inclusion_proof(LEAF_HASHES[:size], index) == proof
    merkle.verify_inclusion(LEAF_HASHES[index], index, size, proof, ROOTS[size - 1])


@pytest.mark.parametrize(("size1", "size2", "path"), CONSISTENCY_VECTORS)
def test_consistency_vectors(size1: int, size2: int, path: list[str]) -> None:
    proof = [bytes.fromhex(h) for h in path]
    assert merkle.consistency_proof(LEAF_HASHES[:size2], size1) == proof
    merkle.verify_consistency(size1, size2, ROOTS[size1 - 1], ROOTS[size2 - 1], proof)


# --- tampering: every corruption of a known-good proof is refused -----------------------


def _flip(proof: list[bytes], i: int, bit: int) -> list[bytes]:
    changed = list(proof)
    changed[i] = bytes([changed[i][0] ^ (1 << bit)]) + changed[i][1:]
    return changed


def _corrupt_inclusion(
    index: int, size: int, proof: list[bytes], root: bytes, leaf: bytes
) -> list[tuple[str, int, int, list[bytes], bytes, bytes]]:
    probes = [
        ("index - 1", index - 1, size, proof, root, leaf),
        ("index + 1", index + 1, size, proof, root, leaf),
        ("index ^ 2", index ^ 2, size, proof, root, leaf),
        ("size * 2", index, size * 2, proof, root, leaf),
        ("size // 2", index, size // 2, proof, root, leaf),
        ("wrong leaf", index, size, proof, root, SOME_HASH),
        ("empty root", index, size, proof, merkle.EMPTY_ROOT, leaf),
        ("random root", index, size, proof, SOME_HASH, leaf),
        ("trailing garbage", index, size, [*proof, b""], root, leaf),
        ("trailing root", index, size, [*proof, root], root, leaf),
        ("preceding garbage", index, size, [b"", *proof], root, leaf),
        ("preceding root", index, size, [root, *proof], root, leaf),
    ]
    for i in range(len(proof)):
        probes.append((f"flipped proof[{i}]", index, size, _flip(proof, i, 3), root, leaf))
    if proof:
        probes.append(("truncated", index, size, proof[:-1], root, leaf))
    if len(proof) > 1:
        probes.append(("inserted", index, size, [proof[0], SOME_HASH, *proof[1:]], root, leaf))
    return probes


def _corrupt_consistency(
    size1: int, size2: int, root1: bytes, root2: bytes, proof: list[bytes]
) -> list[tuple[str, int, int, bytes, bytes, list[bytes]]]:
    probes = [
        ("size1 - 1", size1 - 1, size2, root1, root2, proof),
        ("size1 + 1", size1 + 1, size2, root1, root2, proof),
        ("size1 ^ 2", size1 ^ 2, size2, root1, root2, proof),
        ("size2 * 2", size1, size2 * 2, root1, root2, proof),
        ("size2 // 2", size1, size2 // 2, root1, root2, proof),
        ("wrong root1", size1, size2, SOME_HASH, root2, proof),
        ("wrong root2", size1, size2, root1, SOME_HASH, proof),
        ("swapped roots", size1, size2, root2, root1, proof),
        ("empty proof", size1, size2, root1, root2, []),
        ("trailing garbage", size1, size2, root1, root2, [*proof, b""]),
        ("trailing root1", size1, size2, root1, root2, [*proof, root1]),
        ("trailing root2", size1, size2, root1, root2, [*proof, root2]),
        ("preceding garbage", size1, size2, root1, root2, [b"", *proof]),
        ("preceding root1", size1, size2, root1, root2, [root1, *proof]),
        ("preceding root2", size1, size2, root1, root2, [root2, *proof]),
        ("preceding proof[0]", size1, size2, root1, root2, [proof[0], *proof]),
        ("truncated", size1, size2, root1, root2, proof[:-1]),
    ]
    for i in range(len(proof)):
        probes.append((f"flipped proof[{i}]", size1, size2, root1, root2, _flip(proof, i, 4)))
    return probes


def _refused(check: Callable[..., None], *args: object) -> bool:
    try:
        check(*args)
    except Unauthenticated:
        return True
    return False


@pytest.mark.parametrize(("index", "size", "path"), INCLUSION_VECTORS[:4])
def test_corrupted_inclusion_vectors_are_refused(index: int, size: int, path: list[str]) -> None:
    proof = [bytes.fromhex(h) for h in path]
    probes = _corrupt_inclusion(index, size, proof, ROOTS[size - 1], LEAF_HASHES[index])
    accepted = [
        desc
        for desc, i, n, p, r, leaf in probes
        if not _refused(merkle.verify_inclusion, leaf, i, n, p, r)
    ]
    assert accepted == []


@pytest.mark.parametrize(("size1", "size2", "path"), CONSISTENCY_VECTORS[1:])
def test_corrupted_consistency_vectors_are_refused(size1: int, size2: int, path: list[str]) -> None:
    proof = [bytes.fromhex(h) for h in path]
    probes = _corrupt_consistency(size1, size2, ROOTS[size1 - 1], ROOTS[size2 - 1], proof)
    accepted = [
        desc
        for desc, m, n, r1, r2, p in probes
        if not _refused(merkle.verify_consistency, m, n, r1, r2, p)
    ]
    assert accepted == []


@pytest.mark.parametrize(("index", "size"), [(0, 0), (1, 1), (2, 1), (-1, 4)])
def test_inclusion_outside_the_tree_is_refused(index: int, size: int) -> None:
    with pytest.raises(Unauthenticated) as err:
        merkle.verify_inclusion(SOME_HASH, index, size, [], SOME_HASH)
    assert err.value.reason == "BAD_INCLUSION_PROOF"


def test_single_leaf_tree_root_is_the_leaf_hash() -> None:
    leaf = merkle.leaf_hash(b"data")
    merkle.verify_inclusion(leaf, 0, 1, [], leaf)
    with pytest.raises(Unauthenticated):
        merkle.verify_inclusion(leaf, 0, 1, [], b"")
    with pytest.raises(Unauthenticated):
        merkle.verify_inclusion(b"", 0, 1, [], leaf)


@pytest.mark.parametrize(
    ("size1", "size2", "root1", "root2", "proof"),
    [
        (1, 0, ROOTS[0], merkle.EMPTY_ROOT, []),  # time travel to the past
        (2, 1, ROOTS[1], ROOTS[0], []),
        (1, 2, ROOTS[0], ROOTS[1], []),  # empty proof between different sizes
        (1, 1, ROOTS[0], ROOTS[1], []),  # same size, different roots
        (1, 1, ROOTS[0], ROOTS[0], [ROOTS[0]]),  # same root, but a proof
        (0, 3, SOME_HASH, ROOTS[2], []),  # the empty tree has one root only
        (0, 3, merkle.EMPTY_ROOT, ROOTS[2], [ROOTS[0]]),
    ],
)
def test_degenerate_consistency_cases_are_refused(
    size1: int, size2: int, root1: bytes, root2: bytes, proof: list[bytes]
) -> None:
    with pytest.raises(Unauthenticated) as err:
        merkle.verify_consistency(size1, size2, root1, root2, proof)
    assert err.value.reason == "BAD_CONSISTENCY_PROOF"


def test_trivially_consistent_sizes_verify() -> None:
    merkle.verify_consistency(0, 0, merkle.EMPTY_ROOT, merkle.EMPTY_ROOT, [])
    merkle.verify_consistency(0, 8, merkle.EMPTY_ROOT, ROOTS[7], [])
    merkle.verify_consistency(8, 8, ROOTS[7], ROOTS[7], [])


def test_generators_refuse_positions_outside_the_tree() -> None:
    with pytest.raises(InvalidArgument):
        merkle.inclusion_proof(LEAF_HASHES, 8)
    with pytest.raises(InvalidArgument):
        merkle.inclusion_proof([], 0)
    with pytest.raises(InvalidArgument):
        merkle.consistency_proof(LEAF_HASHES, 9)


# --- agreement with the naive implementation and properties over random sizes -----------


@pytest.mark.parametrize("size", range(1, 34))
def test_agrees_with_naive_implementation(size: int) -> None:
    data = _data(size)
    hashes = [merkle.leaf_hash(d) for d in data]
    assert merkle.root(hashes) == naive_mth(data)
    for index in range(size):
        assert merkle.inclusion_proof(hashes, index) == naive_path(index, data)
    for size1 in range(1, size + 1):
        assert merkle.consistency_proof(hashes, size1) == naive_proof(size1, data)


sizes_and_index = st.integers(min_value=1, max_value=200).flatmap(
    lambda n: st.tuples(st.just(n), st.integers(min_value=0, max_value=n - 1))
)


@given(sizes_and_index, st.data())
def test_every_inclusion_proof_verifies_and_every_tampering_fails(
    size_index: tuple[int, int], data: st.DataObject
) -> None:
    size, index = size_index
    hashes = [merkle.leaf_hash(d) for d in _data(size)]
    root = merkle.root(hashes)
    proof = merkle.inclusion_proof(hashes, index)
    merkle.verify_inclusion(hashes[index], index, size, proof, root)

    if proof:
        i = data.draw(st.integers(0, len(proof) - 1), label="element")
        bit = data.draw(st.integers(0, 255), label="bit")
        flipped = list(proof)
        flipped[i] = (int.from_bytes(proof[i], "big") ^ (1 << bit)).to_bytes(32, "big")
        with pytest.raises(Unauthenticated):
            merkle.verify_inclusion(hashes[index], index, size, flipped, root)
        with pytest.raises(Unauthenticated):
            merkle.verify_inclusion(hashes[index], index, size, proof[:-1], root)
    wrong_index = data.draw(st.integers(0, size - 1).filter(lambda j: j != index), label="j")
    with pytest.raises(Unauthenticated):
        merkle.verify_inclusion(hashes[index], wrong_index, size, proof, root)
    # A size with another tree height changes the path. (size +- 1 may share the path
    # shape, and then the root alone cannot tell the sizes apart; the signed checkpoint
    # carries the size.)
    for wrong_size in (size * 2, size // 2):
        if wrong_size > index:
            with pytest.raises(Unauthenticated):
                merkle.verify_inclusion(hashes[index], index, wrong_size, proof, root)
    with pytest.raises(Unauthenticated):
        merkle.verify_inclusion(hashes[index], index, size, [*proof, SOME_HASH], root)


sizes_pair = st.integers(min_value=1, max_value=200).flatmap(
    lambda n: st.tuples(st.integers(min_value=1, max_value=n), st.just(n))
)


@given(sizes_pair, st.data())
def test_every_consistency_proof_verifies_and_every_tampering_fails(
    sizes: tuple[int, int], data: st.DataObject
) -> None:
    size1, size2 = sizes
    hashes = [merkle.leaf_hash(d) for d in _data(size2)]
    root1, root2 = merkle.root(hashes[:size1]), merkle.root(hashes)
    proof = merkle.consistency_proof(hashes, size1)
    merkle.verify_consistency(size1, size2, root1, root2, proof)
    if size1 == size2:
        assert proof == []
        return

    i = data.draw(st.integers(0, len(proof) - 1), label="element")
    bit = data.draw(st.integers(0, 255), label="bit")
    flipped = list(proof)
    flipped[i] = (int.from_bytes(proof[i], "big") ^ (1 << bit)).to_bytes(32, "big")
    with pytest.raises(Unauthenticated):
        merkle.verify_consistency(size1, size2, root1, root2, flipped)
    with pytest.raises(Unauthenticated):
        merkle.verify_consistency(size1, size2, root1, root2, proof[:-1])
    with pytest.raises(Unauthenticated):
        merkle.verify_consistency(size1, size2, root1, root2, [*proof, SOME_HASH])
    with pytest.raises(Unauthenticated):
        merkle.verify_consistency(size1, size2, root2, root1, proof)
    for wrong_size1 in (size1 - 1, size1 + 1, size1 ^ 2):
        if wrong_size1 != size1 and 0 <= wrong_size1 <= size2:
            with pytest.raises(Unauthenticated):
                merkle.verify_consistency(wrong_size1, size2, root1, root2, proof)
    for wrong_size2 in (size2 * 2, size2 // 2):
        with pytest.raises(Unauthenticated):
            merkle.verify_consistency(size1, wrong_size2, root1, root2, proof)
    # A history rewritten after size1 gives a different root2 that the proof cannot reach.
    rewritten = [*hashes[:size1], merkle.leaf_hash(b"rewritten"), *hashes[size1 + 1 :]]
    with pytest.raises(Unauthenticated):
        merkle.verify_consistency(size1, size2, root1, merkle.root(rewritten), proof)
