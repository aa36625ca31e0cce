"""The trust registry: the root-signed list of participants, and a view of it at one time.

Invariants:
- A `TrustView` is made by `keys.registry_chain.ChainLink.view`, only for a registry
  version that verified in the chain (signed by a threshold of root custodians) and whose
  `not_after` has not passed (expiry is `Unauthenticated REGISTRY_EXPIRED`); signature
  and chain problems are refused there, before any view exists. A malformed or
  contradictory participant entry is `Unauthenticated BAD_REGISTRY`.
- The view is fixed at the time `now` it was verified for. Participants whose own window
  (`not_before <= now <= not_after`) does not contain `now` are invisible: they are in no
  keyring, no role list, and `participant()` does not find them.
- Rotation lists one participant id twice with overlapping windows; keyrings then hold
  both keys, and `participant()` returns the entry that started most recently. Entries of
  one id valid at the same time must agree on role and sector (`BAD_REGISTRY` otherwise).
- A participant's `Sector` is what the federation authority found at admission; it is
  signed by the root like the rest of the entry. `relying_party_sectors()` lists the
  sector (by its enum name, e.g. "SECTOR_COMMERCIAL") of every relying party and citizen
  portal valid now: the input of `policies.sectors.check_sectors`.
- Keyrings are built per role set, so a node key can never verify what only the
  coordinator, the consent registry or the policy authority may sign. A view builds each
  role set's keyring once and hands out that same immutable keyring afterwards.
"""

from __future__ import annotations

from typing import TypeVar

from fedscore.errors import InvalidArgument, NotFound, Unauthenticated
from fedscore.v1.trust_pb2 import Participant, Role, Sector, TrustRegistry
from keys.keyring import (
    AgencyKeys,
    CoordinatorKeys,
    HelperKeys,
    Keyring,
    LogKeys,
    PolicyKeys,
    RegistryKeys,
    RequesterKeys,
)
from keys.signing import VerifyKey

KEY_BYTES = 32
# Roles that may be named as a purpose's relying party.
ASKING_ROLES = frozenset({Role.ROLE_RELYING_PARTY, Role.ROLE_CITIZEN_PORTAL})


def build_participant(
    participant_id: str,
    role: Role,
    signing_key: VerifyKey,
    box_public: bytes,
    not_before: int,
    not_after: int,
    *,
    endpoint: str = "",
    display_name: str = "",
    sector: Sector = Sector.SECTOR_UNSPECIFIED,
) -> Participant:
    """A registry entry for one participant."""
    if not participant_id:
        raise InvalidArgument("participant id must not be empty", reason="BAD_REGISTRY")
    if not_after < not_before:
        raise InvalidArgument(
            f"participant {participant_id!r}: not_after {not_after} is before "
            f"not_before {not_before}",
            reason="BAD_REGISTRY",
        )
    return Participant(
        id=participant_id,
        role=role,
        display_name=display_name or participant_id,
        endpoint=endpoint,
        signing_public_key=signing_key.encode(),
        box_public_key=bytes(box_public),
        not_before=not_before,
        not_after=not_after,
        sector=sector,
    )


def _check_entry(participant: Participant) -> None:
    if not participant.id:
        raise Unauthenticated("registry lists a participant without an id", "BAD_REGISTRY")
    if len(participant.signing_public_key) != KEY_BYTES:
        raise Unauthenticated(
            f"participant {participant.id!r} has a malformed signing key", "BAD_REGISTRY"
        )
    # An empty box key is allowed: key-only parties (policy authority) receive no seals.
    if len(participant.box_public_key) not in (0, KEY_BYTES):
        raise Unauthenticated(
            f"participant {participant.id!r} has a malformed box key", "BAD_REGISTRY"
        )


def _sector_name(sector: int) -> str:
    # A newer registry may carry a sector this version does not know; it keeps a name
    # (which no check admits) instead of failing the whole registry.
    return Sector.Name(sector) if sector in Sector.values() else f"SECTOR_{sector}"


def listed_sectors(registry: TrustRegistry) -> dict[str, str]:
    """Sector name of every relying party and citizen portal a version lists at all."""
    return {p.id: _sector_name(p.sector) for p in registry.participants if p.role in ASKING_ROLES}


K = TypeVar("K", bound=Keyring)


class TrustView:
    """A verified trust registry as seen at time `now` (Unix seconds)."""

    __slots__ = ("_current", "_keyrings", "now", "registry")

    def __init__(self, registry: TrustRegistry, now: int) -> None:
        # Only keys.registry_chain calls it: `ChainLink.view`, and its check of a new
        # version's entries, both after the version's signatures verified.
        self.registry = registry
        self.now = now
        current: dict[str, Participant] = {}
        key_owner: dict[bytes, str] = {}
        for participant in registry.participants:
            _check_entry(participant)
            owner = key_owner.setdefault(participant.signing_public_key, participant.id)
            if owner != participant.id:
                # A shared key would let one party sign as another.
                raise Unauthenticated(
                    f"participants {owner!r} and {participant.id!r} share a signing key",
                    "BAD_REGISTRY",
                )
            if not participant.not_before <= now <= participant.not_after:
                continue
            known = current.get(participant.id)
            if known is not None and known.role != participant.role:
                raise Unauthenticated(
                    f"participant {participant.id!r} is listed with two roles", "BAD_REGISTRY"
                )
            if known is not None and known.sector != participant.sector:
                raise Unauthenticated(
                    f"participant {participant.id!r} is listed with two sectors", "BAD_REGISTRY"
                )
            if known is None or participant.not_before >= known.not_before:
                current[participant.id] = participant
        self._current = current
        # Keyrings are immutable and the view is fixed at `now`: each role set is built once.
        # Looked up by the roles as asked (a tuple) first, then by their set.
        self._keyrings: dict[tuple[type[Keyring], frozenset[Role]], Keyring] = {}

    @property
    def federation_id(self) -> str:
        return str(self.registry.federation_id)

    @property
    def version(self) -> int:
        return int(self.registry.version)

    def participant(self, participant_id: str) -> Participant:
        """The entry for `participant_id` valid now; `NotFound UNKNOWN_PARTICIPANT` otherwise."""
        try:
            return self._current[participant_id]
        except KeyError:
            raise NotFound(
                f"participant {participant_id!r} is not in the trust registry valid at {self.now}",
                reason="UNKNOWN_PARTICIPANT",
            ) from None

    def by_role(self, role: Role) -> list[Participant]:
        """Participants with `role` valid now, one entry per id, sorted by id."""
        return [p for _, p in sorted(self._current.items()) if p.role == role]

    def sector(self, participant_id: str) -> Sector:
        """The sector the registry assigns `participant_id` (`NotFound UNKNOWN_PARTICIPANT`)."""
        return self.participant(participant_id).sector

    def relying_party_sectors(self) -> dict[str, str]:
        """Sector name of every relying party and citizen portal valid now, by id."""
        return {
            pid: _sector_name(p.sector)
            for pid, p in sorted(self._current.items())
            if p.role in ASKING_ROLES
        }

    def box_public(self, participant_id: str) -> bytes:
        """The participant's X25519 public key; `NotFound NO_BOX_KEY` if it lists none."""
        box_public = bytes(self.participant(participant_id).box_public_key)
        if not box_public:
            raise NotFound(f"participant {participant_id!r} has no box key", reason="NO_BOX_KEY")
        return box_public

    def verify_key(self, participant_id: str) -> VerifyKey:
        """The signing key `participant_id` uses now (the most recent during rotation)."""
        return VerifyKey.from_bytes(self.participant(participant_id).signing_public_key)

    def registry_keys(self) -> RegistryKeys:
        """The consent registry's keys valid now."""
        return self._keyring(RegistryKeys, Role.ROLE_CONSENT_REGISTRY)

    def coordinator_keys(self) -> CoordinatorKeys:
        """The coordinator's keys valid now."""
        return self._keyring(CoordinatorKeys, Role.ROLE_COORDINATOR)

    def agency_keys(self) -> AgencyKeys:
        """Every agency node's keys valid now."""
        return self._keyring(AgencyKeys, Role.ROLE_AGENCY)

    def helper_keys(self) -> HelperKeys:
        """The helper aggregators' keys valid now."""
        return self._keyring(HelperKeys, Role.ROLE_HELPER_AGGREGATOR)

    def requester_keys(self) -> RequesterKeys:
        """The keys valid now of those who may ask for a score: relying parties, portals."""
        return self._keyring(RequesterKeys, Role.ROLE_RELYING_PARTY, Role.ROLE_CITIZEN_PORTAL)

    def policy_keys(self) -> PolicyKeys:
        """The policy authority's keys valid now."""
        return self._keyring(PolicyKeys, Role.ROLE_POLICY_AUTHORITY)

    def log_keys(self, role: Role) -> LogKeys:
        """The keys valid now of every party in `role`, for their signed checkpoints."""
        return self._keyring(LogKeys, role)

    def _keyring(self, kind: type[K], *roles: Role) -> K:
        """Every key valid now of participants with one of `roles` (all keys during rotation)."""
        wanted = (kind, frozenset(roles))
        cached = self._keyrings.get(wanted)
        if cached is not None:
            assert isinstance(cached, kind)
            return cached
        entries = [
            (p.id, VerifyKey.from_bytes(p.signing_public_key))
            for p in self.registry.participants
            if p.role in wanted[1] and p.not_before <= self.now <= p.not_after
        ]
        purpose = "+".join(sorted(Role.Name(role) for role in wanted[1]))
        keyring = kind(entries, purpose=purpose)
        self._keyrings[wanted] = keyring
        return keyring

    def __repr__(self) -> str:
        return (
            f"TrustView({self.federation_id!r} v{self.version} at {self.now}, "
            f"{len(self._current)} participants)"
        )
