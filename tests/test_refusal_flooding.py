"""Refusal flooding is bounded: per-caller rate limits, and refusals summarised past an allowance.

- Units, with an injected clock: the token bucket and the per-(caller, method) limiter;
  the refusal recorder's allowance, counting, interval ends, flush on stop, and that
  `allow`/`count` never write (a batch may call them inside its own transaction).
- A real federation (consent registry, three nodes, coordinator: real gRPC servers with
  mutual TLS on 127.0.0.1, real SQLite files):
  * a caller over its rate limit gets RESOURCE_EXHAUSTED / RATE_LIMITED with a retry
    hint, another caller and another method are unaffected, and after the hint's delay
    the caller is served again; the limited call is counted, never logged one by one;
  * 500 malformed or forged requests from one certificate to a node and to the
    coordinator grow each log by at most the allowance plus one summary per interval;
    the summaries' counts are exactly the refusals not logged one by one, per reason;
    another caller's refusal is still logged exactly as before; and the regulator's
    `audit_federation` finds every log consistent, with no anomaly.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from grpc_health.v1 import health_pb2

from audit.client.regulator_state import RegulatorState
from audit.client.verifier import audit_federation
from audit.core import kinds
from audit.core.entries import LogEntry
from audit.store.log import EventLog
from audit.store.refusals import (
    RefusalAllowance,
    RefusalRecorder,
)
from consent import server as consent_server
from coordinator import server as coordinator_server
from fedscore.apps.federation import HELPER_ID, init_federation
from fedscore.errors import Code, FedscoreError, RateLimited
from fedscore.runtime.db import open_engine
from fedscore.runtime.party import Party, load_party
from fedscore.runtime.ratelimit import CallLimiter, RateLimits, TokenBucket
from fedscore.runtime.rpc import call_unary, secure_channel
from fedscore.v1.query_pb2 import (
    ContributeBatchRequest,
    ContributeBatchResponse,
    ScoreRequest,
    ScoreResponse,
)
from helper import server as helper_server
from keys.envelope import sign_bytes
from keys.signing import SigningKey
from node import server as node_server

pytestmark = pytest.mark.integration

AGENCIES = ("trc", "dsd", "chuangpao")
SCORE = "/fedscore.v1.CoordinatorService/Score"
CONTRIBUTE_BATCH = "/fedscore.v1.NodeService/ContributeBatch"
HEALTH = "/grpc.health.v1.Health/Check"
TIMEOUT = 10.0


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# --- the token bucket and the limiter ------------------------------------------------


def test_a_bucket_gives_its_burst_then_says_when_a_token_is_back() -> None:
    bucket = TokenBucket(rate=2.0, burst=3, now=100.0)
    assert [bucket.take(100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(100.0) == pytest.approx(0.5)
    assert bucket.take(100.25) == pytest.approx(0.25)  # half a token back, half to wait
    assert bucket.take(100.5) == 0.0
    # Refilled to the burst and no further, however long it waits.
    assert [bucket.take(1000.0) for _ in range(4)][-1] == pytest.approx(0.5)


def test_the_limiter_keys_buckets_by_caller_and_method() -> None:
    clock = FakeClock(50.0)
    limiter = CallLimiter(RateLimits(calls_per_second=4.0, burst=2), clock)
    limiter.take("ptt", SCORE)
    limiter.take("ptt", SCORE)
    with pytest.raises(RateLimited) as limited:
        limiter.take("ptt", SCORE)
    assert limited.value.code == Code.RESOURCE_EXHAUSTED
    assert limited.value.reason == "RATE_LIMITED"
    assert limited.value.retry_after_seconds == 0.25
    # Another caller, and the same caller on another method, have buckets of their own.
    limiter.take("citizen-portal", SCORE)
    limiter.take("ptt", HEALTH)
    clock.now += 0.25
    limiter.take("ptt", SCORE)


def test_the_retry_hint_is_rounded_up_to_the_millisecond() -> None:
    clock = FakeClock(0.0)
    limiter = CallLimiter(RateLimits(calls_per_second=3.0, burst=1), clock)
    limiter.take("ptt", SCORE)
    with pytest.raises(RateLimited) as limited:
        limiter.take("ptt", SCORE)
    assert limited.value.retry_after_seconds == 0.334  # 1/3 s, never early
    clock.now = 0.334
    limiter.take("ptt", SCORE)


def test_full_buckets_are_forgotten_and_limits_are_validated() -> None:
    clock = FakeClock(0.0)
    limiter = CallLimiter(RateLimits(calls_per_second=1000.0, burst=5), clock)
    for n in range(4_096):
        limiter.take(f"caller-{n}", SCORE)
    clock.now = 1.0  # every bucket has refilled: the next new caller sweeps them out
    limiter.take("late", SCORE)
    assert len(limiter) == 1
    with pytest.raises(ValueError):
        RateLimits(calls_per_second=0.0, burst=1)
    with pytest.raises(ValueError):
        RateLimits(calls_per_second=1.0, burst=0)
    with pytest.raises(ValueError):
        RefusalAllowance(per_interval=1, interval_seconds=0.0)


# --- the refusal recorder ------------------------------------------------------------


def _entries(log: EventLog, start: int = 0) -> list[LogEntry]:
    return log.entries(start, log.size())


def _recorder(tmp_path: Path, per_interval: int = 3) -> tuple[RefusalRecorder, FakeClock]:
    engine = open_engine(f"sqlite:///{tmp_path / 'party.db'}")
    clock = FakeClock(1_000.0)
    allowance = RefusalAllowance(per_interval=per_interval, interval_seconds=10.0)
    return RefusalRecorder(EventLog(engine, "trc"), allowance, clock), clock


def test_refusals_past_the_allowance_are_counted_and_summarised_once_the_interval_ends(
    tmp_path: Path,
) -> None:
    recorder, clock = _recorder(tmp_path)
    log = recorder.log
    for n in range(5):
        clock.now = 1_000.0 + n
        reason = "BAD_SIGNATURE" if n % 2 else "MALFORMED_MESSAGE"
        recorder.record("ptt", "query_refused", {"reason": reason}, {"query_id": f"q{n}"})
    recorder.record("citizen-portal", "score_refused", {"reason": "UNKNOWN_SIGNER"})
    recorder.rate_limited("ptt", SCORE)
    # Under the allowance, exactly as without a recorder; the rest is only counted so far.
    assert [(e.kind, e.fields) for e in _entries(log)] == [
        ("query_refused", {"reason": "MALFORMED_MESSAGE", "query_id": "q0"}),
        ("query_refused", {"reason": "BAD_SIGNATURE", "query_id": "q1"}),
        ("query_refused", {"reason": "MALFORMED_MESSAGE", "query_id": "q2"}),
        ("score_refused", {"reason": "UNKNOWN_SIGNER"}),
    ]
    clock.now = 1_009.9
    assert recorder.flush() == [] and log.size() == 4

    # The interval [1000, 1010) is over: the next refusal first writes its summary.
    clock.now = 1_010.0
    recorder.record("ptt", "query_refused", {"reason": "REPLAYED_QUERY"})
    summary, fresh = _entries(log, 4)
    assert summary.kind == kinds.REFUSALS_SUMMARISED
    assert summary.fields == {
        "caller": "ptt",
        "interval_start": 1000,
        "interval_end": 1010,
        "allowance": 3,
        "count": 3,
        "counts": [
            {"kind": "query_refused", "reason": "BAD_SIGNATURE", "count": 1},
            {"kind": "query_refused", "reason": "MALFORMED_MESSAGE", "count": 1},
            {"kind": kinds.RATE_LIMITED, "reason": "RATE_LIMITED", "count": 1, "method": SCORE},
        ],
    }
    # A new interval, a new allowance: logged one by one again.
    assert (fresh.kind, fresh.fields) == ("query_refused", {"reason": "REPLAYED_QUERY"})


def test_stop_summarises_the_interval_in_progress_and_nothing_twice(tmp_path: Path) -> None:
    recorder, clock = _recorder(tmp_path, per_interval=1)

    async def scenario() -> None:
        recorder.start()
        recorder.record("ptt", "score_refused", {"reason": "MALFORMED_MESSAGE"})
        recorder.count("ptt", "score_refused", "MALFORMED_MESSAGE", times=40)
        clock.now = 1_004.5
        await recorder.stop()

    asyncio.run(scenario())
    logged, summary = _entries(recorder.log)
    assert logged.fields == {"reason": "MALFORMED_MESSAGE"}
    assert (summary.fields["interval_start"], summary.fields["interval_end"]) == (1000, 1004.5)
    assert summary.fields["count"] == 40
    assert recorder.flush(everything=True) == [] and recorder.pending() == 0


def test_allow_and_count_never_write_so_a_batch_may_call_them_in_its_transaction(
    tmp_path: Path,
) -> None:
    recorder, clock = _recorder(tmp_path, per_interval=1)
    log = recorder.log
    recorder.count("coordinator", "query_refused", "QUERY_EXPIRED")
    clock.now = 1_020.0  # the counted interval has ended: a summary is due
    # A batch writer holds SQLite's write lock; a write from elsewhere would wait on it.
    with log.engine.begin() as connection:
        log.append(connection, "query_answered", {"query_id": "a"})
        assert recorder.allow("coordinator") is True
        log.append(connection, "query_refused", {"reason": "BAD_LOG_PROMISE"})
        assert recorder.allow("coordinator") is False
        recorder.count("coordinator", "query_refused", "BAD_LOG_PROMISE")
    assert [e.kind for e in _entries(log)] == ["query_answered", "query_refused"]
    assert recorder.pending() == 1
    recorder.flush(everything=True)
    logged = [(e.kind, e.fields.get("count")) for e in _entries(log)]
    assert logged[2:] == [(kinds.REFUSALS_SUMMARISED, 1), (kinds.REFUSALS_SUMMARISED, 1)]


def test_unloggable_facts_and_callers_still_leave_the_refusal_in_the_log(tmp_path: Path) -> None:
    recorder, _ = _recorder(tmp_path, per_interval=1)
    # A fact the log never holds: the refusal is logged without it.
    recorder.record("ptt", "query_refused", {"reason": "BAD_SEAL"}, {"pseudonym": "ab"})
    # A certificate name that looks like a national ID: counted under its hash.
    recorder.count("1101700123451", "score_refused", "MALFORMED_MESSAGE")
    recorder.flush(everything=True)
    refused, summary = _entries(recorder.log)
    assert refused.fields == {"reason": "BAD_SEAL"}
    assert "caller" not in summary.fields and len(summary.fields["caller_sha256"]) == 64
    assert "1101700123451" not in summary.body


# --- a real federation ----------------------------------------------------------------


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("flooding") / "federation"
    init_federation(root, agency_count=len(AGENCIES), fast_kdf=True)
    return root


@dataclass
class Federation:
    root: Path
    consent: consent_server.Running
    coordinator: coordinator_server.Running | None = None
    nodes: dict[str, node_server.Running] = field(default_factory=dict)
    helper: helper_server.Running | None = None

    def party(self, party_id: str) -> Party:
        return load_party(self.root, party_id)


@asynccontextmanager
async def running(root: Path, **limits: Any) -> AsyncIterator[Federation]:
    """The registry, every node, the helper aggregator and the coordinator, each with
    `limits`; stopped after."""
    fed = Federation(root, await consent_server.start(load_party(root, "consent-registry")))
    try:
        for agency in AGENCIES:
            fed.nodes[agency] = await node_server.start(load_party(root, agency), **limits)
        fed.helper = await helper_server.start(load_party(root, HELPER_ID), **limits)
        fed.coordinator = await coordinator_server.start(load_party(root, "coordinator"), **limits)
        yield fed
    finally:
        if fed.coordinator is not None:
            await fed.coordinator.stop()
        if fed.helper is not None:
            await fed.helper.stop()
        for node in fed.nodes.values():
            await node.stop()
        await fed.consent.stop()


async def _call(caller: Party, peer: str, method: str, request: bytes) -> FedscoreError | None:
    """Send raw request bytes as `caller`; the refusal, or None if the call was served."""
    responses = {SCORE: ScoreResponse, CONTRIBUTE_BATCH: ContributeBatchResponse}
    response = responses.get(method, health_pb2.HealthCheckResponse)
    endpoint = caller.trust.participant(peer).endpoint
    async with secure_channel(endpoint, caller.tls, server_name=peer) as channel:
        try:
            await call_unary(channel, method, request, response, TIMEOUT)
        except FedscoreError as error:
            return error
    return None


def _log_of(root: Path, party_id: str) -> EventLog:
    """The party's log as stored in its database file (read after its server stopped)."""
    party = load_party(root, party_id)
    return EventLog(open_engine(party.db_url), party_id)


def test_a_caller_over_its_rate_gets_a_retry_hint_and_others_are_served(federation: Path) -> None:
    limits = RateLimits(calls_per_second=2.0, burst=3)
    allowance = RefusalAllowance(per_interval=30, interval_seconds=600.0)
    garbage = b"\xff\xff\xff"  # not a ScoreRequest: refused MALFORMED_MESSAGE when handled

    async def scenario() -> tuple[int, float]:
        async with running(federation, rate_limits=limits, refusal_allowance=allowance) as fed:
            ptt, portal = fed.party("ptt"), fed.party("citizen-portal")
            coordinator_log = fed.coordinator.coordinator.store.log  # type: ignore[union-attr]
            before = coordinator_log.size()
            served = [await _call(ptt, "coordinator", SCORE, garbage) for _ in range(3)]
            assert [e.reason if e else None for e in served] == ["MALFORMED_MESSAGE"] * 3
            limited = await _call(ptt, "coordinator", SCORE, garbage)
            assert limited is not None
            assert (limited.code, limited.reason) == (
                Code.RESOURCE_EXHAUSTED,
                "RATE_LIMITED",
            )
            assert limited.retry_after_seconds is not None
            assert 0.0 < limited.retry_after_seconds <= 0.5
            # Another caller, and the same caller's health check, are not held back.
            other = await _call(portal, "coordinator", SCORE, garbage)
            assert other is not None and other.reason == "MALFORMED_MESSAGE"
            assert await _call(ptt, "coordinator", HEALTH, b"") is None
            # Every method is limited, health included.
            health = [await _call(portal, "coordinator", HEALTH, b"") for _ in range(4)]
            assert [e.reason if e else None for e in health] == [None] * 3 + ["RATE_LIMITED"]
            # After the hint's delay the caller is served again.
            await asyncio.sleep(limited.retry_after_seconds)
            again = await _call(ptt, "coordinator", SCORE, garbage)
            assert again is not None and again.reason == "MALFORMED_MESSAGE"
            # Handled refusals were logged one by one; the limited calls were not.
            new = _entries(coordinator_log, before)
            assert [(e.kind, e.fields) for e in new] == [
                ("score_refused", {"reason": "MALFORMED_MESSAGE"})
            ] * 5
            return before + len(new), time.time()

    size_at_stop, stopped_at = asyncio.run(scenario())
    # Stopping wrote the interval in progress: one summary per caller limited in it.
    summaries = _entries(_log_of(federation, "coordinator"), size_at_stop)
    assert sorted((s.fields["caller"], s.fields["counts"]) for s in summaries) == [
        (
            "citizen-portal",
            [{"kind": kinds.RATE_LIMITED, "reason": "RATE_LIMITED", "count": 1, "method": HEALTH}],
        ),
        (
            "ptt",
            [{"kind": kinds.RATE_LIMITED, "reason": "RATE_LIMITED", "count": 1, "method": SCORE}],
        ),
    ]
    assert all(s.fields["interval_end"] <= stopped_at + 1 for s in summaries)


FLOOD = 500
ALLOWANCE = RefusalAllowance(per_interval=20, interval_seconds=2.0)


def _forged(method: str) -> bytes:
    """A well-formed request whose envelope is signed by a key no trust registry lists."""
    if method == SCORE:
        envelope = sign_bytes("fedscore.v1.ScoreQuery", b"\x08\x01", SigningKey.generate())
        return bytes(ScoreRequest(query=envelope).SerializeToString())
    envelope = sign_bytes("fedscore.v1.ContributionBatch", b"\x08\x01", SigningKey.generate())
    return bytes(ContributeBatchRequest(batch=envelope).SerializeToString())


def _flood_requests(method: str) -> list[bytes]:
    """Half malformed bytes, half well-formed requests carrying a forged envelope."""
    return [b"\xff\xff\xff" if n % 2 else _forged(method) for n in range(FLOOD)]


async def _flood(caller: Party, peer: str, method: str) -> tuple[Counter[str], float, float]:
    """Send FLOOD refused requests, 25 at a time: reasons, first and last send time."""
    requests = _flood_requests(method)
    endpoint = caller.trust.participant(peer).endpoint
    reasons: Counter[str] = Counter()
    started = time.time()
    async with secure_channel(endpoint, caller.tls, server_name=peer) as channel:

        async def one(raw: bytes) -> str:
            response = ScoreResponse if method == SCORE else ContributeBatchResponse
            try:
                await call_unary(channel, method, raw, response, TIMEOUT)
            except FedscoreError as error:
                return error.reason
            return "ANSWERED"

        for start in range(0, FLOOD, 25):
            reasons.update(
                await asyncio.gather(*(one(raw) for raw in requests[start : start + 25]))
            )
    return reasons, started, time.time()


def _intervals(started: float, ended: float) -> int:
    width = ALLOWANCE.interval_seconds
    return math.floor(ended / width) - math.floor(started / width) + 1


def _check_bounded(
    new: list[LogEntry], kind: str, sent: Counter[str], started: float, ended: float
) -> None:
    """Growth within the bound; logged one by one + summarised == sent, per reason."""
    from_ptt = [
        e for e in new if e.kind == kinds.REFUSALS_SUMMARISED and e.fields["caller"] == "ptt"
    ]
    one_by_one = [e for e in new if e.kind == kind]
    intervals = _intervals(started, ended)
    assert len(new) == len(one_by_one) + len(from_ptt)  # nothing else was logged
    assert len(one_by_one) <= ALLOWANCE.per_interval * intervals
    assert len(from_ptt) <= intervals
    assert len(new) <= (ALLOWANCE.per_interval + 1) * intervals < FLOOD / 5
    summarised: Counter[str] = Counter()
    for summary in from_ptt:
        counts = summary.fields["counts"]
        assert summary.fields["count"] == sum(c["count"] for c in counts)
        for row in counts:
            assert row["kind"] == kind
            summarised[row["reason"]] += row["count"]
    logged = Counter(e.fields["reason"] for e in one_by_one)
    assert sum(summarised.values()) == FLOOD - len(one_by_one)
    assert logged + summarised == sent


def test_a_flood_of_refusals_grows_no_log_without_bound_and_the_logs_still_verify(
    federation: Path,
) -> None:
    regulator = load_party(federation, "regulator")

    async def scenario() -> None:
        async with running(federation, refusal_allowance=ALLOWANCE) as fed:
            assert fed.coordinator is not None
            ptt, portal = fed.party("ptt"), fed.party("citizen-portal")
            node_log = fed.nodes["trc"].node.log
            coordinator_log = fed.coordinator.coordinator.store.log
            node_before, coordinator_before = node_log.size(), coordinator_log.size()

            node_sent, node_started, node_ended = await _flood(ptt, "trc", CONTRIBUTE_BATCH)
            assert sum(node_sent.values()) == FLOOD and "ANSWERED" not in node_sent
            sent, started, ended = await _flood(ptt, "coordinator", SCORE)
            assert sum(sent.values()) == FLOOD and "ANSWERED" not in sent
            # Another caller's refusal, in the same interval, is logged exactly as before.
            refused = await _call(portal, "coordinator", SCORE, _forged(SCORE))
            assert refused is not None
            last = [e for e in _entries(coordinator_log) if e.kind == "score_refused"][-1]
            assert last.fields == {"reason": refused.reason}

            # The periodic task writes the summaries once their intervals have ended.
            boundary = ALLOWANCE.interval_start(time.time()) + ALLOWANCE.interval_seconds
            await asyncio.sleep(boundary - time.time() + 0.5)
            assert fed.nodes["trc"].node.refusals.pending() == 0
            assert fed.coordinator.coordinator.refusals.pending() == 0
            node_new = _entries(node_log, node_before)
            _check_bounded(node_new, "query_refused", node_sent, node_started, node_ended)
            coordinator_new = [
                e for e in _entries(coordinator_log, coordinator_before) if e.index != last.index
            ]
            _check_bounded(coordinator_new, "score_refused", sent, started, ended)

            report = await audit_federation(
                regulator, RegulatorState(open_engine(regulator.db_url))
            )
            assert report.consistent, report.to_json()
            assert report.anomalies == [], report.to_json()

    asyncio.run(scenario())
