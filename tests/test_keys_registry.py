"""Trust registry: root signatures, expiry, validity windows and purpose-bound keyrings.

Views are made the only way there is: a version verified in the registry chain (here a
genesis under a 1-of-1 root), then `ChainLink.view(now)`. The chain itself (thresholds,
rotation, rollback) is tested in tests/test_registry_chain.py.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from fedscore.errors import NotFound, Unauthenticated
from fedscore.v1.trust_pb2 import (
    Participant,
    RegistrySignature,
    Role,
    RootKey,
    RootPolicy,
    Sector,
    SignedRegistry,
    TrustRegistry,
)
from keys.box import BoxKeyPair
from keys.envelope import pae, sign_message, verify_message
from keys.keyring import AgencyKeys, CoordinatorKeys, LogKeys
from keys.registry import TrustView, build_participant
from keys.registry_chain import ChainLink, add_signature, draft, verify_genesis
from keys.signing import SigningKey

NOW = 1_750_000_000
DAY = 86_400

ROOT = SigningKey.from_seed(b"\x01" * 32)
COORDINATOR = SigningKey.from_seed(b"\x02" * 32)
AGENCY = SigningKey.from_seed(b"\x03" * 32)
AGENCY_NEXT = SigningKey.from_seed(b"\x04" * 32)
FUTURE = SigningKey.from_seed(b"\x05" * 32)
RETIRED = SigningKey.from_seed(b"\x06" * 32)
BOX = BoxKeyPair.from_private(b"\x07" * 32)


def _entry(pid: str, role: Role, key: SigningKey, start: int, end: int) -> Participant:
    return build_participant(pid, role, key.verify_key, BOX.public_bytes, start, end)


def _registry(not_after: int = NOW + 30 * DAY) -> TrustRegistry:
    return TrustRegistry(
        federation_id="fed-test",
        version=1,
        issued_at=NOW - DAY,
        not_after=not_after,
        root=RootPolicy(
            threshold=1, keys=[RootKey(custodian="root", public_key=ROOT.verify_key.encode())]
        ),
        participants=[
            _entry("coordinator", Role.ROLE_COORDINATOR, COORDINATOR, NOW - DAY, NOW + DAY),
            _entry("trc", Role.ROLE_AGENCY, AGENCY, NOW - 10 * DAY, NOW + DAY),
            # Rotation: trc's next key overlaps the current one.
            _entry("trc", Role.ROLE_AGENCY, AGENCY_NEXT, NOW - DAY, NOW + 10 * DAY),
            _entry("dsd", Role.ROLE_AGENCY, FUTURE, NOW + DAY, NOW + 2 * DAY),
            _entry("chuangpao", Role.ROLE_AGENCY, RETIRED, NOW - 2 * DAY, NOW - DAY),
            Participant(
                id="policy-authority",
                role=Role.ROLE_POLICY_AUTHORITY,
                signing_public_key=SigningKey.from_seed(b"\x08" * 32).verify_key.encode(),
                not_before=NOW - DAY,
                not_after=NOW + DAY,
            ),
        ],
    )


def _signed(registry: TrustRegistry, key: SigningKey = ROOT) -> SignedRegistry:
    """`registry` as a version signed by `key` (the 1-of-1 root by default)."""
    return add_signature(draft(registry), key)


def _link(registry: TrustRegistry) -> ChainLink:
    return verify_genesis(_signed(registry), "fed-test")


def _view(now: int = NOW, registry: TrustRegistry | None = None) -> TrustView:
    return _link(registry if registry is not None else _registry()).view(now)


def test_verified_view_lists_current_participants() -> None:
    view = _view()
    assert view.federation_id == "fed-test"
    assert view.version == 1
    assert view.participant("coordinator").role == Role.ROLE_COORDINATOR
    assert [p.id for p in view.by_role(Role.ROLE_AGENCY)] == ["trc"]
    assert view.box_public("trc") == BOX.public_bytes
    # During rotation the most recent entry is the participant's current one.
    assert view.verify_key("trc") == AGENCY_NEXT.verify_key


def test_participant_without_box_key_has_none() -> None:
    with pytest.raises(NotFound) as error:
        _view().box_public("policy-authority")
    assert error.value.reason == "NO_BOX_KEY"


def test_unknown_participant() -> None:
    with pytest.raises(NotFound) as error:
        _view().participant("nobody")
    assert error.value.reason == "UNKNOWN_PARTICIPANT"


def test_a_root_other_than_the_one_named_is_refused() -> None:
    with pytest.raises(Unauthenticated) as error:
        verify_genesis(_signed(_registry(), SigningKey.generate()))
    assert error.value.reason == "BELOW_THRESHOLD"


def _other_type(signed: SignedRegistry) -> None:
    # A signature by the root, but over the registry bytes as another payload type.
    signature = ROOT.sign(pae("fedscore.v1.Participant", signed.registry))
    signed.ClearField("signatures")
    signed.signatures.append(RegistrySignature(key_id=ROOT.key_id, signature=signature))


def _other_key_id(signed: SignedRegistry) -> None:
    signed.signatures[0].key_id = SigningKey.generate().key_id


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda signed: signed.ClearField("signatures"), id="unsigned"),
        pytest.param(
            lambda signed: setattr(
                signed, "registry", signed.registry.replace(b"chuangpao", b"chuangpa0")
            ),
            id="payload",
        ),
        pytest.param(_other_type, id="type"),
        pytest.param(_other_key_id, id="key-id"),
        pytest.param(
            lambda signed: setattr(signed.signatures[0], "signature", b"\x00" * 64),
            id="signature",
        ),
        pytest.param(
            lambda signed: setattr(
                signed.signatures[0], "signature", signed.signatures[0].signature[:-1]
            ),
            id="truncated",
        ),
    ],
)
def test_tampered_registry_is_refused(tamper: Callable[[SignedRegistry], object]) -> None:
    signed = _signed(_registry())
    tamper(signed)
    with pytest.raises(Unauthenticated) as error:
        verify_genesis(signed, "fed-test")
    assert error.value.reason == "BELOW_THRESHOLD"


def test_expired_registry_is_refused() -> None:
    link = _link(_registry(not_after=NOW - 1))
    with pytest.raises(Unauthenticated) as error:
        link.view(NOW)
    assert error.value.reason == "REGISTRY_EXPIRED"
    # The last second of validity is still valid.
    assert link.view(NOW - 1).version == 1


def test_node_key_cannot_verify_what_only_the_coordinator_signs() -> None:
    view = _view()
    forged = sign_message(Participant(id="forged"), AGENCY_NEXT)
    with pytest.raises(Unauthenticated) as error:
        verify_message(forged, Participant, view.coordinator_keys())
    assert error.value.reason == "UNKNOWN_SIGNER"
    genuine = sign_message(Participant(id="genuine"), COORDINATOR)
    verified = verify_message(genuine, Participant, view.coordinator_keys())
    assert verified.signer == "coordinator"


def test_root_key_is_in_no_participant_keyring() -> None:
    view = _view()
    keyrings = [
        view.registry_keys(),
        view.coordinator_keys(),
        view.agency_keys(),
        view.requester_keys(),
        view.policy_keys(),
        *(view.log_keys(role) for role in Role.values()),
    ]
    assert sum(len(keyring) for keyring in keyrings) > 0
    assert all(ROOT.key_id not in keyring for keyring in keyrings)


def test_each_keyring_is_typed_by_whose_keys_it_holds() -> None:
    view = _view()
    assert isinstance(view.coordinator_keys(), CoordinatorKeys)
    assert view.coordinator_keys().participants() == {"coordinator"}
    assert isinstance(view.agency_keys(), AgencyKeys)
    assert not isinstance(view.agency_keys(), CoordinatorKeys)
    # Cached per type and roles: one keyring object per kind.
    assert view.agency_keys() is view.agency_keys()
    assert view.log_keys(Role.ROLE_AGENCY).participants() == view.agency_keys().participants()
    assert type(view.log_keys(Role.ROLE_AGENCY)) is LogKeys


def test_keyring_holds_only_keys_valid_now() -> None:
    keyring = _view().agency_keys()
    # Both of trc's overlapping keys verify; not-yet-valid and retired keys do not.
    assert keyring.lookup(AGENCY.key_id)[0] == "trc"
    assert keyring.lookup(AGENCY_NEXT.key_id)[0] == "trc"
    for key in (FUTURE, RETIRED):
        with pytest.raises(Unauthenticated) as error:
            keyring.lookup(key.key_id)
        assert error.value.reason == "UNKNOWN_SIGNER"


def test_validity_window_moves_with_now() -> None:
    later = _view(NOW + DAY)
    assert later.agency_keys().participants() == frozenset({"trc", "dsd"})
    # trc's old key ended at NOW + DAY inclusive; one second later only the new key is left.
    later_still = _view(NOW + DAY + 1).agency_keys()
    assert AGENCY.key_id not in later_still
    assert AGENCY_NEXT.key_id in later_still
    with pytest.raises(NotFound):
        _view(NOW + DAY + 1).participant("coordinator")


def test_two_participants_sharing_a_key_is_a_bad_registry() -> None:
    registry = _registry()
    registry.participants.append(
        _entry("impostor", Role.ROLE_COORDINATOR, AGENCY, NOW - DAY, NOW + DAY)
    )
    with pytest.raises(Unauthenticated) as error:
        _link(registry)
    assert error.value.reason == "BAD_REGISTRY"


def test_malformed_key_is_a_bad_registry() -> None:
    registry = _registry()
    registry.participants[0].signing_public_key = b"short"
    with pytest.raises(Unauthenticated) as error:
        _link(registry)
    assert error.value.reason == "BAD_REGISTRY"


def _asking_registry(*extra: Participant) -> TrustRegistry:
    registry = _registry()
    registry.participants.extend(
        [
            build_participant(
                "ptt",
                Role.ROLE_RELYING_PARTY,
                SigningKey.from_seed(b"\x10" * 32).verify_key,
                BOX.public_bytes,
                NOW - DAY,
                NOW + DAY,
                sector=Sector.SECTOR_COMMERCIAL,
            ),
            build_participant(
                "citizen-portal",
                Role.ROLE_CITIZEN_PORTAL,
                SigningKey.from_seed(b"\x11" * 32).verify_key,
                BOX.public_bytes,
                NOW - DAY,
                NOW + DAY,
                sector=Sector.SECTOR_CITIZEN_AGENT,
            ),
            # Admitted later: not valid now, so not a relying party yet.
            build_participant(
                "pea",
                Role.ROLE_RELYING_PARTY,
                SigningKey.from_seed(b"\x12" * 32).verify_key,
                BOX.public_bytes,
                NOW + DAY,
                NOW + 2 * DAY,
                sector=Sector.SECTOR_PUBLIC_SERVICE,
            ),
            *extra,
        ]
    )
    return registry


def test_sectors_survive_signing_and_verifying() -> None:
    signed = _signed(_asking_registry())
    link = verify_genesis(SignedRegistry.FromString(signed.SerializeToString()), "fed-test")
    view = link.view(NOW)
    assert view.sector("ptt") == Sector.SECTOR_COMMERCIAL
    assert view.sector("citizen-portal") == Sector.SECTOR_CITIZEN_AGENT
    # Roles that ask nothing carry no sector.
    assert view.sector("coordinator") == Sector.SECTOR_UNSPECIFIED
    # Only relying parties and citizen portals valid now, by their enum names.
    assert view.relying_party_sectors() == {
        "citizen-portal": "SECTOR_CITIZEN_AGENT",
        "ptt": "SECTOR_COMMERCIAL",
    }
    later = link.view(NOW + DAY)
    assert later.relying_party_sectors()["pea"] == "SECTOR_PUBLIC_SERVICE"
    with pytest.raises(NotFound) as error:
        view.sector("pea")
    assert error.value.reason == "UNKNOWN_PARTICIPANT"


def test_a_changed_sector_breaks_the_root_signature() -> None:
    signed = _signed(_asking_registry())
    registry = TrustRegistry.FromString(signed.registry)
    next(p for p in registry.participants if p.id == "ptt").sector = Sector.SECTOR_CIVIL_SOCIETY
    signed.registry = registry.SerializeToString(deterministic=True)
    with pytest.raises(Unauthenticated) as error:
        verify_genesis(signed, "fed-test")
    assert error.value.reason == "BELOW_THRESHOLD"


def test_one_participant_with_two_sectors_at_once_is_a_bad_registry() -> None:
    # ptt rotates its key, but the new entry also claims another sector.
    registry = _asking_registry(
        build_participant(
            "ptt",
            Role.ROLE_RELYING_PARTY,
            SigningKey.from_seed(b"\x13" * 32).verify_key,
            BOX.public_bytes,
            NOW,
            NOW + 10 * DAY,
            sector=Sector.SECTOR_PUBLIC_SERVICE,
        )
    )
    # The two entries do not overlap when the version was issued, but they do later: the
    # chain checks every moment a window starts, so the version itself is refused.
    with pytest.raises(Unauthenticated) as error:
        _link(registry)
    assert error.value.reason == "BAD_REGISTRY"
    assert "two sectors" in error.value.message


def test_a_sector_this_version_does_not_know_keeps_a_name() -> None:
    registry = _asking_registry()
    next(p for p in registry.participants if p.id == "ptt").sector = 99  # type: ignore[assignment, unused-ignore]
    view = _view(registry=registry)
    assert view.relying_party_sectors()["ptt"] == "SECTOR_99"
