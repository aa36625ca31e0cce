"""The registry chain: versions signed by a threshold of root custodians, followed from the
version a party trusts (root rotation in the manner of TUF).

A registry version travels as a `SignedRegistry`: the exact registry bytes and one
Ed25519 signature per custodian, each over PAE("fedscore.v1.TrustRegistry", bytes) as in
`keys.envelope` (a DSSE envelope with several signatures).

Invariants:
- Version 1 is trusted because the organisation received it out of band when it was
  admitted (and compared its root key ids with the custodians'); it must still be signed
  by a threshold of the root it names.
- Version n+1 is accepted after a trusted version n only if, in this order: it is signed
  by a threshold of n's root keys (checked on the bytes, before they are parsed); it
  names the same federation, the version n+1, and the SHA-256 of n's exact bytes; its own
  root policy is sound; and it is signed by a threshold of its own root keys. A new root
  is thus valid only with a threshold of the old and a threshold of the new.
- A signature counts once per distinct root key; signatures by unknown keys are ignored.
- An offered version not newer than the trusted one is accepted only if its bytes are
  those already trusted (a replay); any other is `ROLLBACK`. A gap is `CHAIN_GAP`.
- A view exists only for the newest trusted version and only while it has not expired
  (a frozen registry is `REGISTRY_EXPIRED`).
- Every refusal is `Unauthenticated` with a machine-readable reason; nothing returns a bool.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

from google.protobuf.message import DecodeError  # type: ignore[import-untyped, unused-ignore]

from fedscore.errors import Unauthenticated
from fedscore.v1.trust_pb2 import RegistrySignature, RootPolicy, SignedRegistry, TrustRegistry
from keys.envelope import pae
from keys.ids import key_id
from keys.registry import KEY_BYTES, TrustView
from keys.signing import SigningKey, VerifyKey

REGISTRY_PAYLOAD_TYPE: str = TrustRegistry.DESCRIPTOR.full_name


def registry_digest(registry_bytes: bytes) -> bytes:
    """SHA-256 of a version's exact registry bytes: what the next version names."""
    return hashlib.sha256(registry_bytes).digest()


@dataclass(frozen=True)
class ChainLink:
    """A registry version that verified, with its exact bytes' digest."""

    signed: SignedRegistry
    registry: TrustRegistry
    digest: bytes

    @property
    def version(self) -> int:
        return int(self.registry.version)

    @property
    def federation_id(self) -> str:
        return str(self.registry.federation_id)

    def view(self, now: int) -> TrustView:
        """The participants valid at `now`; `REGISTRY_EXPIRED` once the version has expired."""
        if self.registry.not_after < now:
            raise Unauthenticated(
                f"trust registry version {self.version} expired at {self.registry.not_after} "
                "(frozen: no newer version has reached this party)",
                reason="REGISTRY_EXPIRED",
            )
        return TrustView(self.registry, now)


def root_verify_keys(root: RootPolicy) -> dict[str, tuple[str, VerifyKey]]:
    """Key id -> (custodian, verify key) of a root policy; `BAD_ROOT_POLICY` if unsound."""
    keys: dict[str, tuple[str, VerifyKey]] = {}
    custodians: set[str] = set()
    for entry in root.keys:
        if len(entry.public_key) != KEY_BYTES or not entry.custodian:
            raise Unauthenticated(
                f"root key of custodian {entry.custodian!r} is malformed", "BAD_ROOT_POLICY"
            )
        kid = key_id(bytes(entry.public_key))
        if kid in keys:
            raise Unauthenticated(f"root key {kid} is listed twice", "BAD_ROOT_POLICY")
        if entry.custodian in custodians:
            # One custodian with two keys could meet a threshold of two alone.
            raise Unauthenticated(
                f"custodian {entry.custodian!r} holds more than one root key", "BAD_ROOT_POLICY"
            )
        custodians.add(entry.custodian)
        keys[kid] = (entry.custodian, VerifyKey.from_bytes(bytes(entry.public_key)))
    if not 1 <= root.threshold <= len(keys):
        raise Unauthenticated(
            f"root threshold {root.threshold} is not between 1 and {len(keys)} keys",
            "BAD_ROOT_POLICY",
        )
    return keys


def signers(signed: SignedRegistry, root: RootPolicy) -> list[str]:
    """Custodians of `root` whose signature over the registry bytes verifies, each once."""
    keys = root_verify_keys(root)
    message = pae(REGISTRY_PAYLOAD_TYPE, bytes(signed.registry))
    found: dict[str, str] = {}
    for signature in signed.signatures:
        known = keys.get(signature.key_id)
        if known is None or signature.key_id in found:
            continue
        try:
            known[1].verify(message, bytes(signature.signature))
        except Unauthenticated:
            continue
        found[signature.key_id] = known[0]
    return sorted(found.values())


def _require_threshold(signed: SignedRegistry, root: RootPolicy, whose: str) -> None:
    valid = signers(signed, root)
    if len(valid) < root.threshold:
        raise Unauthenticated(
            f"registry is signed by {len(valid)} of {whose} root keys "
            f"({', '.join(valid) or 'none'}); {root.threshold} are needed",
            reason="BELOW_THRESHOLD",
        )


def _parse(signed: SignedRegistry) -> TrustRegistry:
    registry = TrustRegistry()
    try:
        registry.ParseFromString(bytes(signed.registry))
    except DecodeError as exc:
        raise Unauthenticated(
            "signed registry bytes are not a TrustRegistry", "BAD_REGISTRY"
        ) from exc
    return registry


def _link(signed: SignedRegistry, registry: TrustRegistry) -> ChainLink:
    root_verify_keys(registry.root)
    _require_threshold(signed, registry.root, f"version {registry.version}'s own")
    # Participants are checked now, not first at use: a bad entry refuses the version.
    # The entries valid together change only where a window starts, so each start is seen.
    for moment in {int(registry.issued_at), *(int(p.not_before) for p in registry.participants)}:
        TrustView(registry, moment)
    return ChainLink(signed=signed, registry=registry, digest=registry_digest(signed.registry))


def verify_genesis(signed: SignedRegistry, federation_id: str = "") -> ChainLink:
    """Version 1, received out of band: signed by a threshold of the root it names."""
    registry = _parse(signed)
    if registry.version != 1 or registry.previous_digest:
        raise Unauthenticated(
            f"a trust anchor must be version 1 with no predecessor, got {registry.version}",
            reason="BAD_REGISTRY",
        )
    if federation_id and registry.federation_id != federation_id:
        raise Unauthenticated(
            f"registry is of federation {registry.federation_id!r}, not {federation_id!r}",
            reason="WRONG_FEDERATION",
        )
    return _link(signed, registry)


def verify_successor(trusted: ChainLink, signed: SignedRegistry) -> ChainLink:
    """Version n+1 after trusted version n (see the module's invariants)."""
    _require_threshold(signed, trusted.registry.root, f"the trusted version {trusted.version}'s")
    registry = _parse(signed)
    if registry.federation_id != trusted.federation_id:
        raise Unauthenticated(
            f"registry is of federation {registry.federation_id!r}, not {trusted.federation_id!r}",
            reason="WRONG_FEDERATION",
        )
    if registry.version <= trusted.version:
        raise Unauthenticated(
            f"registry version {registry.version} is not newer than the trusted "
            f"version {trusted.version}",
            reason="ROLLBACK",
        )
    if registry.version != trusted.version + 1:
        raise Unauthenticated(
            f"registry version {registry.version} does not follow the trusted version "
            f"{trusted.version}; versions in between are missing",
            reason="CHAIN_GAP",
        )
    if bytes(registry.previous_digest) != trusted.digest:
        raise Unauthenticated(
            f"registry version {registry.version} does not name version {trusted.version} "
            "as its predecessor",
            reason="CHAIN_BROKEN",
        )
    return _link(signed, registry)


def follow(
    trusted: ChainLink, offered: Iterable[SignedRegistry], known: Collection[bytes] = ()
) -> ChainLink:
    """The newest version reachable from `trusted` through `offered` (oldest first).

    A version is skipped when its bytes are the trusted ones or, by digest, among `known`
    (the versions this party already verified and stored), so a whole chain can be
    offered; any other version at or below the trusted one is `ROLLBACK`.
    """
    current = trusted
    for signed in offered:
        digest = registry_digest(signed.registry)
        if digest == current.digest or digest in known:
            continue
        current = verify_successor(current, signed)
    return current


def follow_from_genesis(chain: Sequence[SignedRegistry], federation_id: str = "") -> ChainLink:
    """Verify a whole stored chain, version 1 first."""
    if not chain:
        raise Unauthenticated("no trust registry is stored", reason="NO_REGISTRY")
    return follow(verify_genesis(chain[0], federation_id), chain[1:])


def draft(registry: TrustRegistry) -> SignedRegistry:
    """A registry version with no signature yet (deterministic bytes)."""
    return SignedRegistry(registry=registry.SerializeToString(deterministic=True))


def add_signature(signed: SignedRegistry, key: SigningKey) -> SignedRegistry:
    """`signed` with `key`'s signature added (or replaced, if that key had signed)."""
    signature = key.sign(pae(REGISTRY_PAYLOAD_TYPE, bytes(signed.registry)))
    kept = [s for s in signed.signatures if s.key_id != key.key_id]
    return SignedRegistry(
        registry=signed.registry,
        signatures=[*kept, RegistrySignature(key_id=key.key_id, signature=signature)],
    )
