"""A hostile coordinator operator against statistics, and the regulator's audit, end to end.

The federation is real: agency nodes with demo records, the consent registry and the
coordinator serve over mutual TLS on 127.0.0.1. An honest release is published through
`publish_release` and the audit is clean. Then an insider holding the coordinator's real
key and database does what `coordinator/histograms.py` does, minus the release: logs
"statistics_query_issued" in the coordinator's own log (so every node's promise checks
out), signs a log promise and a `StatisticsQuery` per node, and collects every node's
answer over mutual TLS, spending no privacy budget. Then, under one query id, it asks
one node one spec and the other nodes another, each logged as if honest. The regulator
must name both attempts; the nodes' answered values do not matter here.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from pathlib import Path

import pytest
from harness.stats import PARTICIPATION, NewStatsFederation, servers

pytest.importorskip("matplotlib")

from audit.client.regulator_state import RegulatorState
from audit.client.verifier import AuditReport, audit_federation
from audit.store.log import EventLog
from coordinator.histograms import HISTOGRAM_METHOD
from coordinator.statistics import open_publisher, publish_release
from fedscore.runtime.db import open_engine
from fedscore.runtime.party import Party, load_party
from fedscore.runtime.rpc import call_unary, secure_channel
from fedscore.v1.envelope_pb2 import Envelope
from fedscore.v1.query_pb2 import QUESTION_KIND_HISTOGRAM, LogPromise
from fedscore.v1.statistics_pb2 import (
    HistogramBatchRequest,
    HistogramBatchResponse,
    HistogramItem,
    StatisticsQuery,
    StatisticsSpec,
)
from fedscore.v1.trust_pb2 import Role
from keys.envelope import sign_message
from policies.releases import participants

pytestmark = pytest.mark.integration
Found = set[tuple[str, int | None, str]]


def _spec(coordinator: Party, query_id: str, year: int, now: int) -> bytes:
    """A valid histogram spec, as `coordinator.histograms.statistics_spec` builds one."""
    policy = coordinator.policy
    definition = policy.statistics_rules.release(PARTICIPATION)
    spec = StatisticsSpec(
        query_id=query_id,
        release=definition.name,
        policy_hash=policy.content_hash,
        year=year,
        participants=list(participants(policy)),
        contribution_bound=definition.contribution_bound,
        issued_at=now,
        expires_at=now + 300,
        coordinator=coordinator.id,
        kind=QUESTION_KIND_HISTOGRAM,
        helper=coordinator.trust.by_role(Role.ROLE_HELPER_AGGREGATOR)[0].id,
    )
    return spec.SerializeToString(deterministic=True)


async def _ask_unreleased(
    coordinator: Party, log: EventLog, query_id: str, years: dict[str, int]
) -> int:
    """Log, promise and ask each agency its year's spec under `query_id`; release nothing.

    Returns the coordinator log index of the first "statistics_query_issued" written.
    """
    now = int(time.time())
    first = log.size()
    logged: dict[int, tuple[bytes, bytes, Envelope]] = {}
    for year in sorted(set(years.values())):
        spec = _spec(coordinator, query_id, year, now)
        query_hash = hashlib.sha256(spec).digest()
        ref = log.append_now(
            "statistics_query_issued",
            {
                "query_id": query_id,
                "query_hash": query_hash.hex(),
                "release": PARTICIPATION,
                "year": year,
                "participants": list(participants(coordinator.policy)),
                "kind": "histogram",
            },
        )
        promise = LogPromise(
            origin=coordinator.id,
            index=ref.index,
            leaf_hash=ref.leaf_hash,
            query_hash=query_hash,
            logged_at=ref.logged_at,
        )
        logged[year] = (spec, query_hash, sign_message(promise, coordinator.signing_key))
    for agency, year in years.items():
        spec, _, promise_envelope = logged[year]
        query = StatisticsQuery(spec=spec, agency_id=agency, log_promise=promise_envelope)
        item = HistogramItem(query=sign_message(query, coordinator.signing_key))
        request = HistogramBatchRequest(items=[item])  # as production asks: a batch of one
        endpoint = coordinator.trust.participant(agency).endpoint
        async with secure_channel(endpoint, coordinator.tls, server_name=agency) as channel:
            response = await call_unary(
                channel, HISTOGRAM_METHOD, request, HistogramBatchResponse, 30
            )
        [outcome] = response.outcomes
        assert outcome.answer.payload, f"{agency} did not answer: {outcome.refusal.reason}"
    return first


def _found(report: AuditReport) -> Found:
    return {(a.party, a.index, a.reason) for a in report.anomalies}


def test_the_regulator_names_unreleased_and_split_statistics_queries(
    new_stats_federation: NewStatsFederation,
) -> None:
    fed = new_stats_federation(citizens=60)
    regulator = load_party(fed.root, "regulator")
    year = regulator.policy.current_year(int(time.time()))

    async def scenario() -> None:
        engine = open_engine(regulator.db_url)
        state = RegulatorState(engine)
        async with servers(fed.root, coordinator=True):
            publisher = open_publisher(load_party(fed.root, "coordinator"))
            try:
                await publish_release(publisher, PARTICIPATION, year)
            finally:
                await publisher.close()
            honest = await audit_federation(regulator, state)
            assert honest.clean, honest.anomalies

            # The insider: the coordinator's real key and database, no release.
            coordinator = load_party(fed.root, "coordinator")
            coordinator_engine = open_engine(coordinator.db_url)
            log = EventLog(coordinator_engine, coordinator.id)
            agencies = list(participants(coordinator.policy))
            try:
                unreleased = await _ask_unreleased(
                    coordinator, log, secrets.token_hex(16), dict.fromkeys(agencies, year)
                )
                report = await audit_federation(regulator, state)
                assert report.consistent  # every log is intact; the parties disagree
                assert _found(report) == {("coordinator", unreleased, "STATISTICS_NOT_CHARGED")}
                assert all(a in report.anomalies[0].detail for a in agencies)

                # One query id, two specs: trc alone is asked about last year.
                split = {agency: year for agency in agencies} | {agencies[0]: year - 1}
                first = await _ask_unreleased(coordinator, log, secrets.token_hex(16), split)
            finally:
                coordinator_engine.dispose()
            answers = {a: log_size(fed.root, a) - 1 for a in agencies}
            report = await audit_federation(regulator, state)
            assert report.consistent
            assert _found(report) == {
                ("coordinator", unreleased, "STATISTICS_NOT_CHARGED"),
                ("coordinator", first + 1, "QUERY_ID_REUSED"),
                *((agency, answers[agency], "SPEC_MISMATCH") for agency in agencies),
            }
        engine.dispose()

    asyncio.run(scenario())


def log_size(root: Path, party_id: str) -> int:
    party = load_party(root, party_id)
    engine = open_engine(party.db_url)
    try:
        return EventLog(engine, party.id).size()
    finally:
        engine.dispose()
