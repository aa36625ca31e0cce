"""Consent registry workflows, called as plain functions on a real federation and SQLite file."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from receipt_privacy import leaks

from audit.store.log import EventLog
from consent.registry import (
    LEGAL_BASIS,
    ConsentRegistry,
    consent_status,
    grant,
    list_grants,
    new_token_id,
    require_citizen_portal,
    require_participant,
    revoke,
    stored_token,
)
from consent.status_list import publish_status_list
from consent.store import (
    find_grant,
    grant_count,
    open_engine,
    status_list_size,
)
from fedscore.apps.federation import init_federation
from fedscore.errors import FedscoreError, InvalidArgument, NotFound, PermissionDenied
from fedscore.protocol.status_list import MIN_STATUS_LIST_BITS, RevocationState
from fedscore.protocol.tokens import verify_token
from fedscore.runtime.party import Party, load_party
from fedscore.v1.consent_pb2 import ConsentReceipt, ConsentToken, StatusList
from keys.envelope import verify_message
from keys.national_id import with_check_digit
from keys.seal import open_subject

NOW = 1_900_000_000
DAY = 86_400
ALICE = with_check_digit("110170012345")
BOB = with_check_digit("310040099887")
WRONG_CHECK_DIGIT = ALICE[:12] + str((int(ALICE[12]) + 1) % 10)


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fed") / "federation"
    init_federation(root, fast_kdf=True)
    return root


@pytest.fixture(scope="module")
def party(federation: Path) -> Party:
    return load_party(federation, "consent-registry")


@pytest.fixture
def registry(party: Party, tmp_path: Path) -> Iterator[ConsentRegistry]:
    engine = open_engine(f"sqlite:///{tmp_path / 'registry.db'}")
    yield ConsentRegistry.for_party(party, engine, EventLog(engine, party.id))
    engine.dispose()


def _grant(registry: ConsentRegistry, **changes: object) -> str:
    request: dict[str, object] = {
        "national_id": ALICE,
        "purpose_id": "ptt-fuel-discount",
        "relying_party": "ptt",
        "not_before": NOW,
        "not_after": NOW + 30 * DAY,
        "max_uses": 0,
        "now": NOW,
    }
    request.update(changes)
    return grant(registry, **request).token_id  # type: ignore[arg-type]


def _kinds(registry: ConsentRegistry) -> list[str]:
    return [entry.kind for entry in registry.log.entries(0, registry.log.size())]


def _stored(registry: ConsentRegistry) -> int:
    with registry.engine.connect() as connection:
        return grant_count(connection)


def test_grant_issues_a_signed_token_with_a_seal_for_each_agency(
    registry: ConsentRegistry, federation: Path
) -> None:
    issued = grant(
        registry,
        national_id=ALICE,
        purpose_id="ptt-fuel-discount",
        relying_party="ptt",
        not_before=NOW,
        not_after=NOW + 30 * DAY,
        max_uses=0,
        now=NOW,
    )
    verified = verify_token(issued.token, registry.trust, NOW + DAY)
    token = verified.token
    purpose = registry.policy.purpose("ptt-fuel-discount")
    assert token.token_id == issued.token_id and len(bytes.fromhex(token.token_id)) == 16
    assert list(token.agencies) == list(purpose.participants)
    assert list(token.domains) == list(purpose.domains)
    assert token.legal_basis == LEGAL_BASIS
    assert token.issuer == "consent-registry"
    assert token.policy_hash == registry.policy.content_hash
    assert 0 <= token.status_index < MIN_STATUS_LIST_BITS
    assert [s.agency_id for s in token.sealed_subjects] == list(purpose.participants)

    agencies = {a: load_party(federation, a) for a in purpose.participants}
    for sealed in token.sealed_subjects:
        own = agencies[sealed.agency_id]
        assert open_subject(sealed.blob, own.box, token.token_id, own.id) == ALICE
        for other in agencies.values():
            if other.id != own.id:
                with pytest.raises(InvalidArgument) as refused:
                    open_subject(sealed.blob, other.box, token.token_id, other.id)
                assert refused.value.reason == "BAD_SEAL"

    receipt = verify_message(issued.receipt, ConsentReceipt, registry.trust.registry_keys()).payload
    assert receipt.event == "granted"
    assert receipt.controller == "consent-registry"
    assert receipt.token_id == token.token_id and leaks(receipt, ALICE) == []
    assert (
        "fedscore consent revoke --workdir <federation folder> --citizen <your national ID> "
        f"--token-id {token.token_id}"
    ) in receipt.how_to_withdraw
    assert receipt.purpose_description == purpose.description

    assert _kinds(registry) == ["consent_granted"]
    fields = registry.log.entries(0, 1)[0].fields
    assert fields == {
        "token_id": token.token_id,
        "purpose": "ptt-fuel-discount",
        "relying_party": "ptt",
        "not_before": NOW,
        "not_after": NOW + 30 * DAY,
    }


def test_grant_stores_no_national_id_anywhere(registry: ConsentRegistry, tmp_path: Path) -> None:
    token_id = _grant(registry)
    with registry.engine.connect() as connection:
        row = find_grant(connection, token_id)
        assert row is not None
        assert row.citizen_key == registry.citizen_key(ALICE) and ALICE not in row.citizen_key
    registry.engine.dispose()  # checkpoint the WAL, then look at every byte on disk
    on_disk = b"".join(p.read_bytes() for p in tmp_path.glob("registry.db*"))
    assert ALICE.encode() not in on_disk


def test_grant_with_a_window_of_exactly_the_purpose_limit_is_allowed(
    registry: ConsentRegistry,
) -> None:
    # The citizen portal backdates not_before a little for clock skew (fedscore.apps.client).
    _grant(registry, not_before=NOW - 60, not_after=NOW + 365 * DAY)
    assert _stored(registry) == 1


REFUSALS = [
    ("invalid national ID", {"national_id": WRONG_CHECK_DIGIT}, InvalidArgument,
     "INVALID_NATIONAL_ID"),
    ("unknown purpose", {"purpose_id": "credit-check"}, PermissionDenied, "UNKNOWN_PURPOSE"),
    ("relying party not allowed", {"relying_party": "regulator"}, PermissionDenied,
     "RELYING_PARTY_NOT_ALLOWED"),
    ("self-view for PTT", {"purpose_id": "self-view"}, PermissionDenied,
     "RELYING_PARTY_NOT_ALLOWED"),
    ("window longer than the purpose allows", {"not_after": NOW + 366 * DAY}, InvalidArgument,
     "WINDOW_TOO_LONG"),
    ("window ends before it starts", {"not_after": NOW - 1, "not_before": NOW}, InvalidArgument,
     "INVALID_WINDOW"),
    ("window already over", {"not_before": NOW - 200, "not_after": NOW - 100}, InvalidArgument,
     "INVALID_WINDOW"),
    ("backdated consent", {"not_before": NOW - 2 * DAY}, InvalidArgument, "INVALID_WINDOW"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("wrong", "change", "error", "reason"), REFUSALS, ids=[row[0] for row in REFUSALS]
)
def test_grant_refusals_store_and_log_nothing(
    registry: ConsentRegistry,
    wrong: str,
    change: dict[str, object],
    error: type[FedscoreError],
    reason: str,
) -> None:
    with pytest.raises(error) as refused:
        _grant(registry, **change)
    assert refused.value.reason == reason, wrong
    assert _stored(registry) == 0
    assert registry.log.size() == 0


def test_use_limit_of_a_purpose_is_the_default_and_the_ceiling(
    registry: ConsentRegistry,
) -> None:
    limited = dataclasses.replace(registry.policy.purpose("ptt-fuel-discount"), max_uses=5)
    policy = dataclasses.replace(registry.policy, purposes={limited.id: limited})
    limited_registry = dataclasses.replace(registry, policy=policy)
    with pytest.raises(InvalidArgument) as refused:
        _grant(limited_registry, max_uses=6)
    assert refused.value.reason == "TOO_MANY_USES"
    assert _stored(registry) == 0
    issued = grant(
        limited_registry,
        national_id=ALICE,
        purpose_id=limited.id,
        relying_party="ptt",
        not_before=NOW,
        not_after=NOW + DAY,
        max_uses=0,
        now=NOW,
    )
    assert ConsentToken.FromString(issued.token.payload).max_uses == 5


def test_callers(party: Party) -> None:
    require_citizen_portal(party.trust, "citizen-portal")
    require_participant(party.trust, "trc")
    for caller in ("ptt", "trc", "coordinator", "", "stranger"):
        with pytest.raises(PermissionDenied) as refused:
            require_citizen_portal(party.trust, caller)
        assert refused.value.reason == "CALLER_NOT_ALLOWED"
    with pytest.raises(PermissionDenied) as refused:
        require_participant(party.trust, "stranger")
    assert refused.value.reason == "CALLER_NOT_ALLOWED"


def test_only_the_granting_citizen_may_revoke(registry: ConsentRegistry) -> None:
    token_id = _grant(registry)
    with pytest.raises(PermissionDenied) as refused:
        revoke(registry, national_id=BOB, token_id=token_id, now=NOW + 1)
    assert refused.value.reason == "NOT_YOUR_GRANT"
    with pytest.raises(NotFound) as unknown:
        revoke(registry, national_id=ALICE, token_id="00" * 16, now=NOW + 1)
    assert unknown.value.reason == "UNKNOWN_TOKEN"
    assert consent_status(registry, token_id=token_id, now=NOW + 1) == "active"
    assert _kinds(registry) == ["consent_granted"]


def test_revocation_is_signed_logged_and_idempotent(registry: ConsentRegistry) -> None:
    token_id = _grant(registry)
    keyring = registry.trust.registry_keys()
    state = RevocationState(keyring)
    first = revoke(registry, national_id=ALICE, token_id=token_id, now=NOW + 10)
    assert first.notice is not None
    notice = state.apply_notice(first.notice)
    assert notice.token_id == token_id and notice.revoked_at == NOW + 10
    receipt = verify_message(first.receipt, ConsentReceipt, keyring).payload
    assert receipt.event == "revoked" and receipt.event_time == NOW + 10

    again = revoke(registry, national_id=ALICE, token_id=token_id, now=NOW + 20)
    assert again.notice is None
    assert verify_message(again.receipt, ConsentReceipt, keyring).payload.event_time == NOW + 10
    assert _kinds(registry) == ["consent_granted", "consent_revoked"]
    assert registry.log.entries(1, 2)[0].fields["status_sequence"] == 1
    assert consent_status(registry, token_id=token_id, now=NOW + 30) == "revoked"


def test_status_follows_the_window(registry: ConsentRegistry) -> None:
    token_id = _grant(registry, not_before=NOW + DAY, not_after=NOW + 2 * DAY)
    assert consent_status(registry, token_id=token_id, now=NOW) == "not_yet_valid"
    assert consent_status(registry, token_id=token_id, now=NOW + DAY) == "active"
    assert consent_status(registry, token_id=token_id, now=NOW + 2 * DAY) == "active"
    assert consent_status(registry, token_id=token_id, now=NOW + 2 * DAY + 1) == "expired"
    with pytest.raises(NotFound) as unknown:
        consent_status(registry, token_id="ab" * 16, now=NOW)
    assert unknown.value.reason == "UNKNOWN_TOKEN"


def test_listing_shows_only_the_citizens_own_grants(registry: ConsentRegistry) -> None:
    alice_first = _grant(registry)
    bob = _grant(registry, national_id=BOB, purpose_id="self-view", relying_party="citizen-portal")
    alice_second = _grant(registry, now=NOW + 5, not_before=NOW + 5)
    revoke(registry, national_id=ALICE, token_id=alice_first, now=NOW + 9)
    listed = list_grants(registry, national_id=ALICE, now=NOW + 10)
    assert [g.token_id for g in listed] == [alice_first, alice_second]
    assert [g.status for g in listed] == ["revoked", "active"]
    assert listed[0].revoked_at == NOW + 9 and listed[1].revoked_at == 0
    assert [g.token_id for g in list_grants(registry, national_id=BOB, now=NOW)] == [bob]
    stranger = with_check_digit("500000000001")
    assert list_grants(registry, national_id=stranger, now=NOW) == []


def test_status_list_carries_revocations_and_is_resigned_only_when_needed(
    registry: ConsentRegistry,
) -> None:
    keyring = registry.trust.registry_keys()
    kept, revoked = _grant(registry), _grant(registry, national_id=BOB)
    first = publish_status_list(registry, now=NOW)
    assert publish_status_list(registry, now=NOW + 29) == first  # younger than ttl/2
    refreshed = publish_status_list(registry, now=NOW + 30)  # ttl/2 reached: same sequence
    assert refreshed != first
    assert verify_message(refreshed, StatusList, keyring).payload.sequence == 0

    revoke(registry, national_id=BOB, token_id=revoked, now=NOW + 31)
    after = publish_status_list(registry, now=NOW + 31)
    status_list = verify_message(after, StatusList, keyring).payload
    assert status_list.sequence == 1 and status_list.ttl_seconds == 60
    assert status_list.size_bits >= MIN_STATUS_LIST_BITS

    state = RevocationState(keyring)
    state.apply_status_list(after, NOW + 32)
    state.check(_token(registry, kept), NOW + 32)
    with pytest.raises(PermissionDenied) as refused:
        state.check(_token(registry, revoked), NOW + 32)
    assert refused.value.reason == "CONSENT_REVOKED"
    published = [e.fields["sequence"] for e in registry.log.entries(0, registry.log.size())
                 if e.kind == "status_list_published"]  # fmt: skip
    assert published == [0, 1]


def _token(registry: ConsentRegistry, token_id: str) -> ConsentToken:
    with registry.engine.connect() as connection:
        row = find_grant(connection, token_id)
        assert row is not None
        return stored_token(row)


def test_state_survives_a_restart(party: Party, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'restart.db'}"
    engine = open_engine(url)
    before = ConsentRegistry.for_party(party, engine, EventLog(engine, party.id))
    token_id = _grant(before)
    revoke(before, national_id=ALICE, token_id=token_id, now=NOW + 1)
    engine.dispose()

    engine = open_engine(url)
    after = ConsentRegistry.for_party(party, engine, EventLog(engine, party.id))
    assert consent_status(after, token_id=token_id, now=NOW + 2) == "revoked"
    keyring = after.trust.registry_keys()
    listed = verify_message(publish_status_list(after, now=NOW + 2), StatusList, keyring)
    assert listed.payload.sequence == 1
    assert _kinds(after) == ["consent_granted", "consent_revoked", "status_list_published"]
    engine.dispose()


def test_registry_refuses_to_open_for_another_party(federation: Path, tmp_path: Path) -> None:
    engine = open_engine(f"sqlite:///{tmp_path / 'x.db'}")
    coordinator = load_party(federation, "coordinator")
    with pytest.raises(FedscoreError) as refused:
        ConsentRegistry.for_party(coordinator, engine, EventLog(engine, coordinator.id))
    assert refused.value.reason == "WRONG_ROLE"
    engine.dispose()


def test_token_ids_never_look_like_national_ids() -> None:
    for _ in range(2000):
        token_id = new_token_id()
        assert len(token_id) == 32
        assert not any(token_id[i : i + 13].isdigit() for i in range(20))


@given(st.integers(min_value=0, max_value=10_000_000))
def test_status_list_keeps_at_most_half_its_bits_in_use(grants: int) -> None:
    size = status_list_size(grants)
    assert size >= MIN_STATUS_LIST_BITS
    assert 2 * (grants + 1) <= size
    assert status_list_size(grants + 1) >= size
