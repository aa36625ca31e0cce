"""The default policy shipped with fedscore, and its cut-down versions for demos.

`DEFAULT_AGENCIES` lists the agencies of `defaults/national.toml` in file order; the
first three (Thai Red Cross, skill development, Chuang Pao SAO) are the demo's.
`default_policy_document(n)` keeps the first n agencies and their indicators and
makes them the participant set of every purpose, so every default purpose always
asks every agency of the federation (no subsets, which would allow differencing).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fedscore.errors import InvalidArgument
from policies.loader import load_policy, parse_policy

DEFAULT_AGENCIES: tuple[str, ...] = (
    "trc",
    "dsd",
    "chuangpao",
    "moph",
    "moe",
    "msdhs",
    "dcce",
    "ddpm",
    "dla",
    "dlt",
)
# Secure aggregation hides one agency's contribution only among at least two.
MIN_AGENCIES = 2
# The statistics release of the national default policy that the demo and
# `fedscore stats demo` publish.
DEMO_RELEASE = "participation-by-domain-and-area"


def default_policy_path() -> Path:
    """The national default policy file (it includes the local policy files)."""
    return Path(__file__).parent / "defaults" / "national.toml"


def default_policy_document(agency_count: int) -> dict[str, Any]:
    """The default policy cut to its first `agency_count` agencies, as a canonical document."""
    if not MIN_AGENCIES <= agency_count <= len(DEFAULT_AGENCIES):
        raise InvalidArgument(
            f"--agencies must be {MIN_AGENCIES} to {len(DEFAULT_AGENCIES)} (the default "
            f"policy's agencies), got {agency_count}",
            "AGENCIES_OUT_OF_RANGE",
        )
    document = load_policy(default_policy_path()).document
    kept = document["agencies"][:agency_count]
    kept_ids = [a["id"] for a in kept]
    document["agencies"] = kept
    document["indicators"] = [i for i in document["indicators"] if i["agency"] in kept_ids]
    for purpose in document["purposes"]:
        purpose["participants"] = list(kept_ids)
    return parse_policy(document).document
