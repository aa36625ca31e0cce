"""The coordinator's persistent state: accepted nonces, token uses and issued queries.

Invariants:
- A request nonce is accepted once, ever: its SHA-256 is the primary key of
  `coordinator_nonce`, so a second insert fails in the database, not only in Python.
- Storing the nonce, counting the token use, recording the issued query and appending
  "query_issued" to the audit log happen in ONE transaction: either the query is
  logged and the nonce and use are spent, or none of them happened (log before act).
- Nothing stored here is a national ID, a pseudonym or a per-agency contribution.
- Plain SQLModel/SQLAlchemy, no SQLite-only SQL, so PostgreSQL works by URL alone.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, Session, SQLModel

from audit.log import EventLog, LogRef
from coordinator.checks import check_replay, check_use_limit
from fedscore.errors import AlreadyExists


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
    # "issued" until the fan-out ends, then "released" or "failed".
    outcome: str = "issued"


COORDINATOR_TABLES = [UsedNonce.__table__, TokenUse.__table__, IssuedQuery.__table__]  # type: ignore[attr-defined]


def nonce_digest(nonce: bytes) -> str:
    return hashlib.sha256(nonce).hexdigest()


@dataclass(frozen=True)
class QueryIssue:
    """What one transaction must record when a score query is issued."""

    query_id: str
    query_hash: bytes
    nonce: bytes
    relying_party: str
    token_id: str
    max_uses: int
    purpose_id: str
    participants: tuple[str, ...]
    year: int
    issued_at: int
    expires_at: int

    def log_fields(self) -> dict[str, object]:
        return {
            "query_id": self.query_id,
            "query_hash": self.query_hash.hex(),
            "token_id": self.token_id,
            "purpose": self.purpose_id,
            "relying_party": self.relying_party,
            "participants": list(self.participants),
            "year": self.year,
        }


class CoordinatorStore:
    """Nonces, token uses and issued queries, written together with the audit log."""

    def __init__(self, engine: Engine, log: EventLog) -> None:
        self.engine = engine
        self.log = log
        SQLModel.metadata.create_all(engine, tables=COORDINATOR_TABLES)

    def issue(self, issue: QueryIssue) -> LogRef:
        """Spend the nonce and one token use and log "query_issued", all or nothing.

        Raises `AlreadyExists REPLAYED_NONCE` or `ResourceExhausted USE_LIMIT_REACHED`;
        on either nothing is stored.
        """
        try:
            return self._issue_once(issue)
        except IntegrityError as exc:
            # A concurrent transaction inserted the same nonce or the token's first use
            # between our read and our insert; the database refused ours, nothing is kept.
            if self.nonce_seen(issue.nonce):
                raise AlreadyExists(
                    "this request nonce was already accepted", reason="REPLAYED_NONCE"
                ) from exc
        # Only the token's first-use row raced: try once more against the stored row.
        return self._issue_once(issue)

    def _issue_once(self, issue: QueryIssue) -> LogRef:
        digest = nonce_digest(issue.nonce)
        with Session(self.engine) as session:
            check_replay(session.get(UsedNonce, digest) is not None)
            use = session.get(TokenUse, issue.token_id, with_for_update=True)
            if use is None:
                use = TokenUse(token_id=issue.token_id)
            check_use_limit(use.uses, issue.max_uses)
            use.uses += 1
            use.last_used_at = issue.issued_at
            session.add(use)
            session.add(
                UsedNonce(
                    nonce_hash=digest,
                    relying_party=issue.relying_party,
                    accepted_at=issue.issued_at,
                )
            )
            # Flush first so a duplicate nonce fails before anything reaches the log.
            session.flush()
            ref = self.log.append(session, "query_issued", issue.log_fields())
            session.add(
                IssuedQuery(
                    query_id=issue.query_id,
                    query_hash=issue.query_hash.hex(),
                    token_id=issue.token_id,
                    purpose_id=issue.purpose_id,
                    relying_party=issue.relying_party,
                    year=issue.year,
                    log_index=ref.index,
                    issued_at=issue.issued_at,
                    expires_at=issue.expires_at,
                )
            )
            session.commit()
        return ref

    def finish(
        self, query_id: str, outcome: str, kind: str, fields: Mapping[str, object]
    ) -> LogRef:
        """Record how an issued query ended and log it in the same transaction."""
        with Session(self.engine) as session:
            row = session.get(IssuedQuery, query_id)
            if row is not None:
                row.outcome = outcome
                session.add(row)
            ref = self.log.append(session, kind, dict(fields))
            session.commit()
        return ref

    def refuse(self, fields: Mapping[str, object]) -> LogRef:
        """Log a refused score request (nothing else is stored for it)."""
        return self.log.append_now("score_refused", dict(fields))

    def uses(self, token_id: str) -> int:
        with Session(self.engine) as session:
            use = session.get(TokenUse, token_id)
            return use.uses if use is not None else 0

    def nonce_seen(self, nonce: bytes) -> bool:
        with Session(self.engine) as session:
            return session.get(UsedNonce, nonce_digest(nonce)) is not None

    def query(self, query_id: str) -> IssuedQuery | None:
        with Session(self.engine) as session:
            return session.get(IssuedQuery, query_id)
