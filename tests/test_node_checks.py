"""The agency node's plain checks of a score question (node/checks.py), without a server.

Each check is a plain function that raises a `FedscoreError` with a reason; batches are
signed with a real federation folder's coordinator key (fast key derivation). Nothing is
served: the same checks at a real node, over mutual TLS, are tests/test_node_refusals.py.
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
from fedscore.protocol.status_list import RevocationState
from fedscore.runtime.party import Party, load_party
from fedscore.v1.envelope_pb2 import Envelope
from fedscore.v1.query_pb2 import (
    QUESTION_KIND_HISTOGRAM,
    QUESTION_KIND_SCORE,
    BatchedContributionQuery,
    ContributionBatch,
    LogPromise,
    QuerySpec,
    ScoreQuery,
)
from keys.envelope import sign_message
from node.checks import (
    CLOCK_SKEW_SECONDS,
    MAX_BATCH_QUERIES,
    NodeTrust,
    RefusalNotes,
    admit,
    authenticate_batch,
    check_freshness,
    check_log_promise,
    check_participants,
    check_year,
    signed_spec,
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


def _item(spec: QuerySpec, promise_origin: str = "coordinator") -> BatchedContributionQuery:
    spec_bytes = spec.SerializeToString()
    promise = LogPromise(origin=promise_origin, query_hash=hashlib.sha256(spec_bytes).digest())
    return BatchedContributionQuery(spec=spec_bytes, log_promise=promise)


def _node_trust(party: Party) -> NodeTrust:
    """What `node.server.open_node` trusts, without opening the node's database."""
    trust = party.trust
    return NodeTrust(
        agency_id=party.id,
        trust=trust,
        coordinator_keyring=trust.coordinator_keys(),
        policies={party.policy.content_hash: party.policy},
        revocations=RevocationState(trust.registry_keys()),
        request_keyring=trust.requester_keys(),
    )


def _batch(parties: dict[str, Party], agencies: list[str], count: int = 1) -> Envelope:
    items = [BatchedContributionQuery(spec=b"\xff\xff")] * count
    batch = ContributionBatch(batch_id="b-unit", agency_ids=agencies, queries=items)
    return sign_message(batch, parties["coordinator"].signing_key)


def test_freshness_allows_clock_skew_and_nothing_more() -> None:
    now = 1_800_000_000
    check_freshness(_unit_spec(issued_at=now + CLOCK_SKEW_SECONDS, expires_at=now), now)
    with pytest.raises(FedscoreError) as future:
        check_freshness(_unit_spec(issued_at=now + CLOCK_SKEW_SECONDS + 1, expires_at=now), now)
    assert future.value.reason == "QUERY_EXPIRED"
    with pytest.raises(FedscoreError) as expired:
        check_freshness(_unit_spec(issued_at=now - 100, expires_at=now - 1), now)
    assert expired.value.reason == "QUERY_EXPIRED"


def test_log_promise_must_be_in_the_log_of_the_coordinator_that_signed_and_is_named() -> None:
    item = _item(_unit_spec())
    signed = signed_spec(item.spec, "coordinator")
    assert check_log_promise(item, signed) == item.log_promise
    for item, signer in (
        (_item(_unit_spec(), "another-log"), "coordinator"),
        (_item(_unit_spec(coordinator="another-coordinator")), "coordinator"),
        (_item(_unit_spec()), "another-coordinator"),
    ):
        with pytest.raises(FedscoreError) as refused:
            check_log_promise(item, signed_spec(item.spec, signer))
        assert refused.value.reason == "BAD_LOG_PROMISE"


def test_a_promise_for_other_spec_bytes_or_none_is_refused() -> None:
    item = _item(_unit_spec())
    signed = signed_spec(item.spec, "coordinator")
    item.log_promise.query_hash = hashlib.sha256(b"other").digest()
    with pytest.raises(FedscoreError) as refused:
        check_log_promise(item, signed)
    assert refused.value.reason == "BAD_LOG_PROMISE"
    item.ClearField("log_promise")
    with pytest.raises(FedscoreError) as missing:
        check_log_promise(item, signed)
    assert missing.value.reason == "BAD_LOG_PROMISE"


def test_a_batch_for_other_agencies_or_too_large_is_refused_before_any_item_is_read(
    parties: dict[str, Party],
) -> None:
    trc = _node_trust(parties["trc"])
    with pytest.raises(FedscoreError) as refused:
        authenticate_batch(_batch(parties, ["dsd", "chuangpao"]), trc)
    assert refused.value.reason == "WRONG_AGENCY"
    with pytest.raises(FedscoreError) as large:
        authenticate_batch(_batch(parties, ["trc"], MAX_BATCH_QUERIES + 1), trc)
    assert large.value.reason == "BATCH_TOO_LARGE"
    envelope = _batch(parties, ["trc", "dsd"], MAX_BATCH_QUERIES)
    signed = authenticate_batch(envelope, trc)
    assert signed.coordinator == "coordinator"
    assert signed.batch_hash == hashlib.sha256(envelope.payload).digest()
    # Only now is an item read: its spec does not parse, and nothing of it is noted.
    notes = RefusalNotes()
    with pytest.raises(FedscoreError) as malformed:
        admit(signed.batch.queries[0], signed.coordinator, trc, int(time.time()), notes)
    assert malformed.value.reason == "MALFORMED_MESSAGE"
    assert notes.fields() == {}


def test_admission_runs_its_steps_in_order_and_notes_what_the_batch_authenticated(
    parties: dict[str, Party],
) -> None:
    """A histogram spec that is also expired and unpromised: the kind (step 2) is refused
    first, with the query id and purpose noted; with the kind right, the policy (step 3)."""
    trc = _node_trust(parties["trc"])
    now = int(time.time())
    late = _unit_spec(kind=QUESTION_KIND_HISTOGRAM, expires_at=now - 1)
    item = BatchedContributionQuery(spec=late.SerializeToString())
    notes = RefusalNotes()
    with pytest.raises(FedscoreError) as refused:
        admit(item, "coordinator", trc, now, notes)
    assert refused.value.reason == "QUESTION_KIND_MISMATCH"
    assert notes.fields() == {"query_id": "q-unit", "purpose": PURPOSE}
    late.kind = QUESTION_KIND_SCORE
    item = BatchedContributionQuery(spec=late.SerializeToString())
    with pytest.raises(FedscoreError) as unknown:
        admit(item, "coordinator", trc, now, RefusalNotes())
    assert unknown.value.reason == "UNKNOWN_POLICY"  # the unit spec names no policy


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
