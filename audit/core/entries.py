"""What a log entry is, before any storage: its fields, its leaf bytes, and what it may hold.

Invariants:
- Leaf data is the canonical JSON (sorted keys, compact, UTF-8) of
  {"body", "index", "kind", "logged_at", "origin"}, where `body` is the stored canonical
  JSON text of the fields. Binding index and origin into the leaf stops an entry from
  being replayed at another position or in another party's log.
- Bodies never hold personal data or secrets of the query path: a field whose key names
  a national ID, a pseudonym, a contribution or a masked value (at any depth) is refused,
  as is a string holding a stand-alone 13-digit number (`check_fields`).
- A kind is a short name matching `KIND` (the kinds themselves: `audit.core.kinds`).

Pure: the store (`audit.store.log`), the servicer and the regulator's client share it.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from fedscore.errors import InvalidArgument

# Normalised (lower case, no "_" or "-") key fragments an entry body may never contain.
DENIED_KEYS = ("nationalid", "pseudonym", "contribution", "maskedvalue")
# A 13-digit number standing alone (plain or as printed on ID cards, 1-2345-67890-12-3).
# Runs of digits inside hex or base64 (bounded by letters) are hashes, not IDs.
_ID_LIKE = re.compile(r"(?<![0-9A-Za-z])(?:\d{13}|\d-\d{4}-\d{5}-\d{2}-\d)(?![0-9A-Za-z])")
KIND = re.compile(r"[A-Za-z][A-Za-z0-9_.:-]{0,63}")


@dataclass(frozen=True)
class LogRef:
    """Where an event landed in the log."""

    index: int
    leaf_hash: bytes
    logged_at: int


@dataclass(frozen=True)
class LogEntry:
    """An entry as stored; `body` is canonical JSON text of its fields."""

    index: int
    kind: str
    body: str
    leaf_hash: bytes
    logged_at: int

    @property
    def fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = json.loads(self.body)
        return fields

    def leaf_data(self, origin: str) -> bytes:
        return leaf_data(origin, self.index, self.kind, self.body, self.logged_at)


def canonical_json(value: Any) -> str:
    """Sorted keys, no whitespace, UTF-8 text; refuses NaN and infinities."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


# What json.dumps(..., ensure_ascii=False) writes for a string, inside a dict or not.
_json_string: Callable[[str], str] = json.encoder.encode_basestring


def leaf_data(origin: str, index: int, kind: str, body: str, logged_at: int) -> bytes:
    """The bytes an entry's leaf hash covers (see the module docstring).

    Exactly `canonical_json` of the five fields, written out directly (it is computed for
    every entry appended and every entry an auditor or the checkpoint signer re-hashes).
    """
    if not (
        type(index) is int
        and type(logged_at) is int
        and type(origin) is str
        and type(kind) is str
        and type(body) is str
    ):
        leaf = {
            "body": body,
            "index": index,
            "kind": kind,
            "logged_at": logged_at,
            "origin": origin,
        }
        return canonical_json(leaf).encode("utf-8")
    return (
        f'{{"body":{_json_string(body)},"index":{index},"kind":{_json_string(kind)},'
        f'"logged_at":{logged_at},"origin":{_json_string(origin)}}}'
    ).encode()


def _normalised(key: str) -> str:
    return key.lower().replace("_", "").replace("-", "")


@functools.lru_cache(maxsize=4096)
def _denied_key(key: str) -> bool:
    """Whether a field name is one a log entry never holds (names repeat: cached)."""
    normalised = _normalised(key)
    return any(denied in normalised for denied in DENIED_KEYS)


_SCALARS = (int, bool, float, type(None))


def _plainly_fine(value: object) -> bool:
    """A plain scalar, or a plain string holding no ID-like number (no recursion needed)."""
    if type(value) is str:
        return _ID_LIKE.search(value) is None
    return type(value) in _SCALARS


def check_fields(value: object, path: str) -> None:
    # Exact dict and list types are tested first: the ABC isinstance checks are slow.
    kind = type(value)
    if kind is dict or (kind is not list and isinstance(value, Mapping)):
        for key, inner in value.items():  # type: ignore[attr-defined]
            if not isinstance(key, str):
                raise InvalidArgument(f"{path}: keys must be strings", "BAD_LOG_FIELD")
            if _denied_key(key):
                raise InvalidArgument(
                    f"{path}.{key}: a log entry never holds this field", "DENIED_LOG_FIELD"
                )
            # Plain scalars need no recursion (and no path string); all else is checked below.
            if not _plainly_fine(inner):
                check_fields(inner, f"{path}.{key}")
    elif kind is list or isinstance(value, list | tuple):
        for i, inner in enumerate(value):  # type: ignore[arg-type]
            if not _plainly_fine(inner):
                check_fields(inner, f"{path}[{i}]")
    elif isinstance(value, str):
        if _ID_LIKE.search(value):
            # The value itself is not echoed: it may be a national ID.
            raise InvalidArgument(
                f"{path}: a log entry never holds a 13-digit number", "DENIED_LOG_FIELD"
            )
    elif value is not None and not isinstance(value, bool | int | float):
        raise InvalidArgument(
            f"{path}: {type(value).__name__} is not a JSON value", "BAD_LOG_FIELD"
        )
