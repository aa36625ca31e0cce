"""Agency pseudonyms: keyed, canonical, unlinkable across agencies."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from fedscore.errors import InvalidArgument
from keys.pseudonym import pseudonym

KEY_A = b"\x0a" * 32
KEY_B = b"\x0b" * 32
NATIONAL_ID = "1101700203468"


def test_pseudonym_is_hmac_of_the_canonical_id() -> None:
    expected = hmac.new(KEY_A, NATIONAL_ID.encode(), hashlib.sha256).hexdigest()
    assert pseudonym(KEY_A, NATIONAL_ID) == expected
    assert pseudonym(KEY_A, "1-1017-00203-46-8") == expected


def test_agencies_get_unrelated_pseudonyms() -> None:
    assert pseudonym(KEY_A, NATIONAL_ID) != pseudonym(KEY_B, NATIONAL_ID)
    assert NATIONAL_ID not in pseudonym(KEY_A, NATIONAL_ID)


def test_invalid_id_gets_no_pseudonym() -> None:
    with pytest.raises(InvalidArgument) as error:
        pseudonym(KEY_A, "1101700203467")
    assert error.value.reason == "INVALID_NATIONAL_ID"


def test_short_key_is_refused() -> None:
    with pytest.raises(InvalidArgument):
        pseudonym(b"short", NATIONAL_ID)
