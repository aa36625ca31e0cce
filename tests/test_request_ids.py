"""Server logs as JSON lines, one per call, each with the request id that crosses the
parties: a relying party's question is found by one id at the coordinator, and through
the batch it went in, at every node."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fedscore.apps.demo_data import generate
from fedscore.apps.federation import init_federation
from fedscore.apps.processes import FederationProcesses
from fedscore.runtime import logs
from fedscore.runtime.org_paths import FederationPaths
from fedscore.runtime.party import load_party


def test_a_malformed_request_id_is_replaced_and_a_json_line_has_every_field() -> None:
    assert logs.accepted("trace-42") == "trace-42"
    for sent in ("", None, "x" * 65, "bad id", "a\nb", "1101700203450,secret"):
        replaced = logs.accepted(sent)
        assert replaced != sent and len(replaced) == 32
    record = logging.LogRecord("fedscore.calls", logging.INFO, __file__, 1, "m %s", ("x",), None)
    record.request_id, record.party = "trace-42", "coordinator"
    line = json.loads(logs.JsonFormatter().format(record))
    assert line["message"] == "m x" and line["request_id"] == "trace-42"
    assert set(line) == {"time", "level", "logger", "party", "request_id", "message"}


def _json_lines(path: Path) -> list[dict[str, str]]:
    found = []
    for line in path.read_text("utf-8").splitlines():
        if line.startswith("{"):
            found.append(json.loads(line))
    return found


@pytest.mark.integration
def test_one_request_id_crosses_the_parties(tmp_path: Path) -> None:
    workdir = tmp_path / "federation"
    layout = init_federation(workdir, 3, fast_kdf=True)
    paths = FederationPaths(workdir)
    for party_id in ("coordinator", *layout.agencies):
        config = paths.org(party_id).config
        text = config.read_text().replace('log_format = "text"', 'log_format = "json"')
        config.write_text(text.replace('log_level = "INFO"', 'log_level = "DEBUG"'))
    policy = load_party(workdir, "regulator").policy
    data = generate(workdir / "data", policy, layout.agencies, 40, seed=9)
    processes = FederationProcesses(workdir)
    asyncio.run(processes.start_all(load_party(workdir, "regulator")))

    def fedscore(*args: str) -> dict[str, object]:
        env = {**os.environ, "FEDSCORE_REQUEST_ID": "trace-42"}
        done = subprocess.run(
            [sys.executable, "-m", "fedscore.apps.cli.main", *args, "--json"],
            capture_output=True, text=True, check=False, timeout=60, env=env,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]

    try:
        w = str(workdir)
        grant = fedscore(
            "consent", "grant", "--workdir", w, "--citizen", data.demo_citizen,
            "--purpose", "ptt-fuel-discount", "--relying-party", "ptt",
        )  # fmt: skip
        fedscore("score", "--workdir", w, "--as", "ptt", "--token", str(grant["token_file"]))
    finally:
        processes.stop_all()
    coordinator = _json_lines(paths.org("coordinator").serve_log)
    asked = "/fedscore.v1.CoordinatorService/Score from ptt: OK"
    score = [
        line for line in coordinator
        if line["request_id"] == "trace-42" and asked in line["message"]
    ]  # fmt: skip
    assert len(score) == 1 and score[0]["party"] == "coordinator"
    carried = [
        line["message"].split()[1]
        for line in coordinator
        if line["message"].startswith("batch ") and "trace-42" in line["message"]
    ]
    assert len(carried) == 1
    for agency in layout.agencies:
        node = _json_lines(paths.org(agency).serve_log)
        answered = [line for line in node if line["request_id"] == f"batch-{carried[0]}"]
        assert any(
            "NodeService/ContributeBatch from coordinator: OK" in a["message"] for a in answered
        )
    # Nothing personal in any line: no national ID in any party's log.
    for org in paths.orgs.iterdir():
        if (org / "serve.log").exists():
            assert data.demo_citizen not in (org / "serve.log").read_text("utf-8")
