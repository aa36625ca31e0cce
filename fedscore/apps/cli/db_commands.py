"""`fedscore db upgrade|status`: a party's schema by its migrations (fedscore/runtime/schema.py);
`fedscore db backup|restore`: its database to and from a file (fedscore/runtime/backup.py)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from fedscore.errors import InvalidArgument
from fedscore.runtime.backup import backup, backup_line, restore, restore_line, target_of
from fedscore.runtime.db import open_engine
from fedscore.runtime.org_paths import OrgPaths
from fedscore.runtime.party import load_party_config, org_folder
from fedscore.runtime.schema import SchemaState, kind_of, state, upgrade


def config_path(args: argparse.Namespace) -> Path:
    """`--config ORG/party.toml`, or `--workdir DIR --party ID` for a local federation."""
    if args.config is not None:
        if args.workdir is not None or args.party is not None:
            raise InvalidArgument(
                "give --config, or --workdir with --party, not both", "BAD_ARGUMENTS"
            )
        return Path(args.config)
    if args.workdir is not None and args.party is not None:
        return OrgPaths(org_folder(args.workdir, args.party)).config
    raise InvalidArgument(
        "give --config ORG/party.toml, or --workdir DIR --party ID", "BAD_ARGUMENTS"
    )


def _run(args: argparse.Namespace, apply: bool) -> dict[str, Any]:
    party = load_party_config(config_path(args))
    kind = kind_of(party.role)
    engine = open_engine(party.db_url)
    try:
        found: SchemaState = upgrade(engine, kind) if apply else state(engine, kind)
    finally:
        engine.dispose()
    if not getattr(args, "json", False):
        where = "up to date" if not found.pending else f"behind (head {found.head})"
        print(f"{party.id} ({kind}): revision {found.current or 'none'}, {where}", flush=True)
    return {"party": party.id, "kind": kind, "current": found.current, "head": found.head,
            "pending": found.pending}  # fmt: skip


def db_upgrade(args: argparse.Namespace) -> dict[str, Any]:
    return _run(args, apply=True)


def db_status(args: argparse.Namespace) -> dict[str, Any]:
    return _run(args, apply=False)


def db_backup(args: argparse.Namespace) -> dict[str, Any]:
    done = backup(target_of(config_path(args)), args.out)
    if not args.json:
        print(backup_line(done), flush=True)
    return done


def db_restore(args: argparse.Namespace) -> dict[str, Any]:
    done = restore(target_of(config_path(args)), args.source)
    if not args.json:
        print(restore_line(done), flush=True)
    return done


def party_arguments(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--config", type=Path, help="the party's own config, ORG/party.toml")
    sub.add_argument("--workdir", type=Path, help="a local federation's folder (with --party)")
    sub.add_argument("--party", help="party id in --workdir, e.g. trc, coordinator")


def register(parties: Any) -> None:
    db = parties.add_parser("db", help="a party's database: schema (migrations), backup, restore")
    db_sub = db.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, run, text in (
        ("upgrade", db_upgrade, "apply every pending migration to the party's database"),
        ("status", db_status, "the party's schema revision and whether migrations are pending"),
    ):
        sub = db_sub.add_parser(name, help=text)
        party_arguments(sub)
        sub.add_argument("--json", action="store_true", help="print the result as one JSON object")
        sub.set_defaults(run=run)
    for name, run, text, option, dest, help_text in (
        ("backup", db_backup, "a consistent copy of the party's database, while it serves",
         "--out", "out", "the backup file to write (it must not exist)"),
        ("restore", db_restore, "replace the party's database by a backup (stop the party first)",
         "--from", "source", "the backup file to restore"),
    ):  # fmt: skip
        sub = db_sub.add_parser(name, help=text)
        party_arguments(sub)
        sub.add_argument(
            option, dest=dest, type=Path, required=True, metavar="FILE", help=help_text
        )
        sub.add_argument("--json", action="store_true", help="print the result as one JSON object")
        sub.set_defaults(run=run)
