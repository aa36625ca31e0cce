"""Publishing one differentially private release: budget, histogram, noise, bundle, log.

`publish_release` runs as the coordinator (its key, its database, its channels):
 1. the definition is looked up (UNKNOWN_RELEASE) and OpenDP calibrates its noise; the
    epsilon to spend is OpenDP's privacy map at the release's L1 sensitivity;
 2. the epsilon is RESERVED: one committed transaction spends it in the ledger (a
    conditional update, which loses cleanly to a concurrent release: BUDGET_EXHAUSTED)
    under the release id, before any node is asked. Nodes charge their own ledgers as
    they answer, so two publishers racing for the last of a budget must be decided
    before either asks, or each could win at some nodes and lose at others and both fail;
 3. the exact histogram is computed (nodes' masked sums, or the coordinator's own log),
    noise is added and values clamped at zero, and the chart and CSV are drawn from the
    noisy values, all in memory;
 4. "statistics_released" is appended with the SHA-256 of release.json;
 5. only then is the signed bundle written to `releases/<id>/`.

Invariants:
- A refused release publishes nothing: no bundle, no "statistics_released"; its refusal is
  logged as "statistics_refused" with the reason, and its reservation is refunded in that
  same transaction: no exact histogram existed (nodes that answered keep their own charge).
- The exact histogram is a local variable of `publish_release`; it is never logged,
  stored, written to a file or put in an error.
- A crash or unexpected error after the reservation, or a bundle that cannot be written,
  leaves the epsilon spent (the safe direction): nothing unaccounted is ever published.
  The ledger may then count more than the log's "statistics_released" entries, never less.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from audit.core import kinds
from audit.core.fields import DATASET, EPSILON_SPENT, QUERY_ID, REASON, RELEASE, YEAR
from audit.store.log import EventLog
from coordinator.bundle import (
    RELEASE_CSV,
    RELEASE_JSON,
    RELEASE_PNG,
    canonical_bytes,
    release_csv,
    sha256_of,
    write_bundle,
)
from coordinator.chart import render_chart
from coordinator.fanout import NodeChannels
from coordinator.histograms import (
    STATISTICS_DEADLINE_SECONDS,
    StatisticsAsker,
    federated_histogram,
    query_log_histogram,
)
from fedscore.errors import FedscoreError, InvalidArgument
from fedscore.noise import MECHANISM, NoisyHistogram, histogram_mechanism, opendp_version
from fedscore.runtime.budget import BudgetStatus, PrivacyLedger, nano_up
from fedscore.runtime.db import open_engine
from fedscore.runtime.live_trust import LiveTrust
from fedscore.runtime.party import Party
from fedscore.v1.trust_pb2 import Role
from keys.registry import TrustView
from policies.model import Policy
from policies.releases import bins, l1_sensitivity, participants
from policies.statistics import PARTICIPATION, POINTS_IN_BANDS, ReleaseDefinition

MIN_YEAR, MAX_YEAR = 1970, 9998
NEIGHBOURING = {
    "person": "add or remove one person, with all their records at every agency",
    "consent-token": "add or remove one consent token, with all its score queries",
}


def unix_now() -> int:
    return int(time.time())


@dataclass
class Publisher:
    """The coordinator acting as the statistics publisher (opened once, then reused)."""

    id: str
    asker: StatisticsAsker
    policy: Policy
    engine: Engine
    log: EventLog
    ledger: PrivacyLedger
    releases_dir: Path
    clock: Callable[[], int] = field(default=unix_now)

    async def close(self) -> None:
        await self.asker.channels.close()
        self.engine.dispose()

    def follow(self, live: LiveTrust) -> None:
        """Publish under what `live` trusts from now on: the newest policy, the agencies'
        keys of the current view, the current signing key, channels to the agencies it
        lists (each swapped whole when it changes)."""

        def apply(view: TrustView, policy: Policy) -> None:
            self.asker.channels.follow(NodeChannels.endpoints_of(view))
            self.asker = replace(
                self.asker, signing_key=live.signing_key, agency_keyring=view.agency_keys()
            )
            self.policy = policy

        live.listen(apply)


def open_publisher(
    party: Party,
    *,
    deadline: float = STATISTICS_DEADLINE_SECONDS,
    clock: Callable[[], int] = unix_now,
    live: LiveTrust | None = None,
) -> Publisher:
    """The coordinator party's publisher: its database, log, ledger and node channels.

    Given the coordinator's `live` trust (a publisher inside the running server), it
    follows it; else it publishes under what the party's folder held when it was loaded
    (a one-off `fedscore stats publish`, which reads the chain the server stored).
    """
    if party.role != Role.ROLE_COORDINATOR:
        raise InvalidArgument(f"{party.id} is not the coordinator", reason="NOT_THE_COORDINATOR")
    engine = open_engine(party.db_url)
    log = EventLog(engine, party.id)
    view = live.view() if live is not None else party.trust
    asker = StatisticsAsker(
        coordinator=party.id,
        signing_key=live.signing_key if live is not None else party.signing_key,
        agency_keyring=view.agency_keys(),
        channels=NodeChannels.open(view, party.tls),
        log=log,
        deadline=deadline,
    )
    publisher = Publisher(
        id=party.id,
        asker=asker,
        policy=party.policy,
        engine=engine,
        log=log,
        ledger=PrivacyLedger(engine),
        releases_dir=party.paths.releases,
        clock=clock,
    )
    if live is not None:
        publisher.follow(live)
    return publisher


@dataclass(frozen=True)
class PublishedRelease:
    """A release whose bundle is written and whose spend is in the ledger."""

    release_id: str
    directory: Path
    document: dict[str, Any]
    budget: BudgetStatus

    @property
    def release_json(self) -> Path:
        return self.directory / RELEASE_JSON

    def summary(self) -> dict[str, Any]:
        return {
            "release_id": self.release_id,
            "release": str(self.release_json),
            "directory": str(self.directory),
            "epsilon_spent": self.document["epsilon_spent"],
            "budget_remaining": self.document["budget"]["remaining"],
            "bins": len(self.document["values"]),
        }


def _counting(definition: ReleaseDefinition) -> str:
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


def _draft(
    publisher: Publisher,
    definition: ReleaseDefinition,
    year: int,
    noise: NoisyHistogram,
    noisy: list[int],
    release_id: str,
    query_id: str,
) -> dict[str, Any]:
    cells = bins(publisher.policy, definition)
    return {
        "format": "fedscore.release.v1",
        "release_id": release_id,
        "release": definition.name,
        "year": year,
        "definition": definition.document(),
        "counting": _counting(definition),
        "mechanism": {
            "name": MECHANISM,
            "library": f"opendp {opendp_version()}",
            "scale": noise.scale,
            "l1_sensitivity": noise.sensitivity,
            "neighbouring": NEIGHBOURING[definition.privacy_unit],
        },
        "epsilon_spent": noise.epsilon,
        "delta": 0.0,
        "participants": list(participants(publisher.policy)) if definition.node_side else [],
        "query_id": query_id,
        "policy_hash": publisher.policy.content_hash,
        "coordinator": publisher.id,
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


def _budget_json(definition: ReleaseDefinition, year: int, status: BudgetStatus) -> dict[str, Any]:
    """The release document's "budget": what is left of its dataset's yearly budget."""
    return {"dataset": definition.dataset, "year": year, **status.to_json()}


def _year(policy: Policy, year: int | None, now: int) -> int:
    chosen = policy.current_year(now) if not year else year
    if not MIN_YEAR <= chosen <= MAX_YEAR:
        raise InvalidArgument(f"year {chosen} cannot hold records", reason="BAD_YEAR")
    return chosen


async def publish_release(
    publisher: Publisher, name: str, year: int | None = None
) -> PublishedRelease:
    """Publish release `name` for `year` (default: the current year) or raise its refusal."""
    now = publisher.clock()
    rules = publisher.policy.statistics_rules
    facts: dict[str, Any] = {RELEASE: name}
    try:
        definition = rules.release(name)
        year = _year(publisher.policy, year, now)
        facts[YEAR] = year
        noise = histogram_mechanism(
            l1_sensitivity(publisher.policy, definition), definition.epsilon
        )
        stamp = datetime.fromtimestamp(now, UTC).strftime("%Y%m%dT%H%M%SZ")
        release_id = f"{year}-{definition.name}-{stamp}-{secrets.token_hex(3)}"
        status = _reserve(publisher, definition, year, release_id, nano_up(noise.epsilon), now)
    except FedscoreError as error:
        publisher.log.append_now(kinds.STATISTICS_REFUSED, {REASON: error.reason, **facts})
        raise
    try:
        query_id = ""
        if definition.node_side:
            exact, query_id = await federated_histogram(
                publisher.asker, publisher.policy, definition, year, now
            )
        else:
            exact = query_log_histogram(publisher.engine, publisher.policy, definition, year)
    except FedscoreError as error:
        _refuse_reserved(publisher, release_id, error, facts)
        raise
    noisy = noise.release(exact)
    del exact  # from here on only noisy values exist
    document = _draft(publisher, definition, year, noise, noisy, release_id, query_id)
    files = {
        RELEASE_CSV: release_csv(release_id, document["values"]),
        RELEASE_PNG: render_chart(document),
    }
    published_at = publisher.clock()
    document["budget"] = _budget_json(definition, year, status)
    document["published_at"] = datetime.fromtimestamp(published_at, UTC).isoformat()
    document["files"] = {name: sha256_of(data) for name, data in files.items()}
    files[RELEASE_JSON] = canonical_bytes(document)
    publisher.log.append_now(
        kinds.STATISTICS_RELEASED,
        {
            "release_id": release_id,
            RELEASE: definition.name,
            DATASET: definition.dataset,
            YEAR: year,
            EPSILON_SPENT: noise.epsilon,
            "budget_remaining": document["budget"]["remaining"],
            "release_sha256": sha256_of(files[RELEASE_JSON]),
            "policy_hash": publisher.policy.content_hash,
            # The node-side statistics query this release charges for ("" if none):
            # the regulator matches every node's histogram answer to a charged release.
            QUERY_ID: query_id,
        },
        now=published_at,
    )
    directory = write_bundle(
        publisher.releases_dir, release_id, files, publisher.asker.signing_key, publisher.id
    )
    return PublishedRelease(release_id, directory, document, status)


def _reserve(
    publisher: Publisher,
    definition: ReleaseDefinition,
    year: int,
    release_id: str,
    cost_nano: int,
    now: int,
) -> BudgetStatus:
    """Spend the release's epsilon now, committed, before any node is asked.

    Two publishers racing for the last of a budget are thus decided here, by the ledger's
    conditional update: one is refused at once, and the nodes (which charge their own
    ledgers as they answer) never see two releases that cannot both fit.
    """
    with publisher.engine.begin() as connection:
        status = publisher.ledger.spend(
            connection,
            release_id=release_id,
            release=definition.name,
            dataset=definition.dataset,
            year=year,
            total_epsilon=publisher.policy.statistics_rules.budget(definition.dataset),
            cost_nano=cost_nano,
            now=now,
        )
    return status


def _refuse_reserved(
    publisher: Publisher, release_id: str, error: FedscoreError, facts: dict[str, Any]
) -> None:
    """Log the refusal of a reserved release and give its epsilon back, in one transaction.

    The refusal came before an exact histogram existed here (a node refused, did not
    answer, or sent an answer that does not verify; the masks did not cancel): what the
    coordinator holds is masked values at most, so there is nothing to charge. Nodes that
    did answer charged their own ledgers; theirs stay spent.
    """
    with publisher.engine.begin() as connection:
        publisher.ledger.refund(connection, release_id)
        publisher.log.append(
            connection,
            kinds.STATISTICS_REFUSED,
            {REASON: error.reason, **facts},
            now=publisher.clock(),
        )
