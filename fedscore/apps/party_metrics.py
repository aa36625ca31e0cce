"""What a running server adds to its metrics at each scrape (`fedscore.runtime.metrics`).

Read from the server's current state when Prometheus scrapes, never a copy taken at start:
- `fedscore_log_entries`: entries in the party's own log;
- `fedscore_checkpoint_age_seconds`: since its last signed checkpoint (absent before one);
- `fedscore_status_list_seconds_left`: until its consent status list goes stale (agency
  nodes and the coordinator; negative once stale);
- `fedscore_privacy_budget_remaining_epsilon{dataset}`: this year's budget left (the
  coordinator's ledger and each node's own);
- `fedscore_ready`: 1 while every readiness check passes, else 0, and
  `fedscore_not_ready{check}` = 1 for each failing check.
No value is personal; the labels are dataset and check names.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from fedscore.runtime.budget import PrivacyLedger
from fedscore.runtime.readiness import Readiness
from policies.statistics import DATASETS


class PartyCollector(Collector):
    """The gauges of one started server of `kind` ("agency", "coordinator", ...)."""

    def __init__(self, kind: str, running: Any, readiness: Readiness) -> None:
        self.kind = kind
        self.running = running
        self.readiness = readiness
        self.ledger: PrivacyLedger | None = None
        if kind == "agency":
            self.ledger = running.node.ledger
        elif kind == "coordinator":
            self.ledger = PrivacyLedger(running.engine)

    def _revocations(self) -> Any:
        if self.kind == "agency":
            return self.running.node.trust.revocations
        if self.kind == "coordinator":
            return self.running.coordinator.revocations
        return None

    def collect(self) -> Iterator[Metric]:
        ledger, revocations = self.ledger, self._revocations()
        now = time.time()
        log = self.running.audit.service.log
        yield GaugeMetricFamily("fedscore_log_entries", "Entries in the party's log", log.size())
        last = self.running.audit.signer.last()
        if last is not None:
            age = now - last[0].timestamp
            yield GaugeMetricFamily(
                "fedscore_checkpoint_age_seconds", "Since the last signed checkpoint", age
            )
        if revocations is not None:
            yield GaugeMetricFamily(
                "fedscore_status_list_seconds_left",
                "Until the consent status list goes stale (negative: stale)",
                revocations.fresh_until() - now,
            )
        if ledger is not None:
            policy = self.running.live.policy
            year = policy.current_year(now)
            budget = GaugeMetricFamily(
                "fedscore_privacy_budget_remaining_epsilon",
                "Privacy budget left this year",
                labels=["dataset"],
            )
            rules = policy.statistics_rules
            for dataset in DATASETS:
                status = ledger.status(dataset, year, rules.budget(dataset))
                budget.add_metric([dataset], status.remaining_nano / 1e9)
            yield budget
        failing = self.readiness.failing
        ready = 0 if failing else 1
        yield GaugeMetricFamily("fedscore_ready", "1 while every readiness check passes", ready)
        not_ready = GaugeMetricFamily(
            "fedscore_not_ready", "1 for each readiness check failing", labels=["check"]
        )
        for check in self.readiness.checks:
            not_ready.add_metric([check], 1 if check in failing else 0)
        yield not_ready
