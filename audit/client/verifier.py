"""`fedscore audit verify`: the regulator fetches every party's log, proves it, cross-matches.

For each party with a log (agencies first, then helper aggregators, then coordinators,
then the consent registry, so that whatever a later log must contain was already logged
when it is read: a coordinator's release follows its helper's charge), the
regulator asks over mutual TLS for a signed checkpoint, every entry under it, and a
consistency proof from the checkpoint it verified last time (`audit.client.log_fetch`).

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
from dataclasses import dataclass
from typing import Any

from audit.client.crossmatch import cross_match
from audit.client.crossmatch_entries import Anomaly, VerifiedLogs
from audit.client.log_fetch import FetchedLog as FetchedLog
from audit.client.log_fetch import ProgressHook, fetch_log
from audit.client.regulator_state import RegulatorState
from audit.client.restored import behind_verified, first_divergence
from audit.core import merkle
from audit.core.checkpoint import Checkpoint
from audit.core.entries import LogEntry
from fedscore.errors import FedscoreError, Unauthenticated
from fedscore.runtime.party import Party
from fedscore.runtime.rpc import secure_channel
from fedscore.v1.trust_pb2 import Role
from keys.registry import TrustView

# Audit order: a log is read after every log whose entries it must account for.
AUDITED_ROLES = (
    (Role.ROLE_AGENCY, "agency"),
    (Role.ROLE_HELPER_AGGREGATOR, "helper"),
    (Role.ROLE_COORDINATOR, "coordinator"),
    (Role.ROLE_CONSENT_REGISTRY, "registry"),
)


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


def audited_parties(trust: TrustView) -> list[tuple[str, str, str]]:
    """(party id, role name, endpoint) of every party with a log, in audit order."""
    return [
        (p.id, name, p.endpoint)
        for role, name in AUDITED_ROLES
        for p in trust.by_role(role)
        if p.endpoint
    ]


async def audit_federation(
    regulator: Party, state: RegulatorState, progress: ProgressHook | None = None
) -> AuditReport:
    """Verify every party's log and cross-match them; remember what verified.

    `progress`, if given, hears (stage, done, total) as it goes (`log_fetch.ProgressHook`).
    """
    told = progress or _untold
    if regulator.role != Role.ROLE_REGULATOR:
        raise Unauthenticated(f"{regulator.id} is not the regulator", "NOT_THE_REGULATOR")
    verdicts: list[PartyVerdict] = []
    for party, role, endpoint in audited_parties(regulator.trust):
        stored = state.checkpoint(party)
        stored_leaves = state.leaves(party) if stored is not None else []
        try:
            async with secure_channel(endpoint, regulator.tls, server_name=party) as channel:
                fetched = await fetch_log(channel, party, regulator.trust, stored, progress)
        except FedscoreError as error:
            # str(error) is "REASON: message" already; say where the party was asked.
            unreachable = Anomaly(party, None, "PARTY_UNREACHABLE", f"at {endpoint}: {error}")
            verdicts.append(PartyVerdict(party, role, None, [unreachable], [], []))
            continue
        told(f"{party}: checking {len(fetched.entries):,} entries", 0, 1)
        verdict = check_log(fetched, role, stored, stored_leaves)
        if verdict.consistent and verdict.checkpoint is not None and fetched.envelope:
            told(f"{party}: remembering what verified", 0, 1)
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
    told("cross-matching the logs", 0, 1)
    return AuditReport(verdicts, cross_match(logs, regulator.policy))


def _untold(stage: str, done: int, total: int) -> None:
    """No one watches."""
