"""Example agency exports for a first hour with a local federation (`federation init --examples`).

The exports are the demo's (`fedscore.apps.demo_data.generate`, seed `DEMO_SEED`, 1,200
synthetic citizens): one file per agency in `DIR/exports/`, CSV or JSON Lines, and an
example citizen with certified records at every agency this year, whose yearly total the
files alone determine (`expected_total`). Beside them, `trc-export-with-errors.csv` holds
rows an agency's operator would have to fix, one problem each, so the rejection, its
reasons and `--problems FILE` can be seen.

No national ID in these files is a person's: every one is drawn from the seed.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from fedscore.apps.demo_data import DEMO_SEED, FIELDS, expected_total, generate
from policies.model import Policy

EXAMPLE_CITIZENS = 1200
EXPORTS = "exports"
WITH_ERRORS = "trc-export-with-errors.csv"


@dataclass(frozen=True)
class Examples:
    files: dict[str, Path]  # agency id -> its export
    with_errors: Path
    citizen: str  # the example citizen's national ID
    total: int  # their yearly total this year, from the files

    def to_json(self) -> dict[str, object]:
        return {
            "files": {agency: str(path) for agency, path in self.files.items()},
            "with_errors": str(self.with_errors),
            "citizen": self.citizen,
            "total": self.total,
        }


def _rows_with_errors(citizen: str, year: int) -> list[list[str]]:
    """One problem a row: a bad check digit, an unknown indicator, a date to come, no
    quantity (the citizen's own ID is valid; only the first row's is mistyped)."""
    mistyped = citizen[:-1] + str((int(citizen[-1]) + 1) % 10)
    return [
        [mistyped, "TRC-BLOOD", f"{year}-01-15", "1", "trc-certifier-TRC01"],
        [citizen, "TRC-COFFEE", f"{year}-01-16", "1", "trc-certifier-TRC01"],
        [citizen, "TRC-PLASMA", f"{year + 2}-01-17", "1", "trc-certifier-TRC01"],
        [citizen, "TRC-PLATELET", f"{year}-01-18", "0", "trc-certifier-TRC01"],
    ]


def write_examples(workdir: Path, policy: Policy, agencies: list[str]) -> Examples:
    """Write the example exports into `workdir/exports/`."""
    folder = workdir / EXPORTS
    data = generate(folder, policy, agencies, EXAMPLE_CITIZENS, seed=DEMO_SEED)
    with_errors = folder / WITH_ERRORS
    with with_errors.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(FIELDS)
        writer.writerows(_rows_with_errors(data.demo_citizen, data.year))
    total = expected_total(data.files, policy, data.demo_citizen, data.year)
    return Examples(data.files, with_errors, data.demo_citizen, total)
