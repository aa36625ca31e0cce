"""Mutual TLS with certificates from keys/tls.py, over the real fedscore.runtime.rpc server."""

from __future__ import annotations

import asyncio

import grpc
import grpc.aio
import pytest

from fedscore.errors import Code, FedscoreError
from fedscore.runtime.rpc import (
    TlsMaterial,
    call_unary,
    parse_request,
    peer_common_name,
    secure_channel,
    start_server,
)
from fedscore.v1.trust_pb2 import Participant
from keys.tls import create_ca, issue_certificate

pytestmark = pytest.mark.integration

SERVICE = "fedscore.test.Whoami"
METHOD = f"/{SERVICE}/Ask"

CA_KEY, CA_CERT = create_ca("fed-test CA")
OTHER_CA_KEY, OTHER_CA_CERT = create_ca("other CA")


def _material(ca_key: bytes, ca_cert: bytes, party_id: str, trust: bytes) -> TlsMaterial:
    key_pem, cert_pem = issue_certificate(ca_key, ca_cert, party_id, ())
    return TlsMaterial(ca_pem=trust, cert_pem=cert_pem, key_pem=key_pem)


async def _whoami(raw: bytes, context: grpc.aio.ServicerContext) -> Participant:
    request = parse_request(raw, Participant)
    # Echo who TLS says the caller is, next to who the caller claims to be.
    return Participant(id=peer_common_name(context), display_name=request.id)


async def _call(server_tls: TlsMaterial, client_tls: TlsMaterial) -> Participant:
    server = await start_server(server_tls, "127.0.0.1:0", {SERVICE: {"Ask": _whoami}})
    try:
        async with secure_channel(f"127.0.0.1:{server.port}", client_tls, "coordinator") as ch:
            return await call_unary(ch, METHOD, Participant(id="trc"), Participant, timeout=10)
    finally:
        await server.stop(0)


def test_mutual_tls_call_sees_the_client_certificate() -> None:
    server_tls = _material(CA_KEY, CA_CERT, "coordinator", CA_CERT)
    client_tls = _material(CA_KEY, CA_CERT, "trc", CA_CERT)
    answer = asyncio.run(_call(server_tls, client_tls))
    assert answer.id == "trc"
    assert answer.display_name == "trc"


def test_client_certificate_from_another_ca_is_rejected() -> None:
    server_tls = _material(CA_KEY, CA_CERT, "coordinator", CA_CERT)
    # The client trusts the real CA (so it accepts the server) but its own
    # certificate comes from another CA: the server must refuse the handshake.
    intruder = _material(OTHER_CA_KEY, OTHER_CA_CERT, "trc", CA_CERT)
    with pytest.raises(FedscoreError) as error:
        asyncio.run(_call(server_tls, intruder))
    assert error.value.code == Code.UNAVAILABLE


def test_server_certificate_from_another_ca_is_rejected() -> None:
    impostor = _material(OTHER_CA_KEY, OTHER_CA_CERT, "coordinator", CA_CERT)
    client_tls = _material(CA_KEY, CA_CERT, "trc", CA_CERT)
    with pytest.raises(FedscoreError) as error:
        asyncio.run(_call(impostor, client_tls))
    assert error.value.code == Code.UNAVAILABLE


def test_server_with_another_party_name_is_rejected() -> None:
    # A genuine federation certificate, but for "trc": a client dialling the
    # coordinator must not accept it.
    wrong_party = _material(CA_KEY, CA_CERT, "trc", CA_CERT)
    client_tls = _material(CA_KEY, CA_CERT, "dsd", CA_CERT)
    with pytest.raises(FedscoreError) as error:
        asyncio.run(_call(wrong_party, client_tls))
    assert error.value.code == Code.UNAVAILABLE
