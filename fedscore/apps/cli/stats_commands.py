"""`fedscore stats`: publish a differentially private release, read the budget, verify a bundle.

`publish` and `budget` run as the coordinator's operator (its key and database, in this
process); `publish` asks the running agency nodes. `verify` needs only the federation's
trust files: the registry chain and the coordinator's key listed there. A bundle inside
a federation folder (`DIR/orgs/coordinator/releases/<id>`) finds them by itself;
anywhere else, `--workdir` names the federation.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from fedscore.errors import FailedPrecondition
from fedscore.runtime.org_paths import FederationPaths
from fedscore.runtime.party import federation_view, load_party

COORDINATOR_ID = "coordinator"


def _say(args: argparse.Namespace, text: str) -> None:
    if not getattr(args, "json", False):
        print(text, flush=True)


async def publish(workdir: Path, release: str, year: int | None = None) -> dict[str, Any]:
    """Publish `release` as the coordinator of `workdir`; the summary of what was written."""
    from coordinator.statistics import open_publisher, publish_release

    publisher = open_publisher(load_party(workdir, COORDINATOR_ID))
    try:
        published = await publish_release(publisher, release, year)
    finally:
        await publisher.close()
    return published.summary()


def budget(workdir: Path, year: int | None = None) -> dict[str, Any]:
    """Per dataset: total, spent and remaining epsilon for `year` (default: this year)."""
    import time

    from fedscore.runtime.budget import PrivacyLedger
    from fedscore.runtime.db import open_engine
    from policies.statistics import DATASETS

    party = load_party(workdir, COORDINATOR_ID)
    year = year or party.policy.current_year(time.time())
    engine = open_engine(party.db_url)
    try:
        ledger = PrivacyLedger(engine)
        rules = party.policy.statistics_rules
        datasets = {
            dataset: ledger.status(dataset, year, rules.budget(dataset)).to_json()
            for dataset in DATASETS
        }
    finally:
        engine.dispose()
    return {"year": year, "datasets": datasets}


def _federation_of(bundle: Path) -> Path:
    for folder in bundle.resolve().parents:
        if FederationPaths(folder).orgs.exists():
            return folder
    raise FailedPrecondition(
        f"{bundle} is not inside a federation folder; name it with --workdir",
        reason="NO_FEDERATION",
    )


def verify(bundle: Path, workdir: Path | None = None) -> dict[str, Any]:
    """Check a bundle's signature and files against the federation's trust registry."""
    from coordinator.bundle import verify_bundle

    trust = federation_view(workdir or _federation_of(bundle))
    verified = verify_bundle(bundle, trust.coordinator_keys())
    return {
        "verified": True,
        "release_id": verified.release_id,
        "signer": verified.signer,
        "release": verified.document.get("release"),
        "year": verified.document.get("year"),
        "epsilon_spent": verified.document.get("epsilon_spent"),
        "files": verified.hashes,
    }


async def _publish_command(args: argparse.Namespace) -> dict[str, Any]:
    summary = await publish(args.workdir, args.release, args.year)
    _say(args, f"published {summary['release_id']} (epsilon {summary['epsilon_spent']:g})")
    _say(args, f"  {summary['release']}")
    _say(args, f"  budget remaining for its dataset this year: {summary['budget_remaining']:g}")
    return summary


def _budget_command(args: argparse.Namespace) -> dict[str, Any]:
    status = budget(args.workdir, args.year)
    _say(args, f"privacy budget (epsilon) for {status['year']}:")
    for dataset, figures in status["datasets"].items():
        _say(
            args,
            f"  {dataset:18} total {figures['total']:g}  spent {figures['spent']:g}  "
            f"remaining {figures['remaining']:g}",
        )
    return status


def _verify_command(args: argparse.Namespace) -> dict[str, Any]:
    outcome = verify(args.dir, args.workdir)
    _say(args, f"{args.dir}: signature by {outcome['signer']} verified; every file matches")
    return outcome


def register(subparsers: Any) -> None:
    """Add `fedscore stats ...` to the CLI's subcommands."""
    stats = subparsers.add_parser(
        "stats", help="differentially private overview statistics and their privacy budget"
    )
    actions = stats.add_subparsers(dest="action", required=True, metavar="ACTION")

    def common(sub: argparse.ArgumentParser, *, workdir_required: bool = True) -> None:
        sub.add_argument(
            "--workdir",
            type=Path,
            required=workdir_required,
            help="the federation folder (from 'federation init')",
        )
        sub.add_argument("--json", action="store_true", help="print the result as one JSON object")

    publish_parser = actions.add_parser(
        "publish", help="publish one release of the policy (asks the running agency nodes)"
    )
    common(publish_parser)
    publish_parser.add_argument("--release", required=True, help="release name in the policy")
    publish_parser.add_argument(
        "--year", type=int, default=0, help="calendar year (default: current)"
    )
    publish_parser.set_defaults(run=_publish_command)

    budget_parser = actions.add_parser(
        "budget", help="epsilon total, spent and remaining per dataset"
    )
    common(budget_parser)
    budget_parser.add_argument(
        "--year", type=int, default=0, help="calendar year (default: current)"
    )
    budget_parser.set_defaults(run=_budget_command)

    verify_parser = actions.add_parser(
        "verify", help="check a release bundle's signature and files"
    )
    verify_parser.add_argument("dir", type=Path, help="the bundle folder, e.g. ORG/releases/<id>")
    common(verify_parser, workdir_required=False)
    verify_parser.set_defaults(run=_verify_command)
