"""The regulator's network half of `audit verify`: fetch one party's log, believe nothing.

`fetch_log` asks a party over mutual TLS for its signed checkpoint, every entry under it
(and under the checkpoint the regulator verified before, if that one is longer), page by
page, and a consistency proof from that earlier checkpoint. It judges nothing:
`audit.client.verifier.check_log` does, from the `FetchedLog`.

Invariants:
- A party that cannot be reached (UNAVAILABLE, DEADLINE_EXCEEDED) raises, so the verifier
  names it unreachable; any other refusal is kept in the `FetchedLog` as the party's
  answer, to be judged.
- `progress(stage, done, total)`, if given, is told once per page: how a person watching
  `fedscore audit verify` on a terminal sees it move (`fedscore.apps.cli.progress`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio

from audit.core.checkpoint import Checkpoint
from audit.core.contract import MAX_ENTRIES_PER_PAGE, SERVICE_NAME
from audit.core.entries import LogEntry
from fedscore.errors import Code, FedscoreError
from fedscore.runtime.rpc import call_unary
from fedscore.v1.audit_pb2 import (
    GetCheckpointRequest,
    GetCheckpointResponse,
    GetConsistencyProofRequest,
    GetConsistencyProofResponse,
    GetEntriesRequest,
    GetEntriesResponse,
)
from fedscore.v1.envelope_pb2 import Envelope
from keys.registry import TrustView

CALL_TIMEOUT = 10.0
_UNREACHABLE = frozenset({Code.UNAVAILABLE, Code.DEADLINE_EXCEEDED})
# (stage, done, total): what the audit is doing and how far it is, for a person watching.
ProgressHook = Callable[[str, int, int], None]


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


async def _call(channel: grpc.aio.Channel, method: str, request: Any, response: Any) -> Any:
    return await call_unary(channel, f"/{SERVICE_NAME}/{method}", request, response, CALL_TIMEOUT)


async def fetch_log(
    channel: grpc.aio.Channel,
    party: str,
    trust: TrustView,
    stored: Checkpoint | None,
    progress: ProgressHook | None = None,
) -> FetchedLog:
    """Ask `party` for its checkpoint, entries and a consistency proof; believe nothing yet.

    `progress`, if given, hears (f"{party}: fetching entries", fetched, to fetch) per page.
    """
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
    stage = f"{party}: fetching entries"
    for start in range(0, upto, MAX_ENTRIES_PER_PAGE):
        if progress is not None:
            progress(stage, start, upto)
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
