"""Consent-token verification remembers verified tokens, and nothing else changes.

A token used again is not verified again (same signed bytes under the same keyring), but
its validity window is checked on every use, and bytes that differ in any signed or
signing field are verified afresh, so a forged or altered token is refused exactly as
before. Real Ed25519 keys and real signed tokens; no mocks.
"""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedscore.errors import PermissionDenied, Unauthenticated
from fedscore.memo import BoundedMemo
from fedscore.protocol.tokens import remembered, verify_token
from fedscore.v1 import consent_pb2, envelope_pb2, trust_pb2
from keys.box import BoxKeyPair
from keys.envelope import sign_message
from keys.registry import TrustView, build_participant
from keys.signing import SigningKey

NOW = 1_760_000_000
Role = trust_pb2.Role


def _key(name: str) -> SigningKey:
    return SigningKey.from_seed(hashlib.sha256(name.encode()).digest())


REGISTRY, STRANGER = _key("consent-registry"), _key("stranger")


def _trust() -> TrustView:
    """A fresh trust view each time: its keyrings (and their memos) are its own."""
    box = BoxKeyPair.from_private(hashlib.sha256(b"box").digest()).public_bytes
    participant = build_participant(
        "consent-registry",
        Role.ROLE_CONSENT_REGISTRY,
        REGISTRY.verify_key,
        box,
        NOW - 100,
        NOW + 10_000,
    )
    registry = trust_pb2.TrustRegistry(
        federation_id="test",
        version=1,
        issued_at=NOW - 100,
        not_after=NOW + 10_000,
        participants=[participant],
    )
    return TrustView(registry, NOW)


def _token(token_id: str = "tok-1", signer: SigningKey = REGISTRY) -> envelope_pb2.Envelope:  # noqa: S107
    token = consent_pb2.ConsentToken(
        token_id=token_id,
        purpose_id="ptt-fuel-discount",
        relying_party="ptt",
        not_before=NOW - 60,
        not_after=NOW + 3600,
        issuer="consent-registry",
    )
    return sign_message(token, signer)


def _memo(trust: TrustView) -> BoundedMemo[tuple[consent_pb2.ConsentToken, bytes]]:
    return remembered(trust.registry_keys())


def test_a_token_used_again_is_remembered_and_gives_the_same_answer() -> None:
    trust = _trust()
    envelope = _token()
    first = verify_token(envelope, trust, NOW)
    again = verify_token(envelope_pb2.Envelope.FromString(envelope.SerializeToString()), trust, NOW)
    assert again.token == first.token and again.digest == first.digest
    assert again.digest == hashlib.sha256(envelope.payload).digest()
    memo = _memo(trust)
    assert (memo.misses, memo.hits, len(memo)) == (1, 1, 1)


def test_the_window_is_checked_on_every_use_of_a_remembered_token() -> None:
    trust = _trust()
    envelope = _token()
    verify_token(envelope, trust, NOW)
    with pytest.raises(PermissionDenied) as late:
        verify_token(envelope, trust, NOW + 3601)
    assert late.value.reason == "TOKEN_EXPIRED"
    with pytest.raises(PermissionDenied) as early:
        verify_token(envelope, trust, NOW - 61)
    assert early.value.reason == "TOKEN_NOT_YET_VALID"
    assert _memo(trust).hits == 2


def _resigned_by_stranger(envelope: envelope_pb2.Envelope) -> envelope_pb2.Envelope:
    forged = _token(signer=STRANGER)
    return envelope_pb2.Envelope(
        payload_type=envelope.payload_type,
        payload=envelope.payload,
        key_id=envelope.key_id,
        signature=forged.signature,
    )


def _payload_changed(envelope: envelope_pb2.Envelope) -> envelope_pb2.Envelope:
    token = consent_pb2.ConsentToken.FromString(envelope.payload)
    token.relying_party = "someone-else"
    changed = envelope_pb2.Envelope()
    changed.CopyFrom(envelope)
    changed.payload = token.SerializeToString()
    return changed


def _signed_by_stranger(envelope: envelope_pb2.Envelope) -> envelope_pb2.Envelope:
    return _token(signer=STRANGER)


@pytest.mark.parametrize(
    ("alter", "reason"),
    [
        (_resigned_by_stranger, "BAD_SIGNATURE"),
        (_payload_changed, "BAD_SIGNATURE"),
        (_signed_by_stranger, "UNKNOWN_SIGNER"),
    ],
)
def test_altered_bytes_of_a_remembered_token_are_refused_and_not_remembered(
    alter: object, reason: str
) -> None:
    trust = _trust()
    genuine = _token()
    verify_token(genuine, trust, NOW)
    assert callable(alter)
    with pytest.raises(Unauthenticated) as caught:
        verify_token(alter(genuine), trust, NOW)
    assert caught.value.reason == reason
    assert len(_memo(trust)) == 1  # only the genuine token


def test_each_keyring_remembers_its_own_tokens() -> None:
    envelope = _token()
    first, second = _trust(), _trust()
    verify_token(envelope, first, NOW)
    verify_token(envelope, second, NOW)
    assert _memo(first).misses == _memo(second).misses == 1


def test_the_memo_keeps_the_most_recently_used_entries() -> None:
    memo: BoundedMemo[int] = BoundedMemo(2)
    memo.put("a", 1)
    memo.put("b", 2)
    assert memo.get("a") == 1  # "a" is now the most recent
    memo.put("c", 3)
    assert (memo.get("a"), memo.get("b"), memo.get("c")) == (1, None, 3)
    with pytest.raises(ValueError, match="at least one"):
        BoundedMemo(0)


@given(
    st.integers(min_value=1, max_value=8),
    st.lists(st.tuples(st.booleans(), st.integers(min_value=0, max_value=12)), max_size=60),
)
def test_the_memo_never_outgrows_its_capacity_nor_returns_a_stale_value(
    capacity: int, steps: list[tuple[bool, int]]
) -> None:
    memo: BoundedMemo[tuple[int, int]] = BoundedMemo(capacity)
    latest: dict[int, tuple[int, int]] = {}
    for position, (write, key) in enumerate(steps):
        if write:
            memo.put(key, (key, position))
            latest[key] = (key, position)
        else:
            found = memo.get(key)
            assert found is None or found == latest[key]
        assert len(memo) <= capacity
