"""`fedscore audit history`: every access to a citizen's grants, each entry proven in its log.

The citizen's app (the citizen portal) shows each party one of the citizen's consent
receipts; the party answers with the entries about that receipt's token and an inclusion
proof of each in a checkpoint it signed. Like Estonia's Data Tracker, but with proofs.

Invariants:
- Nothing is shown unless proven: the checkpoint must verify under the party's own key,
  every leaf hash is recomputed here from the entry's contents and proven included in
  that checkpoint, and every entry must be about the receipt's token (naming its token
  id, or a query id that an entry naming the token id names). Any failure raises, naming
  the party and the entry index; nothing is silently dropped.
- Only the citizen's own tokens are asked about: a receipt must verify under the consent
  registry's key before it is sent anywhere.
- Completeness is the regulator's job (it sees whole logs); this shows what each party
  has provably logged about the citizen's tokens.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from audit.client.verifier import AUDITED_ROLES
from audit.core import kinds, merkle
from audit.core.checkpoint import Checkpoint
from audit.core.contract import SERVICE_NAME
from audit.core.entries import leaf_data
from audit.core.fields import PURPOSE, QUERY_ID, REASON, RELEASED, RELYING_PARTY, TOKEN_ID, VALUE
from fedscore.errors import FedscoreError, InvalidArgument, PermissionDenied
from fedscore.protocol.signed import SignedReceipt
from fedscore.runtime.party import Party
from fedscore.runtime.rpc import call_unary, secure_channel
from fedscore.v1.audit_pb2 import GetAccessHistoryRequest, GetAccessHistoryResponse
from fedscore.v1.consent_pb2 import ConsentReceipt
from fedscore.v1.envelope_pb2 import Envelope
from fedscore.v1.trust_pb2 import Role
from keys.registry import TrustView

CALL_TIMEOUT = 10.0


@dataclass(frozen=True)
class HistoryEntry:
    """One proven entry about one of the citizen's tokens."""

    party: str
    index: int
    kind: str
    logged_at: int
    token_id: str
    fields: Mapping[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "party": self.party,
            "index": self.index,
            "kind": self.kind,
            "logged_at": self.logged_at,
            "token_id": self.token_id,
            "fields": dict(self.fields),
        }


@dataclass
class Access:
    """One use of a grant: a relying party's request and what came of it."""

    token_id: str
    query_id: str
    when: int
    relying_party: str
    purpose: str
    outcome: str
    agencies: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "token_id": self.token_id,
            "query_id": self.query_id,
            "when": self.when,
            "relying_party": self.relying_party,
            "purpose": self.purpose,
            "outcome": self.outcome,
            "agencies": self.agencies,
        }


@dataclass
class CitizenHistory:
    tokens: list[str]
    entries: list[HistoryEntry]
    checkpoints: dict[str, int]  # party -> size of the checkpoint its proofs lead to

    @property
    def accesses(self) -> list[Access]:
        return accesses_of(self.entries)

    def to_json(self) -> dict[str, Any]:
        return {
            "tokens": self.tokens,
            "accesses": [a.to_json() for a in self.accesses],
            "consent_events": [e.to_json() for e in self.entries if e.kind.startswith("consent_")],
            "entries": len(self.entries),
            "checkpoints": self.checkpoints,
        }


def read_receipt(trust: TrustView, path: Path) -> tuple[Envelope, ConsentReceipt]:
    """A receipt file from the wallet, verified under the consent registry's key."""
    try:
        envelope = Envelope.FromString(path.read_bytes())
    except Exception as exc:
        raise InvalidArgument(f"{path} is not a receipt file", "BAD_RECEIPT_FILE") from exc
    return envelope, SignedReceipt.verify(envelope, trust.registry_keys()).receipt


def _fields(body: str) -> dict[str, Any]:
    try:
        fields = json.loads(body)
    except ValueError:
        return {}
    return fields if isinstance(fields, dict) else {}


def verify_history(
    party: str, trust: TrustView, token_id: str, response: GetAccessHistoryResponse
) -> tuple[Checkpoint, list[HistoryEntry]]:
    """Prove every record of `response` from `party`; raise unless all are about `token_id`."""
    role = trust.participant(party).role
    checkpoint = Checkpoint.verify(response.checkpoint, trust.log_keys(role), party)
    proven: list[HistoryEntry] = []
    previous = -1
    for record in response.records:
        entry = record.entry
        where = f"{party} entry {entry.index}"
        if entry.index <= previous:
            raise InvalidArgument(f"{where}: entries out of order", "BAD_HISTORY")
        previous = entry.index
        data = leaf_data(party, entry.index, entry.kind, entry.body, entry.logged_at)
        try:
            merkle.verify_inclusion(
                merkle.leaf_hash(data),
                entry.index,
                checkpoint.size,
                [bytes(p) for p in record.inclusion_proof],
                checkpoint.root,
            )
        except FedscoreError as error:
            raise type(error)(f"{where}: {error.message}", error.reason) from error
        proven.append(
            HistoryEntry(
                party, entry.index, entry.kind, entry.logged_at, token_id, _fields(entry.body)
            )
        )
    naming = [e for e in proven if e.fields.get(TOKEN_ID) == token_id]
    query_ids = {e.fields.get(QUERY_ID) for e in naming} - {None, ""}
    for e in proven:
        if e.fields.get(TOKEN_ID) != token_id and e.fields.get(QUERY_ID) not in query_ids:
            raise PermissionDenied(
                f"{party} entry {e.index} is not about token {token_id}", "FOREIGN_ENTRY"
            )
    return checkpoint, proven


def history_parties(trust: TrustView) -> list[tuple[str, str]]:
    """(party id, endpoint) of every party whose log may name a consent token: every party
    with a log but the helper aggregator, which logs statistics releases only (ADR 0019)."""
    return [
        (p.id, p.endpoint)
        for role, _ in AUDITED_ROLES
        if role != Role.ROLE_HELPER_AGGREGATOR
        for p in trust.by_role(role)
        if p.endpoint
    ]


async def citizen_history(portal: Party, receipts: Sequence[Envelope]) -> CitizenHistory:
    """Ask every party about each receipt's token; return only proven entries."""
    if portal.role != Role.ROLE_CITIZEN_PORTAL:
        raise PermissionDenied(f"{portal.id} is not the citizen portal", "NOT_THE_PORTAL")
    registry_keys = portal.trust.registry_keys()
    by_token: dict[str, Envelope] = {}
    for receipt in receipts:
        token_id = SignedReceipt.verify(receipt, registry_keys).receipt.token_id
        by_token.setdefault(token_id, receipt)
    entries: list[HistoryEntry] = []
    checkpoints: dict[str, int] = {}
    for party, endpoint in history_parties(portal.trust):
        async with secure_channel(endpoint, portal.tls, server_name=party) as channel:
            for token_id, receipt in by_token.items():
                response = await call_unary(
                    channel,
                    f"/{SERVICE_NAME}/GetAccessHistory",
                    GetAccessHistoryRequest(receipt=receipt),
                    GetAccessHistoryResponse,
                    CALL_TIMEOUT,
                )
                checkpoint, proven = verify_history(party, portal.trust, token_id, response)
                checkpoints[party] = checkpoint.size
                entries += proven
    entries.sort(key=lambda e: (e.logged_at, e.party, e.index))
    return CitizenHistory(tokens=list(by_token), entries=entries, checkpoints=checkpoints)


def _outcome(entry: HistoryEntry) -> str:
    fields = entry.fields
    if entry.kind == kinds.RESULT_RELEASED:
        return f"released {fields.get(RELEASED, '?')}: {fields.get(VALUE, '?')}"
    return f"{entry.kind.removeprefix('query_').removeprefix('score_')}: {fields.get(REASON, '?')}"


def accesses_of(entries: Sequence[HistoryEntry]) -> list[Access]:
    """Group proven entries into accesses: one per query issued or request refused."""
    by_query: dict[str, Access] = {}
    accesses: list[Access] = []
    ordered = sorted(entries, key=lambda e: (e.logged_at, e.party, e.index))
    for entry in ordered:
        fields = entry.fields
        if entry.kind not in (kinds.QUERY_ISSUED, kinds.SCORE_REFUSED):
            continue
        access = Access(
            entry.token_id,
            str(fields.get(QUERY_ID, "")),
            entry.logged_at,
            str(fields.get(RELYING_PARTY, "")),
            str(fields.get(PURPOSE, "")),
            "asked" if entry.kind == kinds.QUERY_ISSUED else _outcome(entry),
        )
        accesses.append(access)
        if entry.kind == kinds.QUERY_ISSUED:
            by_query[access.query_id] = access
    for entry in ordered:
        asked = by_query.get(str(entry.fields.get(QUERY_ID, "")))
        if asked is None:
            continue
        if entry.kind in (kinds.RESULT_RELEASED, kinds.QUERY_FAILED):
            asked.outcome = _outcome(entry)
        elif entry.kind == kinds.QUERY_ANSWERED:
            asked.agencies.append(entry.party)
    return accesses
