"""Shared set-up of the statistics tests: federations with demo records, and ground truth.

`stats_federation` builds a local federation (fast key derivation), optionally re-signs its
policy with other statistics (as the policy authority would, with its offline key), writes
the demo generator's export files and ingests them. The ground-truth functions read those
export files again and count with plain Python and the policy's tables, never through the
node's SQL, so a test comparing them checks the federation end to end.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from consent import server as consent_server
from coordinator import server as coordinator_server
from fedscore.apps.demo_data import DemoData, generate, read_rows
from fedscore.apps.federation import init_federation
from fedscore.runtime.org_paths import FederationPaths, OrgPaths
from fedscore.runtime.party import load_party, read_passphrase
from fedscore.v1.trust_pb2 import Role
from helper import server as helper_server
from keys.keyfile import load_secrets
from keys.shares import ShareSource
from node import server as node_server
from node.ingest import ingest_file
from node.store import NodeStore
from policies.loader import canonical_json, parse_policy
from policies.model import Policy
from policies.signing import sign_policy
from policies.vocabulary import DOMAINS, NATIONAL

PARTICIPATION = "participation-by-domain-and-area"
BANDS = "yearly-points-in-bands"
QUERIES = "score-queries-by-purpose-and-month"

Statistics = dict[str, Any]


def resign_policy(root: Path, change: Callable[[Statistics], None]) -> Policy:
    """Change the policy's statistics table and sign it again with the authority's key."""
    paths = FederationPaths(root)
    document = parse_policy(json.loads(paths.policy_json.read_text("utf-8"))).document
    change(document["statistics"])
    policy = parse_policy(document)
    authority = paths.org("policy-authority")
    key = load_secrets(authority.key, read_passphrase(authority.root)).signing_key
    paths.policy_json.write_text(canonical_json(policy.document), "utf-8")
    signed = sign_policy(policy, key).SerializeToString()
    # Delivered to every organisation before its server starts (as a bundle would).
    for org in sorted(paths.orgs.iterdir()):
        OrgPaths(org).policy_signed.write_bytes(signed)
    return policy


def generous(epsilon: float, budget: float) -> Callable[[Statistics], None]:
    """Every release spends `epsilon`; each dataset may spend `budget` a year."""

    def change(statistics: Statistics) -> None:
        statistics["budget_epsilon_per_year"] = budget
        for release in statistics["releases"]:
            release["epsilon"] = epsilon

    return change


@dataclass
class StatsFederation:
    root: Path
    policy: Policy
    data: DemoData
    agencies: list[str] = field(default_factory=list)


# The `new_stats_federation` fixture: stats_federation's options, under the test's tmp_path.
NewStatsFederation = Callable[..., StatsFederation]


def stats_federation(
    root: Path,
    *,
    agencies: int = 3,
    citizens: int = 300,
    seed: int = 11,
    change: Callable[[Statistics], None] | None = None,
) -> StatsFederation:
    layout = init_federation(root, agencies, fast_kdf=True)
    policy = resign_policy(root, change) if change else load_party(root, "regulator").policy
    data = generate(root / "data", policy, layout.agencies, citizens, seed=seed)
    for agency, path in data.files.items():
        party = load_party(root, agency)
        store = NodeStore(party.db_url)
        try:
            ingest_file(store, path, policy, agency, party.secrets.pseudonym_key)
        finally:
            store.dispose()
    return StatsFederation(root, policy, data, list(layout.agencies))


@dataclass
class Servers:
    consent: consent_server.Running
    nodes: dict[str, node_server.Running]
    coordinator: coordinator_server.Running | None
    helper: helper_server.Running | None = None

    async def stop_helper(self) -> None:
        if self.helper is not None:
            await self.helper.stop()
            self.helper = None


def helper_id(root: Path) -> str:
    """The federation's helper aggregator (docs/adr/0019)."""
    [helper] = load_party(root, "regulator").trust.by_role(Role.ROLE_HELPER_AGGREGATOR)
    return helper.id


@asynccontextmanager
async def servers(
    root: Path,
    *,
    coordinator: bool = False,
    helper: bool = True,
    share_source: Callable[[], ShareSource] | None = None,
) -> AsyncIterator[Servers]:
    """The consent registry, every agency node and the helper aggregator (unless not asked;
    and the coordinator if asked), in-process. `share_source` makes each node's source of
    share randomness (a seeded one fixes what one aggregator receives)."""
    consent = await consent_server.start(load_party(root, "consent-registry"))
    running = Servers(consent, {}, None)
    try:
        for agency in load_party(root, "regulator").policy.agencies:
            source = share_source() if share_source is not None else None
            running.nodes[agency] = await node_server.start(
                load_party(root, agency), share_source=source
            )
        if helper:
            running.helper = await helper_server.start(load_party(root, helper_id(root)))
        if coordinator:
            running.coordinator = await coordinator_server.start(load_party(root, "coordinator"))
        yield running
    finally:
        if running.coordinator is not None:
            await running.coordinator.stop()
        await running.stop_helper()
        for node in running.nodes.values():
            await node.stop()
        await consent.stop()


# --- ground truth, from the export files -------------------------------------------------


def _counted_rows(fed: StatsFederation, agency: str, year: int) -> list[dict[str, str]]:
    rows = []
    for row in read_rows(fed.data.files[agency]):
        indicator = fed.policy.indicators[row["indicator"]]
        if not row["certifier"] and indicator.requires_certification:
            continue
        if date.fromisoformat(row["occurred_at"][:10]).year != year:
            continue
        rows.append(row)
    return rows


def truth_participation(fed: StatsFederation, bound: int, year: int) -> dict[str, int]:
    """Per "domain/province" cell: people with a counted record there, once per agency,
    each in at most `bound` cells per agency: their earliest, ties in domain order with
    nationwide before provinces."""
    domain_order = list(DOMAINS)
    counts: dict[str, int] = defaultdict(int)
    for agency in fed.agencies:
        first_day: dict[str, dict[tuple[int, bool, str], str]] = defaultdict(dict)
        for row in _counted_rows(fed, agency, year):
            indicator = fed.policy.indicators[row["indicator"]]
            area = NATIONAL if indicator.scope == NATIONAL else indicator.scope[:2]
            cell = (domain_order.index(indicator.domain), area != NATIONAL, area)
            day = row["occurred_at"][:10]
            seen = first_day[row["national_id"]]
            seen[cell] = min(day, seen.get(cell, day))
        for cells in first_day.values():
            for cell in sorted(cells, key=lambda c: (cells[c], c))[:bound]:
                counts[f"{domain_order[cell[0]]}/{cell[2]}"] += 1
    return dict(counts)


def truth_bands(fed: StatsFederation, thresholds: list[int], year: int) -> list[int]:
    """People per band of the points earned at each agency (once per agency)."""
    counts = [0] * len(thresholds)
    for agency in fed.agencies:
        occurrences: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for row in _counted_rows(fed, agency, year):
            occurrences[row["national_id"]][row["indicator"]] += int(row["quantity"])
        for per_code in occurrences.values():
            total = 0
            for code, n in per_code.items():
                indicator = fed.policy.indicators[code]
                earned = indicator.points * n
                cap = indicator.cap_per_year
                total += earned if cap is None else min(earned, cap)
            band = max(i for i, low in enumerate(thresholds) if total >= low)
            counts[band] += 1
    return counts
