"""A scored federation for the coordinator tests: three agencies whose records are known.

`ingest_known_records` makes a federation folder with `init_federation` and ingests into
each agency's node the rows of `exported_rows`, whose points for CITIZEN this year are
EXPECTED_TOTAL; `running` starts the consent registry, every node and the coordinator
in-process as real gRPC servers over mutual TLS, and stops them all afterwards.
"""

from __future__ import annotations

import csv
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from audit.core.entries import LogEntry
from audit.store.log import EventLog
from consent import server as consent_server
from coordinator import server as coordinator_server
from fedscore.apps.federation import init_federation
from fedscore.runtime.party import Party, load_party
from keys.national_id import with_check_digit
from node import server as node_server
from node.ingest import ingest_file
from node.store import NodeStore

CITIZEN = with_check_digit("110170012345")
OTHER_CITIZEN = with_check_digit("310040099887")
AGENCIES = ("trc", "dsd", "chuangpao")

# What each agency exports for CITIZEN this year, plus rows that must not count.
# TRC: blood 70 + plasma 70; DSD: one skill training 30; Chuang Pao: account 50.
EXPECTED_TOTAL = 70 + 70 + 30 + 50


def exported_rows(year: int) -> dict[str, list[tuple[str, str, str, int, str]]]:
    """Each agency's export rows: (national id, indicator, occurred at, quantity, certifier)."""
    this_year = f"{year}-01-01T00:0"
    return {
        "trc": [
            (CITIZEN, "TRC-BLOOD", this_year + "1", 1, "trc-unit-01"),
            (CITIZEN, "TRC-PLASMA", this_year + "2", 1, "trc-unit-01"),
            # Last year's donation and an uncertified one do not count this year.
            (CITIZEN, "TRC-STEM-CELL", f"{year - 1}-06-01", 1, "trc-unit-01"),
            (CITIZEN, "TRC-PLATELET", this_year + "3", 1, ""),
            (OTHER_CITIZEN, "TRC-BODY-PLEDGE", this_year + "1", 1, "trc-unit-02"),
        ],
        "dsd": [
            (CITIZEN, "NAT-SKILL-TRAINING", this_year + "1", 1, "dsd-centre-7"),
            (OTHER_CITIZEN, "NAT-SKILL-STANDARD", this_year + "1", 3, "dsd-centre-7"),
        ],
        "chuangpao": [
            (CITIZEN, "CP-ACCOUNT", this_year + "1", 1, "chuangpao-council"),
        ],
    }


def ingest_known_records(root: Path) -> Path:
    """A federation folder at `root` whose nodes hold the records of `exported_rows`."""
    init_federation(root, agency_count=len(AGENCIES), fast_kdf=True)
    year = datetime.now(ZoneInfo("Asia/Bangkok")).year
    exports = root / "exports"
    exports.mkdir()
    for agency, rows in exported_rows(year).items():
        path = exports / f"{agency}.csv"
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["national_id", "indicator", "occurred_at", "quantity", "certifier"])
            writer.writerows(rows)
        party = load_party(root, agency)
        store = NodeStore(party.db_url)
        try:
            ingest_file(store, path, party.policy, agency, party.secrets.pseudonym_key)
        finally:
            store.dispose()
    return root


@dataclass
class Federation:
    root: Path
    consent: consent_server.Running
    nodes: dict[str, node_server.Running]
    coordinator: coordinator_server.Running
    portal: Party
    ptt: Party

    @property
    def coordinator_log(self) -> EventLog:
        return self.coordinator.coordinator.store.log

    def node_log(self, agency: str) -> EventLog:
        return self.nodes[agency].node.log


@asynccontextmanager
async def running(root: Path) -> AsyncIterator[Federation]:
    """Start the registry, every node and the coordinator; stop them all afterwards."""
    consent = await consent_server.start(load_party(root, "consent-registry"))
    nodes: dict[str, node_server.Running] = {}
    coordinator: coordinator_server.Running | None = None
    try:
        for agency in AGENCIES:
            nodes[agency] = await node_server.start(load_party(root, agency))
        coordinator = await coordinator_server.start(load_party(root, "coordinator"))
        yield Federation(
            root=root,
            consent=consent,
            nodes=nodes,
            coordinator=coordinator,
            portal=load_party(root, "citizen-portal"),
            ptt=load_party(root, "ptt"),
        )
    finally:
        if coordinator is not None:
            await coordinator.stop()
        for node in nodes.values():
            await node.stop()
        await consent.stop()


def entries(log: EventLog) -> list[LogEntry]:
    return log.entries(0, log.size())


def of_kind(log: EventLog, kind: str) -> list[LogEntry]:
    return [entry for entry in entries(log) if entry.kind == kind]
