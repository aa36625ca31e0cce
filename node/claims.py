"""What a node spends to answer a score query, counted by the node itself.

Answering spends three things, each stored by the node in the answer's own transaction
(ARCHITECTURE.md step 4, docs/adr/0011), so a hostile coordinator cannot get around a limit
that only it used to count:
- the query id (REPLAYED_QUERY if it was answered before);
- the relying party's request nonce (REPLAYED_NONCE): one signed request, one query;
- one use of the consent token (USE_LIMIT_REACHED once the tighter of the token's and the
  purpose's limits is reached).

Invariants:
- Each claim is one statement that either takes or reports it could not (an insert that
  skips a taken key, a use counter that changes no row at its limit), so two concurrent
  writers can never both take the same id, nonce or last use.
- `take` takes all three or none: a claim that fails gives back the ones taken before it,
  and `give_back` returns all three of an item refused later in the same transaction.
  If the transaction rolls back, nothing was claimed. Counts survive restarts (they are rows).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, delete, select, update

from fedscore.errors import AlreadyExists, ResourceExhausted
from fedscore.protocol.requests import check_use_limit
from fedscore.runtime.db import insert_unless_present, use_counters
from fedscore.runtime.prepared import Cursor
from node.store import ACCEPTED_REQUEST, SEEN_QUERY, TOKEN_USE


@dataclass(frozen=True)
class Claim:
    """What answering one score query spends at this node."""

    query_id: str
    nonce_hash: bytes
    relying_party: str
    token_id: str
    max_uses: int  # 0: no limit beyond the token's validity window


class ClaimStatements:
    """The claim statements of one node database, built once (prepared on the query path)."""

    def __init__(self, engine: Engine) -> None:
        with engine.connect() as connection:
            self.seen_insert: Any = insert_unless_present(connection, SEEN_QUERY, "query_id")
            self.request_insert: Any = insert_unless_present(
                connection, ACCEPTED_REQUEST, "nonce_hash"
            )
            self.count_use, self.count_limited_use = use_counters(
                connection.dialect.name, TOKEN_USE
            )
        self.unclaim_query = delete(SEEN_QUERY).where(SEEN_QUERY.c.query_id == bindparam("id"))
        self.unclaim_request = delete(ACCEPTED_REQUEST).where(
            ACCEPTED_REQUEST.c.nonce_hash == bindparam("nonce")
        )
        self.give_back_use = (
            update(TOKEN_USE)
            .where(TOKEN_USE.c.token_id == bindparam("token"))
            .values(uses=TOKEN_USE.c.uses - 1)
        )
        self.uses_of = select(TOKEN_USE.c.uses).where(TOKEN_USE.c.token_id == bindparam("token"))

    def claim_query_id(self, executor: Cursor | Connection, query_id: str, now: int) -> None:
        """Record the query id, or raise `AlreadyExists REPLAYED_QUERY`.

        One space of ids for every question a node answers: score items claim theirs on
        the query path's cursor, statistics questions on the connection that also spends
        the budget. The insert skips a taken id instead of failing, so the transaction stays
        usable (to log the refusal) after a replay.
        """
        inserted = executor.execute(self.seen_insert, {"query_id": query_id, "seen_at": now})
        if int(inserted.rowcount) != 1:
            raise AlreadyExists(f"query {query_id!r} was already answered", "REPLAYED_QUERY")

    def take(self, cursor: Cursor, claim: Claim, now: int) -> None:
        """Claim the query id, the request nonce and one token use; all three or none."""
        self.claim_query_id(cursor, claim.query_id, now)
        request = {
            "nonce_hash": claim.nonce_hash,
            "relying_party": claim.relying_party,
            "accepted_at": now,
        }
        if int(cursor.execute(self.request_insert, request).rowcount) != 1:
            cursor.execute(self.unclaim_query, {"id": claim.query_id})
            raise AlreadyExists(
                "the relying party's request was already served", reason="REPLAYED_NONCE"
            )
        use = {"token": claim.token_id, "now": now}
        if claim.max_uses:
            counted = cursor.execute(self.count_limited_use, {**use, "max_uses": claim.max_uses})
        else:
            counted = cursor.execute(self.count_use, use)
        if int(counted.rowcount) == 1:
            return
        cursor.execute(self.unclaim_request, {"nonce": claim.nonce_hash})
        cursor.execute(self.unclaim_query, {"id": claim.query_id})
        row = cursor.execute(self.uses_of, {"token": claim.token_id}).fetchone()
        check_use_limit(int(row[0]) if row is not None else 0, claim.max_uses)
        raise ResourceExhausted("token use could not be counted", "USE_LIMIT_REACHED")

    def give_back(self, cursor: Cursor, claim: Claim) -> None:
        """Return everything `take` claimed for an item refused later in the transaction."""
        cursor.execute(self.give_back_use, {"token": claim.token_id})
        cursor.execute(self.unclaim_request, {"nonce": claim.nonce_hash})
        cursor.execute(self.unclaim_query, {"id": claim.query_id})
