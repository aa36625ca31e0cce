"""`fedscore audit verify` (the regulator) and `fedscore audit history` (the citizen).

`verify` exits 0 only when every party's log is consistent and cross-matching found no
anomaly; otherwise it prints its report (as JSON with --json) and fails with
AUDIT_FAILED, so scripts can rely on the exit status alone.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from audit.client.demo_summary import party_with_role
from audit.client.history import citizen_history, read_receipt
from audit.client.regulator_state import RegulatorState
from audit.client.verifier import audit_federation
from fedscore.apps import client
from fedscore.apps.cli.progress import Progress, shown
from fedscore.errors import FailedPrecondition
from fedscore.runtime.db import open_engine
from fedscore.runtime.party import Party
from fedscore.times import iso_time
from fedscore.v1.trust_pb2 import Role


def _say(args: argparse.Namespace, text: str) -> None:
    if not getattr(args, "json", False):
        print(text, flush=True)


async def _as(args: argparse.Namespace, role: Role) -> Party:
    """The client party, with its registry chain brought up to date first."""
    if args.as_party:
        return await client.current_party(args.workdir, args.as_party)
    return await client.up_to_date(party_with_role(args.workdir, role))


def _when(seconds: int) -> str:
    return iso_time(seconds)  # ISO 8601 with this machine's UTC offset (fedscore.times)


def _count(number: int, one: str, many: str) -> str:
    return f"{number} {one if number == 1 else many}"


async def audit_verify(args: argparse.Namespace) -> dict[str, Any]:
    regulator = await _as(args, Role.ROLE_REGULATOR)
    engine = open_engine(regulator.db_url)
    try:
        with Progress(shown(args)) as progress:
            report = await audit_federation(regulator, RegulatorState(engine), progress)
    finally:
        engine.dispose()
    result = report.to_json()
    _say(args, f"  {'party':18} {'entries':>8}  log")
    for party, log in result["logs"].items():
        state = "consistent" if log["consistent"] else "NOT VERIFIED"
        _say(args, f"  {party:18} {log['size'] if log['size'] is not None else '-':>8}  {state}")
    for anomaly in report.anomalies:
        where = "" if anomaly.index is None else f" entry {anomaly.index}"
        _say(args, f"  ! {anomaly.party}{where}: {anomaly.reason}: {anomaly.detail}")
    if report.clean:
        _say(args, f"audit: {len(report.verdicts)} logs, {report.entries} entries, no anomalies")
        return result
    if getattr(args, "json", False):
        print(json.dumps(result, ensure_ascii=False, sort_keys=True), flush=True)
    raise FailedPrecondition(
        f"{len(report.anomalies)} anomalies; every log consistent: {report.consistent}",
        "AUDIT_FAILED",
    )


async def audit_history(args: argparse.Namespace) -> dict[str, Any]:
    portal = await _as(args, Role.ROLE_CITIZEN_PORTAL)
    receipts = [read_receipt(portal.trust, Path(path))[0] for path in args.receipt]
    history = await citizen_history(portal, receipts)
    for access in history.accesses:
        agencies = f" (asked {', '.join(access.agencies)})" if access.agencies else ""
        _say(
            args,
            f"  {_when(access.when)}  {access.relying_party:16} {access.purpose:20} "
            f"{access.outcome}{agencies}",
        )
    _say(
        args,
        f"{_count(len(history.accesses), 'access', 'accesses')} to "
        f"{_count(len(history.tokens), 'consent', 'consents')}; "
        f"{len(history.entries)} log entries, each proven in its party's signed checkpoint",
    )
    return history.to_json()


def register(subparsers: Any) -> None:
    """Add `audit verify` and `audit history` to the `fedscore` command."""
    audit = subparsers.add_parser("audit", help="the regulator's audit; a citizen's access history")
    actions = audit.add_subparsers(dest="action", required=True, metavar="ACTION")

    verify = actions.add_parser(
        "verify", help="verify every party's log, prove consistency, cross-match (regulator)"
    )
    verify.add_argument("--workdir", type=Path, required=True, help="the federation folder")
    verify.add_argument("--as", dest="as_party", help="regulator id (default: the federation's)")
    verify.add_argument("--json", action="store_true", help="print the result as one JSON object")
    verify.set_defaults(run=audit_verify)

    history = actions.add_parser(
        "history", help="every access to a citizen's consents, each with a proof (citizen)"
    )
    history.add_argument("--workdir", type=Path, required=True, help="the federation folder")
    history.add_argument(
        "--receipt",
        action="append",
        required=True,
        metavar="FILE",
        help="a consent receipt from the wallet (<token_id>.receipt); repeat for several",
    )
    history.add_argument("--as", dest="as_party", help="citizen portal id (default: the one)")
    history.add_argument("--json", action="store_true", help="print the result as one JSON object")
    history.set_defaults(run=audit_history)
