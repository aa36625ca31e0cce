"""Where an organisation's folder, and a local federation's folder, keep each file.

An organisation's folder (`OrgPaths`) is the only folder its processes read: its config,
its encrypted secrets, its certificate, the registry chain and policy it trusts, its
database. A local federation's folder (`FederationPaths`) only groups organisations'
folders, the root custodians' folders and the federation authority's folder side by side
(`orgs/<id>/`, `custodians/<name>/`, `authority/`); no process reads two of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

REGISTRY_FILE_GLOB = "v*.signed"
# What the authority sends an organisation it admitted (nothing secret in it).
BUNDLE_FORMAT = "fedscore-admission-bundle-v1"


@dataclass(frozen=True)
class OrgPaths:
    """One organisation's folder."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "party.toml"

    @property
    def passphrase(self) -> Path:
        return self.root / "passphrase"

    @property
    def key(self) -> Path:
        """The party's secrets, encrypted (signing, box, TLS and, for an agency, pseudonym keys)."""
        return self.root / "party.key"

    @property
    def next_key(self) -> Path:
        """The secrets of a key rotation not yet in the registry."""
        return self.root / "next.key"

    @property
    def retired(self) -> Path:
        return self.root / "retired"

    @property
    def request(self) -> Path:
        """The admission request (public): what the federation authority admits from."""
        return self.root / "admission.request"

    @property
    def rotation_request(self) -> Path:
        return self.root / "rotation.request"

    @property
    def renewal_request(self) -> Path:
        return self.root / "renewal.request"

    @property
    def tls_cert(self) -> Path:
        return self.root / "tls.crt"

    @property
    def trust(self) -> Path:
        return self.root / "trust"

    @property
    def ca_cert(self) -> Path:
        return self.trust / "ca.crt"

    @property
    def registry_dir(self) -> Path:
        return self.trust / "registry"

    def registry_version(self, version: int) -> Path:
        return self.registry_dir / f"v{version:06d}.signed"

    @property
    def policy_signed(self) -> Path:
        return self.trust / "policy.signed"

    @property
    def database(self) -> Path:
        return self.root / "state.db"

    @property
    def serve_log(self) -> Path:
        return self.root / "serve.log"

    @property
    def wallet(self) -> Path:
        """Consent tokens a citizen portal holds for its citizens."""
        return self.root / "wallet"

    @property
    def releases(self) -> Path:
        """Statistics release bundles a coordinator publishes."""
        return self.root / "releases"


@dataclass(frozen=True)
class FederationPaths:
    """A local federation's folder: every organisation's folder side by side."""

    root: Path

    @property
    def orgs(self) -> Path:
        return self.root / "orgs"

    def org(self, party_id: str) -> OrgPaths:
        return OrgPaths(self.orgs / party_id)

    @property
    def custodians(self) -> Path:
        return self.root / "custodians"

    def custodian(self, name: str) -> Path:
        return self.custodians / name

    @property
    def authority(self) -> Path:
        return self.root / "authority"

    @property
    def manifest(self) -> Path:
        """Public: ids, roles and endpoints of the parties (what `federation init` made)."""
        return self.root / "federation.json"

    @property
    def policy_json(self) -> Path:
        """Public: the policy document as the policy authority signed it."""
        return self.root / "policy" / "policy.json"

    def party_dir(self, party_id: str) -> Path:
        return self.org(party_id).root


@dataclass(frozen=True)
class AuthorityPaths:
    """The federation authority's folder (see `fedscore.apps.authority`)."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "authority.json"

    @property
    def ca_key(self) -> Path:
        return self.root / "ca.key"

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca.crt"

    @property
    def client_key(self) -> Path:
        return self.root / "client.key"

    @property
    def client_cert(self) -> Path:
        return self.root / "client.crt"

    @property
    def registry_dir(self) -> Path:
        return self.root / "registry"

    def version(self, number: int) -> Path:
        return self.registry_dir / f"v{number:06d}.signed"

    @property
    def draft(self) -> Path:
        return self.root / "draft.registry"

    @property
    def policy(self) -> Path:
        return self.root / "policy.signed"

    def issued(self, participant_id: str) -> Path:
        return self.root / "issued" / f"{participant_id}.crt"
