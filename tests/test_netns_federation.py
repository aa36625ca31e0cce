"""The federation on a real multi-host network: every server organisation in its own
network namespace, joined by a bridge (tests/harness/netns.py).

The consent registry, the three agency nodes, the helper aggregator and the coordinator
each run `fedscore serve
--config orgs/<id>/party.toml` under `ip netns exec` in a namespace holding only `lo` and
one veth with its own address (10.77.N.k/24), plugged into a bridge in a namespace of its
own. The client parties (citizen portal, ptt, regulator, the federation authority) act
from the root namespace, which reaches the bridge at 10.77.N.1. Every certificate names its
organisation's address (`init_federation(..., hosts=..., port=7000)`): one port for all,
which only separate hosts allow.

Shown: each server's only listening socket is in its own namespace at its own address (not
on a loopback, not in the root namespace); a consented score asked as ptt and as the
citizen portal agrees with the export files; unplugging one agency from the bridge makes
the question fail with NODE_UNAVAILABLE naming that agency, and plugging it back heals it;
the authority's removal of ptt, published from the root namespace, reaches every server
across the bridge and ptt's next question is refused.

Where this machine cannot make namespaces (not root, no iproute2, refused), the tests are
skipped with the reason: the one place the suite skips, since every other integration test
already runs the parties on separate loopback addresses.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from fedscore.apps import client
from fedscore.apps.demo_data import DEMO_SEED, DemoData, expected_total, generate
from fedscore.apps.demo_live import policy_without
from fedscore.apps.demo_steps import cli, grant, reason, score
from fedscore.apps.federation import (
    COORDINATOR_ID,
    CUSTODIANS,
    HELPER_ID,
    POLICY_AUTHORITY_ID,
    REGISTRY_ID,
    ROOT_THRESHOLD,
    init_federation,
)
from fedscore.errors import FedscoreError
from fedscore.runtime.org_paths import FederationPaths
from fedscore.runtime.party import load_party
from fedscore.v1.envelope_pb2 import Envelope
from policies.defaults import default_policy_document
from policies.loader import canonical_json, parse_policy
from policies.model import Policy
from tests.harness.netns import NamespacedProcesses, NetnsNetwork, netns_unavailable

pytestmark = pytest.mark.integration

AGENCY_COUNT = 3
AGENCIES = list(parse_policy(default_policy_document(AGENCY_COUNT)).agencies)
# The order of their addresses (.2, .3, ...) and of their start.
SERVERS = [REGISTRY_ID, *AGENCIES, HELPER_ID, COORDINATOR_ID]
PORT = 7000
CITIZENS = 200
PTT = "ptt"
PTT_PURPOSE = "ptt-fuel-discount"
SELF_VIEW = "self-view"
PORTAL = "citizen-portal"
CUT = AGENCIES[1]
HEAL_SECONDS = 20.0


@dataclass
class Federation:
    root: Path
    network: NetnsNetwork
    processes: NamespacedProcesses
    data: DemoData
    policy: Policy
    ptt_token: str
    self_token: str
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def paths(self) -> FederationPaths:
        return FederationPaths(self.root)

    def total(self) -> int:
        return expected_total(self.data.files, self.policy, self.data.demo_citizen, self.data.year)


def _band(policy: Policy, total: int) -> str:
    reached = [b for b in policy.purposes[PTT_PURPOSE].bands if total >= b.min_points]
    return max(reached, key=lambda b: b.min_points).label


def _tail(path: Path, lines: int = 15) -> str:
    if not path.exists():
        return ""
    return "\n".join(path.read_text("utf-8", "replace").splitlines()[-lines:])


@pytest.fixture(scope="module")
def network() -> Iterator[NetnsNetwork]:
    why_not = netns_unavailable()
    if why_not is not None:
        pytest.skip(
            f"cannot create network namespaces here: {why_not} (the other integration tests "
            "run the parties on separate loopback addresses)"
        )
    started = time.monotonic()
    built = NetnsNetwork.build(SERVERS)
    print(f"network: {built.hosts} via {built.gateway} in {time.monotonic() - started:.2f} s")
    try:
        yield built
    finally:
        built.teardown()


@pytest.fixture(scope="module")
def federation(
    network: NetnsNetwork, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Federation]:
    timings: dict[str, float] = {}
    started = time.monotonic()
    base = tmp_path_factory.mktemp("netns")
    root = base / "federation"
    layout = init_federation(root, AGENCY_COUNT, fast_kdf=True, hosts=network.hosts, port=PORT)
    assert layout.agencies == AGENCIES
    assert {pid: layout.endpoints[pid] for pid in SERVERS} == {
        pid: f"{address}:{PORT}" for pid, address in network.hosts.items()
    }
    policy = load_party(root, "regulator").policy
    data = generate(base / "data", policy, AGENCIES, CITIZENS, seed=DEMO_SEED)
    for agency, path in data.files.items():
        _, report, _ = cli(
            root, "node", "ingest", "--workdir", str(root), "--agency", agency, str(path), "--json"
        )
        assert report["new_records"] > 0, report
    timings["init_and_ingest"] = time.monotonic() - started

    processes = NamespacedProcesses(root, network)
    try:
        started = time.monotonic()
        asyncio.run(processes.start_all(load_party(root, "regulator"), timeout=30))
        timings["start_servers"] = time.monotonic() - started
        started = time.monotonic()
        citizen = data.demo_citizen
        ptt_grant = grant(root, citizen, PTT_PURPOSE, PTT, days=30)
        self_grant = grant(root, citizen, SELF_VIEW, PORTAL, days=1)
        timings["grants"] = time.monotonic() - started
        yield Federation(
            root=root,
            network=network,
            processes=processes,
            data=data,
            policy=policy,
            ptt_token=ptt_grant["token_file"],
            self_token=self_grant["token_file"],
            timings=timings,
        )
    finally:
        processes.stop_all()
        for pid in SERVERS:
            print(f"--- {pid} serve.log (tail)\n{_tail(FederationPaths(root).org(pid).serve_log)}")
        print("timings: " + ", ".join(f"{k} {v:.2f} s" for k, v in timings.items()))


def test_each_server_listens_only_at_its_own_address_in_its_own_namespace(
    federation: Federation,
) -> None:
    network = federation.network
    pids = federation.processes.pids()
    for party, link in network.links.items():
        # The process is the server itself (`ip netns exec` execs), alive in its namespace.
        assert federation.processes.processes[party].poll() is None, party
        assert network.listeners(party) == [(f"{link.address}:{PORT}", pids[party])], party
    # The root namespace holds none of their sockets, on 127.0.0.1 or anywhere else.
    in_root = network.listeners(None)
    assert not [entry for entry in in_root if entry[1] in pids.values()], in_root
    # Inside the coordinator's own namespace, its loopback does not reach it either: it is
    # reachable only at its own address, on the bridge.
    probe = (
        "import socket, sys\n"
        "def reach(host):\n"
        "    try:\n"
        f"        socket.create_connection((host, {PORT}), timeout=2).close()\n"
        "        return 'open'\n"
        "    except OSError as error:\n"
        "        return type(error).__name__\n"
        "print(reach('127.0.0.1'), reach(sys.argv[1]))\n"
    )
    coordinator = network.links[COORDINATOR_ID].address
    done = subprocess.run(
        [*network.exec_prefix(COORDINATOR_ID), sys.executable, "-c", probe, coordinator],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    assert done.stdout.split() == ["ConnectionRefusedError", "open"]


def test_a_score_across_namespaces_agrees_with_the_export_files(federation: Federation) -> None:
    started = time.monotonic()
    _, band, _ = score(federation.root, PTT, federation.ptt_token)
    _, own, _ = score(federation.root, PORTAL, federation.self_token)
    federation.timings["two_scores"] = time.monotonic() - started
    total = federation.total()
    assert own["release"] == "score"
    assert own["value"] == total
    assert band["release"] == "band"
    assert band["value"] == _band(federation.policy, total)
    print(f"self-view {own['value']} (files: {total}), ptt band {band['value']!r}")


def test_an_agency_cut_off_the_bridge_fails_the_question_by_name_until_it_is_back(
    federation: Federation,
) -> None:
    total = federation.total()
    federation.network.cut(CUT)
    try:
        started = time.monotonic()
        code, _, stderr = score(federation.root, PORTAL, federation.self_token, expect_ok=False)
        federation.timings["refused_while_cut"] = time.monotonic() - started
        assert code != 0
        assert reason(stderr) == "NODE_UNAVAILABLE", stderr
        named = stderr.splitlines()[-1].split("did not answer:")[-1]
        assert [a.strip() for a in named.split(",")] == [CUT], stderr
    finally:
        federation.network.restore(CUT)

    # Plugged back in: the coordinator replaced the failed channel, so the next question
    # reaches the agency again (asked until it does, within HEAL_SECONDS).
    started = time.monotonic()
    attempts: list[str] = []
    while True:
        code, own, stderr = score(federation.root, PORTAL, federation.self_token, expect_ok=False)
        if code == 0:
            break
        attempts.append(reason(stderr))
        assert time.monotonic() - started < HEAL_SECONDS, attempts
        time.sleep(0.2)
    federation.timings["healed"] = time.monotonic() - started
    assert own["value"] == total
    timings = federation.timings
    print(
        f"cut {CUT}: refused after {timings['refused_while_cut']:.2f} s; answered again "
        f"{timings['healed']:.2f} s after it was plugged back ({len(attempts)} refusals between)"
    )


def test_a_removal_published_from_the_root_namespace_refuses_ptt_everywhere(
    federation: Federation,
) -> None:
    """Last in this module: it changes the federation."""
    root, paths = federation.root, federation.paths
    # ptt as it stands before the removal (its own folder still at version 1).
    ptt_before = load_party(root, PTT)
    token = Envelope.FromString(Path(federation.ptt_token).read_bytes())
    asyncio.run(client.score(ptt_before, token, PTT_PURPOSE))

    started = time.monotonic()
    draft = paths.authority / "draft.registry"
    cli(root, "authority", "remove", str(paths.authority), "--id", PTT)
    for name in CUSTODIANS[:ROOT_THRESHOLD]:
        cli(root, "custodian", "sign", str(paths.custodian(name)), str(draft))
    document = json.loads(paths.policy_json.read_text("utf-8"))
    source = root / "policy" / "policy-without-ptt.json"
    source.write_text(canonical_json(policy_without(document, PTT, 2)), "utf-8")
    signed = source.with_suffix(".signed")
    policy_authority = str(paths.org(POLICY_AUTHORITY_ID).root)
    cli(root, "policy", "sign", policy_authority, str(source), "--out", str(signed))
    _, published, _ = cli(
        root, "authority", "publish", str(paths.authority), "--policy", str(signed), "--json"
    )
    federation.timings["remove_sign_publish"] = time.monotonic() - started
    # Offered from the root namespace to every server, each across the bridge.
    assert published["registry_version"] == 2
    assert published["offered"] == {pid: "v2" for pid in SERVERS}

    # The coordinator refuses ptt's next question, signed with its old, now unknown key.
    with pytest.raises(FedscoreError) as refused:
        asyncio.run(client.score(ptt_before, token, PTT_PURPOSE))
    assert refused.value.reason == "UNKNOWN_SIGNER", refused.value
    # Through the CLI, ptt first follows the chain from the servers and learns it is gone.
    # Through the CLI, ptt first follows the chain from the servers (across the bridge),
    # learns it was removed, and refuses to act as a party the registry does not list.
    code, _, stderr = score(root, PTT, federation.ptt_token, expect_ok=False)
    assert code != 0
    assert "PARTY_REMOVED" in stderr, stderr
    assert reason(stderr) == "UNKNOWN_PARTICIPANT", stderr
    # The citizen's own view still works under the new version and policy.
    _, own, _ = score(root, PORTAL, federation.self_token)
    assert own["value"] == federation.total()
    print("ptt removed: the coordinator refuses UNKNOWN_SIGNER, ptt's CLI UNKNOWN_PARTICIPANT")
