"""A real multi-host layout on one machine: one network namespace per server organisation.

Layout (every name carries the run's tag, `fedscore<pid>`, so two runs never collide):

    root namespace (the test process: client parties)
      <tag>r  10.77.N.1/24 ──veth──┐
                                   │   namespace <tag>-hub: bridge br0, no address,
                                   │   one port per organisation (<tag>h1, <tag>h2, ...)
      namespace <tag>-<party> ─────┘   eth0 10.77.N.k/24 and lo, nothing else, no route out

The bridge lives in a namespace of its own, so the root namespace's firewall (its FORWARD
chain, bridge netfilter) never sees the traffic between organisations. The subnet's third
octet N is chosen under a lock among those no root-namespace address or route uses.

`netns_unavailable()` says why this machine cannot build it (not root, no `ip`, an
operation refused), or None. `NetnsNetwork.build` builds it; `teardown` removes the
root-namespace veth and every namespace (the bridge and all other veths go with them), and
fails if anything of this run is left. `NamespacedProcesses` runs each server with
`ip netns exec <its namespace>` (which execs: the process's pid is the server's).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fedscore.apps.processes import FederationProcesses
from fedscore.runtime.org_paths import FederationPaths

SUBNET_PREFIX = "10.77"
BRIDGE = "br0"
LOCK_NAME = "fedscore-netns.lock"


class NetnsCommandError(RuntimeError):
    """An `ip` command failed; the message names it and its stderr."""


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run `ip ARGS`; raise NetnsCommandError naming the command if it fails and `check`."""
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False, timeout=30)
    if check and done.returncode != 0:
        raise NetnsCommandError(f"'ip {' '.join(args)}' failed: {done.stderr.strip()}")
    return done


def run_tag() -> str:
    return f"fedscore{os.getpid()}"


def netns_unavailable() -> str | None:
    """Why this machine will not let this process build the layout, or None if it will.

    It tries what the layout needs, in a probe namespace removed at once: a namespace, a
    bridge in it, and a veth pair.
    """
    if os.geteuid() != 0:
        return f"network namespaces need root; running as uid {os.geteuid()}"
    if shutil.which("ip") is None:
        return "no 'ip' command (iproute2) on PATH"
    probe = f"{run_tag()}-probe"
    try:
        ip("netns", "add", probe)
    except NetnsCommandError as error:
        return str(error)
    try:
        ip("-n", probe, "link", "add", BRIDGE, "type", "bridge")
        ip("-n", probe, "link", "add", "pa", "type", "veth", "peer", "name", "pb")
        ip("-n", probe, "link", "set", "pa", "master", BRIDGE)
    except NetnsCommandError as error:
        return str(error)
    finally:
        ip("netns", "del", probe, check=False)
    return None


@contextlib.contextmanager
def _subnet_lock() -> Iterator[None]:
    """Held while a run chooses its subnet and claims it with the root-namespace address."""
    folder = Path("/run/lock") if Path("/run/lock").is_dir() else Path(tempfile.gettempdir())
    with (folder / LOCK_NAME).open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _free_octet() -> int:
    """A third octet N such that no root-namespace address or route is in 10.77.N.0/24."""
    used = ip("-4", "-o", "addr", "show").stdout + ip("-4", "route", "show").stdout
    start = os.getpid() % 250
    for step in range(250):
        octet = (start + step) % 250 + 1
        if f"{SUBNET_PREFIX}.{octet}." not in used:
            return octet
    raise NetnsCommandError(f"every subnet {SUBNET_PREFIX}.1-250.0/24 is in use")


@dataclass(frozen=True)
class Link:
    """One organisation's namespace, its address, and its port on the bridge."""

    namespace: str
    address: str
    bridge_port: str  # the veth end in the hub namespace


@dataclass
class NetnsNetwork:
    tag: str
    hub: str
    root_end: str
    gateway: str  # the root namespace's address on the bridge
    links: dict[str, Link] = field(default_factory=dict)

    @classmethod
    def build(cls, parties: Sequence[str]) -> NetnsNetwork:
        """One namespace per party (addresses .2, .3, ... in order), a bridge, the root end."""
        tag = run_tag()
        network: NetnsNetwork | None = None
        try:
            with _subnet_lock():
                octet = _free_octet()
                subnet = f"{SUBNET_PREFIX}.{octet}"
                network = cls(
                    tag=tag, hub=f"{tag}-hub", root_end=f"fs{os.getpid()}r", gateway=f"{subnet}.1"
                )
                ip("netns", "add", network.hub)
                ip("-n", network.hub, "link", "add", BRIDGE, "type", "bridge")
                ip("-n", network.hub, "link", "set", BRIDGE, "up")
                # The root namespace's end; its peer is created straight in the hub.
                ip(
                    "link", "add", network.root_end, "type", "veth",
                    "peer", "name", "root", "netns", network.hub,
                )  # fmt: skip
                ip("-n", network.hub, "link", "set", "root", "master", BRIDGE, "up")
                ip("addr", "add", f"{network.gateway}/24", "dev", network.root_end)
                ip("link", "set", network.root_end, "up")
            for index, party in enumerate(parties, start=1):
                link = Link(
                    namespace=f"{tag}-{party}",
                    address=f"{subnet}.{index + 1}",
                    bridge_port=f"fs{os.getpid()}h{index}",
                )
                network.links[party] = link
                ip("netns", "add", link.namespace)
                ip("-n", link.namespace, "link", "set", "lo", "up")
                ip(
                    "link", "add", link.bridge_port, "netns", network.hub, "type", "veth",
                    "peer", "name", "eth0", "netns", link.namespace,
                )  # fmt: skip
                ip("-n", network.hub, "link", "set", link.bridge_port, "master", BRIDGE, "up")
                ip("-n", link.namespace, "addr", "add", f"{link.address}/24", "dev", "eth0")
                ip("-n", link.namespace, "link", "set", "eth0", "up")
        except BaseException:
            if network is not None:  # made before anything it names
                network.teardown()
            raise
        return network

    @property
    def hosts(self) -> dict[str, str]:
        return {party: link.address for party, link in self.links.items()}

    def namespaces(self) -> list[str]:
        return [self.hub, *(link.namespace for link in self.links.values())]

    def exec_prefix(self, party: str) -> list[str]:
        return ["ip", "netns", "exec", self.links[party].namespace]

    def cut(self, party: str) -> None:
        """Unplug `party` from the bridge (its port down; its eth0 loses carrier)."""
        ip("-n", self.hub, "link", "set", self.links[party].bridge_port, "down")

    def restore(self, party: str) -> None:
        ip("-n", self.hub, "link", "set", self.links[party].bridge_port, "up")

    def listeners(self, party: str | None = None) -> list[tuple[str, int | None]]:
        """(local address:port, owning pid) of every listening TCP socket in `party`'s
        namespace, or in the root namespace for None (`ss` run there)."""
        prefix = [] if party is None else self.exec_prefix(party)
        done = subprocess.run(
            [*prefix, "ss", "-Htlnp"],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )
        found: list[tuple[str, int | None]] = []
        for line in done.stdout.splitlines():
            columns = line.split()
            pid = re.search(r"pid=(\d+)", line)
            # An IPv6 socket bound to an IPv4 address shows it v4-mapped: [::ffff:a.b.c.d]:p.
            local = re.sub(r"^\[::ffff:([0-9.]+)\]", r"\1", columns[3])
            found.append((local, int(pid.group(1)) if pid else None))
        return found

    def leftovers(self) -> list[str]:
        """What of this run still exists: namespaces by name, the root-namespace veth."""
        names = {line.split()[0] for line in ip("netns", "list").stdout.splitlines() if line}
        left = sorted(n for n in names if n == self.tag or n.startswith(self.tag + "-"))
        if ip("link", "show", self.root_end, check=False).returncode == 0:
            left.append(f"link {self.root_end}")
        return left

    def teardown(self) -> None:
        """Remove everything this run made; fail naming what could not be removed.

        Deleting a namespace deletes its interfaces, and a veth goes with its peer: the
        bridge and every port go with the hub, each eth0 with its namespace. The root end
        is deleted first and explicitly (the kernel frees a namespace's devices later).
        """
        ip("link", "del", self.root_end, check=False)
        for namespace in reversed(self.namespaces()):
            ip("netns", "del", namespace, check=False)
        left = self.leftovers()
        if left:
            raise NetnsCommandError(f"not removed: {', '.join(left)}")


class NamespacedProcesses(FederationProcesses):
    """`FederationProcesses` whose servers each run inside their own namespace."""

    def __init__(self, workdir: Path, network: NetnsNetwork) -> None:
        super().__init__(workdir)
        self.network = network

    def start_party(self, party_id: str) -> subprocess.Popen[bytes]:
        org = FederationPaths(self.workdir).org(party_id)
        command = [
            *self.network.exec_prefix(party_id),
            sys.executable, "-m", "fedscore.apps.cli.main", "serve", "--config", str(org.config),
            "--migrate",
        ]  # fmt: skip
        with org.serve_log.open("ab") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=self.env)
        self.processes[party_id] = process
        return process

    def pids(self) -> dict[str, int]:
        return {party: process.pid for party, process in self.processes.items()}
