"""Key files: one passphrase-encrypted file per party (and per offline key).

Format (JSON, UTF-8):
    {"format": "fedscore-keyfile-v1", "kdf": "argon2id", "opslimit": int, "memlimit": int,
     "salt": base64, "ciphertext": base64}
The key is Argon2id(passphrase, salt, opslimit, memlimit) and the ciphertext is a
PyNaCl `SecretBox` (XSalsa20-Poly1305, random nonce inside) of the secrets as JSON.
A lone signing key uses the same layout with format "fedscore-signing-key-v1".

Invariants:
- Any failure to open a file (wrong passphrase, damaged or foreign file) raises
  `KeyFileError` (reason KEY_FILE) with a message saying which; secrets never appear in
  messages or reprs.
- Files are written with mode 0600 and atomically (temp file in the same directory,
  fsync, `os.replace`), so a crash never leaves a half-written key file.
- KDF limits read from a file are bounded, so a damaged file cannot make loading
  consume unbounded memory or time.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nacl.exceptions
import nacl.pwhash
import nacl.secret
import nacl.utils

from fedscore.errors import KeyFileError
from keys.box import BoxKeyPair
from keys.signing import SigningKey

PARTY_FORMAT = "fedscore-keyfile-v1"
SIGNING_KEY_FORMAT = "fedscore-signing-key-v1"
KDF_NAME = "argon2id"
SECRET_BYTES = 32

_argon2id = nacl.pwhash.argon2id


@dataclass(frozen=True)
class PartySecrets:
    """Everything private one party holds. Never logged: fields are hidden from repr."""

    signing_seed: bytes = field(repr=False)
    box_private: bytes = field(repr=False)
    tls_key_pem: bytes = field(repr=False)
    pseudonym_key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        for name in ("signing_seed", "box_private", "pseudonym_key"):
            value = getattr(self, name)
            if not isinstance(value, bytes) or len(value) != SECRET_BYTES:
                raise KeyFileError(f"{name} must be {SECRET_BYTES} bytes")
        if not isinstance(self.tls_key_pem, bytes):
            raise KeyFileError("tls_key_pem must be PEM bytes")

    @classmethod
    def generate(cls, tls_key_pem: bytes) -> PartySecrets:
        """Fresh random signing, box and pseudonym keys alongside the given TLS key."""
        return cls(
            signing_seed=SigningKey.generate().seed,
            box_private=BoxKeyPair.generate().private_bytes,
            tls_key_pem=tls_key_pem,
            pseudonym_key=nacl.utils.random(SECRET_BYTES),
        )

    @property
    def signing_key(self) -> SigningKey:
        return SigningKey.from_seed(self.signing_seed)

    @property
    def box(self) -> BoxKeyPair:
        return BoxKeyPair.from_private(self.box_private)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _unb64(text: object, what: str, path: Path) -> bytes:
    if not isinstance(text, str):
        raise KeyFileError(f"{path}: field {what!r} is missing or not a string")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise KeyFileError(f"{path}: field {what!r} is not valid base64") from exc


def _passphrase_bytes(passphrase: str | bytes) -> bytes:
    return passphrase.encode("utf-8") if isinstance(passphrase, str) else bytes(passphrase)


def _derive(passphrase: bytes, salt: bytes, opslimit: int, memlimit: int) -> bytes:
    return bytes(
        _argon2id.kdf(nacl.secret.SecretBox.KEY_SIZE, passphrase, salt, opslimit, memlimit)
    )


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # mkstemp creates the file 0600, so the secret is never readable by others, even briefly.
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, 0o600)
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


def _encrypt_to_file(
    path: str | os.PathLike[str],
    file_format: str,
    plaintext: bytes,
    passphrase: str | bytes,
    fast_kdf: bool,
) -> None:
    secret = _passphrase_bytes(passphrase)
    if not secret:
        raise KeyFileError("passphrase must not be empty")
    if fast_kdf:
        opslimit, memlimit = _argon2id.OPSLIMIT_MIN, _argon2id.MEMLIMIT_MIN
    else:
        opslimit, memlimit = _argon2id.OPSLIMIT_INTERACTIVE, _argon2id.MEMLIMIT_INTERACTIVE
    salt = nacl.utils.random(_argon2id.SALTBYTES)
    box = nacl.secret.SecretBox(_derive(secret, salt, opslimit, memlimit))
    document = {
        "format": file_format,
        "kdf": KDF_NAME,
        "opslimit": opslimit,
        "memlimit": memlimit,
        "salt": _b64(salt),
        "ciphertext": _b64(bytes(box.encrypt(plaintext))),
    }
    _write_atomic(Path(path), (json.dumps(document, indent=2) + "\n").encode("utf-8"))


def _decrypt_file(path: str | os.PathLike[str], file_format: str, passphrase: str | bytes) -> bytes:
    where = Path(path)
    try:
        raw = where.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"{where}: cannot read key file ({exc.strerror})") from exc
    try:
        document: Any = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise KeyFileError(f"{where}: not a fedscore key file (not JSON)") from exc
    if not isinstance(document, dict) or document.get("format") != file_format:
        found = document.get("format") if isinstance(document, dict) else None
        raise KeyFileError(f"{where}: expected format {file_format!r}, found {found!r}")
    if document.get("kdf") != KDF_NAME:
        raise KeyFileError(f"{where}: unsupported kdf {document.get('kdf')!r}")
    opslimit, memlimit = document.get("opslimit"), document.get("memlimit")
    if not (
        isinstance(opslimit, int)
        and isinstance(memlimit, int)
        and _argon2id.OPSLIMIT_MIN <= opslimit <= _argon2id.OPSLIMIT_SENSITIVE
        and _argon2id.MEMLIMIT_MIN <= memlimit <= _argon2id.MEMLIMIT_SENSITIVE
    ):
        raise KeyFileError(f"{where}: KDF limits are missing or out of range")
    salt = _unb64(document.get("salt"), "salt", where)
    if len(salt) != _argon2id.SALTBYTES:
        raise KeyFileError(f"{where}: salt must be {_argon2id.SALTBYTES} bytes")
    ciphertext = _unb64(document.get("ciphertext"), "ciphertext", where)
    box = nacl.secret.SecretBox(_derive(_passphrase_bytes(passphrase), salt, opslimit, memlimit))
    try:
        return bytes(box.decrypt(ciphertext))
    except (nacl.exceptions.CryptoError, ValueError) as exc:
        raise KeyFileError(
            f"{where}: wrong passphrase, or the key file is damaged (decryption failed)"
        ) from exc


def save_secrets(
    path: str | os.PathLike[str],
    secrets: PartySecrets,
    passphrase: str | bytes,
    *,
    fast_kdf: bool = False,
) -> None:
    """Encrypt `secrets` under `passphrase` into `path` (mode 0600, atomic)."""
    plaintext = json.dumps(
        {
            "signing_seed": _b64(secrets.signing_seed),
            "box_private": _b64(secrets.box_private),
            "tls_key_pem": _b64(secrets.tls_key_pem),
            "pseudonym_key": _b64(secrets.pseudonym_key),
        }
    ).encode("utf-8")
    _encrypt_to_file(path, PARTY_FORMAT, plaintext, passphrase, fast_kdf)


def load_secrets(path: str | os.PathLike[str], passphrase: str | bytes) -> PartySecrets:
    """Decrypt a party key file; `KeyFileError` on a wrong passphrase or a damaged file."""
    where = Path(path)
    plaintext = _decrypt_file(where, PARTY_FORMAT, passphrase)
    try:
        fields = json.loads(plaintext)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise KeyFileError(f"{where}: decrypted secrets are not valid JSON") from exc
    if not isinstance(fields, dict):
        raise KeyFileError(f"{where}: decrypted secrets are not an object")
    return PartySecrets(
        signing_seed=_unb64(fields.get("signing_seed"), "signing_seed", where),
        box_private=_unb64(fields.get("box_private"), "box_private", where),
        tls_key_pem=_unb64(fields.get("tls_key_pem"), "tls_key_pem", where),
        pseudonym_key=_unb64(fields.get("pseudonym_key"), "pseudonym_key", where),
    )


def save_signing_key(
    path: str | os.PathLike[str],
    key: SigningKey,
    passphrase: str | bytes,
    *,
    fast_kdf: bool = False,
) -> None:
    """Encrypt a lone Ed25519 key (federation root, policy authority) into `path`."""
    _encrypt_to_file(path, SIGNING_KEY_FORMAT, key.seed, passphrase, fast_kdf)


def load_signing_key(path: str | os.PathLike[str], passphrase: str | bytes) -> SigningKey:
    """Decrypt a lone signing key file; `KeyFileError` on a wrong passphrase or damage."""
    seed = _decrypt_file(path, SIGNING_KEY_FORMAT, passphrase)
    if len(seed) != SECRET_BYTES:
        raise KeyFileError(f"{Path(path)}: signing key must be {SECRET_BYTES} bytes")
    return SigningKey.from_seed(seed)


PEM_KEY_FORMAT = "fedscore-pem-key-v1"


def save_pem_key(
    path: str | os.PathLike[str], key_pem: bytes, passphrase: str | bytes, *, fast_kdf: bool = False
) -> None:
    """Encrypt a PEM private key (e.g. the federation CA's) like every other key file."""
    _encrypt_to_file(path, PEM_KEY_FORMAT, key_pem, passphrase, fast_kdf)


def load_pem_key(path: str | os.PathLike[str], passphrase: str | bytes) -> bytes:
    return _decrypt_file(path, PEM_KEY_FORMAT, passphrase)
