"""The refusal table of a real agency node, on the RPCs production asks it questions on.

Each row builds one bad request against a live federation (the real consent registry, a
real `trc` node holding imported records, the coordinator's and the registry's real keys:
tests/harness/node.py) and sends it over mutual TLS on 127.0.0.1:

- a score question to `NodeService.ContributeBatch`, as an item of a signed batch (a lone
  question is a batch of one). A batch that is not the coordinator's, for this node and
  within bounds is refused whole, with a gRPC status ("call" rows); otherwise the node
  signs one outcome per item, and a refused item carries the code and reason a status
  would have (`fedscore.runtime.rpc.error_from_refusal`; "item" rows);
- a statistics question to `NodeStatisticsService.HistogramBatch`, as an item of a request
  (a lone question is a batch of one). A request that does not parse, is too large or holds
  too many items is refused whole, with a gRPC status ("call" rows); otherwise each refused
  item's outcome carries the code and reason a status would have ("item" rows).

Every row asserts the canonical code and the machine-readable reason; exactly one new log
entry, "query_refused" or "statistics_refused", with that reason and only the facts the
coordinator's signature authenticated (query id and purpose, or query id and release);
and that nothing else the node stores changed: records, query ids seen, request nonces,
token uses, privacy-budget spends. Many rows are what a hostile coordinator, holding its
real key, could try.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from harness.node import (
    ALICE,
    BOB,
    CONTRIBUTE_BATCH,
    DAY,
    EXPECTED,
    HISTOGRAM_BATCH,
    NOTIFY_REVOCATION,
    TIMEOUT,
    LiveFederation,
    assert_clean_log,
    live_federation,
    make_federation,
    outcome_of,
    spec_bytes,
)

from fedscore.apps import client
from fedscore.errors import Code, FedscoreError
from fedscore.protocol.questions import MAX_BATCH_QUERIES
from fedscore.runtime.rpc import MAX_MESSAGE_BYTES, call_unary, secure_channel
from fedscore.runtime.statuses import error_from_rpc
from fedscore.v1.consent_pb2 import ConsentToken, RevocationNotice
from fedscore.v1.envelope_pb2 import Envelope
from fedscore.v1.query_pb2 import (
    QUESTION_KIND_HISTOGRAM,
    QUESTION_KIND_SCORE,
    BatchedContributionQuery,
    ContributeBatchRequest,
    ContributeBatchResponse,
    ContributionAnswer,
    LogPromise,
    NotifyRevocationRequest,
    NotifyRevocationResponse,
    QuerySpec,
)
from fedscore.v1.statistics_pb2 import (
    HistogramBatchRequest,
    HistogramBatchResponse,
    HistogramItem,
    StatisticsQuery,
    StatisticsSpec,
)
from keys.envelope import sign_bytes, sign_message
from keys.masks import MODULUS
from keys.seal import seal_subject
from node.batch import BATCH_MESSAGE_BYTES
from node.statistics import MAX_HISTOGRAM_ITEMS

pytestmark = pytest.mark.integration

AGENCY = "trc"
OTHER_POLICY = "sha256:" + "ab" * 32
CALL, ITEM = "call", "item"  # refused as a whole call, or as one item of a batch


@dataclass(frozen=True)
class Sent:
    """The raw request bytes to send, to which method and as whom, and what the refusal
    entry must name besides its reason."""

    method: str
    raw: bytes
    logged: dict[str, str]
    caller: str = "coordinator"
    batch: Envelope = field(default_factory=Envelope)  # a score batch, to check the answers

    @property
    def refusal_kind(self) -> str:
        return "query_refused" if self.method == CONTRIBUTE_BATCH else "statistics_refused"


Prepare = Callable[[LiveFederation], Awaitable[Sent]]


def _batch_request(batch: Envelope) -> bytes:
    return bytes(ContributeBatchRequest(batch=batch).SerializeToString())


def _item(
    live: LiveFederation,
    spec: QuerySpec,
    item: BatchedContributionQuery | None = None,
    *,
    authentic: bool = True,
) -> Sent:
    """A score question alone in a coordinator-signed batch, which authenticates its facts."""
    batch = live.batch([item if item is not None else live.item(spec)])
    logged = {"query_id": spec.query_id, "purpose": spec.purpose_id} if authentic else {}
    return Sent(CONTRIBUTE_BATCH, _batch_request(batch), logged, batch=batch)


def _whole(batch: Envelope, caller: str = "coordinator") -> Sent:
    """A batch refused whole: nothing it carries may reach the log."""
    return Sent(CONTRIBUTE_BATCH, _batch_request(batch), {}, caller=caller, batch=batch)


def _stats_request(queries: list[Envelope]) -> bytes:
    items = [HistogramItem(query=query) for query in queries]
    return bytes(HistogramBatchRequest(items=items).SerializeToString())


def _stats(
    query: Envelope, spec: StatisticsSpec | None = None, caller: str = "coordinator"
) -> Sent:
    """A statistics question alone in a request; `spec` if the coordinator's signature
    authenticates its facts."""
    logged = {"query_id": spec.query_id, "release": spec.release} if spec is not None else {}
    return Sent(HISTOGRAM_BATCH, _stats_request([query]), logged, caller)


def _fresh(live: LiveFederation) -> QuerySpec:
    return live.spec(live.signed_token())


# --- score batches refused as a whole -----------------------------------------------------


async def batch_unsigned(live: LiveFederation) -> Sent:
    batch = live.batch([live.item(_fresh(live))])
    batch.signature = b""
    return _whole(batch)


async def batch_signed_by_a_relying_party(live: LiveFederation) -> Sent:
    return _whole(live.batch([live.item(_fresh(live))], signer=live.parties["ptt"]))


async def batch_sent_and_signed_by_a_relying_party(live: LiveFederation) -> Sent:
    """The wrong caller: PTT over its own mutual-TLS identity, with its own signature."""
    batch = live.batch([live.item(_fresh(live))], signer=live.parties["ptt"])
    return _whole(batch, caller="ptt")


async def batch_of_another_payload_type(live: LiveFederation) -> Sent:
    genuine = live.batch([live.item(_fresh(live))])
    return _whole(
        sign_bytes("fedscore.v1.ScoreQuery", genuine.payload, live.coordinator.signing_key)
    )


async def batch_with_a_bad_signature(live: LiveFederation) -> Sent:
    batch = live.batch([live.item(_fresh(live))])
    batch.payload = batch.payload[:-1] + bytes([batch.payload[-1] ^ 1])
    return _whole(batch)


async def batch_signed_over_bytes_that_are_no_batch(live: LiveFederation) -> Sent:
    payload_type = "fedscore.v1.ContributionBatch"
    return _whole(sign_bytes(payload_type, b"\xff\xff", live.coordinator.signing_key))


async def batch_for_other_agencies(live: LiveFederation) -> Sent:
    return _whole(live.batch([live.item(_fresh(live))], agencies=["dsd", "chuangpao"]))


async def batch_too_large(live: LiveFederation) -> Sent:
    one = live.item(_fresh(live))
    return _whole(live.batch([one] * (MAX_BATCH_QUERIES + 1)))


async def malformed_batch_request(live: LiveFederation) -> Sent:
    return Sent(CONTRIBUTE_BATCH, b"\xff\xff\xff", {})


async def oversized_batch_request(live: LiveFederation) -> Sent:
    batch = live.batch([live.item(_fresh(live))])
    batch.payload += b"\x00" * (BATCH_MESSAGE_BYTES + 1)
    return _whole(batch)


# --- score questions refused as items -----------------------------------------------------


async def spec_that_does_not_parse(live: LiveFederation) -> Sent:
    garbage = b"\xff\xff"
    item = BatchedContributionQuery(spec=garbage, log_promise=live.promise(garbage))
    return _item(live, _fresh(live), item, authentic=False)


async def spec_without_a_query_id(live: LiveFederation) -> Sent:
    return _item(live, live.spec(live.signed_token(), query_id=""), authentic=False)


async def unknown_policy(live: LiveFederation) -> Sent:
    return _item(live, live.spec(live.signed_token(), policy_hash=OTHER_POLICY))


async def expired_query(live: LiveFederation) -> Sent:
    now = int(time.time())
    return _item(live, live.spec(live.signed_token(), issued_at=now - 120, expires_at=now - 60))


async def query_from_the_future(live: LiveFederation) -> Sent:
    now = int(time.time())
    return _item(live, live.spec(live.signed_token(), issued_at=now + 600, expires_at=now + 660))


async def promise_for_another_query(live: LiveFederation) -> Sent:
    spec = _fresh(live)
    return _item(live, spec, live.item(spec, live.promise(b"a different spec")))


async def promise_of_another_log(live: LiveFederation) -> Sent:
    """Signed with the batch, but naming a log other than the coordinator's."""
    spec = _fresh(live)
    return _item(live, spec, live.item(spec, live.promise(spec_bytes(spec), "another-log")))


async def spec_naming_another_coordinator(live: LiveFederation) -> Sent:
    return _item(live, live.spec(live.signed_token(), coordinator="another-coordinator"))


async def missing_promise(live: LiveFederation) -> Sent:
    spec = _fresh(live)
    return _item(live, spec, BatchedContributionQuery(spec=spec_bytes(spec)))


async def expired_token(live: LiveFederation) -> Sent:
    now = int(time.time())
    token = live.signed_token(not_before=now - 2 * DAY, not_after=now - DAY)
    return _item(live, live.spec(token))


async def token_not_from_the_registry(live: LiveFederation) -> Sent:
    token = live.signed_token()
    forged = sign_bytes(token.payload_type, token.payload, live.coordinator.signing_key)
    return _item(live, live.spec(forged))


async def revoked_token(live: LiveFederation) -> Sent:
    """Granted and revoked through the real registry, which pushes the notice to the node."""
    token = await live.grant(ALICE)
    token_id = ConsentToken.FromString(token.payload).token_id
    await client.revoke(live.parties["citizen-portal"], ALICE, token_id)
    received = [e for e in live.log_entries(AGENCY) if e.kind == "revocation_received"]
    assert received and received[-1].fields["token_id"] == token_id
    return _item(live, live.spec(token))


async def token_for_another_purpose(live: LiveFederation) -> Sent:
    token = live.signed_token(purpose_id="self-view", relying_party="citizen-portal")
    return _item(live, live.spec(token))


async def token_under_another_policy(live: LiveFederation) -> Sent:
    return _item(live, live.spec(live.signed_token(policy_hash=OTHER_POLICY)))


async def token_not_naming_this_agency(live: LiveFederation) -> Sent:
    return _item(live, live.spec(live.signed_token(agencies=["dsd", "chuangpao"])))


async def token_without_this_agencys_domain(live: LiveFederation) -> Sent:
    # TRC records only health indicators; the citizen consented to learning only.
    return _item(live, live.spec(live.signed_token(domains=["learning"])))


async def token_carrying_another_tokens_sealed_subject(live: LiveFederation) -> Sent:
    """The node opens only its blob inside the registry-signed token, bound to that token."""
    other = ConsentToken.FromString(live.signed_token().payload)
    token = live.signed_token(sealed_subjects=list(other.sealed_subjects))
    return _item(live, live.spec(token))


async def participant_subset(live: LiveFederation) -> Sent:
    return _item(live, live.spec(live.signed_token(), participants=["trc", "dsd"]))


async def participant_listed_twice(live: LiveFederation) -> Sent:
    participants = ["trc", "dsd", "chuangpao", "dsd"]
    return _item(live, live.spec(live.signed_token(), participants=participants))


async def year_without_scores(live: LiveFederation) -> Sent:
    token = live.signed_token()
    return _item(live, live.spec(token, request=live.request(token, year=-5), year=-5))


async def year_not_asked_by_the_relying_party(live: LiveFederation) -> Sent:
    """The relying party asked about this year; the coordinator asks the node about last year."""
    spec = _fresh(live)
    spec.year -= 1
    return _item(live, spec)


async def year_beyond_the_purpose(live: LiveFederation) -> Sent:
    """PTT may ask about this year and last year, not two years back."""
    token = live.signed_token()
    year = live.coordinator.policy.current_year(time.time()) - 2
    return _item(live, live.spec(token, request=live.request(token, year=year), year=year))


async def no_relying_party_request(live: LiveFederation) -> Sent:
    spec = _fresh(live)
    spec.ClearField("request")
    return _item(live, spec)


async def request_signed_by_the_coordinator(live: LiveFederation) -> Sent:
    """The coordinator writes a relying party's request itself: its key is not a party's."""
    token = live.signed_token()
    return _item(live, live.spec(token, request=live.request(token, signer=live.coordinator)))


async def request_signed_by_another_relying_party(live: LiveFederation) -> Sent:
    token = live.signed_token()
    forged = live.request(token, signer=live.parties["citizen-portal"])
    return _item(live, live.spec(token, request=forged))


async def request_by_a_party_the_token_was_not_granted_to(live: LiveFederation) -> Sent:
    token = live.signed_token()
    request = live.request(token, relying_party="citizen-portal")
    return _item(live, live.spec(token, request=request))


async def request_for_another_purpose(live: LiveFederation) -> Sent:
    token = live.signed_token()
    return _item(live, live.spec(token, request=live.request(token, purpose_id="self-view")))


async def stale_request(live: LiveFederation) -> Sent:
    token = live.signed_token()
    stale = live.request(token, issued_at=int(time.time()) - 3600)
    return _item(live, live.spec(token, request=stale))


async def replayed_query(live: LiveFederation) -> Sent:
    spec = _fresh(live)
    await live.contribute(AGENCY, spec)  # answered once
    return _item(live, spec)


async def request_served_twice(live: LiveFederation) -> Sent:
    """One signed request, one query: a second query id with the same request is refused."""
    token = live.signed_token()
    request = live.request(token)
    await live.contribute(AGENCY, live.spec(token, request=request))
    return _item(live, live.spec(token, request=request))


async def token_used_up_at_this_node(live: LiveFederation) -> Sent:
    """The token allows one use; the node counts it itself, whatever the coordinator says."""
    token = live.signed_token(max_uses=1)
    await live.contribute(AGENCY, live.spec(token))
    return _item(live, live.spec(token))


async def a_histogram_spec_on_the_score_path(live: LiveFederation) -> Sent:
    return _item(live, live.spec(live.signed_token(), kind=QUESTION_KIND_HISTOGRAM))


# --- statistics questions -----------------------------------------------------------------


def _stats_query(live: LiveFederation, spec: StatisticsSpec, **options: Any) -> Envelope:
    return live.stats_query(spec, AGENCY, **options)


async def stats_unsigned(live: LiveFederation) -> Sent:
    query = _stats_query(live, live.stats_spec())
    query.signature = b""
    return _stats(query)


async def stats_signed_by_a_relying_party(live: LiveFederation) -> Sent:
    return _stats(_stats_query(live, live.stats_spec(), signer=live.parties["ptt"]))


async def stats_sent_and_signed_by_a_relying_party(live: LiveFederation) -> Sent:
    """The wrong caller: PTT over its own mutual-TLS identity, with its own signature."""
    query = _stats_query(live, live.stats_spec(), signer=live.parties["ptt"])
    return _stats(query, caller="ptt")


async def stats_of_another_payload_type(live: LiveFederation) -> Sent:
    genuine = _stats_query(live, live.stats_spec())
    payload_type = "fedscore.v1.ContributionBatch"
    return _stats(sign_bytes(payload_type, genuine.payload, live.coordinator.signing_key))


async def stats_with_a_bad_signature(live: LiveFederation) -> Sent:
    query = _stats_query(live, live.stats_spec())
    query.payload = query.payload[:-1] + bytes([query.payload[-1] ^ 1])
    return _stats(query)


async def stats_signed_over_bytes_that_are_no_query(live: LiveFederation) -> Sent:
    payload_type = "fedscore.v1.StatisticsQuery"
    return _stats(sign_bytes(payload_type, b"\xff\xff", live.coordinator.signing_key))


async def stats_for_another_agency(live: LiveFederation) -> Sent:
    return _stats(live.stats_query(live.stats_spec(), "dsd"))


async def stats_spec_that_does_not_parse(live: LiveFederation) -> Sent:
    garbage = b"\xff\xff"
    query = StatisticsQuery(
        spec=garbage, agency_id=AGENCY, log_promise=live.signed_promise(garbage)
    )
    return _stats(sign_message(query, live.coordinator.signing_key))


async def stats_spec_without_a_query_id(live: LiveFederation) -> Sent:
    return _stats(_stats_query(live, live.stats_spec(query_id="")))


async def a_score_spec_on_the_histogram_path(live: LiveFederation) -> Sent:
    spec = live.stats_spec(kind=QUESTION_KIND_SCORE)
    return _stats(_stats_query(live, spec), spec)


async def stats_unknown_policy(live: LiveFederation) -> Sent:
    spec = live.stats_spec(policy_hash=OTHER_POLICY)
    return _stats(_stats_query(live, spec), spec)


async def stats_expired(live: LiveFederation) -> Sent:
    now = int(time.time())
    spec = live.stats_spec(issued_at=now - 120, expires_at=now - 60)
    return _stats(_stats_query(live, spec), spec)


async def stats_from_the_future(live: LiveFederation) -> Sent:
    now = int(time.time())
    spec = live.stats_spec(issued_at=now + 600, expires_at=now + 660)
    return _stats(_stats_query(live, spec), spec)


async def stats_promise_for_another_query(live: LiveFederation) -> Sent:
    spec = live.stats_spec()
    promise = live.signed_promise(b"another spec")
    return _stats(_stats_query(live, spec, promise=promise), spec)


async def stats_promise_signed_by_a_relying_party(live: LiveFederation) -> Sent:
    spec = live.stats_spec()
    promise = live.signed_promise(spec_bytes(spec), signer=live.parties["ptt"])
    return _stats(_stats_query(live, spec, promise=promise), spec)


async def stats_promise_of_another_log(live: LiveFederation) -> Sent:
    spec = live.stats_spec()
    promise = sign_message(
        live.promise(spec_bytes(spec), "another-log"), live.coordinator.signing_key
    )
    return _stats(_stats_query(live, spec, promise=promise), spec)


async def stats_missing_promise(live: LiveFederation) -> Sent:
    spec = live.stats_spec()
    return _stats(_stats_query(live, spec, promise=Envelope()), spec)


async def stats_unknown_release(live: LiveFederation) -> Sent:
    spec = live.stats_spec(release="salaries-by-name")
    return _stats(_stats_query(live, spec), spec)


async def stats_release_nodes_do_not_compute(live: LiveFederation) -> Sent:
    spec = live.stats_spec(release="score-queries-by-purpose-and-month", contribution_bound=12)
    return _stats(_stats_query(live, spec), spec)


async def stats_larger_contribution_bound(live: LiveFederation) -> Sent:
    spec = live.stats_spec(contribution_bound=50)
    return _stats(_stats_query(live, spec), spec)


async def stats_smaller_contribution_bound(live: LiveFederation) -> Sent:
    spec = live.stats_spec(contribution_bound=1)
    return _stats(_stats_query(live, spec), spec)


async def stats_shared_with_no_helper(live: LiveFederation) -> Sent:
    spec = live.stats_spec(helper="")
    return _stats(_stats_query(live, spec), spec)


async def stats_shared_with_the_coordinator_itself(live: LiveFederation) -> Sent:
    """The helper's shares sealed to the coordinator would hand it both (docs/adr/0019)."""
    spec = live.stats_spec(helper="coordinator")
    return _stats(_stats_query(live, spec), spec)


async def stats_participant_subset(live: LiveFederation) -> Sent:
    spec = live.stats_spec(participants=["trc", "dsd"])
    return _stats(_stats_query(live, spec), spec)


async def stats_participants_out_of_policy_order(live: LiveFederation) -> Sent:
    spec = live.stats_spec()
    spec.participants.reverse()
    return _stats(_stats_query(live, spec), spec)


async def stats_year_zero(live: LiveFederation) -> Sent:
    spec = live.stats_spec(year=0)
    return _stats(_stats_query(live, spec), spec)


async def stats_year_not_begun(live: LiveFederation) -> Sent:
    spec = live.stats_spec(year=live.coordinator.policy.current_year(time.time()) + 1)
    return _stats(_stats_query(live, spec), spec)


async def stats_replayed_query(live: LiveFederation) -> Sent:
    spec = live.stats_spec()
    await live.histogram(AGENCY, _stats_query(live, spec))  # answered (and paid for) once
    return _stats(_stats_query(live, spec), spec)


async def stats_budget_exhausted(live: LiveFederation) -> Sent:
    """Last year's budget spent by answered histograms, as a coordinator that never releases
    would spend it; one more is refused before any record is counted."""
    year = live.coordinator.policy.current_year(time.time()) - 1
    for _ in range(100):
        try:
            await live.histogram(AGENCY, _stats_query(live, live.stats_spec(year=year)))
        except FedscoreError as error:
            assert error.reason == "BUDGET_EXHAUSTED"
            break
    else:
        raise AssertionError("the budget never ran out")
    spec = live.stats_spec(year=year)
    return _stats(_stats_query(live, spec), spec)


async def stats_malformed_request(live: LiveFederation) -> Sent:
    return Sent(HISTOGRAM_BATCH, b"\x0a\xff\xff", {})


async def stats_request_with_too_many_items(live: LiveFederation) -> Sent:
    query = _stats_query(live, live.stats_spec())
    return Sent(HISTOGRAM_BATCH, _stats_request([query] * (MAX_HISTOGRAM_ITEMS + 1)), {})


async def stats_oversized_request(live: LiveFederation) -> Sent:
    query = _stats_query(live, live.stats_spec())
    query.payload += b"\x00" * (MAX_MESSAGE_BYTES + 1)
    return _stats(query)


@dataclass(frozen=True)
class Row:
    prepare: Prepare
    code: Code
    reason: str
    by: str = ITEM  # CALL: refused as a whole call (a gRPC status); ITEM: in the answer batch

    @property
    def name(self) -> str:
        return self.prepare.__name__


S = Code
SCORE_ROWS = [
    Row(batch_unsigned, S.UNAUTHENTICATED, "UNSIGNED", CALL),
    Row(batch_signed_by_a_relying_party, S.UNAUTHENTICATED, "UNKNOWN_SIGNER", CALL),
    Row(batch_sent_and_signed_by_a_relying_party, S.UNAUTHENTICATED, "UNKNOWN_SIGNER", CALL),
    Row(batch_of_another_payload_type, S.UNAUTHENTICATED, "WRONG_PAYLOAD_TYPE", CALL),
    Row(batch_with_a_bad_signature, S.UNAUTHENTICATED, "BAD_SIGNATURE", CALL),
    Row(batch_signed_over_bytes_that_are_no_batch, S.INVALID_ARGUMENT, "MALFORMED_PAYLOAD", CALL),
    Row(batch_for_other_agencies, S.PERMISSION_DENIED, "WRONG_AGENCY", CALL),
    Row(batch_too_large, S.INVALID_ARGUMENT, "BATCH_TOO_LARGE", CALL),
    Row(malformed_batch_request, S.INVALID_ARGUMENT, "MALFORMED_MESSAGE", CALL),
    Row(oversized_batch_request, S.RESOURCE_EXHAUSTED, "MESSAGE_TOO_LARGE", CALL),
    Row(spec_that_does_not_parse, S.INVALID_ARGUMENT, "MALFORMED_MESSAGE"),
    Row(spec_without_a_query_id, S.INVALID_ARGUMENT, "MALFORMED_MESSAGE"),
    Row(a_histogram_spec_on_the_score_path, S.PERMISSION_DENIED, "QUESTION_KIND_MISMATCH"),
    Row(unknown_policy, S.FAILED_PRECONDITION, "UNKNOWN_POLICY"),
    Row(expired_query, S.PERMISSION_DENIED, "QUERY_EXPIRED"),
    Row(query_from_the_future, S.PERMISSION_DENIED, "QUERY_EXPIRED"),
    Row(promise_for_another_query, S.UNAUTHENTICATED, "BAD_LOG_PROMISE"),
    Row(promise_of_another_log, S.UNAUTHENTICATED, "BAD_LOG_PROMISE"),
    Row(spec_naming_another_coordinator, S.UNAUTHENTICATED, "BAD_LOG_PROMISE"),
    Row(missing_promise, S.UNAUTHENTICATED, "BAD_LOG_PROMISE"),
    Row(no_relying_party_request, S.UNAUTHENTICATED, "NO_RELYING_PARTY_REQUEST"),
    Row(request_signed_by_the_coordinator, S.UNAUTHENTICATED, "BAD_REQUEST_SIGNATURE"),
    Row(request_signed_by_another_relying_party, S.UNAUTHENTICATED, "SIGNER_MISMATCH"),
    Row(request_for_another_purpose, S.PERMISSION_DENIED, "PURPOSE_MISMATCH"),
    Row(stale_request, S.PERMISSION_DENIED, "REQUEST_EXPIRED"),
    Row(expired_token, S.PERMISSION_DENIED, "TOKEN_EXPIRED"),
    Row(token_not_from_the_registry, S.UNAUTHENTICATED, "UNKNOWN_SIGNER"),
    Row(revoked_token, S.PERMISSION_DENIED, "CONSENT_REVOKED"),
    Row(token_for_another_purpose, S.PERMISSION_DENIED, "PURPOSE_MISMATCH"),
    Row(
        request_by_a_party_the_token_was_not_granted_to,
        S.PERMISSION_DENIED,
        "RELYING_PARTY_MISMATCH",
    ),
    Row(token_under_another_policy, S.PERMISSION_DENIED, "POLICY_MISMATCH"),
    Row(token_not_naming_this_agency, S.PERMISSION_DENIED, "AGENCY_NOT_IN_TOKEN"),
    Row(token_without_this_agencys_domain, S.PERMISSION_DENIED, "DOMAIN_NOT_IN_TOKEN"),
    Row(participant_subset, S.PERMISSION_DENIED, "PARTICIPANT_SET_MISMATCH"),
    Row(participant_listed_twice, S.PERMISSION_DENIED, "PARTICIPANT_SET_MISMATCH"),
    Row(year_without_scores, S.INVALID_ARGUMENT, "BAD_YEAR"),
    Row(year_not_asked_by_the_relying_party, S.PERMISSION_DENIED, "YEAR_MISMATCH"),
    Row(year_beyond_the_purpose, S.PERMISSION_DENIED, "YEAR_NOT_ALLOWED"),
    Row(replayed_query, S.ALREADY_EXISTS, "REPLAYED_QUERY"),
    Row(request_served_twice, S.ALREADY_EXISTS, "REPLAYED_NONCE"),
    Row(token_used_up_at_this_node, S.RESOURCE_EXHAUSTED, "USE_LIMIT_REACHED"),
    # Refused after its claims were taken, when the blob will not open: they are given back.
    Row(token_carrying_another_tokens_sealed_subject, S.PERMISSION_DENIED, "SEAL_MISMATCH"),
]
STATISTICS_ROWS = [
    Row(stats_unsigned, S.UNAUTHENTICATED, "UNSIGNED"),
    Row(stats_signed_by_a_relying_party, S.UNAUTHENTICATED, "UNKNOWN_SIGNER"),
    Row(stats_sent_and_signed_by_a_relying_party, S.UNAUTHENTICATED, "UNKNOWN_SIGNER"),
    Row(stats_of_another_payload_type, S.UNAUTHENTICATED, "WRONG_PAYLOAD_TYPE"),
    Row(stats_with_a_bad_signature, S.UNAUTHENTICATED, "BAD_SIGNATURE"),
    Row(stats_signed_over_bytes_that_are_no_query, S.INVALID_ARGUMENT, "MALFORMED_PAYLOAD"),
    Row(stats_for_another_agency, S.PERMISSION_DENIED, "WRONG_AGENCY"),
    Row(stats_spec_that_does_not_parse, S.INVALID_ARGUMENT, "MALFORMED_MESSAGE"),
    Row(stats_spec_without_a_query_id, S.INVALID_ARGUMENT, "MALFORMED_MESSAGE"),
    Row(a_score_spec_on_the_histogram_path, S.PERMISSION_DENIED, "QUESTION_KIND_MISMATCH"),
    Row(stats_unknown_policy, S.FAILED_PRECONDITION, "UNKNOWN_POLICY"),
    Row(stats_expired, S.PERMISSION_DENIED, "QUERY_EXPIRED"),
    Row(stats_from_the_future, S.PERMISSION_DENIED, "QUERY_EXPIRED"),
    Row(stats_promise_for_another_query, S.UNAUTHENTICATED, "BAD_LOG_PROMISE"),
    Row(stats_promise_signed_by_a_relying_party, S.UNAUTHENTICATED, "BAD_LOG_PROMISE"),
    Row(stats_promise_of_another_log, S.UNAUTHENTICATED, "BAD_LOG_PROMISE"),
    Row(stats_missing_promise, S.UNAUTHENTICATED, "BAD_LOG_PROMISE"),
    Row(stats_unknown_release, S.PERMISSION_DENIED, "UNKNOWN_RELEASE"),
    Row(stats_release_nodes_do_not_compute, S.PERMISSION_DENIED, "UNKNOWN_RELEASE"),
    Row(
        stats_larger_contribution_bound,
        S.PERMISSION_DENIED,
        "CONTRIBUTION_BOUND_NOT_ALLOWED",
    ),
    Row(
        stats_smaller_contribution_bound,
        S.PERMISSION_DENIED,
        "CONTRIBUTION_BOUND_NOT_ALLOWED",
    ),
    Row(stats_shared_with_no_helper, S.PERMISSION_DENIED, "HELPER_NOT_LISTED"),
    Row(stats_shared_with_the_coordinator_itself, S.PERMISSION_DENIED, "HELPER_NOT_LISTED"),
    Row(stats_participant_subset, S.PERMISSION_DENIED, "PARTICIPANT_SET_MISMATCH"),
    Row(
        stats_participants_out_of_policy_order,
        S.PERMISSION_DENIED,
        "PARTICIPANT_SET_MISMATCH",
    ),
    Row(stats_year_zero, S.INVALID_ARGUMENT, "BAD_YEAR"),
    Row(stats_year_not_begun, S.INVALID_ARGUMENT, "BAD_YEAR"),
    Row(stats_replayed_query, S.ALREADY_EXISTS, "REPLAYED_QUERY"),
    Row(stats_budget_exhausted, S.RESOURCE_EXHAUSTED, "BUDGET_EXHAUSTED"),
    Row(stats_malformed_request, S.INVALID_ARGUMENT, "MALFORMED_MESSAGE", CALL),
    Row(stats_oversized_request, S.RESOURCE_EXHAUSTED, "MESSAGE_TOO_LARGE", CALL),
    Row(stats_request_with_too_many_items, S.INVALID_ARGUMENT, "BATCH_TOO_LARGE", CALL),
]
ROWS = SCORE_ROWS + STATISTICS_ROWS


async def _refusal(live: LiveFederation, sent: Sent, by: str) -> FedscoreError:
    """Send the bytes as they are (no serializer) as `sent.caller`; the node's refusal."""
    caller = live.parties[sent.caller]
    endpoint = caller.trust.participant(AGENCY).endpoint
    async with secure_channel(endpoint, caller.tls, server_name=AGENCY) as channel:
        try:
            raw = await channel.unary_unary(sent.method)(sent.raw, timeout=TIMEOUT)
        except grpc.RpcError as exc:
            assert by == CALL, f"refused as a whole call, not as an item: {exc}"
            return error_from_rpc(exc)
    assert by == ITEM, "the node accepted a call it must refuse as a whole"
    refusal: object
    if sent.method == HISTOGRAM_BATCH:
        [stats_outcome] = HistogramBatchResponse.FromString(raw).outcomes
        refusal = live.histogram_outcome(AGENCY, stats_outcome)
    else:
        response = ContributeBatchResponse.FromString(raw)
        [outcome] = live.verified_answers(AGENCY, sent.batch, response).outcomes
        refusal = outcome_of(outcome)
    assert isinstance(refusal, FedscoreError), "the node answered a question it must refuse"
    return refusal


@pytest.mark.parametrize("row", ROWS, ids=lambda row: row.name)
def test_node_refuses(tmp_path: Path, row: Row) -> None:
    root = make_federation(tmp_path)

    async def scenario() -> None:
        async with live_federation(root, [AGENCY]) as live:
            sent = await row.prepare(live)
            stored, log_before = live.stored(AGENCY), live.log_size(AGENCY)
            assert stored.records > 0

            error = await _refusal(live, sent, row.by)

            assert (error.code, error.reason) == (row.code, row.reason), error.message
            new = live.log_entries(AGENCY, log_before)
            assert [(e.kind, e.fields) for e in new] == [
                (sent.refusal_kind, {"reason": row.reason, **sent.logged})
            ]
            assert live.stored(AGENCY) == stored
            assert_clean_log(live.log_entries(AGENCY))

    asyncio.run(scenario())


def test_a_sealed_subject_sent_beside_the_question_is_never_opened(tmp_path: Path) -> None:
    """Anyone can seal any ID to a node's public key, even under the token's own id: a node
    opens only its blob inside the registry-signed token. A batch item has no field for
    another blob; one appended as an unknown field (where the retired `Contribute` carried
    it) is ignored, and the nodes answer about the token's own subject."""
    root = make_federation(tmp_path)

    async def scenario() -> None:
        async with live_federation(root) as live:
            token = live.signed_token(BOB)  # Bob holds no records anywhere
            token_id = ConsentToken.FromString(token.payload).token_id
            spec = live.spec(token)
            answers: list[ContributionAnswer] = []
            for agency in live.agencies:
                alice = seal_subject(
                    token_id, agency, ALICE, live.registry.trust.box_public(agency)
                )
                # Field 3 as bytes, encoded by a message that has one (LogPromise.leaf_hash).
                smuggled = LogPromise(leaf_hash=alice).SerializeToString()
                item = live.item(spec).SerializeToString() + smuggled
                batch = live.batch([BatchedContributionQuery.FromString(item)])
                assert alice in batch.payload  # signed with the batch, sent to the node
                [outcome] = (await live.contribute_batch(agency, batch)).outcomes
                answer = outcome_of(outcome)
                assert isinstance(answer, ContributionAnswer), answer
                answers.append(answer)
            total = sum(answer.masked_value for answer in answers) % MODULUS
            assert total == 0 != sum(EXPECTED.values())

    asyncio.run(scenario())


def test_a_revocation_notice_not_signed_by_the_registry_is_refused(tmp_path: Path) -> None:
    root = make_federation(tmp_path)

    async def scenario() -> None:
        async with live_federation(root, [AGENCY]) as live:
            token = ConsentToken.FromString(live.signed_token().payload)
            notice = RevocationNotice(
                issuer="consent-registry",
                token_id=token.token_id,
                status_index=token.status_index,
                revoked_at=int(time.time()),
            )
            forged = sign_message(notice, live.coordinator.signing_key)
            log_before = live.log_size(AGENCY)
            with pytest.raises(FedscoreError) as refused:
                await _notify(live, forged)
            assert (refused.value.code, refused.value.reason) == (
                S.UNAUTHENTICATED,
                "UNKNOWN_SIGNER",
            )
            new = live.log_entries(AGENCY, log_before)
            assert [(e.kind, e.fields) for e in new] == [
                ("revocation_refused", {"reason": "UNKNOWN_SIGNER"})
            ]
            # The forged notice revoked nothing: a query with that token is answered.
            await live.contribute(
                AGENCY, live.spec(live.signed_token(status_index=token.status_index))
            )

            genuine = sign_message(notice, live.registry.signing_key)
            await _notify(live, genuine)
            revoked = live.spec(live.signed_token(status_index=token.status_index))
            with pytest.raises(FedscoreError) as after:
                await live.contribute(AGENCY, revoked)
            assert after.value.reason == "CONSENT_REVOKED"

    asyncio.run(scenario())


async def _notify(live: LiveFederation, notice: Envelope) -> Any:
    return await call_unary(
        live.channels[AGENCY],
        NOTIFY_REVOCATION,
        NotifyRevocationRequest(notice=notice),
        NotifyRevocationResponse,
        TIMEOUT,
    )
