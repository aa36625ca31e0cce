"""The registry chain: threshold signatures, succession, rollback and root rotation.

Tables in the manner of python-tuf's key rotation tests: each `Version` row says which
root keys (by index into `ROOT_KEYS`) a registry version names, its threshold, and which
keys sign it. A chain is a list of rows, version 1 first; only its last row may be
refused, and then with the exact reason, while the version before it stays trusted.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import pytest

from fedscore.errors import NotFound, Unauthenticated
from fedscore.v1.trust_pb2 import (
    Participant,
    RegistrySignature,
    Role,
    RootKey,
    RootPolicy,
    SignedRegistry,
    TrustRegistry,
)
from keys.envelope import pae
from keys.registry import TrustView, build_participant
from keys.registry_chain import (
    REGISTRY_PAYLOAD_TYPE,
    ChainLink,
    add_signature,
    draft,
    follow,
    follow_from_genesis,
    registry_digest,
    root_verify_keys,
    signers,
    verify_genesis,
    verify_successor,
)
from keys.signing import SigningKey

FEDERATION = "fed-test"
NOW = 1_750_000_000
DAY = 86_400
ROOT_KEYS = tuple(SigningKey.generate() for _ in range(8))
# Keys that are no root key of any version.
STRANGERS = (6, 7)
BOX = b"\x07" * 32


def custodian(index: int) -> str:
    return f"custodian-{index}"


def root_policy(keys: Sequence[int], threshold: int) -> RootPolicy:
    return RootPolicy(
        threshold=threshold,
        keys=[
            RootKey(custodian=custodian(i), public_key=ROOT_KEYS[i].verify_key.encode())
            for i in keys
        ],
    )


def sign(
    registry: TrustRegistry, sigs: Iterable[int], corrupt: Iterable[int] = ()
) -> SignedRegistry:
    """`registry` signed by the root keys `sigs` in that order.

    A key named twice adds a second copy of its signature (`add_signature` would replace
    it); the keys in `corrupt` have one bit of their signature flipped.
    """
    signed = draft(registry)
    for index in sigs:
        key = ROOT_KEYS[index]
        earlier = [s for s in signed.signatures if s.key_id == key.key_id]
        if earlier:
            signed.signatures.append(
                RegistrySignature(key_id=key.key_id, signature=earlier[0].signature)
            )
        else:
            signed = add_signature(signed, key)
    for index in corrupt:
        for signature in signed.signatures:
            if signature.key_id == ROOT_KEYS[index].key_id:
                signature.signature = bytes([signature.signature[0] ^ 1]) + signature.signature[1:]
    return signed


class ChainMaker:
    """Makes registry versions, each naming the digest of the last one published."""

    def __init__(self) -> None:
        self.chain: list[SignedRegistry] = []

    def registry(
        self,
        keys: Sequence[int] = (0, 1, 2),
        threshold: int = 2,
        *,
        participants: Iterable[Participant] = (),
        not_after: int = NOW + 30 * DAY,
    ) -> TrustRegistry:
        """The next version (not yet published)."""
        version = len(self.chain) + 1
        previous = registry_digest(self.chain[-1].registry) if self.chain else b""
        return TrustRegistry(
            federation_id=FEDERATION,
            version=version,
            issued_at=NOW - DAY + version,
            not_after=not_after,
            previous_digest=previous,
            root=root_policy(keys, threshold),
            participants=list(participants),
        )

    def publish(self, signed: SignedRegistry) -> SignedRegistry:
        self.chain.append(signed)
        return signed

    def add(
        self,
        keys: Sequence[int] = (0, 1, 2),
        threshold: int = 2,
        sigs: Sequence[int] = (0, 1),
        *,
        participants: Iterable[Participant] = (),
        not_after: int = NOW + 30 * DAY,
    ) -> SignedRegistry:
        """Make, sign and publish the next version."""
        registry = self.registry(keys, threshold, participants=participants, not_after=not_after)
        return self.publish(sign(registry, sigs))


def refused(reason: str, call: Callable[[], object]) -> None:
    with pytest.raises(Unauthenticated) as error:
        call()
    assert error.value.reason == reason, error.value.message


def two_versions() -> tuple[ChainMaker, ChainLink]:
    """A 2-of-3 chain of versions 1 and 2 (keys 0, 1, 2), and the trusted version 2."""
    maker = ChainMaker()
    maker.add(sigs=(0, 1))
    maker.add(sigs=(1, 2))
    return maker, follow_from_genesis(maker.chain, FEDERATION)


# --- the root rotation table ----------------------------------------------------------


@dataclass(frozen=True)
class Version:
    keys: tuple[int, ...]
    threshold: int
    sigs: tuple[int, ...]
    refused: str | None = None
    corrupt: tuple[int, ...] = ()


BELOW = "BELOW_THRESHOLD"

# fmt: off
CHAINS: dict[str, list[Version]] = {
    "2-of-3 chain v1-v2-v3": [
        Version(keys=(0, 1, 2), threshold=2, sigs=(0, 1)),
        Version(keys=(0, 1, 2), threshold=2, sigs=(1, 2)),
        Version(keys=(0, 1, 2), threshold=2, sigs=(2, 0)),
    ],
    "2-of-3 all three sign": [
        Version(keys=(0, 1, 2), threshold=2, sigs=(0, 1, 2)),
        Version(keys=(0, 1, 2), threshold=2, sigs=(2, 1, 0)),
    ],
    "genesis 1 of 3 when 2 needed": [
        Version(keys=(0, 1, 2), threshold=2, sigs=(0,), refused=BELOW),
    ],
    "genesis unsigned": [
        Version(keys=(0, 1, 2), threshold=2, sigs=(), refused=BELOW),
    ],
    "1 of 3 when 2 needed": [
        Version(keys=(0, 1, 2), threshold=2, sigs=(0, 1)),
        Version(keys=(0, 1, 2), threshold=2, sigs=(2,), refused=BELOW),
    ],
    "same key twice counts once": [
        Version(keys=(0, 1, 2), threshold=2, sigs=(0, 1)),
        Version(keys=(0, 1, 2), threshold=2, sigs=(1, 1), refused=BELOW),
    ],
    "same key twice counts once, genesis": [
        Version(keys=(0, 1, 2), threshold=2, sigs=(0, 0), refused=BELOW),
    ],
    "unknown keys ignored": [
        Version(keys=(0, 1, 2), threshold=2, sigs=(6, 0, 7, 1)),
        Version(keys=(0, 1, 2), threshold=2, sigs=(7, 1, 2, 6)),
    ],
    "unknown keys do not count": [
        Version(keys=(0, 1, 2), threshold=2, sigs=(0, 1)),
        Version(keys=(0, 1, 2), threshold=2, sigs=(6, 2, 7), refused=BELOW),
    ],
    "corrupted signature not counted": [
        Version(keys=(0, 1, 2), threshold=2, sigs=(0, 1)),
        Version(keys=(0, 1, 2), threshold=2, sigs=(0, 1), corrupt=(1,), refused=BELOW),
    ],
    "corrupted signature beside a threshold of good ones": [
        Version(keys=(0, 1, 2), threshold=2, sigs=(0, 1)),
        Version(keys=(0, 1, 2), threshold=2, sigs=(0, 1, 2), corrupt=(1,)),
    ],
    "rotation: 2 old + 2 new": [
        Version(keys=(0, 1, 2), threshold=2, sigs=(0, 1)),
        Version(keys=(3, 4, 5), threshold=2, sigs=(0, 1, 3, 4)),
    ],
    "rotation: 2 old + 1 new": [
        Version(keys=(0, 1, 2), threshold=2, sigs=(0, 1)),
        Version(keys=(3, 4, 5), threshold=2, sigs=(0, 1, 3), refused=BELOW),
    ],
    "rotation: 1 old + 2 new": [
        Version(keys=(0, 1, 2), threshold=2, sigs=(0, 1)),
        Version(keys=(3, 4, 5), threshold=2, sigs=(0, 3, 4), refused=BELOW),
    ],
    "rotation: only new keys": [
        Version(keys=(0, 1, 2), threshold=2, sigs=(0, 1)),
        Version(keys=(3, 4, 5), threshold=2, sigs=(3, 4, 5), refused=BELOW),
    ],
    "rotation: only old keys": [
        Version(keys=(0, 1, 2), threshold=2, sigs=(0, 1)),
        Version(keys=(3, 4, 5), threshold=2, sigs=(0, 1, 2), refused=BELOW),
    ],
    "rotation: mix and match 1 old + 1 new, 2 needed on each side": [
        Version(keys=(0, 1, 2), threshold=2, sigs=(0, 1)),
        Version(keys=(3, 4, 5), threshold=2, sigs=(0, 3), refused=BELOW),
    ],
    "rotation: then v3 by the old keys only": [
        Version(keys=(0, 1, 2), threshold=2, sigs=(0, 1)),
        Version(keys=(3, 4, 5), threshold=2, sigs=(0, 1, 3, 4)),
        Version(keys=(3, 4, 5), threshold=2, sigs=(0, 1, 2), refused=BELOW),
    ],
    "rotation: then v3 by the new keys": [
        Version(keys=(0, 1, 2), threshold=2, sigs=(0, 1)),
        Version(keys=(3, 4, 5), threshold=2, sigs=(0, 1, 3, 4)),
        Version(keys=(3, 4, 5), threshold=2, sigs=(4, 5)),
    ],
    "rotation: one key replaced, shared keys sign for both roots": [
        Version(keys=(0, 1, 2), threshold=2, sigs=(0, 1)),
        Version(keys=(0, 1, 3), threshold=2, sigs=(0, 1)),
        Version(keys=(0, 1, 3), threshold=2, sigs=(1, 3)),
    ],
    "rotation: one key replaced, then the removed key no longer counts": [
        Version(keys=(0, 1, 2), threshold=2, sigs=(0, 1)),
        Version(keys=(0, 1, 3), threshold=2, sigs=(0, 1)),
        Version(keys=(0, 1, 3), threshold=2, sigs=(0, 2), refused=BELOW),
    ],
    "rotation: one key replaced, new root short of its threshold": [
        Version(keys=(0, 1, 2), threshold=2, sigs=(0, 1)),
        Version(keys=(0, 3, 4), threshold=2, sigs=(1, 2, 3), refused=BELOW),
    ],
    "1-of-1 rotation": [
        Version(keys=(0,), threshold=1, sigs=(0,)),
        Version(keys=(1,), threshold=1, sigs=(1, 0)),
        Version(keys=(1,), threshold=1, sigs=(1,)),
    ],
    "1-of-1 rotation, not signed by the old key": [
        Version(keys=(0,), threshold=1, sigs=(0,)),
        Version(keys=(1,), threshold=1, sigs=(1, 6), refused=BELOW),
    ],
    "1-of-1 rotation, not signed by the new key": [
        Version(keys=(0,), threshold=1, sigs=(0,)),
        Version(keys=(1,), threshold=1, sigs=(0, 6), refused=BELOW),
    ],
    "threshold raised 1-of-3 to 2-of-3": [
        Version(keys=(0, 1, 2), threshold=1, sigs=(0,)),
        Version(keys=(0, 1, 2), threshold=2, sigs=(0, 1)),
    ],
    "threshold raised 1-of-3 to 2-of-3, new threshold not reached": [
        Version(keys=(0, 1, 2), threshold=1, sigs=(0,)),
        Version(keys=(0, 1, 2), threshold=2, sigs=(1,), refused=BELOW),
    ],
    "threshold lowered 2-of-3 to 1-of-3": [
        Version(keys=(0, 1, 2), threshold=2, sigs=(0, 1)),
        Version(keys=(0, 1, 2), threshold=1, sigs=(0, 1)),
        Version(keys=(0, 1, 2), threshold=1, sigs=(2,)),
    ],
    "threshold lowered 2-of-3 to 1-of-3, old threshold not reached": [
        Version(keys=(0, 1, 2), threshold=2, sigs=(0, 1)),
        Version(keys=(0, 1, 2), threshold=1, sigs=(0,), refused=BELOW),
    ],
    "grown 1-of-1 to 2-of-2": [
        Version(keys=(0,), threshold=1, sigs=(0,)),
        Version(keys=(0, 1), threshold=2, sigs=(0, 1)),
    ],
    "grown 1-of-1 to 2-of-2, the new key missing": [
        Version(keys=(0,), threshold=1, sigs=(0,)),
        Version(keys=(0, 1), threshold=2, sigs=(0,), refused=BELOW),
    ],
    "grown 2-of-3 to 3-of-5 by two new keys, short of the old threshold": [
        Version(keys=(0, 1, 2), threshold=2, sigs=(0, 1)),
        Version(keys=(0, 1, 2, 3, 4), threshold=3, sigs=(1, 3, 4), refused=BELOW),
    ],
    "grown 2-of-3 to 3-of-5 by two new keys": [
        Version(keys=(0, 1, 2), threshold=2, sigs=(0, 1)),
        Version(keys=(0, 1, 2, 3, 4), threshold=3, sigs=(1, 3, 4, 0)),
        Version(keys=(0, 1, 2, 3, 4), threshold=3, sigs=(0, 2, 4)),
    ],
    "3-of-5, a different three each version": [
        Version(keys=(0, 1, 2, 3, 4), threshold=3, sigs=(0, 2, 4)),
        Version(keys=(0, 1, 2, 3, 4), threshold=3, sigs=(0, 4, 1)),
        Version(keys=(0, 1, 2, 3, 4), threshold=3, sigs=(1, 2, 3)),
        Version(keys=(0, 1, 2, 3, 4), threshold=3, sigs=(2, 3, 4)),
    ],
}
# fmt: on


@pytest.mark.parametrize("versions", list(CHAINS.values()), ids=list(CHAINS))
def test_root_rotation(versions: list[Version]) -> None:
    maker = ChainMaker()
    for row in versions:
        maker.publish(sign(maker.registry(row.keys, row.threshold), row.sigs, row.corrupt))
    last = versions[-1]
    if last.refused is None:
        link = follow_from_genesis(maker.chain, FEDERATION)
        assert link.version == len(versions)
        assert link.digest == registry_digest(maker.chain[-1].registry)
        assert link.registry.root == root_policy(last.keys, last.threshold)
        # Step by step, as a party trusting version 1 does.
        stepped = verify_genesis(maker.chain[0], FEDERATION)
        for signed in maker.chain[1:]:
            stepped = verify_successor(stepped, signed)
        assert stepped.digest == link.digest
        return
    refused(last.refused, lambda: follow_from_genesis(maker.chain, FEDERATION))
    if len(versions) > 1:
        # The version before the refused one is still what the party trusts.
        trusted = follow_from_genesis(maker.chain[:-1], FEDERATION)
        assert trusted.version == len(versions) - 1
        refused(last.refused, lambda: verify_successor(trusted, maker.chain[-1]))
        assert follow(trusted, []) is trusted


# --- signatures -----------------------------------------------------------------------


def test_signers_counts_each_custodian_once_and_only_valid_signatures() -> None:
    registry = ChainMaker().registry()
    signed = sign(registry, (7, 2, 0, 2, 6, 1), corrupt=(1,))
    assert signers(signed, registry.root) == [custodian(0), custodian(2)]
    # A bad signature under a key id does not shadow a good one after it.
    good = sign(registry, (1,))
    bad = sign(registry, (1,), corrupt=(1,))
    mixed = SignedRegistry(registry=good.registry, signatures=[*bad.signatures, *good.signatures])
    assert signers(mixed, registry.root) == [custodian(1)]


def test_add_signature_replaces_the_same_keys_signature() -> None:
    signed = add_signature(
        add_signature(draft(ChainMaker().registry()), ROOT_KEYS[0]), ROOT_KEYS[0]
    )
    assert [s.key_id for s in signed.signatures] == [ROOT_KEYS[0].key_id]


def _signature_over(
    payload: bytes, key: int, payload_type: str = REGISTRY_PAYLOAD_TYPE
) -> RegistrySignature:
    key_ = ROOT_KEYS[key]
    return RegistrySignature(key_id=key_.key_id, signature=key_.sign(pae(payload_type, payload)))


@pytest.mark.parametrize(
    "forge",
    [
        pytest.param(
            lambda payload: _signature_over(payload, 1, "fedscore.v1.Participant"),
            id="other-payload-type",
        ),
        pytest.param(
            lambda payload: RegistrySignature(
                key_id=ROOT_KEYS[1].key_id, signature=ROOT_KEYS[1].sign(payload)
            ),
            id="raw-bytes-no-pae",
        ),
        pytest.param(
            lambda payload: RegistrySignature(
                key_id=ROOT_KEYS[1].key_id, signature=_signature_over(payload, 6).signature
            ),
            id="stranger-under-root-key-id",
        ),
        pytest.param(
            lambda payload: RegistrySignature(
                key_id=ROOT_KEYS[1].key_id, signature=_signature_over(payload, 1).signature[:-1]
            ),
            id="truncated",
        ),
        pytest.param(
            lambda payload: RegistrySignature(key_id=ROOT_KEYS[1].key_id),
            id="empty",
        ),
        pytest.param(
            lambda payload: _signature_over(payload + b"\x00", 1),
            id="over-other-bytes",
        ),
    ],
)
def test_a_signature_that_does_not_verify_is_not_counted(
    forge: Callable[[bytes], RegistrySignature],
) -> None:
    maker = ChainMaker()
    maker.add(sigs=(0, 1))
    signed = sign(maker.registry(), (0,))
    signed.signatures.append(forge(signed.registry))
    assert signers(signed, maker.registry().root) == [custodian(0)]
    trusted = verify_genesis(maker.chain[0], FEDERATION)
    refused(BELOW, lambda: verify_successor(trusted, signed))


# --- succession -----------------------------------------------------------------------


def _registry_of(signed: SignedRegistry) -> TrustRegistry:
    registry = TrustRegistry()
    registry.ParseFromString(signed.registry)
    return registry


def _resigned(registry: TrustRegistry, sigs: Sequence[int] = (0, 1)) -> SignedRegistry:
    return sign(registry, sigs)


def _rollback_other_bytes(maker: ChainMaker) -> SignedRegistry:
    older = _registry_of(maker.chain[0])
    older.issued_at += 1
    return _resigned(older)


def _rollback_same_version_other_bytes(maker: ChainMaker) -> SignedRegistry:
    twin = _registry_of(maker.chain[1])
    twin.not_after += DAY
    return _resigned(twin)


def _gap(maker: ChainMaker) -> SignedRegistry:
    registry = maker.registry()
    registry.version += 1
    return _resigned(registry)


def _broken(digest: bytes) -> Callable[[ChainMaker], SignedRegistry]:
    def make(maker: ChainMaker) -> SignedRegistry:
        registry = maker.registry()
        registry.previous_digest = digest
        return _resigned(registry)

    return make


def _fork(maker: ChainMaker) -> SignedRegistry:
    # Names a sibling of version 2 that was never trusted.
    sibling = _rollback_same_version_other_bytes(maker)
    registry = maker.registry()
    registry.previous_digest = registry_digest(sibling.registry)
    return _resigned(registry)


def _other_federation(maker: ChainMaker) -> SignedRegistry:
    registry = maker.registry()
    registry.federation_id = "fed-other"
    return _resigned(registry)


def _garbage(sigs: Sequence[int]) -> Callable[[ChainMaker], SignedRegistry]:
    def make(maker: ChainMaker) -> SignedRegistry:
        signed = SignedRegistry(registry=b"\xff\xff\xff\xff")
        for index in sigs:
            signed = add_signature(signed, ROOT_KEYS[index])
        return signed

    return make


def _rollback_unsigned(maker: ChainMaker) -> SignedRegistry:
    return _resigned(_registry_of(_rollback_other_bytes(maker)), (0,))


def _root_policy_change(root: RootPolicy) -> Callable[[ChainMaker], SignedRegistry]:
    def make(maker: ChainMaker) -> SignedRegistry:
        registry = maker.registry()
        registry.root.CopyFrom(root)
        return _resigned(registry)

    return make


def _bad_participant(maker: ChainMaker) -> SignedRegistry:
    registry = maker.registry()
    registry.participants.append(Participant(id="trc", signing_public_key=b"short"))
    return _resigned(registry)


# Offered after versions 1 and 2 (2-of-3, keys 0, 1, 2) are trusted.
SUCCESSORS: dict[str, tuple[Callable[[ChainMaker], SignedRegistry], str | None]] = {
    "next version": (lambda maker: _resigned(maker.registry()), None),
    "rollback: version 1 with other bytes": (_rollback_other_bytes, "ROLLBACK"),
    "rollback: version 1 exactly as once trusted": (lambda maker: maker.chain[0], "ROLLBACK"),
    "rollback: version 2 with other bytes": (_rollback_same_version_other_bytes, "ROLLBACK"),
    "rollback below threshold: signatures first": (_rollback_unsigned, BELOW),
    "gap: version 4 after 2": (_gap, "CHAIN_GAP"),
    "broken: no previous digest": (_broken(b""), "CHAIN_BROKEN"),
    "broken: digest of version 1": (
        lambda maker: _broken(registry_digest(maker.chain[0].registry))(maker),
        "CHAIN_BROKEN",
    ),
    "broken: some other digest": (
        _broken(hashlib.sha256(b"not version 2").digest()),
        "CHAIN_BROKEN",
    ),
    "broken: names a fork of version 2": (_fork, "CHAIN_BROKEN"),
    "other federation": (_other_federation, "WRONG_FEDERATION"),
    "garbage bytes signed by a threshold": (_garbage((0, 1)), "BAD_REGISTRY"),
    "garbage bytes below threshold: signatures first": (_garbage((0,)), BELOW),
    "bad participant entry": (_bad_participant, "BAD_REGISTRY"),
    "bad root policy: threshold 0": (
        _root_policy_change(root_policy((0, 1, 2), 0)),
        "BAD_ROOT_POLICY",
    ),
    "bad root policy: threshold above the keys": (
        _root_policy_change(root_policy((0, 1, 2), 4)),
        "BAD_ROOT_POLICY",
    ),
    "bad root policy: no keys": (_root_policy_change(RootPolicy(threshold=1)), "BAD_ROOT_POLICY"),
}


@pytest.mark.parametrize(("offer", "reason"), list(SUCCESSORS.values()), ids=list(SUCCESSORS))
def test_successor(offer: Callable[[ChainMaker], SignedRegistry], reason: str | None) -> None:
    maker, trusted = two_versions()
    offered = offer(maker)
    if reason is None:
        link = verify_successor(trusted, offered)
        assert link.version == 3
        assert follow(trusted, [offered]).digest == link.digest
        return
    refused(reason, lambda: verify_successor(trusted, offered))
    refused(reason, lambda: follow(trusted, [offered]))


def test_the_trusted_bytes_offered_again_change_nothing() -> None:
    maker, trusted = two_versions()
    assert follow(trusted, [maker.chain[1]]) is trusted
    assert follow(trusted, [maker.chain[1], maker.chain[1]]) is trusted
    # The newest version replayed before and after a new one.
    maker.add(sigs=(2, 0))
    newest = follow(trusted, [maker.chain[1], maker.chain[2], maker.chain[2]])
    assert newest.version == 3
    assert newest.digest == registry_digest(maker.chain[2].registry)


def test_a_party_catches_up_through_several_versions() -> None:
    maker = ChainMaker()
    maker.add(sigs=(0, 1))
    genesis = verify_genesis(maker.chain[0], FEDERATION)
    maker.add(sigs=(1, 2))
    maker.add(keys=(0, 1, 3), sigs=(0, 1))
    maker.add(keys=(3, 4, 5), sigs=(1, 3, 4, 5))
    maker.add(keys=(3, 4, 5), sigs=(4, 5))
    assert follow(genesis, maker.chain[1:]).version == 5
    # A missing version is a gap when what follows is signed by the trusted root...
    refused("CHAIN_GAP", lambda: follow(genesis, [maker.chain[2]]))
    refused("CHAIN_GAP", lambda: follow(genesis, [maker.chain[0], maker.chain[2]]))
    # ...but signatures are checked first: past a missing rotation, it is below threshold.
    refused(BELOW, lambda: follow(genesis, [maker.chain[1], maker.chain[3]]))
    refused(BELOW, lambda: follow(genesis, [maker.chain[1], maker.chain[2], maker.chain[4]]))


def test_a_stored_chain_must_be_of_the_expected_federation() -> None:
    maker, _ = two_versions()
    assert follow_from_genesis(maker.chain).federation_id == FEDERATION
    refused("WRONG_FEDERATION", lambda: follow_from_genesis(maker.chain, "fed-other"))
    refused("NO_REGISTRY", lambda: follow_from_genesis([], FEDERATION))


# --- version 1 ------------------------------------------------------------------------


def _genesis(change: Callable[[TrustRegistry], object]) -> SignedRegistry:
    registry = ChainMaker().registry()
    change(registry)
    return sign(registry, (0, 1))


def _set_root(root: RootPolicy) -> Callable[[TrustRegistry], object]:
    return lambda registry: registry.root.CopyFrom(root)


def _duplicate_root_key(registry: TrustRegistry) -> None:
    registry.root.keys.append(
        RootKey(custodian="twin", public_key=ROOT_KEYS[0].verify_key.encode())
    )


def _malformed_root_key(length: int) -> Callable[[TrustRegistry], object]:
    def change(registry: TrustRegistry) -> None:
        registry.root.keys.append(RootKey(custodian="short", public_key=b"\x01" * length))

    return change


def _root_key_without_custodian(registry: TrustRegistry) -> None:
    registry.root.keys[2].custodian = ""


GENESES: dict[str, tuple[Callable[[], SignedRegistry], str | None]] = {
    "2-of-3": (lambda: _genesis(lambda registry: None), None),
    "version 2 as genesis": (
        lambda: _genesis(lambda registry: setattr(registry, "version", 2)),
        "BAD_REGISTRY",
    ),
    "version 0": (
        lambda: _genesis(lambda registry: setattr(registry, "version", 0)),
        "BAD_REGISTRY",
    ),
    "version 1 naming a predecessor": (
        lambda: _genesis(lambda registry: setattr(registry, "previous_digest", b"\x00" * 32)),
        "BAD_REGISTRY",
    ),
    "garbage bytes": (
        lambda: add_signature(SignedRegistry(registry=b"\xff\xff\xff\xff"), ROOT_KEYS[0]),
        "BAD_REGISTRY",
    ),
    "other federation": (
        lambda: _genesis(lambda registry: setattr(registry, "federation_id", "fed-other")),
        "WRONG_FEDERATION",
    ),
    "threshold 0": (lambda: _genesis(_set_root(root_policy((0, 1, 2), 0))), "BAD_ROOT_POLICY"),
    "threshold above the keys": (
        lambda: _genesis(_set_root(root_policy((0, 1), 3))),
        "BAD_ROOT_POLICY",
    ),
    "no root keys": (lambda: _genesis(_set_root(RootPolicy(threshold=1))), "BAD_ROOT_POLICY"),
    "no root at all": (
        lambda: _genesis(lambda registry: registry.ClearField("root")),
        "BAD_ROOT_POLICY",
    ),
    "duplicate root key": (lambda: _genesis(_duplicate_root_key), "BAD_ROOT_POLICY"),
    "malformed root key: 31 bytes": (lambda: _genesis(_malformed_root_key(31)), "BAD_ROOT_POLICY"),
    "malformed root key: 33 bytes": (lambda: _genesis(_malformed_root_key(33)), "BAD_ROOT_POLICY"),
    "malformed root key: empty": (lambda: _genesis(_malformed_root_key(0)), "BAD_ROOT_POLICY"),
    "root key without custodian": (
        lambda: _genesis(_root_key_without_custodian),
        "BAD_ROOT_POLICY",
    ),
    "bad participant entry": (
        lambda: _genesis(lambda registry: registry.participants.append(Participant(id="x"))),
        "BAD_REGISTRY",
    ),
}


@pytest.mark.parametrize(("make", "reason"), list(GENESES.values()), ids=list(GENESES))
def test_genesis(make: Callable[[], SignedRegistry], reason: str | None) -> None:
    signed = make()
    if reason is None:
        link = verify_genesis(signed, FEDERATION)
        assert link.version == 1
        assert link.digest == registry_digest(signed.registry)
        return
    refused(reason, lambda: verify_genesis(signed, FEDERATION))
    refused(reason, lambda: follow_from_genesis([signed], FEDERATION))


# --- views: freeze, removal, key rotation ---------------------------------------------


def test_a_frozen_registry_has_no_view() -> None:
    maker = ChainMaker()
    # An expired version still links the chain; only the newest one's expiry matters.
    maker.add(sigs=(0, 1), not_after=NOW - 10 * DAY)
    maker.add(sigs=(0, 1), not_after=NOW + DAY)
    link = follow_from_genesis(maker.chain, FEDERATION)
    assert link.view(NOW).version == 2
    # The last second of validity is still valid.
    assert link.view(NOW + DAY).version == 2
    refused("REGISTRY_EXPIRED", lambda: link.view(NOW + DAY + 1))
    refused("REGISTRY_EXPIRED", lambda: verify_genesis(maker.chain[0]).view(NOW))
    # A newer version thaws it.
    maker.add(sigs=(1, 2), not_after=NOW + 30 * DAY)
    assert follow(link, maker.chain[2:]).view(NOW + DAY + 1).version == 3


def _agency(pid: str, key: SigningKey, start: int, end: int) -> Participant:
    return build_participant(pid, Role.ROLE_AGENCY, key.verify_key, BOX, start, end)


def _all_keyrings(view: TrustView) -> list[set[str]]:
    return [
        set(keyring)
        for keyring in (
            view.registry_keys(),
            view.coordinator_keys(),
            view.agency_keys(),
            view.requester_keys(),
            view.policy_keys(),
            *(view.log_keys(role) for role in Role.values()),
        )
    ]


def test_a_removed_participant_is_unknown_and_its_key_in_no_keyring() -> None:
    trc, dsd = SigningKey.generate(), SigningKey.generate()
    listed = [
        _agency("trc", trc, NOW - DAY, NOW + 30 * DAY),
        _agency("dsd", dsd, NOW - DAY, NOW + 30 * DAY),
    ]
    maker = ChainMaker()
    maker.add(sigs=(0, 1), participants=listed)
    maker.add(sigs=(0, 1), participants=listed[:1])
    before = verify_genesis(maker.chain[0], FEDERATION).view(NOW)
    assert before.participant("dsd").role == Role.ROLE_AGENCY
    assert dsd.key_id in before.agency_keys()
    after = follow_from_genesis(maker.chain, FEDERATION).view(NOW)
    with pytest.raises(NotFound) as error:
        after.participant("dsd")
    assert error.value.reason == "UNKNOWN_PARTICIPANT"
    assert after.participant("trc").role == Role.ROLE_AGENCY
    keyrings = _all_keyrings(after)
    assert all(dsd.key_id not in keyring for keyring in keyrings)
    assert any(trc.key_id in keyring for keyring in keyrings)


OLD_AGENCY_KEY = SigningKey.generate()
NEW_AGENCY_KEY = SigningKey.generate()
SWITCH = NOW + DAY
OVERLAP = 2 * DAY

# When -> (key ids in the agency keyring, the key `verify_key` gives).
ROTATION_TIMES: dict[str, tuple[int, set[str], SigningKey]] = {
    "before the switch": (
        SWITCH - 1,
        {OLD_AGENCY_KEY.key_id},
        OLD_AGENCY_KEY,
    ),
    "at the switch": (
        SWITCH,
        {OLD_AGENCY_KEY.key_id, NEW_AGENCY_KEY.key_id},
        NEW_AGENCY_KEY,
    ),
    "inside the overlap": (
        SWITCH + OVERLAP // 2,
        {OLD_AGENCY_KEY.key_id, NEW_AGENCY_KEY.key_id},
        NEW_AGENCY_KEY,
    ),
    "last second of the overlap": (
        SWITCH + OVERLAP,
        {OLD_AGENCY_KEY.key_id, NEW_AGENCY_KEY.key_id},
        NEW_AGENCY_KEY,
    ),
    "after the overlap": (
        SWITCH + OVERLAP + 1,
        {NEW_AGENCY_KEY.key_id},
        NEW_AGENCY_KEY,
    ),
}


@pytest.mark.parametrize(
    ("now", "key_ids", "current"), list(ROTATION_TIMES.values()), ids=list(ROTATION_TIMES)
)
def test_a_rotated_agency_key(now: int, key_ids: set[str], current: SigningKey) -> None:
    maker = ChainMaker()
    maker.add(
        sigs=(0, 1), participants=[_agency("trc", OLD_AGENCY_KEY, NOW - 10 * DAY, NOW + 30 * DAY)]
    )
    maker.add(
        sigs=(1, 2),
        participants=[
            _agency("trc", OLD_AGENCY_KEY, NOW - 10 * DAY, SWITCH + OVERLAP),
            _agency("trc", NEW_AGENCY_KEY, SWITCH, NOW + 30 * DAY),
        ],
    )
    view = follow_from_genesis(maker.chain, FEDERATION).view(now)
    assert set(view.agency_keys()) == key_ids
    assert view.agency_keys().participants() == {"trc"}
    assert view.verify_key("trc") == current.verify_key


def test_one_custodian_holding_two_root_keys_is_a_bad_root_policy() -> None:
    """A threshold of two must mean two people: one custodian with two keys is refused."""
    first, second = SigningKey.generate(), SigningKey.generate()
    root = RootPolicy(
        threshold=2,
        keys=[
            RootKey(custodian="alice", public_key=first.verify_key.encode()),
            RootKey(custodian="alice", public_key=second.verify_key.encode()),
        ],
    )
    with pytest.raises(Unauthenticated) as error:
        root_verify_keys(root)
    assert error.value.reason == "BAD_ROOT_POLICY"
    assert "alice" in error.value.message
