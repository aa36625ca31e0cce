"""A real agency node's NodeStatisticsService over mutual TLS on 127.0.0.1.

Answered queries: each node's answer is masked per bin and split into two shares, the
coordinator's and the helper aggregator's (sealed to it, docs/adr/0019); the two shares
add up to the masked bins, and the masks cancel only in the sum over all agencies, which
equals the sum of the nodes' own exact histograms; the answer is logged as
"statistics_answered", the query id spent and the release's epsilon paid from the node's
own ledger. Questions travel as batches (a lone one is a batch of one): each item of a
request is answered or refused on its own, in order. Every refusal of a statistics query
is a row of the node's refusal table, tests/test_node_refusals.py.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from harness.node import RELEASE, assert_clean_log, live_federation, make_federation

from fedscore.errors import FedscoreError
from fedscore.protocol.helper_messages import SignedHelperShare
from fedscore.runtime.budget import release_cost_nano
from fedscore.runtime.party import load_party
from keys.masks import MODULUS
from keys.shares import open_shares
from node.histogram import node_histogram
from node.service import uncertified_indicators
from node.statistics import MAX_HISTOGRAM_ITEMS
from policies.releases import bins

pytestmark = pytest.mark.integration


def test_masked_bins_cancel_only_in_the_sum_over_every_agency(tmp_path: Path) -> None:
    root = make_federation(tmp_path)

    async def scenario() -> None:
        async with live_federation(root, with_registry=False) as live:
            policy = live.coordinator.policy
            definition = policy.statistics_rules.release(RELEASE)
            spec = live.stats_spec()
            cost = release_cost_nano(policy, definition)
            helper = load_party(root, live.helper_id)
            width = len(bins(policy, definition))
            masked: dict[str, list[int]] = {}
            coordinator_shares: dict[str, list[int]] = {}
            for agency in live.agencies:
                before, stored = live.log_size(agency), live.stored(agency)
                answer = await live.histogram(agency, live.stats_query(spec, agency))
                assert answer.query_id == spec.query_id
                coordinator_shares[agency] = list(answer.coordinator_shares)
                # The helper's share: signed by the node, sealed to the helper alone.
                share = SignedHelperShare.verify(
                    answer.helper_share, helper.trust.agency_keys()
                ).share
                assert (share.helper, share.bins) == (live.helper_id, width)
                helper_shares = open_shares(
                    share.sealed_shares, helper.box, answer.query_hash, agency, width
                )
                masked[agency] = [
                    (c + h) % MODULUS
                    for c, h in zip(coordinator_shares[agency], helper_shares, strict=True)
                ]
                entries = live.log_entries(agency, before)
                assert [e.kind for e in entries] == ["statistics_answered"]
                assert entries[0].fields["release"] == RELEASE
                assert_clean_log(entries)
                # The query id is spent and the release paid from this node's own ledger.
                after = live.stored(agency)
                assert after.seen_queries == stored.seen_queries + 1
                assert after.privacy_spends == stored.privacy_spends + 1
                assert after.spent_nano == stored.spent_nano + cost > 0
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
            # No single answer shows its counts: every bin is masked (2^-64 to collide), and
            # the coordinator's shares alone sum to noise, not to the counts.
            for agency in live.agencies:
                assert masked[agency] != exact[agency]
                assert all(value >= 2**32 for value in masked[agency])
                assert all(2**32 <= v <= MODULUS - 2**32 for v in coordinator_shares[agency])
            own = [
                sum(coordinator_shares[a][b] for a in live.agencies) % MODULUS for b in range(width)
            ]
            assert all(2**32 <= value <= MODULUS - 2**32 for value in own)
            # The same query id again is a replay.
            with pytest.raises(FedscoreError) as replay:
                await live.histogram("trc", live.stats_query(spec, "trc"))
            assert replay.value.reason == "REPLAYED_QUERY"

    asyncio.run(scenario())


def test_each_question_of_a_batch_is_answered_or_refused_on_its_own(tmp_path: Path) -> None:
    """One outcome per item, in order: an answered item is claimed, paid for and logged in
    its own transaction, so a later item of the same request asking its query id again is a
    replay; a refused item leaves one "statistics_refused" entry and nothing stored."""
    root = make_federation(tmp_path)

    async def scenario() -> None:
        async with live_federation(root, ["trc"], with_registry=False) as live:
            policy = live.coordinator.policy
            cost = release_cost_nano(policy, policy.statistics_rules.release(RELEASE))
            first, second = live.stats_spec(), live.stats_spec()
            before, stored = live.log_size("trc"), live.stored("trc")
            outcomes = await live.histogram_batch(
                "trc",
                [
                    live.stats_query(first, "trc"),
                    live.stats_query(first, "trc"),
                    live.stats_query(second, "trc"),
                    live.stats_query(live.stats_spec(), "dsd"),
                ],
            )
            answered = [o.query_id for o in outcomes if not isinstance(o, FedscoreError)]
            assert answered == [first.query_id, second.query_id]
            refused = [o for o in outcomes if isinstance(o, FedscoreError)]
            assert [o.reason for o in refused] == ["REPLAYED_QUERY", "WRONG_AGENCY"]
            assert [isinstance(o, FedscoreError) for o in outcomes] == [False, True, False, True]
            entries = live.log_entries("trc", before)
            assert [(e.kind, e.fields.get("reason")) for e in entries] == [
                ("statistics_answered", None),
                ("statistics_refused", "REPLAYED_QUERY"),
                ("statistics_answered", None),
                ("statistics_refused", "WRONG_AGENCY"),
            ]
            assert entries[1].fields == {
                "reason": "REPLAYED_QUERY",
                "query_id": first.query_id,
                "release": RELEASE,
            }
            assert entries[3].fields == {"reason": "WRONG_AGENCY"}
            assert_clean_log(entries)
            after = live.stored("trc")
            assert after.seen_queries == stored.seen_queries + 2
            assert after.privacy_spends == stored.privacy_spends + 2
            assert after.spent_nano == stored.spent_nano + 2 * cost

            # A full request is answered; one more item and it is refused whole.
            specs = [live.stats_spec() for _ in range(MAX_HISTOGRAM_ITEMS)]
            full = await live.histogram_batch("trc", [live.stats_query(s, "trc") for s in specs])
            assert len(full) == MAX_HISTOGRAM_ITEMS
            before = live.log_size("trc")
            extra = [live.stats_query(live.stats_spec(), "trc")] * (MAX_HISTOGRAM_ITEMS + 1)
            with pytest.raises(FedscoreError) as whole:
                await live.histogram_batch("trc", extra)
            assert whole.value.reason == "BATCH_TOO_LARGE"
            entries = live.log_entries("trc", before)
            assert [(e.kind, e.fields) for e in entries] == [
                ("statistics_refused", {"reason": "BATCH_TOO_LARGE"})
            ]

    asyncio.run(scenario())
