"""Trust registry: root signature, expiry, validity windows and purpose-bound keyrings."""

from __future__ import annotations

import pytest

from fedscore.errors import NotFound, Unauthenticated
from fedscore.v1.envelope_pb2 import Envelope
from fedscore.v1.trust_pb2 import Participant, Role, Sector, TrustRegistry
from keys.box import BoxKeyPair
from keys.envelope import sign_bytes, sign_message, verify_message
from keys.keyring import AgencyKeys, CoordinatorKeys, LogKeys
from keys.registry import TrustView, build_participant, sign_registry, verify_registry
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
        version=3,
        issued_at=NOW - DAY,
        not_after=not_after,
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


def _view(now: int = NOW) -> TrustView:
    return verify_registry(sign_registry(_registry(), ROOT), ROOT.verify_key, now)


def test_verified_view_lists_current_participants() -> None:
    view = _view()
    assert view.federation_id == "fed-test"
    assert view.version == 3
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


def test_wrong_root_is_refused() -> None:
    envelope = sign_registry(_registry(), SigningKey.generate())
    with pytest.raises(Unauthenticated) as error:
        verify_registry(envelope, ROOT.verify_key, NOW)
    assert error.value.reason == "BAD_REGISTRY"


@pytest.mark.parametrize("tamper", ["unsigned", "payload", "type"])
def test_tampered_registry_is_refused(tamper: str) -> None:
    envelope = sign_registry(_registry(), ROOT)
    if tamper == "unsigned":
        envelope.ClearField("signature")
    elif tamper == "payload":
        envelope.payload = envelope.payload.replace(b"fed-test", b"fed-evil")
    else:
        envelope = sign_bytes("fedscore.v1.Participant", envelope.payload, ROOT)
    with pytest.raises(Unauthenticated) as error:
        verify_registry(envelope, ROOT.verify_key, NOW)
    assert error.value.reason == "BAD_REGISTRY"


def test_expired_registry_is_refused() -> None:
    envelope = sign_registry(_registry(not_after=NOW - 1), ROOT)
    with pytest.raises(Unauthenticated) as error:
        verify_registry(envelope, ROOT.verify_key, NOW)
    assert error.value.reason == "REGISTRY_EXPIRED"
    # The last second of validity is still valid.
    verify_registry(envelope, ROOT.verify_key, NOW - 1)


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
        verify_registry(sign_registry(registry, ROOT), ROOT.verify_key, NOW)
    assert error.value.reason == "BAD_REGISTRY"


def test_malformed_key_is_a_bad_registry() -> None:
    registry = _registry()
    registry.participants[0].signing_public_key = b"short"
    with pytest.raises(Unauthenticated) as error:
        verify_registry(sign_registry(registry, ROOT), ROOT.verify_key, NOW)
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
    envelope = sign_registry(_asking_registry(), ROOT)
    view = verify_registry(Envelope.FromString(envelope.SerializeToString()), ROOT.verify_key, NOW)
    assert view.sector("ptt") == Sector.SECTOR_COMMERCIAL
    assert view.sector("citizen-portal") == Sector.SECTOR_CITIZEN_AGENT
    # Roles that ask nothing carry no sector.
    assert view.sector("coordinator") == Sector.SECTOR_UNSPECIFIED
    # Only relying parties and citizen portals valid now, by their enum names.
    assert view.relying_party_sectors() == {
        "citizen-portal": "SECTOR_CITIZEN_AGENT",
        "ptt": "SECTOR_COMMERCIAL",
    }
    later = verify_registry(envelope, ROOT.verify_key, NOW + DAY)
    assert later.relying_party_sectors()["pea"] == "SECTOR_PUBLIC_SERVICE"
    with pytest.raises(NotFound) as error:
        view.sector("pea")
    assert error.value.reason == "UNKNOWN_PARTICIPANT"


def test_a_changed_sector_breaks_the_root_signature() -> None:
    envelope = sign_registry(_asking_registry(), ROOT)
    registry = TrustRegistry.FromString(envelope.payload)
    next(p for p in registry.participants if p.id == "ptt").sector = Sector.SECTOR_CIVIL_SOCIETY
    envelope.payload = registry.SerializeToString()
    with pytest.raises(Unauthenticated) as error:
        verify_registry(envelope, ROOT.verify_key, NOW)
    assert error.value.reason == "BAD_REGISTRY"


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
    with pytest.raises(Unauthenticated) as error:
        verify_registry(sign_registry(registry, ROOT), ROOT.verify_key, NOW)
    assert error.value.reason == "BAD_REGISTRY"
    # Once the old entry has ended, the new sector is the participant's only one.
    later = verify_registry(sign_registry(registry, ROOT), ROOT.verify_key, NOW + DAY + 1)
    assert later.sector("ptt") == Sector.SECTOR_PUBLIC_SERVICE


def test_a_sector_this_version_does_not_know_keeps_a_name() -> None:
    registry = _asking_registry()
    next(p for p in registry.participants if p.id == "ptt").sector = 99  # type: ignore[assignment]
    view = verify_registry(sign_registry(registry, ROOT), ROOT.verify_key, NOW)
    assert view.relying_party_sectors()["ptt"] == "SECTOR_99"
