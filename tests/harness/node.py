"""Real agency nodes for the node tests, asked with the coordinator's real key.

`make_federation` builds a federation folder of three agencies in tmp_path and imports
known records into each node with `node.ingest.ingest_file` (Alice's, `EXPECTED`; Bob
holds none). `live_federation` runs the real consent registry (tokens, status list,
revocation pushes) and the chosen agency nodes as real gRPC servers on 127.0.0.1, each
reached over mutual TLS with the coordinator's certificate.

`LiveFederation` acts as the coordinator: it builds score specs (carrying a relying
party's own signed request) and statistics specs, signs them with the coordinator's
real key as a `ContributionBatch` or a `StatisticsQuery` (sent as an item of a
`HistogramBatchRequest`), sends them, and verifies every
answer with the agency keyring before believing it. It also reads what a node stored:
records, claims (query ids, request nonces, token uses), privacy spends and log entries.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import grpc.aio
from sqlalchemy import func, select

from audit.core.entries import LogEntry
from consent import server as consent_server
from fedscore.apps import client
from fedscore.apps.federation import init_federation
from fedscore.errors import FedscoreError, Unauthenticated
from fedscore.protocol.questions import SignedContributionAnswerBatch, SignedStatisticsAnswer
from fedscore.runtime.budget import PRIVACY_SPEND
from fedscore.runtime.party import Party, load_party
from fedscore.runtime.rpc import call_unary, secure_channel
from fedscore.runtime.statuses import error_from_refusal
from fedscore.v1.consent_pb2 import ConsentToken, SealedSubject
from fedscore.v1.envelope_pb2 import Envelope
from fedscore.v1.query_pb2 import (
    QUESTION_KIND_HISTOGRAM,
    QUESTION_KIND_SCORE,
    BatchedContributionQuery,
    ContributeBatchRequest,
    ContributeBatchResponse,
    ContributionAnswer,
    ContributionAnswerBatch,
    ContributionBatch,
    ContributionOutcome,
    LogPromise,
    QuerySpec,
    ScoreQuery,
)
from fedscore.v1.statistics_pb2 import (
    HistogramBatchRequest,
    HistogramBatchResponse,
    HistogramItem,
    HistogramOutcome,
    StatisticsAnswer,
    StatisticsQuery,
    StatisticsSpec,
)
from fedscore.v1.trust_pb2 import Role
from keys.envelope import sign_message
from keys.national_id import with_check_digit
from keys.seal import seal_subject
from node import server as node_server
from node.ingest import ingest_file
from node.store import ACCEPTED_REQUEST, SEEN_QUERY, TOKEN_USE, NodeStore

CONTRIBUTE_BATCH = "/fedscore.v1.NodeService/ContributeBatch"
NOTIFY_REVOCATION = "/fedscore.v1.NodeService/NotifyRevocation"
HISTOGRAM_BATCH = "/fedscore.v1.NodeStatisticsService/HistogramBatch"
PURPOSE = "ptt-fuel-discount"
RELEASE = "participation-by-domain-and-area"
TIMEOUT = 10.0
DAY = 86_400
ALICE = with_check_digit("110170012345")
BOB = with_check_digit("310040099887")  # holds no records anywhere
BANGKOK = ZoneInfo("Asia/Bangkok")
FULL_SET = ("trc", "dsd", "chuangpao")
FORBIDDEN_LOG_WORDS = ("national", "pseudonym", "contribution", "masked", ALICE, BOB)
# Where the coordinator says it logged a question (the harness's coordinator logs nothing).
PROMISE_INDEX = 7
PROMISE_LEAF = hashlib.sha256(b"leaf").digest()


def _this_year_instant() -> str:
    """An ISO time inside the current Bangkok year and already past."""
    now = datetime.now(BANGKOK)
    start = datetime(now.year, 1, 1, tzinfo=BANGKOK)
    return (start + (now - start) / 2).isoformat(timespec="seconds")


# Alice's certified records this year: TRC 2 x 70, DSD 30, Chuang Pao account 50 (capped at 50).
# Records last year, and uncertified ones, must not count.
def _exports(year_before: int) -> dict[str, str]:
    now = _this_year_instant()
    old = f"{year_before}-06-01T10:00:00+07:00"
    header = "national_id,indicator,occurred_at,quantity,certifier\n"
    return {
        "trc": header
        + f"{ALICE},TRC-BLOOD,{now},2,TRC Blood Centre\n"
        + f"{ALICE},TRC-STEM-CELL,{old},1,TRC Blood Centre\n"
        + f"{ALICE},TRC-PLASMA,{now},1,\n",
        "dsd": header + f"{ALICE},NAT-SKILL-TRAINING,{now},1,DSD Chiang Mai\n",
        "chuangpao": header + f"{ALICE},CP-ACCOUNT,{now},2,Chuang Pao SAO\n",
    }


EXPECTED = {"trc": 140, "dsd": 30, "chuangpao": 50}


def spec_bytes(spec: QuerySpec | StatisticsSpec) -> bytes:
    """The exact bytes the coordinator logs, hashes and sends."""
    return bytes(spec.SerializeToString(deterministic=True))


def outcome_of(outcome: ContributionOutcome) -> ContributionAnswer | FedscoreError:
    """One item's outcome: its masked answer, or its refusal as the error it stands for."""
    which = outcome.WhichOneof("outcome")
    if which == "answer":
        return outcome.answer
    if which == "refusal":
        return error_from_refusal(outcome.refusal)
    return Unauthenticated("an outcome with neither answer nor refusal", "BAD_ANSWER")


@dataclass(frozen=True)
class Stored:
    """What a node holds that a question could change (a refused one must change none)."""

    records: int
    seen_queries: int
    request_nonces: int
    token_uses: int
    privacy_spends: int
    spent_nano: int


@dataclass
class LiveFederation:
    """A federation folder with its parties loaded and some of its servers running."""

    root: Path
    parties: dict[str, Party]
    agencies: list[str]
    nodes: dict[str, node_server.Running] = field(default_factory=dict)
    channels: dict[str, grpc.aio.Channel] = field(default_factory=dict)
    registry_running: consent_server.Running | None = None

    @property
    def coordinator(self) -> Party:
        return self.parties["coordinator"]

    @property
    def registry(self) -> Party:
        return self.parties["consent-registry"]

    @property
    def policy_hash(self) -> str:
        return self.coordinator.policy.content_hash

    # -- consent tokens and relying parties' requests

    async def grant(self, national_id: str = ALICE, purpose: str = PURPOSE) -> Envelope:
        """A token issued by the running consent registry, as the citizen portal asks."""
        relying_party = "ptt" if purpose == PURPOSE else "citizen-portal"
        portal = self.parties["citizen-portal"]
        response = await client.grant(portal, national_id, purpose, relying_party, days=30)
        return response.token

    def signed_token(self, national_id: str = ALICE, **changes: Any) -> Envelope:
        """A token signed with the registry's real key, with chosen (possibly bad) fields."""
        now = int(time.time())
        token_id = secrets.token_hex(16)
        agencies = list(changes.pop("agencies", self.agencies))
        token = ConsentToken(
            token_id=token_id,
            purpose_id=PURPOSE,
            policy_hash=self.policy_hash,
            relying_party="ptt",
            agencies=agencies,
            domains=list(self.coordinator.policy.purpose(PURPOSE).domains),
            not_before=now - 60,
            not_after=now + DAY,
            legal_basis="PDPA s.19 consent",
            sealed_subjects=[
                SealedSubject(
                    agency_id=agency,
                    blob=seal_subject(
                        token_id, agency, national_id, self.registry.trust.box_public(agency)
                    ),
                )
                for agency in self.agencies
            ],
            # Far above what the registry hands out in a test, so never revoked by it.
            status_index=100_000 + secrets.randbelow(1000),
            issuer=self.registry.id,
            issued_at=now,
        )
        for name, value in changes.items():
            if isinstance(value, list):
                del getattr(token, name)[:]
                getattr(token, name).extend(value)
            else:
                setattr(token, name, value)
        return sign_message(token, self.registry.signing_key)

    def request(self, token: Envelope, *, signer: Party | None = None, **changes: Any) -> Envelope:
        """The relying party's own signed ScoreQuery for `token`, as it sends it."""
        granted = ConsentToken.FromString(token.payload)
        relying_party = str(changes.pop("relying_party", granted.relying_party or "ptt"))
        query = ScoreQuery(
            relying_party=relying_party,
            purpose_id=granted.purpose_id or PURPOSE,
            token=token,
            nonce=secrets.token_bytes(16),
            issued_at=int(time.time()),
            year=0,
        )
        for name, value in changes.items():
            setattr(query, name, value)
        return sign_message(query, (signer or self.parties[relying_party]).signing_key)

    # -- score questions, as the coordinator sends them: in signed batches

    def spec(
        self, token: Envelope, *, request: Envelope | None = None, **changes: Any
    ) -> QuerySpec:
        """The spec the coordinator sends every node, carrying the relying party's request."""
        now = int(time.time())
        spec = QuerySpec(
            query_id=secrets.token_hex(16),
            purpose_id=PURPOSE,
            policy_hash=self.policy_hash,
            year=self.coordinator.policy.current_year(now),
            participants=list(self.agencies),
            issued_at=now,
            expires_at=now + 60,
            coordinator=self.coordinator.id,
            request=request if request is not None else self.request(token),
            kind=QUESTION_KIND_SCORE,
        )
        _change(spec, changes)
        return spec

    def promise(self, asked: bytes, origin: str = "coordinator") -> LogPromise:
        """The coordinator's word that it logged the question whose bytes are `asked`."""
        return LogPromise(
            origin=origin,
            index=PROMISE_INDEX,
            leaf_hash=PROMISE_LEAF,
            query_hash=hashlib.sha256(asked).digest(),
            logged_at=int(time.time()),
        )

    def item(self, spec: QuerySpec, promise: LogPromise | None = None) -> BatchedContributionQuery:
        """One question of a batch: the spec's exact bytes and its log promise."""
        asked = spec_bytes(spec)
        return BatchedContributionQuery(
            spec=asked, log_promise=promise if promise is not None else self.promise(asked)
        )

    def batch(
        self,
        items: Sequence[BatchedContributionQuery],
        *,
        agencies: Sequence[str] | None = None,
        signer: Party | None = None,
    ) -> Envelope:
        """The ContributionBatch holding `items`, signed once (by the coordinator)."""
        batch = ContributionBatch(
            batch_id=secrets.token_hex(16),
            agency_ids=list(agencies if agencies is not None else self.agencies),
            issued_at=int(time.time()),
            queries=list(items),
        )
        return sign_message(batch, (signer or self.coordinator).signing_key)

    def verified_answers(
        self, agency: str, batch: Envelope, response: ContributeBatchResponse
    ) -> ContributionAnswerBatch:
        """The node's signed answers, checked to be `agency`'s and bound to `batch`."""
        keyring = self.coordinator.trust.agency_keys()
        signed = SignedContributionAnswerBatch.verify(response.answers, keyring)
        answers = signed.answers
        assert signed.signer == answers.agency_id == agency
        assert answers.batch_id == ContributionBatch.FromString(batch.payload).batch_id
        assert answers.batch_hash == hashlib.sha256(batch.payload).digest()
        return answers

    async def contribute_batch(self, agency: str, batch: Envelope) -> ContributionAnswerBatch:
        """Send a signed batch over mutual TLS; the node's verified answers (one per item).

        Raises the node's FedscoreError if it refused the batch as a whole.
        """
        response = await call_unary(
            self.channels[agency],
            CONTRIBUTE_BATCH,
            ContributeBatchRequest(batch=batch),
            ContributeBatchResponse,
            TIMEOUT,
        )
        return self.verified_answers(agency, batch, response)

    async def contribute(
        self, agency: str, spec: QuerySpec, promise: LogPromise | None = None
    ) -> ContributionAnswer:
        """Ask one question, as a batch of one; raises its refusal as a FedscoreError."""
        batch = self.batch([self.item(spec, promise)])
        answers = await self.contribute_batch(agency, batch)
        [outcome] = answers.outcomes
        answer = outcome_of(outcome)
        if isinstance(answer, FedscoreError):
            raise answer
        return answer

    # -- statistics questions, one signed StatisticsQuery per node

    @property
    def helper_id(self) -> str:
        """The helper aggregator the registry lists (docs/adr/0019)."""
        [helper] = self.coordinator.trust.by_role(Role.ROLE_HELPER_AGGREGATOR)
        return helper.id

    def stats_spec(self, **changes: Any) -> StatisticsSpec:
        """The spec of a node-side release, as the coordinator asks every node."""
        policy = self.coordinator.policy
        now = int(time.time())
        spec = StatisticsSpec(
            query_id=secrets.token_hex(16),
            release=RELEASE,
            policy_hash=policy.content_hash,
            year=policy.current_year(now),
            participants=list(policy.agencies),
            contribution_bound=policy.statistics_rules.release(RELEASE).contribution_bound,
            issued_at=now,
            expires_at=now + 60,
            coordinator=self.coordinator.id,
            kind=QUESTION_KIND_HISTOGRAM,
            helper=self.helper_id,
        )
        _change(spec, changes)
        return spec

    def signed_promise(self, asked: bytes, *, signer: Party | None = None) -> Envelope:
        return sign_message(self.promise(asked), (signer or self.coordinator).signing_key)

    def stats_query(
        self,
        spec: StatisticsSpec,
        agency: str,
        *,
        promise: Envelope | None = None,
        signer: Party | None = None,
    ) -> Envelope:
        """The StatisticsQuery for `agency`, with its signed log promise, signed."""
        asked = spec_bytes(spec)
        query = StatisticsQuery(
            spec=asked,
            agency_id=agency,
            log_promise=promise if promise is not None else self.signed_promise(asked),
        )
        return sign_message(query, (signer or self.coordinator).signing_key)

    def histogram_outcome(
        self, agency: str, outcome: HistogramOutcome
    ) -> StatisticsAnswer | FedscoreError:
        """One item's outcome: `agency`'s verified answer, or its refusal as the error."""
        which = outcome.WhichOneof("outcome")
        if which == "refusal":
            return error_from_refusal(outcome.refusal)
        if which != "answer":
            return Unauthenticated("an outcome with neither answer nor refusal", "BAD_ANSWER")
        keyring = self.coordinator.trust.agency_keys()
        signed = SignedStatisticsAnswer.verify(outcome.answer, keyring)
        assert signed.signer == signed.answer.agency_id == agency
        return signed.answer

    async def histogram_batch(
        self, agency: str, queries: Sequence[Envelope]
    ) -> list[StatisticsAnswer | FedscoreError]:
        """Send statistics queries in one request; one outcome each, in order.

        Raises the node's FedscoreError if it refused the request as a whole.
        """
        response = await call_unary(
            self.channels[agency],
            HISTOGRAM_BATCH,
            HistogramBatchRequest(items=[HistogramItem(query=query) for query in queries]),
            HistogramBatchResponse,
            TIMEOUT,
        )
        assert len(response.outcomes) == len(queries)
        return [self.histogram_outcome(agency, outcome) for outcome in response.outcomes]

    async def histogram(self, agency: str, query: Envelope) -> StatisticsAnswer:
        """Ask one statistics query, as a batch of one; the node's verified answer (raises
        its refusal as a FedscoreError)."""
        [outcome] = await self.histogram_batch(agency, [query])
        if isinstance(outcome, FedscoreError):
            raise outcome
        return outcome

    # -- what a node holds

    def node(self, agency: str) -> node_server.Running:
        return self.nodes[agency]

    def seen_count(self, agency: str) -> int:
        return self.stored(agency).seen_queries

    def stored(self, agency: str) -> Stored:
        """Records, claims and privacy spends at `agency`, counted in its database."""
        store = self.node(agency).node.store
        with store.engine.connect() as connection:

            def count(statement: Any) -> int:
                return int(connection.execute(statement).scalar_one())

            return Stored(
                records=store.record_count(),
                seen_queries=count(select(func.count()).select_from(SEEN_QUERY)),
                request_nonces=count(select(func.count()).select_from(ACCEPTED_REQUEST)),
                token_uses=count(select(func.coalesce(func.sum(TOKEN_USE.c.uses), 0))),
                privacy_spends=count(select(func.count()).select_from(PRIVACY_SPEND)),
                spent_nano=count(select(func.coalesce(func.sum(PRIVACY_SPEND.c.spent_nano), 0))),
            )

    def log_entries(self, agency: str, start: int = 0) -> list[LogEntry]:
        log = self.node(agency).node.log
        return log.entries(start, log.size())

    def log_size(self, agency: str) -> int:
        return self.node(agency).node.log.size()


def _change(spec: QuerySpec | StatisticsSpec, changes: dict[str, Any]) -> None:
    for name, value in changes.items():
        if isinstance(value, list):
            del getattr(spec, name)[:]
            getattr(spec, name).extend(value)
        else:
            setattr(spec, name, value)


def _ingest(root: Path, agencies: Iterable[str]) -> None:
    year_before = datetime.now(BANGKOK).year - 1
    for agency, text in _exports(year_before).items():
        if agency not in agencies:
            continue
        party = load_party(root, agency)
        path = root / f"{agency}-export.csv"
        path.write_text(text, encoding="utf-8")
        store = NodeStore(party.db_url)
        try:
            ingest_file(store, path, party.policy, agency, party.secrets.pseudonym_key)
        finally:
            store.dispose()


def make_federation(tmp_path: Path) -> Path:
    """A federation folder of three agencies in `tmp_path`, each holding Alice's records."""
    root = tmp_path / "federation"
    layout = init_federation(root, fast_kdf=True)
    _ingest(root, layout.agencies)
    return root


@asynccontextmanager
async def live_federation(
    root: Path, agencies: Iterable[str] | None = None, *, with_registry: bool = True
) -> AsyncIterator[LiveFederation]:
    """Start the consent registry (optional) and the given agency nodes (default: all)."""
    ids = ["consent-registry", "coordinator", "citizen-portal", "ptt", "trc", "dsd", "chuangpao"]
    parties = {pid: load_party(root, pid) for pid in ids}
    all_agencies = [p.id for p in parties["coordinator"].trust.by_role(Role.ROLE_AGENCY)]
    live = LiveFederation(root=root, parties=parties, agencies=all_agencies)
    try:
        if with_registry:
            live.registry_running = await consent_server.start(parties["consent-registry"])
        for agency in agencies if agencies is not None else all_agencies:
            live.nodes[agency] = await node_server.start(parties[agency])
            endpoint = parties["coordinator"].trust.participant(agency).endpoint
            live.channels[agency] = secure_channel(endpoint, live.coordinator.tls, agency)
        yield live
    finally:
        for channel in live.channels.values():
            await channel.close()
        for running in live.nodes.values():
            await running.stop()
        if live.registry_running is not None:
            await live.registry_running.stop()


def assert_clean_log(entries: Iterable[LogEntry]) -> None:
    """No entry holds a national ID, a pseudonym, a contribution or a masked value.

    Field names and values are searched, except a refusal's reason: a fixed code that may
    name what was refused (CONTRIBUTION_BOUND_NOT_ALLOWED).
    """
    for entry in entries:
        fields = {name: value for name, value in entry.fields.items() if name != "reason"}
        text = json.dumps(fields).lower()
        for word in FORBIDDEN_LOG_WORDS:
            assert word.lower() not in text, (entry.kind, word)
