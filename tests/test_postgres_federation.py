"""A whole federation whose servers keep their state in PostgreSQL, each party in a
database of its own named by `database_url` in its own `party.toml`: import, grant,
score, revoke, refused, a statistics release, and the regulator's audit, all through the
CLI in separate processes, against a real PostgreSQL server."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from fedscore.apps.demo_data import expected_total, generate
from fedscore.apps.federation import init_federation
from fedscore.apps.processes import FederationProcesses, server_party_ids
from fedscore.runtime.org_paths import FederationPaths
from fedscore.runtime.party import load_party
from policies.defaults import DEMO_RELEASE

pytestmark = pytest.mark.integration


def _fedscore(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fedscore.apps.cli.main", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def _ok(*args: str) -> dict[str, object]:
    done = _fedscore(*args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _use_database(config: Path, url: str) -> None:
    text = config.read_text("utf-8")
    assert 'database_url = ""' in text
    config.write_text(text.replace('database_url = ""', f"database_url = {json.dumps(url)}"))


def test_a_federation_on_postgresql(tmp_path: Path, postgres: object) -> None:
    workdir = tmp_path / "federation"
    layout = init_federation(workdir, 3, fast_kdf=True)
    paths = FederationPaths(workdir)
    urls = {pid: postgres.fresh_database() for pid in server_party_ids(workdir)}  # type: ignore[attr-defined]
    for party_id, url in urls.items():
        _use_database(paths.org(party_id).config, url)
        assert load_party(workdir, party_id).db_url == url
    policy = load_party(workdir, "regulator").policy
    data = generate(workdir / "data", policy, layout.agencies, 80, seed=11)
    for agency, path in data.files.items():
        report = _ok("node", "ingest", "--workdir", str(workdir), "--agency", agency, str(path))
        assert report["new_records"] > 0
    # Nothing was written to a SQLite file: every party's state is in its database.
    assert not any(paths.orgs.glob("*/state.db"))
    processes = FederationProcesses(workdir)
    asyncio.run(processes.start_all(load_party(workdir, "regulator")))
    w = str(workdir)
    try:
        citizen = data.demo_citizen
        grant = _ok(
            "consent", "grant", "--workdir", w, "--citizen", citizen,
            "--purpose", "self-view", "--relying-party", "citizen-portal",
        )  # fmt: skip
        score = _ok(
            "score", "--workdir", w, "--as", "citizen-portal", "--token", str(grant["token_file"])
        )
        assert score["value"] == expected_total(data.files, policy, citizen, data.year)
        ptt = _ok(
            "consent", "grant", "--workdir", w, "--citizen", citizen,
            "--purpose", "ptt-fuel-discount", "--relying-party", "ptt",
        )  # fmt: skip
        assert _ok("score", "--workdir", w, "--as", "ptt", "--token", str(ptt["token_file"]))[
            "value"
        ]
        _ok(
            "consent",
            "revoke",
            "--workdir",
            w,
            "--citizen",
            citizen,
            "--token-id",
            str(ptt["token_id"]),
        )
        refused = _fedscore(
            "score", "--workdir", w, "--as", "ptt", "--token", str(ptt["token_file"])
        )
        assert refused.returncode == 2 and "CONSENT_REVOKED" in refused.stderr
        release = _ok("stats", "publish", "--workdir", w, "--release", DEMO_RELEASE)
        assert release["epsilon_spent"] == 1
        audit = _ok("audit", "verify", "--workdir", w)
        assert audit["consistent"] is True and audit["anomalies"] == []
    finally:
        processes.stop_all()
