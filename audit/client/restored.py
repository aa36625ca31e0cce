"""A party restored to an older state, told apart from a party that rewrote its history.

A party restored from a backup older than the checkpoint the regulator verified last
serves a log that holds the first entries the regulator verified, unchanged, and after
them only entries written since the restore (or none), under a checkpoint it signs
itself: its memory of what it signed was restored with its log. `behind_verified` names
that once, LOG_BEHIND_VERIFIED_CHECKPOINT at the first entry that is gone, and the
verifier then judges the log on its own (every entry re-hashed, the root against the
signed one) instead of reporting ENTRY_REWRITTEN at every index after it, LOG_TRUNCATED
and CHECKPOINT_INCONSISTENT.

Invariants:
- It is still an anomaly: the log is not what the regulator verified, the regulator's
  state does not advance, and the party is reported on every run until it is explained.
  The logs alone cannot tell a restore from a party dropping its latest entries; what is
  told apart is a prefix of the verified history (behind) from a different one (rewritten).
- "Written since" is proven by the entries: every entry served from the first one that is
  gone was logged after the time of the checkpoint the regulator verified, and every entry
  under that checkpoint was logged no later. A changed entry that keeps a time inside the
  verified history, or a verified entry still present after a changed one, is a rewrite.
- A party serving no valid checkpoint (its signer refuses: rows deleted beneath it) is not
  judged here; the verifier reports it as before (LOG_TRUNCATED, CHECKPOINT_REFUSED).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from audit.client.crossmatch_entries import Anomaly
from audit.core import merkle
from audit.core.checkpoint import Checkpoint
from audit.core.entries import LogEntry

LOG_BEHIND = "LOG_BEHIND_VERIFIED_CHECKPOINT"


class ServedLog(Protocol):
    """What a party served the regulator (`audit.client.verifier.FetchedLog`)."""

    @property
    def party(self) -> str: ...
    @property
    def checkpoint(self) -> Checkpoint | None: ...
    @property
    def entries(self) -> Mapping[int, LogEntry]: ...


def first_divergence(recomputed: Sequence[bytes | None], remembered: Sequence[bytes]) -> int | None:
    """The first index whose leaf is not the one the regulator remembers, if any."""
    for index, leaf in enumerate(remembered):
        if index >= len(recomputed) or recomputed[index] != leaf:
            return index
    return None


def behind_verified(
    fetched: ServedLog, stored: Checkpoint | None, stored_leaves: Sequence[bytes]
) -> list[Anomaly]:
    """[LOG_BEHIND_VERIFIED_CHECKPOINT] if the party's log is behind what was verified, else []."""
    checkpoint = fetched.checkpoint
    if stored is None or checkpoint is None:
        return []
    entries = fetched.entries
    # The first verified entry that is gone or was written after the verified checkpoint;
    # a log that kept every one of them is judged as usual, without re-hashing here.
    gone = next(
        (
            index
            for index in range(stored.size)
            if index not in entries or entries[index].logged_at > stored.timestamp
        ),
        None,
    )
    if gone is None or checkpoint.size < gone:
        return []
    if any(entry.logged_at <= stored.timestamp for i, entry in entries.items() if i >= gone):
        return []  # an entry of the verified history's time after the change: rewritten
    kept = [merkle.leaf_hash(entries[i].leaf_data(fetched.party)) for i in range(gone)]
    if first_divergence(kept, stored_leaves[:gone]) is not None:
        return []
    return [
        Anomaly(
            fetched.party,
            gone,
            LOG_BEHIND,
            f"the log keeps the first {gone} of the {stored.size} entries the regulator "
            f"verified, unchanged, then {checkpoint.size - gone} written since: the party "
            "was restored to an older state (or dropped its latest entries)",
        )
    ]
