"""The agency node's plain checks of a score question, without a server.

Each check is a plain function that raises a `FedscoreError` with a reason (node/checks.py);
the keys are a real federation folder's (fast key derivation), nothing is served.
"""

from __future__ import annotations

import hashlib
import time
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedscore.apps.federation import init_federation
from fedscore.errors import FedscoreError
from fedscore.protocol.requests import AuthenticatedRequest
from fedscore.runtime.party import Party, load_party
from fedscore.v1.envelope_pb2 import Envelope
from fedscore.v1.query_pb2 import (
    QUESTION_KIND_SCORE,
    ContributionQuery,
    LogPromise,
    QuerySpec,
    ScoreQuery,
)
from fedscore.v1.trust_pb2 import Role
from keys.envelope import sign_message
from node.checks import (
    CLOCK_SKEW_SECONDS,
    RefusalNotes,
    SignedQuery,
    authenticate_query,
    check_freshness,
    check_log_promise,
    check_participants,
    check_year,
)
from policies.defaults import default_policy_document
from policies.loader import parse_policy

PURPOSE = "ptt-fuel-discount"
BANGKOK = ZoneInfo("Asia/Bangkok")
FULL_SET = ("trc", "dsd", "chuangpao")
POLICY = parse_policy(default_policy_document(3))


@pytest.fixture(scope="module")
def parties(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Party]:
    root = tmp_path_factory.mktemp("unit") / "federation"
    init_federation(root, fast_kdf=True)
    return {pid: load_party(root, pid) for pid in ("coordinator", "trc", "consent-registry")}


def _unit_spec(**changes: Any) -> QuerySpec:
    now = int(time.time())
    spec = QuerySpec(
        query_id="q-unit",
        purpose_id=PURPOSE,
        participants=["trc", "dsd", "chuangpao"],
        issued_at=now,
        expires_at=now + 60,
        coordinator="coordinator",
        kind=QUESTION_KIND_SCORE,
    )
    for name, value in changes.items():
        setattr(spec, name, value)
    return spec


def _signed(parties: dict[str, Party], spec: QuerySpec, promise_origin: str) -> SignedQuery:
    coordinator = parties["coordinator"]
    spec_bytes = spec.SerializeToString()
    promise = LogPromise(origin=promise_origin, query_hash=hashlib.sha256(spec_bytes).digest())
    query = ContributionQuery(
        spec=spec_bytes, agency_id="trc", log_promise=sign_message(promise, coordinator.signing_key)
    )
    keyring = parties["trc"].trust.keyring(Role.ROLE_COORDINATOR)
    return authenticate_query(sign_message(query, coordinator.signing_key), keyring, "trc")


def test_freshness_allows_clock_skew_and_nothing_more() -> None:
    now = 1_800_000_000
    check_freshness(_unit_spec(issued_at=now + CLOCK_SKEW_SECONDS, expires_at=now), now)
    with pytest.raises(FedscoreError) as future:
        check_freshness(_unit_spec(issued_at=now + CLOCK_SKEW_SECONDS + 1, expires_at=now), now)
    assert future.value.reason == "QUERY_EXPIRED"
    with pytest.raises(FedscoreError) as expired:
        check_freshness(_unit_spec(issued_at=now - 100, expires_at=now - 1), now)
    assert expired.value.reason == "QUERY_EXPIRED"


def test_log_promise_must_come_from_the_coordinator_named_in_the_spec(
    parties: dict[str, Party],
) -> None:
    keyring = parties["trc"].trust.keyring(Role.ROLE_COORDINATOR)
    check_log_promise(_signed(parties, _unit_spec(), "coordinator"), keyring)
    for signed in (
        _signed(parties, _unit_spec(), "another-log"),
        _signed(parties, _unit_spec(coordinator="another-coordinator"), "coordinator"),
    ):
        with pytest.raises(FedscoreError) as refused:
            check_log_promise(signed, keyring)
        assert refused.value.reason == "BAD_LOG_PROMISE"


def test_a_promise_for_other_spec_bytes_is_refused(parties: dict[str, Party]) -> None:
    signed = _signed(parties, _unit_spec(), "coordinator")
    keyring = parties["trc"].trust.keyring(Role.ROLE_COORDINATOR)
    other = LogPromise(origin="coordinator", query_hash=hashlib.sha256(b"other").digest())
    signed.query.log_promise.CopyFrom(sign_message(other, parties["coordinator"].signing_key))
    with pytest.raises(FedscoreError) as refused:
        check_log_promise(signed, keyring)
    assert refused.value.reason == "BAD_LOG_PROMISE"
    signed.query.ClearField("log_promise")
    with pytest.raises(FedscoreError) as missing:
        check_log_promise(signed, keyring)
    assert missing.value.reason == "BAD_LOG_PROMISE"


def test_a_query_for_another_agency_is_refused_before_its_spec_is_read(
    parties: dict[str, Party],
) -> None:
    coordinator = parties["coordinator"]
    query = ContributionQuery(spec=b"\xff\xff", agency_id="dsd")
    keyring = parties["trc"].trust.keyring(Role.ROLE_COORDINATOR)
    with pytest.raises(FedscoreError) as refused:
        authenticate_query(sign_message(query, coordinator.signing_key), keyring, "trc")
    assert refused.value.reason == "WRONG_AGENCY"
    query.agency_id = "trc"
    with pytest.raises(FedscoreError) as malformed:
        authenticate_query(sign_message(query, coordinator.signing_key), keyring, "trc")
    assert malformed.value.reason == "MALFORMED_MESSAGE"


def test_the_year_is_the_one_the_relying_party_asked_within_the_purpose() -> None:
    new_year_bangkok = int(datetime(2027, 1, 1, 0, 30, tzinfo=BANGKOK).timestamp())
    purpose = POLICY.purpose(PURPOSE)  # PTT: this year and last year
    asked = AuthenticatedRequest(ScoreQuery(year=0, issued_at=new_year_bangkok), "ptt", Envelope())
    assert check_year(_unit_spec(year=2027), asked, POLICY, purpose, new_year_bangkok) == 2027
    for spec_year, reason in ((2026, "YEAR_MISMATCH"), (-1, "YEAR_MISMATCH")):
        with pytest.raises(FedscoreError) as refused:
            check_year(_unit_spec(year=spec_year), asked, POLICY, purpose, new_year_bangkok)
        assert refused.value.reason == reason
    for year, reason in ((2026, None), (2025, "YEAR_NOT_ALLOWED"), (2028, "YEAR_NOT_ALLOWED")):
        request = AuthenticatedRequest(
            ScoreQuery(year=year, issued_at=new_year_bangkok), "ptt", Envelope()
        )
        spec = _unit_spec(year=year)
        if reason is None:
            assert check_year(spec, request, POLICY, purpose, new_year_bangkok) == year
            continue
        with pytest.raises(FedscoreError) as refused:
            check_year(spec, request, POLICY, purpose, new_year_bangkok)
        assert refused.value.reason == reason


def test_notes_hold_only_authenticated_facts() -> None:
    notes = RefusalNotes()
    assert notes.fields() == {}
    notes.query_id = "q1"
    assert notes.fields() == {"query_id": "q1"}


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from([*FULL_SET, "other"]), max_size=6))
def test_only_the_exact_participant_set_passes(listed: list[str]) -> None:
    """Subsets, supersets and duplicates are refused: a subset would allow differencing."""
    spec = _unit_spec()
    spec.participants[:] = listed
    exact = sorted(listed) == sorted(FULL_SET)
    try:
        check_participants(spec, POLICY.purpose(PURPOSE), "trc")
    except FedscoreError as error:
        assert not exact
        assert error.reason == "PARTICIPANT_SET_MISMATCH"
    else:
        assert exact
