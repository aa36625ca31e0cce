"""Does a consent receipt hold any part of a national ID? Shared by the consent tests.

"A part" is the ID's last four or more digits (any longer tail contains the last four, so
searching for those four is enough). Every string field and the serialized bytes are
searched. Two fields are random hex drawn by the registry (`receipt_id`, `token_id`;
the token id also appears inside `how_to_withdraw`), where four given digits turn up by
chance about once in 2,300 ids; they are blanked before the search and judged across
several receipts instead: a leak would put the digits in every one, chance in all of
three has odds of about 1 in 10^10.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from fedscore.v1.consent_pb2 import ConsentReceipt

TAIL_DIGITS = 4
_RANDOM_ID = re.compile(r"[0-9a-f]{32}")


def string_fields(receipt: ConsentReceipt) -> list[tuple[str, str]]:
    """(field name, value) of every string in the receipt, repeated fields included."""
    found: list[tuple[str, str]] = []
    for field, value in receipt.ListFields():
        if field.type != field.TYPE_STRING:
            continue
        values = list(value) if field.is_repeated else [value]
        found.extend((field.name, text) for text in values)
    return found


def leaks(receipt: ConsentReceipt, national_id: str) -> list[str]:
    """Names of the fields (and "serialized") holding the ID's tail outside the random ids."""
    tail = national_id[-TAIL_DIGITS:]
    random_ids = [receipt.receipt_id, receipt.token_id]
    found: list[str] = []
    for name, text in string_fields(receipt):
        for random_id in random_ids:
            text = text.replace(random_id, "\0") if random_id else text
        if tail in text:
            found.append(name)
    raw = receipt.SerializeToString()
    for random_id in random_ids:
        raw = raw.replace(random_id.encode(), b"\0") if random_id else raw
    if tail.encode() in raw:
        found.append("serialized")
    return found


def assert_no_part_of_national_id(receipts: Sequence[ConsentReceipt], national_id: str) -> None:
    """Fail if any receipt holds the ID's last four or more digits (see the module doc)."""
    tail = national_id[-TAIL_DIGITS:]
    for receipt in receipts:
        assert leaks(receipt, national_id) == [], receipt
        assert _RANDOM_ID.fullmatch(receipt.receipt_id), receipt.receipt_id
        assert _RANDOM_ID.fullmatch(receipt.token_id), receipt.token_id
    for name in ("receipt_id", "token_id"):
        # A grant and its withdrawal share a token id: judge the distinct values.
        distinct = {getattr(receipt, name) for receipt in receipts}
        assert len(distinct) >= 3, f"{name}: judged across at least three distinct values"
        assert not all(tail in value for value in distinct), (name, distinct)
