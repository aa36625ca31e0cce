"""`federation init` and loading a party: what every process trusts at start."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedscore.errors import FedscoreError, InvalidArgument, KeyFileError, Unauthenticated
from fedscore.federation import init_federation
from fedscore.party import FederationPaths, load_party
from fedscore.v1.trust_pb2 import Role


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
