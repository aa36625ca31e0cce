"""What a release's `release.json` says: the definition, the counting, the mechanism, who
added the noise, and the noisy values (the format `fedscore.release.v1`).

Pure: built from the policy, the definition, OpenDP's calibration and the noisy values
only; an exact count never reaches this module.
"""

from __future__ import annotations

from typing import Any

from fedscore.noise import MECHANISM, NoisyHistogram, opendp_version
from fedscore.runtime.budget import BudgetStatus
from policies.model import Policy
from policies.releases import bins, participants
from policies.statistics import PARTICIPATION, POINTS_IN_BANDS, ReleaseDefinition

NEIGHBOURING = {
    "person": "add or remove one person, with all their records at every agency",
    "consent-token": "add or remove one consent token, with all its score queries",
}
TWO_SERVER = (
    "two-server: each agency node splits its bounded histogram into additive shares mod "
    "2^64, one for the coordinator and one sealed to the helper aggregator; the helper adds "
    "the noise to the sum of its shares; no party holds an exact count"
)
ONE_SERVER = "the coordinator counts its own query log and adds the noise"


def counting(definition: ReleaseDefinition) -> str:
    bound = definition.contribution_bound
    if definition.kind == PARTICIPATION:
        return (
            "people with at least one counted record in the cell during the year, counted once "
            "at each agency holding such records (agencies cannot link one person's records); "
            f"at each agency a person counts in at most {bound} cells, their earliest of the year"
        )
    if definition.kind == POINTS_IN_BANDS:
        return (
            "people counted once at each agency holding counted records for them, in the band "
            "of the points earned at that agency in the year (no party can compute a person's "
            "federated total for statistics)"
        )
    return (
        "score queries the coordinator issued, per purpose and month; each consent token "
        f"counts at most {bound} queries in the year (its earliest)"
    )


def draft(
    policy: Policy,
    coordinator: str,
    definition: ReleaseDefinition,
    year: int,
    noise: NoisyHistogram,
    noisy: list[int],
    release_id: str,
    query_id: str,
    noised_by: str,
) -> dict[str, Any]:
    """The release document before its budget, time and file hashes are added."""
    cells = bins(policy, definition)
    return {
        "format": "fedscore.release.v1",
        "release_id": release_id,
        "release": definition.name,
        "year": year,
        "definition": definition.document(),
        "counting": counting(definition),
        "mechanism": {
            "name": MECHANISM,
            "library": f"opendp {opendp_version()}",
            "scale": noise.scale,
            "l1_sensitivity": noise.sensitivity,
            "neighbouring": NEIGHBOURING[definition.privacy_unit],
            "aggregation": TWO_SERVER if definition.node_side else ONE_SERVER,
        },
        "epsilon_spent": noise.epsilon,
        "delta": 0.0,
        "participants": list(participants(policy)) if definition.node_side else [],
        "query_id": query_id,
        "policy_hash": policy.content_hash,
        "coordinator": coordinator,
        "noised_by": noised_by,
        "values": [
            {
                "bin": cell.key,
                "dimensions": dict(cell.dimensions),
                "label": cell.label,
                "label_th": cell.label_th,
                "value": value,
            }
            for cell, value in zip(cells, noisy, strict=True)
        ],
    }


def budget_json(definition: ReleaseDefinition, year: int, status: BudgetStatus) -> dict[str, Any]:
    """The release document's "budget": what is left of its dataset's yearly budget."""
    return {"dataset": definition.dataset, "year": year, **status.to_json()}
