"""Typed keys: signing keys, keyrings and box keys."""

from __future__ import annotations

import pytest

from fedscore.errors import InvalidArgument, Unauthenticated
from keys.box import BoxKeyPair, seal_to
from keys.keyring import Keyring
from keys.signing import SigningKey, VerifyKey


def test_seed_round_trip_gives_the_same_key() -> None:
    key = SigningKey.generate()
    again = SigningKey.from_seed(key.seed)
    assert again.verify_key == key.verify_key
    assert again.sign(b"data") == key.sign(b"data")
    assert VerifyKey.from_bytes(key.verify_key.encode()).key_id == key.key_id


def test_verify_raises_on_other_data() -> None:
    key = SigningKey.generate()
    signature = key.sign(b"data")
    key.verify_key.verify(b"data", signature)
    with pytest.raises(Unauthenticated) as error:
        key.verify_key.verify(b"date", signature)
    assert error.value.reason == "BAD_SIGNATURE"
    with pytest.raises(Unauthenticated):
        key.verify_key.verify(b"data", signature[:-1])


@pytest.mark.parametrize("length", [0, 31, 33])
def test_wrong_key_lengths_are_refused(length: int) -> None:
    for make in (SigningKey.from_seed, VerifyKey.from_bytes, BoxKeyPair.from_private):
        with pytest.raises(InvalidArgument) as error:
            make(bytes(length))
        assert error.value.reason == "BAD_KEY"


def test_repr_never_shows_the_seed() -> None:
    key = SigningKey.from_seed(b"\x11" * 32)
    assert "11" * 8 not in repr(key)


def test_keyring_lookup_and_unknown_key() -> None:
    a, b = SigningKey.generate(), SigningKey.generate()
    keyring = Keyring.of({"a": a.verify_key, "b": b.verify_key}, purpose="test")
    assert keyring.lookup(a.key_id) == ("a", a.verify_key)
    assert keyring.participants() == frozenset({"a", "b"})
    assert len(keyring) == 2
    with pytest.raises(Unauthenticated) as error:
        keyring.lookup(SigningKey.generate().key_id)
    assert error.value.reason == "UNKNOWN_SIGNER"


def test_keyring_refuses_one_key_for_two_participants() -> None:
    key = SigningKey.generate().verify_key
    with pytest.raises(InvalidArgument) as error:
        Keyring([("a", key), ("b", key)])
    assert error.value.reason == "DUPLICATE_KEY"


def test_shared_seed_is_symmetric_and_bound_to_info() -> None:
    a, b, c = BoxKeyPair.generate(), BoxKeyPair.generate(), BoxKeyPair.generate()
    seed_ab = a.shared_seed(b.public_bytes, b"info")
    assert seed_ab == b.shared_seed(a.public_bytes, b"info")
    assert len(seed_ab) == 32
    assert seed_ab != a.shared_seed(b.public_bytes, b"other info")
    assert seed_ab != a.shared_seed(c.public_bytes, b"info")


def test_shared_seed_refuses_a_low_order_point() -> None:
    with pytest.raises(InvalidArgument) as error:
        BoxKeyPair.generate().shared_seed(bytes(32), b"info")
    assert error.value.reason == "BAD_KEY"


def test_sealed_box_opens_only_with_its_key() -> None:
    box = BoxKeyPair.generate()
    blob = seal_to(box.public_bytes, b"secret")
    assert box.open_sealed(blob) == b"secret"
    assert BoxKeyPair.from_private(box.private_bytes).open_sealed(blob) == b"secret"
    with pytest.raises(InvalidArgument) as error:
        BoxKeyPair.generate().open_sealed(blob)
    assert error.value.reason == "BAD_SEAL"
    with pytest.raises(InvalidArgument):
        box.open_sealed(b"short")
