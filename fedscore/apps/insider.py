"""What the coordinator's operator can try on its own, holding the coordinator's real key,
its TLS identity, its database and its log (docs/adr/0011, the threat model).

`fedscore demo` runs one of these tricks against the demo citizen and the tests in
`tests/test_hostile_coordinator.py` run all of them against real nodes over mutual TLS.
Nothing here is used by an honest party. Everything it sends is signed with the
coordinator's real key and, where the trick needs it, logged in the coordinator's own log
first, exactly as an honest coordinator would log it (forged "matching" entries), so the
nodes' promise checks pass and only what the design guarantees can stop it:

- masks bound to the exact question (`keys.masks`): asked different things, the nodes'
  masked answers add up to a uniformly random value, never a contribution;
- the nodes' own limits (`node.checks`, `node.claims`): only a relying party's own signed
  request, once; the token's uses counted at each node; the purpose's years; the node's
  own sealed subject (a batch has no field for another); the kind of question;
- the regulator's cross-checks (`audit.crossmatch_*`), which name what was tried;
- for statistics, the second aggregator (docs/adr/0019): a node answers the coordinator
  only its share of each masked bin, uniformly random, and seals the other to the helper
  aggregator, which adds noise to their sum and charges its own ledger, once per query.

What the nodes answer it opens as the coordinator does, as a signed answer of its kind
(`fedscore.protocol.questions`), under the agencies' keys.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from google.protobuf.message import Message
from sqlalchemy import Engine

from audit.core import kinds
from audit.core.fields import (
    PARTICIPANTS,
    PURPOSE,
    QUERY_HASH,
    QUERY_ID,
    RELEASE,
    RELYING_PARTY,
    REQUEST_NONCE_HASH,
    TOKEN_ID,
    YEAR,
)
from audit.store.log import EventLog
from fedscore.errors import FedscoreError, Unauthenticated
from fedscore.protocol.helper_messages import SignedNoisyShareSum
from fedscore.protocol.questions import SignedContributionAnswerBatch, SignedStatisticsAnswer
from fedscore.protocol.requests import nonce_hash, requested_year
from fedscore.runtime.db import open_engine
from fedscore.runtime.party import Party, load_party
from fedscore.runtime.rpc import call_unary, secure_channel
from fedscore.runtime.statuses import error_from_refusal
from fedscore.v1.consent_pb2 import ConsentToken
from fedscore.v1.envelope_pb2 import Envelope
from fedscore.v1.helper_pb2 import NoiseOrder, NoiseShareSumRequest, NoiseShareSumResponse
from fedscore.v1.query_pb2 import (
    QUESTION_KIND_HISTOGRAM,
    QUESTION_KIND_SCORE,
    BatchedContributionQuery,
    ContributeBatchRequest,
    ContributeBatchResponse,
    ContributionBatch,
    LogPromise,
    QuerySpec,
    ScoreQuery,
)
from fedscore.v1.statistics_pb2 import (
    HistogramBatchRequest,
    HistogramBatchResponse,
    HistogramItem,
    StatisticsQuery,
    StatisticsSpec,
)
from fedscore.v1.trust_pb2 import Role
from keys.envelope import sign_message
from policies.releases import participants as statistics_participants

CONTRIBUTE_BATCH = "/fedscore.v1.NodeService/ContributeBatch"
HISTOGRAM_BATCH = "/fedscore.v1.NodeStatisticsService/HistogramBatch"
NOISE_SHARE_SUM = "/fedscore.v1.HelperService/NoiseShareSum"
CALL_TIMEOUT = 30.0
SPEC_LIFETIME_SECONDS = 60

Answer = int | FedscoreError  # a node's masked value, or its refusal
M = TypeVar("M", bound=Message)


@dataclass(frozen=True)
class Asked:
    """A question's exact bytes and the coordinator's signed word that it logged them."""

    spec: bytes
    promise: LogPromise

    @property
    def query_hash(self) -> bytes:
        return hashlib.sha256(self.spec).digest()


@dataclass
class HostileCoordinator:
    """The coordinator's operator, acting alone with everything the coordinator holds."""

    party: Party
    engine: Engine = field(repr=False)
    log: EventLog = field(repr=False)

    @classmethod
    def open(cls, workdir: Path) -> HostileCoordinator:
        party = load_party(workdir, "coordinator")
        engine = open_engine(party.db_url)
        return cls(party, engine, EventLog(engine, party.id))

    def close(self) -> None:
        self.engine.dispose()

    @property
    def helper_id(self) -> str:
        """The helper aggregator the registry lists (the first by id), "" if none."""
        helpers = self.party.trust.by_role(Role.ROLE_HELPER_AGGREGATOR)
        return helpers[0].id if helpers else ""

    # -- questions, as an honest coordinator would build them -------------------------

    def score_spec(self, request: Envelope, query_id: str = "", **changes: object) -> QuerySpec:
        """The spec for a relying party's request it captured (changes: any field)."""
        query = ScoreQuery.FromString(request.payload)
        token = ConsentToken.FromString(query.token.payload)
        policy = self.party.policy
        now = int(time.time())
        spec = QuerySpec(
            query_id=query_id or secrets.token_hex(16),
            purpose_id=query.purpose_id,
            policy_hash=token.policy_hash,
            year=requested_year(query, policy),
            participants=list(policy.purpose(query.purpose_id).participants),
            issued_at=now,
            expires_at=now + SPEC_LIFETIME_SECONDS,
            coordinator=self.party.id,
            request=request,
            kind=QUESTION_KIND_SCORE,
        )
        for name, value in changes.items():
            setattr(spec, name, value)
        return spec

    def histogram_spec(
        self, release: str, year: int, query_id: str = "", **changes: object
    ) -> StatisticsSpec:
        """The spec of a node-side statistics release (no release is ever made of it)."""
        policy = self.party.policy
        now = int(time.time())
        spec = StatisticsSpec(
            query_id=query_id or secrets.token_hex(16),
            release=release,
            policy_hash=policy.content_hash,
            year=year,
            participants=list(statistics_participants(policy)),
            contribution_bound=policy.statistics_rules.release(release).contribution_bound,
            issued_at=now,
            expires_at=now + SPEC_LIFETIME_SECONDS,
            coordinator=self.party.id,
            kind=QUESTION_KIND_HISTOGRAM,
            helper=self.helper_id,
        )
        for name, value in changes.items():
            setattr(spec, name, value)
        return spec

    # -- its own log: entries that "match" whatever it is about to ask -----------------

    def log_score(self, spec: QuerySpec) -> Asked:
        """Append the "query_issued" entry an honest coordinator would, and promise it."""
        query = ScoreQuery.FromString(spec.request.payload)
        token = ConsentToken.FromString(query.token.payload)
        spec_bytes = spec.SerializeToString()
        fields = {
            QUERY_ID: spec.query_id,
            QUERY_HASH: hashlib.sha256(spec_bytes).hexdigest(),
            TOKEN_ID: token.token_id,
            PURPOSE: spec.purpose_id,
            RELYING_PARTY: query.relying_party,
            PARTICIPANTS: list(spec.participants),
            YEAR: spec.year,
            "kind": "score",
            REQUEST_NONCE_HASH: nonce_hash(query.nonce).hex(),
        }
        return self._promise(spec_bytes, kinds.QUERY_ISSUED, fields)

    def log_histogram(self, spec: StatisticsSpec) -> Asked:
        """Append the "statistics_query_issued" entry an honest coordinator would."""
        spec_bytes = spec.SerializeToString(deterministic=True)
        fields = {
            QUERY_ID: spec.query_id,
            QUERY_HASH: hashlib.sha256(spec_bytes).hexdigest(),
            RELEASE: spec.release,
            YEAR: spec.year,
            PARTICIPANTS: list(spec.participants),
            "kind": "histogram",
            "helper": spec.helper,
        }
        return self._promise(spec_bytes, kinds.STATISTICS_QUERY_ISSUED, fields)

    def _promise(self, spec_bytes: bytes, kind: str, fields: dict[str, object]) -> Asked:
        ref = self.log.append_now(kind, fields)
        promise = LogPromise(
            origin=self.party.id,
            index=ref.index,
            leaf_hash=ref.leaf_hash,
            query_hash=hashlib.sha256(spec_bytes).digest(),
            logged_at=ref.logged_at,
        )
        return Asked(spec_bytes, promise)

    # -- asking nodes directly, over mutual TLS ---------------------------------------

    async def _call(self, party: str, method: str, request: Message, reply: type[M]) -> M:
        endpoint = self.party.trust.participant(party).endpoint
        async with secure_channel(endpoint, self.party.tls, server_name=party) as channel:
            return await call_unary(channel, method, request, reply, CALL_TIMEOUT)

    async def ask_one(self, agency: str, asked: Asked) -> Answer:
        """One score question, as production asks a lone one: a batch of one."""
        [answer] = await self.ask_in_batch(agency, [asked])
        return answer

    async def ask_in_batch(self, agency: str, questions: Sequence[Asked]) -> list[Answer]:
        """Score questions in one `ContributeBatch`, as production asks: one outcome each.

        The batch carries each question's spec bytes and log promise and nothing else: a
        node takes its sealed subject from the registry-signed token inside the spec.
        """
        batch = ContributionBatch(
            batch_id=secrets.token_hex(16),
            agency_ids=[agency],
            issued_at=int(time.time()),
            queries=[
                BatchedContributionQuery(spec=asked.spec, log_promise=asked.promise)
                for asked in questions
            ],
        )
        request = ContributeBatchRequest(batch=sign_message(batch, self.party.signing_key))
        try:
            response = await self._call(agency, CONTRIBUTE_BATCH, request, ContributeBatchResponse)
        except FedscoreError as error:
            return [error] * len(questions)
        agencies = self.party.trust.agency_keys()
        answers = SignedContributionAnswerBatch.verify(response.answers, agencies).answers
        outcomes: list[Answer] = []
        for outcome in answers.outcomes:
            if outcome.WhichOneof("outcome") == "answer":
                outcomes.append(int(outcome.answer.masked_value))
            elif outcome.WhichOneof("outcome") == "refusal":
                outcomes.append(error_from_refusal(outcome.refusal))
            else:
                outcomes.append(Unauthenticated("empty outcome", "BAD_ANSWER"))
        return outcomes

    async def ask_histogram(self, agency: str, asked: Asked) -> list[int] | FedscoreError:
        """One histogram question, as production asks it: a batch of one. What the node
        answers the coordinator (its share of each masked bin), or its refusal."""
        answer = await self.ask_histogram_shares(agency, asked)
        return answer if isinstance(answer, FedscoreError) else answer[0]

    async def ask_histogram_shares(
        self, agency: str, asked: Asked
    ) -> tuple[list[int], Envelope] | FedscoreError:
        """The node's shares for the coordinator and its signed, sealed share for the helper
        (which the coordinator cannot open), or its refusal (of the item, or the call)."""
        query = StatisticsQuery(
            spec=asked.spec,
            agency_id=agency,
            log_promise=sign_message(asked.promise, self.party.signing_key),
        )
        item = HistogramItem(query=sign_message(query, self.party.signing_key))
        request = HistogramBatchRequest(items=[item])
        try:
            response = await self._call(agency, HISTOGRAM_BATCH, request, HistogramBatchResponse)
        except FedscoreError as error:
            return error
        [outcome] = response.outcomes
        kind = outcome.WhichOneof("outcome")
        if kind == "refusal":
            return error_from_refusal(outcome.refusal)
        if kind != "answer":
            return Unauthenticated("empty outcome", "BAD_ANSWER")
        signed = SignedStatisticsAnswer.verify(outcome.answer, self.party.trust.agency_keys())
        answer = signed.answer
        return [int(value) for value in answer.coordinator_shares], answer.helper_share

    async def ask_helper(
        self, asked: Asked, helper_shares: Sequence[Envelope], release_id: str, epsilon_nano: int
    ) -> list[int] | FedscoreError:
        """Relay the nodes' helper shares to the helper as an honest coordinator's signed
        `NoiseOrder` would; the helper's noisy share sums, or its refusal."""
        order = NoiseOrder(
            spec=asked.spec,
            log_promise=sign_message(asked.promise, self.party.signing_key),
            release_id=release_id,
            epsilon_nano=epsilon_nano,
            shares=list(helper_shares),
            helper=self.helper_id,
        )
        request = NoiseShareSumRequest(order=sign_message(order, self.party.signing_key))
        try:
            response = await self._call(
                self.helper_id, NOISE_SHARE_SUM, request, NoiseShareSumResponse
            )
        except FedscoreError as error:
            return error
        signed = SignedNoisyShareSum.verify(response.sum, self.party.trust.helper_keys())
        return [int(value) for value in signed.noisy.noisy_sums]
