"""`fedscore federation init`: a local federation of separate organisations, in one folder.

It runs, on one machine, what separate organisations do on their own hosts, each in its
own folder and through the same code as the commands they would type:

- three root custodians each make a root key in `custodians/<name>/` (`fedscore.apps.custodian`);
- the federation authority makes its CA in `authority/` (`fedscore.apps.authority`);
- every organisation makes its own keys, config and admission request in `orgs/<id>/`
  (the helper aggregator, `regulator-helper`, run by the regulator's organisation, is an
  organisation of its own: docs/adr/0019)
  (`fedscore.apps.org`), with its endpoint on a loopback address of its own (127.0.0.2,
  127.0.0.3, ...), as if each were its own host;
- the authority admits every request (assigning each relying party its sector: `ptt`
  commercial, `citizen-portal` citizen agent), two of the three custodians sign version 1,
  the policy authority signs the default policy with its own key, and the authority
  publishes and hands each organisation its bundle, which the organisation installs.

No folder ends up holding two parties' secrets, and the authority's and custodians'
folders hold none of any party's. Before anything is published, the policy is checked
against the registry (`policies.sectors.check_sectors`), so the federation it writes
never has parties that would refuse to start. Nothing is written into a folder that
already holds something.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from fedscore.apps.authority import Authority, init_authority
from fedscore.apps.custodian import init_custodian, sign_draft
from fedscore.apps.org import init_org, install_bundle, sign_policy_document
from fedscore.errors import InvalidArgument
from fedscore.runtime.org_paths import FederationPaths
from fedscore.runtime.party_config import SERVER_ROLES, role_name
from fedscore.v1.trust_pb2 import Role, Sector, SignedRegistry
from keys.registry import ASKING_ROLES
from keys.registry_chain import verify_genesis
from policies.defaults import default_policy_document
from policies.loader import canonical_json, parse_policy
from policies.sectors import check_sectors

REGISTRY_ID = "consent-registry"
COORDINATOR_ID = "coordinator"
POLICY_AUTHORITY_ID = "policy-authority"
# The helper aggregator that adds the noise to statistics releases (docs/adr/0019): an
# organisation other than the coordinator's operator runs it; here, the regulator's, as a
# party of its own (own keys, folder, log and address).
HELPER_ID = "regulator-helper"
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


CUSTODIANS = ("custodian-1", "custodian-2", "custodian-3")
ROOT_THRESHOLD = 2
SECTOR_NAMES = {
    Sector.SECTOR_UNSPECIFIED: "unspecified",
    Sector.SECTOR_COMMERCIAL: "commercial",
    Sector.SECTOR_CIVIL_SOCIETY: "civil-society",
    Sector.SECTOR_CITIZEN_AGENT: "citizen-agent",
    Sector.SECTOR_PUBLIC_SERVICE: "public-service",
}


def loopback_host(index: int) -> str:
    """The loopback address of the index-th organisation: its own "host" on this machine."""
    return f"127.0.0.{2 + index}"


def _fetch_sources(role: Role, endpoints: dict[str, str]) -> tuple[str, ...]:
    """Where a party follows the registry chain from: the other servers, registry first."""
    order = [REGISTRY_ID, COORDINATOR_ID]
    mine = {Role.ROLE_CONSENT_REGISTRY: REGISTRY_ID, Role.ROLE_COORDINATOR: COORDINATOR_ID}
    return tuple(endpoints[p] for p in order if p != mine.get(role))


def init_federation(
    workdir: Path,
    agency_count: int = 3,
    *,
    fast_kdf: bool = False,
    passphrase: str | None = None,
    host: str | None = None,
    hosts: Mapping[str, str] | None = None,
    port: int | None = None,
) -> FederationLayout:
    """Create a local federation in `workdir` (which must be empty or absent).

    `host` puts every organisation on one address; by default each gets its own
    loopback address (`loopback_host`). `hosts` names the address of some organisations
    (e.g. one network namespace each) and `port` the one port every server listens on
    there; without `port`, a free port is chosen on each address.
    """
    root = Path(workdir)
    if root.exists() and any(root.iterdir()):
        raise InvalidArgument(
            f"{root} is not empty; choose a new folder for the federation",
            reason="FOLDER_NOT_EMPTY",
        )
    policy = parse_policy(default_policy_document(agency_count))
    agencies = list(policy.agencies)
    paths = FederationPaths(root)
    layout = FederationLayout(
        root=root, federation_id="fedscore-local-" + secrets.token_hex(4), agencies=agencies
    )
    unspecified = Sector.SECTOR_UNSPECIFIED
    roles: dict[str, tuple[Role, str, Sector]] = {
        REGISTRY_ID: (Role.ROLE_CONSENT_REGISTRY, "Consent registry", unspecified),
        COORDINATOR_ID: (Role.ROLE_COORDINATOR, "Coordinator", unspecified),
        **{a: (Role.ROLE_AGENCY, policy.agencies[a].name, unspecified) for a in agencies},
        **CLIENT_PARTIES,
        POLICY_AUTHORITY_ID: (
            Role.ROLE_POLICY_AUTHORITY,
            "National committee (policy authority)",
            unspecified,
        ),
        HELPER_ID: (
            Role.ROLE_HELPER_AGGREGATOR,
            "Personal Data Protection Committee (helper aggregator for statistics)",
            unspecified,
        ),
    }
    # What the authority will admit, checked against the policy before anything is written.
    check_sectors(
        policy,
        {pid: Sector.Name(sec) for pid, (role, _, sec) in roles.items() if role in ASKING_ROLES},
    )
    chosen = {pid: host or loopback_host(i) for i, pid in enumerate(roles)} | dict(hosts or {})
    for pid, (role, _, _) in roles.items():
        if role in SERVER_ROLES:
            layout.endpoints[pid] = f"{chosen[pid]}:{port or free_port(chosen[pid])}"
        else:
            layout.endpoints[pid] = ""
        layout.roles[pid] = Role.Name(role)

    custodian_keys = [
        init_custodian(paths.custodian(name), name, passphrase=passphrase, fast_kdf=fast_kdf)
        for name in CUSTODIANS
    ]
    authority = Authority(
        init_authority(
            paths.authority,
            layout.federation_id,
            custodian_keys,
            ROOT_THRESHOLD,
            passphrase=passphrase,
            fast_kdf=fast_kdf,
        ).root,
        passphrase,
    )
    for pid, (role, name, sector) in roles.items():
        org = init_org(
            paths.org(pid).root,
            pid,
            role_name(role),
            display_name=name,
            endpoint=layout.endpoints[pid],
            fetch_registry_from=_fetch_sources(role, layout.endpoints),
            passphrase=passphrase,
            fast_kdf=fast_kdf,
        )
        if passphrase is not None:
            # A test federation under one passphrase still keeps it in each folder.
            org.passphrase.write_text(passphrase + "\n", "utf-8")
            org.passphrase.chmod(0o600)
        authority.admit(org.request, SECTOR_NAMES[sector])
    for name in CUSTODIANS[:ROOT_THRESHOLD]:
        sign_draft(paths.custodian(name), authority.paths.draft, passphrase=passphrase)

    # The check every party runs at start, run first: refuse before publishing anything.
    genesis = verify_genesis(
        SignedRegistry.FromString(authority.paths.draft.read_bytes()), layout.federation_id
    )
    check_sectors(policy, genesis.view(int(time.time())).relying_party_sectors())
    paths.policy_json.parent.mkdir(parents=True, exist_ok=True)
    paths.policy_json.write_text(canonical_json(policy.document), "utf-8")
    signed_policy = sign_policy_document(paths.org(POLICY_AUTHORITY_ID).root, paths.policy_json)
    authority.publish(signed_policy)
    for pid in roles:
        install_bundle(paths.org(pid).root, authority.bundle(pid))
    paths.manifest.write_text(json.dumps(layout.to_json(), indent=2) + "\n", "utf-8")
    return layout


def free_port(host: str) -> int:
    """A port free on `host` now."""
    return free_ports(host, 1)[0]
