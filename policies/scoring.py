"""One agency's contribution to a person's yearly score, as a pure function.

Invariants: only the agency's own indicators count; each indicator's points are
capped at its `cap_per_year`; the result is clamped to the person range, so a node
never answers more than a whole score could be.
"""

from __future__ import annotations

from collections.abc import Mapping

from fedscore.errors import InvalidArgument
from policies.model import Policy


def contribution(policy: Policy, agency_id: str, quantities: Mapping[str, int]) -> int:
    """Points `agency_id` contributes for `quantities` (indicator code -> occurrences in a year)."""
    own = {indicator.code: indicator for indicator in policy.indicators_for(agency_id)}
    total = 0
    for code, quantity in quantities.items():
        indicator = own.get(code)
        if indicator is None:
            whose = policy.indicators.get(code)
            detail = f"recorded by {whose.agency!r}" if whose else "not in this policy"
            raise InvalidArgument(
                f"indicator {code!r} is {detail}, not an indicator of {agency_id!r}",
                "UNKNOWN_INDICATOR",
            )
        if isinstance(quantity, bool) or not isinstance(quantity, int) or quantity < 0:
            raise InvalidArgument(
                f"indicator {code!r}: occurrences must be a whole number >= 0, got {quantity!r}",
                "INVALID_QUANTITY",
            )
        total += indicator.points_for(quantity)
    return policy.clamp(total)
