"""Where every private key of a local federation is: to prove none is outside its owner's folder."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

from fedscore.apps.federation import CUSTODIANS
from fedscore.errors import KeyFileError
from fedscore.runtime.org_paths import FederationPaths, OrgPaths
from fedscore.runtime.party import read_passphrase
from keys.keyfile import load_pem_key, load_secrets, load_signing_key


def _forms(secret: bytes) -> list[bytes]:
    """The ways a secret could sit in a file: raw, base64, hex."""
    return [secret, base64.b64encode(secret), secret.hex().encode()]


def _decrypted(path: Path) -> bytes:
    """A key file's plaintext, opened with the passphrase of the owner's folder (the
    nearest folder above it that keeps one: a retired key sits in `retired/`)."""
    home = next(p for p in path.parents if (p / "passphrase").exists())
    passphrase = read_passphrase(home)
    for opener in (
        lambda: json.dumps(load_secrets(path, passphrase).__dict__, default=lambda b: b.hex()),
        lambda: load_signing_key(path, passphrase).seed.hex(),
        lambda: load_pem_key(path, passphrase).decode(),
    ):
        try:
            return str(opener()).encode()
        except KeyFileError:
            continue
    raise AssertionError(f"{path} opens as no kind of key file")


def secrets_by_owner(root: Path) -> dict[str, list[bytes]]:
    """Every private key of every party, custodian and the authority, by owner folder."""
    paths = FederationPaths(root)
    owners: dict[str, list[bytes]] = {}
    for org in sorted(paths.orgs.iterdir()):
        held = load_secrets(OrgPaths(org).key, read_passphrase(org))
        owners[str(org)] = [
            held.signing_seed,
            held.box_private,
            held.pseudonym_key,
            held.tls_key_pem.split(b"-----")[2].strip(),  # the key body, not the armour
        ]
    for name in CUSTODIANS:
        folder = paths.custodian(name)
        owners[str(folder)] = [load_signing_key(folder / "root.key", read_passphrase(folder)).seed]
    authority = paths.authority
    passphrase = read_passphrase(authority)
    owners[str(authority)] = [
        load_pem_key(authority / name, passphrase).split(b"-----")[2].strip()
        for name in ("ca.key", "client.key")
    ]
    return owners


def files_and_plaintexts(root: Path) -> Iterator[tuple[Path, bytes]]:
    """Every file's bytes, and each key file's plaintext too."""
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        yield path, path.read_bytes()
        if path.suffix == ".key":
            yield path, _decrypted(path)


def holders_of_secrets(root: Path) -> tuple[dict[str, list[bytes]], dict[Path, set[str]]]:
    """Every owner's secrets, and for every file holding any, whose secrets it holds."""
    owners = secrets_by_owner(root)
    holders: dict[Path, set[str]] = {}
    for path, content in files_and_plaintexts(root):
        for owner, secrets in owners.items():
            if any(form in content for secret in secrets for form in _forms(secret)):
                holders.setdefault(path, set()).add(owner)
    return owners, holders


def assert_secrets_stay_home(root: Path) -> int:
    """No file holds two owners' secrets, none is outside its owner's folder, the
    authority's folder holds only its own; returns how many owners there are."""
    owners, holders = holders_of_secrets(root)
    for path, found in holders.items():
        assert len(found) == 1, f"{path} holds secrets of {sorted(found)}"
        (owner,) = found
        assert path.is_relative_to(owner), f"{owner}'s secret is in {path}"
    # Every owner's secrets are found (so the scan would notice a leak), only at home.
    assert {owner for found in holders.values() for owner in found} == set(owners)
    authority = FederationPaths(root).authority
    assert all(
        found == {str(authority)} for p, found in holders.items() if p.is_relative_to(authority)
    )
    return len(owners)
