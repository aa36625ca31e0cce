"""Signing and verifying policies as DSSE envelopes from the policy authority.

Invariants:
- The signed payload is exactly `policy.canonical` (canonical JSON of the document),
  typed `application/vnd.fedscore.policy+json`, so a policy signature can never be
  replayed as any protobuf message and vice versa.
- `verify_policy` verifies the signature before reading a byte of the payload, then
  parses it, and refuses a payload that is not the canonical form of the policy it
  describes: the signed bytes, their hash and `content_hash` are one and the same.
"""

from __future__ import annotations

from fedscore.errors import PolicyError
from fedscore.v1.envelope_pb2 import Envelope
from keys.envelope import sign_bytes, verify_bytes
from keys.keyring import PolicyKeys
from keys.signing import SigningKey
from policies.loader import content_hash_of, document_from_json, parse_policy
from policies.model import Policy

POLICY_PAYLOAD_TYPE = "application/vnd.fedscore.policy+json"


def sign_policy(policy: Policy, key: SigningKey) -> Envelope:
    """An envelope over the policy's canonical JSON, signed by `key`."""
    return sign_bytes(POLICY_PAYLOAD_TYPE, policy.canonical, key)


def verify_policy(envelope: Envelope, keyring: PolicyKeys) -> Policy:
    """The policy in `envelope` if a key in `keyring` signed it; raise otherwise."""
    payload = verify_bytes(envelope, POLICY_PAYLOAD_TYPE, keyring).payload
    policy = parse_policy(document_from_json(payload, "signed policy"))
    # Re-serializing must give back the signed bytes, or the version a query names
    # (content_hash) would differ from what the authority actually signed.
    if policy.canonical != payload or policy.content_hash != content_hash_of(payload):
        raise PolicyError("signed policy: payload is not in canonical form", "NON_CANONICAL_POLICY")
    return policy
