"""A relying party's signed score request, checked alike by the coordinator and every node.

The request (`ScoreQuery`) is what authorises one score query: a relying party (or the
citizen portal, for the citizen's own view) signs it with its own key, naming the purpose,
the consent token, the year and a fresh nonce. The coordinator checks it and then forwards
it, byte for byte, inside the question every node is asked (`QuerySpec.request`); each node
checks it again on its own. So a coordinator can relay only questions a relying party
actually asked, each at most once, and never ask on its own (docs/adr/0011).

Invariants:
- The envelope is verified before its payload is parsed, and its signer must be the
  relying party the request names (SIGNER_MISMATCH).
- Every check raises a `FedscoreError` with a reason; none returns a bool.
- The year asked is derived from signed fields only (`requested_year`): a request for
  year 0 means the current year at the time the relying party signed it, so every party
  derives the same year from the same bytes, whatever its own clock says.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from fedscore.errors import (
    AlreadyExists,
    InvalidArgument,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
)
from fedscore.protocol.signed import open_signed
from fedscore.v1.consent_pb2 import ConsentToken
from fedscore.v1.envelope_pb2 import Envelope
from fedscore.v1.query_pb2 import ScoreQuery
from keys.keyring import RequesterKeys
from policies.model import Policy, Purpose

MIN_NONCE_BYTES = 16
# A request is fresh for five minutes either side of the checking party's clock.
FRESHNESS_SECONDS = 300


@dataclass(frozen=True)
class AuthenticatedRequest:
    """A ScoreQuery whose envelope verified and whose signer is the named relying party."""

    query: ScoreQuery
    relying_party: str
    envelope: Envelope  # exactly as the relying party signed it: forwarded to every node

    @property
    def nonce_hash(self) -> bytes:
        """SHA-256 of the request nonce: what parties store and log, never the nonce."""
        return nonce_hash(self.query.nonce)


def nonce_hash(nonce: bytes) -> bytes:
    return hashlib.sha256(nonce).digest()


def authenticate_request(envelope: Envelope, keyring: RequesterKeys) -> AuthenticatedRequest:
    """Verify the relying party's signature, then that it signed in its own name."""
    verified = open_signed(envelope, ScoreQuery, keyring, RequesterKeys)
    query = verified.payload
    if query.relying_party != verified.signer:
        raise Unauthenticated(
            f"query names relying party {query.relying_party!r} but is signed by "
            f"{verified.signer!r}",
            reason="SIGNER_MISMATCH",
        )
    return AuthenticatedRequest(query=query, relying_party=verified.signer, envelope=envelope)


def check_nonce(nonce: bytes) -> None:
    if len(nonce) < MIN_NONCE_BYTES:
        raise InvalidArgument(
            f"nonce has {len(nonce)} bytes; at least {MIN_NONCE_BYTES} are required",
            reason="BAD_NONCE",
        )


def check_freshness(issued_at: int, now: int) -> None:
    if abs(now - issued_at) > FRESHNESS_SECONDS:
        raise PermissionDenied(
            f"query issued at {issued_at} is outside {FRESHNESS_SECONDS} s of {now}",
            reason="REQUEST_EXPIRED",
        )


def check_token_scope(token: ConsentToken, query: ScoreQuery) -> None:
    """The token must be for the purpose asked and held by the relying party asking."""
    if token.purpose_id != query.purpose_id:
        raise PermissionDenied(
            f"token is for purpose {token.purpose_id!r}, query asks for {query.purpose_id!r}",
            reason="PURPOSE_MISMATCH",
        )
    if token.relying_party != query.relying_party:
        raise PermissionDenied(
            f"token was granted to {token.relying_party!r}, not {query.relying_party!r}",
            reason="RELYING_PARTY_MISMATCH",
        )


def check_relying_party_allowed(purpose: Purpose, relying_party: str) -> None:
    if relying_party not in purpose.relying_parties:
        raise PermissionDenied(
            f"relying party {relying_party!r} is not allowed for purpose {purpose.id!r}",
            reason="RELYING_PARTY_NOT_ALLOWED",
        )


def requested_year(query: ScoreQuery, policy: Policy) -> int:
    """The year the relying party asked for: its own, or for 0 the year it signed in."""
    return int(query.year) if query.year else policy.current_year(query.issued_at)


def check_year(query: ScoreQuery, policy: Policy, purpose: Purpose, now: int) -> int:
    """The year asked, if the purpose allows it now (YEAR_NOT_ALLOWED otherwise)."""
    year = requested_year(query, policy)
    purpose.check_year(year, policy.current_year(now))
    return year


def check_replay(already_seen: bool) -> None:
    if already_seen:
        raise AlreadyExists("this request nonce was already accepted", reason="REPLAYED_NONCE")


def check_use_limit(uses_so_far: int, max_uses: int) -> None:
    """`max_uses` 0 means no limit beyond the token's validity window."""
    if max_uses and uses_so_far >= max_uses:
        raise ResourceExhausted(
            f"token has been used {uses_so_far} of {max_uses} times",
            reason="USE_LIMIT_REACHED",
        )
