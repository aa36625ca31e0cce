"""Agency pseudonyms: how a node names a person without storing the national ID.

pseudonym = hex(HMAC-SHA256(agency_pseudonym_key, canonical 13-digit national ID))

Invariants:
- The ID is validated and canonicalised first, so "1-2345-..." and "12345..." give the
  same pseudonym, and a mistyped ID never silently creates a new person.
- Without an agency's key, its pseudonyms cannot be linked to IDs or to another
  agency's pseudonyms for the same person.
"""

from __future__ import annotations

import hmac

from fedscore.errors import InvalidArgument
from keys.national_id import validate_national_id

MIN_KEY_BYTES = 16


def pseudonym(key: bytes, national_id: str) -> str:
    """Hex HMAC-SHA256 of the canonical national ID under the agency's pseudonym key."""
    if len(key) < MIN_KEY_BYTES:
        raise InvalidArgument(
            f"pseudonym key must be at least {MIN_KEY_BYTES} bytes", reason="BAD_KEY"
        )
    canonical = validate_national_id(national_id)
    return hmac.digest(key, canonical.encode("ascii"), "sha256").hex()
