"""`fedscore stats ...` as an operator types it, each command its own process.

The registry and nodes serve in this test's event loop (mutual TLS on 127.0.0.1) while
CLI processes run against them, so two CLI processes can publish at the same moment
against the same coordinator database.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import pytest
from harness.stats import BANDS, PARTICIPATION, NewStatsFederation, StatsFederation, servers

from fedscore.runtime.budget import NANO, PrivacyLedger
from fedscore.runtime.db import open_engine
from fedscore.runtime.party import load_party

pytest.importorskip("matplotlib")

pytestmark = pytest.mark.integration


async def fedscore(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "fedscore.apps.cli.main",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=240)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def _tight(statistics: dict[str, object]) -> None:
    # Room for one agency-records release of epsilon 1, not two.
    statistics["budget_epsilon_per_year"] = 1.5


@pytest.fixture
def fed(new_stats_federation: NewStatsFederation) -> StatsFederation:
    return new_stats_federation(citizens=100, change=_tight)


def test_publish_budget_and_verify_from_the_command_line(fed: StatsFederation) -> None:
    workdir = str(fed.root)

    async def scenario() -> None:
        async with servers(fed.root):
            code, out, err = await fedscore(
                "stats", "publish", "--workdir", workdir, "--release", PARTICIPATION, "--json"
            )
            assert code == 0, err
            summary = json.loads(out.strip().splitlines()[-1])
            assert summary["budget_remaining"] == 0.5
            assert Path(summary["release"]).name == "release.json"

            code, out, err = await fedscore("stats", "budget", "--workdir", workdir, "--json")
            assert code == 0, err
            status = json.loads(out)
            assert status["datasets"]["agency-records"] == {
                "total": 1.5,
                "spent": 1.0,
                "remaining": 0.5,
            }
            assert status["datasets"]["score-query-log"]["spent"] == 0.0

            code, out, err = await fedscore("stats", "verify", summary["directory"], "--json")
            assert code == 0, err
            assert json.loads(out)["release_id"] == summary["release_id"]

            code, out, err = await fedscore(
                "stats", "publish", "--workdir", workdir, "--release", BANDS
            )
            assert code == 2
            assert err.startswith("fedscore: error: BUDGET_EXHAUSTED: ")
            assert "nothing was published" in err

            code, _, err = await fedscore(
                "stats", "publish", "--workdir", workdir, "--release", "who-lives-where"
            )
            assert (code, err.split(": ")[2]) == (2, "UNKNOWN_RELEASE")

            (
                fed.root
                / "orgs"
                / "coordinator"
                / "releases"
                / summary["release_id"]
                / "release.csv"
            ).write_text("0\n")
            code, _, err = await fedscore("stats", "verify", summary["directory"])
            assert code == 2 and "BUNDLE_MISMATCH" in err

        assert len(list((fed.root / "orgs" / "coordinator" / "releases").iterdir())) == 1

    asyncio.run(scenario())


def test_two_concurrent_publishers_cannot_overspend(fed: StatsFederation) -> None:
    workdir = str(fed.root)

    async def scenario() -> list[tuple[int, str, str]]:
        async with servers(fed.root):
            return list(
                await asyncio.gather(
                    *(
                        fedscore("stats", "publish", "--workdir", workdir, "--release", name)
                        for name in (PARTICIPATION, BANDS)
                    )
                )
            )

    outcomes = asyncio.run(scenario())
    codes = sorted(code for code, _, _ in outcomes)
    assert codes == [0, 2], outcomes
    refused = next(err for code, _, err in outcomes if code == 2)
    assert "BUDGET_EXHAUSTED" in refused
    assert len(list((fed.root / "orgs" / "coordinator" / "releases").iterdir())) == 1

    from fedscore.apps.cli.stats_commands import budget

    assert budget(fed.root)["datasets"]["agency-records"]["spent"] == 1.0
    # The loser was refused at its reservation, before asking: no node paid for it.
    for agency in fed.agencies:
        ledger = PrivacyLedger(open_engine(load_party(fed.root, agency).db_url))
        spends = ledger.spends("agency-records", fed.policy.current_year(time.time()))
        assert [spend.spent_nano for spend in spends] == [NANO], agency
        ledger.engine.dispose()
