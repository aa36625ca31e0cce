"""A real agency node's NodeStatisticsService over mutual TLS on 127.0.0.1.

- Answered queries: each node's answer is masked per bin; the masks cancel only in the
  sum over all agencies, which equals the sum of the nodes' own exact histograms; the
  answer is logged as "statistics_answered" and the query id spent.
- Refusals, table-driven: each row builds one bad query and asserts the gRPC status, the
  ErrorInfo reason, one new "statistics_refused" entry with that reason (naming the
  query and release only when the envelope was authentic), and that no query id was
  spent (nothing was answered).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from test_node_service import (
    LiveFederation,
    assert_clean_log,
    live_federation,
    make_federation,
)

from fedscore.errors import Code, FedscoreError
from fedscore.runtime.rpc import call_unary, error_from_rpc
from fedscore.v1.envelope_pb2 import Envelope
from fedscore.v1.query_pb2 import QUESTION_KIND_HISTOGRAM, QUESTION_KIND_SCORE
from fedscore.v1.statistics_pb2 import (
    HistogramRequest,
    HistogramResponse,
    StatisticsAnswer,
    StatisticsQuery,
    StatisticsSpec,
)
from fedscore.v1.trust_pb2 import Role
from keys.envelope import sign_bytes, sign_message, verify_message
from keys.masks import MODULUS
from node.histogram import node_histogram
from node.service import uncertified_indicators
from policies.releases import bins

pytestmark = pytest.mark.integration

HISTOGRAM = "/fedscore.v1.NodeStatisticsService/Histogram"
RELEASE = "participation-by-domain-and-area"
AGENCY = "trc"
TIMEOUT = 10.0


def stats_spec(live: LiveFederation, **changes: Any) -> StatisticsSpec:
    policy = live.coordinator.policy
    now = int(time.time())
    spec = StatisticsSpec(
        query_id=secrets.token_hex(16),
        release=RELEASE,
        policy_hash=policy.content_hash,
        year=policy.current_year(now),
        participants=list(policy.agencies),
        contribution_bound=policy.statistics_rules.release(RELEASE).contribution_bound,
        issued_at=now,
        expires_at=now + 60,
        coordinator=live.coordinator.id,
        kind=QUESTION_KIND_HISTOGRAM,
    )
    for name, value in changes.items():
        if isinstance(value, list):
            del getattr(spec, name)[:]
            getattr(spec, name).extend(value)
        else:
            setattr(spec, name, value)
    return spec


def stats_query(
    live: LiveFederation,
    spec: StatisticsSpec,
    agency: str,
    *,
    promise: Envelope | None = None,
    signer: Any = None,
) -> Envelope:
    spec_bytes = spec.SerializeToString(deterministic=True)
    query = StatisticsQuery(
        spec=spec_bytes,
        agency_id=agency,
        log_promise=promise if promise is not None else live.log_promise(spec_bytes),
    )
    return sign_message(query, (signer or live.coordinator).signing_key)


async def histogram(live: LiveFederation, agency: str, query: Envelope) -> HistogramResponse:
    return await call_unary(
        live.channels[agency], HISTOGRAM, HistogramRequest(query=query), HistogramResponse, TIMEOUT
    )


def test_masked_bins_cancel_only_in_the_sum_over_every_agency(tmp_path: Path) -> None:
    root = make_federation(tmp_path)

    async def scenario() -> None:
        async with live_federation(root, with_registry=False) as live:
            policy = live.coordinator.policy
            definition = policy.statistics_rules.release(RELEASE)
            spec = stats_spec(live)
            keyring = live.coordinator.trust.keyring(Role.ROLE_AGENCY)
            masked: dict[str, list[int]] = {}
            for agency in live.agencies:
                before = live.log_size(agency)
                response = await histogram(live, agency, stats_query(live, spec, agency))
                verified = verify_message(response.answer, StatisticsAnswer, keyring)
                assert verified.signer == agency
                assert verified.payload.query_id == spec.query_id
                masked[agency] = list(verified.payload.masked_bins)
                entries = live.log_entries(agency, before)
                assert [e.kind for e in entries] == ["statistics_answered"]
                assert entries[0].fields["release"] == RELEASE
                assert_clean_log(entries)
            width = len(bins(policy, definition))
            exact = {
                agency: node_histogram(
                    live.node(agency).node.store.engine,
                    policy,
                    definition,
                    agency,
                    spec.year,
                    uncertified_indicators(policy, agency),
                )
                for agency in live.agencies
            }
            sums = [sum(masked[a][b] for a in live.agencies) % MODULUS for b in range(width)]
            assert sums == [sum(exact[a][b] for a in live.agencies) for b in range(width)]
            # Alice, the only person: certified TRC blood (health, nationwide), DSD training
            # (learning, nationwide), Chuang Pao account (community, province 50).
            assert [b.key for b in bins(policy, definition)] == [
                "health/national",
                "health/50",
                "learning/national",
                "learning/50",
                "community/50",
                "environment/50",
            ]
            assert sums == [1, 0, 1, 0, 1, 0]
            # No single answer shows its counts: every bin is masked (2^-64 to collide).
            for agency in live.agencies:
                assert masked[agency] != exact[agency]
                assert all(value >= 2**32 for value in masked[agency])
            # The same query id again is a replay.
            with pytest.raises(FedscoreError) as replay:
                await histogram(live, AGENCY, stats_query(live, spec, AGENCY))
            assert replay.value.reason == "REPLAYED_QUERY"

    asyncio.run(scenario())


@dataclass(frozen=True)
class Refusal:
    name: str
    build: Callable[[LiveFederation], Envelope]
    code: Code
    reason: str
    authentic: bool  # whether the refusal entry may name the query id and release


def _unsigned(live: LiveFederation) -> Envelope:
    query = stats_query(live, stats_spec(live), AGENCY)
    query.signature = b""
    return query


def _wrong_type(live: LiveFederation) -> Envelope:
    genuine = stats_query(live, stats_spec(live), AGENCY)
    return sign_bytes(
        "fedscore.v1.ContributionQuery", genuine.payload, live.coordinator.signing_key
    )


REFUSALS = [
    Refusal("unsigned", _unsigned, Code.UNAUTHENTICATED, "UNSIGNED", False),
    Refusal(
        "signed by a relying party",
        lambda live: stats_query(live, stats_spec(live), AGENCY, signer=live.parties["ptt"]),
        Code.UNAUTHENTICATED,
        "UNKNOWN_SIGNER",
        False,
    ),
    Refusal(
        "a contribution query's type",
        _wrong_type,
        Code.UNAUTHENTICATED,
        "WRONG_PAYLOAD_TYPE",
        False,
    ),
    Refusal(
        "addressed to another agency",
        lambda live: stats_query(live, stats_spec(live), "dsd"),
        Code.PERMISSION_DENIED,
        "WRONG_AGENCY",
        False,
    ),
    Refusal(
        "unknown release",
        lambda live: stats_query(live, stats_spec(live, release="salaries-by-name"), AGENCY),
        Code.PERMISSION_DENIED,
        "UNKNOWN_RELEASE",
        True,
    ),
    Refusal(
        "a release nodes do not compute",
        lambda live: stats_query(
            live,
            stats_spec(live, release="score-queries-by-purpose-and-month", contribution_bound=12),
            AGENCY,
        ),
        Code.PERMISSION_DENIED,
        "UNKNOWN_RELEASE",
        True,
    ),
    Refusal(
        "a larger contribution bound",
        lambda live: stats_query(live, stats_spec(live, contribution_bound=50), AGENCY),
        Code.PERMISSION_DENIED,
        "CONTRIBUTION_BOUND_NOT_ALLOWED",
        True,
    ),
    Refusal(
        "a smaller contribution bound",
        lambda live: stats_query(live, stats_spec(live, contribution_bound=1), AGENCY),
        Code.PERMISSION_DENIED,
        "CONTRIBUTION_BOUND_NOT_ALLOWED",
        True,
    ),
    Refusal(
        "a subset of the agencies",
        lambda live: stats_query(live, stats_spec(live, participants=["trc", "dsd"]), AGENCY),
        Code.PERMISSION_DENIED,
        "PARTICIPANT_SET_MISMATCH",
        True,
    ),
    Refusal(
        "an unknown policy",
        lambda live: stats_query(live, stats_spec(live, policy_hash="sha256:" + "ab" * 32), AGENCY),
        Code.FAILED_PRECONDITION,
        "UNKNOWN_POLICY",
        True,
    ),
    Refusal(
        "expired",
        lambda live: stats_query(
            live,
            stats_spec(live, issued_at=int(time.time()) - 120, expires_at=int(time.time()) - 60),
            AGENCY,
        ),
        Code.PERMISSION_DENIED,
        "QUERY_EXPIRED",
        True,
    ),
    Refusal(
        "a log promise for other bytes",
        lambda live: stats_query(
            live, stats_spec(live), AGENCY, promise=live.log_promise(b"another spec")
        ),
        Code.UNAUTHENTICATED,
        "BAD_LOG_PROMISE",
        True,
    ),
    Refusal(
        "no log promise",
        lambda live: stats_query(live, stats_spec(live), AGENCY, promise=Envelope()),
        Code.UNAUTHENTICATED,
        "BAD_LOG_PROMISE",
        True,
    ),
    Refusal(
        "year zero",
        lambda live: stats_query(live, stats_spec(live, year=0), AGENCY),
        Code.INVALID_ARGUMENT,
        "BAD_YEAR",
        True,
    ),
    Refusal(
        "a year that has not begun",
        lambda live: stats_query(
            live,
            stats_spec(live, year=live.coordinator.policy.current_year(time.time()) + 1),
            AGENCY,
        ),
        Code.INVALID_ARGUMENT,
        "BAD_YEAR",
        True,
    ),
    Refusal(
        "a score spec on the histogram path",
        lambda live: stats_query(live, stats_spec(live, kind=QUESTION_KIND_SCORE), AGENCY),
        Code.PERMISSION_DENIED,
        "QUESTION_KIND_MISMATCH",
        True,
    ),
]


def test_bad_statistics_queries_are_refused_logged_and_unanswered(tmp_path: Path) -> None:
    root = make_federation(tmp_path)

    async def scenario() -> None:
        async with live_federation(root, [AGENCY], with_registry=False) as live:
            for row in REFUSALS:
                query = row.build(live)
                before_log = live.log_size(AGENCY)
                before_seen = live.seen_count(AGENCY)
                with pytest.raises(FedscoreError) as refused:
                    await histogram(live, AGENCY, query)
                assert (refused.value.code, refused.value.reason) == (row.code, row.reason), (
                    row.name
                )
                entries = live.log_entries(AGENCY, before_log)
                assert [e.kind for e in entries] == ["statistics_refused"], row.name
                fields = entries[0].fields
                assert fields["reason"] == row.reason
                assert ("query_id" in fields) == row.authentic, row.name
                assert ("release" in fields) == row.authentic, row.name
                assert live.seen_count(AGENCY) == before_seen, row.name
            # A malformed request is refused and logged too.
            before_log = live.log_size(AGENCY)
            call = live.channels[AGENCY].unary_unary(HISTOGRAM)
            with pytest.raises(grpc.RpcError) as malformed:
                await call(b"\x0a\xff\xff", timeout=TIMEOUT)
            assert error_from_rpc(malformed.value).reason == "MALFORMED_MESSAGE"
            entries = live.log_entries(AGENCY, before_log)
            assert [(e.kind, e.fields) for e in entries] == [
                ("statistics_refused", {"reason": "MALFORMED_MESSAGE"})
            ]

    asyncio.run(scenario())
