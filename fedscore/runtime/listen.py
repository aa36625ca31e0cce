"""Whether a server can listen on an address, asked before gRPC is.

Two things go wrong when gRPC is the first to try a taken port:
- its C core writes a line of its own to stderr (`add_port.cc:... Failed to add port to
  server: ... Address already in use`) before grpcio raises, so an operator sees two
  messages where `fedscore` promises one line with a reason;
- it listens with SO_REUSEPORT, so a second gRPC server on a port that another gRPC
  server holds (the same party started twice) does not fail at all: both serve, and the
  kernel spreads the calls between them.

`fedscore serve` therefore tries the address with a plain socket first and refuses with
its own line; servers listen with SO_REUSEPORT off (`fedscore.runtime.rpc`), so a
process that takes the port between this check and gRPC's bind still makes the start
fail rather than share. (Silencing the C core with GRPC_VERBOSITY=NONE would have hidden
the line but also every other error the core reports, and not the shared port.)

The trial socket sets SO_REUSEADDR, as gRPC does, so connections of a server that just
stopped (TIME_WAIT) do not count as the address being in use.
"""

from __future__ import annotations

import errno
import socket

from fedscore.errors import FailedPrecondition, InvalidArgument

ADDRESS_IN_USE = "ADDRESS_IN_USE"
ADDRESS_NOT_AVAILABLE = "ADDRESS_NOT_AVAILABLE"
_HINT = "choose another with --bind HOST:PORT (or 'listen' in party.toml)"


def split_address(address: str) -> tuple[str, int]:
    """("host", port) of "host:port", "[v6]:port" or ":port" (every interface)."""
    host, colon, port_text = address.strip().rpartition(":")
    if not colon or not port_text.isdigit() or int(port_text) > 65535:
        raise InvalidArgument(f"{address!r} is not HOST:PORT", "BAD_ADDRESS")
    return host.strip("[]"), int(port_text)


def check_can_listen(address: str) -> None:
    """Raise ADDRESS_IN_USE or ADDRESS_NOT_AVAILABLE, naming `address`, if no server could
    listen there now; return quietly if one could (port 0, any free port, always can)."""
    host, port = split_address(address)
    if port == 0:
        return
    try:
        candidates = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as error:
        raise FailedPrecondition(
            f"cannot listen on {address}: {host} is not a name this machine can resolve "
            f"({error.strerror}); {_HINT}",
            ADDRESS_NOT_AVAILABLE,
        ) from error
    refused: list[OSError] = []
    for family, kind, protocol, _, where in candidates:
        with socket.socket(family, kind, protocol) as trial:
            trial.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                trial.bind(where)
            except OSError as error:
                if error.errno == errno.EADDRINUSE:
                    raise FailedPrecondition(
                        f"cannot listen on {address}: another process listens there (is this "
                        f"party already running?); stop it or {_HINT}",
                        ADDRESS_IN_USE,
                    ) from error
                refused.append(error)
    if refused and len(refused) == len(candidates):
        reason = (refused[0].strerror or str(refused[0])).lower()
        raise FailedPrecondition(
            f"cannot listen on {address}: {reason} (not an address of this machine?); {_HINT}",
            ADDRESS_NOT_AVAILABLE,
        ) from refused[0]
