"""`fedscore consent grant|revoke|list`: a citizen, through the citizen portal.

What a citizen reads is in their terms: times in ISO 8601 with the local offset, and
each receipt (`consent.receipts.receipt_text`) with every field under a Thai and an
English label and its times also as Thai dates in the Buddhist era. A grant keeps the
token, the signed receipt and a readable copy of it in the portal's wallet.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from consent.receipts import receipt_text
from fedscore.apps import client
from fedscore.times import iso_time
from fedscore.v1.consent_pb2 import ConsentToken
from keys.national_id import validate_national_id

PORTAL_ID = "citizen-portal"


def _say(args: argparse.Namespace, text: str) -> None:
    if not getattr(args, "json", False):
        print(text, flush=True)


def _when(unix_seconds: int) -> str:
    return iso_time(unix_seconds)


async def consent_grant(args: argparse.Namespace) -> dict[str, Any]:
    national_id = validate_national_id(args.citizen)
    portal = await client.current_party(args.workdir, PORTAL_ID)
    response = await client.grant(portal, national_id, args.purpose, args.relying_party, args.days)
    receipt = client.verify_receipt(portal, response.receipt)
    token = ConsentToken.FromString(response.token.payload)
    wallet = portal.paths.wallet
    token_path: Path = args.out or wallet / f"{token.token_id}.token"
    token_path.parent.mkdir(parents=True, exist_ok=True)
    token_path.write_bytes(response.token.SerializeToString())
    receipt_path = token_path.with_suffix(".receipt")
    receipt_path.write_bytes(response.receipt.SerializeToString())
    readable = receipt_text(receipt, portal.policy)
    text_path = token_path.with_suffix(".receipt.txt")
    text_path.write_text(readable + "\n", encoding="utf-8")
    _say(
        args,
        f"consent {token.token_id} granted: {receipt.relying_party} may ask for "
        f"'{receipt.purpose_id}' until {_when(token.not_after)}\n"
        f"  token:   {token_path}  (hand this to {receipt.relying_party})\n"
        f"  receipt: {receipt_path} (signed), {text_path} (to read)\n\n{readable}",
    )
    return {
        "token_id": token.token_id,
        "purpose": token.purpose_id,
        "relying_party": token.relying_party,
        "not_after": token.not_after,
        "agencies": list(token.agencies),
        "token_file": str(token_path),
        "receipt_file": str(receipt_path),
        "receipt_text_file": str(text_path),
    }


async def consent_revoke(args: argparse.Namespace) -> dict[str, Any]:
    national_id = validate_national_id(args.citizen)
    portal = await client.current_party(args.workdir, PORTAL_ID)
    receipt = await client.revoke(portal, national_id, args.token_id)
    _say(
        args,
        f"consent {args.token_id} revoked at {_when(receipt.event_time)}; every party refuses "
        f"it\n\n{receipt_text(receipt, portal.policy)}",
    )
    return {"token_id": args.token_id, "event": receipt.event, "revoked_at": receipt.event_time}


async def consent_list(args: argparse.Namespace) -> dict[str, Any]:
    national_id = validate_national_id(args.citizen)
    portal = await client.current_party(args.workdir, PORTAL_ID)
    grants = await client.list_grants(portal, national_id)
    rows: list[dict[str, Any]] = [
        {
            "token_id": g.token_id,
            "purpose": g.purpose_id,
            "relying_party": g.relying_party,
            "status": g.status,
            "not_before": g.not_before,
            "not_after": g.not_after,
            "granted_at": g.granted_at,
            "revoked_at": g.revoked_at,
        }
        for g in grants
    ]
    for row in rows:
        _say(
            args,
            f"{row['token_id']}  {row['purpose']:20} {row['relying_party']:16} "
            f"{row['status']:8} until {_when(row['not_after'])}",
        )
    if not rows:
        _say(args, "no consents granted")
    return {"grants": rows}


def _workdir(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "--workdir", type=Path, required=True, help="the federation folder (from 'federation init')"
    )


def _json(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--json", action="store_true", help="print the result as one JSON object")


def register(parties: Any) -> None:
    """Add `consent grant|revoke|list` to the `fedscore` command."""
    consent = parties.add_parser("consent", help="a citizen grants, revokes or lists consent")
    consent_sub = consent.add_subparsers(dest="action", required=True, metavar="ACTION")
    grant = consent_sub.add_parser("grant", help="consent to one purpose for one relying party")
    _workdir(grant)
    grant.add_argument("--citizen", required=True, help="the citizen's 13-digit national ID")
    grant.add_argument("--purpose", required=True, help="purpose id, e.g. ptt-fuel-discount")
    grant.add_argument("--relying-party", required=True, help="who may ask, e.g. ptt")
    grant.add_argument("--days", type=int, default=30, help="validity in days (default 30)")
    grant.add_argument("--out", type=Path, help="where to write the token (default: wallet/)")
    _json(grant)
    grant.set_defaults(run=consent_grant)
    revoke = consent_sub.add_parser("revoke", help="withdraw a consent, effective everywhere")
    _workdir(revoke)
    revoke.add_argument("--citizen", required=True, help="the citizen's 13-digit national ID")
    revoke.add_argument("--token-id", required=True, help="id of the consent to withdraw")
    _json(revoke)
    revoke.set_defaults(run=consent_revoke)
    listing = consent_sub.add_parser("list", help="the citizen's grants and their status")
    _workdir(listing)
    listing.add_argument("--citizen", required=True, help="the citizen's 13-digit national ID")
    _json(listing)
    listing.set_defaults(run=consent_list)
