"""Envelopes: golden bytes from fixed keys, and every way a signature must fail."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedscore.errors import FedscoreError, InvalidArgument, Unauthenticated
from fedscore.v1.envelope_pb2 import Envelope
from fedscore.v1.trust_pb2 import Participant, TrustRegistry
from keys.envelope import Verified, pae, sign_bytes, sign_message, verify_bytes, verify_message
from keys.ids import key_id
from keys.keyring import Keyring
from keys.signing import SigningKey

SEED = bytes(range(32))
KEY = SigningKey.from_seed(SEED)
KEYRING = Keyring.of({"signer-a": KEY.verify_key})
OTHER_KEY = SigningKey.from_seed(bytes(range(32, 64)))

# Golden values, computed once from SEED and hard-coded: a change in PAE, key ids or
# serialization breaks every signature already issued, so it must break this test first.
GOLDEN_VERIFY_KEY = "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8"
GOLDEN_KEY_ID = "56475aa75463474c0285df5dbf2bcab7"
GOLDEN_PAE = b"DSSEv1 18 application/x-test 5 hello"
GOLDEN_BYTES_SIGNATURE = (
    "fc8961b7cc2e70428baaca02d7ea59ef8a58d1983114e660861b1b222413401e"
    "b361d805d7b99b2854885b7956aa20a5ef726cb9c314e6f07d6ece110cf63709"
)
GOLDEN_REGISTRY_PAYLOAD = "0a086665642d7465737410011880e2cfaa062080a4a7da06"
GOLDEN_REGISTRY_SIGNATURE = (
    "1653626f883ded8afa22bc7369791360e7ddf6906c454eb00519053f6f80d8cc"
    "62b67aded89a856cffda0300065325b27840a4276ce9569efc6d3462f1e37102"
)


def _registry() -> TrustRegistry:
    return TrustRegistry(
        federation_id="fed-test", version=1, issued_at=1_700_000_000, not_after=1_800_000_000
    )


def _flip(data: bytes, index: int) -> bytes:
    flipped = bytearray(data)
    flipped[index] ^= 0x01
    return bytes(flipped)


def _reason(error: pytest.ExceptionInfo[FedscoreError]) -> str:
    return error.value.reason


def test_golden_key_and_key_id() -> None:
    assert KEY.verify_key.encode().hex() == GOLDEN_VERIFY_KEY
    assert KEY.key_id == GOLDEN_KEY_ID
    assert (
        key_id(KEY.verify_key.encode()) == hashlib.sha256(KEY.verify_key.encode()).hexdigest()[:32]
    )


def test_golden_pae_and_bytes_envelope() -> None:
    assert pae("application/x-test", b"hello") == GOLDEN_PAE
    envelope = sign_bytes("application/x-test", b"hello", KEY)
    assert envelope.payload_type == "application/x-test"
    assert envelope.payload == b"hello"
    assert envelope.key_id == GOLDEN_KEY_ID
    assert envelope.signature.hex() == GOLDEN_BYTES_SIGNATURE


def test_golden_message_envelope() -> None:
    envelope = sign_message(_registry(), KEY)
    assert envelope.payload_type == "fedscore.v1.TrustRegistry"
    assert envelope.payload.hex() == GOLDEN_REGISTRY_PAYLOAD
    assert envelope.signature.hex() == GOLDEN_REGISTRY_SIGNATURE
    verified = verify_message(envelope, TrustRegistry, KEYRING)
    assert verified == Verified(payload=_registry(), signer="signer-a", key_id=GOLDEN_KEY_ID)


def test_pae_lengths_count_utf8_bytes() -> None:
    assert pae("ทดสอบ", b"") == b"DSSEv1 15 " + "ทดสอบ".encode() + b" 0 "


def test_envelope_survives_the_wire() -> None:
    wire = sign_message(_registry(), KEY).SerializeToString()
    verified = verify_message(Envelope.FromString(wire), TrustRegistry, KEYRING)
    assert verified.payload.federation_id == "fed-test"


def test_signed_as_one_type_fails_as_another() -> None:
    envelope = sign_message(_registry(), KEY)
    with pytest.raises(Unauthenticated) as error:
        verify_message(envelope, Participant, KEYRING)
    assert _reason(error) == "WRONG_PAYLOAD_TYPE"


def test_relabelled_type_fails_signature() -> None:
    # An attacker relabels a signed registry as a Participant: the type now matches,
    # but the signature covered the old type, so it must not verify.
    envelope = sign_message(_registry(), KEY)
    envelope.payload_type = "fedscore.v1.Participant"
    with pytest.raises(Unauthenticated) as error:
        verify_message(envelope, Participant, KEYRING)
    assert _reason(error) == "BAD_SIGNATURE"


@pytest.mark.parametrize("field", ["payload", "signature"])
def test_flipped_bit_fails(field: str) -> None:
    original = sign_message(_registry(), KEY)
    for index in range(len(getattr(original, field))):
        envelope = Envelope()
        envelope.CopyFrom(original)
        setattr(envelope, field, _flip(getattr(original, field), index))
        with pytest.raises(Unauthenticated) as error:
            verify_message(envelope, TrustRegistry, KEYRING)
        assert _reason(error) == "BAD_SIGNATURE"


def test_flipped_bit_in_type_fails() -> None:
    original = sign_bytes("application/x-test", b"hello", KEY)
    for index in range(len(original.payload_type)):
        flipped_type = _flip(original.payload_type.encode(), index).decode()
        envelope = Envelope()
        envelope.CopyFrom(original)
        envelope.payload_type = flipped_type
        with pytest.raises(Unauthenticated) as error:
            verify_bytes(envelope, "application/x-test", KEYRING)
        assert _reason(error) == "WRONG_PAYLOAD_TYPE"
        with pytest.raises(Unauthenticated) as error:
            verify_bytes(envelope, flipped_type, KEYRING)
        assert _reason(error) == "BAD_SIGNATURE"


def test_unknown_signer_fails() -> None:
    envelope = sign_message(_registry(), OTHER_KEY)
    with pytest.raises(Unauthenticated) as error:
        verify_message(envelope, TrustRegistry, KEYRING)
    assert _reason(error) == "UNKNOWN_SIGNER"


def test_key_id_swapped_to_a_trusted_key_fails() -> None:
    # Claiming a trusted key id does not help: the signature is checked with that key.
    envelope = sign_message(_registry(), OTHER_KEY)
    envelope.key_id = KEY.key_id
    with pytest.raises(Unauthenticated) as error:
        verify_message(envelope, TrustRegistry, KEYRING)
    assert _reason(error) == "BAD_SIGNATURE"


@pytest.mark.parametrize("blank", ["signature", "key_id"])
def test_unsigned_fails(blank: str) -> None:
    envelope = sign_message(_registry(), KEY)
    envelope.ClearField(blank)
    with pytest.raises(Unauthenticated) as error:
        verify_message(envelope, TrustRegistry, KEYRING)
    assert _reason(error) == "UNSIGNED"


def test_type_is_checked_before_signer() -> None:
    envelope = sign_message(_registry(), OTHER_KEY)
    with pytest.raises(Unauthenticated) as error:
        verify_message(envelope, Participant, KEYRING)
    assert _reason(error) == "WRONG_PAYLOAD_TYPE"


def test_malformed_payload_is_refused_after_verifying() -> None:
    # Validly signed bytes that are not a TrustRegistry: a truncated length-delimited field.
    envelope = sign_bytes("fedscore.v1.TrustRegistry", b"\x0a\x05ab", KEY)
    with pytest.raises(InvalidArgument) as error:
        verify_message(envelope, TrustRegistry, KEYRING)
    assert _reason(error) == "MALFORMED_PAYLOAD"


def test_empty_payload_type_cannot_be_signed() -> None:
    with pytest.raises(InvalidArgument):
        sign_bytes("", b"x", KEY)


@given(payload_type=st.text(min_size=1, max_size=40), payload=st.binary(max_size=256))
def test_sign_then_verify_round_trip(payload_type: str, payload: bytes) -> None:
    envelope = sign_bytes(payload_type, payload, KEY)
    verified = verify_bytes(envelope, payload_type, KEYRING)
    assert verified.payload == payload
    assert verified.signer == "signer-a"
    assert verified.key_id == KEY.key_id
