"""`fedscore demo` runs a whole federation in separate processes and ends in one JSON line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


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
    assert summary["citizens"] >= 1000
    assert summary["federated_total"] == summary["expected_total"]
    assert summary["band"] in {"none", "3%", "5%"}
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
    assert release["budget"]["remaining"] == summary["budget_remaining"]
    assert summary["budget_remaining"] == release["budget"]["total"] - release["epsilon_spent"]
    assert (Path(summary["release"]).parent / "release.png").exists()
    # Every process was stopped: each server's log ends with its stop line.
    for log in (workdir / "parties").glob("*/serve.log"):
        assert log.read_text().strip().endswith("stopped"), log
