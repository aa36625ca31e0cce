"""Load one party from its own organisation's folder: config, keys, trust chain, policy, TLS.

Invariants:
- Only the party's own folder is read (`fedscore.runtime.org_paths.OrgPaths`): its config,
  its encrypted secrets, its certificate, and the registry chain and policy it trusts.
- The registry chain is verified from version 1 (received at admission) to the newest
  stored version (`keys.registry_chain`); the policy is verified against the policy
  authority's key listed in the newest version, and then checked against the registry's
  relying-party sectors (`policies.sectors.check_sectors`): a policy with a purpose for a
  public-service provider, or for a relying party without an admissible sector, loads for
  no party.
- The party's secret keys must match the public keys the registry lists for it. During a
  key rotation (`next.key` present) the secrets whose signing key the registry lists as
  current are used; once the registry lists the new key, `next.key` becomes `party.key`
  and the old file moves to `retired/`.
- Everything is read once, at start; what changes while serving arrives through
  `fedscore.runtime.live_trust`, never by re-reading files per query.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from fedscore.errors import FailedPrecondition, KeyFileError
from fedscore.runtime.org_paths import REGISTRY_FILE_GLOB, FederationPaths, OrgPaths
from fedscore.runtime.party_config import PartyConfig, load_config
from fedscore.runtime.rpc import TlsMaterial
from fedscore.v1.envelope_pb2 import Envelope
from fedscore.v1.trust_pb2 import Participant, Role, SignedRegistry, TrustRegistry
from keys.box import BoxKeyPair
from keys.keyfile import PartySecrets, load_secrets
from keys.registry import TrustView, listed_sectors
from keys.registry_chain import ChainLink, follow_from_genesis
from keys.signing import SigningKey
from policies.model import Policy
from policies.sectors import check_sectors
from policies.signing import verify_policy

PASSPHRASE_ENV = "FEDSCORE_PASSPHRASE"  # noqa: S105 (a variable name, not a secret)


@dataclass(frozen=True)
class Party:
    id: str
    config: PartyConfig
    paths: OrgPaths
    participant: Participant
    secrets: PartySecrets
    signing_key: SigningKey
    box: BoxKeyPair
    trust: TrustView
    chain: ChainLink
    policy: Policy
    policy_envelope: Envelope
    tls: TlsMaterial
    db_url: str

    @property
    def role(self) -> Role:
        return self.participant.role


def read_passphrase(org: Path, passphrase: str | None = None) -> str:
    """The passphrase: given, else $FEDSCORE_PASSPHRASE, else the organisation's passphrase file."""
    if passphrase:
        return passphrase
    from_env = os.environ.get(PASSPHRASE_ENV)
    if from_env:
        return from_env
    path = OrgPaths(Path(org)).passphrase
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    raise KeyFileError(
        f"no passphrase: set {PASSPHRASE_ENV} or create {path}", reason="NO_PASSPHRASE"
    )


def stored_chain(paths: OrgPaths) -> list[SignedRegistry]:
    """The registry versions stored in an organisation's folder, oldest first."""
    files = (
        sorted(paths.registry_dir.glob(REGISTRY_FILE_GLOB)) if paths.registry_dir.exists() else []
    )
    if not files:
        raise FailedPrecondition(
            f"{paths.root} holds no trust registry (no {paths.registry_dir}/v*.signed); "
            "install the admission bundle the federation authority sent",
            reason="NO_FEDERATION",
        )
    return [SignedRegistry.FromString(f.read_bytes()) for f in files]


def load_chain(org: Path) -> ChainLink:
    """The newest registry version the organisation's stored chain reaches."""
    return follow_from_genesis(stored_chain(OrgPaths(Path(org))))


def load_trust(org: Path, now: int | None = None) -> TrustView:
    """The organisation's trusted registry as seen now."""
    return load_chain(org).view(int(time.time()) if now is None else now)


def sectors_as_last_listed(chain: list[SignedRegistry], view: TrustView) -> dict[str, str]:
    """The sector of every relying party and portal as the chain last listed it, overlaid
    with the view's: a party removed since keeps its last sector. It can sign nothing
    now, so a policy still naming it is harmless, while a public-service provider named
    by the policy is refused whenever it was listed (the rule `LiveTrust` applies too)."""
    sectors: dict[str, str] = {}
    for signed in chain:
        registry = TrustRegistry()
        registry.ParseFromString(signed.registry)
        sectors |= listed_sectors(registry)
    return sectors | view.relying_party_sectors()


def org_folder(workdir: Path, party_id: str) -> Path:
    """A party's own folder inside a local federation's folder."""
    return FederationPaths(Path(workdir)).org(party_id).root


def database_url(config: PartyConfig, paths: OrgPaths) -> str:
    """The config's URL; else FEDSCORE_DB_URL_<PARTY>; else the SQLite file in the folder."""
    if config.database_url:
        return config.database_url
    override = os.environ.get("FEDSCORE_DB_URL_" + config.id.upper().replace("-", "_"))
    if override:
        return override
    return f"sqlite:///{paths.database.resolve()}"


def _matches(secrets: PartySecrets, participant: Participant) -> bool:
    return SigningKey.from_seed(secrets.signing_seed).verify_key.encode() == bytes(
        participant.signing_public_key
    )


def current_secrets(paths: OrgPaths, participant: Participant, passphrase: str) -> PartySecrets:
    """The secrets whose signing key the registry lists as current (see the invariants)."""
    if paths.next_key.exists():
        pending = load_secrets(paths.next_key, passphrase)
        if _matches(pending, participant):
            paths.retired.mkdir(exist_ok=True)
            # Kept under retired/ first, then replaced in one step: party.key never goes
            # missing, even for a moment (a crash between the two leaves both copies).
            os.link(paths.key, paths.retired / f"party.{time.time_ns()}.key")
            os.replace(paths.next_key, paths.key)
            return pending
    secrets = load_secrets(paths.key, passphrase)
    if not _matches(secrets, participant):
        raise KeyFileError(
            f"the signing key in {paths.key} is not the one the trust "
            f"registry lists for {participant.id}",
            reason="KEY_MISMATCH",
        )
    return secrets


def load_party_config(config_path: Path, passphrase: str | None = None) -> Party:
    """Open one party from its config file and verify everything it will trust."""
    config = load_config(Path(config_path))
    paths = OrgPaths(config.key_folder)
    chain = load_chain(paths.root)
    trust = chain.view(int(time.time()))
    participant = trust.participant(config.id)
    if participant.role != config.role:
        raise FailedPrecondition(
            f"{config.path} says {config.id} is a {Role.Name(config.role)}, the trust "
            f"registry says {Role.Name(participant.role)}",
            reason="WRONG_ROLE",
        )
    secrets = current_secrets(paths, participant, read_passphrase(paths.root, passphrase))
    signing_key = SigningKey.from_seed(secrets.signing_seed)
    box = BoxKeyPair.from_private(secrets.box_private)
    if box.public_bytes != participant.box_public_key:
        raise KeyFileError(
            f"the box key of {config.id} does not match the trust registry", reason="KEY_MISMATCH"
        )
    policy_envelope = Envelope.FromString(paths.policy_signed.read_bytes())
    policy = verify_policy(policy_envelope, trust.policy_keys())
    check_sectors(policy, sectors_as_last_listed(stored_chain(paths), trust))
    tls = TlsMaterial(
        ca_pem=paths.ca_cert.read_bytes(),
        cert_pem=paths.tls_cert.read_bytes(),
        key_pem=secrets.tls_key_pem,
    )
    return Party(
        id=config.id,
        config=config,
        paths=paths,
        participant=participant,
        secrets=secrets,
        signing_key=signing_key,
        box=box,
        trust=trust,
        chain=chain,
        policy=policy,
        policy_envelope=policy_envelope,
        tls=tls,
        db_url=database_url(config, paths),
    )


def load_party(workdir: Path, party_id: str, passphrase: str | None = None) -> Party:
    """A party of a local federation's folder, from its own folder `orgs/<id>/` only."""
    federation = FederationPaths(Path(workdir))
    if not federation.orgs.is_dir():
        raise FailedPrecondition(
            f"{workdir} is not a federation folder (no {federation.orgs}); "
            "run 'fedscore federation init' first",
            reason="NO_FEDERATION",
        )
    if not federation.org(party_id).config.exists():
        known = sorted(p.name for p in federation.orgs.iterdir() if (p / "party.toml").exists())
        raise FailedPrecondition(
            f"{workdir} has no organisation {party_id!r}; it has {', '.join(known)}",
            reason="UNKNOWN_PARTICIPANT",
        )
    return load_party_config(OrgPaths(org_folder(workdir, party_id)).config, passphrase)


def federation_view(workdir: Path, now: int | None = None) -> TrustView:
    """The newest registry any organisation of a local federation's folder trusts.

    For the tools that look at a whole local federation (the demo, the process starter);
    a party itself only ever reads its own folder.
    """
    orgs = FederationPaths(Path(workdir)).orgs
    folders = sorted(p for p in orgs.iterdir() if p.is_dir()) if orgs.exists() else []
    if not folders:
        raise FailedPrecondition(
            f"{workdir} is not a federation folder (no {orgs}); "
            "run 'fedscore federation init' first",
            reason="NO_FEDERATION",
        )
    newest = max((load_chain(folder) for folder in folders), key=lambda link: link.version)
    return newest.view(int(time.time()) if now is None else now)
