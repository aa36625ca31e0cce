"""Pairwise masks for secure aggregation: the coordinator learns only the sum.

Each pair of participants (i, j) shares seed_ij = HKDF(X25519(box_i, box_j), info) where
`info` names both ids in sorted order, so seed_ij == seed_ji. For a query,

    mask_i = sum over j != i of  +PRF(seed_ij, query_id) if i < j  else  -PRF(seed_ij, query_id)
    PRF(seed, query_id) = big-endian uint64 of HMAC-SHA256(seed, query_id)[:8]

all mod 2^64. Every pair's term appears once with + and once with -, so the masks of a
full participant set sum to 0 and the masked answers sum to the true total.

Invariants:
- A mask is computed over exactly the given participant set (which must contain the
  caller, once each); a missing seed is an error, never a silently skipped term, because
  a skipped term would leave the total unrecoverable.
- A fresh query id gives fresh, unrelated masks, so two answers of one node cannot be
  subtracted to reveal its contribution.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Mapping

from fedscore.errors import InvalidArgument
from keys.box import BoxKeyPair

MODULUS = 2**64
_PRF_BYTES = 8
_SEED_LABEL = b"fedscore.v1 pairwise mask seed"


def _pair_info(a: str, b: str) -> bytes:
    first, second = sorted((a, b))
    parts = [_SEED_LABEL, first.encode("utf-8"), second.encode("utf-8")]
    # Length-prefixed so ("ab", "c") and ("a", "bc") can never give the same info.
    return b"".join(len(part).to_bytes(4, "big") + part for part in parts)


def pairwise_seeds(
    own_id: str, own_box: BoxKeyPair, peers: Mapping[str, bytes]
) -> dict[str, bytes]:
    """Seed shared with each peer (peer id -> box public key); `own_id` is skipped."""
    return {
        peer_id: own_box.shared_seed(peer_public, _pair_info(own_id, peer_id))
        for peer_id, peer_public in peers.items()
        if peer_id != own_id
    }


def _prf(seed: bytes, query_id: str) -> int:
    # hmac.digest: the same HMAC-SHA256 as hmac.new(...).digest(), in one C call.
    digest = hmac.digest(seed, query_id.encode("utf-8"), "sha256")
    return int.from_bytes(digest[:_PRF_BYTES], "big")


def mask_for(
    own_id: str, seeds: Mapping[str, bytes], participants: Iterable[str], query_id: str
) -> int:
    """This participant's mask for `query_id` over exactly `participants`."""
    members = list(participants)
    if len(set(members)) != len(members):
        raise InvalidArgument("participant set lists a party twice", reason="BAD_PARTICIPANTS")
    if own_id not in members:
        raise InvalidArgument(
            f"{own_id!r} is not in the participant set", reason="BAD_PARTICIPANTS"
        )
    if not query_id:
        raise InvalidArgument("query id must not be empty", reason="BAD_QUERY_ID")
    mask = 0
    for peer_id in members:
        if peer_id == own_id:
            continue
        seed = seeds.get(peer_id)
        if seed is None:
            raise InvalidArgument(
                f"no pairwise seed with participant {peer_id!r}", reason="NO_PAIRWISE_SEED"
            )
        term = _prf(seed, query_id)
        mask += term if own_id < peer_id else -term
    return mask % MODULUS


def masked_answer(contribution: int, mask: int) -> int:
    """(contribution + mask) mod 2^64: what a node sends instead of its contribution."""
    if not 0 <= contribution < MODULUS:
        raise InvalidArgument(
            f"contribution must be in [0, 2^64), got {contribution}", reason="BAD_CONTRIBUTION"
        )
    return (contribution + mask) % MODULUS


def unmasked_total(masked_answers: Iterable[int]) -> int:
    """The sum of a full participant set's masked answers: the true total, mod 2^64."""
    return sum(masked_answers) % MODULUS
