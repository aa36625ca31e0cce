"""A release's histogram question to the agency nodes: the coordinator's shares only.

- Node-side releases: the coordinator logs "statistics_query_issued" (query id and hash,
  release, year, participants, helper) BEFORE asking, signs a log promise over the spec,
  and asks every agency of the policy at once over the existing mutual-TLS channels, one
  signed `StatisticsQuery` per node, sent as a batch of one
  (`NodeStatisticsService.HistogramBatch`: every question travels as a batch). The spec
  names the helper aggregator every node shares with (docs/adr/0019). Asking and checking
  are the score question's (`coordinator.fanout`): each node is called as `call_node`
  says; it must send exactly one outcome. A refused item counts as a refused call would;
  an answer must open as a `fedscore.protocol.questions.SignedStatisticsAnswer` (under the
  agencies' keys), be signed by the agency asked, answer this very question id and hash
  (`check_answer`), hold one coordinator share per bin (`check_items`) and carry the
  node's signed share for the helper. The coordinator's shares are summed per bin mod
  2^64: a uniformly random value, as every share is; the helper's shares are relayed to
  the helper unopened (`coordinator.helper_link`). Any node down, refusing or answering
  wrongly fails the whole release ("statistics_failed", named as a score's "query_failed"
  is).
- What differs from a score question: no relying party asked it and no consent covers
  it, so it is not batched with score questions nor dispatched by the score batcher (its
  batch holds this one question); it is addressed and signed per node (the
  `StatisticsQuery` names one agency) with a log promise signed on its own; and a node may
  count for long (`STATISTICS_DEADLINE_SECONDS`).
- The score-query release reads the coordinator's own `coordinator_query` table, counting
  each consent token's earliest `contribution_bound` queries of the year.

Invariants: no exact count and no masked count of a node-side release ever exists here;
the score-query counts (the coordinator's own log) are returned to the caller and never
logged, stored or raised.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, case, func, select

from audit.core import kinds
from audit.core.fields import PARTICIPANTS, QUERY_HASH, QUERY_ID, RELEASE, YEAR
from audit.store.log import EventLog
from coordinator.fanout import (
    INVALID,
    REFUSAL_CODES,
    UNAVAILABLE,
    LoggedQuery,
    NodeAnswers,
    NodeChannels,
    NodeReply,
    call_node,
    check_answer,
    check_items,
)
from coordinator.store import COORDINATOR_TABLES, IssuedQuery
from fedscore.errors import FedscoreError, Unauthenticated
from fedscore.protocol.questions import SignedStatisticsAnswer
from fedscore.runtime.db import create_tables
from fedscore.runtime.statuses import error_from_refusal
from fedscore.v1.envelope_pb2 import Envelope
from fedscore.v1.query_pb2 import QUESTION_KIND_HISTOGRAM
from fedscore.v1.statistics_pb2 import (
    HistogramBatchRequest,
    HistogramBatchResponse,
    HistogramItem,
    StatisticsQuery,
    StatisticsSpec,
)
from keys.envelope import sign_message
from keys.keyring import AgencyKeys
from keys.shares import sum_shares
from keys.signing import SigningKey
from policies.model import Policy
from policies.releases import bins, month_starts, participants
from policies.statistics import ReleaseDefinition

HISTOGRAM_METHOD = "/fedscore.v1.NodeStatisticsService/HistogramBatch"
# A node counting millions of records may take a while; the spec stays valid as long.
STATISTICS_DEADLINE_SECONDS = 300.0


@dataclass(frozen=True)
class StatisticsAsker:
    """What fanning out one statistics query needs (set up once by the publisher)."""

    coordinator: str
    signing_key: SigningKey
    agency_keyring: AgencyKeys
    channels: NodeChannels
    log: EventLog
    deadline: float = STATISTICS_DEADLINE_SECONDS


@dataclass(frozen=True)
class NodeShares:
    """One node's answer: its shares for the coordinator, and its signed, sealed share for
    the helper (relayed, never opened here)."""

    coordinator: list[int]
    helper: Envelope


@dataclass(frozen=True)
class SharedHistogram:
    """What every node answered: the logged question, its signed promise, the per-bin sum
    of the coordinator's shares (uniformly random) and each node's share for the helper,
    in participant order."""

    logged: LoggedQuery
    promise: Envelope
    coordinator_sums: list[int]
    helper_shares: list[Envelope]

    @property
    def query_id(self) -> str:
        return str(self.logged.spec.query_id)


async def _ask(
    asker: StatisticsAsker,
    agency: str,
    request: HistogramBatchRequest,
    logged: LoggedQuery,
    width: int,
) -> NodeReply[Any]:
    """One node's shares for `logged` (asked as a batch of one), or what its failure counts
    as; a refused item counts as a refused call would."""
    response = await call_node(
        asker.channels, agency, HISTOGRAM_METHOD, request, HistogramBatchResponse, asker.deadline
    )
    if isinstance(response, NodeReply):
        return response
    if len(response.outcomes) != 1:
        return INVALID
    [outcome] = response.outcomes
    kind = outcome.WhichOneof("outcome")
    if kind == "refusal":
        refusal = error_from_refusal(outcome.refusal)
        return NodeReply(refusal=refusal) if refusal.code in REFUSAL_CODES else UNAVAILABLE
    if kind != "answer":
        return INVALID
    try:
        signed = SignedStatisticsAnswer.verify(outcome.answer, asker.agency_keyring)
        return NodeReply(masked=shares_of(signed, agency, logged, width))
    except FedscoreError:
        return INVALID


def shares_of(
    signed: SignedStatisticsAnswer, agency_id: str, logged: LoggedQuery, width: int
) -> NodeShares:
    """The shares in `agency_id`'s opened answer, if it answers this very question
    (`check_answer`) with one coordinator share per bin (`check_items`) and a share for the
    helper; raises otherwise (the helper checks that share's signature and contents)."""
    answer = signed.answer
    check_answer(answer, signed.signer, agency_id, logged)
    check_items(len(answer.coordinator_shares), width, agency_id)
    if not answer.helper_share.payload:
        raise Unauthenticated(f"{agency_id} sent no share for the helper", "SHARE_MISSING")
    shares = [int(value) for value in answer.coordinator_shares]
    return NodeShares(shares, answer.helper_share)


def statistics_spec(
    asker: StatisticsAsker,
    policy: Policy,
    definition: ReleaseDefinition,
    year: int,
    now: int,
    helper: str,
) -> StatisticsSpec:
    return StatisticsSpec(
        query_id=secrets.token_hex(16),
        release=definition.name,
        policy_hash=policy.content_hash,
        year=year,
        participants=list(participants(policy)),
        contribution_bound=definition.contribution_bound,
        issued_at=now,
        expires_at=now + int(asker.deadline),
        coordinator=asker.coordinator,
        kind=QUESTION_KIND_HISTOGRAM,
        helper=helper,
    )


def issue_statistics_query(asker: StatisticsAsker, spec: StatisticsSpec) -> LoggedQuery:
    """Log the question before any node is asked; what the nodes are sent, and where."""
    spec_bytes = spec.SerializeToString(deterministic=True)
    query_hash = hashlib.sha256(spec_bytes).digest()
    ref = asker.log.append_now(
        kinds.STATISTICS_QUERY_ISSUED,
        {
            QUERY_ID: spec.query_id,
            QUERY_HASH: query_hash.hex(),
            RELEASE: spec.release,
            YEAR: spec.year,
            PARTICIPANTS: list(spec.participants),
            "kind": "histogram",
            "helper": spec.helper,
        },
    )
    return LoggedQuery.at(spec, spec_bytes, query_hash, ref)


async def federated_shares(
    asker: StatisticsAsker,
    policy: Policy,
    definition: ReleaseDefinition,
    year: int,
    now: int,
    helper: str,
) -> SharedHistogram:
    """Every agency's shares of the release's histogram, shared with `helper`; log first."""
    spec = statistics_spec(asker, policy, definition, year, now, helper)
    logged = issue_statistics_query(asker, spec)
    promise = sign_message(logged.promise, asker.signing_key)
    width = len(bins(policy, definition))
    requests = {
        agency: HistogramBatchRequest(
            items=[
                HistogramItem(
                    query=sign_message(
                        StatisticsQuery(
                            spec=logged.spec_bytes, agency_id=agency, log_promise=promise
                        ),
                        asker.signing_key,
                    )
                )
            ]
        )
        for agency in spec.participants
    }
    replies = await asyncio.gather(
        *(_ask(asker, agency, request, logged, width) for agency, request in requests.items())
    )
    answers: NodeAnswers[NodeShares] = NodeAnswers()
    # Recorded in the participant order, whatever order the nodes answered in.
    for agency, reply in zip(requests, replies, strict=True):
        reply.record(agency, answers)
    try:
        answers.raise_for_failure()
    except FedscoreError as error:
        fields = answers.failure_fields(spec.query_id, error.reason)
        asker.log.append_now(kinds.STATISTICS_FAILED, fields)
        raise
    ordered = [answers.masked[agency] for agency in spec.participants]
    return SharedHistogram(
        logged,
        promise,
        sum_shares((shares.coordinator for shares in ordered), width),
        [shares.helper for shares in ordered],
    )


def query_log_histogram(
    engine: Engine, policy: Policy, definition: ReleaseDefinition, year: int
) -> list[int]:
    """Score queries per (purpose, month) of `year`, at most `bound` per consent token."""
    create_tables(engine, COORDINATOR_TABLES)
    starts = month_starts(policy, year)
    issued = IssuedQuery.__table__.c  # type: ignore[attr-defined]
    month = case(*((issued.issued_at < starts[m + 1], m) for m in range(12)), else_=11)
    purposes = list(policy.purposes)
    rows = (
        select(
            issued.token_id,
            issued.purpose_id,
            issued.issued_at,
            issued.query_id,
            month.label("month"),
        )
        .where(
            issued.issued_at >= starts[0],
            issued.issued_at < starts[12],
            issued.purpose_id.in_(purposes),
        )
        .subquery("issued_in_year")
    )
    rank = func.row_number().over(
        partition_by=rows.c.token_id, order_by=(rows.c.issued_at, rows.c.query_id)
    )
    ranked = select(rows.c.purpose_id, rows.c.month, rank.label("rank")).subquery("ranked")
    query = (
        select(ranked.c.purpose_id, ranked.c.month, func.count())
        .where(ranked.c.rank <= definition.contribution_bound)
        .group_by(ranked.c.purpose_id, ranked.c.month)
    )
    counts = [0] * len(bins(policy, definition))
    with engine.connect() as connection:
        for purpose, month_index, count in connection.execute(query):
            counts[purposes.index(purpose) * 12 + int(month_index)] = int(count)
    return counts
