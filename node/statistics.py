"""`fedscore.v1.NodeStatisticsService`: an agency node's masked histogram for a release.

A node answers a statistics query only when, in this order (each refusal has a reason):
 1. the envelope verifies under the coordinator keyring (UNSIGNED, WRONG_PAYLOAD_TYPE,
    UNKNOWN_SIGNER, BAD_SIGNATURE), is addressed to this agency (WRONG_AGENCY), its spec
    parses (MALFORMED_MESSAGE) and asks a histogram question (QUESTION_KIND_MISMATCH);
 2. it names a policy this node holds (UNKNOWN_POLICY), is fresh (QUERY_EXPIRED), and the
    coordinator's log promise covers exactly these spec bytes (BAD_LOG_PROMISE);
 3. it names a release of that policy that nodes compute (UNKNOWN_RELEASE), with exactly
    the definition's contribution bound (CONTRIBUTION_BOUND_NOT_ALLOWED);
 4. it asks every agency of the policy (PARTICIPANT_SET_MISMATCH), for a year that has
    begun (BAD_YEAR), under an unused query id (REPLAYED_QUERY).

Invariants:
- What leaves the node is one value per bin, `(count + mask_b) mod 2^64`, where `mask_b`
  is the node's pairwise mask for bin b of the histogram question whose hash is the
  spec's (docs/adr/0011): the masks cancel only in the sum over all agencies asked the
  very same spec bytes, so the coordinator learns federation-wide sums alone.
- Every answer is paid for from the node's OWN privacy-budget ledger (`fedscore.runtime.budget`,
  in its database): the release's epsilon, as OpenDP's privacy map gives it for the policy
  (the same cost the coordinator charges), per dataset and year. A histogram the budget
  cannot pay for is refused (BUDGET_EXHAUSTED) before any record is counted. So a
  coordinator that asks without ever releasing still runs out (docs/adr/0011).
- The query id is recorded as seen, the epsilon spent, and "statistics_answered" logged in
  ONE transaction before the answer leaves; every refusal is logged as "statistics_refused" with its
  reason and only authenticated facts. No entry holds a count or a masked value.
- The histogram runs in a worker thread: a long count never stalls score queries.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import grpc.aio
from google.protobuf.message import DecodeError, Message
from sqlalchemy.orm import Session

from fedscore.errors import (
    AlreadyExists,
    FailedPrecondition,
    FedscoreError,
    InvalidArgument,
    PermissionDenied,
    Unauthenticated,
)
from fedscore.noise import histogram_mechanism
from fedscore.runtime.budget import epsilon_of, nano_up
from fedscore.runtime.rpc import Handler, parse_request, peer_common_name
from fedscore.v1.envelope_pb2 import Envelope
from fedscore.v1.query_pb2 import QUESTION_KIND_HISTOGRAM, LogPromise
from fedscore.v1.statistics_pb2 import (
    HistogramRequest,
    HistogramResponse,
    StatisticsAnswer,
    StatisticsQuery,
    StatisticsSpec,
)
from keys.envelope import sign_message, verify_message
from keys.keyring import Keyring
from keys.masks import Question, QuestionKind, bin_masks, masked_answer
from node.checks import CLOCK_SKEW_SECONDS, MIN_YEAR, NodeTrust
from node.histogram import node_histogram
from node.service import AgencyNode, uncertified_indicators
from policies.model import Policy
from policies.releases import l1_sensitivity, participants
from policies.statistics import ReleaseDefinition

_log = logging.getLogger(__name__)

SERVICE_NAME = "fedscore.v1.NodeStatisticsService"


@dataclass
class StatisticsNotes:
    """Authenticated facts about a statistics query so far, for "statistics_refused"."""

    query_id: str = ""
    release: str = ""

    def fields(self) -> dict[str, str]:
        known = {"query_id": self.query_id, "release": self.release}
        return {name: value for name, value in known.items() if value}


@dataclass(frozen=True)
class SignedStatisticsQuery:
    """A StatisticsQuery the coordinator signed for this agency, with its parsed spec."""

    query: StatisticsQuery
    spec: StatisticsSpec
    query_hash: bytes  # SHA-256 of the exact spec bytes the coordinator logged
    coordinator: str


@dataclass(frozen=True)
class AdmittedStatisticsQuery:
    """A statistics query that passed every check; the node must now answer it."""

    signed: SignedStatisticsQuery
    policy: Policy
    definition: ReleaseDefinition
    year: int
    promise: LogPromise  # the coordinator's signed word that it logged this query first

    @property
    def query_id(self) -> str:
        return str(self.signed.spec.query_id)


def authenticate_statistics_query(
    envelope: Envelope, coordinator_keyring: Keyring, agency_id: str
) -> SignedStatisticsQuery:
    """Step 1: the coordinator signed it, for this agency, and its spec parses."""
    verified = verify_message(envelope, StatisticsQuery, coordinator_keyring)
    query = verified.payload
    if query.agency_id != agency_id:
        raise PermissionDenied(
            f"query is addressed to agency {query.agency_id!r}, this is {agency_id!r}",
            reason="WRONG_AGENCY",
        )
    spec = StatisticsSpec()
    try:
        spec.ParseFromString(query.spec)
    except DecodeError as exc:
        raise InvalidArgument("spec is not a valid StatisticsSpec", "MALFORMED_MESSAGE") from exc
    if not spec.query_id:
        raise InvalidArgument("statistics spec has no query id", reason="MALFORMED_MESSAGE")
    return SignedStatisticsQuery(
        query=query,
        spec=spec,
        query_hash=hashlib.sha256(query.spec).digest(),
        coordinator=verified.signer,
    )


def check_statistics_promise(signed: SignedStatisticsQuery, keyring: Keyring) -> LogPromise:
    """Step 2: the coordinator logged exactly these spec bytes before asking."""
    envelope = signed.query.log_promise
    if not envelope.payload and not envelope.signature:
        raise Unauthenticated("query carries no log promise", reason="BAD_LOG_PROMISE")
    try:
        verified = verify_message(envelope, LogPromise, keyring)
    except (Unauthenticated, InvalidArgument) as exc:
        raise Unauthenticated(
            f"log promise does not verify ({exc.reason})", reason="BAD_LOG_PROMISE"
        ) from exc
    promise = verified.payload
    if promise.query_hash != signed.query_hash:
        raise Unauthenticated("log promise is for another query", reason="BAD_LOG_PROMISE")
    if not promise.origin == signed.spec.coordinator == signed.coordinator == verified.signer:
        raise Unauthenticated(
            "log promise, spec and signature name different coordinators", "BAD_LOG_PROMISE"
        )
    return promise


def check_statistics_freshness(spec: StatisticsSpec, now: int) -> None:
    if now > spec.expires_at or spec.issued_at > now + CLOCK_SKEW_SECONDS:
        raise PermissionDenied(
            f"query valid from {spec.issued_at} to {spec.expires_at}, now is {now}",
            reason="QUERY_EXPIRED",
        )


def release_asked(spec: StatisticsSpec, policy: Policy) -> ReleaseDefinition:
    """Step 3: a release nodes compute, asked with exactly the bound the policy sets."""
    definition = policy.statistics_rules.release(spec.release)
    if not definition.node_side:
        raise PermissionDenied(
            f"release {spec.release!r} is not computed by agency nodes", "UNKNOWN_RELEASE"
        )
    if spec.contribution_bound != definition.contribution_bound:
        raise PermissionDenied(
            f"release {definition.name!r} bounds each person to "
            f"{definition.contribution_bound}, the query asks for {spec.contribution_bound}",
            reason="CONTRIBUTION_BOUND_NOT_ALLOWED",
        )
    return definition


def check_statistics_participants(spec: StatisticsSpec, policy: Policy, agency_id: str) -> None:
    """Step 4: every agency of the policy, in policy order; a subset would allow differencing."""
    if tuple(spec.participants) != participants(policy) or agency_id not in spec.participants:
        raise PermissionDenied(
            f"query lists {list(spec.participants)}, statistics ask every agency: "
            f"{list(participants(policy))}",
            reason="PARTICIPANT_SET_MISMATCH",
        )


def admit_statistics_query(
    envelope: Envelope,
    node: NodeTrust,
    seen: Callable[[str], bool],
    now: int,
    notes: StatisticsNotes,
) -> AdmittedStatisticsQuery:
    """Run steps 1-4 in order; note authenticated facts as they are learned."""
    signed = authenticate_statistics_query(envelope, node.coordinator_keyring, node.agency_id)
    spec = signed.spec
    notes.query_id = spec.query_id
    notes.release = spec.release
    if spec.kind != QUESTION_KIND_HISTOGRAM:
        raise PermissionDenied(
            "the spec does not ask a histogram question", reason="QUESTION_KIND_MISMATCH"
        )
    try:
        policy = node.policies[spec.policy_hash]
    except KeyError:
        raise FailedPrecondition(
            f"query names policy {spec.policy_hash!r}, which this node does not hold",
            reason="UNKNOWN_POLICY",
        ) from None
    check_statistics_freshness(spec, now)
    promise = check_statistics_promise(signed, node.coordinator_keyring)
    definition = release_asked(spec, policy)
    check_statistics_participants(spec, policy, node.agency_id)
    if not MIN_YEAR <= spec.year <= policy.current_year(now):
        raise InvalidArgument(
            f"year {spec.year} is not between {MIN_YEAR} and the current year", reason="BAD_YEAR"
        )
    if seen(spec.query_id):
        raise AlreadyExists(f"query {spec.query_id!r} was already answered", "REPLAYED_QUERY")
    return AdmittedStatisticsQuery(signed, policy, definition, int(spec.year), promise)


def masked_bins(
    counts: list[int],
    agency_id: str,
    seeds: Mapping[str, bytes],
    spec: StatisticsSpec,
    query_hash: bytes,
) -> list[int]:
    """Each bin's count under its own pairwise mask, bound to the spec's hash and the bin."""
    question = Question(QuestionKind.HISTOGRAM_BIN, query_hash)
    masks = bin_masks(agency_id, seeds, spec.participants, question, len(counts))
    return [masked_answer(count, mask) for count, mask in zip(counts, masks, strict=True)]


_COSTS: dict[tuple[str, str], int] = {}


def release_cost_nano(policy: Policy, definition: ReleaseDefinition) -> int:
    """What one release of `definition` costs, in nano-epsilon, exactly as the coordinator
    charges it: OpenDP's privacy map at the release's L1 sensitivity (`fedscore.noise`)."""
    key = (policy.content_hash, definition.name)
    cost = _COSTS.get(key)
    if cost is None:
        noise = histogram_mechanism(l1_sensitivity(policy, definition), definition.epsilon)
        # A policy is immutable and named by its content hash: calibrated once per release.
        cost = _COSTS[key] = nano_up(noise.epsilon)
    return cost


def answer_histogram(
    node: AgencyNode, envelope: Envelope, notes: StatisticsNotes
) -> HistogramResponse:
    """Check a statistics query and answer it; raise a FedscoreError to refuse."""
    now = node.now()
    admitted = admit_statistics_query(envelope, node.trust, node.store.has_seen_query, now, notes)
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
    answer = StatisticsAnswer(
        query_id=spec.query_id,
        agency_id=node.agency_id,
        masked_bins=masked_bins(
            counts, node.agency_id, node.mask_seeds, spec, admitted.signed.query_hash
        ),
        query_hash=admitted.signed.query_hash,
    )
    with Session(node.store.engine) as session:
        node.store.mark_query_seen(session, admitted.query_id, now)
        # The node's own ledger: spent here whether or not the coordinator ever releases.
        status = node.ledger.spend(
            session,
            release_id=admitted.query_id,
            release=definition.name,
            dataset=definition.dataset,
            year=admitted.year,
            total_epsilon=budget,
            cost_nano=cost,
            now=now,
        )
        node.log.append(
            session,
            "statistics_answered",
            {
                "query_id": admitted.query_id,
                "query_hash": admitted.signed.query_hash.hex(),
                "release": admitted.definition.name,
                "year": admitted.year,
                "bins": len(counts),
                "epsilon_charged": epsilon_of(cost),
                "budget_remaining": epsilon_of(status.remaining_nano),
                # Where the coordinator promised it logged the query: the regulator checks.
                "coordinator": admitted.promise.origin,
                "promise_index": admitted.promise.index,
                "promise_leaf_hash": admitted.promise.leaf_hash.hex(),
            },
            now=now,
        )
        session.commit()
    return HistogramResponse(answer=sign_message(answer, node.signing_key))


def log_statistics_refusal(
    node: AgencyNode, error: FedscoreError, notes: StatisticsNotes, caller: str
) -> None:
    """Write "statistics_refused" with the reason and only what was authenticated.

    Beyond `caller`'s allowance the refusal is counted into its summary instead.
    """
    node.refusals.record(caller, "statistics_refused", {"reason": error.reason}, notes.fields())


def statistics_handlers(node: AgencyNode) -> dict[str, Handler]:
    """The NodeStatisticsService methods, ready for `fedscore.runtime.rpc.start_server`."""

    async def histogram_handler(raw: bytes, context: grpc.aio.ServicerContext) -> Message:
        notes = StatisticsNotes()
        try:
            request = parse_request(raw, HistogramRequest)
            return await asyncio.to_thread(answer_histogram, node, request.query, notes)
        except FedscoreError as error:
            log_statistics_refusal(node, error, notes, peer_common_name(context))
            raise

    return {"Histogram": histogram_handler}
