"""`federation init` and loading a party: what every process trusts at start."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from fedscore.apps.authority import Authority
from fedscore.apps.custodian import sign_draft
from fedscore.apps.federation import CLIENT_PARTIES, CUSTODIANS, free_ports, init_federation
from fedscore.errors import (
    FedscoreError,
    InvalidArgument,
    KeyFileError,
    PolicyError,
    Unauthenticated,
)
from fedscore.runtime.org_paths import FederationPaths
from fedscore.runtime.party import load_party
from fedscore.v1.trust_pb2 import Participant, Role, Sector, TrustRegistry


@pytest.fixture
def federation(tmp_path: Path) -> Path:
    init_federation(tmp_path / "fed", 3, fast_kdf=True)
    return tmp_path / "fed"


def test_init_writes_a_verifiable_federation(federation: Path) -> None:
    paths = FederationPaths(federation)
    trc = paths.org("trc")
    for path in (
        trc.config,
        trc.key,
        trc.passphrase,
        trc.request,
        trc.tls_cert,
        trc.ca_cert,
        trc.registry_version(1),
        trc.policy_signed,
        paths.policy_json,
        paths.manifest,
    ):
        assert path.exists(), path
    assert oct(trc.passphrase.stat().st_mode & 0o777) == "0o600"
    party = load_party(federation, "trc")
    assert party.role == Role.ROLE_AGENCY
    assert {p.id for p in party.trust.by_role(Role.ROLE_AGENCY)} == {"trc", "dsd", "chuangpao"}
    assert set(party.policy.purpose("ptt-fuel-discount").participants) == {
        "trc",
        "dsd",
        "chuangpao",
    }
    assert party.chain.registry.root.threshold == 2
    assert len(party.chain.registry.root.keys) == 3
    # No secret is stored in the clear: the key files do not contain a TLS key PEM.
    assert b"PRIVATE KEY" not in trc.key.read_bytes()
    assert b"PRIVATE KEY" not in (paths.authority / "ca.key").read_bytes()


def test_every_organisation_has_its_own_loopback_address(federation: Path) -> None:
    endpoints = [
        p.endpoint for p in load_party(federation, "trc").trust.registry.participants if p.endpoint
    ]
    hosts = {endpoint.rsplit(":", 1)[0] for endpoint in endpoints}
    assert len(hosts) == len(endpoints) == 6  # registry, coordinator, 3 agencies, helper
    assert all(host.startswith("127.0.0.") and host != "127.0.0.1" for host in hosts)


def test_every_server_of_a_federation_gets_its_own_port(federation: Path) -> None:
    # Two parties on one port answer for each other: a client reaching the consent registry
    # met a node's certificate ("Hostname Verification Check failed").
    endpoints = [
        p.endpoint for p in load_party(federation, "trc").trust.registry.participants if p.endpoint
    ]
    assert len(endpoints) == 6
    assert len(set(endpoints)) == len(endpoints)


def test_free_ports_are_distinct_even_when_many_are_asked() -> None:
    ports = free_ports("127.0.0.1", 200)
    assert len(set(ports)) == 200
    assert all(1024 <= port <= 65535 for port in ports)


def test_init_refuses_a_folder_in_use(federation: Path) -> None:
    before = sorted(p.name for p in federation.iterdir())
    with pytest.raises(InvalidArgument) as refused:
        init_federation(federation, 3, fast_kdf=True)
    assert refused.value.reason == "FOLDER_NOT_EMPTY"
    assert sorted(p.name for p in federation.iterdir()) == before


def test_init_for_five_agencies(tmp_path: Path) -> None:
    layout = init_federation(tmp_path / "five", 5, fast_kdf=True)
    assert len(layout.agencies) == 5
    party = load_party(tmp_path / "five", layout.agencies[4])
    assert len(party.policy.purpose("self-view").participants) == 5


def test_wrong_passphrase_is_refused(federation: Path) -> None:
    with pytest.raises(KeyFileError):
        load_party(federation, "trc", passphrase="not the passphrase")


def test_tampered_registry_is_refused(federation: Path) -> None:
    registry = FederationPaths(federation).org("trc").registry_version(1)
    raw = bytearray(registry.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    registry.write_bytes(bytes(raw))
    with pytest.raises(FedscoreError) as refused:
        load_party(federation, "trc")
    assert refused.value.reason in {"BAD_REGISTRY", "BELOW_THRESHOLD"}


def test_tampered_policy_is_refused(federation: Path) -> None:
    signed = FederationPaths(federation).org("trc").policy_signed
    raw = signed.read_bytes()
    signed.write_bytes(raw.replace(b'"points":30', b'"points":90', 1))
    assert signed.read_bytes() != raw
    with pytest.raises(Unauthenticated):
        load_party(federation, "trc")


def test_a_key_file_of_another_party_is_refused(federation: Path) -> None:
    paths = FederationPaths(federation)
    paths.org("trc").key.write_bytes(paths.org("dsd").key.read_bytes())
    paths.org("trc").passphrase.write_bytes(paths.org("dsd").passphrase.read_bytes())
    with pytest.raises(KeyFileError) as refused:
        load_party(federation, "trc")
    assert refused.value.reason == "KEY_MISMATCH"


def test_init_assigns_relying_party_sectors(federation: Path) -> None:
    trust = load_party(federation, "regulator").trust
    assert trust.sector("ptt") == Sector.SECTOR_COMMERCIAL
    assert trust.sector("citizen-portal") == Sector.SECTOR_CITIZEN_AGENT
    for party_id in ("consent-registry", "coordinator", "trc", "regulator", "policy-authority"):
        assert trust.sector(party_id) == Sector.SECTOR_UNSPECIFIED, party_id


def test_init_refuses_a_public_service_relying_party_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    role, name, _ = CLIENT_PARTIES["ptt"]
    monkeypatch.setitem(CLIENT_PARTIES, "ptt", (role, name, Sector.SECTOR_PUBLIC_SERVICE))
    with pytest.raises(PolicyError) as refused:
        init_federation(tmp_path / "fed", 3, fast_kdf=True)
    assert refused.value.reason == "PURPOSE_GATES_PUBLIC_SERVICE"
    assert refused.value.message.startswith("purposes.ptt-fuel-discount.relying_parties: ")
    assert not (tmp_path / "fed").exists()


def _readmit(root: Path, change: Callable[[TrustRegistry], None]) -> None:
    """A new registry version with `change`, made as the authority and two custodians do,
    and delivered to every organisation (as their followers would fetch it)."""
    paths = FederationPaths(root)
    authority = Authority(paths.authority)
    registry = authority.draft_registry(int(time.time()))
    change(registry)
    authority.save_draft(registry)
    for name in CUSTODIANS[:2]:
        sign_draft(paths.custodian(name), authority.paths.draft)
    link = authority.publish()
    for org in paths.orgs.iterdir():
        target = FederationPaths(root).org(org.name).registry_version(link.version)
        target.write_bytes(authority.paths.version(link.version).read_bytes())


def _entry(registry: TrustRegistry, party_id: str) -> Participant:
    return next(p for p in registry.participants if p.id == party_id)


def _set_sector(party_id: str, sector: Sector) -> Callable[[TrustRegistry], None]:
    def change(registry: TrustRegistry) -> None:
        _entry(registry, party_id).sector = sector

    return change


def _drop(party_id: str) -> Callable[[TrustRegistry], None]:
    def change(registry: TrustRegistry) -> None:
        registry.participants.remove(_entry(registry, party_id))

    return change


HOSTILE_REGISTRIES = [
    ("ptt is a public-service provider", _set_sector("ptt", Sector.SECTOR_PUBLIC_SERVICE),
     "PURPOSE_GATES_PUBLIC_SERVICE", "purposes.ptt-fuel-discount.relying_parties: "),
    ("the portal is a public-service provider",
     _set_sector("citizen-portal", Sector.SECTOR_PUBLIC_SERVICE),
     "PURPOSE_GATES_PUBLIC_SERVICE", "purposes.self-view.relying_parties: "),
    ("ptt has no sector", _set_sector("ptt", Sector.SECTOR_UNSPECIFIED),
     "SECTOR_UNDECLARED", "purposes.ptt-fuel-discount.relying_parties: "),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "change", "reason", "path"), HOSTILE_REGISTRIES, ids=[c[0] for c in HOSTILE_REGISTRIES]
)
def test_no_party_loads_a_policy_for_an_inadmissible_relying_party(
    federation: Path,
    case: str,
    change: Callable[[TrustRegistry], None],
    reason: str,
    path: str,
) -> None:
    # The signed policy is unchanged and still verifies; only the registry's facts changed.
    _readmit(federation, change)
    parties = json.loads(FederationPaths(federation).manifest.read_text("utf-8"))["parties"]
    loadable = [pid for pid in parties if pid != "policy-authority"]
    # registry, coordinator, 3 agencies, 3 clients, the helper aggregator
    assert len(loadable) == 9, loadable
    for party_id in loadable:
        with pytest.raises(PolicyError) as refused:
            load_party(federation, party_id)
        assert refused.value.reason == reason, (case, party_id)
        assert refused.value.message.startswith(path), refused.value.message


@pytest.mark.integration
def test_no_server_starts_under_a_public_service_relying_party(federation: Path) -> None:
    _readmit(federation, _set_sector("ptt", Sector.SECTOR_PUBLIC_SERVICE))
    servers = ["consent-registry", "coordinator", "trc"]
    serve = [sys.executable, "-m", "fedscore.apps.cli.main", "serve", "--workdir", str(federation)]
    started = [
        subprocess.Popen(
            [*serve, "--party", party_id],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for party_id in servers
    ]
    try:
        # A server that started would serve until stopped: the timeout would fail the test.
        outputs = [process.communicate(timeout=60) for process in started]
    finally:
        for process in started:
            if process.poll() is None:
                process.kill()
                process.wait()
    for party_id, process, (stdout, stderr) in zip(servers, started, outputs, strict=True):
        assert process.returncode == 2, (party_id, stdout, stderr)
        assert stderr.startswith(
            "fedscore: error: PURPOSE_GATES_PUBLIC_SERVICE: "
            "purposes.ptt-fuel-discount.relying_parties: relying party 'ptt' is a "
            "public-service provider"
        ), stderr
        assert "serving" not in stdout


def test_a_relying_party_removed_later_does_not_stop_a_restart(federation: Path) -> None:
    """Removed while the policy still names it, ptt can sign nothing: every other party
    still loads (restarts), and ptt itself is no longer a participant."""
    _readmit(federation, _drop("ptt"))
    for party_id in ("consent-registry", "coordinator", "trc", "regulator"):
        assert "ptt-fuel-discount" in load_party(federation, party_id).policy.purposes
    with pytest.raises(FedscoreError) as refused:
        load_party(federation, "ptt")
    assert refused.value.reason == "UNKNOWN_PARTICIPANT"
