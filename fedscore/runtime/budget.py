"""A persistent privacy-budget ledger: epsilon spent per dataset and year.

The coordinator keeps one for the releases it publishes; every agency node keeps its own
for the histograms it answers (`node.statistics`), so a coordinator that asks without
releasing still spends, at each node, from a budget it cannot reset (docs/adr/0011); the
helper aggregator keeps its own for the releases it adds noise to (`helper.noising`), which
must agree with the coordinator's (docs/adr/0019). All of them charge a release what
`release_cost_nano` says: OpenDP's privacy map at the release's L1 sensitivity.

Invariants:
- Amounts are stored as whole nano-epsilon (1e-9): a spend is rounded UP and a total
  DOWN, so rounding can only make the ledger stricter, and sums are exact integers.
- `spend` runs inside the caller's transaction, and its FIRST statement writes: it
  inserts the (dataset, year) row if missing (INSERT ... ON CONFLICT DO NOTHING), then
  `UPDATE ... SET spent = spent + cost WHERE spent + cost <= total`. The row's write lock
  (SQLite: the database write lock, taken before any read of this transaction;
  PostgreSQL: the row lock, the WHERE re-checked on the latest version) serialises
  every check-and-spend, so concurrent releases, in threads or processes, can never
  together exceed the total. A refused spend changes nothing.
- Each spend also writes one `privacy_spend` row naming its release, so the ledger can be
  audited release by release; `spent` always equals the sum of those rows.
- Plain SQLModel/SQLAlchemy Core; PostgreSQL works by URL alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

from sqlalchemy import BigInteger, Connection, Engine, Table, select, update
from sqlmodel import Field, SQLModel

from fedscore.errors import ResourceExhausted
from fedscore.noise import histogram_mechanism
from fedscore.runtime.db import create_tables, insert_unless_present
from policies.model import Policy
from policies.releases import l1_sensitivity
from policies.statistics import ReleaseDefinition

NANO = 10**9


class PrivacyBudget(SQLModel, table=True):
    """Epsilon spent so far on releases about one dataset's year."""

    __tablename__ = "privacy_budget"

    budget_key: str = Field(primary_key=True)  # "dataset/year": one lockable row each
    dataset: str
    year: int
    spent_nano: int = Field(default=0, sa_type=BigInteger)


class PrivacySpend(SQLModel, table=True):
    """One release's spend (written in the transaction that spent it); at a node, the
    statistics query answered."""

    __tablename__ = "privacy_spend"

    release_id: str = Field(primary_key=True)
    release: str
    dataset: str = Field(index=True)
    year: int
    spent_nano: int = Field(sa_type=BigInteger)
    spent_at: int = Field(sa_type=BigInteger)


PRIVACY_BUDGET: Table = PrivacyBudget.__table__  # type: ignore[attr-defined]
PRIVACY_SPEND: Table = PrivacySpend.__table__  # type: ignore[attr-defined]


def nano_up(epsilon: float) -> int:
    """`epsilon` in whole nano-epsilon, rounded up (exact: floats are binary fractions)."""
    return math.ceil(Fraction(epsilon) * NANO)


def nano_down(epsilon: float) -> int:
    return math.floor(Fraction(epsilon) * NANO)


def epsilon_of(nano: int) -> float:
    return nano / NANO


_COSTS: dict[tuple[str, str], int] = {}


def release_cost_nano(policy: Policy, definition: ReleaseDefinition) -> int:
    """What one release of `definition` costs, in nano-epsilon, wherever it is charged:
    OpenDP's privacy map at the release's L1 sensitivity (`fedscore.noise`), rounded up."""
    key = (policy.content_hash, definition.name)
    cost = _COSTS.get(key)
    if cost is None:
        noise = histogram_mechanism(l1_sensitivity(policy, definition), definition.epsilon)
        # A policy is immutable and named by its content hash: calibrated once per release.
        cost = _COSTS[key] = nano_up(noise.epsilon)
    return cost


def budget_key(dataset: str, year: int) -> str:
    return f"{dataset}/{year}"


@dataclass(frozen=True)
class BudgetStatus:
    """One dataset's budget for one year."""

    dataset: str
    year: int
    total_nano: int
    spent_nano: int

    @property
    def remaining_nano(self) -> int:
        return max(0, self.total_nano - self.spent_nano)

    def to_json(self) -> dict[str, float]:
        return {
            "total": epsilon_of(self.total_nano),
            "spent": epsilon_of(self.spent_nano),
            "remaining": epsilon_of(self.remaining_nano),
        }


def _exhausted(dataset: str, year: int, cost: int, status: BudgetStatus) -> ResourceExhausted:
    return ResourceExhausted(
        f"privacy budget of {dataset} for {year} is exhausted: this release needs epsilon "
        f"{epsilon_of(cost):g}, {epsilon_of(status.remaining_nano):g} of "
        f"{epsilon_of(status.total_nano):g} remains; nothing was published",
        reason="BUDGET_EXHAUSTED",
    )


class PrivacyLedger:
    """The budget rows and spend records in one party's database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        create_tables(engine, [PRIVACY_BUDGET, PRIVACY_SPEND])

    def status(self, dataset: str, year: int, total_epsilon: float) -> BudgetStatus:
        query = select(PRIVACY_BUDGET.c.spent_nano).where(
            PRIVACY_BUDGET.c.budget_key == budget_key(dataset, year)
        )
        with self.engine.connect() as connection:
            spent = connection.execute(query).scalar_one_or_none()
        return BudgetStatus(dataset, year, nano_down(total_epsilon), int(spent or 0))

    def check(self, dataset: str, year: int, total_epsilon: float, cost_nano: int) -> None:
        """Refuse early (reading only) a release that cannot fit; `spend` decides for real."""
        status = self.status(dataset, year, total_epsilon)
        if cost_nano > status.remaining_nano:
            raise _exhausted(dataset, year, cost_nano, status)

    def spend(
        self,
        connection: Connection,
        *,
        release_id: str,
        release: str,
        dataset: str,
        year: int,
        total_epsilon: float,
        cost_nano: int,
        now: int,
    ) -> BudgetStatus:
        """Spend `cost_nano` in `connection`'s transaction (not committed here) or raise
        BUDGET_EXHAUSTED.

        Returns the status after the spend. On a refusal nothing was changed; the caller
        must not commit anything it wrote for the release in the same transaction.
        """
        total = nano_down(total_epsilon)
        key = budget_key(dataset, year)
        insert = insert_unless_present(connection, PRIVACY_BUDGET, "budget_key")
        connection.execute(
            insert, {"budget_key": key, "dataset": dataset, "year": year, "spent_nano": 0}
        )
        row = PRIVACY_BUDGET.c.budget_key == key
        spent = PRIVACY_BUDGET.c.spent_nano
        conditional = (
            update(PRIVACY_BUDGET)
            .where(row, spent + cost_nano <= total)
            .values(spent_nano=spent + cost_nano)
        )
        granted = connection.execute(conditional).rowcount == 1
        now_spent = int(connection.execute(select(spent).where(row)).scalar_one())
        status = BudgetStatus(dataset, year, total, now_spent)
        if not granted:
            raise _exhausted(dataset, year, cost_nano, status)
        connection.execute(
            PRIVACY_SPEND.insert().values(
                release_id=release_id,
                release=release,
                dataset=dataset,
                year=year,
                spent_nano=cost_nano,
                spent_at=now,
            )
        )
        return status

    def refund(self, connection: Connection, release_id: str) -> int:
        """Give back in `connection`'s transaction (not committed here) what `release_id` spent.

        For a reservation whose release can no longer happen; returns the nano-epsilon given
        back, 0 if the release spent nothing (a refund is never applied twice).
        """
        spend = connection.execute(
            select(PRIVACY_SPEND.c.dataset, PRIVACY_SPEND.c.year, PRIVACY_SPEND.c.spent_nano).where(
                PRIVACY_SPEND.c.release_id == release_id
            )
        ).one_or_none()
        if spend is None:
            return 0
        dataset, year, cost_nano = spend
        connection.execute(PRIVACY_SPEND.delete().where(PRIVACY_SPEND.c.release_id == release_id))
        spent = PRIVACY_BUDGET.c.spent_nano
        connection.execute(
            update(PRIVACY_BUDGET)
            .where(PRIVACY_BUDGET.c.budget_key == budget_key(dataset, year))
            .values(spent_nano=spent - int(cost_nano))
        )
        return int(cost_nano)

    def spends(self, dataset: str, year: int) -> list[PrivacySpend]:
        """Every release's spend for the dataset and year, in order of spending."""
        query = (
            select(PRIVACY_SPEND)
            .where(PRIVACY_SPEND.c.dataset == dataset, PRIVACY_SPEND.c.year == year)
            .order_by(PRIVACY_SPEND.c.spent_at, PRIVACY_SPEND.c.release_id)
        )
        with self.engine.connect() as connection:
            return [PrivacySpend(**row) for row in connection.execute(query).mappings()]
