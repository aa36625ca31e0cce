"""One server log line per call, at INFO: method, calling participant, outcome, ms.

A real mutual-TLS server (fedscore.runtime.rpc) answers, refuses and is abandoned by its
caller; each call is one line, and no line holds what the request carried (a national
ID, a token).
"""

from __future__ import annotations

import asyncio
import logging
import re

import grpc
import grpc.aio
import pytest

from fedscore.errors import FedscoreError, PermissionDenied
from fedscore.runtime import logs
from fedscore.runtime.rpc import (
    TlsMaterial,
    call_unary,
    parse_request,
    secure_channel,
    start_server,
)
from fedscore.v1.trust_pb2 import Participant
from keys.national_id import with_check_digit
from keys.tls import create_ca, issue_certificate

SERVICE = "fedscore.test.Logged"
NATIONAL_ID = with_check_digit("110170012345")
TOKEN = "tok-" + "ab" * 16
LINE = re.compile(r"/fedscore\.test\.Logged/(\w+) from (\S+): (\w+) in (\d+\.\d) ms")


async def _answer(raw: bytes, context: grpc.aio.ServicerContext) -> Participant:
    return parse_request(raw, Participant)


async def _refuse(raw: bytes, context: grpc.aio.ServicerContext) -> Participant:
    parse_request(raw, Participant)
    raise PermissionDenied("consent withdrawn", reason="CONSENT_REVOKED")


async def _dawdle(raw: bytes, context: grpc.aio.ServicerContext) -> Participant:
    await asyncio.sleep(5)
    return parse_request(raw, Participant)


async def _three_calls() -> None:
    ca_key, ca_cert = create_ca("fed-test CA")
    tls = {}
    for party in ("coordinator", "ptt"):
        key_pem, cert_pem = issue_certificate(ca_key, ca_cert, party, ())
        tls[party] = TlsMaterial(ca_pem=ca_cert, cert_pem=cert_pem, key_pem=key_pem)
    methods = {"Answer": _answer, "Refuse": _refuse, "Dawdle": _dawdle}
    server = await start_server(tls["coordinator"], "127.0.0.1:0", {SERVICE: methods})
    # What a request might carry that must never be logged.
    request = Participant(id=NATIONAL_ID, display_name=TOKEN)
    try:
        async with secure_channel(f"127.0.0.1:{server.port}", tls["ptt"], "coordinator") as ch:
            await call_unary(ch, f"/{SERVICE}/Answer", request, Participant, timeout=10)
            with pytest.raises(FedscoreError):
                await call_unary(ch, f"/{SERVICE}/Refuse", request, Participant, timeout=10)
            with pytest.raises(FedscoreError):  # the caller gives up after 0.3 s
                await call_unary(ch, f"/{SERVICE}/Dawdle", request, Participant, timeout=0.3)
            await asyncio.sleep(0.3)  # the server sees the cancellation
    finally:
        await server.stop(0)


@pytest.mark.integration  # starts a gRPC server
def test_every_call_is_one_info_line_without_what_it_carried(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stop = logs.log_every_call()
    try:
        with caplog.at_level(logging.INFO, logger="fedscore.calls"):
            asyncio.run(_three_calls())
    finally:
        stop()
    lines = [r for r in caplog.records if r.name == "fedscore.calls"]
    assert all(r.levelno == logging.INFO for r in lines)
    seen = {}
    for record in lines:
        match = LINE.fullmatch(record.getMessage())
        assert match, record.getMessage()
        method, caller, reason, ms = match.groups()
        seen[method] = (caller, reason, float(ms))
    assert {m: (c, r) for m, (c, r, _) in seen.items()} == {
        "Answer": ("ptt", "OK"),
        "Refuse": ("ptt", "CONSENT_REVOKED"),
        "Dawdle": ("ptt", "CANCELLED"),
    }
    assert 250 <= seen["Dawdle"][2] < 5000  # it ran until its caller gave up
    everything = caplog.text + "".join(r.getMessage() for r in caplog.records)
    assert NATIONAL_ID not in everything and TOKEN not in everything


def test_an_answered_poll_is_debug_and_everything_else_info() -> None:
    from fedscore.runtime.calls import CallOutcome

    def level(method: str, reason: str) -> int:
        return logs.call_level(CallOutcome(method, "trc", reason, "OK", 0.001))

    assert level("/fedscore.v1.TrustService/GetTrust", "OK") == logging.DEBUG
    assert level("/fedscore.v1.ConsentService/GetStatusList", "OK") == logging.DEBUG
    assert level("/fedscore.v1.TrustService/GetTrust", "RATE_LIMITED") == logging.INFO
    assert level("/fedscore.v1.ConsentService/Grant", "OK") == logging.INFO
    assert level("/fedscore.v1.CoordinatorService/Score", "CONSENT_REVOKED") == logging.INFO
