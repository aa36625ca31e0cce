"""Thai 13-digit identification numbers (citizens, long-term residents, juristic persons).

The last digit is a mod-11 check digit over the first twelve:
    check = (11 - (sum(d[i] * (13 - i) for i in 0..11) mod 11)) mod 10

Invariants:
- `validate_national_id` returns the canonical form: exactly 13 ASCII digits. Hyphens and
  spaces between digits (as printed on ID cards, "1-2345-67890-12-1") and Thai digits
  are accepted and normalised, so one person always maps to one pseudonym.
- Every refusal is `InvalidArgument INVALID_NATIONAL_ID` with a message that says what
  is wrong, and never echoes the number itself (it is personal data).
"""

from __future__ import annotations

import operator
import re

from fedscore.errors import InvalidArgument

LENGTH = 13
_THAI_DIGITS = str.maketrans("๐๑๒๓๔๕๖๗๘๙", "0123456789")
_SEPARATORS = re.compile(r"(?<=\d)[- ](?=\d)")
_DIGITS = re.compile(r"[0-9]*")


def _invalid(problem: str) -> InvalidArgument:
    return InvalidArgument(f"national ID {problem}", reason="INVALID_NATIONAL_ID")


_WEIGHTS = tuple(range(LENGTH, 1, -1))


def _check_digit(first12: str) -> int:
    total: int = sum(map(operator.mul, map(int, first12), _WEIGHTS))
    return (11 - total % 11) % 10


def _digits_only(text: str) -> str:
    if text.isascii() and text.isdigit():  # already canonical: nothing to normalise
        return text
    digits = _SEPARATORS.sub("", text.strip().translate(_THAI_DIGITS))
    if not _DIGITS.fullmatch(digits):
        raise _invalid("must contain only digits")
    return digits


def with_check_digit(first12: str) -> str:
    """The 13-digit ID made of `first12` and its check digit."""
    digits = _digits_only(first12)
    if len(digits) != LENGTH - 1:
        raise _invalid(f"prefix must be {LENGTH - 1} digits, got {len(digits)}")
    return digits + str(_check_digit(digits))


def validate_national_id(text: str) -> str:
    """The canonical 13-digit form of `text`; `InvalidArgument INVALID_NATIONAL_ID` if invalid."""
    digits = _digits_only(text)
    if len(digits) != LENGTH:
        raise _invalid(f"must be {LENGTH} digits, got {len(digits)}")
    expected = _check_digit(digits[:-1])
    if int(digits[-1]) != expected:
        raise _invalid(f"check digit is {digits[-1]}, expected {expected}")
    return digits
