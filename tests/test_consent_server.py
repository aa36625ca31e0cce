"""The consent registry as a real gRPC server on 127.0.0.1, called over mutual TLS.

The citizen portal calls with its own TLS material; revocation pushes land on tiny real
NodeService / CoordinatorService servers that verify each notice with RevocationState.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import grpc.aio
import pytest
from google.protobuf.message import Message
from receipt_privacy import leaks

from consent.server import Running, start
from consent.store import grant_count
from fedscore.apps.federation import init_federation
from fedscore.errors import Code, FedscoreError
from fedscore.protocol.status_list import RevocationState
from fedscore.protocol.tokens import verify_token
from fedscore.runtime.party import Party, load_party
from fedscore.runtime.rpc import (
    RunningServer,
    call_unary,
    parse_request,
    peer_common_name,
    secure_channel,
    start_server,
)
from fedscore.v1.consent_pb2 import (
    ConsentReceipt,
    ConsentStatusRequest,
    ConsentStatusResponse,
    GetStatusListRequest,
    GetStatusListResponse,
    GrantRequest,
    GrantResponse,
    ListGrantsRequest,
    ListGrantsResponse,
    RevocationNotice,
    RevokeRequest,
    RevokeResponse,
)
from fedscore.v1.query_pb2 import (
    NotifyRevocationRequest,
    NotifyRevocationResponse,
    PushRevocationRequest,
    PushRevocationResponse,
)
from fedscore.v1.trust_pb2 import Role
from keys.envelope import verify_message
from keys.national_id import with_check_digit
from keys.seal import open_subject

pytestmark = pytest.mark.integration

DAY = 86_400
TIMEOUT = 5.0
ALICE = with_check_digit("110170012345")
BOB = with_check_digit("310040099887")
WRONG_CHECK_DIGIT = ALICE[:12] + str((int(ALICE[12]) + 1) % 10)
SERVICE = "/fedscore.v1.ConsentService/"

M = type[Message]


@pytest.fixture
def federation(tmp_path: Path) -> Path:
    root = tmp_path / "federation"
    init_federation(root, fast_kdf=True)
    return root


class Caller:
    """One party's mutual-TLS channel to the registry."""

    def __init__(self, party: Party) -> None:
        endpoint = party.trust.participant("consent-registry").endpoint
        self.channel = secure_channel(endpoint, party.tls, "consent-registry")

    async def call(self, method: str, request: Message, response_type: M) -> Message:
        return await call_unary(self.channel, SERVICE + method, request, response_type, TIMEOUT)

    async def grant(self, national_id: str = ALICE, **changes: object) -> GrantResponse:
        now = int(time.time())
        request = GrantRequest(
            national_id=national_id,
            purpose_id="ptt-fuel-discount",
            relying_party="ptt",
            not_before=now - 60,
            not_after=now + 30 * DAY,
        )
        for name, value in changes.items():
            setattr(request, name, value)
        response = await self.call("Grant", request, GrantResponse)
        assert isinstance(response, GrantResponse)
        return response

    async def revoke(self, national_id: str, token_id: str) -> RevokeResponse:
        request = RevokeRequest(national_id=national_id, token_id=token_id)
        response = await self.call("Revoke", request, RevokeResponse)
        assert isinstance(response, RevokeResponse)
        return response


class Recorder:
    """A stand-in agency node or coordinator that verifies and records pushed notices."""

    def __init__(self, party: Party) -> None:
        self.party = party
        self.state = RevocationState(party.trust.registry_keys())
        self.notices: list[RevocationNotice] = []
        self.callers: list[str] = []

    def handler(
        self, request_type: M, response_type: Callable[..., Message]
    ) -> Callable[[bytes, grpc.aio.ServicerContext], Awaitable[Message]]:
        async def receive(raw: bytes, context: grpc.aio.ServicerContext) -> Message:
            request = parse_request(raw, request_type)
            self.notices.append(self.state.apply_notice(request.notice))
            self.callers.append(peer_common_name(context))
            return response_type(party=self.party.id)

        return receive

    async def serve(self) -> RunningServer:
        if self.party.role == Role.ROLE_COORDINATOR:
            service = "fedscore.v1.CoordinatorService"
            method = {"PushRevocation": self.handler(PushRevocationRequest, PushRevocationResponse)}
        else:
            service = "fedscore.v1.NodeService"
            method = {
                "NotifyRevocation": self.handler(NotifyRevocationRequest, NotifyRevocationResponse)
            }
        return await start_server(
            self.party.tls, self.party.participant.endpoint, {service: method}
        )


def _stored(running: Running) -> tuple[int, int]:
    with running.engine.connect() as connection:
        return grant_count(connection), running.registry.log.size()


def _log(running: Running, kind: str) -> list[dict[str, object]]:
    log = running.registry.log
    return [e.fields for e in log.entries(0, log.size()) if e.kind == kind]


def test_grant_over_mutual_tls(federation: Path) -> None:
    async def scenario() -> None:
        registry = load_party(federation, "consent-registry")
        running = await start(registry)
        portal = Caller(load_party(federation, "citizen-portal"))
        try:
            assert registry.participant.endpoint.endswith(f":{running.port}")
            response = await portal.grant()
        finally:
            await portal.channel.close()
            await running.stop()
        token = verify_token(response.token, registry.trust, int(time.time())).token
        receipt = verify_message(
            response.receipt, ConsentReceipt, registry.trust.registry_keys()
        ).payload
        assert receipt.token_id == token.token_id and leaks(receipt, ALICE) == []
        for sealed in token.sealed_subjects:
            agency = load_party(federation, sealed.agency_id)
            assert open_subject(sealed.blob, agency.box, token.token_id, agency.id) == ALICE
        assert sorted(s.agency_id for s in token.sealed_subjects) == sorted(token.agencies)

    asyncio.run(scenario())


REFUSALS = [
    ("invalid national ID", "citizen-portal", {"national_id": WRONG_CHECK_DIGIT},
     Code.INVALID_ARGUMENT, "INVALID_NATIONAL_ID"),
    ("unknown purpose", "citizen-portal", {"purpose_id": "credit-check"},
     Code.PERMISSION_DENIED, "UNKNOWN_PURPOSE"),
    ("relying party not allowed", "citizen-portal", {"relying_party": "coordinator"},
     Code.PERMISSION_DENIED, "RELYING_PARTY_NOT_ALLOWED"),
    ("window too long", "citizen-portal", {"not_after": int(time.time()) + 400 * DAY},
     Code.INVALID_ARGUMENT, "WINDOW_TOO_LONG"),
    ("caller is the relying party", "ptt", {},
     Code.PERMISSION_DENIED, "CALLER_NOT_ALLOWED"),
    ("caller is an agency", "trc", {},
     Code.PERMISSION_DENIED, "CALLER_NOT_ALLOWED"),
]  # fmt: skip


def test_refused_grants_store_nothing(federation: Path) -> None:
    async def scenario() -> None:
        running = await start(load_party(federation, "consent-registry"))
        callers = {
            pid: Caller(load_party(federation, pid)) for pid in ("citizen-portal", "ptt", "trc")
        }
        try:
            for wrong, caller, change, code, reason in REFUSALS:
                with pytest.raises(FedscoreError) as refused:
                    await callers[caller].grant(**change)  # type: ignore[arg-type]
                assert (refused.value.code, refused.value.reason) == (code, reason), wrong
                assert _stored(running) == (0, 0), wrong
            for listing_caller in ("ptt", "trc"):
                with pytest.raises(FedscoreError) as refused:
                    await callers[listing_caller].call(
                        "ListGrants", ListGrantsRequest(national_id=ALICE), ListGrantsResponse
                    )
                assert refused.value.reason == "CALLER_NOT_ALLOWED"
        finally:
            for caller_ in callers.values():
                await caller_.channel.close()
            await running.stop()

    asyncio.run(scenario())


def test_revoke_pushes_at_once_and_a_down_party_does_not_fail_it(federation: Path) -> None:
    async def scenario() -> None:
        trc = Recorder(load_party(federation, "trc"))
        coordinator = Recorder(load_party(federation, "coordinator"))
        receivers = [await trc.serve(), await coordinator.serve()]  # dsd, chuangpao stay down
        running = await start(load_party(federation, "consent-registry"))
        portal = Caller(load_party(federation, "citizen-portal"))
        agency = Caller(trc.party)
        try:
            alice = await portal.grant(ALICE)
            bob = await portal.grant(BOB)
            token = verify_token(alice.token, trc.party.trust, int(time.time())).token
            with pytest.raises(FedscoreError) as refused:
                await portal.call(
                    "Revoke",
                    RevokeRequest(national_id=BOB, token_id=token.token_id),
                    RevokeResponse,
                )
            assert refused.value.reason == "NOT_YOUR_GRANT"
            assert trc.notices == []

            revoked = await portal.revoke(ALICE, token.token_id)
            receipt = ConsentReceipt.FromString(revoked.receipt.payload)
            assert receipt.event == "revoked"
            # Revoke answers after the push, so both live parties already know.
            for recorder in (trc, coordinator):
                assert [n.token_id for n in recorder.notices] == [token.token_id]
                assert recorder.callers == ["consent-registry"]
                with pytest.raises(FedscoreError) as denied:
                    recorder.state.check(token, int(time.time()))
                assert denied.value.reason == "CONSENT_REVOKED"
            assert _log(running, "revocation_push") == [
                {
                    "token_id": token.token_id,
                    "acknowledged": ["trc", "coordinator"],
                    "not_acknowledged": ["chuangpao", "dsd"],
                }
            ]

            status = await agency.call(
                "ConsentStatus",
                ConsentStatusRequest(token_id=token.token_id),
                ConsentStatusResponse,
            )
            assert isinstance(status, ConsentStatusResponse) and status.status == "revoked"

            # A party that missed the push learns it from the signed status list.
            listed = await agency.call(
                "GetStatusList", GetStatusListRequest(), GetStatusListResponse
            )
            assert isinstance(listed, GetStatusListResponse)
            fresh = RevocationState(trc.party.trust.registry_keys())
            fresh.apply_status_list(listed.status_list, int(time.time()))
            with pytest.raises(FedscoreError) as denied:
                fresh.check(token, int(time.time()))
            assert denied.value.reason == "CONSENT_REVOKED"
            now = int(time.time())
            fresh.check(verify_token(bob.token, trc.party.trust, now).token, now)

            again = await portal.revoke(ALICE, token.token_id)
            assert ConsentReceipt.FromString(again.receipt.payload).event == "revoked"
            assert len(trc.notices) == 1  # idempotent: nothing new to push
        finally:
            for caller in (portal, agency):
                await caller.channel.close()
            await running.stop()
            for receiver in receivers:
                await receiver.stop()

    asyncio.run(scenario())


def test_revoke_succeeds_with_every_party_down(federation: Path) -> None:
    async def scenario() -> None:
        running = await start(load_party(federation, "consent-registry"))
        portal = Caller(load_party(federation, "citizen-portal"))
        try:
            granted = await portal.grant()
            token_id = ConsentReceipt.FromString(granted.receipt.payload).token_id
            await portal.revoke(ALICE, token_id)
            (push,) = _log(running, "revocation_push")
            assert push["acknowledged"] == []
            assert sorted(push["not_acknowledged"]) == ["chuangpao", "coordinator", "dsd", "trc"]  # type: ignore[call-overload]
        finally:
            await portal.channel.close()
            await running.stop()

    asyncio.run(scenario())


def test_listing_shows_only_the_citizens_grants(federation: Path) -> None:
    async def scenario() -> None:
        running = await start(load_party(federation, "consent-registry"))
        portal = Caller(load_party(federation, "citizen-portal"))
        try:
            mine = [
                await portal.grant(ALICE),
                await portal.grant(ALICE, purpose_id="self-view", relying_party="citizen-portal"),
            ]
            await portal.grant(BOB)
            listed = await portal.call(
                "ListGrants", ListGrantsRequest(national_id=ALICE), ListGrantsResponse
            )
        finally:
            await portal.channel.close()
            await running.stop()
        assert isinstance(listed, ListGrantsResponse)
        expected = sorted(ConsentReceipt.FromString(g.receipt.payload).token_id for g in mine)
        assert sorted(g.token_id for g in listed.grants) == expected
        assert {g.status for g in listed.grants} == {"active"}

    asyncio.run(scenario())
