"""Sealed subjects: only the addressed agency opens one, and only for its token."""

from __future__ import annotations

import pytest

from fedscore.errors import InvalidArgument, PermissionDenied
from keys.box import BoxKeyPair, seal_to
from keys.seal import open_subject, seal_subject

TRC = BoxKeyPair.generate()
DSD = BoxKeyPair.generate()
NATIONAL_ID = "1101700203468"


def test_round_trip() -> None:
    blob = seal_subject("tok-1", "trc", NATIONAL_ID, TRC.public_bytes)
    assert open_subject(blob, TRC, "tok-1", "trc") == NATIONAL_ID
    assert NATIONAL_ID.encode() not in blob


def test_seals_are_randomised() -> None:
    # Two seals of the same ID must not be linkable by comparing blobs.
    first = seal_subject("tok-1", "trc", NATIONAL_ID, TRC.public_bytes)
    assert first != seal_subject("tok-1", "trc", NATIONAL_ID, TRC.public_bytes)


def test_another_agency_cannot_open() -> None:
    blob = seal_subject("tok-1", "trc", NATIONAL_ID, TRC.public_bytes)
    with pytest.raises(InvalidArgument) as error:
        open_subject(blob, DSD, "tok-1", "trc")
    assert error.value.reason == "BAD_SEAL"


def test_token_mismatch_is_refused() -> None:
    blob = seal_subject("tok-1", "trc", NATIONAL_ID, TRC.public_bytes)
    with pytest.raises(PermissionDenied) as error:
        open_subject(blob, TRC, "tok-2", "trc")
    assert error.value.reason == "SEAL_MISMATCH"


def test_agency_mismatch_is_refused() -> None:
    # Sealed to trc's key but bound to dsd: trc must not accept it as its own.
    blob = seal_subject("tok-1", "dsd", NATIONAL_ID, TRC.public_bytes)
    with pytest.raises(PermissionDenied) as error:
        open_subject(blob, TRC, "tok-1", "trc")
    assert error.value.reason == "SEAL_MISMATCH"


@pytest.mark.parametrize("plaintext", [b"\x0a\x05ab", b"\x1a\x0d1101700203467"])
def test_sealed_garbage_is_a_bad_seal(plaintext: bytes) -> None:
    # Opens with the right key but is not a valid SubjectSeal / holds an invalid ID.
    with pytest.raises(InvalidArgument) as error:
        open_subject(seal_to(TRC.public_bytes, plaintext), TRC, "", "")
    assert error.value.reason == "BAD_SEAL"


def test_truncated_blob_is_a_bad_seal() -> None:
    blob = seal_subject("tok-1", "trc", NATIONAL_ID, TRC.public_bytes)
    with pytest.raises(InvalidArgument) as error:
        open_subject(blob[:-1], TRC, "tok-1", "trc")
    assert error.value.reason == "BAD_SEAL"


def test_invalid_id_is_never_sealed() -> None:
    with pytest.raises(InvalidArgument) as error:
        seal_subject("tok-1", "trc", "1101700203467", TRC.public_bytes)
    assert error.value.reason == "INVALID_NATIONAL_ID"
