"""What every test shares: the harnesses' fixtures.

Fixtures (the helpers behind them are in tests/harness/; no test module imports another):

- `audit_federation`: a new federation folder of three agencies, no records
  (tests/harness/audit.py; run it with `live_federation`);
- `coordinator_federation`: one federation folder per test module whose nodes hold the
  known records of tests/harness/coordinator.py (run it with `running`);
- `new_stats_federation`: builds a federation with the demo generator's records under
  this test's tmp_path (tests/harness/stats.py; run it with `servers`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from harness.audit import make_federation
from harness.coordinator import ingest_known_records
from harness.stats import NewStatsFederation, StatsFederation, stats_federation

# --- the harnesses' fixtures ----------------------------------------------------------


@pytest.fixture
def audit_federation(tmp_path: Path) -> Path:
    """A new federation folder of the audit harness's three agencies, holding no records."""
    return make_federation(tmp_path)


@pytest.fixture(scope="module")
def coordinator_federation(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A federation folder whose nodes hold tests/harness/coordinator.py's known records."""
    return ingest_known_records(tmp_path_factory.mktemp("coordinator") / "federation")


@pytest.fixture
def new_stats_federation(tmp_path: Path) -> NewStatsFederation:
    """`new_stats_federation(citizens=..., seed=..., change=...)`: demo records, ingested."""

    def make(**options: Any) -> StatsFederation:
        return stats_federation(tmp_path / "federation", **options)

    return make
