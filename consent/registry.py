"""The consent registry's workflows: grant, revoke, status, list.

Plain functions over a `ConsentRegistry` (opened once at start); the gRPC handlers in
`consent.service` only decode, call these and encode, and unit tests call them directly.

Invariants:
- A refused request stores nothing and logs nothing: every check runs before the one
  transaction that writes the grant (or revocation) together with its audit log entry.
- The national ID is used only to seal it for each participating agency and to derive
  the citizen key (HMAC under the registry's pseudonym key); it is never stored or logged,
  and no part of it is in a token, a receipt or a reply (see `consent.receipts`).
- Only the citizen who granted a consent can revoke it or see it listed.
- Revocation is idempotent: revoking a revoked token returns a receipt and changes
  nothing. A first revocation bumps the status-list sequence in the same transaction,
  so every list signed afterwards carries the revoked bit (see `consent.status_list`).
"""

from __future__ import annotations

import hmac
import re
import secrets
from dataclasses import dataclass

from sqlalchemy import Connection, Engine

from audit.core import kinds
from audit.core.fields import NOT_AFTER, NOT_BEFORE, PURPOSE, RELYING_PARTY, REVOKED_AT, TOKEN_ID
from audit.store.log import EventLog
from consent.grant_rules import check_uses, check_window
from consent.receipts import signed_receipt
from consent.store import Grant, add_grant, draw_status_index, find_grant, grants_of, mark_revoked
from fedscore.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from fedscore.protocol.signed import RECEIPT_GRANTED, RECEIPT_REVOKED
from fedscore.runtime.party import Party
from fedscore.v1.consent_pb2 import (
    ConsentToken,
    GrantSummary,
    RevocationNotice,
    SealedSubject,
)
from fedscore.v1.envelope_pb2 import Envelope
from fedscore.v1.trust_pb2 import Participant, Role
from keys.envelope import sign_message
from keys.national_id import validate_national_id
from keys.pseudonym import pseudonym
from keys.registry import TrustView
from keys.seal import seal_subject
from keys.signing import SigningKey
from policies.model import Policy, Purpose

LEGAL_BASIS = "PDPA s.19 consent"
DEFAULT_STATUS_TTL_SECONDS = 60
_THIRTEEN_DIGITS = re.compile(r"[0-9]{13}")

ACTIVE = "active"
REVOKED = "revoked"
EXPIRED = "expired"
NOT_YET_VALID = "not_yet_valid"


@dataclass(frozen=True)
class ConsentRegistry:
    """Everything the registry's workflows need, opened once at start.

    What follows the trust registry (`trust`, `policy`, `signing_key`) is replaced whole
    by `follow` when the party's `LiveTrust` changes (`consent.server`): a grant is checked
    against, and its token issued under, the newest policy and the view valid now.
    """

    registry_id: str
    signing_key: SigningKey
    pseudonym_key: bytes
    trust: TrustView
    policy: Policy
    engine: Engine
    log: EventLog
    status_ttl_seconds: int = DEFAULT_STATUS_TTL_SECONDS

    @classmethod
    def for_party(
        cls,
        party: Party,
        engine: Engine,
        log: EventLog,
        *,
        status_ttl_seconds: int = DEFAULT_STATUS_TTL_SECONDS,
    ) -> ConsentRegistry:
        if party.role != Role.ROLE_CONSENT_REGISTRY:
            raise FailedPrecondition(
                f"{party.id} is not the consent registry of this federation",
                reason="WRONG_ROLE",
            )
        if status_ttl_seconds < 2:
            raise InvalidArgument("status list TTL must be at least 2 seconds", "BAD_TTL")
        return cls(
            registry_id=party.id,
            signing_key=party.signing_key,
            pseudonym_key=party.secrets.pseudonym_key,
            trust=party.trust,
            policy=party.policy,
            engine=engine,
            log=log,
            status_ttl_seconds=status_ttl_seconds,
        )

    def follow(self, trust: TrustView, policy: Policy, signing_key: SigningKey) -> None:
        """Swap in the current view, policy and signing key, each whole."""
        object.__setattr__(self, "trust", trust)
        object.__setattr__(self, "policy", policy)
        object.__setattr__(self, "signing_key", signing_key)

    def receipt(self, token: ConsentToken, *, event: str, event_time: int) -> Envelope:
        """The citizen's signed receipt for `event` on `token`."""
        return signed_receipt(
            self.registry_id,
            self.signing_key,
            self.policy,
            token,
            event=event,
            event_time=event_time,
        )

    def citizen_key(self, national_id: str) -> str:
        """The key grants are stored under: HMAC of the ID, useless without our key."""
        return pseudonym(self.pseudonym_key, national_id)


@dataclass(frozen=True)
class IssuedConsent:
    token_id: str
    token: Envelope  # signed ConsentToken, for the relying party
    receipt: Envelope  # signed ConsentReceipt, for the citizen


@dataclass(frozen=True)
class Revocation:
    token_id: str
    receipt: Envelope
    # Signed RevocationNotice to push; None when the token was already revoked before.
    notice: Envelope | None


def new_token_id() -> str:
    """16 random bytes in hex, drawn again if they hold a run of 13 decimal digits.

    Audit logs refuse any 13-digit string (it could be a national ID), and about one
    random hex id in sixty holds such a run; redrawing costs almost no entropy.
    """
    while True:
        token_id = secrets.token_hex(16)
        if not _THIRTEEN_DIGITS.search(token_id):
            return token_id


# --- who may call -----------------------------------------------------------------


def _caller(trust: TrustView, caller_id: str) -> Participant:
    try:
        return trust.participant(caller_id)
    except NotFound:
        raise PermissionDenied(
            f"caller {caller_id or '(no certificate name)'} is not a participant of this "
            "federation",
            reason="CALLER_NOT_ALLOWED",
        ) from None


def require_participant(trust: TrustView, caller_id: str) -> None:
    """Any participant may read token status and the status list."""
    _caller(trust, caller_id)


def require_citizen_portal(trust: TrustView, caller_id: str) -> None:
    """Only the citizen portal (which authenticated the citizen) may grant, revoke, list."""
    if _caller(trust, caller_id).role != Role.ROLE_CITIZEN_PORTAL:
        raise PermissionDenied(
            f"only the citizen portal may change or list consents; {caller_id} may not",
            reason="CALLER_NOT_ALLOWED",
        )


# --- grant ------------------------------------------------------------------------


def _agency_box_keys(trust: TrustView, purpose: Purpose) -> dict[str, bytes]:
    try:
        return {agency: trust.box_public(agency) for agency in purpose.participants}
    except NotFound as exc:
        raise FailedPrecondition(
            f"purpose {purpose.id} names an agency the trust registry does not list: {exc}",
            reason="AGENCY_NOT_IN_REGISTRY",
        ) from exc


def _still_registered(trust: TrustView, relying_party: str) -> None:
    """A relying party the registry no longer lists could never use a token: none is made."""
    try:
        trust.participant(relying_party)
    except NotFound:
        raise PermissionDenied(
            f"relying party {relying_party!r} is not in the trust registry valid now",
            reason="RELYING_PARTY_NOT_REGISTERED",
        ) from None


def grant(
    registry: ConsentRegistry,
    *,
    national_id: str,
    purpose_id: str,
    relying_party: str,
    not_before: int,
    not_after: int,
    max_uses: int,
    now: int,
) -> IssuedConsent:
    """Check the request against the policy, then issue, store and log one consent."""
    national_id = validate_national_id(national_id)
    purpose = registry.policy.purpose(purpose_id)
    if relying_party not in purpose.relying_parties:
        raise PermissionDenied(
            f"relying party {relying_party!r} may not ask for purpose {purpose.id}",
            reason="RELYING_PARTY_NOT_ALLOWED",
        )
    _still_registered(registry.trust, relying_party)
    start = check_window(purpose, not_before, not_after, now)
    uses = check_uses(purpose, max_uses)
    box_keys = _agency_box_keys(registry.trust, purpose)
    token_id = new_token_id()
    with registry.engine.begin() as connection:
        status_index, _ = draw_status_index(connection)
        token = ConsentToken(
            token_id=token_id,
            purpose_id=purpose.id,
            policy_hash=registry.policy.content_hash,
            relying_party=relying_party,
            agencies=list(purpose.participants),
            domains=list(purpose.domains),
            not_before=start,
            not_after=not_after,
            max_uses=uses,
            legal_basis=LEGAL_BASIS,
            sealed_subjects=[
                SealedSubject(
                    agency_id=agency,
                    blob=seal_subject(token_id, agency, national_id, box_public),
                )
                for agency, box_public in box_keys.items()
            ],
            status_index=status_index,
            issuer=registry.registry_id,
            issued_at=now,
        )
        envelope = sign_message(token, registry.signing_key)
        receipt = registry.receipt(token, event=RECEIPT_GRANTED, event_time=now)
        add_grant(
            connection,
            Grant(
                token_id=token_id,
                citizen_key=registry.citizen_key(national_id),
                purpose_id=purpose.id,
                relying_party=relying_party,
                not_before=start,
                not_after=not_after,
                max_uses=uses,
                status_index=status_index,
                granted_at=now,
                revoked_at=None,
                token_envelope=envelope.SerializeToString(),
            ),
        )
        registry.log.append(
            connection,
            kinds.CONSENT_GRANTED,
            {
                TOKEN_ID: token_id,
                PURPOSE: purpose.id,
                RELYING_PARTY: relying_party,
                NOT_BEFORE: start,
                NOT_AFTER: not_after,
            },
            now=now,
        )
    return IssuedConsent(token_id=token_id, token=envelope, receipt=receipt)


# --- revoke -----------------------------------------------------------------------


def _own_grant(
    registry: ConsentRegistry, connection: Connection, national_id: str, token_id: str
) -> Grant:
    """The grant `token_id`, if `national_id` is who made it; raise otherwise."""
    found = find_grant(connection, token_id)
    if found is None:
        raise NotFound(f"no consent with token id {token_id!r}", reason="UNKNOWN_TOKEN")
    if not hmac.compare_digest(found.citizen_key, registry.citizen_key(national_id)):
        raise PermissionDenied(
            f"consent {token_id} was not given by this citizen", reason="NOT_YOUR_GRANT"
        )
    return found


def stored_token(grant_row: Grant) -> ConsentToken:
    """The token as we signed it (our own stored bytes, so no verification needed)."""
    envelope = Envelope.FromString(grant_row.token_envelope)
    token: ConsentToken = ConsentToken.FromString(envelope.payload)
    return token


def revoke(registry: ConsentRegistry, *, national_id: str, token_id: str, now: int) -> Revocation:
    """Withdraw the citizen's consent; the caller pushes `notice` to every checking party."""
    national_id = validate_national_id(national_id)
    with registry.engine.begin() as connection:
        row = _own_grant(registry, connection, national_id, token_id)
        token = stored_token(row)
        sequence = None if row.revoked_at is not None else mark_revoked(connection, token_id, now)
        if sequence is None:
            # Revoked before (by this citizen, perhaps a moment ago): the same receipt again.
            again = find_grant(connection, token_id)
            revoked_at = again.revoked_at if again is not None and again.revoked_at else now
            receipt = registry.receipt(token, event=RECEIPT_REVOKED, event_time=revoked_at)
            return Revocation(token_id=token_id, receipt=receipt, notice=None)
        registry.log.append(
            connection,
            kinds.CONSENT_REVOKED,
            {TOKEN_ID: token_id, REVOKED_AT: now, "status_sequence": sequence},
            now=now,
        )
    receipt = registry.receipt(token, event=RECEIPT_REVOKED, event_time=now)
    notice = RevocationNotice(
        issuer=registry.registry_id,
        token_id=token_id,
        status_index=token.status_index,
        revoked_at=now,
    )
    return Revocation(
        token_id=token_id, receipt=receipt, notice=sign_message(notice, registry.signing_key)
    )


# --- status and listing -----------------------------------------------------------


def status_of(row: Grant, now: int) -> str:
    """Valid for not_before <= now <= not_after, as in `fedscore.protocol.tokens.verify_token`."""
    if row.revoked_at is not None:
        return REVOKED
    if now > row.not_after:
        return EXPIRED
    if now < row.not_before:
        return NOT_YET_VALID
    return ACTIVE


def consent_status(registry: ConsentRegistry, *, token_id: str, now: int) -> str:
    with registry.engine.connect() as connection:
        row = find_grant(connection, token_id)
        if row is None:
            raise NotFound(f"no consent with token id {token_id!r}", reason="UNKNOWN_TOKEN")
        return status_of(row, now)


def list_grants(registry: ConsentRegistry, *, national_id: str, now: int) -> list[GrantSummary]:
    """The citizen's own grants, oldest first; nobody else's."""
    national_id = validate_national_id(national_id)
    with registry.engine.connect() as connection:
        rows = grants_of(connection, registry.citizen_key(national_id))
        return [
            GrantSummary(
                token_id=row.token_id,
                purpose_id=row.purpose_id,
                relying_party=row.relying_party,
                not_before=row.not_before,
                not_after=row.not_after,
                status=status_of(row, now),
                granted_at=row.granted_at,
                revoked_at=row.revoked_at or 0,
            )
            for row in rows
        ]
