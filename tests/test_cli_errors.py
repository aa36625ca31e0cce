"""What a person sees when a command cannot do what was asked: one line, a reason, exit 2.

Run in-process through `fedscore.apps.cli.main.main`, as the console script runs it.
"""

from __future__ import annotations

import argparse
import csv
import importlib.metadata
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from fedscore.apps.cli.main import build_parser, main
from fedscore.apps.federation import init_federation
from fedscore.errors import FedscoreError
from fedscore.runtime.party import load_party
from keys.national_id import with_check_digit


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli") / "federation"
    init_federation(root, fast_kdf=True)
    return root


def _error_line(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"fedscore {importlib.metadata.version('fedscore')}"


def test_a_missing_file_is_named_with_a_reason(
    federation: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "export.csv"
    line = _error_line(
        capsys, ["node", "ingest", "--workdir", str(federation), "--agency", "trc", str(missing)]
    )
    assert line == f"fedscore: error: FILE_NOT_FOUND: {missing}: no such file or directory"


def test_an_unknown_release_lists_the_ones_there_are(federation: Path) -> None:
    rules = load_party(federation, "coordinator").policy.statistics_rules
    with pytest.raises(FedscoreError) as refused:
        rules.release("who-lives-where")
    assert refused.value.reason == "UNKNOWN_RELEASE"
    assert refused.value.message.endswith("it has " + ", ".join(sorted(rules.releases)))


def test_an_unknown_purpose_lists_the_ones_there_are(federation: Path) -> None:
    policy = load_party(federation, "coordinator").policy
    with pytest.raises(FedscoreError) as refused:
        policy.purpose("free-parking")
    assert refused.value.reason == "UNKNOWN_PURPOSE"
    assert refused.value.message.endswith("it has " + ", ".join(sorted(policy.purposes)))


def _serve(federation: Path, *more: str) -> subprocess.CompletedProcess[str]:
    """`fedscore serve` for trc as its own process, as an operator runs it."""
    argv = ["serve", "--workdir", str(federation), "--party", "trc", *more]
    return subprocess.run(
        [sys.executable, "-m", "fedscore.apps.cli.main", *argv],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


@pytest.mark.integration  # runs `fedscore serve` as a process
def test_a_port_in_use_is_one_line_of_ours_and_nothing_of_grpc(federation: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = _serve(federation, "--bind", f"127.0.0.1:{port}")
    assert done.returncode == 2
    assert done.stdout == ""
    [line] = done.stderr.splitlines()  # no gRPC C-core line, no warning before it
    assert line.startswith(f"fedscore: error: ADDRESS_IN_USE: cannot listen on 127.0.0.1:{port}")
    assert "--bind HOST:PORT" in line


@pytest.mark.integration  # runs `fedscore serve` as a process
def test_a_port_a_grpc_server_holds_is_in_use_too(federation: Path) -> None:
    """gRPC listens with SO_REUSEPORT: a party started twice must not share its port."""
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = _serve(federation, "--bind", f"127.0.0.1:{port}")
    assert done.returncode == 2
    [line] = done.stderr.splitlines()
    assert line.startswith("fedscore: error: ADDRESS_IN_USE: ")
    assert "already running?" in line


def test_too_many_agencies_is_named_as_such(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "eleven"
    line = _error_line(capsys, ["federation", "init", str(folder), "--agencies", "11"])
    assert line == (
        "fedscore: error: AGENCIES_OUT_OF_RANGE: --agencies must be 2 to 10 "
        "(the default policy's agencies), got 11"
    )
    assert not folder.exists()


def test_times_are_printed_in_iso_8601_with_the_local_offset() -> None:
    from datetime import datetime

    from fedscore.times import iso_time

    printed = iso_time(1_798_776_847)
    assert datetime.fromisoformat(printed).timestamp() == 1_798_776_847
    assert printed[10] == "T" and printed[-6] in "+-"  # date, time and its UTC offset


def _bad_export(path: Path, rows: int) -> Path:
    lines = ["national_id,indicator,occurred_at,quantity,certifier"]
    lines += [f"not-an-id,TRC-BLOOD,2026-01-0{1 + n % 9},1,unit" for n in range(rows)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_every_rejected_row_can_be_had_in_a_problems_file(
    federation: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    export = _bad_export(tmp_path / "export.csv", 25)
    problems = tmp_path / "problems.csv"
    argv = ["node", "ingest", "--workdir", str(federation), "--agency", "trc", str(export)]
    line = _error_line(capsys, [*argv, "--problems", str(problems)])
    assert line.startswith(f"fedscore: error: INVALID_IMPORT: {export} rejected, nothing imported")
    assert line.endswith(f"(all 25 in {problems})")
    with problems.open(encoding="utf-8", newline="") as handle:
        written = list(csv.DictReader(handle))
    assert [int(row["row"]) for row in written] == list(range(2, 27))
    assert {row["column"] for row in written} == {"national_id"}
    assert all("not-an-id" not in row["reason"] for row in written)  # no cell is echoed
    # Without a problems file the line says how to get them all.
    assert _error_line(capsys, argv).endswith("(and 15 more: --problems FILE writes them all)")


def test_with_json_a_rejection_is_data_on_stdout(
    federation: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    export = _bad_export(tmp_path / "export.csv", 12)
    argv = ["node", "ingest", "--workdir", str(federation), "--agency", "trc", str(export)]
    assert main([*argv, "--json"]) == 2
    out = json.loads(capsys.readouterr().out)
    assert out["error"] == "INVALID_IMPORT"
    assert [problem["row"] for problem in out["problems"]] == list(range(2, 14))


def test_a_file_of_the_wrong_kind_is_not_reported_as_row_0(
    federation: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    export = tmp_path / "export.txt"
    export.write_text("national_id\n", encoding="utf-8")
    argv = ["node", "ingest", "--workdir", str(federation), "--agency", "trc", str(export)]
    line = _error_line(capsys, argv)
    assert "row 0" not in line
    assert line.endswith("expected a .csv or .jsonl file")


def _commands(
    parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()
) -> list[tuple[str, ...]]:
    """Every command path of the CLI, found by walking its subparsers."""
    found = [prefix]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _commands(sub, (*prefix, name))
    return found


def test_every_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    commands = _commands(build_parser())
    assert ("node", "ingest") in commands and ("audit", "verify") in commands
    for command in commands:
        with pytest.raises(SystemExit) as done:
            main([*command, "--help"])
        assert done.value.code == 0, command
        out = capsys.readouterr().out
        assert out.startswith("usage: fedscore"), command
        assert "--help" in out, command


def test_a_usage_error_is_one_line_with_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["consent", "revoke", "--token-id", "t"])
    assert done.value.code == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("fedscore consent revoke: error: the following arguments are required")
    assert line.endswith("(see 'fedscore consent revoke --help')")


@pytest.mark.integration  # dials a real (absent) server over gRPC
def test_a_party_that_is_down_is_named(
    federation: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Nothing serves this federation: the registry is the party a consent list dials.
    line = _error_line(
        capsys,
        [
            "consent",
            "list",
            "--workdir",
            str(federation),
            "--citizen",
            with_check_digit("110170012345"),
        ],
    )
    endpoint = load_party(federation, "consent-registry").participant.endpoint
    assert line.startswith(
        f"fedscore: error: REGISTRY_UNAVAILABLE: consent-registry does not answer at {endpoint}"
    )
    assert "fedscore serve --workdir DIR --party consent-registry" in line
