"""The agency node's query path: plain checks, and real nodes answering over mutual TLS.

Integration tests build a whole local federation in tmp_path, import records into each
agency node with `node.ingest.ingest_file`, run the real consent registry (tokens,
status list, revocation pushes) and every agency node as real gRPC servers on
127.0.0.1, and sign contribution queries with the real coordinator key.
`tests/test_node_refusals.py` reuses the `LiveFederation` harness defined here.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import grpc.aio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from audit.core.entries import LogEntry
from consent import server as consent_server
from fedscore.apps import client
from fedscore.apps.federation import init_federation
from fedscore.errors import FedscoreError
from fedscore.protocol.requests import AuthenticatedRequest
from fedscore.runtime.party import Party, load_party
from fedscore.runtime.rpc import call_unary, secure_channel
from fedscore.v1.consent_pb2 import ConsentToken, SealedSubject
from fedscore.v1.envelope_pb2 import Envelope
from fedscore.v1.query_pb2 import (
    QUESTION_KIND_SCORE,
    ContributeRequest,
    ContributeResponse,
    ContributionAnswer,
    ContributionQuery,
    LogPromise,
    QuerySpec,
    ScoreQuery,
)
from fedscore.v1.trust_pb2 import Role
from keys.envelope import sign_message, verify_message
from keys.masks import MODULUS
from keys.national_id import with_check_digit
from keys.seal import seal_subject
from node import server as node_server
from node.checks import (
    CLOCK_SKEW_SECONDS,
    RefusalNotes,
    SignedQuery,
    authenticate_query,
    check_freshness,
    check_log_promise,
    check_participants,
    check_year,
)
from node.ingest import ingest_file
from node.store import ACCEPTED_REQUEST, SEEN_QUERY, TOKEN_USE, NodeStore
from policies.defaults import default_policy_document
from policies.loader import parse_policy

CONTRIBUTE = "/fedscore.v1.NodeService/Contribute"
PURPOSE = "ptt-fuel-discount"
TIMEOUT = 10.0
DAY = 86_400
ALICE = with_check_digit("110170012345")
BOB = with_check_digit("310040099887")  # holds no records anywhere
BANGKOK = ZoneInfo("Asia/Bangkok")
FULL_SET = ("trc", "dsd", "chuangpao")
POLICY = parse_policy(default_policy_document(3))
FORBIDDEN_LOG_WORDS = ("national", "pseudonym", "contribution", "masked", ALICE, BOB)


# --- the federation harness ------------------------------------------------------------


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

    # -- consent tokens

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

    # -- contribution queries, as the coordinator sends them

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
        for name, value in changes.items():
            if isinstance(value, list):
                del getattr(spec, name)[:]
                getattr(spec, name).extend(value)
            else:
                setattr(spec, name, value)
        return spec

    def log_promise(self, spec_bytes: bytes, origin: str = "coordinator") -> Envelope:
        promise = LogPromise(
            origin=origin,
            index=7,
            leaf_hash=hashlib.sha256(b"leaf").digest(),
            query_hash=hashlib.sha256(spec_bytes).digest(),
            logged_at=int(time.time()),
        )
        return sign_message(promise, self.coordinator.signing_key)

    def query(
        self,
        spec: QuerySpec,
        agency: str,
        *,
        promise: Envelope | None = None,
        signer: Party | None = None,
        sealed: bytes | None = None,
    ) -> Envelope:
        """The signed ContributionQuery for `agency`, carrying its blob from the token."""
        spec_bytes = spec.SerializeToString(deterministic=True)
        token = ConsentToken.FromString(ScoreQuery.FromString(spec.request.payload).token.payload)
        blob = next((s.blob for s in token.sealed_subjects if s.agency_id == agency), b"")
        if sealed is not None:
            blob = sealed
        query = ContributionQuery(
            spec=spec_bytes,
            agency_id=agency,
            sealed_subject=blob,
            log_promise=promise if promise is not None else self.log_promise(spec_bytes),
        )
        return sign_message(query, (signer or self.coordinator).signing_key)

    async def contribute(self, agency: str, query: Envelope) -> ContributeResponse:
        """Send as the coordinator over mutual TLS; raises the node's FedscoreError."""
        return await call_unary(
            self.channels[agency],
            CONTRIBUTE,
            ContributeRequest(query=query),
            ContributeResponse,
            TIMEOUT,
        )

    # -- what a node holds

    def node(self, agency: str) -> node_server.Running:
        return self.nodes[agency]

    def seen_count(self, agency: str) -> int:
        with self.node(agency).node.store.engine.connect() as connection:
            return int(
                connection.execute(select(func.count()).select_from(SEEN_QUERY)).scalar_one()
            )

    def claim_counts(self, agency: str) -> tuple[int, int, int]:
        """Seen query ids, accepted request nonces, and token uses summed, at `agency`."""
        with self.node(agency).node.store.engine.connect() as connection:
            return (
                int(connection.execute(select(func.count()).select_from(SEEN_QUERY)).scalar_one()),
                int(
                    connection.execute(
                        select(func.count()).select_from(ACCEPTED_REQUEST)
                    ).scalar_one()
                ),
                int(
                    connection.execute(
                        select(func.coalesce(func.sum(TOKEN_USE.c.uses), 0))
                    ).scalar_one()
                ),
            )

    def record_count(self, agency: str) -> int:
        return self.node(agency).node.store.record_count()

    def log_entries(self, agency: str, start: int = 0) -> list[LogEntry]:
        log = self.node(agency).node.log
        return log.entries(start, log.size())

    def log_size(self, agency: str) -> int:
        return self.node(agency).node.log.size()


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


def verified_answer(live: LiveFederation, agency: str, response: ContributeResponse) -> Any:
    verified = verify_message(
        response.answer, ContributionAnswer, live.coordinator.trust.keyring(Role.ROLE_AGENCY)
    )
    assert verified.signer == agency
    return verified.payload


def assert_clean_log(entries: Iterable[LogEntry]) -> None:
    for entry in entries:
        text = entry.body.lower()
        for word in FORBIDDEN_LOG_WORDS:
            assert word.lower() not in text, (entry.kind, word)


# --- integration: real nodes answer -----------------------------------------------------


async def _ask_everyone(live: LiveFederation, token: Envelope) -> tuple[QuerySpec, dict[str, Any]]:
    spec = live.spec(token)
    responses = await asyncio.gather(
        *(live.contribute(a, live.query(spec, a)) for a in live.agencies)
    )
    answers = {
        agency: verified_answer(live, agency, response)
        for agency, response in zip(live.agencies, responses, strict=True)
    }
    return spec, answers


def test_masked_answers_of_all_nodes_sum_to_the_total(tmp_path: Path) -> None:
    root = make_federation(tmp_path)

    async def scenario() -> None:
        async with live_federation(root) as live:
            token = await live.grant(ALICE)
            before = {a: (live.seen_count(a), live.log_size(a)) for a in live.agencies}
            spec, answers = await _ask_everyone(live, token)
            spec_hash = hashlib.sha256(spec.SerializeToString(deterministic=True)).digest()
            for agency, answer in answers.items():
                assert answer.query_id == spec.query_id
                assert answer.agency_id == agency
                assert answer.query_hash == spec_hash
            total = sum(a.masked_value for a in answers.values()) % MODULUS
            assert total == sum(EXPECTED.values()) == 220

            token_id = ConsentToken.FromString(token.payload).token_id
            for agency in live.agencies:
                seen_before, log_before = before[agency]
                assert live.seen_count(agency) == seen_before + 1
                new = live.log_entries(agency, log_before)
                assert [e.kind for e in new] == ["query_answered"]
                request = ScoreQuery.FromString(spec.request.payload)
                assert new[0].fields == {
                    "query_id": spec.query_id,
                    "query_hash": spec_hash.hex(),
                    "kind": "score",
                    "purpose": PURPOSE,
                    "token_id": token_id,
                    "relying_party": "ptt",
                    "request_nonce_hash": hashlib.sha256(request.nonce).hexdigest(),
                    "year": spec.year,
                    "coordinator": "coordinator",
                    "promise_index": 7,
                    "promise_leaf_hash": hashlib.sha256(b"leaf").hexdigest(),
                }
                assert_clean_log(live.log_entries(agency))

    asyncio.run(scenario())


def test_every_node_answers_zero_for_a_person_it_holds_nothing_about(tmp_path: Path) -> None:
    root = make_federation(tmp_path)

    async def scenario() -> None:
        async with live_federation(root) as live:
            token = await live.grant(BOB)
            _, answers = await _ask_everyone(live, token)
            assert sum(a.masked_value for a in answers.values()) % MODULUS == 0
            # Each node still sent a masked value, indistinguishable from one with records.
            assert all(a.masked_value != 0 for a in answers.values())

    asyncio.run(scenario())


def test_a_token_used_again_is_opened_once_per_node_and_answered_alike(tmp_path: Path) -> None:
    root = make_federation(tmp_path)

    async def scenario() -> None:
        async with live_federation(root) as live:
            alice, bob = await live.grant(ALICE), await live.grant(BOB)
            totals = []
            for token in (alice, bob, alice, alice, bob):
                _, answers = await _ask_everyone(live, token)
                totals.append(sum(a.masked_value for a in answers.values()) % MODULUS)
            assert totals == [220, 0, 220, 220, 0]
            for agency in live.agencies:
                opened = live.nodes[agency].node.opened_subjects
                assert (len(opened), opened.misses, opened.hits) == (2, 2, 3)
                # What is remembered is the node's pseudonym, never the national ID.
                for value in opened.values():
                    assert re.fullmatch("[0-9a-f]{64}", value)

    asyncio.run(scenario())


def test_an_answer_never_equals_the_contribution(tmp_path: Path) -> None:
    """Over a sample of queries, no node ever sends its contribution in the clear."""
    root = make_federation(tmp_path)

    async def scenario() -> None:
        async with live_federation(root) as live:
            token = await live.grant(ALICE)
            seen: dict[str, set[int]] = {a: set() for a in live.agencies}
            for _ in range(8):
                _, answers = await _ask_everyone(live, token)
                assert sum(a.masked_value for a in answers.values()) % MODULUS == 220
                for agency, answer in answers.items():
                    assert answer.masked_value != EXPECTED[agency]
                    seen[agency].add(answer.masked_value)
            # A fresh query id gives a fresh mask: answers cannot be subtracted.
            assert all(len(values) == 8 for values in seen.values())

    asyncio.run(scenario())


def test_a_node_refuses_until_it_holds_a_status_list(tmp_path: Path) -> None:
    """Fail closed: with the registry down there is no status list, so no answer."""
    root = make_federation(tmp_path)

    async def scenario() -> None:
        async with live_federation(root, ["trc"], with_registry=False) as live:
            spec = live.spec(live.signed_token())
            with pytest.raises(FedscoreError) as refused:
                await live.contribute("trc", live.query(spec, "trc"))
            assert refused.value.reason == "STATUS_LIST_STALE"
            assert live.seen_count("trc") == 0
            last = live.log_entries("trc")[-1]
            assert last.kind == "query_refused"
            assert last.fields == {
                "reason": "STATUS_LIST_STALE",
                "query_id": spec.query_id,
                "purpose": PURPOSE,
            }

    asyncio.run(scenario())


def test_a_node_started_before_the_registry_answers_once_a_list_arrives(tmp_path: Path) -> None:
    root = make_federation(tmp_path)

    async def scenario() -> None:
        async with live_federation(root, ["trc"], with_registry=False) as live:
            live.registry_running = await consent_server.start(live.registry)
            # The follower retries in the background; wait for its list, not for a time.
            for _ in range(200):
                if live.node("trc").node.trust.revocations.sequence >= 0:
                    break
                await asyncio.sleep(0.05)
            spec = live.spec(live.signed_token())
            response = await live.contribute("trc", live.query(spec, "trc"))
            assert verified_answer(live, "trc", response).query_id == spec.query_id

    asyncio.run(scenario())


# --- unit: the plain checks --------------------------------------------------------------


@pytest.fixture(scope="module")
def parties(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Party]:
    root = tmp_path_factory.mktemp("unit") / "federation"
    init_federation(root, fast_kdf=True)
    return {pid: load_party(root, pid) for pid in ("coordinator", "trc", "consent-registry")}


def _unit_spec(**changes: Any) -> QuerySpec:
    now = int(time.time())
    spec = QuerySpec(
        query_id="q-unit",
        purpose_id=PURPOSE,
        participants=["trc", "dsd", "chuangpao"],
        issued_at=now,
        expires_at=now + 60,
        coordinator="coordinator",
        kind=QUESTION_KIND_SCORE,
    )
    for name, value in changes.items():
        setattr(spec, name, value)
    return spec


def _signed(parties: dict[str, Party], spec: QuerySpec, promise_origin: str) -> SignedQuery:
    coordinator = parties["coordinator"]
    spec_bytes = spec.SerializeToString()
    promise = LogPromise(origin=promise_origin, query_hash=hashlib.sha256(spec_bytes).digest())
    query = ContributionQuery(
        spec=spec_bytes, agency_id="trc", log_promise=sign_message(promise, coordinator.signing_key)
    )
    keyring = parties["trc"].trust.keyring(Role.ROLE_COORDINATOR)
    return authenticate_query(sign_message(query, coordinator.signing_key), keyring, "trc")


def test_freshness_allows_clock_skew_and_nothing_more() -> None:
    now = 1_800_000_000
    check_freshness(_unit_spec(issued_at=now + CLOCK_SKEW_SECONDS, expires_at=now), now)
    with pytest.raises(FedscoreError) as future:
        check_freshness(_unit_spec(issued_at=now + CLOCK_SKEW_SECONDS + 1, expires_at=now), now)
    assert future.value.reason == "QUERY_EXPIRED"
    with pytest.raises(FedscoreError) as expired:
        check_freshness(_unit_spec(issued_at=now - 100, expires_at=now - 1), now)
    assert expired.value.reason == "QUERY_EXPIRED"


def test_log_promise_must_come_from_the_coordinator_named_in_the_spec(
    parties: dict[str, Party],
) -> None:
    keyring = parties["trc"].trust.keyring(Role.ROLE_COORDINATOR)
    check_log_promise(_signed(parties, _unit_spec(), "coordinator"), keyring)
    for signed in (
        _signed(parties, _unit_spec(), "another-log"),
        _signed(parties, _unit_spec(coordinator="another-coordinator"), "coordinator"),
    ):
        with pytest.raises(FedscoreError) as refused:
            check_log_promise(signed, keyring)
        assert refused.value.reason == "BAD_LOG_PROMISE"


def test_a_promise_for_other_spec_bytes_is_refused(parties: dict[str, Party]) -> None:
    signed = _signed(parties, _unit_spec(), "coordinator")
    keyring = parties["trc"].trust.keyring(Role.ROLE_COORDINATOR)
    other = LogPromise(origin="coordinator", query_hash=hashlib.sha256(b"other").digest())
    signed.query.log_promise.CopyFrom(sign_message(other, parties["coordinator"].signing_key))
    with pytest.raises(FedscoreError) as refused:
        check_log_promise(signed, keyring)
    assert refused.value.reason == "BAD_LOG_PROMISE"
    signed.query.ClearField("log_promise")
    with pytest.raises(FedscoreError) as missing:
        check_log_promise(signed, keyring)
    assert missing.value.reason == "BAD_LOG_PROMISE"


def test_a_query_for_another_agency_is_refused_before_its_spec_is_read(
    parties: dict[str, Party],
) -> None:
    coordinator = parties["coordinator"]
    query = ContributionQuery(spec=b"\xff\xff", agency_id="dsd")
    keyring = parties["trc"].trust.keyring(Role.ROLE_COORDINATOR)
    with pytest.raises(FedscoreError) as refused:
        authenticate_query(sign_message(query, coordinator.signing_key), keyring, "trc")
    assert refused.value.reason == "WRONG_AGENCY"
    query.agency_id = "trc"
    with pytest.raises(FedscoreError) as malformed:
        authenticate_query(sign_message(query, coordinator.signing_key), keyring, "trc")
    assert malformed.value.reason == "MALFORMED_MESSAGE"


def test_the_year_is_the_one_the_relying_party_asked_within_the_purpose() -> None:
    new_year_bangkok = int(datetime(2027, 1, 1, 0, 30, tzinfo=BANGKOK).timestamp())
    purpose = POLICY.purpose(PURPOSE)  # PTT: this year and last year
    asked = AuthenticatedRequest(ScoreQuery(year=0, issued_at=new_year_bangkok), "ptt", Envelope())
    assert check_year(_unit_spec(year=2027), asked, POLICY, purpose, new_year_bangkok) == 2027
    for spec_year, reason in ((2026, "YEAR_MISMATCH"), (-1, "YEAR_MISMATCH")):
        with pytest.raises(FedscoreError) as refused:
            check_year(_unit_spec(year=spec_year), asked, POLICY, purpose, new_year_bangkok)
        assert refused.value.reason == reason
    for year, reason in ((2026, None), (2025, "YEAR_NOT_ALLOWED"), (2028, "YEAR_NOT_ALLOWED")):
        request = AuthenticatedRequest(
            ScoreQuery(year=year, issued_at=new_year_bangkok), "ptt", Envelope()
        )
        spec = _unit_spec(year=year)
        if reason is None:
            assert check_year(spec, request, POLICY, purpose, new_year_bangkok) == year
            continue
        with pytest.raises(FedscoreError) as refused:
            check_year(spec, request, POLICY, purpose, new_year_bangkok)
        assert refused.value.reason == reason


def test_notes_hold_only_authenticated_facts() -> None:
    notes = RefusalNotes()
    assert notes.fields() == {}
    notes.query_id = "q1"
    assert notes.fields() == {"query_id": "q1"}


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from([*FULL_SET, "other"]), max_size=6))
def test_only_the_exact_participant_set_passes(listed: list[str]) -> None:
    """Subsets, supersets and duplicates are refused: a subset would allow differencing."""
    spec = _unit_spec()
    spec.participants[:] = listed
    exact = sorted(listed) == sorted(FULL_SET)
    try:
        check_participants(spec, POLICY.purpose(PURPOSE), "trc")
    except FedscoreError as error:
        assert not exact
        assert error.reason == "PARTICIPANT_SET_MISMATCH"
    else:
        assert exact
