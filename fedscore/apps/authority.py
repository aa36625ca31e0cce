"""The federation authority: admits, removes and rotates participants from their requests.

It never holds anyone's secrets: it reads admission requests (public keys, a CSR), issues
TLS certificates from the CSRs with the federation CA, and drafts the next registry
version. It cannot publish a version alone: a threshold of root custodians must sign the
draft (`fedscore.apps.custodian`), and `publish` refuses a draft that does not verify as
the successor of the last published version (`keys.registry_chain`).

Files in the authority's folder (`AuthorityPaths`): `authority.json` (federation id, root
policy), `ca.key` (encrypted) and `ca.crt`, `client.key` (encrypted) and `client.crt` (its
TLS identity for offering new versions to servers), `registry/v000001.signed`...,
`draft.registry`, `policy.signed` (the newest policy it was given), `issued/<id>.crt`.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from pathlib import Path

from fedscore.errors import FailedPrecondition, InvalidArgument, NotFound
from fedscore.runtime.files import write_atomically
from fedscore.runtime.org_paths import BUNDLE_FORMAT, REGISTRY_FILE_GLOB, AuthorityPaths
from fedscore.runtime.party import read_passphrase
from fedscore.runtime.rpc import TlsMaterial, endpoint_addresses
from fedscore.v1.envelope_pb2 import Envelope
from fedscore.v1.trust_pb2 import (
    Participant,
    RootKey,
    RootPolicy,
    Sector,
    SignedRegistry,
    TrustRegistry,
)
from keys.admission import read_request, verify_request
from keys.keyfile import load_pem_key, save_pem_key
from keys.registry_chain import (
    ChainLink,
    draft,
    follow_from_genesis,
    verify_genesis,
    verify_successor,
)
from keys.tls import create_ca, issue_certificate, issue_from_csr
from policies.sectors import check_sectors
from policies.signing import verify_policy

AUTHORITY_CLIENT_ID = "federation-authority"
PARTICIPANT_VALIDITY_SECONDS = 2 * 365 * 24 * 3600
# A registry version must be re-signed before this passes, or parties see it frozen.
REGISTRY_VALIDITY_SECONDS = 90 * 24 * 3600
DEFAULT_OVERLAP_SECONDS = 24 * 3600
SECTORS = {
    "unspecified": Sector.SECTOR_UNSPECIFIED,
    "commercial": Sector.SECTOR_COMMERCIAL,
    "civil-society": Sector.SECTOR_CIVIL_SOCIETY,
    "citizen-agent": Sector.SECTOR_CITIZEN_AGENT,
    "public-service": Sector.SECTOR_PUBLIC_SERVICE,
}


def init_authority(
    folder: Path,
    federation_id: str,
    root_keys: list[RootKey],
    threshold: int,
    *,
    passphrase: str | None = None,
    fast_kdf: bool = False,
) -> AuthorityPaths:
    """A new federation authority: its CA, its TLS client identity and the root policy."""
    paths = AuthorityPaths(Path(folder))
    if paths.config.exists():
        raise InvalidArgument(f"{folder} already holds an authority", reason="FOLDER_NOT_EMPTY")
    if not 1 <= threshold <= len(root_keys):
        raise InvalidArgument(
            f"threshold {threshold} must be between 1 and the {len(root_keys)} root keys",
            reason="BAD_ROOT_POLICY",
        )
    paths.root.mkdir(parents=True, exist_ok=True)
    if passphrase is None:
        passphrase = secrets.token_urlsafe(24)
        write_atomically(paths.root / "passphrase", (passphrase + "\n").encode())
        (paths.root / "passphrase").chmod(0o600)
    ca_key_pem, ca_cert_pem = create_ca(f"{federation_id} CA")
    client_key_pem, client_cert_pem = issue_certificate(
        ca_key_pem, ca_cert_pem, AUTHORITY_CLIENT_ID
    )
    save_pem_key(paths.ca_key, ca_key_pem, passphrase, fast_kdf=fast_kdf)
    save_pem_key(paths.client_key, client_key_pem, passphrase, fast_kdf=fast_kdf)
    write_atomically(paths.ca_cert, ca_cert_pem)
    write_atomically(paths.client_cert, client_cert_pem)
    root = RootPolicy(threshold=threshold, keys=root_keys)
    document = {
        "federation_id": federation_id,
        "root": json.loads(_root_json(root)),
    }
    write_atomically(paths.config, (json.dumps(document, indent=2) + "\n").encode())
    return paths


def _root_json(root: RootPolicy) -> str:
    return json.dumps(
        {
            "threshold": root.threshold,
            "keys": [
                {"custodian": k.custodian, "public_key": k.public_key.hex()} for k in root.keys
            ],
        }
    )


class Authority:
    """An authority's folder, opened."""

    def __init__(self, folder: Path, passphrase: str | None = None) -> None:
        self.paths = AuthorityPaths(Path(folder))
        try:
            document = json.loads(self.paths.config.read_text("utf-8"))
        except FileNotFoundError:
            raise FailedPrecondition(
                f"{folder} is not a federation authority's folder (no authority.json); "
                "run 'fedscore authority init' first",
                reason="NO_AUTHORITY",
            ) from None
        self.federation_id = str(document["federation_id"])
        self.root = RootPolicy(
            threshold=int(document["root"]["threshold"]),
            keys=[
                RootKey(custodian=k["custodian"], public_key=bytes.fromhex(k["public_key"]))
                for k in document["root"]["keys"]
            ],
        )
        self._passphrase = passphrase

    def passphrase(self) -> str:
        return read_passphrase(self.paths.root, self._passphrase)

    # --- the chain ----------------------------------------------------------------------

    def published(self) -> list[SignedRegistry]:
        if not self.paths.registry_dir.exists():
            return []
        return [
            SignedRegistry.FromString(p.read_bytes())
            for p in sorted(self.paths.registry_dir.glob(REGISTRY_FILE_GLOB))
        ]

    def latest(self) -> ChainLink | None:
        chain = self.published()
        return follow_from_genesis(chain, self.federation_id) if chain else None

    def draft_registry(self, now: int) -> TrustRegistry:
        """The draft being prepared (its signatures dropped: a changed draft is re-signed)."""
        if self.paths.draft.exists():
            registry = TrustRegistry()
            registry.ParseFromString(
                SignedRegistry.FromString(self.paths.draft.read_bytes()).registry
            )
        else:
            latest = self.latest()
            registry = TrustRegistry()
            if latest is not None:
                registry.CopyFrom(latest.registry)
                registry.version = latest.version + 1
                registry.previous_digest = latest.digest
            else:
                registry.federation_id = self.federation_id
                registry.version = 1
                registry.root.CopyFrom(self.root)
        registry.issued_at = now
        registry.not_after = now + REGISTRY_VALIDITY_SECONDS
        return registry

    def save_draft(self, registry: TrustRegistry) -> Path:
        write_atomically(self.paths.draft, draft(registry).SerializeToString())
        return self.paths.draft

    # --- admissions, removals, rotations -----------------------------------------------

    def _ca(self) -> tuple[bytes, bytes]:
        return load_pem_key(self.paths.ca_key, self.passphrase()), self.paths.ca_cert.read_bytes()

    def admit(
        self, request_file: Path, sector: str = "unspecified", now: int | None = None
    ) -> Participant:
        """Verify an admission request, issue its certificate, add it to the draft."""
        now = int(time.time()) if now is None else now
        if sector not in SECTORS:
            raise InvalidArgument(
                f"sector {sector!r} is not one of {sorted(SECTORS)}", "BAD_SECTOR"
            )
        request = verify_request(read_request(Path(request_file).read_bytes()))
        registry = self.draft_registry(now)
        if any(p.id == request.participant_id for p in registry.participants):
            raise FailedPrecondition(
                f"{request.participant_id} is already a participant; rotate its key instead",
                reason="ALREADY_ADMITTED",
            )
        participant = Participant(
            id=request.participant_id,
            role=request.role,
            display_name=request.display_name or request.participant_id,
            endpoint=request.endpoint,
            signing_public_key=request.signing_public_key,
            box_public_key=request.box_public_key,
            not_before=now - 60,
            not_after=now + PARTICIPANT_VALIDITY_SECONDS,
            sector=SECTORS[sector],
        )
        registry.participants.append(participant)
        self._issue(request.participant_id, request.csr_pem, request.endpoint)
        self.save_draft(registry)
        return participant

    def _issue(self, participant_id: str, csr_pem: bytes, endpoint: str) -> bytes:
        # Every host of the endpoint (a party's replicas are listed "host:port,host:port").
        hosts = list(dict.fromkeys(a.rsplit(":", 1)[0] for a in endpoint_addresses(endpoint)))
        ca_key, ca_cert = self._ca()
        cert = issue_from_csr(ca_key, ca_cert, bytes(csr_pem), participant_id, hosts)
        write_atomically(self.paths.issued(participant_id), cert)
        return cert

    def remove(self, participant_id: str, now: int | None = None) -> int:
        """Drop every entry of `participant_id` from the draft; how many there were."""
        registry = self.draft_registry(int(time.time()) if now is None else now)
        kept = [p for p in registry.participants if p.id != participant_id]
        removed = len(registry.participants) - len(kept)
        if not removed:
            raise NotFound(f"{participant_id} is not a participant", reason="UNKNOWN_PARTICIPANT")
        del registry.participants[:]
        registry.participants.extend(kept)
        self.save_draft(registry)
        return removed

    def rotate(
        self,
        request_file: Path,
        overlap_seconds: int = DEFAULT_OVERLAP_SECONDS,
        now: int | None = None,
    ) -> Participant:
        """A new signing key for a participant; the old one verifies for `overlap_seconds`."""
        now = int(time.time()) if now is None else now
        request = verify_request(read_request(Path(request_file).read_bytes()), rotation=True)
        registry = self.draft_registry(now)
        current = [
            p
            for p in registry.participants
            if p.id == request.participant_id
            and p.signing_public_key == request.replaces_signing_public_key
        ]
        if not current:
            raise FailedPrecondition(
                f"{request.participant_id} does not hold the key the rotation replaces",
                reason="NOT_CURRENT_KEY",
            )
        old = current[-1]
        old.not_after = min(old.not_after, now + max(0, overlap_seconds))
        new = Participant()
        new.CopyFrom(old)
        new.signing_public_key = request.signing_public_key
        new.box_public_key = request.box_public_key or old.box_public_key
        new.not_before = now
        new.not_after = now + PARTICIPANT_VALIDITY_SECONDS
        registry.participants.append(new)
        self.save_draft(registry)
        return new

    def renew(self, request_file: Path) -> bytes:
        """A new certificate from a participant's renewal request (a new CSR)."""
        request = verify_request(read_request(Path(request_file).read_bytes()))
        latest = self.latest()
        if latest is None:
            raise FailedPrecondition("nothing is published yet", reason="NO_REGISTRY")
        listed = latest.view(int(time.time())).participant(request.participant_id)
        if listed.signing_public_key != request.signing_public_key:
            raise FailedPrecondition(
                "a renewal must be signed with the participant's current key",
                reason="NOT_CURRENT_KEY",
            )
        return self._issue(request.participant_id, request.csr_pem, listed.endpoint)

    def set_endpoint(self, participant_id: str, endpoint: str, now: int | None = None) -> None:
        registry = self.draft_registry(int(time.time()) if now is None else now)
        found = [p for p in registry.participants if p.id == participant_id]
        if not found:
            raise NotFound(f"{participant_id} is not a participant", reason="UNKNOWN_PARTICIPANT")
        for participant in found:
            participant.endpoint = endpoint
        self.save_draft(registry)

    def set_root(self, root_keys: list[RootKey], threshold: int, now: int | None = None) -> None:
        """A new root in the draft: it needs a threshold of the old and of the new root."""
        registry = self.draft_registry(int(time.time()) if now is None else now)
        registry.root.CopyFrom(RootPolicy(threshold=threshold, keys=root_keys))
        self.save_draft(registry)

    # --- publishing ---------------------------------------------------------------------

    def publish(self, policy: bytes | None = None) -> ChainLink:
        """Verify the signed draft as the next version and append it to the chain.

        With no draft, a policy alone is published against the newest version. Either
        way the policy must verify under the policy authority's key that version lists and
        pass the sector checks every party runs, or nothing is written.
        """
        if not self.paths.draft.exists():
            latest = self.latest()
            if policy is None or latest is None:
                raise FailedPrecondition("there is no draft to publish", reason="NO_DRAFT")
            self._check_policy(latest, policy)
            write_atomically(self.paths.policy, policy)
            return latest
        signed = SignedRegistry.FromString(self.paths.draft.read_bytes())
        latest = self.latest()
        link = (
            verify_genesis(signed, self.federation_id)
            if latest is None
            else verify_successor(latest, signed)
        )
        if policy is not None:
            self._check_policy(link, policy)
        write_atomically(self.paths.version(link.version), signed.SerializeToString())
        self.paths.draft.unlink()
        if policy is not None:
            write_atomically(self.paths.policy, policy)
        if link.registry.root != self.root:
            self.root = link.registry.root
            document = json.loads(self.paths.config.read_text("utf-8"))
            document["root"] = json.loads(_root_json(self.root))
            write_atomically(self.paths.config, (json.dumps(document, indent=2) + "\n").encode())
        return link

    @staticmethod
    def _check_policy(link: ChainLink, policy: bytes) -> None:
        view = link.view(int(time.time()))
        checked = verify_policy(Envelope.FromString(policy), view.policy_keys())
        check_sectors(checked, view.relying_party_sectors())

    def renew_registry(self, now: int | None = None) -> Path:
        """A draft of the next version with nothing changed but its validity: custodians
        sign it before the newest version expires, or every party sees the registry frozen."""
        registry = self.draft_registry(int(time.time()) if now is None else now)
        return self.save_draft(registry)

    def bundle(self, participant_id: str) -> bytes:
        """What an organisation installs: its certificate, the CA's, the chain, the policy."""
        cert = self.paths.issued(participant_id)
        if not cert.exists():
            raise NotFound(f"no certificate was issued for {participant_id}", "UNKNOWN_PARTICIPANT")

        document = {
            "format": BUNDLE_FORMAT,
            "federation_id": self.federation_id,
            "participant_id": participant_id,
            "tls_cert": cert.read_text("ascii"),
            "ca_cert": self.paths.ca_cert.read_text("ascii"),
            "registries": [
                base64.b64encode(s.SerializeToString()).decode() for s in self.published()
            ],
            "policy": base64.b64encode(self.paths.policy.read_bytes()).decode()
            if self.paths.policy.exists()
            else "",
        }
        return (json.dumps(document, indent=2) + "\n").encode()

    def client_tls(self) -> TlsMaterial:
        """The authority's own TLS identity, for offering versions to servers."""
        return TlsMaterial(
            ca_pem=self.paths.ca_cert.read_bytes(),
            cert_pem=self.paths.client_cert.read_bytes(),
            key_pem=load_pem_key(self.paths.client_key, self.passphrase()),
        )
