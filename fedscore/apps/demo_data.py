"""Synthetic agency exports for the demo, and an independent expected total.

The expected total is computed here from the generated files alone (parsed again from
disk, summed with the policy's point table), never through the node code, so the demo
can show that the federated answer equals what the files say.

The records follow from the seed alone: every draw is `random.Random.random()`, the one
draw whose sequence for a given seed Python promises to keep across versions and
machines, and none depends on today's date (only the days of this year's records do).
With DEMO_SEED the demo's totals and band are the same on every run.
"""

from __future__ import annotations

import csv
import json
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TypeVar
from zoneinfo import ZoneInfo

from keys.national_id import with_check_digit
from policies.model import Policy

BANGKOK = ZoneInfo("Asia/Bangkok")
FIELDS = ["national_id", "indicator", "occurred_at", "quantity", "certifier"]
# The seed of `fedscore demo`'s records: with it and the default 1200 citizens, the demo
# citizen's total is 650 and PTT's band "5%" on every run (tests/test_demo.py pins both).
DEMO_SEED = 20_250_101

T = TypeVar("T")


@dataclass(frozen=True)
class DemoData:
    files: dict[str, Path]
    citizens: list[str]
    demo_citizen: str
    year: int
    records: int


def _below(rng: random.Random, n: int) -> int:
    """0 <= k < n, from one `random()` draw (so the same for a seed on every Python)."""
    return min(n - 1, int(rng.random() * n))


def _pick(rng: random.Random, items: Sequence[T]) -> T:
    return items[_below(rng, len(items))]


def _shuffle(rng: random.Random, items: list[T]) -> None:
    """Fisher-Yates, drawing with `_below`."""
    for i in range(len(items) - 1, 0, -1):
        j = _below(rng, i + 1)
        items[i], items[j] = items[j], items[i]


def random_national_id(rng: random.Random) -> str:
    first = str(1 + _below(rng, 8))
    return with_check_digit(first + "".join(str(_below(rng, 10)) for _ in range(11)))


def _certifier(agency: str) -> str:
    return f"{agency}-certifier-{agency.upper()}01"


def generate(
    out_dir: Path, policy: Policy, agencies: list[str], citizens: int, seed: int
) -> DemoData:
    """Write one export per agency (CSV, or JSON Lines for every second agency)."""
    rng = random.Random(seed)  # an int seed: the same state on every machine
    today = datetime.now(BANGKOK).date()
    year = today.year
    start = date(year, 1, 1)
    span = max(0, (today - start).days - 1)
    ids: set[str] = set()
    while len(ids) < citizens:
        ids.add(random_national_id(rng))
    people = sorted(ids)
    demo_citizen = _pick(rng, people)
    rows: dict[str, list[dict[str, str]]] = defaultdict(list)
    for agency in agencies:
        codes = sorted(code for code, ind in policy.indicators.items() if ind.agency == agency)
        for person in people:
            for _ in range(_pick(rng, [0, 0, 1, 1, 2, 3])):
                this_year = rng.random() < 0.8
                # One draw either way, so no later draw depends on today's date.
                when = rng.random()
                day = (
                    start + timedelta(days=min(span, int(when * (span + 1))))
                    if this_year
                    else date(year - 1, 1, 1) + timedelta(days=int(when * 365))
                )
                rows[agency].append(
                    {
                        "national_id": person,
                        "indicator": _pick(rng, codes),
                        "occurred_at": day.isoformat(),
                        "quantity": str(_pick(rng, [1, 1, 1, 2])),
                        "certifier": "" if rng.random() < 0.1 else _certifier(agency),
                    }
                )
        # The demo citizen has certified records at every agency this year, plus one
        # from last year and one still uncertified: neither may count.
        cheapest = min(codes, key=lambda c: policy.indicators[c].points)
        for code, certifier, day in (
            (cheapest, _certifier(agency), start + timedelta(days=min(span, 10))),
            (cheapest, _certifier(agency), start + timedelta(days=min(span, 40))),
            (cheapest, _certifier(agency), date(year - 1, 6, 1)),
            (cheapest, "", start + timedelta(days=min(span, 20))),
        ):
            rows[agency].append(
                {
                    "national_id": demo_citizen,
                    "indicator": code,
                    "occurred_at": day.isoformat(),
                    "quantity": "1",
                    "certifier": certifier,
                }
            )
    out_dir.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    for index, agency in enumerate(agencies):
        _shuffle(rng, rows[agency])
        if index % 2 == 1:
            path = out_dir / f"{agency}-export.jsonl"
            with path.open("w", encoding="utf-8") as handle:
                for row in rows[agency]:
                    handle.write(json.dumps({**row, "quantity": int(row["quantity"])}) + "\n")
        else:
            path = out_dir / f"{agency}-export.csv"
            with path.open("w", encoding="utf-8", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=FIELDS)
                writer.writeheader()
                writer.writerows(rows[agency])
        files[agency] = path
    return DemoData(
        files=files,
        citizens=people,
        demo_citizen=demo_citizen,
        year=year,
        records=sum(len(r) for r in rows.values()),
    )


def read_rows(path: Path) -> list[dict[str, str]]:
    if path.suffix == ".jsonl":
        with path.open(encoding="utf-8") as handle:
            return [
                {k: str(v) for k, v in json.loads(line).items()} for line in handle if line.strip()
            ]
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def expected_total(files: dict[str, Path], policy: Policy, national_id: str, year: int) -> int:
    """The person's yearly total straight from the export files and the point table."""
    total = 0
    for agency, path in files.items():
        quantity: dict[str, int] = defaultdict(int)
        for row in read_rows(path):
            if row["national_id"] != national_id:
                continue
            if not row["certifier"] and policy.indicators[row["indicator"]].requires_certification:
                continue
            if date.fromisoformat(row["occurred_at"][:10]).year != year:
                continue
            quantity[row["indicator"]] += int(row["quantity"])
        for code, count in quantity.items():
            indicator = policy.indicators[code]
            assert indicator.agency == agency
            points = indicator.points * count
            if indicator.cap_per_year is not None:
                points = min(points, indicator.cap_per_year)
            total += points
    return max(policy.score.person_min, min(policy.score.person_max, total))
