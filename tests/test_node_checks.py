"""The agency node's plain checks of a question, without a server: the steps both kinds
pass (node/question_checks.py) and a score question's own (node/checks.py).

Each check is a plain function that raises a `FedscoreError` with a reason; batches are
signed with a real federation folder's coordinator key (fast key derivation). Nothing is
served: the same checks at a real node, over mutual TLS, are tests/test_node_refusals.py.
"""

from __future__ import annotations

import hashlib
import time
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedscore.apps.federation import init_federation
from fedscore.errors import FedscoreError
from fedscore.protocol.questions import MAX_BATCH_QUERIES
from fedscore.protocol.requests import AuthenticatedRequest
from fedscore.protocol.status_list import RevocationState
from fedscore.runtime.party import Party, load_party
from fedscore.runtime.prepared import HotConnection
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
from fedscore.v1.statistics_pb2 import StatisticsQuery, StatisticsSpec
from keys.envelope import sign_message
from node.checks import admit, authenticate_batch, check_log_promise, check_year
from node.claims import ClaimStatements
from node.question_checks import (
    CLOCK_SKEW_SECONDS,
    MAX_YEAR,
    MIN_YEAR,
    NodeTrust,
    RefusalNotes,
    check_freshness,
    check_kind,
    check_participants,
    check_promise,
    check_unanswered,
    check_year_range,
    signed_spec,
)
from node.statistics import admit_statistics_query
from node.store import NodeStore
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
    check_freshness(now + CLOCK_SKEW_SECONDS, now, now)
    with pytest.raises(FedscoreError) as future:
        check_freshness(now + CLOCK_SKEW_SECONDS + 1, now, now)
    assert future.value.reason == "QUERY_EXPIRED"
    with pytest.raises(FedscoreError) as expired:
        check_freshness(now - 100, now - 1, now)
    assert expired.value.reason == "QUERY_EXPIRED"


def test_log_promise_must_be_in_the_log_of_the_coordinator_that_signed_and_is_named() -> None:
    item = _item(_unit_spec())
    signed = signed_spec(item.spec, QuerySpec, "coordinator")
    assert check_log_promise(item, signed) == item.log_promise
    for item, signer in (
        (_item(_unit_spec(), "another-log"), "coordinator"),
        (_item(_unit_spec(coordinator="another-coordinator")), "coordinator"),
        (_item(_unit_spec()), "another-coordinator"),
    ):
        with pytest.raises(FedscoreError) as refused:
            check_log_promise(item, signed_spec(item.spec, QuerySpec, signer))
        assert refused.value.reason == "BAD_LOG_PROMISE"


def test_a_promise_for_other_spec_bytes_or_none_is_refused() -> None:
    item = _item(_unit_spec())
    signed = signed_spec(item.spec, QuerySpec, "coordinator")
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
    assert signed.signer == "coordinator"
    assert signed.batch_hash == hashlib.sha256(envelope.payload).digest()
    # Only now is an item read: its spec does not parse, and nothing of it is noted.
    notes = RefusalNotes()
    with pytest.raises(FedscoreError) as malformed:
        admit(signed.batch.queries[0], signed.signer, trc, int(time.time()), notes)
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
        check_participants(listed, POLICY.purpose(PURPOSE).participants, "trc", in_order=False)
    except FedscoreError as error:
        assert not exact
        assert error.reason == "PARTICIPANT_SET_MISMATCH"
    else:
        assert exact


# --- the steps both kinds of question pass (node/question_checks.py) ---------------------


def _stats_spec(policy: Any, **changes: Any) -> StatisticsSpec:
    now = int(time.time())
    release = "participation-by-domain-and-area"
    fields: dict[str, Any] = {
        "query_id": "s-unit",
        "release": release,
        "policy_hash": policy.content_hash,
        "year": policy.current_year(now),
        "participants": list(policy.agencies),
        "contribution_bound": policy.statistics_rules.release(release).contribution_bound,
        "issued_at": now,
        "expires_at": now + 60,
        "coordinator": "coordinator",
        "kind": QUESTION_KIND_HISTOGRAM,
        "helper": "regulator-helper",
    }
    return StatisticsSpec(**{**fields, **changes})


def _stats_query(
    parties: dict[str, Party], spec: StatisticsSpec, agency: str = "trc", by: str = "coordinator"
) -> Envelope:
    """`spec` asked of `agency`, signed by the coordinator, with a promise signed `by`."""
    spec_bytes = spec.SerializeToString(deterministic=True)
    promise = LogPromise(origin="coordinator", query_hash=hashlib.sha256(spec_bytes).digest())
    query = StatisticsQuery(
        spec=spec_bytes,
        agency_id=agency,
        log_promise=sign_message(promise, parties[by].signing_key),
    )
    return sign_message(query, parties["coordinator"].signing_key)


@pytest.mark.parametrize("spec_type", [QuerySpec, StatisticsSpec])
def test_a_spec_of_either_kind_must_parse_and_name_a_query_id(spec_type: Any) -> None:
    for spec_bytes in (b"\xff\xff", spec_type(policy_hash="p").SerializeToString()):
        with pytest.raises(FedscoreError) as refused:
            signed_spec(spec_bytes, spec_type, "coordinator")
        assert refused.value.reason == "MALFORMED_MESSAGE"
    spec_bytes = spec_type(query_id="q").SerializeToString()
    signed = signed_spec(spec_bytes, spec_type, "coordinator")
    assert (signed.spec.query_id, signed.coordinator) == ("q", "coordinator")
    assert signed.query_hash == hashlib.sha256(spec_bytes).digest()


def test_each_path_answers_only_its_own_kind() -> None:
    check_kind(QUESTION_KIND_SCORE, QUESTION_KIND_SCORE)
    check_kind(QUESTION_KIND_HISTOGRAM, QUESTION_KIND_HISTOGRAM)
    for kind, expected in (
        (QUESTION_KIND_HISTOGRAM, QUESTION_KIND_SCORE),
        (QUESTION_KIND_SCORE, QUESTION_KIND_HISTOGRAM),
        (0, QUESTION_KIND_SCORE),
    ):
        with pytest.raises(FedscoreError) as refused:
            check_kind(kind, expected)
        assert refused.value.reason == "QUESTION_KIND_MISMATCH"


def test_a_promise_signed_on_its_own_must_be_signed_by_the_same_coordinator() -> None:
    """A histogram question's promise is its own envelope: its signer vouches too."""
    spec_bytes = _unit_spec().SerializeToString()
    signed = signed_spec(spec_bytes, QuerySpec, "coordinator")
    check_promise("coordinator", signed.query_hash, signed, "coordinator")
    with pytest.raises(FedscoreError) as refused:
        check_promise("coordinator", signed.query_hash, signed, "ptt")
    assert refused.value.reason == "BAD_LOG_PROMISE"


@settings(max_examples=60, deadline=None)
@given(st.permutations(FULL_SET), st.lists(st.sampled_from([*FULL_SET, "other"]), max_size=5))
def test_a_histogram_asks_every_agency_in_policy_order(order: list[str], listed: list[str]) -> None:
    """Statistics ask the policy's agencies in its order; a score its purpose's, in any."""
    for asked in (order, listed):
        exact = tuple(asked) == FULL_SET
        try:
            check_participants(asked, FULL_SET, "trc", in_order=True)
        except FedscoreError as error:
            assert not exact
            assert error.reason == "PARTICIPANT_SET_MISMATCH"
        else:
            assert exact
    check_participants(order, FULL_SET, "trc", in_order=False)


@pytest.mark.parametrize("in_order", [True, False])
def test_an_agency_outside_the_set_is_refused_even_when_the_set_is_right(in_order: bool) -> None:
    with pytest.raises(FedscoreError) as refused:
        check_participants(FULL_SET, FULL_SET, "other", in_order=in_order)
    assert refused.value.reason == "PARTICIPANT_SET_MISMATCH"


def test_the_year_range_runs_from_min_year_to_what_the_kind_allows() -> None:
    for year, latest in ((MIN_YEAR, MIN_YEAR), (2026, 2026), (MAX_YEAR, MAX_YEAR)):
        check_year_range(year, latest)
    for year, latest in ((MIN_YEAR - 1, MAX_YEAR), (0, MAX_YEAR), (2027, 2026)):
        with pytest.raises(FedscoreError) as refused:
            check_year_range(year, latest)
        assert refused.value.reason == "BAD_YEAR"


def test_score_and_histogram_questions_share_one_space_of_query_ids(tmp_path: Path) -> None:
    """A query id a score item claimed (node.claims) is a replay to a histogram question."""
    store = NodeStore(f"sqlite:///{tmp_path / 'node.db'}")
    hot = HotConnection(store.engine)
    try:
        check_unanswered(store, "q-shared")
        with hot.transaction() as cursor:
            ClaimStatements(store.engine).claim_query_id(cursor, "q-shared", 1_800_000_000)
        with pytest.raises(FedscoreError) as refused:
            check_unanswered(store, "q-shared")
        assert refused.value.reason == "REPLAYED_QUERY"
        check_unanswered(store, "q-other")
    finally:
        hot.close()
        store.dispose()


def test_statistics_admission_runs_the_shared_steps_in_order(
    parties: dict[str, Party], tmp_path: Path
) -> None:
    """Each spec below fails its named step and every later one: the earliest is refused,
    noted with the query id and release the coordinator's signature authenticated."""
    trc = _node_trust(parties["trc"])
    policy = parties["trc"].policy
    store = NodeStore(f"sqlite:///{tmp_path / 'node.db'}")
    now = int(time.time())
    late, future, stranger = now - 1, policy.current_year(now) + 1, "consent-registry"
    subset = ["trc", "dsd"]
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"kind": QUESTION_KIND_SCORE, "expires_at": late}, stranger, "QUESTION_KIND_MISMATCH"),
        ({"policy_hash": "sha256:00", "expires_at": late}, stranger, "UNKNOWN_POLICY"),
        ({"expires_at": late, "year": future}, stranger, "QUERY_EXPIRED"),
        ({"participants": subset, "year": future}, stranger, "BAD_LOG_PROMISE"),
        # The helper it names must be one the registry lists, never the coordinator itself.
        (
            {"helper": "coordinator", "participants": subset, "year": future},
            "coordinator",
            "HELPER_NOT_LISTED",
        ),
        ({"participants": subset, "year": future}, "coordinator", "PARTICIPANT_SET_MISMATCH"),
        ({"year": future}, "coordinator", "BAD_YEAR"),
    ]

    def admit_query(envelope: Envelope, notes: RefusalNotes) -> Any:
        return admit_statistics_query(envelope, trc, store, now, notes)

    try:
        for changes, promise_signer, reason in cases:
            spec = _stats_spec(policy, **changes)
            notes = RefusalNotes()
            with pytest.raises(FedscoreError) as refused:
                admit_query(_stats_query(parties, spec, by=promise_signer), notes)
            assert refused.value.reason == reason
            assert notes.fields() == {"query_id": "s-unit", "release": spec.release}
        spec = _stats_spec(policy)
        admitted = admit_query(_stats_query(parties, spec), RefusalNotes())
        assert (admitted.query_id, admitted.year) == ("s-unit", spec.year)
        notes = RefusalNotes()
        with pytest.raises(FedscoreError) as elsewhere:
            admit_query(_stats_query(parties, spec, agency="dsd"), notes)
        assert (elsewhere.value.reason, notes.fields()) == ("WRONG_AGENCY", {})
    finally:
        store.dispose()
