"""The deployment files agree with the project, with each other and with the CLI.

Checked here, without starting anything (`deploy/`, `docs/operations.md`):

- `deploy/compose.yaml`: each organisation is its own service, mounts only its own named
  volume at /org, runs `serve --config /org/party.toml`, and no volume is mounted by two
  services; the agencies are the default policy's first three; `depends_on` gives the
  start order registry, agencies, coordinator. Where the tests run there is no YAML
  library (none is pinned, and none may be added), no Docker engine and no compose
  plugin, so the file is read by `read_compose_subset`: a reader of the few YAML forms the
  file uses, which fails on any other form rather than guess.
- `deploy/systemd/fedscore@.service`: parses with configparser (strict: a key given twice
  fails) and has the hardening and the keys the brief lists.
- `deploy/Containerfile`: entrypoint `fedscore`, the Makefile's pinned install from
  `requirements.lock` then `--no-deps -e .`, every package pyproject.toml installs is
  copied, a non-root user, /org a volume.
- Every `fedscore ...` command line in `docs/operations.md` and `deploy/prepare-orgs.sh`
  (and the commands of the compose file, the Containerfile and the unit) names a command
  of `fedscore.apps.cli.main.build_parser()`, with options that command has.
"""

from __future__ import annotations

import argparse
import configparser
import json
import re
import shlex
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fedscore.apps.cli.main import build_parser
from policies.defaults import DEFAULT_AGENCIES

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
CONTAINERFILE = DEPLOY / "Containerfile"
UNIT = DEPLOY / "systemd" / "fedscore@.service"
PREPARE = DEPLOY / "prepare-orgs.sh"
OPERATIONS = ROOT / "docs" / "operations.md"

SERVE_IN_CONTAINER = ["serve", "--config", "/org/party.toml"]
REGISTRY, COORDINATOR = "consent-registry", "coordinator"
HELPER = "regulator-helper"  # the helper aggregator (docs/adr/0019)
AGENCIES = list(DEFAULT_AGENCIES[:3])


# --- a reader of the YAML subset compose.yaml uses ---------------------------------------


class UnsupportedYaml(ValueError):
    """compose.yaml uses a YAML form this reader does not know."""


def _scalar(text: str, where: int) -> Any:
    text = text.strip()
    if text.startswith("["):
        if not text.endswith("]"):
            raise UnsupportedYaml(f"line {where}: multi-line flow sequence")
        inner = text[1:-1].strip()
        return [_scalar(item, where) for item in _split_flow(inner, where)] if inner else []
    if text.startswith(("{", "&", "*", "|", ">", "!", "%", "@", "`")) or text == "<<":
        raise UnsupportedYaml(f"line {where}: {text[:20]!r}")
    if text.startswith('"'):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UnsupportedYaml(f"line {where}: double-quoted {text!r}") from exc
        if not isinstance(value, str):
            raise UnsupportedYaml(f"line {where}: {text!r}")
        return value
    if text.startswith("'"):
        if len(text) < 2 or not text.endswith("'") or "'" in text[1:-1].replace("''", ""):
            raise UnsupportedYaml(f"line {where}: single-quoted {text!r}")
        return text[1:-1].replace("''", "'")
    return text


def _split_flow(inner: str, where: int) -> list[str]:
    items, current, quote = [], "", ""
    for char in inner:
        if quote:
            current += char
            if char == quote:
                quote = ""
        elif char in "\"'":
            quote = char
            current += char
        elif char == ",":
            items.append(current)
            current = ""
        elif char in "[]{}":
            raise UnsupportedYaml(f"line {where}: nested flow collection")
        else:
            current += char
    if quote:
        raise UnsupportedYaml(f"line {where}: unclosed quote")
    return [*items, current]


def _strip_comment(line: str) -> str:
    """The line without a comment (a '#' outside quotes, at its start or after a space)."""
    quote = ""
    for index, char in enumerate(line):
        if quote:
            if char == quote:
                quote = ""
        elif char in "\"'":
            quote = char
        elif char == "#" and (index == 0 or line[index - 1] in " \t"):
            return line[:index].rstrip()
    return line.rstrip()


def _lines(text: str) -> list[tuple[int, int, str]]:
    """(line number, indent, content) of every line with content."""
    found = []
    for number, raw in enumerate(text.splitlines(), start=1):
        if "\t" in raw:
            raise UnsupportedYaml(f"line {number}: tab")
        content = _strip_comment(raw)
        if not content.strip():
            continue
        if content.strip() in ("---", "..."):
            raise UnsupportedYaml(f"line {number}: document marker")
        found.append((number, len(content) - len(content.lstrip(" ")), content.strip()))
    return found


def _block(lines: list[tuple[int, int, str]], at: int, indent: int) -> tuple[Any, int]:
    number, first_indent, content = lines[at]
    if first_indent != indent:
        raise UnsupportedYaml(f"line {number}: indentation {first_indent}, expected {indent}")
    if content == "-" or content.startswith("- "):
        items: list[Any] = []
        while at < len(lines) and lines[at][1] == indent and lines[at][2].startswith("-"):
            number, _, content = lines[at]
            item = content[1:].strip()
            if not item or re.match(r"^[^\"'\[]*:(\s|$)", item):
                raise UnsupportedYaml(f"line {number}: only scalar sequence items are read")
            items.append(_scalar(item, number))
            at += 1
        return items, at
    mapping: dict[str, Any] = {}
    while at < len(lines) and lines[at][1] == indent:
        number, _, content = lines[at]
        match = re.match(r"^([A-Za-z0-9_.-]+):(?:\s+(.*))?$", content)
        if match is None:
            raise UnsupportedYaml(f"line {number}: not a 'key: value' line: {content!r}")
        key, rest = match.group(1), match.group(2)
        if key in mapping:
            raise UnsupportedYaml(f"line {number}: key {key!r} given twice")
        at += 1
        if rest:
            mapping[key] = _scalar(rest, number)
        elif at < len(lines) and lines[at][1] > indent:
            mapping[key], at = _block(lines, at, lines[at][1])
        elif at < len(lines) and lines[at][1] == indent and lines[at][2].startswith("- "):
            mapping[key], at = _block(lines, at, indent)  # a sequence under its key, unindented
        else:
            mapping[key] = None
    return mapping, at


def read_compose_subset(text: str) -> dict[str, Any]:
    """compose.yaml as plain data: block mappings, scalar sequences, flow sequences, scalars."""
    lines = _lines(text)
    if not lines:
        return {}
    document, at = _block(lines, 0, 0)
    if at != len(lines):
        number, indent, _ = lines[at]
        raise UnsupportedYaml(f"line {number}: unexpected indentation {indent}")
    if not isinstance(document, dict):
        raise UnsupportedYaml("the document is not a mapping")
    return document


def test_the_compose_reader_refuses_what_it_does_not_know() -> None:
    assert read_compose_subset("a:\n  b: [x, \"y z\"]\n  c:\n    - d\n    - 'e'\n") == {
        "a": {"b": ["x", "y z"], "c": ["d", "e"]}
    }
    for text in (
        "a: &anchor\n  b: 1\n",
        "a:\n  <<: *anchor\n",
        "a: |\n  text\n",
        "a:\n\tb: 1\n",
        "a: 1\na: 2\n",
        "a:\n  - b: 1\n",
        "a: {b: 1}\n",
    ):
        with pytest.raises(UnsupportedYaml):
            read_compose_subset(text)


# --- compose.yaml ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return read_compose_subset(COMPOSE.read_text("utf-8"))


def _services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    services = compose.get("services")
    assert isinstance(services, dict) and services, "compose.yaml has no services"
    return services


def test_every_organisation_is_a_service_of_its_own(compose: dict[str, Any]) -> None:
    assert set(compose) <= {"name", "services", "networks", "volumes"}, sorted(compose)
    assert set(_services(compose)) == {REGISTRY, COORDINATOR, HELPER, *AGENCIES}


def test_each_service_serves_from_its_own_volume_at_org(compose: dict[str, Any]) -> None:
    declared = compose.get("volumes") or {}
    mounted_by: dict[str, list[str]] = {}
    for name, service in _services(compose).items():
        assert service.get("command") == SERVE_IN_CONTAINER, name
        assert "entrypoint" not in service, f"{name}: the image's entrypoint is fedscore"
        sharing = {"volumes_from", "secrets", "configs", "network_mode", "ipc", "pid", "links"}
        assert not sharing & set(service), f"{name} shares {sorted(sharing & set(service))}"
        volumes = service.get("volumes")
        assert isinstance(volumes, list) and len(volumes) == 1, f"{name}: one volume, {volumes}"
        source, _, target = str(volumes[0]).partition(":")
        assert target == "/org", f"{name}: its folder is mounted at {target!r}, not /org"
        assert source in declared, f"{name}: {source!r} is not a named volume of the file"
        mounted_by.setdefault(source, []).append(name)
    shared = {v: names for v, names in mounted_by.items() if len(names) > 1}
    assert not shared, f"volumes mounted by two services: {shared}"
    assert set(declared) == set(mounted_by), "every named volume belongs to one service"


def test_services_share_the_network_and_the_image_only(compose: dict[str, Any]) -> None:
    services = _services(compose)
    assert len({str(s.get("image")) for s in services.values()}) == 1
    networks = {json.dumps(s.get("networks")) for s in services.values()}
    assert len(networks) == 1 and set(compose.get("networks") or {}) == set(
        json.loads(networks.pop())
    )


def test_start_order_is_registry_agencies_and_helper_coordinator(
    compose: dict[str, Any],
) -> None:
    services = _services(compose)
    needs = {name: set(service.get("depends_on") or []) for name, service in services.items()}
    assert needs[REGISTRY] == set()
    for agency in AGENCIES:
        assert needs[agency] == {REGISTRY}, agency
    assert needs[HELPER] == {REGISTRY}
    assert needs[COORDINATOR] == {REGISTRY, *AGENCIES, HELPER}


def test_prepare_script_prepares_the_compose_servers(compose: dict[str, Any]) -> None:
    text = PREPARE.read_text("utf-8")
    assert text.startswith("#!/bin/sh\n")
    assert re.search(r"^set -eu$", text, re.MULTILINE)
    agencies = re.search(r'^AGENCIES="([^"]*)"$', text, re.MULTILINE)
    servers = re.search(r'^SERVERS="([^"]*)"$', text, re.MULTILINE)
    assert agencies and servers
    assert agencies.group(1).split() == AGENCIES
    order = servers.group(1).replace("$AGENCIES", agencies.group(1)).split()
    assert order == [REGISTRY, *AGENCIES, HELPER, COORDINATOR]
    assert set(order) == set(_services(compose))


@pytest.mark.integration  # starts `sh -n`
def test_prepare_script_is_valid_posix_sh() -> None:
    done = subprocess.run(["sh", "-n", str(PREPARE)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


# --- the systemd unit ------------------------------------------------------------------------


def _unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=True, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment, method-assign]
    parser.read_string(UNIT.read_text("utf-8"), source=str(UNIT))
    return parser


def test_the_unit_runs_the_party_of_its_instance_hardened() -> None:
    unit = _unit()
    assert set(unit.sections()) == {"Unit", "Service", "Install"}
    service = unit["Service"]
    command = shlex.split(service["ExecStart"])
    assert command[0].startswith("/") and command[0].endswith("/fedscore"), command
    assert command[1:] == ["serve", "--config", "/var/lib/fedscore/%i/party.toml"]
    assert service["User"] and service["User"] not in ("root", "0")
    assert "DynamicUser" not in service
    expected = {
        "ProtectSystem": "strict",
        "ReadWritePaths": "/var/lib/fedscore/%i",
        "NoNewPrivileges": "yes",
        "PrivateTmp": "yes",
        "Restart": "on-failure",
        "EnvironmentFile": "-/etc/fedscore/%i.env",
    }
    assert {key: service.get(key) for key in expected} == expected
    assert unit["Install"]["WantedBy"] == "multi-user.target"


# --- the Containerfile -----------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    name: str
    argument: str


def _instructions() -> list[Instruction]:
    found: list[Instruction] = []
    pending = ""
    for raw in CONTAINERFILE.read_text("utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        whole = (pending + line).strip()
        pending = ""
        name, _, argument = whole.partition(" ")
        found.append(Instruction(name.upper(), argument.strip()))
    assert not pending, "the Containerfile ends inside a continued line"
    return found


def _only(instructions: list[Instruction], name: str) -> Instruction:
    matching = [i for i in instructions if i.name == name]
    assert len(matching) == 1, f"{name}: {matching}"
    return matching[0]


def _pip_installs(instructions: list[Instruction]) -> list[list[str]]:
    installs = []
    for instruction in instructions:
        if instruction.name != "RUN":
            continue
        for command in re.split(r"&&|;", instruction.argument):
            words = shlex.split(command)
            if "pip" in words and "install" in words:
                installs.append(words[words.index("install") + 1 :])
    return installs


def test_the_image_runs_fedscore_as_a_user_from_org() -> None:
    instructions = _instructions()
    assert instructions[0].name == "FROM" and instructions[0].argument == "python:3.11-slim"
    assert json.loads(_only(instructions, "ENTRYPOINT").argument) == ["fedscore"]
    assert json.loads(_only(instructions, "CMD").argument) == SERVE_IN_CONTAINER
    assert "/org" in json.loads(_only(instructions, "VOLUME").argument)
    users = [i for i in instructions if i.name == "USER"]
    assert users and users[-1].argument not in ("root", "0", "0:0")
    names = [i.name for i in instructions]
    assert names.index("USER") < names.index("ENTRYPOINT")


def test_the_image_installs_as_the_makefile_does() -> None:
    instructions = _instructions()
    makefile = (ROOT / "Makefile").read_text("utf-8")
    pins = re.search(r"pip install --quiet (pip==\S+ setuptools==\S+)", makefile)
    assert pins, "the Makefile's pinned pip and setuptools"
    installs = _pip_installs(instructions)
    assert pins.group(1).split() in installs
    assert ["-r", "requirements.lock"] in installs
    project = [words for words in installs if "-e" in words]
    assert len(project) == 1 and "--no-deps" in project[0]
    assert project[0][project[0].index("-e") + 1] == "."
    for words in installs:  # nothing installed beyond the lock, the pins and the project
        assert words in (pins.group(1).split(), ["-r", "requirements.lock"], project[0]), words
    copied = " ".join(i.argument for i in instructions if i.name == "COPY")
    assert "requirements.lock" in copied
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))
    for pattern in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]:
        package = pattern.rstrip("*")
        assert re.search(rf"(^|\s){package}(\s|$)", copied), f"{package} is not copied"


# --- every fedscore command line names a command the CLI has ---------------------------------


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {option for action in parser._actions for option in action.option_strings}


def command_problem(root: argparse.ArgumentParser, words: list[str]) -> str | None:
    """Why `fedscore <words>` is not a command line of the CLI, or None if it is."""
    parser, path = root, ["fedscore"]
    rest = list(words)
    while (subcommands := _subparsers(parser)) and rest and not rest[0].startswith("-"):
        if rest[0] not in subcommands:
            return f"'{' '.join(path)}' has no command {rest[0]!r}"
        path.append(rest.pop(0))
        parser = subcommands[path[-1]]
    if _subparsers(parser) and not any(w in ("-h", "--help", "--version") for w in rest):
        return f"'{' '.join(path)}' needs a command"
    known = _options(parser)
    for word in rest:
        option = word.split("=", 1)[0]
        if option.startswith("-") and option != "-" and option not in known:
            return f"'{' '.join(path)}' has no option {option}"
    return None


def _is_fedscore(word: str) -> bool:
    """The fedscore command: by name, by installed path, or as the image's entrypoint."""
    return word == "fedscore" or word.endswith("bin/fedscore") or word.startswith("fedscore:")


def _words(text: str) -> list[str]:
    lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    return list(lexer)


def _logical_lines(block: str) -> list[str]:
    """Shell lines, continuations joined, until the quotes close; heredoc bodies left out."""
    lines: list[str] = []
    pending, heredoc_end = "", ""
    for raw in block.splitlines():
        if heredoc_end:
            heredoc_end = "" if raw.strip() == heredoc_end else heredoc_end
            continue
        if not pending and raw.lstrip().startswith("#"):
            continue
        text = pending + raw
        if text.endswith("\\"):
            pending = text[:-1] + " "
            continue
        try:
            _words(text)
        except ValueError:  # a quote that closes on a later line
            pending = text + "\n"
            continue
        pending = ""
        lines.append(text)
        heredoc = re.search(r"<<-?\s*['\"]?(\w+)['\"]?", text)
        heredoc_end = heredoc.group(1) if heredoc else ""
    assert not pending, f"unfinished shell line: {pending!r}"
    return lines


def fedscore_commands(shell: str) -> list[list[str]]:
    """Every `fedscore ...` invocation in shell text: the words after `fedscore`."""
    found = []
    for line in _logical_lines(shell):
        words = _words(line)
        for index, word in enumerate(words):
            if not _is_fedscore(word):
                continue
            after = []
            for following in words[index + 1 :]:
                if re.fullmatch(r"[;&|()<>]+", following):
                    break
                after.append(following)
            if after and re.match(r"^([a-z][a-z-]*|-.*)$", after[0]):
                found.append(after)
    return found


def _markdown_shell(markdown: str) -> list[str]:
    """Shell text of a guide: fenced blocks other than Python, and inline code spans."""
    pieces = []
    prose = []
    for index, part in enumerate(re.split(r"^```", markdown, flags=re.MULTILINE)):
        if index % 2:
            language, _, body = part.partition("\n")
            if language.strip() not in ("python", "toml", "json", "text"):
                pieces.append(body)
        else:
            prose.append(part)
    for text in prose:
        paragraphs = re.sub(r"\s*\n\s*", " ", text)
        pieces += [span for span in re.findall(r"`([^`]+)`", paragraphs) if "fedscore" in span]
    return pieces


def _documented_commands() -> dict[str, list[list[str]]]:
    sources = {
        "docs/operations.md": _markdown_shell(OPERATIONS.read_text("utf-8")),
        "deploy/prepare-orgs.sh": [PREPARE.read_text("utf-8")],
    }
    found = {
        name: [c for text in texts for c in fedscore_commands(text)]
        for name, texts in sources.items()
    }
    compose = read_compose_subset(COMPOSE.read_text("utf-8"))
    found["deploy/compose.yaml"] = [s["command"] for s in compose["services"].values()]
    found["deploy/Containerfile"] = [json.loads(_only(_instructions(), "CMD").argument)]
    found["deploy/systemd/fedscore@.service"] = [shlex.split(_unit()["Service"]["ExecStart"])[1:]]
    return found


def test_the_command_finder_finds_invocations_only() -> None:
    text = (
        "useradd --system fedscore-trc\n"
        "alias fedscore='sudo -u fedscore-trc /opt/fedscore/venv/bin/fedscore'\n"
        "a && /opt/fedscore/venv/bin/fedscore org init /x \\\n    --id trc  # a note\n"
        "docker run --rm -v x:/org fedscore:local authority publish /a\n"
        "python - <<'EOF'\nfedscore not a command\nEOF\n"
        "sudo sh -c 'x;\n  fedscore serve --config y' < fedscore-health.py\n"
        "ls /var/lib/fedscore\n"
    )
    assert fedscore_commands(text) == [
        ["org", "init", "/x", "--id", "trc"],
        ["authority", "publish", "/a"],
    ]
    parser = build_parser()
    assert command_problem(parser, ["audit", "verify", "--workdir", "d"]) is None
    assert command_problem(parser, ["audit", "--help"]) is None
    assert command_problem(parser, ["audit"]) == "'fedscore audit' needs a command"
    assert command_problem(parser, ["nope"]) == "'fedscore' has no command 'nope'"
    assert command_problem(parser, ["score", "--nope=1"]) == "'fedscore score' has no option --nope"


def test_every_documented_command_exists_in_the_cli() -> None:
    """Fails, naming each, while a command the guides use is missing from the CLI."""
    commands = _documented_commands()
    guide = {tuple(words[:2]) for words in commands["docs/operations.md"]}
    for needed in [("org", "init"), ("authority", "admit"), ("custodian", "sign"), ("serve",)]:
        assert any(found[: len(needed)] == needed for found in guide), f"{needed} not found"
    parser = build_parser()
    problems = sorted(
        {
            f"{source}: fedscore {' '.join(words)}\n    -> {problem}"
            for source, found in commands.items()
            for words in found
            if (problem := command_problem(parser, words)) is not None
        }
    )
    assert not problems, "commands the CLI does not have:\n" + "\n".join(problems)
