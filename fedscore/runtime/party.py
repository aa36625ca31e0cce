"""Load one party of a federation folder: keys, trust registry, policy, TLS material.

Invariants:
- The trust registry is verified against the root key in `trust/root.pub` before
  anything in it is used; the policy is verified against the policy authority's key
  listed in that registry, and then checked against the registry's relying-party
  sectors (`policies.sectors.check_sectors`): a policy with a purpose for a public-service
  provider, or for a relying party without an admissible sector, loads for no party.
- The party's secret keys must match the public keys the registry lists for it.
- Everything is read once, at start; nothing here is read per query.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from fedscore.errors import FailedPrecondition, KeyFileError
from fedscore.runtime.rpc import TlsMaterial
from fedscore.v1.envelope_pb2 import Envelope
from fedscore.v1.trust_pb2 import Participant, Role
from keys.box import BoxKeyPair
from keys.keyfile import PartySecrets, load_secrets
from keys.registry import TrustView, verify_registry
from keys.signing import SigningKey, VerifyKey
from policies.model import Policy
from policies.sectors import check_sectors
from policies.signing import verify_policy

PASSPHRASE_ENV = "FEDSCORE_PASSPHRASE"  # noqa: S105 (a variable name, not a secret)


@dataclass(frozen=True)
class FederationPaths:
    """Where a federation folder keeps each file (see docs/modules.md)."""

    root: Path

    @property
    def passphrase(self) -> Path:
        return self.root / "passphrase"

    @property
    def root_pub(self) -> Path:
        return self.root / "trust" / "root.pub"

    @property
    def registry(self) -> Path:
        return self.root / "trust" / "registry.signed"

    @property
    def ca_cert(self) -> Path:
        return self.root / "trust" / "ca.crt"

    @property
    def policy_json(self) -> Path:
        return self.root / "policy" / "policy.json"

    @property
    def policy_signed(self) -> Path:
        return self.root / "policy" / "policy.signed"

    @property
    def offline(self) -> Path:
        return self.root / "offline"

    @property
    def manifest(self) -> Path:
        return self.root / "federation.json"

    def party_dir(self, party_id: str) -> Path:
        return self.root / "parties" / party_id

    def party_key(self, party_id: str) -> Path:
        return self.party_dir(party_id) / "party.key"

    def party_cert(self, party_id: str) -> Path:
        return self.party_dir(party_id) / "tls.crt"

    def party_db(self, party_id: str) -> Path:
        return self.party_dir(party_id) / "state.db"


@dataclass(frozen=True)
class Party:
    id: str
    workdir: Path
    participant: Participant
    secrets: PartySecrets
    signing_key: SigningKey
    box: BoxKeyPair
    trust: TrustView
    policy: Policy
    tls: TlsMaterial
    db_url: str

    @property
    def role(self) -> Role:
        return self.participant.role


def read_passphrase(workdir: Path, passphrase: str | None = None) -> str:
    """The passphrase: given, else $FEDSCORE_PASSPHRASE, else the federation's passphrase file."""
    if passphrase:
        return passphrase
    from_env = os.environ.get(PASSPHRASE_ENV)
    if from_env:
        return from_env
    path = FederationPaths(workdir).passphrase
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    raise KeyFileError(
        f"no passphrase: set {PASSPHRASE_ENV} or create {path}", reason="NO_PASSPHRASE"
    )


def load_trust(workdir: Path, now: int | None = None) -> TrustView:
    """Verify the federation's trust registry against its root key."""
    paths = FederationPaths(workdir)
    if not paths.registry.exists():
        raise FailedPrecondition(
            f"{workdir} is not a federation folder (no {paths.registry}); "
            "run 'fedscore federation init' first",
            reason="NO_FEDERATION",
        )
    root = VerifyKey.from_bytes(paths.root_pub.read_bytes())
    envelope = Envelope.FromString(paths.registry.read_bytes())
    return verify_registry(envelope, root, int(time.time()) if now is None else now)


def database_url(workdir: Path, party_id: str) -> str:
    """SQLite file by default; FEDSCORE_DB_URL_<PARTY> selects another engine (e.g. PostgreSQL)."""
    override = os.environ.get("FEDSCORE_DB_URL_" + party_id.upper().replace("-", "_"))
    if override:
        return override
    return f"sqlite:///{FederationPaths(workdir).party_db(party_id).resolve()}"


def load_party(workdir: Path, party_id: str, passphrase: str | None = None) -> Party:
    """Open one party's keys and verify everything it will trust."""
    workdir = Path(workdir)
    paths = FederationPaths(workdir)
    trust = load_trust(workdir)
    participant = trust.participant(party_id)
    secrets = load_secrets(paths.party_key(party_id), read_passphrase(workdir, passphrase))
    signing_key = SigningKey.from_seed(secrets.signing_seed)
    box = BoxKeyPair.from_private(secrets.box_private)
    if signing_key.verify_key.encode() != participant.signing_public_key:
        raise KeyFileError(
            f"the signing key in {paths.party_key(party_id)} is not the one the trust "
            f"registry lists for {party_id}",
            reason="KEY_MISMATCH",
        )
    if box.public_bytes != participant.box_public_key:
        raise KeyFileError(
            f"the box key of {party_id} does not match the trust registry", reason="KEY_MISMATCH"
        )
    policy = verify_policy(
        Envelope.FromString(paths.policy_signed.read_bytes()),
        trust.policy_keys(),
    )
    check_sectors(policy, trust.relying_party_sectors())
    tls = TlsMaterial(
        ca_pem=paths.ca_cert.read_bytes(),
        cert_pem=paths.party_cert(party_id).read_bytes(),
        key_pem=secrets.tls_key_pem,
    )
    return Party(
        id=party_id,
        workdir=workdir,
        participant=participant,
        secrets=secrets,
        signing_key=signing_key,
        box=box,
        trust=trust,
        policy=policy,
        tls=tls,
        db_url=database_url(workdir, party_id),
    )
