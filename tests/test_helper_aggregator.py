"""No one sees an exact population count: the helper aggregator adds the noise (ADR 0019).

A real federation: the consent registry, every agency node and the helper aggregator serve
over mutual TLS in-process, with demo records; the coordinator's real publisher (its key,
its database, its log) publishes releases, and every byte it receives is recorded on its
channels, as a hostile operator of the coordinator would record it. What the helper
receives is what the coordinator sends it, recorded the same way and opened with the
helper's own key.

- The coordinator's view: no value it received (a node's share of a bin, the sum of its
  shares, the helper's noisy share sum) equals an exact bin count of any agency or of the
  federation; and with the nodes' share randomness fixed by a test seed for the
  coordinator's shares, two federations with different records hand it byte-identical
  shares: its view does not depend on the counts.
- The helper's view, the same: its opened shares and their sums are no count, and with the
  seed fixed for the helper's shares they are byte-identical over different records.
- With a huge epsilon the released counts equal the ground truth of the export files.
- A refused release (budget, no helper serving, the helper down after the nodes answered,
  the helper's own ledger refusing) publishes nothing, and leaves both aggregators'
  ledgers as they were.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from harness.stats import (
    PARTICIPATION,
    Servers,
    StatsFederation,
    generous,
    helper_id,
    servers,
    stats_federation,
    truth_participation,
)

pytest.importorskip("matplotlib")

from sqlalchemy import Engine

from audit.client.regulator_state import RegulatorState
from audit.client.verifier import audit_federation
from audit.store.log import EventLog
from coordinator.statistics import Publisher, open_publisher, publish_release
from fedscore.apps.insider import HostileCoordinator
from fedscore.errors import FedscoreError
from fedscore.protocol.helper_messages import SignedHelperShare
from fedscore.runtime.budget import PrivacyLedger, release_cost_nano
from fedscore.runtime.db import open_engine
from fedscore.runtime.party import load_party
from fedscore.v1.helper_pb2 import (
    NoiseOrder,
    NoiseShareSumRequest,
    NoiseShareSumResponse,
    NoisyShareSum,
)
from fedscore.v1.statistics_pb2 import HistogramBatchResponse, StatisticsAnswer
from keys.masks import MODULUS
from keys.shares import Aggregator, SeededShares, open_shares, pack, sum_shares
from node.histogram import node_histogram
from node.service import uncertified_indicators
from policies.releases import bins

pytestmark = pytest.mark.integration
SEED = b"issue 18: a seed only a test ever gives a node"
SMALL = 2**32  # far above any count, far below a random 64-bit value
HISTOGRAM = "/fedscore.v1.NodeStatisticsService/HistogramBatch"
NOISE = "/fedscore.v1.HelperService/NoiseShareSum"


@dataclass
class Wire:
    """Every message the coordinator sent and received, by method, as raw bytes."""

    sent: list[tuple[str, bytes]] = field(default_factory=list)
    received: list[tuple[str, bytes]] = field(default_factory=list)

    def of(self, direction: list[tuple[str, bytes]], method: str) -> list[bytes]:
        return [raw for called, raw in direction if called == method]


class Recording:
    """A channel that records what crosses it, for the coordinator's publisher."""

    def __init__(self, inner: Any, wire: Wire) -> None:
        self._inner, self._wire = inner, wire

    def unary_unary(self, method: str, request_serializer: Any, response_deserializer: Any) -> Any:
        def serialize(request: Any) -> bytes:
            raw: bytes = request_serializer(request)
            self._wire.sent.append((method, raw))
            return raw

        def deserialize(raw: bytes) -> Any:
            self._wire.received.append((method, raw))
            return response_deserializer(raw)

        return self._inner.unary_unary(
            method, request_serializer=serialize, response_deserializer=deserialize
        )

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def recorded(publisher: Publisher) -> Wire:
    """Record every byte the publisher's channels carry from now on."""
    wire = Wire()
    channels = publisher.asker.channels
    original = channels.get
    channels.get = lambda agency: Recording(original(agency), wire)  # type: ignore[method-assign]
    link: Any = publisher.noiser
    link.channel.channel = Recording(link.channel.channel, wire)
    return wire


@dataclass
class Seen:
    """What one release showed each aggregator, and the exact counts it must not show."""

    coordinator_shares: dict[str, list[int]]
    helper_noisy_sums: list[int]
    helper_shares: dict[str, list[int]]
    exact: dict[str, list[int]]  # per agency, per bin
    released: dict[str, int]

    @property
    def federated(self) -> list[int]:
        return [sum(column) for column in zip(*self.exact.values(), strict=True)]

    def counts(self) -> set[int]:
        return {v for values in self.exact.values() for v in values} | set(self.federated)


def _values(document: dict[str, Any]) -> dict[str, int]:
    return {v["bin"]: v["value"] for v in document["values"]}


def _opened(fed: StatsFederation, wire: Wire, width: int) -> dict[str, list[int]]:
    """As the helper: the shares in the order it was sent, opened with its own key."""
    helper = load_party(fed.root, helper_id(fed.root))
    [raw] = wire.of(wire.sent, NOISE)
    order = NoiseOrder.FromString(NoiseShareSumRequest.FromString(raw).order.payload)
    opened = {}
    for envelope in order.shares:
        share = SignedHelperShare.verify(envelope, helper.trust.agency_keys()).share
        opened[share.agency_id] = open_shares(
            share.sealed_shares, helper.box, share.query_hash, share.agency_id, width
        )
    return opened


async def release_seen(fed: StatsFederation, running: Servers) -> Seen:
    """Publish the participation release as the real coordinator, recording its wire."""
    publisher = open_publisher(load_party(fed.root, "coordinator"))
    wire = recorded(publisher)
    try:
        published = await publish_release(publisher, PARTICIPATION)
    finally:
        await publisher.close()
    definition = fed.policy.statistics_rules.release(PARTICIPATION)
    width = len(bins(fed.policy, definition))
    shares = {}
    for raw in wire.of(wire.received, HISTOGRAM):
        [outcome] = HistogramBatchResponse.FromString(raw).outcomes
        answer = StatisticsAnswer.FromString(outcome.answer.payload)
        shares[answer.agency_id] = list(answer.coordinator_shares)
    [raw] = wire.of(wire.received, NOISE)
    noisy = NoisyShareSum.FromString(NoiseShareSumResponse.FromString(raw).sum.payload)
    exact = {
        agency: node_histogram(
            running.nodes[agency].node.store.engine,
            fed.policy,
            definition,
            agency,
            int(published.document["year"]),
            uncertified_indicators(fed.policy, agency),
        )
        for agency in fed.agencies
    }
    return Seen(
        shares,
        list(noisy.noisy_sums),
        _opened(fed, wire, width),
        exact,
        _values(published.document),
    )


def _federation(root: Path, seed: int, citizens: int) -> StatsFederation:
    return stats_federation(root, citizens=citizens, seed=seed, change=generous(1e6, 1e7))


async def _seen_with(fed: StatsFederation, drawn_for: Aggregator) -> Seen:
    async with servers(fed.root, share_source=lambda: SeededShares(SEED, drawn_for)) as running:
        return await release_seen(fed, running)


def _assert_no_count(values: list[int], seen: Seen) -> None:
    assert not set(values) & seen.counts()
    assert all(SMALL <= value <= MODULUS - SMALL for value in values)


def test_the_coordinators_view_holds_no_count_and_does_not_depend_on_the_counts(
    tmp_path: Path,
) -> None:
    one = _federation(tmp_path / "one", seed=11, citizens=80)
    other = _federation(tmp_path / "other", seed=23, citizens=140)
    first = asyncio.run(_seen_with(one, Aggregator.COORDINATOR))
    second = asyncio.run(_seen_with(other, Aggregator.COORDINATOR))
    assert first.exact != second.exact  # different records, different counts

    for seen in (first, second):
        width = len(seen.federated)
        for shares in seen.coordinator_shares.values():
            _assert_no_count(shares, seen)
        _assert_no_count(sum_shares(seen.coordinator_shares.values(), width), seen)
        _assert_no_count(seen.helper_noisy_sums, seen)
    # The coordinator's view: byte for byte the same over different records.
    assert (
        sorted(first.coordinator_shares)
        == sorted(second.coordinator_shares)
        == sorted(one.agencies)
    )
    for agency in one.agencies:
        assert pack(first.coordinator_shares[agency]) == pack(second.coordinator_shares[agency])

    # And the release is right: epsilon 1e6 adds no noise but for ~e^-250000.
    definition = one.policy.statistics_rules.release(PARTICIPATION)
    year = _year(one)
    for fed, seen in ((one, first), (other, second)):
        truth = truth_participation(fed, definition.contribution_bound, year)
        assert seen.released == {cell: truth.get(cell, 0) for cell in seen.released}
        assert sum(seen.released.values()) == sum(seen.federated) > 0


def test_the_helpers_view_holds_no_count_and_does_not_depend_on_the_counts(
    tmp_path: Path,
) -> None:
    one = _federation(tmp_path / "one", seed=11, citizens=80)
    other = _federation(tmp_path / "other", seed=23, citizens=140)
    first = asyncio.run(_seen_with(one, Aggregator.HELPER))
    second = asyncio.run(_seen_with(other, Aggregator.HELPER))
    assert first.exact != second.exact

    for seen in (first, second):
        width = len(seen.federated)
        for shares in seen.helper_shares.values():
            _assert_no_count(shares, seen)
        _assert_no_count(sum_shares(seen.helper_shares.values(), width), seen)
        # The coordinator's shares are no counts either, whoever got the drawn ones.
        for shares in seen.coordinator_shares.values():
            _assert_no_count(shares, seen)
    for agency in one.agencies:
        assert pack(first.helper_shares[agency]) == pack(second.helper_shares[agency])
    assert first.released != second.released  # the releases did follow the records


# --- a refused release writes nothing at either aggregator ---------------------------------


@dataclass(frozen=True)
class Ledgers:
    """Each aggregator's spent epsilon, log size and bundles, to compare before and after."""

    coordinator_spent: int
    helper_spent: int
    coordinator_log: int
    helper_log: int
    bundles: tuple[str, ...]


@contextmanager
def open_engine_of(fed: StatsFederation, party_id: str) -> Iterator[Engine]:
    """The database of `party_id`, as its operator would open it."""
    engine = open_engine(load_party(fed.root, party_id).db_url)
    try:
        yield engine
    finally:
        engine.dispose()


def _spent(fed: StatsFederation, ledger: PrivacyLedger) -> int:
    return sum(s.spent_nano for s in ledger.spends("agency-records", _year(fed)))


def ledgers(fed: StatsFederation, publisher: Publisher) -> Ledgers:
    helper = helper_id(fed.root)
    with open_engine_of(fed, helper) as engine:
        helper_spent = _spent(fed, PrivacyLedger(engine))
        helper_log = EventLog(engine, helper).size()
    releases = fed.root / "orgs" / "coordinator" / "releases"
    return Ledgers(
        _spent(fed, publisher.ledger),
        helper_spent,
        publisher.log.size(),
        helper_log,
        tuple(sorted(p.name for p in releases.iterdir())) if releases.exists() else (),
    )


def _year(fed: StatsFederation) -> int:
    return fed.policy.current_year(int(time.time()))


def _kinds_since(publisher: Publisher, start: int) -> list[str]:
    return [e.kind for e in publisher.log.entries(start, publisher.log.size())]


@asynccontextmanager
async def publishing(fed: StatsFederation) -> AsyncIterator[tuple[Publisher, Servers]]:
    async with servers(fed.root, coordinator=True) as running:
        publisher = open_publisher(load_party(fed.root, "coordinator"), deadline=5.0)
        try:
            yield publisher, running
        finally:
            await publisher.close()


def test_a_refused_release_writes_nothing_at_either_aggregator(tmp_path: Path) -> None:
    def tight(statistics: dict[str, Any]) -> None:
        generous(1.0, 2.0)(statistics)

    fed = stats_federation(tmp_path / "federation", citizens=60, change=tight)

    async def scenario() -> None:
        async with publishing(fed) as (publisher, running):
            # 1. An honest release: both ledgers charge it, one bundle.
            before = ledgers(fed, publisher)
            published = await publish_release(publisher, PARTICIPATION)
            assert published.document["noised_by"] == helper_id(fed.root)
            after = ledgers(fed, publisher)
            assert after.coordinator_spent == after.helper_spent == 10**9
            assert len(after.bundles) == len(before.bundles) + 1

            # 2. The helper's own ledger cannot pay (it disagrees: charged out of band).
            with open_engine_of(fed, helper_id(fed.root)) as engine:
                with engine.begin() as connection:
                    PrivacyLedger(engine).spend(
                        connection,
                        release_id="out-of-band",
                        release=PARTICIPATION,
                        dataset="agency-records",
                        year=_year(fed),
                        total_epsilon=2.0,
                        cost_nano=10**9,
                        now=0,
                    )
            state = ledgers(fed, publisher)
            with pytest.raises(FedscoreError) as refused:
                await publish_release(publisher, PARTICIPATION)
            assert refused.value.reason == "BUDGET_EXHAUSTED"
            now = ledgers(fed, publisher)
            assert (now.coordinator_spent, now.helper_spent, now.bundles) == (
                state.coordinator_spent,
                state.helper_spent,
                state.bundles,
            )
            assert _kinds_since(publisher, state.coordinator_log) == [
                "statistics_query_issued",
                "statistics_failed",
                "statistics_refused",
            ]
            assert now.helper_log == state.helper_log + 1  # its refusal, nothing charged

            # 3. The coordinator's own budget is spent: refused before anyone is asked.
            with publisher.engine.begin() as connection:
                publisher.ledger.spend(
                    connection,
                    release_id="out-of-band-too",
                    release=PARTICIPATION,
                    dataset="agency-records",
                    year=_year(fed),
                    total_epsilon=2.0,
                    cost_nano=10**9,
                    now=0,
                )
            state = ledgers(fed, publisher)
            node_logs = {a: n.node.log.size() for a, n in running.nodes.items()}
            with pytest.raises(FedscoreError) as refused:
                await publish_release(publisher, PARTICIPATION)
            assert refused.value.reason == "BUDGET_EXHAUSTED"
            assert ledgers(fed, publisher) == Ledgers(
                state.coordinator_spent,
                state.helper_spent,
                state.coordinator_log + 1,  # "statistics_refused"
                state.helper_log,
                state.bundles,
            )
            assert {a: n.node.log.size() for a, n in running.nodes.items()} == node_logs

    asyncio.run(scenario())


def test_no_helper_serving_means_no_release_and_nothing_spent(tmp_path: Path) -> None:
    """Down before the release: refused before anything is spent or any node is asked.
    Down after the nodes answered: the coordinator gives its reservation back, the helper
    charged nothing, and the regulator sees a failure, not a histogram taken uncharged."""
    fed = stats_federation(tmp_path / "federation", citizens=60)

    async def scenario() -> None:
        async with publishing(fed) as (publisher, running):
            await running.stop_helper()
            state = ledgers(fed, publisher)
            node_logs = {a: n.node.log.size() for a, n in running.nodes.items()}
            with pytest.raises(FedscoreError) as refused:
                await publish_release(publisher, PARTICIPATION)
            assert refused.value.reason == "HELPER_UNAVAILABLE"
            assert "nothing spent" in refused.value.message
            assert _kinds_since(publisher, state.coordinator_log) == ["statistics_refused"]
            assert {a: n.node.log.size() for a, n in running.nodes.items()} == node_logs
            after = ledgers(fed, publisher)
            assert (after.coordinator_spent, after.helper_spent, after.helper_log) == (
                0,
                0,
                state.helper_log,
            )
            assert after.bundles == ()

            # It seemed up when asked, and was gone when the shares were ready.
            async def seems_up() -> None:
                return None

            link: Any = publisher.noiser
            link.ready = seems_up
            with pytest.raises(FedscoreError) as failed:
                await publish_release(publisher, PARTICIPATION)
            assert failed.value.reason == "HELPER_UNAVAILABLE"
            assert _kinds_since(publisher, after.coordinator_log) == [
                "statistics_query_issued",
                "statistics_failed",
                "statistics_refused",
            ]
            assert ledgers(fed, publisher) == Ledgers(
                0, 0, publisher.log.size(), state.helper_log, ()
            )
            # The helper back, the audit is clean: the nodes answered, the coordinator's
            # log says the helper failed, and the helper's log says it noised nothing.
            running.helper = await helper_server_start(fed)
            report = await audit(fed)
            assert report.clean, report.anomalies

    asyncio.run(scenario())


async def helper_server_start(fed: StatsFederation) -> Any:
    from helper import server as helper_server

    return await helper_server.start(load_party(fed.root, helper_id(fed.root)))


async def audit(fed: StatsFederation) -> Any:
    regulator = load_party(fed.root, "regulator")
    engine = open_engine(regulator.db_url)
    try:
        return await audit_federation(regulator, RegulatorState(engine))
    finally:
        engine.dispose()


def test_the_regulator_matches_the_helpers_charges_to_the_coordinators_releases(
    tmp_path: Path,
) -> None:
    """An honest release audits clean, the helper's log included. The coordinator's
    operator then asks every node and the helper for noisy sums it never releases: the
    helper refuses a second order for the same query and an epsilon it does not charge,
    and the regulator names the charge no release matches."""
    fed = stats_federation(tmp_path / "federation", citizens=60)

    async def scenario() -> None:
        async with servers(fed.root, coordinator=True):
            publisher = open_publisher(load_party(fed.root, "coordinator"))
            try:
                await publish_release(publisher, PARTICIPATION)
            finally:
                await publisher.close()
            honest = await audit(fed)
            assert honest.clean, honest.anomalies
            assert helper_id(fed.root) in {v.party for v in honest.verdicts}

            insider = HostileCoordinator.open(fed.root)
            try:
                spec = insider.histogram_spec(PARTICIPATION, _year(fed))
                asked = insider.log_histogram(spec)
                answers = await asyncio.gather(
                    *(insider.ask_histogram_shares(a, asked) for a in fed.agencies)
                )
                shares = []
                for answer in answers:
                    assert not isinstance(answer, FedscoreError), answer
                    shares.append(answer[1])
                definition = fed.policy.statistics_rules.release(PARTICIPATION)
                cost = release_cost_nano(fed.policy, definition)
                cheaper = await insider.ask_helper(asked, shares, "cheap", cost // 2)
                assert isinstance(cheaper, FedscoreError)
                assert cheaper.reason == "BUDGET_DISAGREEMENT"
                noisy = await insider.ask_helper(asked, shares, "unreleased", cost)
                assert not isinstance(noisy, FedscoreError), noisy
                again = await insider.ask_helper(asked, shares, "again", cost)
                assert isinstance(again, FedscoreError) and again.reason == "REPLAYED_QUERY"
            finally:
                insider.close()
            report = await audit(fed)
            assert report.consistent
            named = {(a.party, a.reason) for a in report.anomalies}
            assert named == {
                (helper_id(fed.root), "HELPER_CHARGE_NOT_RELEASED"),
                ("coordinator", "STATISTICS_NOT_CHARGED"),
            }

    asyncio.run(scenario())
