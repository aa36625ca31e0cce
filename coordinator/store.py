"""The coordinator's persistent state: accepted nonces, token uses and issued queries.

Invariants:
- A request nonce is accepted once, ever: its SHA-256 is the primary key of
  `coordinator_nonce`, inserted with ON CONFLICT DO NOTHING; a nonce the database
  already holds is refused, whichever transaction stored it first.
- A token use is counted by one conditional UPDATE (uses < limit), so concurrent
  queries can never both take a token's last use.
- Storing the nonce, counting the token use, recording the issued query and appending
  "query_issued" to the audit log happen in ONE transaction: either the query is
  logged and the nonce and use are spent, or none of them happened (log before act).
- Nothing stored here is a national ID, a pseudonym or a per-agency contribution.
- A batch of queries is issued in one transaction: each query's nonce and use are
  spent (or refused) on their own, then one log entry per query is appended in order.
- SQLAlchemy Core statements built once, no SQLite-only SQL, so PostgreSQL works by URL
  alone; a single query's two transactions run them as prepared statements on the
  DB-API connection (`fedscore.runtime.prepared`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, Table, bindparam, delete, select, update
from sqlmodel import Field, SQLModel

from audit.core import kinds
from audit.core.entries import LogRef
from audit.core.fields import (
    PARTICIPANTS,
    PURPOSE,
    QUERY_HASH,
    QUERY_ID,
    REASON,
    RELYING_PARTY,
    REQUEST_NONCE_HASH,
    TOKEN_ID,
    YEAR,
)
from audit.store.log import EventLog
from fedscore.errors import FedscoreError, ResourceExhausted
from fedscore.protocol.requests import check_replay, check_use_limit
from fedscore.runtime.db import create_tables, insert_unless_present, use_counters
from fedscore.runtime.prepared import Cursor, HotConnection

# An issued query's outcome (`IssuedQuery.outcome`, the query table's, not the log's).
OUTCOME_ISSUED = "issued"
OUTCOME_RELEASED = "released"
OUTCOME_FAILED = "failed"


class UsedNonce(SQLModel, table=True):
    """A relying party's request nonce that was accepted (stored as its SHA-256)."""

    __tablename__ = "coordinator_nonce"

    nonce_hash: str = Field(primary_key=True, max_length=64)
    relying_party: str
    accepted_at: int


class TokenUse(SQLModel, table=True):
    """How many score queries a consent token has been used for."""

    __tablename__ = "coordinator_token_use"

    token_id: str = Field(primary_key=True)
    uses: int = 0
    last_used_at: int = 0


class IssuedQuery(SQLModel, table=True):
    """A query written to the log before any node was asked, and how it ended."""

    __tablename__ = "coordinator_query"

    query_id: str = Field(primary_key=True)
    query_hash: str
    token_id: str = Field(index=True)
    purpose_id: str
    relying_party: str
    year: int
    log_index: int
    issued_at: int
    expires_at: int
    # OUTCOME_ISSUED until the fan-out ends, then OUTCOME_RELEASED or OUTCOME_FAILED.
    outcome: str = OUTCOME_ISSUED


NONCES: Table = UsedNonce.__table__  # type: ignore[attr-defined]
TOKEN_USES: Table = TokenUse.__table__  # type: ignore[attr-defined]
ISSUED_QUERIES: Table = IssuedQuery.__table__  # type: ignore[attr-defined]
COORDINATOR_TABLES = [NONCES, TOKEN_USES, ISSUED_QUERIES]


def nonce_digest(nonce: bytes) -> str:
    return hashlib.sha256(nonce).hexdigest()


def _run(writer: Connection | Cursor, statement: Any, values: Mapping[str, Any]) -> Any:
    """Run a statement on a Core connection or on a prepared-statement cursor alike."""
    if isinstance(writer, Cursor):
        return writer.execute(statement, values)
    return writer.execute(statement, values)


def _run_many(
    writer: Connection | Cursor, statement: Any, rows: Sequence[Mapping[str, Any]]
) -> None:
    """Run a statement once per row, on either kind of writer."""
    if isinstance(writer, Cursor):
        writer.executemany(statement, rows)
    else:
        writer.execute(statement, list(rows))


@dataclass(frozen=True)
class QueryIssue:
    """What one transaction must record when a score query is issued."""

    query_id: str
    query_hash: bytes
    nonce: bytes
    relying_party: str
    request_nonce_hash: bytes  # SHA-256 of `nonce`, as every node logs it too
    token_id: str
    max_uses: int
    purpose_id: str
    participants: tuple[str, ...]
    year: int
    issued_at: int
    expires_at: int

    def log_fields(self) -> dict[str, object]:
        return {
            QUERY_ID: self.query_id,
            QUERY_HASH: self.query_hash.hex(),
            TOKEN_ID: self.token_id,
            PURPOSE: self.purpose_id,
            RELYING_PARTY: self.relying_party,
            PARTICIPANTS: list(self.participants),
            YEAR: self.year,
            "kind": "score",
            # One signed request is served by one query only; nodes log the same hash.
            REQUEST_NONCE_HASH: self.request_nonce_hash.hex(),
        }

    def refusal_fields(self) -> dict[str, object]:
        """The authenticated facts a "score_refused" entry for this query may name."""
        return {
            RELYING_PARTY: self.relying_party,
            PURPOSE: self.purpose_id,
            TOKEN_ID: self.token_id,
        }

    def row(self, ref: LogRef) -> dict[str, object]:
        """The `coordinator_query` row of this query, logged at `ref`."""
        return {
            "query_id": self.query_id,
            "query_hash": self.query_hash.hex(),
            "token_id": self.token_id,
            "purpose_id": self.purpose_id,
            "relying_party": self.relying_party,
            "year": self.year,
            "log_index": ref.index,
            "issued_at": self.issued_at,
            "expires_at": self.expires_at,
            "outcome": OUTCOME_ISSUED,
        }


@dataclass(frozen=True)
class Refused:
    """A request refused before it was issued: only its "score_refused" entry is stored."""

    error: FedscoreError
    # Authenticated facts only (relying party, purpose, token id), as far as they are known.
    fields: Mapping[str, object]


@dataclass(frozen=True)
class Finish:
    """How one issued query ended, and the log entry that says so."""

    query_id: str
    outcome: str
    kind: str
    fields: Mapping[str, object]


class CoordinatorStore:
    """Nonces, token uses and issued queries, written together with the audit log.

    The query path uses Core statements built once here (no ORM unit of work), run on
    prepared statements (`fedscore.runtime.prepared`): one transaction to issue a query (or a
    chunk of a batch), one to finish it.
    """

    def __init__(self, engine: Engine, log: EventLog) -> None:
        self.engine = engine
        self.log = log
        # A single query's two transactions (issue, finish) run on prepared statements.
        self.hot = HotConnection(engine)
        create_tables(engine, COORDINATOR_TABLES)
        with engine.connect() as connection:
            self._insert_nonce = insert_unless_present(connection, NONCES, "nonce_hash")
            self._count_use, self._count_limited_use = use_counters(
                connection.dialect.name, TOKEN_USES
            )
        uses = TOKEN_USES.c
        self._uses_of = select(uses.uses).where(uses.token_id == bindparam("token"))
        self._forget_nonce = delete(NONCES).where(NONCES.c.nonce_hash == bindparam("nonce"))
        self._insert_query = ISSUED_QUERIES.insert()
        queries = ISSUED_QUERIES.c
        self._set_outcome = (
            update(ISSUED_QUERIES)
            .where(queries.query_id == bindparam("query"))
            .values(outcome=bindparam("outcome"))
        )

    def issue(self, issue: QueryIssue) -> LogRef:
        """Spend the nonce and one token use and log "query_issued", all or nothing.

        Raises `AlreadyExists REPLAYED_NONCE` or `ResourceExhausted USE_LIMIT_REACHED`;
        on either nothing is stored.
        """
        with self.hot.transaction() as cursor:
            return self.issue_in(cursor, issue)

    def issue_in(self, connection: Connection | Cursor, issue: QueryIssue) -> LogRef:
        """`issue` inside the caller's transaction; raising leaves it to be rolled back."""
        self.spend(connection, issue)
        ref = self.log.append(connection, kinds.QUERY_ISSUED, issue.log_fields())
        _run(connection, self._insert_query, issue.row(ref))
        return ref

    def spend(self, connection: Connection | Cursor, issue: QueryIssue) -> None:
        """Store the nonce and count one token use, or raise having stored nothing.

        `AlreadyExists REPLAYED_NONCE` if the nonce was accepted before (the primary key
        decides, whichever transaction stored it first); `ResourceExhausted
        USE_LIMIT_REACHED` if the token has no use left (its nonce is taken back).
        """
        digest = nonce_digest(issue.nonce)
        nonce = {
            "nonce_hash": digest,
            "relying_party": issue.relying_party,
            "accepted_at": issue.issued_at,
        }
        check_replay(_run(connection, self._insert_nonce, nonce).rowcount != 1)
        self._count_one_use(connection, issue, digest)

    def _count_one_use(
        self, connection: Connection | Cursor, issue: QueryIssue, nonce_hash: str
    ) -> None:
        """Count one use of the token; if none is left, forget the nonce."""
        use = {"token": issue.token_id, "now": issue.issued_at}
        if issue.max_uses:
            counted = _run(connection, self._count_limited_use, {**use, "max_uses": issue.max_uses})
        else:
            counted = _run(connection, self._count_use, use)
        if counted.rowcount == 1:
            return
        _run(connection, self._forget_nonce, {"nonce": nonce_hash})
        uses = _run(connection, self._uses_of, {"token": issue.token_id}).fetchone()[0]
        check_use_limit(int(uses), issue.max_uses)
        raise ResourceExhausted("token use could not be counted", "USE_LIMIT_REACHED")

    def spend_batch(
        self, connection: Connection | Cursor, issues: Sequence[QueryIssue]
    ) -> list[FedscoreError | None]:
        """`spend` for many queries, in order: per query None, or why it was refused.

        Each query is spent as a single one is (its nonce stored unless taken, one use
        counted unless none is left), so a nonce repeated inside `issues` is a replay and a
        limited token runs out in order; a refused query stores nothing.
        """
        refused: list[FedscoreError | None] = []
        for issue in issues:
            try:
                self.spend(connection, issue)
            except FedscoreError as error:
                refused.append(error)
            else:
                refused.append(None)
        return refused

    def issue_batch(
        self,
        connection: Connection | Cursor,
        entries: Sequence[QueryIssue | Refused],
        log_refusal: Callable[[], bool] = lambda: True,
    ) -> list[LogRef | FedscoreError]:
        """Issue many queries in the caller's transaction: per entry its LogRef or its refusal.

        Each entry is spent on its own (a replay or an exhausted token refuses only that
        entry, storing nothing for it); then one "query_issued" entry per issued query and
        one "score_refused" entry per refusal that `log_refusal()` allows (the caller's
        allowance, `audit.store.refusals`; the caller counts the others once committed) are
        appended, in order, and the issued queries are recorded.
        """
        issues = [entry for entry in entries if isinstance(entry, QueryIssue)]
        refusals = iter(self.spend_batch(connection, issues))
        outcomes: list[QueryIssue | Refused] = []
        for entry in entries:
            if isinstance(entry, QueryIssue):
                error = next(refusals)
                if error is not None:
                    entry = Refused(error, entry.refusal_fields())
            outcomes.append(entry)
        logged = [entry for entry in outcomes if isinstance(entry, QueryIssue) or log_refusal()]
        events = [
            (kinds.QUERY_ISSUED, entry.log_fields())
            if isinstance(entry, QueryIssue)
            else (kinds.SCORE_REFUSED, {REASON: entry.error.reason, **entry.fields})
            for entry in logged
        ]
        refs = self.log.append_many(connection, events)
        issued = {
            id(entry): ref
            for entry, ref in zip(logged, refs, strict=True)
            if isinstance(entry, QueryIssue)
        }
        rows = [entry.row(issued[id(entry)]) for entry in logged if isinstance(entry, QueryIssue)]
        if rows:
            _run_many(connection, self._insert_query, rows)
        return [
            issued[id(entry)] if isinstance(entry, QueryIssue) else entry.error
            for entry in outcomes
        ]

    def finish(
        self, query_id: str, outcome: str, kind: str, fields: Mapping[str, object]
    ) -> LogRef:
        """Record how an issued query ended and log it in the same transaction."""
        with self.hot.transaction() as cursor:
            return self.finish_in(cursor, query_id, outcome, kind, fields)

    def finish_in(
        self,
        connection: Connection | Cursor,
        query_id: str,
        outcome: str,
        kind: str,
        fields: Mapping[str, object],
    ) -> LogRef:
        """`finish` inside the caller's transaction."""
        _run(connection, self._set_outcome, {"query": query_id, "outcome": outcome})
        return self.log.append(connection, kind, dict(fields))

    def finish_batch(
        self, connection: Connection | Cursor, finishes: Sequence[Finish]
    ) -> list[LogRef]:
        """`finish` for many queries in the caller's transaction, logged in order."""
        if not finishes:
            return []
        _run_many(
            connection,
            self._set_outcome,
            [{"query": finish.query_id, "outcome": finish.outcome} for finish in finishes],
        )
        return self.log.append_many(
            connection, [(finish.kind, dict(finish.fields)) for finish in finishes]
        )

    def refuse(self, fields: Mapping[str, object]) -> LogRef:
        """Log a refused score request (nothing else is stored for it), without any bound.

        A caller's refusals go through `Coordinator.refusals` (`audit.store.refusals`) instead,
        which logs them one by one only up to the caller's allowance.
        """
        return self.log.append_now(kinds.SCORE_REFUSED, dict(fields))

    def uses(self, token_id: str) -> int:
        statement = select(TOKEN_USES.c.uses).where(TOKEN_USES.c.token_id == token_id)
        with self.engine.connect() as connection:
            return int(connection.execute(statement).scalar_one_or_none() or 0)

    def nonce_seen(self, nonce: bytes) -> bool:
        statement = select(NONCES.c.nonce_hash).where(NONCES.c.nonce_hash == nonce_digest(nonce))
        with self.engine.connect() as connection:
            return connection.execute(statement).first() is not None

    def query(self, query_id: str) -> IssuedQuery | None:
        """The issued query as stored (a plain value, bound to no session)."""
        statement = select(ISSUED_QUERIES).where(ISSUED_QUERIES.c.query_id == query_id)
        with self.engine.connect() as connection:
            row = connection.execute(statement).mappings().first()
        return None if row is None else IssuedQuery(**row)
