"""The coordinator's admission checks, table-driven: each row is one thing wrong.

Every row names what is wrong, the status and reason expected, and whether the
refusal may name the relying party (only once its signature verified).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coordinator.checks import RefusalNotes, admit_query, authenticate_query
from fedscore.errors import Code, FedscoreError, ResourceExhausted
from fedscore.protocol.requests import FRESHNESS_SECONDS, check_use_limit, requested_year
from fedscore.protocol.status_list import RevocationState, build_status_list
from fedscore.v1 import consent_pb2, envelope_pb2, query_pb2, trust_pb2
from keys.box import BoxKeyPair
from keys.envelope import sign_bytes, sign_message
from keys.registry import TrustView, build_participant
from keys.signing import SigningKey
from policies.defaults import default_policy_document
from policies.loader import parse_policy
from policies.model import Policy

NOW = 1_760_000_000  # 2025-10-09, Asia/Bangkok
Role = trust_pb2.Role


def _key(name: str) -> SigningKey:
    return SigningKey.from_seed(hashlib.sha256(name.encode()).digest())


KEYS = {
    name: _key(name)
    for name in ("consent-registry", "ptt", "citizen-portal", "trc", "dsd", "chuangpao")
}
STRANGER = _key("stranger")
ROLES = {
    "consent-registry": Role.ROLE_CONSENT_REGISTRY,
    "ptt": Role.ROLE_RELYING_PARTY,
    "citizen-portal": Role.ROLE_CITIZEN_PORTAL,
    "trc": Role.ROLE_AGENCY,
    "dsd": Role.ROLE_AGENCY,
    "chuangpao": Role.ROLE_AGENCY,
}
AGENCIES = ("trc", "dsd", "chuangpao")
TRUST = TrustView(
    trust_pb2.TrustRegistry(
        federation_id="test",
        version=1,
        issued_at=NOW - 100,
        not_after=NOW + 10_000,
        participants=[
            build_participant(
                pid,
                ROLES[pid],
                KEYS[pid].verify_key,
                BoxKeyPair.from_private(
                    hashlib.sha256(b"box" + pid.encode()).digest()
                ).public_bytes,
                NOW - 100,
                NOW + 10_000,
            )
            for pid in ROLES
        ],
    ),
    NOW,
)
POLICY: Policy = parse_policy(default_policy_document(3))
POLICIES = {POLICY.content_hash: POLICY}
QUERY_KEYRING = TRUST.requester_keys()
PTT_PURPOSE = "ptt-fuel-discount"


def _revocations(*, fresh: bool = True, revoked: set[int] | None = None) -> RevocationState:
    state = RevocationState(TRUST.registry_keys())
    if fresh:
        status = build_status_list("consent-registry", 1, revoked or set(), 131_072, 60, NOW)
        state.apply_status_list(sign_message(status, KEYS["consent-registry"]), NOW)
    return state


@dataclass
class Case:
    """One request to admit: a token, a query, and who signs each."""

    token: dict[str, Any] = field(default_factory=dict)
    query: dict[str, Any] = field(default_factory=dict)
    token_signer: SigningKey = KEYS["consent-registry"]
    query_signer: SigningKey = KEYS["ptt"]
    tamper: Callable[[envelope_pb2.Envelope], envelope_pb2.Envelope] | None = None

    def token_message(self) -> consent_pb2.ConsentToken:
        fields: dict[str, Any] = {
            "token_id": "tok-1",
            "purpose_id": PTT_PURPOSE,
            "policy_hash": POLICY.content_hash,
            "relying_party": "ptt",
            "agencies": list(AGENCIES),
            "not_before": NOW - 60,
            "not_after": NOW + 3600,
            "status_index": 7,
            "issuer": "consent-registry",
            "sealed_subjects": [
                consent_pb2.SealedSubject(agency_id=a, blob=b"opaque " + a.encode())
                for a in AGENCIES
            ],
        }
        fields.update(self.token)
        return consent_pb2.ConsentToken(**fields)

    def envelope(self) -> envelope_pb2.Envelope:
        fields: dict[str, Any] = {
            "relying_party": "ptt",
            "purpose_id": PTT_PURPOSE,
            "token": sign_message(self.token_message(), self.token_signer),
            "nonce": b"n" * 16,
            "issued_at": NOW,
            "year": 0,
        }
        fields.update(self.query)
        envelope = sign_message(query_pb2.ScoreQuery(**fields), self.query_signer)
        return self.tamper(envelope) if self.tamper else envelope


def _admit(case: Case, revocations: RevocationState | None = None) -> tuple[Any, RefusalNotes]:
    notes = RefusalNotes()
    authenticated = authenticate_query(case.envelope(), QUERY_KEYRING)
    admitted = admit_query(
        authenticated,
        trust=TRUST,
        revocations=revocations or _revocations(),
        policies=POLICIES,
        now=NOW,
        notes=notes,
    )
    return admitted, notes


def _unsigned(env: envelope_pb2.Envelope) -> envelope_pb2.Envelope:
    return envelope_pb2.Envelope(payload_type=env.payload_type, payload=env.payload)


def _flip_payload(env: envelope_pb2.Envelope) -> envelope_pb2.Envelope:
    payload = bytearray(env.payload)
    payload[-1] ^= 0x01
    return envelope_pb2.Envelope(
        payload_type=env.payload_type,
        payload=bytes(payload),
        key_id=env.key_id,
        signature=env.signature,
    )


def _as_other_type(env: envelope_pb2.Envelope) -> envelope_pb2.Envelope:
    return sign_bytes("fedscore.v1.ScoreResult", env.payload, KEYS["ptt"])


_OTHER_YEAR = POLICY.current_year(NOW)

REFUSALS: list[tuple[str, Case, Code, str]] = [
    ("unsigned", Case(tamper=_unsigned), Code.UNAUTHENTICATED, "UNSIGNED"),
    (
        "signed as another type",
        Case(tamper=_as_other_type),
        Code.UNAUTHENTICATED,
        "WRONG_PAYLOAD_TYPE",
    ),
    (
        "signer not in the registry",
        Case(query_signer=STRANGER),
        Code.UNAUTHENTICATED,
        "UNKNOWN_SIGNER",
    ),
    (
        "an agency key signs a score query",
        Case(query_signer=KEYS["trc"]),
        Code.UNAUTHENTICATED,
        "UNKNOWN_SIGNER",
    ),
    (
        "payload changed after signing",
        Case(tamper=_flip_payload),
        Code.UNAUTHENTICATED,
        "BAD_SIGNATURE",
    ),
    (
        "portal signs a query in PTT's name",
        Case(query_signer=KEYS["citizen-portal"]),
        Code.UNAUTHENTICATED,
        "SIGNER_MISMATCH",
    ),
    (
        "nonce of 15 bytes",
        Case(query={"nonce": b"n" * 15}),
        Code.INVALID_ARGUMENT,
        "BAD_NONCE",
    ),
    (
        "issued too long ago",
        Case(query={"issued_at": NOW - FRESHNESS_SECONDS - 1}),
        Code.PERMISSION_DENIED,
        "REQUEST_EXPIRED",
    ),
    (
        "issued in the future",
        Case(query={"issued_at": NOW + FRESHNESS_SECONDS + 1}),
        Code.PERMISSION_DENIED,
        "REQUEST_EXPIRED",
    ),
    (
        "token signed by the relying party itself",
        Case(token_signer=KEYS["ptt"]),
        Code.UNAUTHENTICATED,
        "UNKNOWN_SIGNER",
    ),
    (
        "token expired",
        Case(token={"not_after": NOW - 1}),
        Code.PERMISSION_DENIED,
        "TOKEN_EXPIRED",
    ),
    (
        "token not yet valid",
        Case(token={"not_before": NOW + 60}),
        Code.PERMISSION_DENIED,
        "TOKEN_NOT_YET_VALID",
    ),
    (
        "query for another purpose than the token",
        Case(query={"purpose_id": "self-view"}),
        Code.PERMISSION_DENIED,
        "PURPOSE_MISMATCH",
    ),
    (
        "token granted to another relying party",
        Case(token={"relying_party": "citizen-portal"}),
        Code.PERMISSION_DENIED,
        "RELYING_PARTY_MISMATCH",
    ),
    (
        "token under a policy the coordinator does not hold",
        Case(token={"policy_hash": "sha256:" + "0" * 64}),
        Code.FAILED_PRECONDITION,
        "UNKNOWN_POLICY",
    ),
    (
        "purpose not in the policy",
        Case(token={"purpose_id": "loans"}, query={"purpose_id": "loans"}),
        Code.PERMISSION_DENIED,
        "UNKNOWN_PURPOSE",
    ),
    (
        "relying party not allowed for the purpose",
        Case(
            token={"relying_party": "citizen-portal"},
            query={"relying_party": "citizen-portal"},
            query_signer=KEYS["citizen-portal"],
        ),
        Code.PERMISSION_DENIED,
        "RELYING_PARTY_NOT_ALLOWED",
    ),
    (
        "token lacks one participant's sealed subject",
        Case(
            token={
                "sealed_subjects": [
                    consent_pb2.SealedSubject(agency_id=a, blob=b"x") for a in AGENCIES[:2]
                ]
            }
        ),
        Code.PERMISSION_DENIED,
        "TOKEN_OUT_OF_SCOPE",
    ),
    (
        "token leaves one participant out",
        Case(token={"agencies": list(AGENCIES[1:])}),
        Code.PERMISSION_DENIED,
        "TOKEN_OUT_OF_SCOPE",
    ),
    (
        "a future year",
        Case(query={"year": _OTHER_YEAR + 1}),
        Code.PERMISSION_DENIED,
        "YEAR_NOT_ALLOWED",
    ),
    (
        "a year before any record",
        Case(query={"year": 1969}),
        Code.PERMISSION_DENIED,
        "YEAR_NOT_ALLOWED",
    ),
    (
        "a year further back than the purpose reaches (PTT: one year back)",
        Case(query={"year": _OTHER_YEAR - 2}),
        Code.PERMISSION_DENIED,
        "YEAR_NOT_ALLOWED",
    ),
]


@pytest.mark.parametrize(
    ("case", "code", "reason"),
    [row[1:] for row in REFUSALS],
    ids=[row[0] for row in REFUSALS],
)
def test_refusal(case: Case, code: Code, reason: str) -> None:
    with pytest.raises(FedscoreError) as caught:
        _admit(case)
    assert (caught.value.code, caught.value.reason) == (code, reason)


def test_revoked_by_pushed_notice() -> None:
    revocations = _revocations()
    notice = consent_pb2.RevocationNotice(
        issuer="consent-registry", token_id="tok-1", status_index=7, revoked_at=NOW
    )
    revocations.apply_notice(sign_message(notice, KEYS["consent-registry"]))
    with pytest.raises(FedscoreError) as caught:
        _admit(Case(), revocations)
    assert caught.value.reason == "CONSENT_REVOKED"
    assert caught.value.code == Code.PERMISSION_DENIED


def test_revoked_in_status_list() -> None:
    with pytest.raises(FedscoreError) as caught:
        _admit(Case(), _revocations(revoked={7}))
    assert caught.value.reason == "CONSENT_REVOKED"


def test_no_fresh_status_list_fails_closed() -> None:
    with pytest.raises(FedscoreError) as caught:
        _admit(Case(), _revocations(fresh=False))
    assert (caught.value.code, caught.value.reason) == (
        Code.FAILED_PRECONDITION,
        "STATUS_LIST_STALE",
    )


def test_admitted_query_carries_the_full_participant_set() -> None:
    admitted, notes = _admit(Case())
    assert admitted.relying_party == "ptt"
    assert admitted.year == POLICY.current_year(NOW)
    assert admitted.purpose.id == PTT_PURPOSE
    assert list(admitted.sealed_subjects) == list(POLICY.purpose(PTT_PURPOSE).participants)
    assert admitted.sealed_subjects["dsd"] == b"opaque dsd"
    assert notes.fields() == {"relying_party": "ptt", "purpose": PTT_PURPOSE, "token_id": "tok-1"}


def test_self_view_by_the_citizen_portal() -> None:
    case = Case(
        token={"purpose_id": "self-view", "relying_party": "citizen-portal"},
        query={"purpose_id": "self-view", "relying_party": "citizen-portal", "year": 2024},
        query_signer=KEYS["citizen-portal"],
    )
    admitted, _ = _admit(case)
    assert (admitted.purpose.release, admitted.year) == ("score", 2024)


def test_forged_request_notes_nothing() -> None:
    """A refusal before the signature verifies may not name anyone in the log."""
    notes = RefusalNotes()
    with pytest.raises(FedscoreError):
        authenticated = authenticate_query(Case(query_signer=STRANGER).envelope(), QUERY_KEYRING)
        admit_query(
            authenticated,
            trust=TRUST,
            revocations=_revocations(),
            policies=POLICIES,
            now=NOW,
            notes=notes,
        )
    assert notes.fields() == {}


def test_refusal_after_authentication_notes_who_asked() -> None:
    notes = RefusalNotes()
    authenticated = authenticate_query(
        Case(query={"purpose_id": "self-view"}).envelope(), QUERY_KEYRING
    )
    with pytest.raises(FedscoreError):
        admit_query(
            authenticated,
            trust=TRUST,
            revocations=_revocations(),
            policies=POLICIES,
            now=NOW,
            notes=notes,
        )
    assert notes.fields() == {"relying_party": "ptt", "purpose": "self-view", "token_id": "tok-1"}


@given(st.integers(min_value=-FRESHNESS_SECONDS, max_value=FRESHNESS_SECONDS))
def test_any_skew_within_the_window_is_fresh(skew: int) -> None:
    admitted, _ = _admit(Case(query={"issued_at": NOW + skew}))
    assert admitted.query.issued_at == NOW + skew


@given(st.integers(min_value=1970, max_value=2100))
def test_a_purpose_reaches_back_only_as_far_as_it_declares(year: int) -> None:
    current = POLICY.current_year(NOW)
    for purpose in POLICY.purposes.values():
        if current - purpose.max_years_back <= year <= current:
            purpose.check_year(year, current)
        else:
            with pytest.raises(FedscoreError, match="YEAR_NOT_ALLOWED"):
                purpose.check_year(year, current)


def test_year_zero_is_the_bangkok_year_the_request_was_signed_in() -> None:
    # 2024-12-31 17:30 UTC is already 2025-01-01 00:30 in Bangkok.
    new_year_bangkok = 1_735_666_200
    request = query_pb2.ScoreQuery(year=0, issued_at=new_year_bangkok)
    assert requested_year(request, POLICY) == 2025
    assert (
        requested_year(query_pb2.ScoreQuery(year=2023, issued_at=new_year_bangkok), POLICY) == 2023
    )


@given(st.integers(min_value=0, max_value=20), st.integers(min_value=0, max_value=20))
def test_use_limit(uses: int, limit: int) -> None:
    if limit and uses >= limit:
        with pytest.raises(ResourceExhausted, match="USE_LIMIT_REACHED"):
            check_use_limit(uses, limit)
    else:
        check_use_limit(uses, limit)


@pytest.mark.parametrize(
    ("token_limit", "purpose_limit", "effective"),
    [(0, 0, 0), (5, 0, 5), (0, 3, 3), (5, 3, 3), (2, 9, 2)],
)
def test_the_tighter_use_limit_applies(
    token_limit: int, purpose_limit: int, effective: int
) -> None:
    purpose = replace(POLICY.purpose(PTT_PURPOSE), max_uses=purpose_limit)
    assert purpose.uses_allowed(token_limit) == effective
