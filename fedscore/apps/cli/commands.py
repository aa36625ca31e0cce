"""What each `fedscore` subcommand does; `main.py` only parses arguments and prints errors."""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any, Protocol

from fedscore.apps import client
from fedscore.apps.cli import db_commands
from fedscore.apps.cli.progress import Progress, shown
from fedscore.apps.federation import init_federation
from fedscore.apps.party_metrics import PartyCollector
from fedscore.apps.processes import stop_on_signal
from fedscore.apps.readiness_checks import checks_for
from fedscore.errors import IngestError, InvalidArgument
from fedscore.runtime import logs
from fedscore.runtime.db import open_engine
from fedscore.runtime.listen import check_can_listen
from fedscore.runtime.metrics import serve_metrics
from fedscore.runtime.party import Party, load_party, load_party_config
from fedscore.runtime.readiness import Readiness, probe_server
from fedscore.runtime.schema import MIGRATED_ROLES, kind_of, require_current, upgrade
from fedscore.times import iso_time
from fedscore.v1.consent_pb2 import ConsentToken
from fedscore.v1.envelope_pb2 import Envelope
from fedscore.v1.trust_pb2 import Role
from keys.tls import certificate_not_after


class _Stoppable(Protocol):
    async def stop(self) -> None: ...


def _say(args: argparse.Namespace, text: str) -> None:
    if not getattr(args, "json", False):
        print(text, flush=True)


def federation_init(args: argparse.Namespace) -> dict[str, Any]:
    layout = init_federation(args.dir, args.agencies)
    _say(args, f"federation {layout.federation_id} created in {layout.root}")
    for party_id, role in layout.roles.items():
        endpoint = layout.endpoints.get(party_id) or "(client only)"
        _say(args, f"  {party_id:18} {role:24} {endpoint}")
    document = layout.to_json()
    if args.examples:
        from fedscore.apps.examples import write_examples

        policy = load_party(args.dir, "regulator").policy
        examples = write_examples(Path(args.dir), policy, layout.agencies)
        _say(args, f"example exports (synthetic) in {examples.with_errors.parent}:")
        for agency, path in examples.files.items():
            _say(args, f"  {agency:18} {path.name}")
        _say(args, f"  {'(to fix)':18} {examples.with_errors.name}")
        _say(
            args,
            f"example citizen: {examples.citizen} (records at every agency; a yearly total "
            f"of {examples.total} once every file is imported)",
        )
        document["examples"] = examples.to_json()
    _next_steps(args, Path(args.dir))
    return document


def _next_steps(args: argparse.Namespace, workdir: Path) -> None:
    """What a person does next with a new local federation (the README's first hour)."""
    from fedscore.apps.processes import server_party_ids

    # As the person typed it: `.venv/bin/fedscore` works where a bare `fedscore` may not.
    typed = sys.argv[0] if Path(sys.argv[0]).name == "fedscore" else "fedscore"
    _say(
        args,
        f"next: import each agency's export ({typed} node ingest --workdir {workdir} "
        "--agency ID FILE), then start the servers in this order, each in its own terminal "
        "once the one before says 'serving on' (--migrate makes its database the first time):",
    )
    for party_id in server_party_ids(workdir):
        _say(args, f"  {typed} serve --workdir {workdir} --party {party_id} --migrate")


RENEW_CERTIFICATE_DAYS = 30


def _schema_ready(party: Party, *, migrate: bool) -> None:
    """Apply pending migrations when asked; otherwise refuse a database that is behind."""
    engine = open_engine(party.db_url)
    try:
        kind = kind_of(party.role)
        if migrate:
            upgrade(engine, kind)
        require_current(engine, kind)
    finally:
        engine.dispose()


def certificate_renewal_due(cert_pem: bytes, now: float) -> str | None:
    """What to tell an operator whose certificate expires within RENEW_CERTIFICATE_DAYS."""
    expires = certificate_not_after(cert_pem).timestamp()
    days = (expires - now) / 86400
    if days > RENEW_CERTIFICATE_DAYS:
        return None
    when = iso_time(expires)
    if days <= 0:
        return f"the TLS certificate expired on {when}: run 'fedscore org renew-cert' now"
    return (
        f"the TLS certificate expires on {when} ({days:.0f} days): run 'fedscore org "
        "renew-cert', send renewal.request to the authority, then 'org install-cert'"
    )


async def serve(args: argparse.Namespace) -> dict[str, Any]:
    # A server's log says when and how bad: ISO-like local time, level, where it came from.
    config_path = db_commands.config_path(args)
    party = load_party_config(config_path)
    logs.configure(party.config.log_level, party.config.log_format, party.id)
    logs.log_every_call()
    if party.role not in MIGRATED_ROLES or party.role == Role.ROLE_REGULATOR:
        raise InvalidArgument(
            f"{party.id} is a {Role.Name(party.role)} and runs no server", reason="NOT_A_SERVER"
        )
    bind = args.bind or party.config.listen or None
    where = bind or party.participant.endpoint
    if "," not in where:  # one address (a replica binds its own, from 'listen')
        check_can_listen(where)  # before anything is logged or gRPC tries (runtime/listen.py)
    _schema_ready(party, migrate=args.migrate)
    renewal = certificate_renewal_due(party.tls.cert_pem, time.time())
    if renewal:
        logging.getLogger("fedscore.serve").warning("%s: %s", party.id, renewal)
    running: _Stoppable
    if party.role == Role.ROLE_AGENCY:
        from node import server as node_server

        running = await node_server.start(party, bind=bind)
    elif party.role == Role.ROLE_CONSENT_REGISTRY:
        from consent import server as consent_server

        running = await consent_server.start(party, bind=bind)
    elif party.role == Role.ROLE_COORDINATOR:
        from coordinator import server as coordinator_server

        running = await coordinator_server.start(party, bind=bind)
    elif party.role == Role.ROLE_HELPER_AGGREGATOR:
        from helper import server as helper_server

        running = await helper_server.start(party, bind=bind)
    else:
        raise InvalidArgument(
            f"{party.id} is a {Role.Name(party.role)} and runs no server", reason="NOT_A_SERVER"
        )
    readiness, probe = await _report_readiness(party, running)
    stop = stop_on_signal()
    print(f"fedscore: {party.id} serving on {where}", flush=True)
    await stop.wait()
    await readiness.stop()
    if probe is not None:
        await probe.stop(1.0)
    await running.stop()
    print(f"fedscore: {party.id} stopped", flush=True)
    return {}


async def _report_readiness(party: Party, running: Any) -> tuple[Readiness, Any]:
    """Health follows the party's readiness checks; a local probe port if configured."""
    server = running.server
    readiness = Readiness(server.health, server.services, checks_for(kind_of(party.role), running))
    await readiness.apply()
    readiness.start()
    probe = None
    if party.config.health_probe:
        probe = await probe_server(server.health, party.config.health_probe)
    if party.config.metrics_port:
        host = (party.config.listen or party.participant.endpoint).rsplit(":", 1)[0]
        collector = PartyCollector(kind_of(party.role), running, readiness)
        port = serve_metrics(host, party.config.metrics_port, collector)
        logging.getLogger("fedscore.serve").info("metrics on http://%s:%d/metrics", host, port)
    return readiness, probe


SHOWN_PROBLEMS = 10


def _column_of(reason: str) -> str:
    """The export column a problem is about, when its reason names one first."""
    from node.export_rows import COLUMNS

    if reason.startswith("national ID "):  # the ID validator's own wording
        return "national_id"
    first = reason.split(" ", 1)[0]
    return first if first in COLUMNS else ""


def _rejected(file: Path, error: IngestError, problems_file: Path | None) -> IngestError:
    """One line naming the first problems, and every problem in `problems_file` if asked."""
    rows = [(row, why) for row, why in error.problems if row > 0]
    if not rows:  # about the file itself (its kind, its header): no rows to list
        return IngestError(f"{file} rejected, nothing imported: {error.message}", error.problems)
    if problems_file is not None:
        with problems_file.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["row", "column", "reason"])
            writer.writerows((row, _column_of(why), why) for row, why in error.problems)
    shown = "; ".join(f"row {row}: {why}" for row, why in rows[:SHOWN_PROBLEMS])
    more = len(error.problems) - SHOWN_PROBLEMS
    if problems_file is not None:
        rest = f" (all {len(error.problems)} in {problems_file})"
    elif more > 0:
        rest = f" (and {more} more: --problems FILE writes them all)"
    else:
        rest = ""
    return IngestError(f"{file} rejected, nothing imported: {shown}{rest}", error.problems)


def node_ingest(args: argparse.Namespace) -> dict[str, Any]:
    from node.ingest import ingest_file
    from node.store import NodeStore

    party = load_party(args.workdir, args.agency)
    if party.role != Role.ROLE_AGENCY:
        raise InvalidArgument(f"{args.agency} is not an agency", reason="NOT_AN_AGENCY")
    store = NodeStore(party.db_url)
    key = party.secrets.pseudonym_key
    try:
        with Progress(shown(args), unit="B") as progress:
            report = ingest_file(store, args.file, party.policy, party.id, key, progress=progress)
    except IngestError as error:
        if args.json:  # the rejection is data too: every row, on stdout
            problems = [{"row": row, "reason": why} for row, why in error.problems]
            document = {"error": error.reason, "file": str(args.file), "problems": problems}
            print(json.dumps(document, ensure_ascii=False, sort_keys=True))
        raise _rejected(args.file, error, args.problems) from error
    if report.already_imported:
        _say(args, f"{args.file} was already imported; nothing changed")
    else:
        _say(
            args,
            f"{args.file}: {report.rows} rows, {report.new_records} new records, "
            f"{report.duplicate_records} already held",
        )
        if report.uncertified_records:
            _say(
                args,
                f"  note: {report.uncertified_records} rows have no certifier for an indicator "
                "that counts only when certified; they add nothing to any score until a "
                "certified version is imported",
            )
    return {
        "agency": party.id,
        "file": str(args.file),
        "file_sha256": report.file_sha256,
        "rows": report.rows,
        "new_records": report.new_records,
        "duplicate_records": report.duplicate_records,
        "uncertified_records": report.uncertified_records,
        "already_imported": report.already_imported,
    }


def _read_token(path: Path) -> tuple[Envelope, str]:
    """A consent token file: the token envelope and the purpose it was granted for."""
    try:
        envelope = Envelope.FromString(path.read_bytes())
        return envelope, ConsentToken.FromString(envelope.payload).purpose_id
    except Exception as exc:
        raise InvalidArgument(f"{path} is not a consent token file", "BAD_TOKEN_FILE") from exc


def read_batch_file(path: Path) -> list[Path]:
    """Token files listed one per line, as a path or as JSON {"token": path}.

    Blank lines and lines starting with "#" are skipped; relative paths are taken from the
    batch file's folder.
    """
    files = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        named: object = text
        if text.startswith("{"):
            try:
                named = json.loads(text).get("token")
            except (ValueError, AttributeError):
                named = None
        if not isinstance(named, str) or not named:
            raise InvalidArgument(f"{path}:{number}: no token file named", "BAD_BATCH_FILE")
        files.append(path.parent / named)
    if not files:
        raise InvalidArgument(f"{path} lists no token files", reason="BAD_BATCH_FILE")
    return files


async def score_batch(args: argparse.Namespace) -> None:
    """`score --batch FILE`: one ScoreBatch stream, one printed line per query."""
    relying_party = await client.current_party(args.workdir, args.relying_party)
    files = read_batch_file(args.batch)
    queries = [
        client.signed_score_query(relying_party, *_read_token(path), args.year) for path in files
    ]
    for path, answered in zip(files, await client.score_batch(relying_party, queries), strict=True):
        row: dict[str, Any] = {"sequence": answered.sequence, "token_file": str(path)}
        if answered.outcome is not None:
            result = answered.outcome.result
            row |= {
                "query_id": result.query_id,
                "purpose": result.purpose_id,
                "year": result.year,
                "release": answered.outcome.release_kind,
                "value": answered.outcome.release_value,
                "log_index": result.log_index,
            }
            text = f"{row['purpose']} ({row['year']}): {row['release']} = {row['value']}"
        else:
            assert answered.refusal is not None
            row |= {"refused": answered.refusal.reason, "message": answered.refusal.message}
            text = f"refused: {row['refused']}: {row['message']}"
        line = json.dumps(row, ensure_ascii=False, sort_keys=True) if args.json else None
        print(line or f"{answered.sequence} {path}: {text}", flush=True)


async def score(args: argparse.Namespace) -> dict[str, Any] | None:
    if args.batch is not None:
        await score_batch(args)
        return None
    relying_party = await client.current_party(args.workdir, args.relying_party)
    envelope, purpose_id = _read_token(args.token)
    outcome = await client.score(relying_party, envelope, purpose_id, args.year)
    result = outcome.result
    _say(
        args,
        f"{result.purpose_id} ({result.year}): {outcome.release_kind} = {outcome.release_value} "
        f"(query {result.query_id}, coordinator log entry {result.log_index})",
    )
    return {
        "query_id": result.query_id,
        "purpose": result.purpose_id,
        "year": result.year,
        "release": outcome.release_kind,
        "value": outcome.release_value,
        "log_index": result.log_index,
    }


def demo(args: argparse.Namespace) -> dict[str, Any]:
    from fedscore.apps.demo import run_demo

    run_demo(args.workdir, args.citizens)
    return {}
