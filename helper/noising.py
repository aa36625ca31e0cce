"""What the helper aggregator does with one `NoiseOrder`: check it, charge, sum, noise, sign.

The helper adds the noise only to a release the coordinator has logged, signed and charged,
and that every agency answered with its very spec. It admits an order only when, in this
order (each refusal has a reason):
 1. it opens as a `SignedNoiseOrder` under the coordinator's keys (UNKNOWN_SIGNER,
    BAD_SIGNATURE, ...; BAD_ORDER) and names this helper (WRONG_HELPER);
 2. its spec parses (MALFORMED_MESSAGE), asks a histogram question (QUESTION_KIND_MISMATCH)
    whose helper is this one (WRONG_HELPER), under a policy the helper holds
    (UNKNOWN_POLICY), fresh (QUERY_EXPIRED), and the coordinator's separately signed log
    promise covers exactly these spec bytes in its own log (BAD_LOG_PROMISE): the same
    steps an agency node runs (`fedscore.protocol.spec_checks`);
 3. it names a release agency nodes compute, with the policy's bound (UNKNOWN_RELEASE,
    CONTRIBUTION_BOUND_NOT_ALLOWED), of every agency of the policy in policy order
    (PARTICIPANT_SET_MISMATCH), for a year that has begun (BAD_YEAR);
 4. the epsilon the coordinator says it charged is the helper's own cost for that release
    (`fedscore.runtime.budget.release_cost_nano`; BUDGET_DISAGREEMENT otherwise);
 5. it carries one `HelperShare` per participant, in order (SHARE_MISSING), each signed by
    that agency (SIGNER_MISMATCH, BAD_SHARE), for this very query id, hash and helper
    (SHARE_MISMATCH), sealed to this helper with one share per bin (BAD_SHARE);
 6. the query id was not noised here before (REPLAYED_QUERY);
 7. the helper's own ledger can pay for it (BUDGET_EXHAUSTED).
Then, in ONE transaction, it claims the query and release ids, spends its ledger and logs
"statistics_noised" (query id and hash, release, release id, dataset, year, epsilon,
promise); only after the commit does the signed `NoisyShareSum` leave.

Invariants:
- The helper never holds a count: each share alone is uniformly random (`keys.shares`),
  and so is their sum; it adds OpenDP's discrete Laplace noise for the release's epsilon
  and L1 sensitivity (`fedscore.noise`) and returns (sum + noise) mod 2^64.
- A refused order changes nothing stored; it is logged as "statistics_refused" with its
  reason and only the facts the coordinator's signature authenticated (query id, release).
- Once its noisy sum has left, the helper's charge is final: there is no refund here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from audit.core import kinds
from audit.core.fields import (
    COORDINATOR,
    DATASET,
    EPSILON_SPENT,
    PARTICIPANTS,
    PROMISE_INDEX,
    PROMISE_LEAF_HASH,
    QUERY_HASH,
    QUERY_ID,
    RELEASE,
    RELEASE_ID,
    YEAR,
)
from audit.store.log import EventLog
from audit.store.refusals import RefusalRecorder
from fedscore.errors import AlreadyExists, FailedPrecondition, InvalidArgument, PermissionDenied
from fedscore.noise import NoisyHistogram, histogram_mechanism
from fedscore.protocol.helper_messages import SignedHelperShare, SignedNoiseOrder
from fedscore.protocol.spec_checks import (
    SignedSpec,
    check_freshness,
    check_kind,
    check_participant_list,
    check_promise,
    check_year_range,
    policy_named,
    release_asked,
    signed_spec,
    verified_promise,
)
from fedscore.runtime.budget import PrivacyLedger, epsilon_of, release_cost_nano
from fedscore.v1.envelope_pb2 import Envelope
from fedscore.v1.helper_pb2 import NoisyShareSum
from fedscore.v1.query_pb2 import QUESTION_KIND_HISTOGRAM, LogPromise
from fedscore.v1.statistics_pb2 import StatisticsSpec
from helper.store import HelperStore
from keys.box import BoxKeyPair
from keys.envelope import sign_message
from keys.keyring import AgencyKeys, CoordinatorKeys
from keys.masks import MODULUS
from keys.shares import open_shares, sum_shares
from keys.signing import SigningKey
from policies.model import Policy
from policies.releases import bins, l1_sensitivity, participants
from policies.statistics import ReleaseDefinition


@dataclass
class HelperAggregator:
    """Everything the helper's one workflow needs, set up once at start; what follows the
    trust registry is swapped whole by `follow` (`helper.server`)."""

    id: str
    signing_key: SigningKey
    box: BoxKeyPair = field(repr=False)
    coordinator_keyring: CoordinatorKeys
    agency_keyring: AgencyKeys
    policies: Mapping[str, Policy]
    store: HelperStore
    log: EventLog
    refusals: RefusalRecorder
    clock: Callable[[], float]
    ledger: PrivacyLedger = field(init=False, repr=False)
    _mechanisms: dict[tuple[str, str], NoisyHistogram] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.ledger = PrivacyLedger(self.store.engine)

    def follow(
        self,
        coordinator_keyring: CoordinatorKeys,
        agency_keyring: AgencyKeys,
        policies: Mapping[str, Policy],
        signing_key: SigningKey,
        box: BoxKeyPair,
    ) -> None:
        self.coordinator_keyring = coordinator_keyring
        self.agency_keyring = agency_keyring
        self.policies = dict(policies)
        self.signing_key = signing_key
        self.box = box

    def now(self) -> int:
        return int(self.clock())

    def mechanism(self, policy: Policy, definition: ReleaseDefinition) -> NoisyHistogram:
        """The release's OpenDP measurement, calibrated once per policy and release."""
        key = (policy.content_hash, definition.name)
        found = self._mechanisms.get(key)
        if found is None:
            found = histogram_mechanism(l1_sensitivity(policy, definition), definition.epsilon)
            self._mechanisms[key] = found
        return found


@dataclass
class Notes:
    """Facts the coordinator's signature authenticated, for a refusal's log entry."""

    query_id: str = ""
    release: str = ""

    def fields(self) -> dict[str, str]:
        known = {QUERY_ID: self.query_id, RELEASE: self.release}
        return {name: value for name, value in known.items() if value}


@dataclass(frozen=True)
class AdmittedOrder:
    """A noise order that passed steps 1-6, with the helper's opened shares."""

    signed: SignedSpec[StatisticsSpec]
    release_id: str
    policy: Policy
    definition: ReleaseDefinition
    promise: LogPromise
    cost_nano: int
    shares: list[list[int]]

    @property
    def spec(self) -> StatisticsSpec:
        return self.signed.spec


def _wrong_helper(named: str, helper_id: str, what: str) -> None:
    if named != helper_id:
        raise PermissionDenied(f"{what} names helper {named!r}, not {helper_id!r}", "WRONG_HELPER")


def opened_shares(
    helper: HelperAggregator,
    envelopes: list[Envelope],
    signed: SignedSpec[StatisticsSpec],
    width: int,
) -> list[list[int]]:
    """Step 5: one share per participant, in order, each the agency's own, for this
    question and this helper, opened."""
    spec = signed.spec
    if len(envelopes) != len(spec.participants):
        raise InvalidArgument(
            f"{len(envelopes)} helper shares for {len(spec.participants)} participants",
            reason="SHARE_MISSING",
        )
    opened = []
    for agency, envelope in zip(spec.participants, envelopes, strict=True):
        share = SignedHelperShare.verify(envelope, helper.agency_keyring)
        if share.signer != agency:
            raise PermissionDenied(
                f"the share in {agency}'s place is signed by {share.signer}", "SIGNER_MISMATCH"
            )
        held = share.share
        if (held.query_id, held.query_hash, held.helper) != (
            spec.query_id,
            signed.query_hash,
            helper.id,
        ):
            raise PermissionDenied(
                f"{agency}'s share is for another question or helper", "SHARE_MISMATCH"
            )
        if held.bins != width:
            raise InvalidArgument(f"{agency} shared {held.bins} bins of {width}", "BAD_SHARE")
        opened.append(open_shares(held.sealed_shares, helper.box, signed.query_hash, agency, width))
    return opened


def admit_order(
    envelope: Envelope, helper: HelperAggregator, now: int, notes: Notes
) -> AdmittedOrder:
    """Steps 1-6, in order; note authenticated facts as they are learned."""
    opened = SignedNoiseOrder.verify(envelope, helper.coordinator_keyring)
    order = opened.order
    _wrong_helper(order.helper, helper.id, "the order")
    signed = signed_spec(order.spec, StatisticsSpec, opened.signer)
    spec = signed.spec
    notes.query_id, notes.release = spec.query_id, spec.release
    check_kind(spec.kind, QUESTION_KIND_HISTOGRAM)
    _wrong_helper(spec.helper, helper.id, "the spec")
    policy = policy_named(spec.policy_hash, helper.policies)
    check_freshness(spec.issued_at, spec.expires_at, now)
    vouched = verified_promise(order.log_promise, helper.coordinator_keyring)
    check_promise(vouched.promise.origin, vouched.promise.query_hash, signed, vouched.signer)
    definition = release_asked(spec, policy)
    check_participant_list(spec.participants, participants(policy), in_order=True)
    check_year_range(spec.year, policy.current_year(now))
    cost = release_cost_nano(policy, definition)
    if order.epsilon_nano != cost:
        raise FailedPrecondition(
            f"the coordinator charged {epsilon_of(order.epsilon_nano):g} epsilon for "
            f"{definition.name!r}; this helper's ledger charges {epsilon_of(cost):g}",
            reason="BUDGET_DISAGREEMENT",
        )
    shares = opened_shares(helper, list(order.shares), signed, len(bins(policy, definition)))
    if helper.store.has_noised(spec.query_id):
        raise AlreadyExists(f"query {spec.query_id!r} was already noised", "REPLAYED_QUERY")
    return AdmittedOrder(
        signed, order.release_id, policy, definition, vouched.promise, cost, shares
    )


def noise_share_sum(helper: HelperAggregator, envelope: Envelope, notes: Notes) -> Envelope:
    """Admit a noise order, charge the helper's ledger and log it (one transaction), and
    return the signed noisy share sums; raise a FedscoreError to refuse (nothing stored)."""
    now = helper.now()
    admitted = admit_order(envelope, helper, now, notes)
    definition, spec = admitted.definition, admitted.spec
    budget = admitted.policy.statistics_rules.budget(definition.dataset)
    helper.ledger.check(definition.dataset, int(spec.year), budget, admitted.cost_nano)
    width = len(admitted.shares[0]) if admitted.shares else 0
    sums = sum_shares(admitted.shares, width)
    noise = helper.mechanism(admitted.policy, definition).noise(width)
    noisy = [(total + draw) % MODULUS for total, draw in zip(sums, noise, strict=True)]
    with helper.store.engine.begin() as connection:
        helper.store.claim(connection, spec.query_id, admitted.release_id, now)
        status = helper.ledger.spend(
            connection,
            release_id=admitted.release_id,
            release=definition.name,
            dataset=definition.dataset,
            year=int(spec.year),
            total_epsilon=budget,
            cost_nano=admitted.cost_nano,
            now=now,
        )
        helper.log.append(
            connection,
            kinds.STATISTICS_NOISED,
            {
                QUERY_ID: spec.query_id,
                QUERY_HASH: admitted.signed.query_hash.hex(),
                RELEASE: definition.name,
                RELEASE_ID: admitted.release_id,
                DATASET: definition.dataset,
                YEAR: int(spec.year),
                PARTICIPANTS: list(spec.participants),
                EPSILON_SPENT: epsilon_of(admitted.cost_nano),
                "budget_remaining": epsilon_of(status.remaining_nano),
                "bins": width,
                # Where the coordinator promised it logged the query: the regulator checks.
                COORDINATOR: admitted.promise.origin,
                PROMISE_INDEX: admitted.promise.index,
                PROMISE_LEAF_HASH: admitted.promise.leaf_hash.hex(),
            },
            now=now,
        )
    answer = NoisyShareSum(
        query_id=spec.query_id,
        query_hash=admitted.signed.query_hash,
        release_id=admitted.release_id,
        helper=helper.id,
        noisy_sums=noisy,
        epsilon_nano=admitted.cost_nano,
    )
    return sign_message(answer, helper.signing_key)
