"""Each server's metrics for Prometheus: calls by method and outcome, latencies, batch
sizes, its log, checkpoint age, status-list time left, privacy budget left, readiness;
scraped from real servers after real questions, with nothing personal in them."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from fedscore.apps.demo_data import generate
from fedscore.apps.federation import free_port, init_federation
from fedscore.apps.processes import FederationProcesses
from fedscore.runtime.org_paths import FederationPaths
from fedscore.runtime.party import load_party

pytestmark = pytest.mark.integration


def _fedscore(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fedscore.apps.cli.main", *args],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip


def _ok(*args: str) -> dict[str, object]:
    done = _fedscore(*args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _scrape(url: str) -> tuple[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]:
    text = urllib.request.urlopen(url, timeout=5).read().decode()  # noqa: S310 (loopback)
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    return text, samples


def test_servers_count_what_they_do_and_nothing_personal(tmp_path: Path) -> None:
    workdir = tmp_path / "federation"
    layout = init_federation(workdir, 3, fast_kdf=True)
    paths = FederationPaths(workdir)
    urls = {}
    for party_id in ("trc", "coordinator"):
        host = layout.endpoints[party_id].rsplit(":", 1)[0]
        port = free_port(host)
        config = paths.org(party_id).config
        config.write_text(config.read_text().replace("metrics_port = 0", f"metrics_port = {port}"))
        urls[party_id] = f"http://{host}:{port}/metrics"
    policy = load_party(workdir, "regulator").policy
    data = generate(workdir / "data", policy, layout.agencies, 60, seed=5)
    for agency, path in data.files.items():
        _ok("node", "ingest", "--workdir", str(workdir), "--agency", agency, str(path))
    processes = FederationProcesses(workdir)
    asyncio.run(processes.start_all(load_party(workdir, "regulator")))
    w, citizen = str(workdir), data.demo_citizen
    try:
        grant = _ok(
            "consent", "grant", "--workdir", w, "--citizen", citizen,
            "--purpose", "ptt-fuel-discount", "--relying-party", "ptt",
        )  # fmt: skip
        _ok("score", "--workdir", w, "--as", "ptt", "--token", str(grant["token_file"]))
        _ok(
            "consent",
            "revoke",
            "--workdir",
            w,
            "--citizen",
            citizen,
            "--token-id",
            str(grant["token_id"]),
        )
        refused = _fedscore(
            "score", "--workdir", w, "--as", "ptt", "--token", str(grant["token_file"])
        )
        assert "CONSENT_REVOKED" in refused.stderr
        node_text, node = _scrape(urls["trc"])
        coordinator_text, coordinator = _scrape(urls["coordinator"])
    finally:
        processes.stop_all()
    batch = "/fedscore.v1.NodeService/ContributeBatch"
    assert node[("fedscore_calls_total", (("method", batch), ("reason", "OK")))] >= 1
    assert node[("fedscore_call_seconds_count", (("method", batch),))] >= 1
    assert node[("fedscore_batch_questions_count", ())] >= 1
    assert node[("fedscore_log_entries", ())] >= 1
    assert node[("fedscore_status_list_seconds_left", ())] > 0
    assert node[("fedscore_ready", ())] == 1
    score = "/fedscore.v1.CoordinatorService/Score"
    assert coordinator[("fedscore_calls_total", (("method", score), ("reason", "OK")))] == 1
    assert (
        coordinator[("fedscore_calls_total", (("method", score), ("reason", "CONSENT_REVOKED")))]
        == 1
    )
    budget = policy.statistics_rules.budget("agency-records")
    left = coordinator[
        ("fedscore_privacy_budget_remaining_epsilon", (("dataset", "agency-records"),))
    ]
    assert left == budget
    # Nothing personal: no national ID, no token id, no consent token or pseudonym.
    for text in (node_text, coordinator_text):
        assert citizen not in text and str(grant["token_id"]) not in text
