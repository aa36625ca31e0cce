"""A purpose may name only relying parties the trust registry lists in an admissible sector."""

from __future__ import annotations

from typing import Any

import pytest

from fedscore.errors import PolicyError
from fedscore.v1.trust_pb2 import Sector
from policies.defaults import default_policy_document
from policies.loader import parse_policy
from policies.model import Policy
from policies.sectors import (
    CITIZEN_AGENT,
    CIVIL_SOCIETY,
    COMMERCIAL,
    KNOWN,
    MAY_ASK,
    PUBLIC_SERVICE,
    UNSPECIFIED,
    check_sectors,
)

DEFAULT = parse_policy(default_policy_document(3))
ADMITTED = {"ptt": COMMERCIAL, "citizen-portal": CITIZEN_AGENT}
FUEL = "purposes.ptt-fuel-discount.relying_parties: "
SELF_VIEW = "purposes.self-view.relying_parties: "


def _with_utility() -> Policy:
    """The default policy where a utility (PEA) may also ask for the fuel-discount band."""
    document: dict[str, Any] = default_policy_document(3)
    document["relying_parties"].append(
        {"id": "pea", "name": "Provincial Electricity Authority", "name_th": "การไฟฟ้าส่วนภูมิภาค"}
    )
    fuel = next(p for p in document["purposes"] if p["id"] == "ptt-fuel-discount")
    fuel["relying_parties"] = ["ptt", "pea"]
    return parse_policy(document)


UTILITY = _with_utility()

ACCEPTED = [
    ("default sectors", DEFAULT, ADMITTED),
    ("civil society", DEFAULT, {**ADMITTED, "ptt": CIVIL_SOCIETY}),
    ("every rp may be a citizen agent", DEFAULT, {**ADMITTED, "ptt": CITIZEN_AGENT}),
    ("unused rp in any sector", DEFAULT, {**ADMITTED, "pea": PUBLIC_SERVICE}),
    ("two commercial rps", UTILITY, {**ADMITTED, "pea": COMMERCIAL}),
]

REFUSED = [
    ("public service, declared not", DEFAULT, {**ADMITTED, "ptt": PUBLIC_SERVICE},
     "PURPOSE_GATES_PUBLIC_SERVICE", FUEL + "relying party 'ptt' is a public-service provider"),
    ("citizen portal as public service", DEFAULT, {**ADMITTED, "citizen-portal": PUBLIC_SERVICE},
     "PURPOSE_GATES_PUBLIC_SERVICE", SELF_VIEW + "relying party 'citizen-portal'"),
    ("second rp a utility", UTILITY, {**ADMITTED, "pea": PUBLIC_SERVICE},
     "PURPOSE_GATES_PUBLIC_SERVICE", FUEL + "relying party 'pea' is a public-service provider"),
    ("rp not in the registry", DEFAULT, {"citizen-portal": CITIZEN_AGENT},
     "RELYING_PARTY_NOT_REGISTERED", FUEL + "relying party 'ptt' is not listed"),
    ("second rp not in the registry", UTILITY, ADMITTED,
     "RELYING_PARTY_NOT_REGISTERED", FUEL + "relying party 'pea' is not listed"),
    ("empty registry", DEFAULT, {},
     "RELYING_PARTY_NOT_REGISTERED", FUEL + "relying party 'ptt'"),
    ("unspecified sector", DEFAULT, {**ADMITTED, "ptt": UNSPECIFIED},
     "SECTOR_UNDECLARED", FUEL + "relying party 'ptt' has no sector"),
    ("unknown sector", DEFAULT, {**ADMITTED, "ptt": "SECTOR_99"},
     "UNKNOWN_SECTOR", FUEL + "relying party 'ptt' has sector 'SECTOR_99'"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "policy", "sectors"), ACCEPTED, ids=[c[0] for c in ACCEPTED])
def test_admissible_sectors_are_accepted(
    case: str, policy: Policy, sectors: dict[str, str]
) -> None:
    check_sectors(policy, sectors)


@pytest.mark.parametrize(
    ("case", "policy", "sectors", "reason", "message"), REFUSED, ids=[c[0] for c in REFUSED]
)
def test_refused_whatever_the_purpose_declares(
    case: str, policy: Policy, sectors: dict[str, str], reason: str, message: str
) -> None:
    # Every purpose declares that it does not gate a basic right or public service.
    assert not any(p.basic_right_or_public_service for p in policy.purposes.values())
    with pytest.raises(PolicyError) as refused:
        check_sectors(policy, sectors)
    assert refused.value.reason == reason, case
    assert refused.value.message.startswith(message), refused.value.message


def test_sector_names_are_the_wire_enum_names() -> None:
    assert frozenset(Sector.keys()) == KNOWN
    assert MAY_ASK == {"SECTOR_COMMERCIAL", "SECTOR_CIVIL_SOCIETY", "SECTOR_CITIZEN_AGENT"}


def test_the_check_imports_no_wire_or_network_code() -> None:
    import ast
    import inspect

    import policies.sectors

    tree = ast.parse(inspect.getsource(policies.sectors))
    imported = {
        node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
    } | {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    assert imported <= {"__future__", "collections.abc", "fedscore.errors", "policies.model"}
