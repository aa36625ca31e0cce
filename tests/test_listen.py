"""Whether a server can listen, asked with a plain socket before gRPC (runtime/listen.py);
and gRPC servers that do not share a port (SO_REUSEPORT off)."""

from __future__ import annotations

import asyncio
import socket

import pytest

from fedscore.errors import FedscoreError
from fedscore.runtime.listen import check_can_listen, split_address
from fedscore.runtime.rpc import TlsMaterial, start_server
from keys.tls import create_ca, issue_certificate


def test_an_address_is_split_or_refused() -> None:
    assert split_address("127.0.0.2:7001") == ("127.0.0.2", 7001)
    assert split_address("[::1]:7001") == ("::1", 7001)
    assert split_address(":7001") == ("", 7001)
    for bad in ("127.0.0.2", "127.0.0.2:http", "host:70000"):
        with pytest.raises(FedscoreError) as refused:
            split_address(bad)
        assert refused.value.reason == "BAD_ADDRESS"


def test_a_free_port_and_port_0_can_be_listened_on() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    check_can_listen(f"127.0.0.1:{port}")
    check_can_listen("127.0.0.1:0")


@pytest.mark.parametrize("reuseport", [False, True])
def test_a_taken_port_is_in_use_however_it_was_taken(reuseport: bool) -> None:
    with socket.socket() as taken:
        if reuseport:  # as a gRPC server holds its port
            taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(FedscoreError) as refused:
            check_can_listen(f"127.0.0.1:{port}")
    assert refused.value.reason == "ADDRESS_IN_USE"
    assert f"127.0.0.1:{port}" in refused.value.message


def test_an_address_of_another_machine_is_named() -> None:
    with pytest.raises(FedscoreError) as refused:
        check_can_listen("192.0.2.1:7001")  # TEST-NET-1: no machine's own address
    assert refused.value.reason == "ADDRESS_NOT_AVAILABLE"
    with pytest.raises(FedscoreError) as unresolved:
        check_can_listen("no-such-host.invalid:7001")
    assert unresolved.value.reason == "ADDRESS_NOT_AVAILABLE"


@pytest.mark.integration  # starts gRPC servers
def test_two_grpc_servers_do_not_share_a_port() -> None:
    asyncio.run(_second_server_refused())


async def _second_server_refused() -> None:
    ca_key, ca_cert = create_ca("fed-test CA")
    key_pem, cert_pem = issue_certificate(ca_key, ca_cert, "trc", ())
    tls = TlsMaterial(ca_pem=ca_cert, cert_pem=cert_pem, key_pem=key_pem)
    first = await start_server(tls, "127.0.0.1:0", {})
    try:
        with pytest.raises(FedscoreError) as refused:
            await start_server(tls, f"127.0.0.1:{first.port}", {})
        assert refused.value.reason == "ADDRESS_IN_USE"
    finally:
        await first.stop(0)
