"""Typed reading of one table of a policy document, naming the field path in every refusal.

A `Table` is told its allowed keys up front, so a typo is reported as the unknown key
it is rather than as a confusing "missing" error for the key that was meant.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from fedscore.errors import PolicyError

_MISSING: Any = object()


def refuse(path: str, problem: str) -> PolicyError:
    return PolicyError(f"{path}: {problem}")


def json_value(value: object, path: str) -> Any:
    """`value` if it is plain JSON data (the canonical form must be able to hold it)."""
    if value is None or isinstance(value, bool | str | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise refuse(path, "must be a finite number")
        return value
    if isinstance(value, list):
        return [json_value(v, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, v in value.items():
            if not isinstance(key, str):
                raise refuse(path, f"key {key!r} is not a string")
            out[key] = json_value(v, f"{path}.{key}")
        return out
    raise refuse(path, f"{type(value).__name__} values cannot be part of a policy")


class Table:
    """One mapping of the document at `path`, with only `allowed` keys."""

    def __init__(self, raw: object, path: str, allowed: frozenset[str]) -> None:
        if not isinstance(raw, Mapping):
            raise refuse(path, "must be a table")
        self.path = path
        self._raw: Mapping[str, object] = raw
        for key in raw:
            if key not in allowed:
                raise refuse(self.at(str(key)), "unknown key")

    def at(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def has(self, key: str) -> bool:
        return key in self._raw

    def _get(self, key: str, default: Any) -> Any:
        if key in self._raw:
            return self._raw[key]
        if default is _MISSING:
            raise refuse(self.at(key), "required")
        return default

    def text(
        self, key: str, *, pattern: re.Pattern[str] | None = None, default: Any = _MISSING
    ) -> str:
        value = self._get(key, default)
        if not isinstance(value, str) or not value.strip():
            raise refuse(self.at(key), "must be a non-empty string")
        if pattern is not None and not pattern.fullmatch(value):
            raise refuse(self.at(key), f"{value!r} does not match {pattern.pattern}")
        return value

    def integer(
        self,
        key: str,
        *,
        minimum: int | None = None,
        maximum: int | None = None,
        default: Any = _MISSING,
    ) -> int:
        value = self._get(key, default)
        # bool is an int in Python; `points = true` is a typo, not 1 point.
        if isinstance(value, bool) or not isinstance(value, int):
            raise refuse(self.at(key), "must be an integer")
        if minimum is not None and value < minimum:
            raise refuse(self.at(key), f"must be >= {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise refuse(self.at(key), f"must be <= {maximum}, got {value}")
        return value

    def optional_integer(self, key: str, *, minimum: int | None = None) -> int | None:
        if key not in self._raw:
            return None
        return self.integer(key, minimum=minimum)

    def flag(self, key: str, *, default: Any = _MISSING) -> bool:
        value = self._get(key, default)
        if not isinstance(value, bool):
            raise refuse(self.at(key), "must be true or false")
        return value

    def items(self, key: str, *, default: Any = _MISSING) -> list[object]:
        value = self._get(key, default)
        if not isinstance(value, list):
            raise refuse(self.at(key), "must be an array")
        return list(value)

    def texts(self, key: str, *, pattern: re.Pattern[str] | None = None) -> tuple[str, ...]:
        values = self.items(key)
        out: list[str] = []
        for i, value in enumerate(values):
            where = f"{self.at(key)}[{i}]"
            if not isinstance(value, str) or (pattern is not None and not pattern.fullmatch(value)):
                raise refuse(where, f"{value!r} is not a valid identifier")
            if value in out:
                raise refuse(where, f"{value!r} is listed twice")
            out.append(value)
        return tuple(out)

    def raw(self, key: str, *, default: Any = _MISSING) -> object:
        return self._get(key, default)
