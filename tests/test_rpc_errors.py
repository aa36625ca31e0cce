"""Errors cross the wire unchanged: the transport-free `Code` is gRPC's numbering, and
every code, reason, message and retry delay a handler raises reaches the caller as the
same FedscoreError, over a real mutual-TLS server and inside a batch's item refusal."""

from __future__ import annotations

import asyncio

import grpc
import grpc.aio
import pytest

from fedscore.errors import Code, FedscoreError, RateLimited, error_class_for
from fedscore.runtime.rpc import (
    TlsMaterial,
    call_unary,
    parse_request,
    secure_channel,
    start_server,
)
from fedscore.runtime.statuses import error_from_refusal, item_refusal
from fedscore.v1.trust_pb2 import Participant
from keys.tls import create_ca, issue_certificate

SERVICE = "fedscore.test.Refuser"
METHOD = f"/{SERVICE}/Refuse"
FAILING = [code for code in Code if code is not Code.OK]  # OK cannot end a call in error


def test_code_is_numbered_as_grpc() -> None:
    assert {code.name: code.value for code in Code} == {
        status.name: status.value[0] for status in grpc.StatusCode
    }


def test_an_unknown_number_is_unknown() -> None:
    assert Code.of(99) is Code.UNKNOWN and Code.of(-1) is Code.UNKNOWN
    assert Code.of(14) is Code.UNAVAILABLE


def _error(code: Code, reason: str) -> FedscoreError:
    error = error_class_for(code)(f"refused with {code.name}: ส่วนที่ผิด", reason=reason)
    error.code = code
    return error


async def _refuse(raw: bytes, context: grpc.aio.ServicerContext) -> Participant:
    request = parse_request(raw, Participant)
    error = _error(Code[request.id], request.display_name)
    if request.id == "RESOURCE_EXHAUSTED":
        error.retry_after_seconds = 2.5
    raise error


async def _outcomes() -> dict[Code, FedscoreError]:
    ca_key, ca_cert = create_ca("fed-test CA")
    tls = {}
    for party in ("coordinator", "trc"):
        key_pem, cert_pem = issue_certificate(ca_key, ca_cert, party, ())
        tls[party] = TlsMaterial(ca_pem=ca_cert, cert_pem=cert_pem, key_pem=key_pem)
    server = await start_server(tls["coordinator"], "127.0.0.1:0", {SERVICE: {"Refuse": _refuse}})
    caught: dict[Code, FedscoreError] = {}
    try:
        async with secure_channel(f"127.0.0.1:{server.port}", tls["trc"], "coordinator") as ch:
            for code in FAILING:
                request = Participant(id=code.name, display_name=f"REASON_{code.value}")
                with pytest.raises(FedscoreError) as refused:
                    await call_unary(ch, METHOD, request, Participant, timeout=10)
                caught[code] = refused.value
    finally:
        await server.stop(0)
    return caught


@pytest.mark.integration
def test_every_code_reaches_the_caller_as_raised() -> None:
    caught = asyncio.run(_outcomes())
    assert sorted(caught) == FAILING
    for code, error in caught.items():
        assert (error.code, error.reason) == (code, f"REASON_{code.value}")
        assert type(error) is error_class_for(code)
        assert error.message == f"refused with {code.name}: ส่วนที่ผิด"
        expected_delay = 2.5 if code is Code.RESOURCE_EXHAUSTED else None
        assert error.retry_after_seconds == expected_delay


@pytest.mark.parametrize("code", FAILING, ids=lambda code: code.name)
def test_an_item_refusal_stands_for_the_error(code: Code) -> None:
    back = error_from_refusal(item_refusal(_error(code, "SOME_REASON")))
    assert (type(back), back.code, back.reason) == (error_class_for(code), code, "SOME_REASON")
    assert back.message == f"refused with {code.name}: ส่วนที่ผิด"


def test_a_subclass_keeps_its_code_and_reason_in_a_refusal() -> None:
    refusal = item_refusal(RateLimited("slow down", retry_after_seconds=1.0))
    assert (refusal.code, refusal.reason) == (Code.RESOURCE_EXHAUSTED.value, "RATE_LIMITED")
    assert error_from_refusal(refusal).code is Code.RESOURCE_EXHAUSTED
