"""A root custodian: holds one root key in a folder of their own and signs registry versions.

A registry version is valid only when a threshold of custodians signed it
(`keys.registry_chain`); no custodian, and not the federation authority, can publish one
alone. A custodian signs a draft with their own command after reading what it says.

Files in a custodian's folder: `root.key` (the Ed25519 root key, encrypted with Argon2id),
`root.pub` (public: custodian name, key and key id, as JSON) and, in a local federation,
`passphrase` (0600; in production $FEDSCORE_PASSPHRASE instead).
"""

from __future__ import annotations

import base64
import json
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from fedscore.errors import InvalidArgument
from fedscore.runtime.party import read_passphrase
from fedscore.times import iso_time
from fedscore.v1.trust_pb2 import Participant, Role, RootKey, Sector, SignedRegistry, TrustRegistry
from keys.ids import key_id
from keys.keyfile import load_signing_key, save_signing_key
from keys.registry_chain import add_signature, registry_digest
from keys.signing import SigningKey

ROOT_KEY_FILE = "root.key"
ROOT_PUB_FILE = "root.pub"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]{0,62}$")


@dataclass(frozen=True)
class Signed:
    """What a custodian signed, and what it changes from the version before it."""

    custodian: str
    federation_id: str
    version: int
    participants: int
    signatures: int
    changes: tuple[str, ...]


def _entry_text(p: Participant) -> str:
    return f"{p.id} ({Role.Name(p.role)}, key {key_id(bytes(p.signing_public_key))[:12]})"


def changes(previous: TrustRegistry | None, new: TrustRegistry) -> tuple[str, ...]:
    """What `new` changes from `previous`, in words a custodian checks before signing."""
    if previous is None:
        return tuple(f"lists {_entry_text(p)}" for p in new.participants)
    said: list[str] = []
    old = {(p.id, bytes(p.signing_public_key)): p for p in previous.participants}
    now = {(p.id, bytes(p.signing_public_key)): p for p in new.participants}
    for key in sorted(now.keys() - old.keys()):
        said.append(f"adds {_entry_text(now[key])}")
    for key in sorted(old.keys() - now.keys()):
        said.append(f"removes {_entry_text(old[key])}")
    for key in sorted(now.keys() & old.keys()):
        before, after = old[key], now[key]
        if before.not_after != after.not_after:
            until = iso_time(after.not_after)
            said.append(f"{after.id}: key {key_id(key[1])[:12]} now valid until {until}")
        if before.endpoint != after.endpoint:
            said.append(f"{after.id}: endpoint {before.endpoint or '-'} -> {after.endpoint or '-'}")
        if before.sector != after.sector:
            said.append(
                f"{after.id}: sector {Sector.Name(before.sector)} -> {Sector.Name(after.sector)}"
            )
    if previous.root != new.root:
        said.append(
            f"root: {new.root.threshold} of {len(new.root.keys)} keys "
            f"({', '.join(k.custodian for k in new.root.keys)})"
        )
    return tuple(said) or (f"nothing but its validity (until {iso_time(new.not_after)})",)


def _previous(draft_path: Path, registry: TrustRegistry) -> TrustRegistry | None:
    """The published version the draft follows, if it lies beside the draft (`registry/`)."""
    if registry.version <= 1:
        return None
    path = draft_path.parent / "registry" / f"v{registry.version - 1:06d}.signed"
    if not path.exists():
        return None
    signed = SignedRegistry.FromString(path.read_bytes())
    if registry_digest(signed.registry) != bytes(registry.previous_digest):
        raise InvalidArgument(
            f"the draft does not follow {path}: it names another predecessor", "CHAIN_BROKEN"
        )
    previous = TrustRegistry()
    previous.ParseFromString(signed.registry)
    return previous


def init_custodian(
    folder: Path, name: str, *, passphrase: str | None = None, fast_kdf: bool = False
) -> RootKey:
    """A new root key in `folder` (which must not hold one yet)."""
    folder = Path(folder)
    if not _NAME.match(name):
        raise InvalidArgument(
            f"custodian name {name!r} must be letters, digits, '-', '.'", "BAD_NAME"
        )
    if (folder / ROOT_KEY_FILE).exists():
        raise InvalidArgument(f"{folder} already holds a root key", reason="FOLDER_NOT_EMPTY")
    folder.mkdir(parents=True, exist_ok=True)
    if passphrase is None:
        passphrase = secrets.token_urlsafe(24)
        (folder / "passphrase").write_text(passphrase + "\n", "utf-8")
        (folder / "passphrase").chmod(0o600)
    key = SigningKey.generate()
    save_signing_key(folder / ROOT_KEY_FILE, key, passphrase, fast_kdf=fast_kdf)
    document = {
        "custodian": name,
        "public_key": base64.b64encode(key.verify_key.encode()).decode("ascii"),
        "key_id": key.key_id,
    }
    (folder / ROOT_PUB_FILE).write_text(json.dumps(document, indent=2) + "\n", "utf-8")
    return RootKey(custodian=name, public_key=key.verify_key.encode())


def read_root_pub(path: Path) -> RootKey:
    """A custodian's published root key (`root.pub`, or the folder holding it)."""
    path = Path(path)
    if path.is_dir():
        path = path / ROOT_PUB_FILE
    try:
        document = json.loads(path.read_text("utf-8"))
        key = base64.b64decode(document["public_key"], validate=True)
        name = str(document["custodian"])
    except FileNotFoundError:
        raise InvalidArgument(f"{path}: no such root key file", reason="FILE_NOT_FOUND") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidArgument(f"{path}: not a custodian's root.pub", reason="BAD_ROOT_KEY") from exc
    if len(key) != 32:
        raise InvalidArgument(f"{path}: the root key is not 32 bytes", reason="BAD_ROOT_KEY")
    return RootKey(custodian=name, public_key=key)


def sign_draft(folder: Path, draft_path: Path, *, passphrase: str | None = None) -> Signed:
    """Add this custodian's signature to the draft registry version at `draft_path`."""
    folder, draft_path = Path(folder), Path(draft_path)
    try:
        draft = SignedRegistry.FromString(draft_path.read_bytes())
    except FileNotFoundError:
        raise InvalidArgument(f"{draft_path}: no draft to sign", reason="FILE_NOT_FOUND") from None
    name = read_root_pub(folder).custodian
    key = load_signing_key(folder / ROOT_KEY_FILE, read_passphrase(folder, passphrase))
    # A custodian of the old root signs a version whose root no longer lists them: that
    # is how a root rotation gets a threshold of the old root.
    registry = TrustRegistry.FromString(draft.registry)
    signed = add_signature(draft, key)
    tmp = draft_path.with_name(draft_path.name + ".tmp")
    tmp.write_bytes(signed.SerializeToString())
    tmp.replace(draft_path)
    return Signed(
        custodian=name,
        federation_id=registry.federation_id,
        version=int(registry.version),
        participants=len(registry.participants),
        signatures=len(signed.signatures),
        changes=changes(_previous(draft_path, registry), registry),
    )
