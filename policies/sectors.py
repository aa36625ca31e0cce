"""Which relying parties a purpose may name, judged by their sector in the trust registry.

A purpose's own `basic_right_or_public_service = false` is a declaration by the policy
committee; the loader refuses a purpose that declares otherwise, but a declaration can be
wrong or hostile. This check adds the fact the committee does not control: the sector the
federation authority assigned each relying party when it admitted it (signed into the
trust registry by the federation root).

Invariants:
- `check_sectors` is pure: it takes the policy and a mapping relying-party id -> sector
  name (the `fedscore.v1.Sector` enum name, e.g. "SECTOR_COMMERCIAL"), does no I/O and
  imports no wire or network code.
- It is an allow-list: a purpose may name only relying parties the registry lists (as a
  relying party or citizen portal) with a sector in `MAY_ASK`. Anything else is refused,
  whatever the purpose declares: a public-service provider (`PURPOSE_GATES_PUBLIC_SERVICE`),
  a party the registry does not list in an asking role (`RELYING_PARTY_NOT_REGISTERED`),
  an unspecified sector (`SECTOR_UNDECLARED`) or one this version does not know
  (`UNKNOWN_SECTOR`).
- Every refusal is a `PolicyError` whose message starts with the field path
  (`purposes.<id>.relying_parties: ...`), like the loader's.
"""

from __future__ import annotations

from collections.abc import Mapping

from fedscore.errors import PolicyError
from policies.model import Policy

UNSPECIFIED = "SECTOR_UNSPECIFIED"
COMMERCIAL = "SECTOR_COMMERCIAL"
CIVIL_SOCIETY = "SECTOR_CIVIL_SOCIETY"
CITIZEN_AGENT = "SECTOR_CITIZEN_AGENT"
PUBLIC_SERVICE = "SECTOR_PUBLIC_SERVICE"
KNOWN = frozenset({UNSPECIFIED, COMMERCIAL, CIVIL_SOCIETY, CITIZEN_AGENT, PUBLIC_SERVICE})
# Sectors whose parties may be a purpose's relying party.
MAY_ASK = frozenset({COMMERCIAL, CIVIL_SOCIETY, CITIZEN_AGENT})


def _refusal(sector: str | None) -> tuple[str, str] | None:
    """(reason, why) if a relying party in `sector` may not ask; None if it may."""
    if sector is None:
        return (
            "RELYING_PARTY_NOT_REGISTERED",
            "is not listed in the trust registry as a relying party or citizen portal",
        )
    if sector in MAY_ASK:
        return None
    if sector == PUBLIC_SERVICE:
        return (
            "PURPOSE_GATES_PUBLIC_SERVICE",
            f"is a public-service provider in the trust registry ({sector}); no purpose may "
            "gate a basic right or public service, whatever it declares",
        )
    if sector == UNSPECIFIED:
        return (
            "SECTOR_UNDECLARED",
            "has no sector in the trust registry; the federation authority must assign one "
            "before it may serve a purpose",
        )
    return ("UNKNOWN_SECTOR", f"has sector {sector!r}, which this version does not know")


def check_sectors(policy: Policy, sectors: Mapping[str, str]) -> None:
    """Refuse `policy` if any purpose names a relying party that may not ask.

    `sectors` maps each relying party and citizen portal the trust registry lists (valid
    now) to its sector name; `keys.registry.TrustView.relying_party_sectors()` makes it.
    """
    for purpose in policy.purposes.values():
        for party in purpose.relying_parties:
            refused = _refusal(sectors.get(party))
            if refused is not None:
                reason, why = refused
                raise PolicyError(
                    f"purposes.{purpose.id}.relying_parties: relying party {party!r} {why}",
                    reason=reason,
                )
