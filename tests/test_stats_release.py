"""Whole releases over a real federation: registry and nodes serve over mutual TLS on
127.0.0.1, records come from the demo generator's export files, the coordinator publishes.

- With a huge epsilon the noise is (with overwhelming probability) zero, so the released
  histogram must equal the ground truth counted from the export files independently.
- With a real epsilon, the same release twice gives different values.
- The budget: releases until one is refused; the refused one publishes nothing, asks no
  node and spends nothing; the ledger survives a restart; datasets have separate budgets.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from harness.stats import (
    BANDS,
    PARTICIPATION,
    QUERIES,
    NewStatsFederation,
    StatsFederation,
    generous,
    servers,
    stats_federation,
    truth_bands,
    truth_participation,
)

pytest.importorskip("matplotlib")

from audit.store.log import EventLog
from coordinator.bundle import verify_bundle
from coordinator.statistics import Publisher, open_publisher, publish_release
from fedscore.apps import client
from fedscore.apps.cli.stats_commands import budget
from fedscore.errors import FedscoreError
from fedscore.runtime.party import load_party

pytestmark = pytest.mark.integration
BANGKOK = ZoneInfo("Asia/Bangkok")
YEAR = datetime.now(BANGKOK).year


def _publisher(fed: StatsFederation) -> Publisher:
    return open_publisher(load_party(fed.root, "coordinator"))


def _values(document: dict[str, object]) -> dict[str, int]:
    values = document["values"]
    assert isinstance(values, list)
    return {v["bin"]: v["value"] for v in values}


def _kinds(log: EventLog) -> list[str]:
    return [entry.kind for entry in log.entries(0, log.size())]


@pytest.fixture(scope="module")
def exact(tmp_path_factory: pytest.TempPathFactory) -> StatsFederation:
    """Every release at epsilon 1e6: scale ~4e-6, so noise is zero but for ~e^-250000."""
    root = tmp_path_factory.mktemp("stats-exact") / "federation"
    return stats_federation(root, change=generous(1e6, 1e7))


def test_huge_epsilon_releases_equal_the_ground_truth_of_the_files(exact: StatsFederation) -> None:
    async def scenario() -> None:
        async with servers(exact.root):
            publisher = _publisher(exact)
            try:
                participation = await publish_release(publisher, PARTICIPATION)
                bands = await publish_release(publisher, BANDS)
            finally:
                await publisher.close()
        definition = exact.policy.statistics_rules.release(PARTICIPATION)
        truth = truth_participation(exact, definition.contribution_bound, YEAR)
        released = _values(participation.document)
        assert set(truth) <= set(released)
        assert released == {cell: truth.get(cell, 0) for cell in released}
        assert sum(released.values()) > 300  # the demo data is not trivially empty
        # The data exercises the per-person bound: without it, the counts would differ.
        assert truth != truth_participation(exact, 99, YEAR)

        thresholds = [b.min_points for b in exact.policy.statistics_rules.release(BANDS).bands]
        assert list(_values(bands.document).values()) == truth_bands(exact, thresholds, YEAR)

        for published in (participation, bands):
            document = published.document
            assert document["year"] == YEAR
            assert 0 < document["epsilon_spent"] <= 1e6
            assert document["policy_hash"] == exact.policy.content_hash
            assert document["participants"] == exact.agencies
        assert bands.document["budget"]["remaining"] == pytest.approx(1e7 - 2e6)
        assert participation.release_id.startswith(f"{YEAR}-{PARTICIPATION}-")
        assert participation.release_id != bands.release_id
        keyring = load_party(exact.root, "regulator").trust.coordinator_keys()
        assert verify_bundle(bands.directory, keyring).release_id == bands.release_id

    asyncio.run(scenario())


def test_score_query_counts_keep_at_most_the_bound_per_token(exact: StatsFederation) -> None:
    async def scenario() -> None:
        async with servers(exact.root, coordinator=True):
            portal = load_party(exact.root, "citizen-portal")
            ptt = load_party(exact.root, "ptt")
            citizen = exact.data.demo_citizen
            own = await client.grant(portal, citizen, "self-view", "citizen-portal", 1)
            for _ in range(14):
                await client.score(portal, own.token, "self-view")
            discount = await client.grant(portal, citizen, "ptt-fuel-discount", "ptt", 30)
            for _ in range(2):
                await client.score(ptt, discount.token, "ptt-fuel-discount")
            publisher = _publisher(exact)
            try:
                published = await publish_release(publisher, QUERIES)
            finally:
                await publisher.close()
        month = f"{datetime.now(BANGKOK).month:02d}"
        expected = {key: 0 for key in _values(published.document)}
        expected[f"self-view/{month}"] = 12  # 14 queries, at most 12 per consent token
        expected[f"ptt-fuel-discount/{month}"] = 2
        assert _values(published.document) == expected
        assert published.document["participants"] == []  # no node was asked

    asyncio.run(scenario())


def test_the_same_release_twice_gives_different_noise(
    new_stats_federation: NewStatsFederation,
) -> None:
    fed = new_stats_federation(citizens=150)

    async def scenario() -> tuple[dict[str, int], dict[str, int]]:
        async with servers(fed.root):
            publisher = _publisher(fed)
            try:
                first = await publish_release(publisher, PARTICIPATION)
                second = await publish_release(publisher, PARTICIPATION)
            finally:
                await publisher.close()
        return _values(first.document), _values(second.document)

    first, second = asyncio.run(scenario())
    assert first.keys() == second.keys()
    # Six bins of discrete Laplace noise at scale 4: all equal with probability < 1e-5.
    assert first != second


def test_releases_until_the_budget_refuses_and_a_refusal_publishes_nothing(
    new_stats_federation: NewStatsFederation,
) -> None:
    def tight(statistics: dict[str, object]) -> None:
        statistics["budget_epsilon_per_year"] = 2.5

    fed = new_stats_federation(citizens=120, change=tight)
    releases = fed.root / "orgs" / "coordinator" / "releases"

    async def scenario() -> None:
        async with servers(fed.root) as running:
            publisher = _publisher(fed)
            try:
                first = await publish_release(publisher, PARTICIPATION)
                second = await publish_release(publisher, BANDS)
                assert first.document["budget"]["remaining"] == pytest.approx(1.5)
                assert second.document["budget"]["remaining"] == pytest.approx(0.5)
                bundles = sorted(p.name for p in releases.iterdir())
                node_logs = {a: n.node.log.size() for a, n in running.nodes.items()}
                kinds = _kinds(publisher.log)

                with pytest.raises(FedscoreError) as refused:
                    await publish_release(publisher, PARTICIPATION)
                assert refused.value.reason == "BUDGET_EXHAUSTED"
                assert "nothing was published" in refused.value.message

                assert sorted(p.name for p in releases.iterdir()) == bundles
                assert {a: n.node.log.size() for a, n in running.nodes.items()} == node_logs
                after = _kinds(publisher.log)
                assert after[: len(kinds)] == kinds
                assert after[len(kinds) :] == ["statistics_refused"]
                entry = publisher.log.entries(len(kinds), len(after))[0]
                assert entry.fields == {
                    "reason": "BUDGET_EXHAUSTED",
                    "release": PARTICIPATION,
                    "year": YEAR,
                }
                # Another dataset has its own budget.
                await publish_release(publisher, QUERIES)
            finally:
                await publisher.close()

            # A restart (new engine, new process state) sees the same ledger.
            status = budget(fed.root)
            assert status["datasets"]["agency-records"] == {
                "total": 2.5,
                "spent": 2.0,
                "remaining": 0.5,
            }
            assert status["datasets"]["score-query-log"]["spent"] == 1.0
            reopened = _publisher(fed)
            try:
                with pytest.raises(FedscoreError, match="BUDGET_EXHAUSTED"):
                    await publish_release(reopened, BANDS)
                with pytest.raises(FedscoreError) as unknown:
                    await publish_release(reopened, "no-such-release")
                assert unknown.value.reason == "UNKNOWN_RELEASE"
            finally:
                await reopened.close()
        assert len(list(releases.iterdir())) == 3

    asyncio.run(scenario())


def test_a_release_with_a_node_down_fails_and_spends_nothing(
    new_stats_federation: NewStatsFederation,
) -> None:
    fed = new_stats_federation(citizens=100)

    async def scenario() -> None:
        async with servers(fed.root) as running:
            await running.nodes["dsd"].stop()
            del running.nodes["dsd"]
            publisher = open_publisher(load_party(fed.root, "coordinator"), deadline=3.0)
            try:
                with pytest.raises(FedscoreError) as failed:
                    await publish_release(publisher, PARTICIPATION)
                assert failed.value.reason == "NODE_UNAVAILABLE"
                kinds = _kinds(publisher.log)
                assert kinds[-3:] == [
                    "statistics_query_issued",
                    "statistics_failed",
                    "statistics_refused",
                ]
            finally:
                await publisher.close()
        assert budget(fed.root)["datasets"]["agency-records"]["spent"] == 0.0
        assert not (fed.root / "orgs" / "coordinator" / "releases").exists()

    asyncio.run(scenario())
