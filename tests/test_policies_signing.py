"""Policies signed by the policy authority and verified before they are parsed."""

from __future__ import annotations

import json

import pytest

from fedscore.errors import PolicyError, Unauthenticated
from fedscore.v1.envelope_pb2 import Envelope
from keys.envelope import sign_bytes
from keys.keyring import Keyring
from keys.signing import SigningKey
from policies.defaults import default_policy_document
from policies.loader import parse_policy
from policies.signing import POLICY_PAYLOAD_TYPE, sign_policy, verify_policy

AUTHORITY = SigningKey.from_seed(bytes(range(32)))
KEYRING = Keyring.of({"policy-authority": AUTHORITY.verify_key}, purpose="policy")
POLICY = parse_policy(default_policy_document(3))


def test_round_trip() -> None:
    envelope = sign_policy(POLICY, AUTHORITY)
    assert envelope.payload_type == POLICY_PAYLOAD_TYPE == "application/vnd.fedscore.policy+json"
    assert envelope.payload == POLICY.canonical
    assert envelope.key_id == AUTHORITY.key_id
    carried = Envelope.FromString(envelope.SerializeToString())
    verified = verify_policy(carried, KEYRING)
    assert verified == POLICY
    assert verified.content_hash == POLICY.content_hash


def test_signing_is_deterministic() -> None:
    first = sign_policy(POLICY, AUTHORITY).SerializeToString()
    assert sign_policy(POLICY, AUTHORITY).SerializeToString() == first


def test_tampered_payload_fails() -> None:
    envelope = sign_policy(POLICY, AUTHORITY)
    tampered = POLICY.canonical.replace(b'"points":70', b'"points":700', 1)
    assert tampered != POLICY.canonical
    envelope.payload = tampered
    with pytest.raises(Unauthenticated) as refused:
        verify_policy(envelope, KEYRING)
    assert refused.value.reason == "BAD_SIGNATURE"


def test_unknown_signer_fails() -> None:
    envelope = sign_policy(POLICY, SigningKey.generate())
    with pytest.raises(Unauthenticated) as refused:
        verify_policy(envelope, KEYRING)
    assert refused.value.reason == "UNKNOWN_SIGNER"


def test_other_payload_type_fails() -> None:
    envelope = sign_bytes("fedscore.v1.ConsentToken", POLICY.canonical, AUTHORITY)
    with pytest.raises(Unauthenticated) as refused:
        verify_policy(envelope, KEYRING)
    assert refused.value.reason == "WRONG_PAYLOAD_TYPE"


def test_signed_but_not_canonical_fails() -> None:
    pretty = json.dumps(POLICY.document, indent=2).encode()
    envelope = sign_bytes(POLICY_PAYLOAD_TYPE, pretty, AUTHORITY)
    with pytest.raises(PolicyError) as refused:
        verify_policy(envelope, KEYRING)
    assert refused.value.reason == "NON_CANONICAL_POLICY"


def test_signed_but_invalid_policy_fails() -> None:
    document = POLICY.document
    document["purposes"][0]["basic_right_or_public_service"] = True
    payload = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    envelope = sign_bytes(POLICY_PAYLOAD_TYPE, payload, AUTHORITY)
    with pytest.raises(PolicyError, match="basic_right_or_public_service"):
        verify_policy(envelope, KEYRING)
