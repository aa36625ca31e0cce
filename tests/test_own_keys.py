"""Every organisation holds its own keys: what the folders hold, and the commands that
admit, rotate and remove through the authority and a threshold of custodians."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from fedscore.apps.authority import Authority
from fedscore.apps.cli.commands import certificate_renewal_due
from fedscore.apps.cli.main import main
from fedscore.apps.federation import CUSTODIANS, init_federation
from fedscore.errors import FedscoreError, NotFound
from fedscore.runtime.org_paths import FederationPaths, OrgPaths
from fedscore.runtime.party import load_party, load_party_config, read_passphrase
from fedscore.v1.trust_pb2 import AdmissionRequest
from keys.admission import make_request, read_request, verify_request
from keys.keyfile import load_secrets
from keys.signing import SigningKey
from keys.tls import certificate_not_after
from tests.harness.secrets import assert_secrets_stay_home


@pytest.fixture
def federation(tmp_path: Path) -> Path:
    init_federation(tmp_path / "fed", 3, fast_kdf=True)
    return tmp_path / "fed"


def test_no_private_key_is_outside_its_owners_folder(federation: Path) -> None:
    # Ten organisations (the helper aggregator among them), three custodians, the
    # authority: each with its own folder.
    assert assert_secrets_stay_home(federation) == 10 + 3 + 1


def _fedscore(*args: str | Path) -> int:
    return main([str(a) for a in args])


def _sign_and_publish(root: Path, signers: int = 2) -> int:
    paths = FederationPaths(root)
    for name in CUSTODIANS[:signers]:
        assert (
            _fedscore(
                "custodian", "sign", paths.custodian(name), paths.authority / "draft.registry"
            )
            == 0
        )
    return _fedscore("authority", "publish", paths.authority, "--no-offer")


def _deliver(root: Path, version: int) -> None:
    """What each party's follower fetches: the new version, into its own folder."""
    paths = FederationPaths(root)
    published = paths.authority / "registry" / f"v{version:06d}.signed"
    for org in paths.orgs.iterdir():
        shutil.copyfile(published, OrgPaths(org).registry_version(version))


def test_an_agency_joins_through_the_commands(
    federation: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = FederationPaths(federation)
    nso = federation / "elsewhere" / "nso"
    assert (
        _fedscore(
            "org", "init", nso, "--id", "nso", "--role", "agency", "--endpoint", "127.0.0.42:7100"
        )
        == 0
    )
    assert b"PRIVATE" not in (nso / "admission.request").read_bytes()
    assert _fedscore("authority", "admit", paths.authority, nso / "admission.request") == 0
    # One custodian is not enough: nothing is published, the draft stays.
    assert _sign_and_publish(federation, signers=1) == 2
    assert "BELOW_THRESHOLD" in capsys.readouterr().err
    assert not (paths.authority / "registry" / "v000002.signed").exists()
    assert _sign_and_publish(federation, signers=2) == 0
    bundle = federation / "nso.bundle"
    assert _fedscore("authority", "bundle", paths.authority, "--id", "nso", "--out", bundle) == 0
    assert _fedscore("org", "install", nso, bundle) == 0
    party = load_party_config(nso / "party.toml")
    assert party.chain.version == 2
    assert party.participant.endpoint == "127.0.0.42:7100"
    # The others follow the chain to version 2 and see the new agency.
    _deliver(federation, 2)
    assert load_party(federation, "trc").trust.participant("nso").endpoint == "127.0.0.42:7100"


def test_a_tampered_request_is_refused_and_changes_nothing(
    federation: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = FederationPaths(federation)
    nso = federation / "nso"
    _fedscore("org", "init", nso, "--id", "nso", "--role", "agency")
    raw = bytearray((nso / "admission.request").read_bytes())
    raw[-80] ^= 0x01
    (nso / "admission.request").write_bytes(bytes(raw))
    assert _fedscore("authority", "admit", paths.authority, nso / "admission.request") == 2
    assert "BAD_REQUEST" in capsys.readouterr().err or "BAD_CSR" in capsys.readouterr().err
    assert not (paths.authority / "draft.registry").exists()


def test_a_rotated_key_takes_over_and_the_old_one_lasts_its_overlap(federation: Path) -> None:
    paths = FederationPaths(federation)
    trc = paths.org("trc")
    old_key = load_party(federation, "trc").signing_key.verify_key
    assert _fedscore("org", "rotate-key", trc.root) == 0
    assert (
        _fedscore(
            "authority",
            "rotate",
            paths.authority,
            trc.rotation_request,
            "--overlap-seconds",
            "3600",
        )
        == 0
    )
    assert _sign_and_publish(federation) == 0
    _deliver(federation, 2)
    party = load_party(federation, "trc")
    assert party.signing_key.verify_key != old_key  # next.key became party.key
    assert not trc.next_key.exists() and any(trc.retired.iterdir())
    keyring = load_party(federation, "coordinator").trust.agency_keys()
    assert old_key.key_id in keyring and party.signing_key.key_id in keyring
    later = party.chain.view(party.trust.now + 3601).agency_keys()
    assert old_key.key_id not in later and party.signing_key.key_id in later


def test_a_rotation_endorsed_by_another_partys_key_is_refused(federation: Path) -> None:
    """dsd signs a well-formed rotation of trc's key with its own keys: trc's current key
    did not endorse it, so the authority refuses it and the draft does not change."""
    paths = FederationPaths(federation)
    dsd = load_secrets(paths.org("dsd").key, read_passphrase(paths.org("dsd").root))
    own = verify_request(read_request(paths.org("dsd").request.read_bytes()))
    new_key = SigningKey.generate()
    forged = AdmissionRequest()
    forged.CopyFrom(own)
    forged.participant_id = "trc"
    forged.signing_public_key = new_key.verify_key.encode()
    forged.replaces_signing_public_key = dsd.signing_key.verify_key.encode()
    (federation / "forged.request").write_bytes(
        make_request(forged, new_key, replaces=dsd.signing_key).SerializeToString()
    )
    with pytest.raises(FedscoreError) as refused:
        Authority(paths.authority).rotate(federation / "forged.request")
    assert refused.value.reason in {"NOT_CURRENT_KEY", "BAD_CSR"}
    assert not (paths.authority / "draft.registry").exists()


def test_a_removed_party_no_longer_loads(federation: Path) -> None:
    paths = FederationPaths(federation)
    assert _fedscore("authority", "remove", paths.authority, "--id", "ptt") == 0
    # ptt's purpose goes with it: the policy authority signs a policy without it, and the
    # authority publishes both together (no party loads a purpose for a party not admitted).
    document = json.loads(paths.policy_json.read_text("utf-8"))
    document["purposes"] = [p for p in document["purposes"] if "ptt" not in p["relying_parties"]]
    (federation / "policy.json").write_text(json.dumps(document), "utf-8")
    signed = federation / "policy.signed"
    authority_org = paths.org("policy-authority").root
    assert (
        _fedscore("policy", "sign", authority_org, federation / "policy.json", "--out", signed) == 0
    )
    for name in CUSTODIANS[:2]:
        assert (
            _fedscore(
                "custodian", "sign", paths.custodian(name), paths.authority / "draft.registry"
            )
            == 0
        )
    assert _fedscore("authority", "publish", paths.authority, "--no-offer", "--policy", signed) == 0
    _deliver(federation, 2)
    for org in paths.orgs.iterdir():
        shutil.copyfile(signed, OrgPaths(org).policy_signed)
    with pytest.raises(NotFound) as refused:
        load_party(federation, "ptt")
    assert refused.value.reason == "UNKNOWN_PARTICIPANT"
    trc = load_party(federation, "trc")
    assert list(trc.policy.purposes) == ["self-view"]


def test_root_rotation_needs_a_threshold_of_the_old_and_of_the_new_root(
    federation: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = FederationPaths(federation)
    fourth = paths.custodian("custodian-4")
    assert _fedscore("custodian", "init", fourth, "--name", "custodian-4") == 0
    new_root = [paths.custodian("custodian-2"), paths.custodian("custodian-3"), fourth]
    keys = [arg for folder in new_root for arg in ("--root-key", folder / "root.pub")]
    assert _fedscore("authority", "set-root", paths.authority, *keys, "--threshold", "2") == 0
    draft = paths.authority / "draft.registry"
    # custodian-1 (old only) and custodian-4 (new only): one of each side is not enough.
    for folder in (paths.custodian("custodian-1"), fourth):
        assert _fedscore("custodian", "sign", folder, draft) == 0
    assert _fedscore("authority", "publish", paths.authority, "--no-offer") == 2
    assert "BELOW_THRESHOLD" in capsys.readouterr().err
    # custodian-2 and custodian-3 belong to both roots: now both thresholds are met.
    for name in ("custodian-2", "custodian-3"):
        assert _fedscore("custodian", "sign", paths.custodian(name), draft, "--json") == 0
    signed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert any(change.startswith("root: 2 of 3 keys") for change in signed["changes"])
    assert _fedscore("authority", "publish", paths.authority, "--no-offer") == 0
    _deliver(federation, 2)
    assert load_party(federation, "trc").chain.registry.root.keys[-1].custodian == "custodian-4"
    # From now on custodian-1 alone with an old key cannot help make a version.
    assert _fedscore("authority", "renew-registry", paths.authority) == 0
    for folder in (paths.custodian("custodian-1"), paths.custodian("custodian-2")):
        assert _fedscore("custodian", "sign", folder, draft) == 0
    assert _fedscore("authority", "publish", paths.authority, "--no-offer") == 2
    assert _fedscore("custodian", "sign", fourth, draft) == 0
    assert _fedscore("authority", "publish", paths.authority, "--no-offer") == 0


def test_a_custodian_sees_what_a_draft_changes(
    federation: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = FederationPaths(federation)
    assert _fedscore("authority", "renew-registry", paths.authority) == 0
    capsys.readouterr()
    draft = paths.authority / "draft.registry"
    assert _fedscore("custodian", "sign", paths.custodian("custodian-1"), draft) == 0
    assert "nothing but its validity" in capsys.readouterr().out
    nso = federation / "nso"
    assert _fedscore("org", "init", nso, "--id", "nso", "--role", "agency") == 0
    assert _fedscore("authority", "admit", paths.authority, nso / "admission.request") == 0
    assert _fedscore("authority", "remove", paths.authority, "--id", "regulator") == 0
    capsys.readouterr()
    assert _fedscore("custodian", "sign", paths.custodian("custodian-1"), draft) == 0
    out = capsys.readouterr().out
    assert "adds nso (ROLE_AGENCY" in out and "removes regulator (ROLE_REGULATOR" in out


def test_a_policy_alone_is_published_only_if_every_party_would_load_it(
    federation: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = FederationPaths(federation)
    authority_org = paths.org("policy-authority").root
    document = json.loads(paths.policy_json.read_text("utf-8"))
    document["title"] = document["title"] + " (revised)"
    (federation / "revised.json").write_text(json.dumps(document), "utf-8")
    signed = federation / "revised.signed"
    assert (
        _fedscore("policy", "sign", authority_org, federation / "revised.json", "--out", signed)
        == 0
    )
    assert _fedscore("authority", "publish", paths.authority, "--no-offer", "--policy", signed) == 0
    assert (paths.authority / "policy.signed").read_bytes() == signed.read_bytes()
    # Signed by someone else (trc's key): refused, and the authority keeps what it had.
    forged = federation / "forged.signed"
    assert (
        _fedscore(
            "policy", "sign", paths.org("trc").root, federation / "revised.json", "--out", forged
        )
        == 0
    )
    capsys.readouterr()
    assert _fedscore("authority", "publish", paths.authority, "--no-offer", "--policy", forged) == 2
    assert "UNKNOWN_SIGNER" in capsys.readouterr().err
    assert (paths.authority / "policy.signed").read_bytes() == signed.read_bytes()


def test_a_server_says_when_its_certificate_needs_renewing(federation: Path) -> None:
    cert = FederationPaths(federation).org("trc").tls_cert.read_bytes()
    expires = certificate_not_after(cert).timestamp()
    assert certificate_renewal_due(cert, expires - 31 * 86400) is None
    soon = certificate_renewal_due(cert, expires - 10 * 86400)
    assert soon is not None and "10 days" in soon and "org renew-cert" in soon
    late = certificate_renewal_due(cert, expires + 1)
    assert late is not None and "expired" in late


def test_a_renewed_certificate_replaces_the_tls_key_and_the_old_one(federation: Path) -> None:
    paths = FederationPaths(federation)
    trc = paths.org("trc")
    before = load_party(federation, "trc")
    assert _fedscore("org", "renew-cert", trc.root) == 0
    assert b"PRIVATE" not in trc.renewal_request.read_bytes()
    out = federation / "trc.crt"
    assert _fedscore("authority", "renew", paths.authority, trc.renewal_request, "--out", out) == 0
    # Another party's certificate is not for trc's pending key: refused, nothing changes.
    other = paths.authority / "issued" / "dsd.crt"
    assert _fedscore("org", "install-cert", trc.root, other) == 2
    assert load_party(federation, "trc").tls.cert_pem == before.tls.cert_pem
    assert _fedscore("org", "install-cert", trc.root, out) == 0
    after = load_party(federation, "trc")
    assert after.tls.cert_pem == out.read_bytes() != before.tls.cert_pem
    assert after.tls.key_pem != before.tls.key_pem
    assert after.signing_key.key_id == before.signing_key.key_id
