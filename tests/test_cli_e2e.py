"""End to end through the CLI, every step in its own process: grant, score, revoke, refused."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedscore.apps.demo_data import expected_total, generate
from fedscore.apps.processes import FederationProcesses
from fedscore.runtime.party import load_party

pytestmark = pytest.mark.integration


def fedscore(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fedscore.apps.cli.main", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def ok_json(*args: str) -> dict[str, object]:
    done = fedscore(*args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, object]]:
    workdir = tmp_path_factory.mktemp("e2e") / "federation"
    init = ok_json("federation", "init", str(workdir), "--agencies", "3")
    assert set(init["agencies"]) == {"trc", "dsd", "chuangpao"}  # type: ignore[arg-type]
    policy = load_party(workdir, "regulator").policy
    data = generate(workdir / "data", policy, list(init["agencies"]), 60, seed=7)  # type: ignore[arg-type]
    for agency, path in data.files.items():
        report = ok_json("node", "ingest", "--workdir", str(workdir), "--agency", agency, str(path))
        assert report["new_records"] > 0
    processes = FederationProcesses(workdir)
    asyncio.run(processes.start_all(load_party(workdir, "regulator")))
    try:
        yield workdir, data
    finally:
        processes.stop_all()


def test_grant_score_revoke_refused(federation: tuple[Path, object]) -> None:
    workdir, data = federation
    citizen = data.demo_citizen  # type: ignore[attr-defined]
    w = str(workdir)
    policy = load_party(workdir, "regulator").policy
    expected = expected_total(data.files, policy, citizen, data.year)  # type: ignore[attr-defined]

    own = ok_json(
        "consent",
        "grant",
        "--workdir",
        w,
        "--citizen",
        citizen,
        "--purpose",
        "self-view",
        "--relying-party",
        "citizen-portal",
        "--days",
        "1",
    )
    seen = ok_json(
        "score", "--workdir", w, "--as", "citizen-portal", "--token", str(own["token_file"])
    )
    assert seen["release"] == "score"
    assert seen["value"] == expected

    grant = ok_json(
        "consent",
        "grant",
        "--workdir",
        w,
        "--citizen",
        citizen,
        "--purpose",
        "ptt-fuel-discount",
        "--relying-party",
        "ptt",
        "--days",
        "30",
    )
    band = ok_json("score", "--workdir", w, "--as", "ptt", "--token", str(grant["token_file"]))
    assert band["release"] == "band"
    assert band["value"] == policy.release(policy.purpose("ptt-fuel-discount"), expected)[1]

    revoked = ok_json(
        "consent",
        "revoke",
        "--workdir",
        w,
        "--citizen",
        citizen,
        "--token-id",
        str(grant["token_id"]),
    )
    assert revoked["event"] == "revoked"
    refused = fedscore(
        "score", "--workdir", w, "--as", "ptt", "--token", str(grant["token_file"]), "--json"
    )
    assert refused.returncode == 2
    assert "CONSENT_REVOKED" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1

    listing = ok_json("consent", "list", "--workdir", w, "--citizen", citizen)
    statuses = {g["purpose"]: g["status"] for g in listing["grants"]}  # type: ignore[union-attr,index]
    assert statuses == {"self-view": "active", "ptt-fuel-discount": "revoked"}


def test_cli_errors_are_one_clear_line(federation: tuple[Path, object]) -> None:
    workdir, _ = federation
    bad_id = fedscore(
        "consent",
        "grant",
        "--workdir",
        str(workdir),
        "--citizen",
        "1234567890123",
        "--purpose",
        "self-view",
        "--relying-party",
        "citizen-portal",
    )
    assert bad_id.returncode == 2
    assert "INVALID_NATIONAL_ID" in bad_id.stderr
    assert len(bad_id.stderr.strip().splitlines()) == 1
    no_federation = fedscore(
        "consent", "list", "--workdir", str(workdir / "nowhere"), "--citizen", "1101700203450"
    )
    assert no_federation.returncode == 2
    assert "NO_FEDERATION" in no_federation.stderr


def test_every_command_has_help() -> None:
    for command in (
        ["federation", "init"],
        ["serve"],
        ["node", "ingest"],
        ["consent", "grant"],
        ["consent", "revoke"],
        ["consent", "list"],
        ["score"],
        ["demo"],
    ):
        done = fedscore(*command, "--help")
        assert done.returncode == 0
        assert "usage: fedscore" in done.stdout


def test_usage_errors_are_one_line() -> None:
    done = fedscore("consent", "grant", "--workdir", "/nowhere")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "--citizen" in lines[0]


def test_a_bad_export_is_rejected_whole_through_the_cli(
    federation: tuple[Path, object], tmp_path: Path
) -> None:
    from node.store import NodeStore

    workdir, _ = federation
    store = NodeStore(load_party(workdir, "trc").db_url)
    before = store.record_count()
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "national_id,indicator,occurred_at,quantity,certifier\n"
        "1101700203450,TRC-BLOOD,2025-03-01,1,trc-nurse\n"
        "1101700203451,TRC-BLOOD,2025-03-01,1,trc-nurse\n"
        "1101700203450,NO-SUCH-INDICATOR,2025-03-01,1,trc-nurse\n"
    )
    done = fedscore("node", "ingest", "--workdir", str(workdir), "--agency", "trc", str(bad))
    assert done.returncode == 2
    line = done.stderr.strip()
    assert len(line.splitlines()) == 1
    assert "row 3" in line and "row 4" in line and "row 2" not in line
    assert store.record_count() == before
