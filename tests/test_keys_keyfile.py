"""Encrypted key files: round trip, wrong passphrase, damage, permissions, atomic writes."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import nacl.pwhash
import pytest

from fedscore.errors import KeyFileError
from keys.keyfile import (
    PartySecrets,
    load_secrets,
    load_signing_key,
    save_secrets,
    save_signing_key,
)
from keys.signing import SigningKey
from keys.tls import create_ca

TLS_KEY_PEM, _ = create_ca("keyfile test CA")
PASSPHRASE = "correct horse battery staple"


def _secrets() -> PartySecrets:
    return PartySecrets.generate(TLS_KEY_PEM)


def test_round_trip(tmp_path: Path) -> None:
    secrets = _secrets()
    path = tmp_path / "party.key"
    save_secrets(path, secrets, PASSPHRASE, fast_kdf=True)
    assert load_secrets(path, PASSPHRASE) == secrets
    assert load_secrets(path, PASSPHRASE.encode()) == secrets


def test_file_format_and_mode(tmp_path: Path) -> None:
    secrets = _secrets()
    path = tmp_path / "nested" / "party.key"
    save_secrets(path, secrets, PASSPHRASE, fast_kdf=True)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    document = json.loads(path.read_text())
    assert document["format"] == "fedscore-keyfile-v1"
    assert document["kdf"] == "argon2id"
    assert document["opslimit"] == nacl.pwhash.argon2id.OPSLIMIT_MIN
    assert document["memlimit"] == nacl.pwhash.argon2id.MEMLIMIT_MIN
    raw = path.read_bytes()
    for secret in (secrets.signing_seed, secrets.box_private, secrets.pseudonym_key):
        assert secret not in raw
    assert b"PRIVATE KEY" not in raw
    # Nothing but the key file is left behind.
    assert [p.name for p in path.parent.iterdir()] == ["party.key"]


def test_default_limits_are_interactive(tmp_path: Path) -> None:
    path = tmp_path / "party.key"
    save_secrets(path, _secrets(), PASSPHRASE)
    document = json.loads(path.read_text())
    assert document["opslimit"] == nacl.pwhash.argon2id.OPSLIMIT_INTERACTIVE
    assert document["memlimit"] == nacl.pwhash.argon2id.MEMLIMIT_INTERACTIVE


def test_wrong_passphrase(tmp_path: Path) -> None:
    path = tmp_path / "party.key"
    save_secrets(path, _secrets(), PASSPHRASE, fast_kdf=True)
    with pytest.raises(KeyFileError) as error:
        load_secrets(path, "incorrect horse battery staple")
    assert error.value.reason == "KEY_FILE"
    assert "wrong passphrase" in error.value.message
    assert str(path) in error.value.message


def test_overwrite_replaces_the_file(tmp_path: Path) -> None:
    path = tmp_path / "party.key"
    save_secrets(path, _secrets(), PASSPHRASE, fast_kdf=True)
    newer = _secrets()
    save_secrets(path, newer, "new passphrase", fast_kdf=True)
    assert load_secrets(path, "new passphrase") == newer
    with pytest.raises(KeyFileError):
        load_secrets(path, PASSPHRASE)


def _damage(path: Path, **changes: object) -> None:
    document = json.loads(path.read_text())
    document.update(changes)
    path.write_text(json.dumps(document))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"format": "something-else"}, "expected format"),
        ({"kdf": "scrypt"}, "unsupported kdf"),
        ({"memlimit": 2**40}, "out of range"),
        ({"opslimit": "2"}, "out of range"),
        ({"salt": "!!"}, "base64"),
        ({"salt": "AAAA"}, "salt must be"),
        ({"ciphertext": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}, "damaged"),
    ],
)
def test_damaged_file(tmp_path: Path, changes: dict[str, object], message: str) -> None:
    path = tmp_path / "party.key"
    save_secrets(path, _secrets(), PASSPHRASE, fast_kdf=True)
    _damage(path, **changes)
    with pytest.raises(KeyFileError) as error:
        load_secrets(path, PASSPHRASE)
    assert message in error.value.message


def test_not_a_key_file(tmp_path: Path) -> None:
    path = tmp_path / "party.key"
    path.write_bytes(b"\x00\xffnot json")
    with pytest.raises(KeyFileError):
        load_secrets(path, PASSPHRASE)
    with pytest.raises(KeyFileError) as error:
        load_secrets(tmp_path / "missing.key", PASSPHRASE)
    assert "cannot read" in error.value.message


def test_empty_passphrase_is_refused(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError):
        save_secrets(tmp_path / "party.key", _secrets(), "", fast_kdf=True)


def test_secrets_are_hidden_from_repr() -> None:
    secrets = _secrets()
    assert secrets.signing_seed.hex() not in repr(secrets)
    assert "PRIVATE" not in repr(secrets)


def test_secrets_give_their_keys() -> None:
    secrets = _secrets()
    assert secrets.signing_key.seed == secrets.signing_seed
    assert secrets.box.private_bytes == secrets.box_private


def test_short_secret_is_refused() -> None:
    with pytest.raises(KeyFileError):
        PartySecrets(b"short", b"\0" * 32, TLS_KEY_PEM, b"\0" * 32)


def test_signing_key_round_trip(tmp_path: Path) -> None:
    key = SigningKey.generate()
    path = tmp_path / "root.key"
    save_signing_key(path, key, PASSPHRASE, fast_kdf=True)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_signing_key(path, PASSPHRASE).verify_key == key.verify_key
    with pytest.raises(KeyFileError):
        load_signing_key(path, "wrong")
    # A lone signing key file is not a party key file, and vice versa.
    with pytest.raises(KeyFileError) as error:
        load_secrets(path, PASSPHRASE)
    assert "expected format" in error.value.message
