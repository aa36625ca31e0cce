"""No part of a national ID is on a consent receipt, yet the citizen can recognise it.

Grants and withdrawals run through the registry's real workflow functions on a real
federation and SQLite file; each receipt is verified under the registry's key first.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from receipt_privacy import assert_no_part_of_national_id, leaks

from audit.store.log import EventLog
from consent.registry import ConsentRegistry, grant, revoke
from consent.store import open_engine
from fedscore.apps.federation import init_federation
from fedscore.runtime.party import load_party
from fedscore.v1.consent_pb2 import ConsentReceipt
from fedscore.v1.envelope_pb2 import Envelope
from keys.envelope import verify_message
from keys.national_id import with_check_digit

NOW = 1_900_000_000
DAY = 86_400
# Tails 7001 and 8878 appear nowhere in the fixed text of a receipt (purpose
# descriptions, legal basis, withdrawal instructions, agency and party ids).
ALICE = with_check_digit("110170012700")
BOB = with_check_digit("310040099887")
GRANTS = [("ptt-fuel-discount", "ptt")] * 3 + [("self-view", "citizen-portal")]


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fed") / "federation"
    init_federation(root, fast_kdf=True)
    return root


@pytest.fixture
def registry(federation: Path, tmp_path: Path) -> Iterator[ConsentRegistry]:
    party = load_party(federation, "consent-registry")
    engine = open_engine(f"sqlite:///{tmp_path / 'registry.db'}")
    yield ConsentRegistry.for_party(party, engine, EventLog(engine, party.id))
    engine.dispose()


def _receipt(registry: ConsentRegistry, envelope: Envelope) -> ConsentReceipt:
    keyring = registry.trust.registry_keys()
    return verify_message(envelope, ConsentReceipt, keyring).payload


def _receipts_of(registry: ConsentRegistry, national_id: str) -> list[ConsentReceipt]:
    receipts: list[ConsentReceipt] = []
    token_ids: list[str] = []
    for purpose_id, relying_party in GRANTS:
        issued = grant(
            registry,
            national_id=national_id,
            purpose_id=purpose_id,
            relying_party=relying_party,
            not_before=NOW,
            not_after=NOW + 30 * DAY,
            max_uses=0,
            now=NOW,
        )
        receipts.append(_receipt(registry, issued.receipt))
        token_ids.append(issued.token_id)
    # A withdrawal, and the same withdrawal asked again (its receipt is issued anew).
    for when in (NOW + DAY, NOW + 2 * DAY):
        withdrawn = revoke(registry, national_id=national_id, token_id=token_ids[0], now=when)
        receipts.append(_receipt(registry, withdrawn.receipt))
    return receipts


@pytest.mark.parametrize("citizen", [ALICE, BOB], ids=["alice", "bob"])
def test_no_receipt_holds_any_part_of_the_national_id(
    registry: ConsentRegistry, citizen: str
) -> None:
    receipts = _receipts_of(registry, citizen)
    assert [r.event for r in receipts] == ["granted"] * len(GRANTS) + ["revoked"] * 2
    assert_no_part_of_national_id(receipts, citizen)
    # Not even the other citizen's digits: receipts carry nothing derived from any ID.
    other = BOB if citizen == ALICE else ALICE
    assert_no_part_of_national_id(receipts, other)


def test_the_citizen_recognises_a_receipt_without_their_id(registry: ConsentRegistry) -> None:
    receipts = _receipts_of(registry, ALICE)
    granted, withdrawn = receipts[0], receipts[len(GRANTS)]
    purpose = registry.policy.purpose("ptt-fuel-discount")
    # The token id the citizen holds, what it was for, for whom, and when.
    assert withdrawn.token_id == granted.token_id
    assert granted.token_id in granted.how_to_withdraw
    assert (granted.purpose_id, granted.relying_party) == ("ptt-fuel-discount", "ptt")
    assert granted.purpose_description == purpose.description
    assert list(granted.agencies) == list(purpose.participants)
    assert (granted.not_before, granted.not_after, granted.event_time) == (
        NOW,
        NOW + 30 * DAY,
        NOW,
    )
    assert withdrawn.event_time == NOW + DAY


def test_the_receipt_type_no_longer_has_a_subject_hint() -> None:
    assert "subject_hint" not in ConsentReceipt.DESCRIPTOR.fields_by_name
    # A receipt signed by an older registry, with field 14 set, parses; the hint is not read.
    old = ConsentReceipt(token_id="ab" * 16).SerializeToString() + b"\x72\x04" + BOB[-4:].encode()
    parsed = ConsentReceipt.FromString(old)
    assert parsed.token_id == "ab" * 16
    assert BOB[-4:] not in "".join(str(v) for _, v in parsed.ListFields())


def _fake(**fields: object) -> ConsentReceipt:
    values: dict[str, object] = {"receipt_id": "c" * 32, "token_id": "d" * 32}
    values.update(fields)
    return ConsentReceipt(**values)  # type: ignore[arg-type]


def test_the_check_finds_a_hint_wherever_it_is() -> None:
    """The check can fail: a tail of four or more digits is found in any field."""
    tail = ALICE[-4:]
    assert leaks(_fake(legal_basis=f"citizen ...{tail}"), ALICE) == ["legal_basis", "serialized"]
    assert leaks(_fake(agencies=["trc", ALICE[-6:]]), ALICE) == ["agencies", "serialized"]
    # Next to the token id in the withdrawal text is outside the random id.
    text = f"revoke --token-id {'d' * 32}{tail}"
    assert leaks(_fake(how_to_withdraw=text), ALICE) == ["how_to_withdraw", "serialized"]
    assert leaks(_fake(how_to_withdraw="revoke"), ALICE) == []
    # Three digits are not a part in this sense.
    assert leaks(_fake(legal_basis=ALICE[-3:]), ALICE) == []
    # A tail hidden in every random id is a leak too.
    hidden = [_fake(receipt_id=f"{n}" * 28 + tail, token_id=f"{n}" * 32) for n in "abc"]
    with pytest.raises(AssertionError):
        assert_no_part_of_national_id(hidden, ALICE)


def test_the_withdrawal_instruction_is_in_thai_and_english() -> None:
    from consent.receipts import how_to_withdraw

    thai, english = how_to_withdraw("tok-1").split("\n")
    assert "ถอนความยินยอม" in thai and "tok-1" in thai
    assert english.startswith("You may withdraw this consent") and "tok-1" in english
    assert "social credit" not in english and "score for positive behaviour" in english
