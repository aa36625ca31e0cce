"""Pairwise masks for secure aggregation, bound to the exact question asked.

Each pair of participants (i, j) shares seed_ij = HKDF(X25519(box_i, box_j), info) where
`info` names both ids in sorted order, so seed_ij == seed_ji. For a question Q,

    mask_i(Q) = sum over j != i of  +PRF(seed_ij, input(Q)) if i < j  else  -PRF(seed_ij, input(Q))
    PRF(seed, x) = big-endian uint64 of HMAC-SHA256(seed, x)[:8]
    input(Q)     = LP(label) || LP(kind) || LP(SHA-256 of the question's bytes)
                   || LP(bin as 8 bytes) || LP(SHA-256 of the participant set)

all mod 2^64, where LP(x) is x prefixed with its length (4 bytes) and the participant set is
hashed as its sorted, length-prefixed ids. Every pair's term appears once with + and once
with -, so the masks of a full participant set sum to 0 and the masked answers sum to the
true total — but only when every participant masked the SAME input.

The rule (docs/adr/0011): a participant's mask depends on the hash of the exact question
bytes every participant received (one canonical spec, with no per-node field inside it), on
the kind of question (a score inside a batch, one bin of a histogram) and on the
participant set, with each kind separated from the others. So:
- if the coordinator asks any two participants anything different — another year, another
  purpose, another participant list, another kind, even one other byte — their masks are
  independent PRF outputs that do not cancel, and the "sum" is a uniformly random value
  mod 2^64 that reveals nothing about any contribution;
- two answers of one node can never be subtracted to reveal its contribution: each question
  is answered once (nodes refuse a reused query id), and no two different questions or kinds
  share a mask input.

Invariants:
- A mask is computed over exactly the given participant set (which must contain the
  caller, once each); a missing seed is an error, never a silently skipped term, because
  a skipped term would leave the total unrecoverable.
- The question digest is exactly 32 bytes (SHA-256) and the kind one of `QuestionKind`;
  anything else is refused, never hashed as is.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum

from fedscore.errors import InvalidArgument
from keys.box import BoxKeyPair

MODULUS = 2**64
_PRF_BYTES = 8
_SEED_LABEL = b"fedscore.v1 pairwise mask seed"
_INPUT_LABEL = b"fedscore.v1 pairwise mask input"
DIGEST_BYTES = 32


class QuestionKind(Enum):
    """What a masked answer answers; each kind's masks are separated from every other's.

    The value is the kind's name inside every mask input: never change one (the masks of
    nodes of two versions would no longer cancel), nor give a retired name to a new kind.
    Retired: "score", a score asked alone on the removed unary `NodeService.Contribute`;
    every score question is now asked inside a ContributionBatch.
    """

    SCORE_BATCH_ITEM = "score-batch-item"  # one score query inside a ContributionBatch
    HISTOGRAM_BIN = "histogram-bin"  # one bin of a statistics histogram


def _lp(part: bytes) -> bytes:
    return len(part).to_bytes(4, "big") + part


@dataclass(frozen=True)
class Question:
    """The exact question a masked answer answers: its kind, its bytes' hash, its bin."""

    kind: QuestionKind
    digest: bytes  # SHA-256 of the exact question bytes every participant received
    bin: int = 0  # the histogram bin (0 for scores)

    def __post_init__(self) -> None:
        if not isinstance(self.kind, QuestionKind):
            raise InvalidArgument(f"unknown question kind {self.kind!r}", "BAD_QUESTION")
        if len(self.digest) != DIGEST_BYTES:
            raise InvalidArgument("a question digest is 32 bytes (SHA-256)", "BAD_QUESTION")
        if not 0 <= self.bin < MODULUS:
            raise InvalidArgument(f"bin {self.bin} is out of range", "BAD_QUESTION")
        if self.bin and self.kind is not QuestionKind.HISTOGRAM_BIN:
            raise InvalidArgument("only a histogram question has bins", "BAD_QUESTION")

    @classmethod
    def of(cls, kind: QuestionKind, question: bytes, bin: int = 0) -> Question:
        """The question whose canonical bytes are `question` (hashed here)."""
        return cls(kind, hashlib.sha256(question).digest(), bin)

    def with_bin(self, bin: int) -> Question:
        return Question(self.kind, self.digest, bin)


def participant_set_digest(participants: Iterable[str]) -> bytes:
    """SHA-256 of the sorted, length-prefixed participant ids (order-independent)."""
    return hashlib.sha256(b"".join(_lp(p.encode("utf-8")) for p in sorted(participants))).digest()


def mask_input(question: Question, participants: Iterable[str]) -> bytes:
    """The PRF input every participant of `question` computes (module docstring)."""
    return b"".join(
        (
            _lp(_INPUT_LABEL),
            _lp(question.kind.value.encode("ascii")),
            _lp(question.digest),
            _lp(question.bin.to_bytes(8, "big")),
            _lp(participant_set_digest(participants)),
        )
    )


def _pair_info(a: str, b: str) -> bytes:
    first, second = sorted((a, b))
    parts = [_SEED_LABEL, first.encode("utf-8"), second.encode("utf-8")]
    # Length-prefixed so ("ab", "c") and ("a", "bc") can never give the same info.
    return b"".join(_lp(part) for part in parts)


def pairwise_seeds(
    own_id: str, own_box: BoxKeyPair, peers: Mapping[str, bytes]
) -> dict[str, bytes]:
    """Seed shared with each peer (peer id -> box public key); `own_id` is skipped."""
    return {
        peer_id: own_box.shared_seed(peer_public, _pair_info(own_id, peer_id))
        for peer_id, peer_public in peers.items()
        if peer_id != own_id
    }


def _prf(seed: bytes, data: bytes) -> int:
    # hmac.digest: the same HMAC-SHA256 as hmac.new(...).digest(), in one C call.
    return int.from_bytes(hmac.digest(seed, data, "sha256")[:_PRF_BYTES], "big")


def _checked_members(own_id: str, participants: Iterable[str]) -> list[str]:
    members = list(participants)
    if len(set(members)) != len(members):
        raise InvalidArgument("participant set lists a party twice", reason="BAD_PARTICIPANTS")
    if own_id not in members:
        raise InvalidArgument(
            f"{own_id!r} is not in the participant set", reason="BAD_PARTICIPANTS"
        )
    return members


def _mask(own_id: str, seeds: Mapping[str, bytes], members: Sequence[str], data: bytes) -> int:
    mask = 0
    for peer_id in members:
        if peer_id == own_id:
            continue
        seed = seeds.get(peer_id)
        if seed is None:
            raise InvalidArgument(
                f"no pairwise seed with participant {peer_id!r}", reason="NO_PAIRWISE_SEED"
            )
        term = _prf(seed, data)
        mask += term if own_id < peer_id else -term
    return mask % MODULUS


def mask_for(
    own_id: str, seeds: Mapping[str, bytes], participants: Iterable[str], question: Question
) -> int:
    """This participant's mask for `question` over exactly `participants`."""
    members = _checked_members(own_id, participants)
    return _mask(own_id, seeds, members, mask_input(question, members))


def bin_masks(
    own_id: str,
    seeds: Mapping[str, bytes],
    participants: Iterable[str],
    question: Question,
    bins: int,
) -> list[int]:
    """This participant's mask for each bin 0..bins-1 of a histogram `question`."""
    if question.kind is not QuestionKind.HISTOGRAM_BIN:
        raise InvalidArgument("only a histogram question has bins", "BAD_QUESTION")
    members = _checked_members(own_id, participants)
    return [
        _mask(own_id, seeds, members, mask_input(question.with_bin(b), members))
        for b in range(bins)
    ]


def masked_answer(contribution: int, mask: int) -> int:
    """(contribution + mask) mod 2^64: what a node sends instead of its contribution."""
    if not 0 <= contribution < MODULUS:
        raise InvalidArgument(
            f"contribution must be in [0, 2^64), got {contribution}", reason="BAD_CONTRIBUTION"
        )
    return (contribution + mask) % MODULUS
