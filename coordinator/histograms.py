"""Exact federated histograms for a release, held in memory only until noise is added.

- Node-side releases: the coordinator logs "statistics_query_issued" (query id and hash,
  release, year, participants) BEFORE asking, signs a log promise over the spec, and asks
  every agency of the policy at once over the existing mutual-TLS channels. Each answer
  must verify under the agency keyring, come from the agency asked, name this query and
  hash, and hold one masked value per bin; bins are summed mod 2^64, where the per-bin
  pairwise masks cancel (only because every node was asked these very spec bytes: each
  bin's mask is bound to the spec's hash and the bin, docs/adr/0011). Any node down,
  refusing or answering wrongly fails the whole release ("statistics_failed"); no partial
  sum is computed.
- The score-query release reads the coordinator's own `coordinator_query` table, counting
  each consent token's earliest `contribution_bound` queries of the year.

Invariants: the exact sums are returned to the caller and never logged, stored or raised.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from dataclasses import dataclass

import grpc
from sqlalchemy import Engine, case, func, select

from audit.store.log import EventLog
from coordinator.fanout import REFUSAL_CODES, NodeAnswers, NodeChannels, secure_sum
from coordinator.store import COORDINATOR_TABLES, IssuedQuery
from fedscore.errors import FedscoreError, Unauthenticated
from fedscore.runtime.db import create_tables
from fedscore.runtime.rpc import call_unary
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
from keys.signing import SigningKey
from policies.model import Policy
from policies.releases import bins, month_starts, participants
from policies.statistics import ReleaseDefinition

HISTOGRAM_METHOD = "/fedscore.v1.NodeStatisticsService/Histogram"
# A node counting millions of records may take a while; the spec stays valid as long.
STATISTICS_DEADLINE_SECONDS = 300.0


@dataclass(frozen=True)
class StatisticsAsker:
    """What fanning out one statistics query needs (set up once by the publisher)."""

    coordinator: str
    signing_key: SigningKey
    agency_keyring: Keyring
    channels: NodeChannels
    log: EventLog
    deadline: float = STATISTICS_DEADLINE_SECONDS


def _verify(
    envelope: Envelope,
    agency: str,
    spec: StatisticsSpec,
    query_hash: bytes,
    bins_: int,
    keyring: Keyring,
) -> list[int]:
    verified = verify_message(envelope, StatisticsAnswer, keyring)
    answer = verified.payload
    if verified.signer != agency or answer.agency_id != agency:
        raise Unauthenticated(
            f"answer of {agency} is signed by {verified.signer}", "SIGNER_MISMATCH"
        )
    if answer.query_id != spec.query_id or answer.query_hash != query_hash:
        raise Unauthenticated(f"answer from {agency} is for another query", "QUERY_MISMATCH")
    if len(answer.masked_bins) != bins_:
        raise Unauthenticated(f"answer from {agency} has the wrong bins", "BIN_MISMATCH")
    return [int(value) for value in answer.masked_bins]


async def _ask(
    asker: StatisticsAsker,
    agency: str,
    request: HistogramRequest,
    check: tuple[StatisticsSpec, bytes, int],
    answers: NodeAnswers,
    masked: dict[str, list[int]],
) -> None:
    channel = asker.channels.get(agency)
    if channel is None:
        answers.unavailable.append(agency)
        return
    try:
        response = await call_unary(
            channel, HISTOGRAM_METHOD, request, HistogramResponse, asker.deadline
        )
    except FedscoreError as error:
        if error.code in REFUSAL_CODES:
            answers.refused[agency] = error
            return
        answers.unavailable.append(agency)
        await asker.channels.replace(agency, channel)
        return
    except (TimeoutError, grpc.RpcError):
        answers.unavailable.append(agency)
        await asker.channels.replace(agency, channel)
        return
    try:
        masked[agency] = _verify(response.answer, agency, *check, asker.agency_keyring)
    except FedscoreError:
        answers.invalid.append(agency)


def statistics_spec(
    asker: StatisticsAsker, policy: Policy, definition: ReleaseDefinition, year: int, now: int
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
    )


async def federated_histogram(
    asker: StatisticsAsker, policy: Policy, definition: ReleaseDefinition, year: int, now: int
) -> tuple[list[int], str]:
    """The exact per-bin sums over every agency, and the query id; log before asking."""
    spec = statistics_spec(asker, policy, definition, year, now)
    spec_bytes = spec.SerializeToString(deterministic=True)
    query_hash = hashlib.sha256(spec_bytes).digest()
    ref = asker.log.append_now(
        "statistics_query_issued",
        {
            "query_id": spec.query_id,
            "query_hash": query_hash.hex(),
            "release": definition.name,
            "year": year,
            "participants": list(spec.participants),
            "kind": "histogram",
        },
    )
    promise = sign_message(
        LogPromise(
            origin=asker.coordinator,
            index=ref.index,
            leaf_hash=ref.leaf_hash,
            query_hash=query_hash,
            logged_at=ref.logged_at,
        ),
        asker.signing_key,
    )
    width = len(bins(policy, definition))
    answers = NodeAnswers()
    masked: dict[str, list[int]] = {}
    requests = {
        agency: HistogramRequest(
            query=sign_message(
                StatisticsQuery(spec=spec_bytes, agency_id=agency, log_promise=promise),
                asker.signing_key,
            )
        )
        for agency in spec.participants
    }
    await asyncio.gather(
        *(
            _ask(asker, agency, request, (spec, query_hash, width), answers, masked)
            for agency, request in requests.items()
        )
    )
    try:
        answers.raise_for_failure()
        sums = [secure_sum(masked[agency][b] for agency in spec.participants) for b in range(width)]
    except FedscoreError as error:
        fields = answers.failure_fields(spec.query_id)
        fields["reason"] = error.reason
        asker.log.append_now("statistics_failed", fields)
        raise
    return sums, str(spec.query_id)


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
