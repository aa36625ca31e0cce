"""`fedscore demo` runs a whole federation in separate processes and ends in one JSON line.

The demo's records come from DEMO_SEED, so its total and band are known: computed here
from the export files the demo wrote (plain parsing and the policy's point table, not the
demo's own `expected_total`), and pinned as literals, so that a change in how the records
are generated is noticed.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from fedscore.apps.demo_data import DEMO_SEED, generate
from fedscore.runtime.org_paths import FederationPaths
from policies.loader import parse_policy
from policies.model import Policy
from tests.harness.secrets import assert_secrets_stay_home

pytestmark = pytest.mark.integration

PTT = "ptt-fuel-discount"
# What DEMO_SEED gives with the default 1200 citizens, whatever the day.
DEMO_TOTAL = 650
DEMO_BAND = "5%"


def _rows(path: Path) -> list[dict[str, str]]:
    text = path.read_text("utf-8")
    if path.suffix == ".jsonl":
        return [{k: str(v) for k, v in json.loads(line).items()} for line in text.splitlines()]
    return list(csv.DictReader(text.splitlines()))


def _total_from_files(files: list[Path], policy: Policy, citizen: str, year: int) -> int:
    """The citizen's points for `year`: certified (where required) records of that year,
    points times quantity per indicator, capped per indicator, clamped to the person range."""
    quantity: dict[str, int] = defaultdict(int)
    for path in files:
        for row in _rows(path):
            indicator = policy.indicators[row["indicator"]]
            if row["national_id"] != citizen or int(row["occurred_at"][:4]) != year:
                continue
            if indicator.requires_certification and not row["certifier"]:
                continue
            quantity[row["indicator"]] += int(row["quantity"])
    total = 0
    for code, count in quantity.items():
        indicator = policy.indicators[code]
        points = indicator.points * count
        total += points if indicator.cap_per_year is None else min(points, indicator.cap_per_year)
    return max(policy.score.person_min, min(policy.score.person_max, total))


def _band(policy: Policy, total: int) -> str:
    reached = [band for band in policy.purposes[PTT].bands if total >= band.min_points]
    return max(reached, key=lambda band: band.min_points).label


def _undated(path: Path) -> list[tuple[str, str, str, str]]:
    """A file's rows without their day (the day of this year's records follows today)."""
    return [
        (row["national_id"], row["indicator"], row["quantity"], row["certifier"])
        for row in _rows(path)
    ]


def test_demo_end_to_end(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    done = subprocess.run(
        [sys.executable, "-m", "fedscore.apps.cli.main", "demo", "--workdir", str(workdir)],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["demo"] == "ok"
    assert summary["agencies"] == 3
    assert summary["citizens"] == 1200
    assert summary["federated_total"] == summary["expected_total"]

    # The demo's records are DEMO_SEED's: generated again here, row for row the same.
    policy = parse_policy(json.loads(FederationPaths(workdir).policy_json.read_text("utf-8")))
    files = sorted((workdir / "data").glob("*-export.*"))
    again = generate(tmp_path / "again", policy, list(policy.agencies), 1200, seed=DEMO_SEED)
    assert [f.name for f in files] == sorted(f.name for f in again.files.values())
    for path in files:
        assert _undated(path) == _undated(again.files[path.name.split("-export")[0]]), path
    # Its total and band, from the export files, and as pinned.
    total = _total_from_files(files, policy, again.demo_citizen, again.year)
    assert summary["expected_total"] == summary["federated_total"] == total == DEMO_TOTAL
    assert summary["band"] == _band(policy, total) == DEMO_BAND
    assert summary["after_revocation"] == "CONSENT_REVOKED"
    assert summary["forged_request"] == "BAD_SIGNATURE"
    assert summary["replayed_request"] == "REPLAYED_NONCE"
    hostile = summary["hostile_coordinator"]
    assert hostile["tried"] == "different spec per node"
    assert hostile["learned_a_contribution"] is False
    assert {"SPEC_MISMATCH", "QUERY_ID_REUSED"} <= set(hostile["regulator_named"])
    assert "the sum is none of them" in done.stdout
    assert summary["audit"]["consistent"] is True
    # Every party logged something: 3 nodes, the registry and the coordinator.
    assert summary["audit"]["entries"] >= 5
    # The citizen's accesses: at least the band, the score, the refusal after revocation.
    assert summary["history_entries"] >= 3
    release = json.loads(Path(summary["release"]).read_text())
    # The noise was added by the helper aggregator, a party of the regulator's organisation.
    assert summary["release_noised_by"] == release["noised_by"] == "regulator-helper"
    assert release["budget"]["remaining"] == summary["budget_remaining"]
    assert summary["budget_remaining"] == release["budget"]["total"] - release["epsilon_spent"]
    assert (Path(summary["release"]).parent / "release.png").exists()
    # Every organisation holds its own keys; the federation changed while it served.
    assert summary["organisations"] == 11  # ten at set-up, one admitted live
    assert assert_secrets_stay_home(workdir) == 11 + 3 + 1
    assert summary["registry_version"] >= 3
    assert summary["root_threshold"] == "2/3"
    assert summary["key_rotation"] == "ok"
    # Refused by the coordinator (UNKNOWN_SIGNER) or, if a node applied the removal
    # first, by that node on the relying party's own request (BAD_REQUEST_SIGNATURE).
    assert summary["removed_party"] in {"UNKNOWN_SIGNER", "BAD_REQUEST_SIGNATURE"}
    assert 0 <= summary["removal_effective_ms"] < 30_000
    assert any((workdir / "orgs" / "trc" / "retired").iterdir())
    # Every process was stopped: each server's log ends with its stop line.
    for log in (workdir / "orgs").glob("*/serve.log"):
        assert log.read_text().strip().endswith("stopped"), log
