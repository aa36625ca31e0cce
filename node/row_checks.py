"""Checking one row of an agency's export before it becomes a stored record.

Invariants:
- A national ID is read, validated (13 digits, mod-11 check digit) and turned into the
  agency's pseudonym at once; it is never stored, logged, or echoed in a problem text
  (no problem text repeats a cell's value, except a policy-shaped indicator code).
- An indicator must be one of this agency's own in the policy; a date falls between
  `EARLIEST_YEAR` and now; a quantity is a whole number in its range; a certifier is
  short and never holds a 13-digit number.
- A value seen before in the same file (an ID, a date, a quantity, a certifier) is looked
  up in a bounded per-file cache of its validated form instead of being validated again;
  a cache never holds a value that failed validation.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import datetime, tzinfo
from typing import Any

from fedscore.errors import InvalidArgument
from keys.pseudonym import pseudonym
from node.export_rows import SAFE_CODE
from node.store import (
    record_key_secret,
    stored_record_key,
)
from policies.model import Policy

MIN_QUANTITY, MAX_QUANTITY = 1, 1000
EARLIEST_YEAR = 2000
MAX_CERTIFIER_CHARS = 200
# Distinct values a per-file cache keeps before it starts over (bounded memory).
CACHE_LIMIT = 262_144
# Thirteen digits (\d includes Thai digits), possibly hyphenated as printed on ID cards.
_ID_LIKE = re.compile(r"\d(?:[- ]?\d){12}")
# The stored columns, in the order `RowChecker.record` builds them.
RECORD_COLUMNS = (
    "record_key",
    "pseudonym",
    "indicator",
    "occurred_at",
    "quantity",
    "certifier",
    "certified",
    "import_id",
)


class RowProblem(Exception):
    """One row's first problem; its text never contains the row's values."""


class ValueCache:
    """Validated forms of raw text cells seen before in this file; bounded, then restarted.

    Only text keys are cached: a JSON `true` hashes like `1` and must not hit the entry
    of the text "1"; values that failed validation are never stored.
    """

    def __init__(self, validate: Callable[[Any], Any], limit: int = CACHE_LIMIT) -> None:
        self.known: dict[str, Any] = {}
        self._validate = validate
        self._limit = limit

    def miss(self, value: Any) -> Any:
        checked = self._validate(value)  # raises RowProblem
        if type(value) is str:
            if len(self.known) >= self._limit:
                self.known.clear()
            self.known[value] = checked
        return checked


class RowChecker:
    """Validates one row's cells; the national ID leaves it only as the agency's pseudonym."""

    def __init__(self, policy: Policy, agency_id: str, pseudonym_key: bytes, now: float) -> None:
        self.own = frozenset(i.code for i in policy.indicators_for(agency_id))
        self.known = policy.indicators
        # Indicators whose records count only when a certifier confirmed them.
        self.needs_certificate = frozenset(
            code
            for code, indicator in policy.indicators.items()
            if indicator.requires_certification
        )
        self.agency_id = agency_id
        self.zone: tzinfo = policy.score.zone
        self.earliest = int(datetime(EARLIEST_YEAR, 1, 1, tzinfo=self.zone).timestamp())
        self.now = now
        self.pseudonym_key = pseudonym_key
        self.record_secret = record_key_secret(pseudonym_key)
        # Exports repeat people, dates, quantities and certifiers many times.
        self.subjects = ValueCache(self._subject)
        self.indicators = ValueCache(self._indicator)
        self.instants = ValueCache(self._occurred_at)
        self.quantities = ValueCache(self._quantity)
        self.certifiers = ValueCache(self._certifier)

    def check(self, cells: Sequence[Any]) -> tuple[bytes, str, int, int, str]:
        """(pseudonym bytes, indicator, occurred_at, quantity, certifier); raises `RowProblem`."""
        national_id, indicator, occurred_at, quantity, certifier = cells
        subjects, indicators = self.subjects.known, self.indicators.known
        instants, quantities = self.instants.known, self.quantities.known
        certifiers = self.certifiers.known
        # A hit is a value validated before; anything else (new, or not text) is validated.
        try:
            return (
                subjects[national_id]
                if national_id in subjects
                else self.subjects.miss(national_id),
                indicators[indicator]
                if indicator in indicators
                else self.indicators.miss(indicator),
                instants[occurred_at]
                if occurred_at in instants
                else self.instants.miss(occurred_at),
                quantities[quantity]
                if type(quantity) is str and quantity in quantities
                else self.quantities.miss(quantity),
                certifiers[certifier]
                if certifier in certifiers
                else self.certifiers.miss(certifier),
            )
        except TypeError:  # a JSON list or object cannot be a cache key: validate it plainly
            return (
                self.subjects.miss(national_id),
                self.indicators.miss(indicator),
                self.instants.miss(occurred_at),
                self.quantities.miss(quantity),
                self.certifiers.miss(certifier),
            )

    def record(self, cells: Sequence[Any], import_id: int) -> tuple[Any, ...]:
        """The stored row (columns in `RECORD_COLUMNS` order) of one valid record."""
        subject, indicator, occurred_at, quantity, certifier = self.check(cells)
        key = stored_record_key(
            self.record_secret, subject, indicator, occurred_at, quantity, certifier
        )
        certified = bool(certifier)
        return (key, subject, indicator, occurred_at, quantity, certifier, certified, import_id)

    def _subject(self, value: Any) -> bytes:
        if not isinstance(value, str):
            raise RowProblem("national_id must be text")
        try:
            # Validates the ID (13 digits, check digit) before hashing it.
            return bytes.fromhex(pseudonym(self.pseudonym_key, value))
        except InvalidArgument as exc:
            if exc.reason != "INVALID_NATIONAL_ID":
                raise
            # The validator's message describes the problem without repeating the number.
            raise RowProblem(exc.message) from None

    def _indicator(self, value: Any) -> str:
        code = value.strip() if isinstance(value, str) else ""
        if code in self.own:
            return code
        shown = repr(code) if SAFE_CODE.fullmatch(code) else "(value not shown)"
        if code in self.known:
            owner = self.known[code].agency
            raise RowProblem(
                f"indicator {shown} is recorded by agency {owner!r}, not {self.agency_id!r}"
            )
        raise RowProblem(f"indicator {shown} is not in the policy")

    def _instant(self, text: str) -> int | None:
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=self.zone)  # an agency's local time
        return int(moment.timestamp())

    def _occurred_at(self, value: Any) -> int:
        instant = self._instant(value.strip()) if isinstance(value, str) else None
        if instant is None:
            raise RowProblem("occurred_at must be an ISO date or date-time")
        if instant > self.now:
            raise RowProblem("occurred_at is in the future")
        if instant < self.earliest:
            raise RowProblem(f"occurred_at is before {EARLIEST_YEAR}-01-01")
        return instant

    @staticmethod
    def _quantity(value: Any) -> int:
        if isinstance(value, str):
            text = value.strip()
            number = int(text) if text.isascii() and text.isdigit() else None
        elif isinstance(value, int) and not isinstance(value, bool):
            number = value
        else:
            number = None
        if number is None or not MIN_QUANTITY <= number <= MAX_QUANTITY:
            raise RowProblem(
                f"quantity must be a whole number from {MIN_QUANTITY} to {MAX_QUANTITY}"
            )
        return number

    @staticmethod
    def _certifier(value: Any) -> str:
        if value is None:
            return ""
        if not isinstance(value, str):
            raise RowProblem("certifier must be text")
        text = value.strip()
        if len(text) > MAX_CERTIFIER_CHARS:
            raise RowProblem(f"certifier is longer than {MAX_CERTIFIER_CHARS} characters")
        if "\ufffd" in text or not text.isprintable():
            raise RowProblem("certifier has characters that are not printable UTF-8")
        if _ID_LIKE.search(text):
            # A certifier names a unit, never a person by ID: that would store a raw ID.
            raise RowProblem("certifier must not contain a 13-digit number")
        return text
