"""One organisation, on its own host: makes its own keys, asks to be admitted, installs
what the federation authority sends back, rotates its key and renews its certificate.

Nothing here reads another organisation's folder, and nothing written for the authority
(`admission.request`, `rotation.request`, `renewal.request`) holds a secret: the secrets
(signing, sealing and TLS keys and, for an agency, the pseudonym key) stay in `party.key`,
encrypted with Argon2id (`keys.keyfile`).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import secrets
import time
from dataclasses import replace
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from fedscore.errors import FailedPrecondition, InvalidArgument
from fedscore.runtime.files import write_atomically
from fedscore.runtime.org_paths import BUNDLE_FORMAT, OrgPaths
from fedscore.runtime.party import read_passphrase, stored_chain
from fedscore.runtime.party_config import ROLE_NAMES, PartyConfig, load_config
from fedscore.v1.envelope_pb2 import Envelope
from fedscore.v1.trust_pb2 import AdmissionRequest, KeyRequest, SignedRegistry, TrustRegistry
from keys.admission import make_request, read_request, verify_request
from keys.keyfile import PartySecrets, load_secrets, save_secrets
from keys.registry_chain import ChainLink, follow, follow_from_genesis, registry_digest
from keys.signing import SigningKey
from keys.tls import create_csr
from policies.loader import load_policy
from policies.sectors import check_sectors
from policies.signing import sign_policy, verify_policy


def init_org(
    folder: Path,
    participant_id: str,
    role: str,
    *,
    display_name: str = "",
    endpoint: str = "",
    listen: str = "",
    fetch_registry_from: tuple[str, ...] = (),
    passphrase: str | None = None,
    fast_kdf: bool = False,
    now: int | None = None,
) -> OrgPaths:
    """Secrets, config and admission request of a new organisation in `folder`."""
    paths = OrgPaths(Path(folder))
    if role not in ROLE_NAMES:
        raise InvalidArgument(f"role {role!r} is not one of {sorted(ROLE_NAMES)}", "BAD_ROLE")
    if paths.key.exists() or paths.config.exists():
        raise InvalidArgument(
            f"{folder} already holds an organisation; choose a new folder", "FOLDER_NOT_EMPTY"
        )
    tls_key_pem, csr_pem = create_csr(participant_id)
    party_secrets = PartySecrets.generate(tls_key_pem)
    paths.root.mkdir(parents=True, exist_ok=True)
    if passphrase is None and not os.environ.get("FEDSCORE_PASSPHRASE"):
        passphrase = secrets.token_urlsafe(24)
        write_atomically(paths.passphrase, (passphrase + "\n").encode(), 0o600)
    save_secrets(
        paths.key, party_secrets, read_passphrase(paths.root, passphrase), fast_kdf=fast_kdf
    )
    config = PartyConfig(
        path=paths.config,
        id=participant_id,
        role=ROLE_NAMES[role],
        listen=listen or endpoint,
        endpoint=endpoint,
        key_folder=paths.root,
        fetch_registry_from=tuple(fetch_registry_from),
    )
    write_atomically(paths.config, config.to_toml().encode("utf-8"))
    request = AdmissionRequest(
        participant_id=participant_id,
        role=ROLE_NAMES[role],
        display_name=display_name or participant_id,
        endpoint=endpoint,
        signing_public_key=party_secrets.signing_key.verify_key.encode(),
        box_public_key=party_secrets.box.public_bytes,
        csr_pem=csr_pem,
        created_at=int(time.time()) if now is None else now,
    )
    write_atomically(
        paths.request, make_request(request, party_secrets.signing_key).SerializeToString()
    )
    return paths


def _read_bundle(raw: bytes) -> dict[str, object]:
    try:
        document = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidArgument("not an admission bundle (not JSON)", "BAD_BUNDLE") from exc
    if not isinstance(document, dict) or document.get("format") != BUNDLE_FORMAT:
        raise InvalidArgument(f"not an admission bundle (format {BUNDLE_FORMAT})", "BAD_BUNDLE")
    return document


def _b64(text: object, what: str) -> bytes:
    if not isinstance(text, str):
        raise InvalidArgument(f"the bundle's {what} is missing", "BAD_BUNDLE")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidArgument(f"the bundle's {what} is not base64", "BAD_BUNDLE") from exc


def install_bundle(folder: Path, raw: bytes) -> ChainLink:
    """Install the authority's answer: certificate, CA, registry chain, policy.

    The chain is verified from version 1 (and, if the organisation already trusts a
    chain, from the version it trusts: a bundle cannot roll it back); the organisation
    must be listed with the keys it holds; the policy must verify.
    """
    paths = OrgPaths(Path(folder))
    document = _read_bundle(raw)
    config = load_config(paths.config)
    if document.get("participant_id") != config.id:
        raise InvalidArgument(
            f"the bundle is for {document.get('participant_id')!r}, this folder is {config.id!r}",
            "BAD_BUNDLE",
        )
    registries = document.get("registries")
    if not isinstance(registries, list) or not registries:
        raise InvalidArgument("the bundle holds no registry chain", "BAD_BUNDLE")
    chain = [SignedRegistry.FromString(_b64(r, "registry")) for r in registries]
    link = follow_from_genesis(chain)
    if paths.registry_dir.exists() and any(paths.registry_dir.iterdir()):
        mine = stored_chain(paths)
        trusted = follow_from_genesis(mine)
        known = {registry_digest(s.registry) for s in mine}
        link = follow(trusted, [s for s in chain if registry_digest(s.registry) not in known])
    view = link.view(int(time.time()))
    participant = view.participant(config.id)
    party_secrets = load_secrets(paths.key, read_passphrase(paths.root))
    if participant.signing_public_key != party_secrets.signing_key.verify_key.encode():
        raise FailedPrecondition(
            f"the registry does not list this folder's signing key for {config.id}", "KEY_MISMATCH"
        )
    policy_raw = _b64(document.get("policy"), "policy")
    policy_envelope = Envelope.FromString(policy_raw)
    check_sectors(verify_policy(policy_envelope, view.policy_keys()), view.relying_party_sectors())
    for signed in chain:
        version = int(_version_of(signed))
        target = paths.registry_version(version)
        if not target.exists():
            write_atomically(target, signed.SerializeToString())
    write_atomically(paths.policy_signed, policy_raw)
    write_atomically(paths.ca_cert, str(document.get("ca_cert", "")).encode("ascii"))
    write_atomically(paths.tls_cert, str(document.get("tls_cert", "")).encode("ascii"))
    return link


def _version_of(signed: SignedRegistry) -> int:
    return int(TrustRegistry.FromString(signed.registry).version)


def rotate_key(folder: Path, *, fast_kdf: bool = False) -> Path:
    """A new signing key in `next.key` and a rotation request endorsed by the current key."""
    paths = OrgPaths(Path(folder))
    config = load_config(paths.config)
    passphrase = read_passphrase(paths.root)
    current = load_secrets(paths.key, passphrase)
    if paths.next_key.exists():
        raise FailedPrecondition(
            f"a rotation is already pending ({paths.next_key}); wait until the registry lists it",
            "ROTATION_PENDING",
        )
    new_key = SigningKey.generate()
    pending = replace(current, signing_seed=new_key.seed)
    save_secrets(paths.next_key, pending, passphrase, fast_kdf=fast_kdf)
    request = AdmissionRequest(
        participant_id=config.id,
        role=config.role,
        display_name=config.id,
        endpoint=config.endpoint,
        signing_public_key=new_key.verify_key.encode(),
        box_public_key=current.box.public_bytes,
        csr_pem=_csr_of(paths),
        created_at=int(time.time()),
        replaces_signing_public_key=current.signing_key.verify_key.encode(),
    )
    signed: KeyRequest = make_request(request, new_key, replaces=current.signing_key)
    write_atomically(paths.rotation_request, signed.SerializeToString())
    return paths.rotation_request


def _csr_of(paths: OrgPaths) -> bytes:
    return bytes(verify_request(read_request(paths.request.read_bytes())).csr_pem)


def sign_policy_document(folder: Path, policy_json: Path) -> bytes:
    """The policy authority signs a policy document with its own key (an Envelope)."""
    paths = OrgPaths(Path(folder))
    party_secrets = load_secrets(paths.key, read_passphrase(paths.root))
    envelope = sign_policy(load_policy(policy_json), party_secrets.signing_key)
    return bytes(envelope.SerializeToString())


def renew_cert(folder: Path, *, fast_kdf: bool = False) -> Path:
    """A new TLS key (kept in `renewal.key`) and a renewal request with its CSR."""
    paths = OrgPaths(Path(folder))
    config = load_config(paths.config)
    passphrase = read_passphrase(paths.root)
    current = load_secrets(paths.key, passphrase)
    tls_key_pem, csr_pem = create_csr(config.id)
    save_secrets(
        _renewal_key(paths),
        replace(current, tls_key_pem=tls_key_pem),
        passphrase,
        fast_kdf=fast_kdf,
    )
    request = AdmissionRequest(
        participant_id=config.id,
        role=config.role,
        display_name=config.id,
        endpoint=config.endpoint,
        signing_public_key=current.signing_key.verify_key.encode(),
        box_public_key=current.box.public_bytes,
        csr_pem=csr_pem,
        created_at=int(time.time()),
    )
    write_atomically(
        paths.renewal_request, make_request(request, current.signing_key).SerializeToString()
    )
    return paths.renewal_request


def _renewal_key(paths: OrgPaths) -> Path:
    return paths.root / "renewal.key"


def install_certificate(folder: Path, cert_pem: bytes, *, fast_kdf: bool = False) -> None:
    """Install a renewed certificate with the TLS key made for it; a restart serves it."""
    paths = OrgPaths(Path(folder))
    passphrase = read_passphrase(paths.root)
    if not _renewal_key(paths).exists():
        raise FailedPrecondition("no renewal is pending (run 'org renew-cert' first)", "NO_RENEWAL")
    renewed = load_secrets(_renewal_key(paths), passphrase)
    key = serialization.load_pem_private_key(renewed.tls_key_pem, password=None)
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    cert_public = (
        x509.load_pem_x509_certificate(cert_pem)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    if cert_public != public_pem:
        raise InvalidArgument(
            "the certificate is not for the pending renewal's key", "KEY_MISMATCH"
        )
    current = load_secrets(paths.key, passphrase)
    save_secrets(
        paths.key, replace(current, tls_key_pem=renewed.tls_key_pem), passphrase, fast_kdf=fast_kdf
    )
    write_atomically(paths.tls_cert, cert_pem)
    _renewal_key(paths).unlink()
