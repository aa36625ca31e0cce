"""`fedscore audit verify`: the regulator fetches every party's log, proves it, cross-matches.

For each party with a log (agencies first, then helper aggregators, then coordinators,
then the consent registry, so that whatever a later log must contain was already logged
when it is read: a coordinator's release follows its helper's charge), the
regulator asks over mutual TLS for a signed checkpoint, every entry under it, and a
consistency proof from the checkpoint it verified last time.

Invariants:
- Nothing a party says is believed until proven: the checkpoint must verify under that
  party's key; every leaf hash is recomputed from the entry's own contents (origin,
  index, kind, body, time); the root of those leaves must be the signed root; the new
  checkpoint must be proven consistent with the last one the regulator verified, and
  each entry it verified before must re-hash to the leaf it remembers.
- Each anomaly names the party, the entry index when there is one, and what is wrong.
- The regulator's state advances only for a party with no anomaly, so a party caught
  once is reported on every later run until it is explained.
- `consistent` is true only if every party's log verified; the run is clean only if it
  is consistent and cross-matching found nothing.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio

from audit.client.crossmatch import cross_match
from audit.client.crossmatch_entries import Anomaly, VerifiedLogs
from audit.client.regulator_state import RegulatorState
from audit.client.restored import behind_verified, first_divergence
from audit.core import merkle
from audit.core.checkpoint import Checkpoint
from audit.core.contract import MAX_ENTRIES_PER_PAGE, SERVICE_NAME
from audit.core.entries import LogEntry
from fedscore.errors import Code, FedscoreError, Unauthenticated
from fedscore.runtime.party import Party
from fedscore.runtime.rpc import call_unary, secure_channel
from fedscore.v1.audit_pb2 import (
    GetCheckpointRequest,
    GetCheckpointResponse,
    GetConsistencyProofRequest,
    GetConsistencyProofResponse,
    GetEntriesRequest,
    GetEntriesResponse,
)
from fedscore.v1.envelope_pb2 import Envelope
from fedscore.v1.trust_pb2 import Role
from keys.registry import TrustView

CALL_TIMEOUT = 10.0
# Audit order: a log is read after every log whose entries it must account for.
AUDITED_ROLES = (
    (Role.ROLE_AGENCY, "agency"),
    (Role.ROLE_HELPER_AGGREGATOR, "helper"),
    (Role.ROLE_COORDINATOR, "coordinator"),
    (Role.ROLE_CONSENT_REGISTRY, "registry"),
)
_UNREACHABLE = frozenset({Code.UNAVAILABLE, Code.DEADLINE_EXCEEDED})


@dataclass
class FetchedLog:
    """What one party served the regulator, before any of it is believed."""

    party: str
    checkpoint: Checkpoint | None = None
    envelope: Envelope | None = None
    checkpoint_error: FedscoreError | None = None
    entries: dict[int, LogEntry] = field(default_factory=dict)
    log_size: int = 0
    consistency_proof: list[bytes] | None = None
    proof_error: FedscoreError | None = None


@dataclass
class PartyVerdict:
    """The outcome for one party's log."""

    party: str
    role: str
    checkpoint: Checkpoint | None
    anomalies: list[Anomaly]
    entries: list[LogEntry]  # under the checkpoint; meaningful only if consistent
    leaves: list[bytes]  # recomputed by the regulator

    @property
    def consistent(self) -> bool:
        return self.checkpoint is not None and not self.anomalies


@dataclass
class AuditReport:
    verdicts: list[PartyVerdict]
    cross_anomalies: list[Anomaly]

    @property
    def consistent(self) -> bool:
        return all(v.consistent for v in self.verdicts)

    @property
    def anomalies(self) -> list[Anomaly]:
        return [a for v in self.verdicts for a in v.anomalies] + self.cross_anomalies

    @property
    def entries(self) -> int:
        return sum(v.checkpoint.size for v in self.verdicts if v.checkpoint is not None)

    @property
    def clean(self) -> bool:
        return self.consistent and not self.anomalies

    def to_json(self) -> dict[str, Any]:
        return {
            "consistent": self.consistent,
            "parties": len(self.verdicts),
            "entries": self.entries,
            "anomalies": [a.to_json() for a in self.anomalies],
            "logs": {
                v.party: {
                    "size": v.checkpoint.size if v.checkpoint else None,
                    "root": v.checkpoint.root.hex() if v.checkpoint else None,
                    "consistent": v.consistent,
                }
                for v in self.verdicts
            },
        }


# --- checking what was fetched (pure) ------------------------------------------------


def _entry_anomalies(
    fetched: FetchedLog,
    size: int,
    stored: Checkpoint | None,
    stored_leaves: Sequence[bytes],
) -> tuple[list[Anomaly], list[bytes | None]]:
    """One anomaly per bad index, and the leaves recomputed from the entries served.

    Entries are checked up to the checkpoint's size or, if the regulator verified more
    before, up to that: what is gone at the end is one LOG_TRUNCATED, not one per entry.
    """
    party = fetched.party
    upto = max(size, 0 if stored is None else stored.size)
    present = max(size, fetched.log_size)
    anomalies: list[Anomaly] = []
    recomputed: list[bytes | None] = []
    remembered = 0 if stored is None else stored.size
    for index in range(upto):
        entry = fetched.entries.get(index)
        if entry is None:
            recomputed.append(None)
            if index < present:
                anomalies.append(Anomaly(party, index, "ENTRY_MISSING", "the entry is gone"))
            continue
        leaf = merkle.leaf_hash(entry.leaf_data(party))
        recomputed.append(leaf)
        if index < remembered and leaf != stored_leaves[index]:
            anomalies.append(
                Anomaly(
                    party,
                    index,
                    "ENTRY_REWRITTEN",
                    f"{entry.kind} entry differs from what the regulator verified before",
                )
            )
        elif leaf != entry.leaf_hash:
            anomalies.append(
                Anomaly(
                    party,
                    index,
                    "ENTRY_ALTERED",
                    f"{entry.kind} entry does not hash to the leaf stored with it",
                )
            )
    if stored is not None and fetched.log_size < stored.size:
        anomalies.append(
            Anomaly(
                party,
                fetched.log_size,
                "LOG_TRUNCATED",
                f"the regulator verified {stored.size} entries; the party now has "
                f"{fetched.log_size}",
            )
        )
    return anomalies, recomputed


def _checkpoint_anomalies(
    fetched: FetchedLog,
    stored: Checkpoint | None,
    stored_leaves: Sequence[bytes],
    recomputed: Sequence[bytes | None],
    entry_trouble: bool,
) -> list[Anomaly]:
    party, checkpoint = fetched.party, fetched.checkpoint
    if checkpoint is None:
        error = fetched.checkpoint_error
        reason = (
            "CHECKPOINT_INVALID" if isinstance(error, Unauthenticated) else "CHECKPOINT_REFUSED"
        )
        why = f"{error.reason}: {error.message}" if error else "no checkpoint"
        return [Anomaly(party, None, reason, why)]
    found: list[Anomaly] = []
    leaves = recomputed[: checkpoint.size]
    if not entry_trouble and (
        any(leaf is None for leaf in leaves)
        or merkle.root([leaf for leaf in leaves if leaf is not None]) != checkpoint.root
    ):
        found.append(
            Anomaly(
                party, None, "ROOT_MISMATCH", "the entries served do not hash to the signed root"
            )
        )
    if stored is None:
        return found
    divergence = first_divergence(recomputed, stored_leaves)
    if checkpoint.size < stored.size:
        found.append(
            Anomaly(
                party,
                checkpoint.size,
                "CHECKPOINT_INCONSISTENT",
                f"signed a checkpoint of {checkpoint.size} entries after one of {stored.size}",
            )
        )
        return found
    if checkpoint.timestamp < stored.timestamp:
        found.append(
            Anomaly(party, None, "CHECKPOINT_TIME_REGRESSED", "checkpoint time went backwards")
        )
    if fetched.proof_error is not None:
        found.append(
            Anomaly(
                party,
                divergence,
                "CONSISTENCY_PROOF_REFUSED",
                f"{fetched.proof_error.reason}: {fetched.proof_error.message}",
            )
        )
        return found
    try:
        merkle.verify_consistency(
            stored.size,
            checkpoint.size,
            stored.root,
            checkpoint.root,
            fetched.consistency_proof or [],
        )
    except Unauthenticated:
        found.append(
            Anomaly(
                party,
                divergence,
                "CHECKPOINT_INCONSISTENT",
                f"checkpoint of {checkpoint.size} entries does not extend the checkpoint of "
                f"{stored.size} the regulator verified before",
            )
        )
    return found


def check_log(
    fetched: FetchedLog, role: str, stored: Checkpoint | None, stored_leaves: Sequence[bytes]
) -> PartyVerdict:
    """Judge one party's log from what it served and what the regulator remembers."""
    behind = behind_verified(fetched, stored, stored_leaves)  # restored to an older state:
    if behind:  # judged on its own; the one anomaly says it is behind what was verified
        stored, stored_leaves = None, []
    checkpoint = fetched.checkpoint
    size = checkpoint.size if checkpoint is not None else fetched.log_size
    anomalies, recomputed = _entry_anomalies(fetched, size, stored, stored_leaves)
    anomalies += _checkpoint_anomalies(
        fetched, stored, stored_leaves, recomputed, entry_trouble=bool(anomalies)
    )
    anomalies += behind
    anomalies.sort(key=lambda a: (a.index is None, a.index or 0, a.reason))
    entries = [fetched.entries[i] for i in range(size) if i in fetched.entries]
    leaves = [leaf for leaf in recomputed[:size] if leaf is not None]
    return PartyVerdict(fetched.party, role, checkpoint, anomalies, entries, leaves)


# --- fetching (network) ------------------------------------------------------------


async def _call(channel: grpc.aio.Channel, method: str, request: Any, response: Any) -> Any:
    return await call_unary(channel, f"/{SERVICE_NAME}/{method}", request, response, CALL_TIMEOUT)


async def fetch_log(
    channel: grpc.aio.Channel, party: str, trust: TrustView, stored: Checkpoint | None
) -> FetchedLog:
    """Ask `party` for its checkpoint, entries and a consistency proof; believe nothing yet."""
    fetched = FetchedLog(party)
    try:
        response: GetCheckpointResponse = await _call(
            channel, "GetCheckpoint", GetCheckpointRequest(), GetCheckpointResponse
        )
        fetched.envelope = response.checkpoint
        role = trust.participant(party).role
        fetched.checkpoint = Checkpoint.verify(response.checkpoint, trust.log_keys(role), party)
    except FedscoreError as error:
        if error.code in _UNREACHABLE:
            raise
        fetched.checkpoint_error = error
    first: GetEntriesResponse = await _call(
        channel, "GetEntries", GetEntriesRequest(start=0, end=0), GetEntriesResponse
    )
    fetched.log_size = int(first.log_size)
    size = fetched.checkpoint.size if fetched.checkpoint is not None else fetched.log_size
    upto = max(size, 0 if stored is None else stored.size)
    for start in range(0, upto, MAX_ENTRIES_PER_PAGE):
        page: GetEntriesResponse = await _call(
            channel,
            "GetEntries",
            GetEntriesRequest(start=start, end=min(upto, start + MAX_ENTRIES_PER_PAGE)),
            GetEntriesResponse,
        )
        for wire in page.entries:
            fetched.entries.setdefault(
                int(wire.index),
                LogEntry(
                    int(wire.index),
                    wire.kind,
                    wire.body,
                    bytes(wire.leaf_hash),
                    int(wire.logged_at),
                ),
            )
    if stored is not None and fetched.checkpoint is not None:
        if stored.size <= fetched.checkpoint.size:
            try:
                proof: GetConsistencyProofResponse = await _call(
                    channel,
                    "GetConsistencyProof",
                    GetConsistencyProofRequest(
                        first_size=stored.size, second_size=fetched.checkpoint.size
                    ),
                    GetConsistencyProofResponse,
                )
                fetched.consistency_proof = [bytes(p) for p in proof.proof]
            except FedscoreError as error:
                if error.code in _UNREACHABLE:
                    raise
                fetched.proof_error = error
    return fetched


def audited_parties(trust: TrustView) -> list[tuple[str, str, str]]:
    """(party id, role name, endpoint) of every party with a log, in audit order."""
    return [
        (p.id, name, p.endpoint)
        for role, name in AUDITED_ROLES
        for p in trust.by_role(role)
        if p.endpoint
    ]


async def audit_federation(regulator: Party, state: RegulatorState) -> AuditReport:
    """Verify every party's log and cross-match them; remember what verified."""
    if regulator.role != Role.ROLE_REGULATOR:
        raise Unauthenticated(f"{regulator.id} is not the regulator", "NOT_THE_REGULATOR")
    verdicts: list[PartyVerdict] = []
    for party, role, endpoint in audited_parties(regulator.trust):
        stored = state.checkpoint(party)
        stored_leaves = state.leaves(party) if stored is not None else []
        try:
            async with secure_channel(endpoint, regulator.tls, server_name=party) as channel:
                fetched = await fetch_log(channel, party, regulator.trust, stored)
        except FedscoreError as error:
            unreachable = Anomaly(party, None, "PARTY_UNREACHABLE", f"{error.reason}: {error}")
            verdicts.append(PartyVerdict(party, role, None, [unreachable], [], []))
            continue
        verdict = check_log(fetched, role, stored, stored_leaves)
        if verdict.consistent and verdict.checkpoint is not None and fetched.envelope:
            state.advance(verdict.checkpoint, fetched.envelope, verdict.leaves, int(time.time()))
        verdicts.append(verdict)
    logs = VerifiedLogs()
    for verdict in verdicts:
        if not verdict.consistent:
            logs.unverified[verdict.party] = verdict.role
            continue
        by_role = {
            "agency": logs.agencies,
            "coordinator": logs.coordinators,
            "helper": logs.helpers,
        }
        by_role.get(verdict.role, logs.registries)[verdict.party] = verdict.entries
        logs.leaves[verdict.party] = verdict.leaves
    return AuditReport(verdicts, cross_match(logs, regulator.policy))
