"""Keyrings: which keys may sign a given kind of object, and whose they are.

A keyring is built for one purpose (for example the coordinator's keys, to verify a
contribution query) from the verified trust registry, never from keys an object
carries itself. Because verifiers take a keyring rather than "any known key", a node key
can never verify what only the registry or the coordinator may sign.

A keyring's type says whose keys it holds (`RegistryKeys`, `CoordinatorKeys`,
`AgencyKeys`, `HelperKeys`, `RequesterKeys`, `PolicyKeys`, `RootKeys`, `LogKeys`). Each
signed object verifies only under its own type (`fedscore.protocol.signed`), so verifying, say, an
answer batch with the coordinator's keys is a type error, not a runtime surprise.

Invariants:
- Keys are looked up by key id; a key id maps to exactly one participant.
- A participant may hold several keys at once (rotation with overlapping windows).
- `lookup` raises `Unauthenticated("UNKNOWN_SIGNER")`; it never returns None.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Self

from fedscore.errors import InvalidArgument, Unauthenticated
from keys.signing import VerifyKey


class Keyring:
    """Key id -> (participant id, verify key), for one purpose."""

    __slots__ = ("__weakref__", "_by_key_id", "purpose")

    def __init__(self, entries: Iterable[tuple[str, VerifyKey]], purpose: str = "") -> None:
        by_key_id: dict[str, tuple[str, VerifyKey]] = {}
        for participant_id, verify_key in entries:
            known = by_key_id.get(verify_key.key_id)
            if known is not None and known[0] != participant_id:
                # Two parties sharing a key would make every signature ambiguous.
                raise InvalidArgument(
                    f"key {verify_key.key_id} is listed for both {known[0]!r} and "
                    f"{participant_id!r}",
                    reason="DUPLICATE_KEY",
                )
            by_key_id[verify_key.key_id] = (participant_id, verify_key)
        self._by_key_id = by_key_id
        self.purpose = purpose

    @classmethod
    def of(cls, keys: Mapping[str, VerifyKey], purpose: str = "") -> Self:
        """A keyring with one key per participant id."""
        return cls(keys.items(), purpose=purpose)

    def lookup(self, key_id: str) -> tuple[str, VerifyKey]:
        """(participant id, verify key) for `key_id`; `Unauthenticated UNKNOWN_SIGNER` if absent."""
        try:
            return self._by_key_id[key_id]
        except KeyError:
            where = f" for {self.purpose}" if self.purpose else ""
            raise Unauthenticated(
                f"key {key_id!r} is not trusted{where}", reason="UNKNOWN_SIGNER"
            ) from None

    def participants(self) -> frozenset[str]:
        return frozenset(participant for participant, _ in self._by_key_id.values())

    def __contains__(self, key_id: object) -> bool:
        return key_id in self._by_key_id

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_key_id)

    def __len__(self) -> int:
        return len(self._by_key_id)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.purpose!r}, {sorted(self.participants())})"


class RegistryKeys(Keyring):
    """The consent registry's: consent tokens, revocation notices, status lists, receipts."""

    __slots__ = ()


class CoordinatorKeys(Keyring):
    """The coordinator's: question batches, statistics questions, log promises, score
    results and release bundles."""

    __slots__ = ()


class AgencyKeys(Keyring):
    """The agency nodes': answer batches and statistics answers."""

    __slots__ = ()


class HelperKeys(Keyring):
    """The helper aggregator's: its noisy share sums for a statistics release."""

    __slots__ = ()


class RequesterKeys(Keyring):
    """Relying parties' and citizen portals': a signed request for a score."""

    __slots__ = ()


class PolicyKeys(Keyring):
    """The policy authority's: the signed policy."""

    __slots__ = ()


class RootKeys(Keyring):
    """The federation root's: the trust registry."""

    __slots__ = ()


class LogKeys(Keyring):
    """The parties of one role whose logs are audited: their signed checkpoints."""

    __slots__ = ()
