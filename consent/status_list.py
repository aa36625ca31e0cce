"""Publishing the registry's signed status list (one bit per token, set when revoked).

Invariants:
- The list served is re-signed whenever the sequence changed (a revocation since the
  last signature) or the signed copy is at least half its time-to-live old, so a party
  that pulls it never holds a list that is stale while the registry is up.
- The signed copy is stored, so every caller within one period gets the same bytes and a
  restart does not change what was published.
- A newly signed sequence is logged ("status_list_published") in the same transaction
  that stores it; a mere re-signature of the same sequence is not.
"""

from __future__ import annotations

from audit.core import kinds
from audit.core.fields import TTL_SECONDS
from consent.registry import ConsentRegistry
from consent.store import (
    grant_count,
    revoked_indexes,
    status_list_size,
    status_list_state,
    store_signed_list,
)
from fedscore.protocol.status_list import build_status_list
from fedscore.v1.envelope_pb2 import Envelope
from keys.envelope import sign_message


def publish_status_list(registry: ConsentRegistry, *, now: int) -> Envelope:
    """The signed status list: the stored copy while fresh, else a newly signed one."""
    ttl = registry.status_ttl_seconds
    with registry.engine.begin() as connection:
        record = status_list_state(connection)
        age = now - record.signed_at
        if (
            record.signed_envelope is not None
            and record.signed_sequence == record.sequence
            and record.signed_ttl == ttl
            and 0 <= age < ttl / 2
        ):
            stored: Envelope = Envelope.FromString(record.signed_envelope)
            return stored
        size_bits = status_list_size(grant_count(connection))
        revoked = revoked_indexes(connection)
        status_list = build_status_list(
            registry.registry_id, record.sequence, revoked, size_bits, ttl, now
        )
        envelope = sign_message(status_list, registry.signing_key)
        new_sequence = record.signed_sequence != record.sequence
        store_signed_list(
            connection,
            sequence=record.sequence,
            signed_at=now,
            ttl=ttl,
            envelope=envelope.SerializeToString(),
        )
        if new_sequence:
            registry.log.append(
                connection,
                kinds.STATUS_LIST_PUBLISHED,
                {
                    "sequence": record.sequence,
                    "size_bits": size_bits,
                    "revoked": len(revoked),
                    TTL_SECONDS: ttl,
                    "issued_at": now,
                },
                now=now,
            )
        return envelope
