"""Thai 13-digit IDs: the mod-11 check digit, and messages that say what is wrong."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedscore.errors import InvalidArgument
from keys.national_id import validate_national_id, with_check_digit

# Worked by hand: weights 13..2 over 1,1,0,1,7,0,0,2,0,3,4,6 sum to 146; 146 mod 11 = 3;
# (11 - 3) mod 10 = 8.
VALID = "1101700203468"
twelve_digits = st.text(alphabet="0123456789", min_size=12, max_size=12)


def _remainder(first12: str) -> int:
    return sum(int(d) * (13 - i) for i, d in enumerate(first12)) % 11


def test_known_valid_id() -> None:
    assert with_check_digit(VALID[:12]) == VALID
    assert validate_national_id(VALID) == VALID


@pytest.mark.parametrize(
    "printed",
    ["1-1017-00203-46-8", " 1101700203468 ", "1 1017 00203 46 8", "๑๑๐๑๗๐๐๒๐๓๔๖๘"],
)
def test_printed_forms_are_canonicalised(printed: str) -> None:
    assert validate_national_id(printed) == VALID


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "must be 13 digits, got 0"),
        ("110170020346", "must be 13 digits, got 12"),
        ("11017002034680", "must be 13 digits, got 14"),
        ("1101700203467", "check digit is 7, expected 8"),
        ("110170020346X", "must contain only digits"),
        ("1101700203468\n1", "must contain only digits"),
        ("1--101700203468", "must contain only digits"),
        ("١١٠١٧٠٠٢٠٣٤٦٨", "must contain only digits"),  # Arabic-Indic digits: not ours
    ],
)
def test_invalid_ids_say_what_is_wrong(text: str, problem: str) -> None:
    with pytest.raises(InvalidArgument) as error:
        validate_national_id(text)
    assert error.value.reason == "INVALID_NATIONAL_ID"
    assert problem in error.value.message
    if text:
        assert text not in error.value.message  # personal data is never echoed


def test_prefix_must_be_twelve_digits() -> None:
    with pytest.raises(InvalidArgument) as error:
        with_check_digit("12345")
    assert "prefix must be 12 digits, got 5" in error.value.message


@given(twelve_digits)
def test_with_check_digit_always_validates(first12: str) -> None:
    full = with_check_digit(first12)
    assert full[:12] == first12
    assert validate_national_id(full) == full


@given(twelve_digits, st.integers(0, 12), st.integers(1, 9))
def test_single_digit_changes(first12: str, position: int, delta: int) -> None:
    full = with_check_digit(first12)
    changed = full[:position] + str((int(full[position]) + delta) % 10) + full[position + 1 :]
    if position == 12:
        # A changed check digit is always caught.
        with pytest.raises(InvalidArgument):
            validate_national_id(changed)
        return
    # The Thai checksum has two known blind spots, and only these: the third digit has
    # weight 11 (0 mod 11), and remainders 0 and 10 share check digit 1.
    blind = position == 2 or {_remainder(first12), _remainder(changed[:12])} == {0, 10}
    if blind:
        assert validate_national_id(changed) == changed
    else:
        with pytest.raises(InvalidArgument):
            validate_national_id(changed)
