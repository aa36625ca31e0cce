"""`fedscore federation init`: everything a local federation needs, in one folder.

It plays the offline authorities once: the federation root signs the trust registry,
the federation CA issues every party's TLS certificate, the policy authority signs the
default policy. Their keys stay in `offline/`, encrypted; a party's own secrets stay in
`parties/<id>/party.key`, encrypted with Argon2id. Nothing is written if the folder
already holds a federation.

As the federation authority admitting parties, it assigns each relying party its sector
(`ptt` commercial, `citizen-portal` citizen agent; every other role unspecified) and
checks the policy against the registry it signed (`policies.sectors.check_sectors`)
before writing anything, so it never writes a federation whose parties would refuse to
start.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from fedscore.errors import InvalidArgument
from fedscore.runtime.party import FederationPaths
from fedscore.v1.trust_pb2 import Participant, Role, Sector, TrustRegistry
from keys.box import BoxKeyPair
from keys.keyfile import PartySecrets, save_pem_key, save_secrets, save_signing_key
from keys.registry import sign_registry, verify_registry
from keys.signing import SigningKey
from keys.tls import create_ca, issue_certificate
from policies.defaults import default_policy_document
from policies.loader import canonical_json, parse_policy
from policies.sectors import check_sectors
from policies.signing import sign_policy

REGISTRY_ID = "consent-registry"
COORDINATOR_ID = "coordinator"
POLICY_AUTHORITY_ID = "policy-authority"
# Client-only parties: role, display name and the sector the federation authority assigns.
CLIENT_PARTIES: dict[str, tuple[Role, str, Sector]] = {
    "ptt": (
        Role.ROLE_RELYING_PARTY,
        "PTT Public Company Limited (fuel discount partner)",
        Sector.SECTOR_COMMERCIAL,
    ),
    "citizen-portal": (
        Role.ROLE_CITIZEN_PORTAL,
        "Citizen portal (the citizen's own app)",
        Sector.SECTOR_CITIZEN_AGENT,
    ),
    "regulator": (
        Role.ROLE_REGULATOR,
        "Personal Data Protection Committee (regulator)",
        Sector.SECTOR_UNSPECIFIED,
    ),
}
VALIDITY_SECONDS = 2 * 365 * 24 * 3600


@dataclass
class FederationLayout:
    """What init created: the folder, the parties and their endpoints."""

    root: Path
    federation_id: str
    agencies: list[str]
    endpoints: dict[str, str] = field(default_factory=dict)
    roles: dict[str, str] = field(default_factory=dict)

    @property
    def paths(self) -> FederationPaths:
        return FederationPaths(self.root)

    def to_json(self) -> dict[str, object]:
        return {
            "federation_id": self.federation_id,
            "agencies": self.agencies,
            "parties": {
                pid: {"role": self.roles[pid], "endpoint": self.endpoints.get(pid, "")}
                for pid in self.roles
            },
        }


def free_ports(host: str, count: int) -> list[int]:
    """`count` distinct ports free on `host` now.

    Every socket stays bound until all are chosen: the kernel may hand out a port again as
    soon as its socket closes, and two parties given one port would answer for each other.
    """
    with contextlib.ExitStack() as held:
        ports = []
        for _ in range(count):
            sock = held.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((host, 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def _write(path: Path, data: bytes, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def init_federation(
    workdir: Path,
    agency_count: int = 3,
    *,
    fast_kdf: bool = False,
    passphrase: str | None = None,
    host: str = "127.0.0.1",
) -> FederationLayout:
    """Create a whole local federation in `workdir` (which must be empty or absent)."""
    root = Path(workdir)
    if root.exists() and any(root.iterdir()):
        raise InvalidArgument(
            f"{root} is not empty; choose a new folder for the federation",
            reason="FOLDER_NOT_EMPTY",
        )
    document = default_policy_document(agency_count)
    policy = parse_policy(document)
    agencies = list(policy.agencies)
    paths = FederationPaths(root)
    now = int(time.time())
    passphrase = passphrase or secrets.token_urlsafe(24)
    layout = FederationLayout(
        root=root, federation_id="fedscore-local-" + secrets.token_hex(4), agencies=agencies
    )

    ca_key_pem, ca_cert_pem = create_ca(f"{layout.federation_id} CA")
    root_key = SigningKey.generate()
    policy_key = SigningKey.generate()

    servers = [REGISTRY_ID, COORDINATOR_ID, *agencies]
    unspecified = Sector.SECTOR_UNSPECIFIED
    roles: dict[str, tuple[Role, str, Sector]] = {
        REGISTRY_ID: (Role.ROLE_CONSENT_REGISTRY, "Consent registry", unspecified),
        COORDINATOR_ID: (Role.ROLE_COORDINATOR, "Coordinator", unspecified),
        **{a: (Role.ROLE_AGENCY, policy.agencies[a].name, unspecified) for a in agencies},
        **CLIENT_PARTIES,
    }
    ports = dict(zip(servers, free_ports(host, len(servers)), strict=True))
    participants: list[Participant] = []
    party_files: list[tuple[str, PartySecrets, bytes]] = []
    for party_id, (role, name, sector) in roles.items():
        signing = SigningKey.generate()
        box = BoxKeyPair.generate()
        tls_key_pem, cert_pem = issue_certificate(ca_key_pem, ca_cert_pem, party_id, [])
        endpoint = f"{host}:{ports[party_id]}" if party_id in servers else ""
        participants.append(
            Participant(
                id=party_id,
                role=role,
                display_name=name,
                endpoint=endpoint,
                signing_public_key=signing.verify_key.encode(),
                box_public_key=box.public_bytes,
                not_before=now - 60,
                not_after=now + VALIDITY_SECONDS,
                sector=sector,
            )
        )
        secrets_ = PartySecrets(
            signing_seed=signing.seed,
            box_private=box.private_bytes,
            tls_key_pem=tls_key_pem,
            pseudonym_key=secrets.token_bytes(32),
        )
        party_files.append((party_id, secrets_, cert_pem))
        layout.endpoints[party_id] = endpoint
        layout.roles[party_id] = Role.Name(role)
    participants.append(
        Participant(
            id=POLICY_AUTHORITY_ID,
            role=Role.ROLE_POLICY_AUTHORITY,
            display_name="National committee (policy authority)",
            signing_public_key=policy_key.verify_key.encode(),
            not_before=now - 60,
            not_after=now + VALIDITY_SECONDS,
        )
    )
    layout.roles[POLICY_AUTHORITY_ID] = Role.Name(Role.ROLE_POLICY_AUTHORITY)
    registry = TrustRegistry(
        federation_id=layout.federation_id,
        version=1,
        issued_at=now,
        not_after=now + VALIDITY_SECONDS,
        participants=participants,
    )
    signed_registry = sign_registry(registry, root_key)
    # The check every party runs at start, run here first: refuse before writing anything.
    trust = verify_registry(signed_registry, root_key.verify_key, now)
    check_sectors(policy, trust.relying_party_sectors())

    root.mkdir(parents=True, exist_ok=True)
    _write(paths.passphrase, (passphrase + "\n").encode(), 0o600)
    _write(paths.root_pub, root_key.verify_key.encode())
    _write(paths.registry, signed_registry.SerializeToString())
    _write(paths.ca_cert, ca_cert_pem)
    _write(paths.policy_json, canonical_json(policy.document).encode("utf-8"))
    _write(paths.policy_signed, sign_policy(policy, policy_key).SerializeToString())
    save_signing_key(paths.offline / "root.key", root_key, passphrase, fast_kdf=fast_kdf)
    save_signing_key(
        paths.offline / "policy-authority.key", policy_key, passphrase, fast_kdf=fast_kdf
    )
    save_pem_key(paths.offline / "ca.key", ca_key_pem, passphrase, fast_kdf=fast_kdf)
    for party_id, party_secrets, cert_pem in party_files:
        save_secrets(paths.party_key(party_id), party_secrets, passphrase, fast_kdf=fast_kdf)
        _write(paths.party_cert(party_id), cert_pem)
    _write(paths.manifest, (json.dumps(layout.to_json(), indent=2) + "\n").encode())
    return layout
