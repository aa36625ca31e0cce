"""Publishing one differentially private release: budget, shares, noise, bundle, log.

`publish_release` runs as the coordinator (its key, its database, its channels):
 1. the definition is looked up (UNKNOWN_RELEASE) and OpenDP calibrates its noise; the
    epsilon to spend is OpenDP's privacy map at the release's L1 sensitivity. A release
    agency nodes compute needs the helper aggregator the registry lists (NO_HELPER) to be
    serving (HELPER_UNAVAILABLE), checked before anything is spent;
 2. the epsilon is RESERVED: one committed transaction spends it in the ledger (a
    conditional update, which loses cleanly to a concurrent release: BUDGET_EXHAUSTED)
    under the release id, before any node is asked. Nodes charge their own ledgers as
    they answer, so two publishers racing for the last of a budget must be decided
    before either asks, or each could win at some nodes and lose at others and both fail;
 3. node-side (docs/adr/0019): every node answers with its shares (`coordinator.histograms`),
    the coordinator sums its own (uniformly random) and sends the helper a signed
    `NoiseOrder` relaying the nodes' sealed shares with the release id and the epsilon it
    charged; the helper checks it, charges its own ledger, and returns its share sums plus
    OpenDP noise; the two sums, added, are the noisy counts, clamped at zero. The
    score-query release is counted from the coordinator's own log and noised here. The
    chart and CSV are drawn from the noisy values, all in memory;
 4. "statistics_released" is appended with the SHA-256 of release.json and who noised it;
 5. only then is the signed bundle written to `releases/<id>/`.

Invariants:
- A refused release publishes nothing: no bundle, no "statistics_released"; its refusal is
  logged as "statistics_refused" with the reason. Refused before its reservation (budget,
  no helper, helper down), it spent nothing anywhere and asked no node; refused after it
  (a node or the helper refused or was unreachable) its reservation is refunded in the
  refusal's transaction: nothing noisy existed, and the helper charged nothing (nodes that
  answered keep their own charge).
- No exact count of a node-side release ever exists in this process: only the
  coordinator's shares, their sum and the helper's noisy share sums. The score-query
  counts are a local variable of `publish_release`, never logged, stored or raised.
- A failure after the helper may have charged (its answer came back and did not check, or
  the call was sent and did not return), a crash, or a bundle that cannot be written,
  leaves the epsilon spent (the safe direction): nothing unaccounted is ever published.
  The ledger may then count more than the log's "statistics_released" entries, never less,
  and the regulator names a helper charge no release matches.
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
from audit.core.fields import (
    DATASET,
    EPSILON_SPENT,
    NOISED_BY,
    QUERY_ID,
    REASON,
    RELEASE,
    RELEASE_ID,
    YEAR,
)
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
from coordinator.helper_link import HelperFailure, HelperLink, NoiseStep, helper_listed
from coordinator.histograms import (
    STATISTICS_DEADLINE_SECONDS,
    StatisticsAsker,
    query_log_histogram,
)
from coordinator.release_document import budget_json, draft
from coordinator.two_server import noisy_counts
from fedscore.errors import FailedPrecondition, FedscoreError, InvalidArgument
from fedscore.noise import histogram_mechanism
from fedscore.runtime.budget import BudgetStatus, PrivacyLedger, nano_up
from fedscore.runtime.db import open_engine
from fedscore.runtime.live_trust import LiveTrust
from fedscore.runtime.party import Party
from fedscore.runtime.rpc import TlsMaterial
from fedscore.v1.trust_pb2 import Role
from keys.registry import TrustView
from policies.model import Policy
from policies.releases import l1_sensitivity
from policies.statistics import ReleaseDefinition

MIN_YEAR, MAX_YEAR = 1970, 9998


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
    # Who adds the noise to a node-side release: the helper aggregator the registry lists
    # (None while it lists none: such a release is refused, NO_HELPER).
    noiser: NoiseStep | None = None
    tls: TlsMaterial | None = field(default=None, repr=False)

    async def close(self) -> None:
        await self.asker.channels.close()
        if self.noiser is not None:
            await self.noiser.close()
        self.engine.dispose()

    def follow_helper(self, view: TrustView) -> None:
        """Reach the helper aggregator `view` lists (the first by id), following it."""
        if self.noiser is not None:
            self.noiser.follow(view)
        elif self.tls is not None and helper_listed(view):
            self.noiser = HelperLink.open(view, self.tls)

    def helper(self) -> NoiseStep:
        if self.noiser is None:
            raise FailedPrecondition(
                "the trust registry lists no helper aggregator to add the noise; nothing was "
                "published and nothing spent",
                reason="NO_HELPER",
            )
        return self.noiser

    def follow(self, live: LiveTrust) -> None:
        """Publish under what `live` trusts from now on: the newest policy, the agencies'
        keys of the current view, the current signing key, channels to the agencies it
        lists (each swapped whole when it changes)."""

        def apply(view: TrustView, policy: Policy) -> None:
            self.asker.channels.follow(NodeChannels.endpoints_of(view))
            self.asker = replace(
                self.asker, signing_key=live.signing_key, agency_keyring=view.agency_keys()
            )
            self.follow_helper(view)
            self.policy = policy

        live.listen(apply)


def open_publisher(
    party: Party,
    *,
    deadline: float = STATISTICS_DEADLINE_SECONDS,
    clock: Callable[[], int] = unix_now,
    live: LiveTrust | None = None,
) -> Publisher:
    """The coordinator party's publisher: its database, log, ledger, node channels and the
    link to the helper aggregator.

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
        tls=party.tls,
    )
    publisher.follow_helper(view)
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
            "noised_by": self.document["noised_by"],
        }


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
        if definition.node_side:
            await publisher.helper().ready()
        stamp = datetime.fromtimestamp(now, UTC).strftime("%Y%m%dT%H%M%SZ")
        release_id = f"{year}-{definition.name}-{stamp}-{secrets.token_hex(3)}"
        cost = nano_up(noise.epsilon)
        status = _reserve(publisher, definition, year, release_id, cost, now)
    except FedscoreError as error:
        publisher.log.append_now(kinds.STATISTICS_REFUSED, {REASON: error.reason, **facts})
        raise
    try:
        query_id, noised_by = "", publisher.id
        if definition.node_side:
            helper = publisher.helper()
            noisy, query_id = await noisy_counts(
                publisher.asker, helper, publisher.policy, definition, year, now, release_id, cost
            )
            noised_by = helper.helper_id
        else:
            exact = query_log_histogram(publisher.engine, publisher.policy, definition, year)
            noisy = noise.release(exact)
            del exact  # from here on only noisy values exist
    except HelperFailure as failure:
        if not failure.charged:  # the helper charged nothing: nor does the coordinator
            _refuse_reserved(publisher, release_id, failure, facts)
        raise
    except FedscoreError as error:
        _refuse_reserved(publisher, release_id, error, facts)
        raise
    document = draft(
        publisher.policy,
        publisher.id,
        definition,
        year,
        noise,
        noisy,
        release_id,
        query_id,
        noised_by,
    )
    files = {
        RELEASE_CSV: release_csv(release_id, document["values"]),
        RELEASE_PNG: render_chart(document),
    }
    published_at = publisher.clock()
    document["budget"] = budget_json(definition, year, status)
    document["published_at"] = datetime.fromtimestamp(published_at, UTC).isoformat()
    document["files"] = {name: sha256_of(data) for name, data in files.items()}
    files[RELEASE_JSON] = canonical_bytes(document)
    publisher.log.append_now(
        kinds.STATISTICS_RELEASED,
        {
            RELEASE_ID: release_id,
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
            # Who added the noise: the helper aggregator (node-side), else the coordinator.
            NOISED_BY: noised_by,
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

    The refusal came before any noisy value existed (a node refused, did not answer, or
    sent an answer that does not verify; the helper refused or could not be reached): what
    the coordinator holds is its own shares at most, uniformly random, so there is nothing
    to charge, and the helper charged nothing. Nodes that did answer charged their own
    ledgers; theirs stay spent.
    """
    with publisher.engine.begin() as connection:
        publisher.ledger.refund(connection, release_id)
        publisher.log.append(
            connection,
            kinds.STATISTICS_REFUSED,
            {REASON: error.reason, **facts},
            now=publisher.clock(),
        )
