"""Every command the README shows is run exactly as written, in order, on a real federation.

- Every line of every fenced block marked `sh` is a `fedscore` command (as
  `.venv/bin/fedscore ...` or `fedscore ...`); the test runs it from the repository's
  folder with only the README's placeholders put in (DIR, NID, TOKEN_ID, RELEASE_ID,
  taken from where the README says: a new folder, and what `federation init --examples`,
  the last `consent grant` and `stats publish` printed) and checks its exit status: 0,
  or the one the line states (`# exit 2`, then one error line with a reason).
- A `fedscore serve` line keeps running, as in its own terminal: the test starts it,
  waits for `serving on`, and stops every server at the end (SIGINT, as Ctrl-C does).
- The servers' output is what an operator reads: every line with its time (ISO 8601 and
  offset) and level, a line per call, and no national ID anywhere.
- Every other `fedscore ...` the README names (the forms in "The CLI", inline code) must
  name commands and options that exist.
- The two commands (`make demo`, `make test`) stay as they are, and are not run here.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from fedscore.apps.cli.main import build_parser

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
TWO_COMMANDS = """make demo    # sets everything up, runs a whole local federation, narrates it
make test    # sets everything up and runs every check and test"""
PLACEHOLDERS = ("DIR", "NID", "TOKEN_ID", "RELEASE_ID")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
EXIT = re.compile(r"#\s*exit\s+(\d+)\s*$")
ISO_LINE = re.compile(
    r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d (DEBUG|INFO|WARNING|ERROR) "
)


def _blocks(kind: str) -> list[str]:
    return [body for info, body in FENCE.findall(README.read_text("utf-8")) if info == kind]


def sh_lines() -> list[str]:
    return [
        line.strip()
        for block in _blocks("sh")
        for line in block.splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]


def _fedscore() -> list[str]:
    """The README's `.venv/bin/fedscore`, where `make` put it; else this interpreter's."""
    installed = ROOT / ".venv" / "bin" / "fedscore"
    if installed.exists():
        return [str(installed)]
    beside = Path(sys.executable).parent / "fedscore"
    return [str(beside)] if beside.exists() else [sys.executable, "-m", "fedscore.apps.cli.main"]


@dataclass
class Walk:
    """The placeholders' values as the walk finds them, and the servers it started."""

    values: dict[str, str]
    servers: dict[str, subprocess.Popen[str]] = field(default_factory=dict)
    logs: dict[str, Path] = field(default_factory=dict)

    def argv(self, line: str) -> list[str]:
        text = line
        for name, value in self.values.items():
            text = re.sub(rf"\b{name}\b", value, text)
        left = [p for p in PLACEHOLDERS if re.search(rf"\b{p}\b", text)]
        assert not left, f"{line}: no value yet for {left}"
        words = shlex.split(text, comments=True)
        assert words[0] in (".venv/bin/fedscore", "fedscore"), f"not a fedscore command: {line}"
        return [*_fedscore(), *words[1:]]

    def learn(self, out: str) -> None:
        for name, pattern in (
            ("NID", r"example citizen: (\d{13})"),
            ("TOKEN_ID", r"consent ([0-9a-f]{32}) granted"),
            ("RELEASE_ID", r"published (\S+) \(epsilon"),
        ):
            found = re.search(pattern, out)
            if found:
                self.values[name] = found.group(1)

    def serve(self, line: str, argv: list[str]) -> None:
        name = f"server-{len(self.servers)}"
        log = Path(self.values["DIR"]).parent / f"{name}.stderr"
        with log.open("w") as stderr:  # the child keeps its own copy of the descriptor
            process = subprocess.Popen(
                argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=stderr, text=True
            )
        assert process.stdout is not None
        deadline = time.monotonic() + 90
        said = process.stdout.readline()
        while "serving on" not in said:
            assert process.poll() is None and time.monotonic() < deadline, (
                f"{line}: exited {process.returncode}: {log.read_text()}"
            )
            said = process.stdout.readline()
        self.servers[name], self.logs[name] = process, log

    def stop(self) -> None:
        for process in self.servers.values():
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        for process in self.servers.values():
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
            if process.stdout is not None:
                process.stdout.close()


def test_the_two_commands_are_as_they_were() -> None:
    assert _blocks("")[0].strip() == TWO_COMMANDS


def test_every_sh_line_is_a_fedscore_command() -> None:
    lines = sh_lines()
    assert len(lines) > 20
    for line in lines:
        assert shlex.split(line, comments=True)[0] in (".venv/bin/fedscore", "fedscore"), line


@pytest.mark.integration  # runs every command and server as a process
def test_every_command_in_the_readme_runs_as_written(tmp_path: Path) -> None:
    walk = Walk({"DIR": str(tmp_path / "trial")})
    env = {k: v for k, v in os.environ.items() if k != "FEDSCORE_PASSPHRASE"}
    said: list[str] = []
    try:
        for line in sh_lines():
            argv = walk.argv(line)
            expected = EXIT.search(line)
            if argv[len(_fedscore())] == "serve" and expected is None:
                walk.serve(line, argv)
                continue
            done = subprocess.run(
                argv, cwd=ROOT, capture_output=True, text=True, timeout=180, check=False, env=env
            )
            code = int(expected.group(1)) if expected else 0
            assert done.returncode == code, f"{line}\n{done.stdout}\n{done.stderr}"
            if code:
                [error] = done.stderr.splitlines()
                assert re.match(r"fedscore: error: [A-Z_]+: ", error), error
            else:
                assert done.stderr == "", f"{line}\n{done.stderr}"
            walk.learn(done.stdout)
            said.append(done.stdout)
    finally:
        walk.stop()
    assert "band = 5%" in "".join(said)  # what the README says PTT learns
    assert set(walk.values) == set(PLACEHOLDERS)
    assert len(walk.servers) >= 6
    for name, log in walk.logs.items():
        lines = log.read_text("utf-8").splitlines()
        assert lines, name
        assert all(ISO_LINE.match(line) for line in lines), (name, lines[:3])
        assert any(" INFO fedscore.calls " in line for line in lines), name
        assert walk.values["NID"] not in log.read_text("utf-8"), name


# --- every other fedscore command named: the forms of "The CLI" and inline code -------


def _choices(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {option for action in parser._actions for option in action.option_strings}


def _check_form(form: str) -> list[str]:
    """What in `form` ("fedscore org rotate-key ORG", "authority init|admit ...") does not
    exist: a command path of the CLI, and each --option of the command it names."""
    problems: list[str] = []
    parser = build_parser()
    for word in form.split()[1:]:
        word = word.strip("[]")
        choices = _choices(parser)
        names = word.split("|")
        if choices and not word.startswith("-") and word.islower() and word != "...":
            missing = [name for name in names if name not in choices]
            if missing:
                problems.append(f"{form}: no command {missing}")
                break
            if len(names) > 1:
                break  # several commands named at once: their options are not checked
            parser = choices[word]
        elif word.startswith("--") and word.split("=")[0] not in _options(parser):
            problems.append(f"{form}: no option {word}")
    return problems


def named_forms() -> list[str]:
    text = README.read_text("utf-8")
    forms = []
    for line in "".join(_blocks("text")).splitlines():
        command = line.split("  #", 1)[0].strip()
        if not command.startswith("fedscore "):
            continue
        head, *alternatives = command.split(" | ")
        forms.append(head)
        stem = " ".join(head.split()[:2])  # "fedscore org": the rest name its subcommand
        forms += [f"{stem} {alternative}" for alternative in alternatives]
    forms += re.findall(r"`(fedscore [^`]+)`", text)
    return forms


def test_every_other_command_the_readme_names_exists() -> None:
    forms = named_forms()
    assert "fedscore audit verify --workdir DIR" in forms
    assert [problem for form in forms for problem in _check_form(form)] == []


def test_a_command_or_option_that_does_not_exist_is_found() -> None:
    assert _check_form("fedscore consent grant --workdir DIR --citizen NID") == []
    assert _check_form("fedscore consent give --workdir DIR") != []
    assert _check_form("fedscore score --workdir DIR --as ptt --tokens FILE") != []
    assert _check_form("fedscore authority init|admit|remove") == []
    assert _check_form("fedscore authority init|adopt") != []
