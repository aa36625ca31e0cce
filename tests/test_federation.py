"""`federation init` and loading a party: what every process trusts at start."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from fedscore.apps.federation import CLIENT_PARTIES, free_ports, init_federation
from fedscore.errors import (
    FedscoreError,
    InvalidArgument,
    KeyFileError,
    PolicyError,
    Unauthenticated,
)
from fedscore.runtime.party import FederationPaths, load_party, read_passphrase
from fedscore.v1.envelope_pb2 import Envelope
from fedscore.v1.trust_pb2 import Participant, Role, Sector, TrustRegistry
from keys.keyfile import load_signing_key
from keys.registry import sign_registry


@pytest.fixture
def federation(tmp_path: Path) -> Path:
    init_federation(tmp_path / "fed", 3, fast_kdf=True)
    return tmp_path / "fed"


def test_init_writes_a_verifiable_federation(federation: Path) -> None:
    paths = FederationPaths(federation)
    for path in (
        paths.root_pub,
        paths.registry,
        paths.ca_cert,
        paths.policy_json,
        paths.policy_signed,
        paths.manifest,
        paths.passphrase,
    ):
        assert path.exists(), path
    assert oct(paths.passphrase.stat().st_mode & 0o777) == "0o600"
    trc = load_party(federation, "trc")
    assert trc.role == Role.ROLE_AGENCY
    assert {p.id for p in trc.trust.by_role(Role.ROLE_AGENCY)} == {"trc", "dsd", "chuangpao"}
    assert set(trc.policy.purpose("ptt-fuel-discount").participants) == {"trc", "dsd", "chuangpao"}
    # No secret is stored in the clear: the key file does not contain the TLS key PEM.
    assert b"PRIVATE KEY" not in paths.party_key("trc").read_bytes()
    assert b"PRIVATE KEY" not in (paths.offline / "ca.key").read_bytes()


def test_every_server_of_a_federation_gets_its_own_port(federation: Path) -> None:
    # Two parties on one port answer for each other: a client reaching the consent registry
    # met a node's certificate ("Hostname Verification Check failed").
    endpoints = [
        p.endpoint for p in load_party(federation, "trc").trust.registry.participants if p.endpoint
    ]
    assert len(endpoints) == 5
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
    registry = FederationPaths(federation).registry
    raw = bytearray(registry.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    registry.write_bytes(bytes(raw))
    with pytest.raises(FedscoreError) as refused:
        load_party(federation, "trc")
    assert refused.value.reason in {"BAD_REGISTRY", "MALFORMED_PAYLOAD", "BAD_SIGNATURE"}


def test_tampered_policy_is_refused(federation: Path) -> None:
    signed = FederationPaths(federation).policy_signed
    raw = signed.read_bytes()
    signed.write_bytes(raw.replace(b'"points":30', b'"points":90', 1))
    assert signed.read_bytes() != raw
    with pytest.raises(Unauthenticated):
        load_party(federation, "trc")


def test_a_key_file_of_another_party_is_refused(federation: Path) -> None:
    paths = FederationPaths(federation)
    paths.party_key("trc").write_bytes(paths.party_key("dsd").read_bytes())
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
    """Change the trust registry and sign it again, as the federation root would offline."""
    paths = FederationPaths(root)
    root_key = load_signing_key(paths.offline / "root.key", read_passphrase(root))
    envelope = Envelope.FromString(paths.registry.read_bytes())
    registry = TrustRegistry.FromString(envelope.payload)
    change(registry)
    registry.version += 1
    paths.registry.write_bytes(sign_registry(registry, root_key).SerializeToString())


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
    ("ptt is not admitted", _drop("ptt"),
     "RELYING_PARTY_NOT_REGISTERED", "purposes.ptt-fuel-discount.relying_parties: "),
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
    loadable = [pid for pid in parties if FederationPaths(federation).party_key(pid).exists()]
    assert len(loadable) == 8, loadable  # registry, coordinator, 3 agencies, 3 clients
    for party_id in loadable:
        if party_id == "ptt" and reason == "RELYING_PARTY_NOT_REGISTERED":
            continue  # ptt itself is no longer a participant at all
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
