"""The coordinator's operator turned hostile, against real nodes over mutual TLS.

The insider (`fedscore.apps.insider.HostileCoordinator`) holds the coordinator's real signing
key, TLS identity, database and log; the consent registry, every agency node and the real
coordinator server run in-process with demo records. It tries to learn one agency's part
of a score, or an exact per-agency count, by every trick we know. Each attempt must end
in one of three ways (docs/adr/0011):
- a refusal at the nodes (they check every limit they can on their own);
- a sum indistinguishable from random: it equals no single contribution and no partial
  sum, and (where the true values are small numbers) is not a small number either;
- an anomaly the regulator's `audit verify` names afterwards.

Ground truth comes from the export files, never through the nodes (`expected_total`).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from harness.stats import PARTICIPATION, StatsFederation, generous, servers, stats_federation

from audit.client.regulator_state import RegulatorState
from audit.client.verifier import audit_federation
from fedscore.apps import client
from fedscore.apps.demo_data import expected_total
from fedscore.apps.insider import Answer, Asked, HostileCoordinator
from fedscore.errors import FedscoreError
from fedscore.runtime.db import open_engine
from fedscore.runtime.party import Party, load_party
from fedscore.v1.envelope_pb2 import Envelope
from keys.masks import MODULUS
from keys.national_id import with_check_digit

pytestmark = pytest.mark.integration

PURPOSE = "ptt-fuel-discount"
NOBODY = with_check_digit("399990000001")  # holds no record at any agency
SMALL = 2**32  # far above any score or count, far below a random 64-bit value


@dataclass
class Scene:
    fed: StatsFederation
    insider: HostileCoordinator
    ptt: Party
    portal: Party
    year: int
    # The demo citizen's true contribution at each agency, from the export files.
    truth: dict[str, int]

    @property
    def agencies(self) -> list[str]:
        return self.fed.agencies

    async def ptt_token(self, national_id: str, max_uses: int = 0) -> Envelope:
        granted = await client.grant(self.portal, national_id, PURPOSE, "ptt", 30, max_uses)
        return granted.token

    def ptt_request(self, token: Envelope, year: int = 0) -> Envelope:
        """A request PTT really signed, which the coordinator captured instead of serving."""
        return client.signed_score_query(self.ptt, token, PURPOSE, year)

    def partial_sums(self) -> set[int]:
        """Every sum of the citizen's contributions over a non-empty set of agencies."""
        values = list(self.truth.values())
        return {
            sum(chosen)
            for size in range(1, len(values) + 1)
            for chosen in itertools.combinations(values, size)
        }


@asynccontextmanager
async def scene(tmp_path: Path, **federation: Any) -> AsyncIterator[Scene]:
    fed = stats_federation(tmp_path / "federation", citizens=40, seed=5, **federation)
    year = fed.policy.current_year(int(time.time()))
    citizen = fed.data.demo_citizen
    truth = {
        agency: expected_total({agency: path}, fed.policy, citizen, year)
        for agency, path in fed.data.files.items()
    }
    assert all(value > 0 for value in truth.values())  # every agency holds something
    async with servers(fed.root, coordinator=True):
        insider = HostileCoordinator.open(fed.root)
        try:
            yield Scene(
                fed,
                insider,
                load_party(fed.root, "ptt"),
                load_party(fed.root, "citizen-portal"),
                year,
                truth,
            )
        finally:
            insider.close()


def masked(answers: Sequence[Answer]) -> list[int]:
    """The answers, which must all be masked values (the nodes accepted every question)."""
    values = []
    for answer in answers:
        assert not isinstance(answer, FedscoreError), answer
        values.append(answer)
    return values


def assert_noise(total: int, scene: Scene) -> None:
    """The "sum" reveals no contribution: it equals none, nor any partial sum, nor is small."""
    assert total not in set(scene.truth.values())
    assert total not in scene.partial_sums()
    assert SMALL <= total <= MODULUS - SMALL


def reasons(answers: Sequence[Answer]) -> list[str]:
    return [
        answer.reason if isinstance(answer, FedscoreError) else "ANSWERED" for answer in answers
    ]


async def anomalies(root: Path) -> set[tuple[str, str]]:
    """(party, reason) of everything the regulator's audit names now."""
    regulator = load_party(root, "regulator")
    engine = open_engine(regulator.db_url)
    try:
        report = await audit_federation(regulator, RegulatorState(engine))
    finally:
        engine.dispose()
    assert report.consistent  # every log is intact: the parties disagree, and that is named
    return {(a.party, a.reason) for a in report.anomalies}


async def ask_split(scene: Scene, asked: dict[str, Asked]) -> int:
    """Ask each agency its own question; the masked answers' sum mod 2^64."""
    insider = scene.insider
    values = masked(await asyncio.gather(*(insider.ask_one(a, asked[a]) for a in scene.agencies)))
    return sum(values) % MODULUS


# --- the honest case first: the same question everywhere sums to the true total ----------


def test_the_same_question_everywhere_sums_to_the_true_total(tmp_path: Path) -> None:
    """The insider's tooling is exact: asked honestly, it gets what an honest coordinator gets
    (so every "noise" below is the design's doing, not a broken harness)."""

    async def run() -> None:
        async with scene(tmp_path) as s:
            token = await s.ptt_token(s.fed.data.demo_citizen)
            asked = s.insider.log_score(s.insider.score_spec(s.ptt_request(token)))
            total = await ask_split(s, dict.fromkeys(s.agencies, asked))
            assert total == sum(s.truth.values())
            assert await anomalies(s.fed.root) == set()

    asyncio.run(run())


# --- different questions under one query id ---------------------------------------------


def test_a_different_question_per_node_sums_to_noise_and_the_regulator_names_it(
    tmp_path: Path,
) -> None:
    """The citizen's request to one agency, a record-less person's to the others, one query id,
    both "matching" entries forged in the coordinator's own log. With masks over the query id
    alone the sum was exactly the first agency's contribution."""

    async def run() -> None:
        async with scene(tmp_path) as s:
            target, *others = s.agencies
            citizen = s.ptt_request(await s.ptt_token(s.fed.data.demo_citizen))
            nobody = s.ptt_request(await s.ptt_token(NOBODY))
            query_id = "split-" + str(time.time_ns())
            asked_citizen = s.insider.log_score(s.insider.score_spec(citizen, query_id))
            asked_nobody = s.insider.log_score(s.insider.score_spec(nobody, query_id))
            split = {target: asked_citizen} | dict.fromkeys(others, asked_nobody)
            total = await ask_split(s, split)
            assert_noise(total, s)

            named = await anomalies(s.fed.root)
            assert {(a, "SPEC_MISMATCH") for a in s.agencies} <= named
            assert ("coordinator", "QUERY_ID_REUSED") in named

    asyncio.run(run())


@pytest.mark.parametrize(
    "field",
    ["issued_at", "expires_at", "participants order", "coordinator's query id"],
)
def test_one_byte_of_difference_is_enough(tmp_path: Path, field: str) -> None:
    """Asked the same person's score with any difference the nodes cannot see, the sum is noise."""

    async def run() -> None:
        async with scene(tmp_path) as s:
            request = s.ptt_request(await s.ptt_token(s.fed.data.demo_citizen))
            spec = s.insider.score_spec(request)
            other = s.insider.score_spec(request, spec.query_id)
            other.issued_at, other.expires_at = spec.issued_at, spec.expires_at
            if field == "issued_at":
                other.issued_at += 1
            elif field == "expires_at":
                other.expires_at += 1
            elif field == "participants order":
                other.participants.reverse()
            else:
                other.query_id = spec.query_id + "x"
            first, second = s.insider.log_score(spec), s.insider.log_score(other)
            assert first.spec != second.spec
            target, *others = s.agencies
            total = await ask_split(s, {target: first} | dict.fromkeys(others, second))
            assert_noise(total, s)
            assert total != sum(s.truth.values())

    asyncio.run(run())


def test_a_histogram_split_per_node_sums_to_noise_in_every_bin(tmp_path: Path) -> None:
    """One agency asked about this year, the others about a year with no records: the bins
    would have been that agency's exact counts, with no noise and no budget spent."""

    async def run() -> None:
        async with scene(tmp_path) as s:
            target, *others = s.agencies
            this_year = s.insider.histogram_spec(PARTICIPATION, s.year)
            empty_year = s.insider.histogram_spec(PARTICIPATION, 1999, this_year.query_id)
            asked = {target: s.insider.log_histogram(this_year)} | dict.fromkeys(
                others, s.insider.log_histogram(empty_year)
            )
            answers = await asyncio.gather(
                *(s.insider.ask_histogram(a, asked[a]) for a in s.agencies)
            )
            bins = []
            for answer in answers:
                assert not isinstance(answer, FedscoreError), answer
                bins.append(answer)
            sums = [sum(column) % MODULUS for column in zip(*bins, strict=True)]
            assert all(SMALL <= value <= MODULUS - SMALL for value in sums)
            named = await anomalies(s.fed.root)
            assert {(a, "SPEC_MISMATCH") for a in s.agencies} <= named

    asyncio.run(run())


def test_a_score_answer_and_a_histogram_bin_cannot_be_subtracted(tmp_path: Path) -> None:
    """Related ids (the old per-bin id was "{query_id}/{bin}") no longer share a mask: one
    node's two answers differ by noise, not by contribution minus count."""

    async def run() -> None:
        async with scene(tmp_path) as s:
            target = s.agencies[0]
            histogram = s.insider.histogram_spec(PARTICIPATION, s.year)
            request = s.ptt_request(await s.ptt_token(s.fed.data.demo_citizen))
            score = s.insider.score_spec(request, histogram.query_id + "/0")
            score_answer = masked(
                await s.insider.ask_in_batch(target, [s.insider.log_score(score)])
            )[0]
            bins = await s.insider.ask_histogram(target, s.insider.log_histogram(histogram))
            assert not isinstance(bins, FedscoreError), bins
            difference = (score_answer - bins[0]) % MODULUS
            assert SMALL <= difference <= MODULUS - SMALL

    asyncio.run(run())


# --- limits every node enforces on its own ----------------------------------------------


def test_a_used_up_token_sent_straight_to_the_nodes_is_refused_everywhere(tmp_path: Path) -> None:
    async def run() -> None:
        async with scene(tmp_path) as s:
            token = await s.ptt_token(s.fed.data.demo_citizen, max_uses=1)
            honest = await client.score(s.ptt, token, PURPOSE)  # PTT's one use, through the front
            assert honest.release_kind == "band"
            # PTT asks again; the coordinator's count says no, so the operator goes around it.
            asked = s.insider.log_score(s.insider.score_spec(s.ptt_request(token)))
            answers = await asyncio.gather(
                *(s.insider.ask_in_batch(a, [asked]) for a in s.agencies)
            )
            assert reasons([a[0] for a in answers]) == ["USE_LIMIT_REACHED"] * len(s.agencies)

    asyncio.run(run())


def test_the_coordinator_cannot_ask_on_its_own_nor_twice_for_one_request(tmp_path: Path) -> None:
    async def run() -> None:
        async with scene(tmp_path) as s:
            token = await s.ptt_token(s.fed.data.demo_citizen)
            # A request it writes and signs itself: its key is not a relying party's.
            own = client.signed_score_query(s.insider.party, token, PURPOSE)
            forged = s.insider.log_score(s.insider.score_spec(own))
            answers = await asyncio.gather(
                *(s.insider.ask_in_batch(a, [forged]) for a in s.agencies)
            )
            assert reasons([a[0] for a in answers]) == ["BAD_REQUEST_SIGNATURE"] * 3

            # A genuine request, served once, then again under a new query id.
            request = s.ptt_request(token)
            first_spec = s.insider.score_spec(request)
            first = s.insider.log_score(first_spec)
            masked(await asyncio.gather(*(s.insider.ask_one(a, first) for a in s.agencies)))
            again = s.insider.log_score(s.insider.score_spec(request))
            answers = await asyncio.gather(*(s.insider.ask_one(a, again) for a in s.agencies))
            assert reasons(answers) == ["REPLAYED_NONCE"] * 3
            # The same query id with another question is a replay too.
            other = s.ptt_request(token)
            reused = s.insider.log_score(s.insider.score_spec(other, first_spec.query_id))
            answers = await asyncio.gather(*(s.insider.ask_one(a, reused) for a in s.agencies))
            assert reasons(answers) == ["REPLAYED_QUERY"] * 3

    asyncio.run(run())


def test_a_year_beyond_the_purpose_is_refused_everywhere(tmp_path: Path) -> None:
    async def run() -> None:
        async with scene(tmp_path) as s:
            token = await s.ptt_token(s.fed.data.demo_citizen)
            old = s.ptt_request(token, year=s.year - 5)  # PTT reaches one year back
            asked = s.insider.log_score(s.insider.score_spec(old))
            answers = await asyncio.gather(
                *(s.insider.ask_in_batch(a, [asked]) for a in s.agencies)
            )
            assert reasons([a[0] for a in answers]) == ["YEAR_NOT_ALLOWED"] * 3

    asyncio.run(run())


def test_histograms_asked_without_releasing_still_spend_each_nodes_own_budget(
    tmp_path: Path,
) -> None:
    """The coordinator's ledger is its own; each node's is not. Asking for exact histograms
    and never releasing them (no noise, nothing charged at the coordinator) runs out at
    every node after the year's budget: here 1.0 per histogram, 3.0 a year."""

    async def run() -> None:
        async with scene(tmp_path, change=generous(epsilon=1.0, budget=3.0)) as s:
            outcomes = []
            for _ in range(4):
                asked = s.insider.log_histogram(s.insider.histogram_spec(PARTICIPATION, s.year))
                answers = await asyncio.gather(
                    *(s.insider.ask_histogram(a, asked) for a in s.agencies)
                )
                outcomes.append(
                    [a.reason if isinstance(a, FedscoreError) else "ANSWERED" for a in answers]
                )
            assert outcomes == [["ANSWERED"] * 3] * 3 + [["BUDGET_EXHAUSTED"] * 3]
            # Another year's budget is separate; an honest release of it still goes through.
            last_year = s.insider.histogram_spec(PARTICIPATION, s.year - 1)
            asked = s.insider.log_histogram(last_year)
            answers = await asyncio.gather(*(s.insider.ask_histogram(a, asked) for a in s.agencies))
            assert not any(isinstance(a, FedscoreError) for a in answers)
            # The three histograms it took without releasing are named by the regulator.
            named = await anomalies(s.fed.root)
            assert ("coordinator", "STATISTICS_NOT_CHARGED") in named

    asyncio.run(run())
