"""What a score query releases: the clamped total, shaped by the purpose.

Invariants:
- The total is clamped to the policy's score range before anything is derived from it,
  so a release never exceeds what the policy allows (0-1,000 for a person).
- Only the one kind the purpose names leaves the coordinator: a band label, a yes/no,
  or (for self-view) the full score. The unclamped total is never returned or logged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from audit.core.fields import RELEASED, VALUE
from fedscore.errors import FedscoreError
from fedscore.v1 import query_pb2
from policies.model import Policy, Purpose

ReleaseKind = Literal["score", "band", "eligible"]


@dataclass(frozen=True)
class Released:
    """The one value a purpose releases for one query."""

    kind: ReleaseKind
    value: int | str | bool

    def log_fields(self) -> dict[str, object]:
        """What the coordinator's log records about this release."""
        return {RELEASED: self.kind, VALUE: self.value}


def release_for(policy: Policy, purpose: Purpose, total: int) -> Released:
    """Clamp `total` under `policy` and reduce it to what `purpose` releases."""
    clamped = policy.clamp(total)
    kind, value = policy.release(purpose, clamped)
    if kind == "score" and isinstance(value, int) and not isinstance(value, bool):
        return Released("score", value)
    if kind == "band" and isinstance(value, str):
        return Released("band", value)
    if kind == "eligible" and isinstance(value, bool):
        return Released("eligible", value)
    # A policy that names a kind we cannot carry is a defect, not a caller's mistake.
    raise FedscoreError(f"purpose {purpose.id} releases an unsupported {kind!r}", "BAD_RELEASE")


def set_release(result: query_pb2.ScoreResult, released: Released) -> None:
    """Fill exactly one member of ScoreResult's `release` oneof."""
    if released.kind == "score":
        result.score = int(released.value)
    elif released.kind == "band":
        result.band = str(released.value)
    else:
        result.eligible = bool(released.value)
