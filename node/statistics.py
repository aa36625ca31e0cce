"""`fedscore.v1.NodeStatisticsService.HistogramBatch`: an agency node's shared histograms.

A statistics question always travels as an item of a `HistogramBatchRequest` (a lone
question is a batch of one; there is no other way to ask a node for a histogram). A request
that does not parse (MALFORMED_MESSAGE), is larger than `MAX_MESSAGE_BYTES`
(MESSAGE_TOO_LARGE) or holds more than `MAX_HISTOGRAM_ITEMS` items (BATCH_TOO_LARGE) is
refused whole, with a status, and logged once with its reason only. Otherwise every item is
answered or refused on its own, in order: a refused item's outcome is an `ItemRefusal`
carrying the code, reason and message a status would carry (`fedscore.runtime.statuses`).

A statistics question is the same protocol as a score question (`node.question_checks`
holds the steps both pass, called here with a histogram question's values). A node
answers one only when, in this order (each refusal has a reason):
 1. it opens as a `fedscore.protocol.questions.SignedStatisticsQuery` (the envelope
    verifies under the coordinator's keys: UNSIGNED, WRONG_PAYLOAD_TYPE, UNKNOWN_SIGNER,
    BAD_SIGNATURE; it names an agency), is addressed to this agency (WRONG_AGENCY), its
    spec parses (MALFORMED_MESSAGE) and asks a histogram question (QUESTION_KIND_MISMATCH);
 2. it names a policy this node holds (UNKNOWN_POLICY), is fresh (QUERY_EXPIRED), and the
    coordinator's separately signed log promise opens as a `SignedLogPromise` and covers
    exactly these spec bytes (BAD_LOG_PROMISE, whatever is wrong with it);
 3. it names a release of that policy that nodes compute (UNKNOWN_RELEASE), with exactly
    the definition's contribution bound (CONTRIBUTION_BOUND_NOT_ALLOWED), and a helper
    aggregator the registry lists, to seal the helper's shares to (HELPER_NOT_LISTED);
 4. it asks every agency of the policy, in policy order (PARTICIPANT_SET_MISMATCH), for a
    year that has begun (BAD_YEAR), under an unused query id (REPLAYED_QUERY);
 5. the node's own privacy budget can pay for it (BUDGET_EXHAUSTED).
Unlike a score question it carries no relying party's request and no consent token: a
histogram counts everyone, bounded per person, and is paid for with privacy budget.

Invariants:
- No count leaves the node, nor a masked count: each bin's `(count + mask_b) mod 2^64`,
  where `mask_b` is the node's pairwise mask for bin b of the histogram question whose
  hash is the spec's (`node.answer.masked_bins`, docs/adr/0011), is split into two additive
  shares mod 2^64 (`keys.shares.split`), each alone uniformly random: one for the
  coordinator, in the answer, and one for the helper aggregator the spec names, sealed to
  its box key inside a `HelperShare` the node signs (`node.answer.shared_bins`, docs/adr/0019).
  Only the two shares of every agency, added, give the federation-wide sums, so neither
  aggregator alone learns anything, and the two together only the federated counts
  (which the helper noises before anything leaves it).
- Every answer is paid for from the node's OWN privacy-budget ledger (`fedscore.runtime.budget`,
  in its database): the release's epsilon, as OpenDP's privacy map gives it for the policy
  (the same cost the coordinator charges), per dataset and year. A histogram the budget
  cannot pay for is refused (BUDGET_EXHAUSTED) before any record is counted. So a
  coordinator that asks without ever releasing still runs out (docs/adr/0011).
- Each item is its own question: its query id is claimed, its epsilon spent, and
  "statistics_answered" logged in ONE transaction of its own before the answers leave;
  every refused item (and a request refused whole) is logged as one "statistics_refused"
  with its reason and only authenticated facts. No entry holds a count or a masked value.
- The histograms run in a worker thread: a long count never stalls score queries.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import grpc.aio
from google.protobuf.message import Message

from audit.core import kinds
from audit.core.fields import (
    COORDINATOR,
    PROMISE_INDEX,
    PROMISE_LEAF_HASH,
    QUERY_HASH,
    QUERY_ID,
    REASON,
    RELEASE,
    YEAR,
)
from fedscore.errors import FedscoreError, InvalidArgument
from fedscore.protocol.questions import SignedStatisticsQuery
from fedscore.protocol.spec_checks import helper_named, release_asked, verified_promise
from fedscore.runtime.budget import epsilon_of, release_cost_nano
from fedscore.runtime.rpc import Handler, parse_request, peer_common_name
from fedscore.runtime.statuses import item_refusal
from fedscore.v1.envelope_pb2 import Envelope
from fedscore.v1.query_pb2 import QUESTION_KIND_HISTOGRAM, LogPromise
from fedscore.v1.statistics_pb2 import (
    HistogramBatchRequest,
    HistogramBatchResponse,
    HistogramOutcome,
    StatisticsAnswer,
    StatisticsSpec,
)
from keys.envelope import sign_message
from node.answer import shared_bins
from node.histogram import node_histogram
from node.question_checks import (
    NodeTrust,
    RefusalNotes,
    SignedSpec,
    addressed_to,
    check_freshness,
    check_kind,
    check_participants,
    check_promise,
    check_unanswered,
    check_year_range,
    policy_named,
    signed_spec,
)
from node.service import AgencyNode, uncertified_indicators
from node.store import NodeStore
from policies.model import Policy
from policies.releases import participants
from policies.statistics import ReleaseDefinition

SERVICE_NAME = "fedscore.v1.NodeStatisticsService"
# At most this many statistics questions in one request; beyond it the request is refused
# whole (BATCH_TOO_LARGE). The coordinator sends batches of one.
MAX_HISTOGRAM_ITEMS = 16


@dataclass(frozen=True)
class AddressedStatisticsQuery:
    """A statistics query the coordinator signed for this agency, with its parsed spec."""

    question: SignedStatisticsQuery
    signed: SignedSpec[StatisticsSpec]


@dataclass(frozen=True)
class AdmittedStatisticsQuery:
    """A statistics query that passed every check; the node must now answer it."""

    signed: SignedSpec[StatisticsSpec]
    policy: Policy
    definition: ReleaseDefinition
    year: int
    promise: LogPromise  # the coordinator's signed word that it logged this query first
    helper_public: bytes  # the box key of the helper aggregator the spec names

    @property
    def query_id(self) -> str:
        return str(self.signed.spec.query_id)


def authenticate_statistics_query(envelope: Envelope, node: NodeTrust) -> AddressedStatisticsQuery:
    """Step 1: the coordinator signed it, for this agency, and its spec parses."""
    question = SignedStatisticsQuery.verify(envelope, node.coordinator_keyring)
    addressed_to(node.agency_id, [question.query.agency_id])
    spec = signed_spec(question.query.spec, StatisticsSpec, question.signer)
    return AddressedStatisticsQuery(question, spec)


def admit_statistics_query(
    envelope: Envelope, node: NodeTrust, store: NodeStore, now: int, notes: RefusalNotes
) -> AdmittedStatisticsQuery:
    """Run steps 1-4 in order; note authenticated facts as they are learned."""
    authenticated = authenticate_statistics_query(envelope, node)
    signed = authenticated.signed
    spec = signed.spec
    notes.query_id = spec.query_id
    notes.release = spec.release
    check_kind(spec.kind, QUESTION_KIND_HISTOGRAM)
    policy = policy_named(spec.policy_hash, node.policies)
    check_freshness(spec.issued_at, spec.expires_at, now)
    vouched = verified_promise(authenticated.question.query.log_promise, node.coordinator_keyring)
    promise = vouched.promise
    check_promise(promise.origin, promise.query_hash, signed, vouched.signer)
    definition = release_asked(spec, policy)
    helper_public = helper_named(spec.helper, node.trust)
    check_participants(spec.participants, participants(policy), node.agency_id, in_order=True)
    check_year_range(spec.year, policy.current_year(now))
    check_unanswered(store, spec.query_id)
    return AdmittedStatisticsQuery(
        signed, policy, definition, int(spec.year), promise, helper_public
    )


def answer_histogram(node: AgencyNode, envelope: Envelope, notes: RefusalNotes) -> Envelope:
    """Check a statistics query and answer it; raise a FedscoreError to refuse."""
    now = node.now()
    admitted = admit_statistics_query(envelope, node.trust, node.store, now, notes)
    definition = admitted.definition
    cost = release_cost_nano(admitted.policy, definition)
    budget = admitted.policy.statistics_rules.budget(definition.dataset)
    # Read only: a histogram the budget cannot pay for is not even counted.
    node.ledger.check(definition.dataset, admitted.year, budget, cost)
    counts = node_histogram(
        node.store.engine,
        admitted.policy,
        admitted.definition,
        node.agency_id,
        admitted.year,
        uncertified_indicators(admitted.policy, node.agency_id),
    )
    spec = admitted.signed.spec
    shares, helper_share = shared_bins(
        counts,
        node.agency_id,
        node.mask_seeds,
        admitted.signed,
        admitted.helper_public,
        node.share_source,
        node.signing_key,
    )
    answer = StatisticsAnswer(
        query_id=spec.query_id,
        agency_id=node.agency_id,
        coordinator_shares=shares,
        query_hash=admitted.signed.query_hash,
        helper_share=helper_share,
    )
    with node.store.engine.begin() as connection:
        # The claim that decides a replay (step 4 only read): one space of ids with scores.
        node.claims.claim_query_id(connection, admitted.query_id, now)
        # The node's own ledger: spent here whether or not the coordinator ever releases.
        status = node.ledger.spend(
            connection,
            release_id=admitted.query_id,
            release=definition.name,
            dataset=definition.dataset,
            year=admitted.year,
            total_epsilon=budget,
            cost_nano=cost,
            now=now,
        )
        node.log.append(
            connection,
            kinds.STATISTICS_ANSWERED,
            {
                QUERY_ID: admitted.query_id,
                QUERY_HASH: admitted.signed.query_hash.hex(),
                RELEASE: admitted.definition.name,
                YEAR: admitted.year,
                "bins": len(counts),
                "epsilon_charged": epsilon_of(cost),
                "budget_remaining": epsilon_of(status.remaining_nano),
                # Where the coordinator promised it logged the query: the regulator checks.
                COORDINATOR: admitted.promise.origin,
                PROMISE_INDEX: admitted.promise.index,
                PROMISE_LEAF_HASH: admitted.promise.leaf_hash.hex(),
            },
            now=now,
        )
    return sign_message(answer, node.signing_key)


def log_statistics_refusal(
    node: AgencyNode, error: FedscoreError, notes: RefusalNotes, caller: str
) -> None:
    """Write "statistics_refused" with the reason and only what was authenticated.

    Beyond `caller`'s allowance the refusal is counted into its summary instead.
    """
    node.refusals.record(caller, kinds.STATISTICS_REFUSED, {REASON: error.reason}, notes.fields())


def parse_histogram_batch(raw: bytes) -> HistogramBatchRequest:
    """The request, refused whole if it does not parse, is too large or holds too many items."""
    request = parse_request(raw, HistogramBatchRequest)
    if len(request.items) > MAX_HISTOGRAM_ITEMS:
        raise InvalidArgument(
            f"request holds {len(request.items)} statistics questions; at most "
            f"{MAX_HISTOGRAM_ITEMS} are allowed",
            reason="BATCH_TOO_LARGE",
        )
    return request


def answer_histogram_batch(
    node: AgencyNode, request: HistogramBatchRequest, caller: str
) -> HistogramBatchResponse:
    """Answer or refuse each item on its own, in order (each answer in its own transaction)."""
    outcomes: list[HistogramOutcome] = []
    for item in request.items:
        notes = RefusalNotes()
        try:
            outcomes.append(HistogramOutcome(answer=answer_histogram(node, item.query, notes)))
        except FedscoreError as error:
            log_statistics_refusal(node, error, notes, caller)
            outcomes.append(HistogramOutcome(refusal=item_refusal(error)))
    return HistogramBatchResponse(outcomes=outcomes)


def statistics_handlers(node: AgencyNode) -> dict[str, Handler]:
    """The NodeStatisticsService methods, ready for `fedscore.runtime.rpc.start_server`."""

    async def histogram_batch_handler(raw: bytes, context: grpc.aio.ServicerContext) -> Message:
        caller = peer_common_name(context)
        try:
            request = parse_histogram_batch(raw)
        except FedscoreError as error:
            # Refused whole: one entry, with nothing unauthenticated in it.
            log_statistics_refusal(node, error, RefusalNotes(), caller)
            raise
        return await asyncio.to_thread(answer_histogram_batch, node, request, caller)

    return {"HistogramBatch": histogram_batch_handler}
