"""`fedscore`: one command, a subcommand per party.

Every command exits 0 on success; on error it prints one line naming the problem to
stderr and exits 2 (bad input or refusal) or 1 (unexpected). `--json` prints data as one
JSON object on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import fedscore.apps.cli.audit_commands as audit_commands
import fedscore.apps.cli.commands as commands
import fedscore.apps.cli.consent_commands as consent_commands
import fedscore.apps.cli.db_commands as db_commands
import fedscore.apps.cli.org_commands as org_commands
import fedscore.apps.cli.stats_commands as stats_commands
from fedscore.errors import FedscoreError
from fedscore.runtime import logs

DESCRIPTION = (
    "fedscore: a federated gateway for scores for positive behaviour. Records stay at "
    "each agency; only signed, consented, purpose-limited questions cross the network."
)

FIRST_STEPS = (
    "New here? 'fedscore federation init DIR --examples' makes a local federation with "
    "example exports and says what to do next; README.md, 'The first hour', walks each "
    "role through it. 'fedscore COMMAND --help' for each command."
)


class _Parser(argparse.ArgumentParser):
    """Usage errors are one line too, naming the problem and where to get help."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _workdir(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "--workdir", type=Path, required=True, help="the federation folder (from 'federation init')"
    )


def _json(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--json", action="store_true", help="print the result as one JSON object")


def _version() -> str:
    try:
        return importlib.metadata.version("fedscore")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree, not installed
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="fedscore", description=DESCRIPTION, epilog=FIRST_STEPS)
    parser.add_argument("--version", action="version", version=f"fedscore {_version()}")
    parties = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    federation = parties.add_parser("federation", help="create a local federation")
    fed_sub = federation.add_subparsers(dest="action", required=True, metavar="ACTION")
    init = fed_sub.add_parser(
        "init", help="keys, CA, signed trust registry and default policy for N agencies"
    )
    init.add_argument("dir", type=Path, help="new, empty folder for the federation")
    init.add_argument("--agencies", type=int, default=3, help="number of agencies (2-10)")
    init.add_argument(
        "--examples",
        action="store_true",
        help="also write synthetic example exports (DIR/exports/) and name a citizen in them",
    )
    _json(init)
    init.set_defaults(run=commands.federation_init)

    serve = parties.add_parser("serve", help="run one party's gRPC server until stopped")
    serve.add_argument(
        "--config", type=Path, help="the party's own config, ORG/party.toml (what production uses)"
    )
    serve.add_argument(
        "--workdir", type=Path, help="a local federation's folder (with --party; not with --config)"
    )
    serve.add_argument("--party", help="party id in --workdir, e.g. trc, coordinator")
    serve.add_argument(
        "--migrate",
        action="store_true",
        help="apply pending database migrations before serving (otherwise a database that "
        "is behind is refused: run 'fedscore db upgrade')",
    )
    serve.add_argument(
        "--bind",
        metavar="HOST:PORT",
        help="address to listen on (default: the party's endpoint in the trust registry)",
    )
    serve.set_defaults(run=commands.serve)

    node = parties.add_parser("node", help="agency node operations")
    node_sub = node.add_subparsers(dest="action", required=True, metavar="ACTION")
    ingest = node_sub.add_parser("ingest", help="import an agency export (CSV or JSON Lines)")
    _workdir(ingest)
    ingest.add_argument("--agency", required=True, help="agency id, e.g. trc")
    ingest.add_argument("file", type=Path, help="export file (.csv or .jsonl)")
    ingest.add_argument(
        "--problems",
        type=Path,
        metavar="FILE",
        help="if the file is rejected, write every problem to FILE (CSV: row, column, reason)",
    )
    _json(ingest)
    ingest.set_defaults(run=commands.node_ingest)

    consent_commands.register(parties)

    score = parties.add_parser("score", help="a relying party asks for what a purpose releases")
    _workdir(score)
    score.add_argument("--as", dest="relying_party", required=True, help="relying party id")
    asked = score.add_mutually_exclusive_group(required=True)
    asked.add_argument("--token", type=Path, help="consent token file")
    asked.add_argument(
        "--batch",
        type=Path,
        help='file listing token files, one per line (a path, or JSON {"token": path}); '
        "one result line per query (JSON Lines with --json)",
    )
    score.add_argument("--year", type=int, default=0, help="calendar year (default: current)")
    _json(score)
    score.set_defaults(run=commands.score)

    demo = parties.add_parser("demo", help="run a whole local federation and narrate it")
    demo.add_argument("--workdir", type=Path, help="folder to use (default: a new one here)")
    demo.add_argument("--citizens", type=int, default=1200, help="synthetic citizens (>=1000)")
    demo.set_defaults(run=commands.demo)
    org_commands.register(parties)
    db_commands.register(parties)
    stats_commands.register(parties)
    audit_commands.register(parties)
    return parser


def _os_reason(error: OSError) -> str:
    if isinstance(error, FileNotFoundError):
        return "FILE_NOT_FOUND"
    if isinstance(error, PermissionError):
        return "PERMISSION_DENIED"
    if isinstance(error, IsADirectoryError | NotADirectoryError):
        return "NOT_A_FILE"
    return "OS_ERROR"


def _os_message(error: OSError) -> str:
    """The problem and the path, without the `[Errno N]` prefix a person has no use for."""
    what = error.strerror or str(error)
    return f"{error.filename}: {what.lower()}" if error.filename else what


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    run: Callable[[argparse.Namespace], Any] = args.run
    # Every call this command makes carries one request id (fedscore.runtime.logs), so
    # what it caused can be found in every party's log; FEDSCORE_REQUEST_ID chooses it.
    logs.REQUEST_ID.set(logs.accepted(os.environ.get("FEDSCORE_REQUEST_ID")))
    try:
        outcome = run(args)
        if asyncio.iscoroutine(outcome):
            outcome = asyncio.run(outcome)
    except FedscoreError as error:
        print(f"fedscore: error: {error.reason}: {error.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except OSError as error:
        print(f"fedscore: error: {_os_reason(error)}: {_os_message(error)}", file=sys.stderr)
        return 2
    except ValueError as error:
        print(f"fedscore: error: INVALID_VALUE: {error}", file=sys.stderr)
        return 2
    except Exception as error:
        if os.environ.get("FEDSCORE_DEBUG"):
            raise
        print(
            f"fedscore: internal error: {type(error).__name__}: {error} "
            "(set FEDSCORE_DEBUG=1 for the traceback)",
            file=sys.stderr,
        )
        return 1
    if isinstance(outcome, dict) and getattr(args, "json", False):
        print(json.dumps(outcome, ensure_ascii=False, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
