"""The signed objects of a two-server statistics release (docs/adr/0019): one type per
kind, each opened only under the keys of the one kind of party that may sign it.

| kind            | signed by   | keyring           | opened by                                |
|-----------------|-------------|-------------------|------------------------------------------|
| `HelperShare`   | agency node | `AgencyKeys`      | the helper (`helper.noising`)            |
| `NoiseOrder`    | coordinator | `CoordinatorKeys` | the helper (`helper.noising`)            |
| `NoisyShareSum` | the helper  | `HelperKeys`      | the coordinator (`coordinator.helper_link`) |

As in `fedscore.protocol.questions`, each constructor verifies the envelope under its own
keyring type, only then parses, then checks the object's own invariants, raising by
reason; what needs the caller's context (this question's id and hash, this helper, the
number of bins) stays in the caller's steps.

Invariants checked here, by kind:
- a helper share names the agency that signed it (SIGNER_MISMATCH), a query id, a SHA-256
  query hash, a helper and sealed shares (BAD_SHARE);
- a noise order names the helper it is for, a release id and carries a spec (BAD_ORDER);
- a noisy share sum names the helper that signed it (SIGNER_MISMATCH), a query id, a
  SHA-256 query hash and a release id (BAD_ANSWER).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Self

from fedscore.errors import InvalidArgument, Unauthenticated
from fedscore.protocol.signed import open_signed
from fedscore.v1.envelope_pb2 import Envelope
from fedscore.v1.helper_pb2 import NoiseOrder, NoisyShareSum
from fedscore.v1.statistics_pb2 import HelperShare
from keys.keyring import AgencyKeys, CoordinatorKeys, HelperKeys

SHA256_BYTES = 32


def _names_its_signer(named: str, signer: str, what: str) -> None:
    if named != signer:
        raise Unauthenticated(f"{what} names {named!r} but {signer} signed it", "SIGNER_MISMATCH")


@dataclass(frozen=True)
class SignedHelperShare:
    """One node's sealed shares for the helper, signed by the node."""

    share: HelperShare
    signer: str  # the agency

    @classmethod
    def verify(cls, envelope: Envelope, keys: AgencyKeys) -> Self:
        verified = open_signed(envelope, HelperShare, keys, AgencyKeys)
        share = verified.payload
        _names_its_signer(share.agency_id, verified.signer, "helper share")
        if (
            not share.query_id
            or len(share.query_hash) != SHA256_BYTES
            or not share.helper
            or not share.sealed_shares
        ):
            raise InvalidArgument(
                "the helper share names no query id, SHA-256 query hash or helper, or holds "
                "no shares",
                reason="BAD_SHARE",
            )
        return cls(share, verified.signer)


@dataclass(frozen=True)
class SignedNoiseOrder:
    """The coordinator's order to add noise to the shares of one release."""

    order: NoiseOrder
    signer: str  # the coordinator

    @classmethod
    def verify(cls, envelope: Envelope, keys: CoordinatorKeys) -> Self:
        verified = open_signed(envelope, NoiseOrder, keys, CoordinatorKeys)
        order = verified.payload
        if not order.helper or not order.release_id or not order.spec:
            raise InvalidArgument(
                "the noise order names no helper or release id, or carries no spec",
                reason="BAD_ORDER",
            )
        return cls(order, verified.signer)


@dataclass(frozen=True)
class SignedNoisyShareSum:
    """The helper's noisy share sums for one release, signed by the helper."""

    noisy: NoisyShareSum
    signer: str  # the helper

    @classmethod
    def verify(cls, envelope: Envelope, keys: HelperKeys) -> Self:
        verified = open_signed(envelope, NoisyShareSum, keys, HelperKeys)
        noisy = verified.payload
        _names_its_signer(noisy.helper, verified.signer, "noisy share sum")
        if not noisy.query_id or len(noisy.query_hash) != SHA256_BYTES or not noisy.release_id:
            raise InvalidArgument(
                "the noisy share sum names no query id, SHA-256 query hash or release id",
                reason="BAD_ANSWER",
            )
        return cls(noisy, verified.signer)
