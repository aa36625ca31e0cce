"""Each signed object opens only under its own party's keys, parses, then checks itself.

`fedscore.protocol.signed`: a keyring's type says whose keys it holds, so the wrong
keyring is refused by mypy (checked here on a snippet) and, for an untyped caller, at
run time; a payload that verifies but breaks its kind's invariants is refused by name.
"""

from __future__ import annotations

import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from fedscore.errors import FedscoreError
from fedscore.protocol.signed import (
    SignedReceipt,
    SignedRevocationNotice,
    SignedScoreResult,
    SignedStatusList,
)
from fedscore.protocol.status_list import build_status_list
from fedscore.v1.consent_pb2 import ConsentReceipt, RevocationNotice, StatusList
from fedscore.v1.query_pb2 import ScoreResult
from keys.envelope import sign_message
from keys.keyring import AgencyKeys, CoordinatorKeys, Keyring, RegistryKeys
from keys.signing import SigningKey

ROOT = Path(__file__).resolve().parent.parent
REGISTRY = SigningKey.generate()
COORDINATOR = SigningKey.generate()
REGISTRY_KEYS = RegistryKeys.of({"consent-registry": REGISTRY.verify_key})
COORDINATOR_KEYS = CoordinatorKeys.of({"coordinator": COORDINATOR.verify_key})
NOW = 1_800_000_000


def _receipt(**fields: object) -> ConsentReceipt:
    values: dict[str, object] = {"receipt_id": "r1", "token_id": "t1", "event": "granted"}
    values.update(fields)
    return ConsentReceipt(**values)  # type: ignore[arg-type]


def test_each_kind_opens_under_its_own_keys() -> None:
    receipt = SignedReceipt.verify(sign_message(_receipt(), REGISTRY), REGISTRY_KEYS)
    assert (receipt.receipt.token_id, receipt.signer) == ("t1", "consent-registry")
    status = build_status_list("consent-registry", 3, [5], 64, 60, NOW)
    opened = SignedStatusList.verify(sign_message(status, REGISTRY), REGISTRY_KEYS, NOW)
    assert opened.status_list.sequence == 3 and opened.bits[0] == 0x04
    notice = RevocationNotice(issuer="consent-registry", token_id="t1", status_index=5)
    assert (
        SignedRevocationNotice.verify(sign_message(notice, REGISTRY), REGISTRY_KEYS).notice
        == notice
    )
    result = ScoreResult(query_id="q1", band="5%")
    assert (
        SignedScoreResult.verify(sign_message(result, COORDINATOR), COORDINATOR_KEYS).result
        == result
    )


def test_another_partys_keys_are_refused_at_run_time_too() -> None:
    envelope = sign_message(_receipt(), REGISTRY)
    untyped: Keyring = COORDINATOR_KEYS  # what an untyped caller might pass
    with pytest.raises(TypeError, match="only under RegistryKeys, not CoordinatorKeys"):
        SignedReceipt.verify(envelope, untyped)  # type: ignore[arg-type]
    # A registry keyring that does not hold the signer's key: UNKNOWN_SIGNER.
    with pytest.raises(FedscoreError) as refused:
        SignedReceipt.verify(sign_message(_receipt(), COORDINATOR), REGISTRY_KEYS)
    assert refused.value.reason == "UNKNOWN_SIGNER"


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (_receipt(event="extended"), "BAD_RECEIPT"),
        (_receipt(token_id=""), "BAD_RECEIPT"),
        (RevocationNotice(issuer="consent-registry", token_id=""), "BAD_NOTICE"),
        (RevocationNotice(issuer="someone-else", token_id="t1"), "BAD_NOTICE"),
        (StatusList(issuer="consent-registry", issued_at=NOW + 3600), "BAD_STATUS_LIST"),
        (StatusList(issuer="someone-else", issued_at=NOW), "BAD_STATUS_LIST"),
        (StatusList(issuer="consent-registry", compressed_bits=b"not zlib"), "BAD_STATUS_LIST"),
        (
            StatusList(
                issuer="consent-registry", size_bits=1024, compressed_bits=zlib.compress(b"\0")
            ),
            "BAD_STATUS_LIST",
        ),
    ],
    ids=lambda value: type(value).__name__ if not isinstance(value, str) else value,
)
def test_a_verified_payload_that_breaks_its_invariants_is_refused(
    message: ConsentReceipt | RevocationNotice | StatusList, reason: str
) -> None:
    envelope = sign_message(message, REGISTRY)
    with pytest.raises(FedscoreError) as refused:
        if isinstance(message, ConsentReceipt):
            SignedReceipt.verify(envelope, REGISTRY_KEYS)
        elif isinstance(message, RevocationNotice):
            SignedRevocationNotice.verify(envelope, REGISTRY_KEYS)
        else:
            SignedStatusList.verify(envelope, REGISTRY_KEYS, NOW)
    assert refused.value.reason == reason


def test_a_result_that_releases_nothing_is_refused() -> None:
    with pytest.raises(FedscoreError) as refused:
        SignedScoreResult.verify(
            sign_message(ScoreResult(query_id="q1"), COORDINATOR), COORDINATOR_KEYS
        )
    assert refused.value.reason == "BAD_RESULT"


_WRONG_KEYS = """
from fedscore.protocol.signed import SignedReceipt, SignedScoreResult
from fedscore.v1.envelope_pb2 import Envelope
from keys.keyring import AgencyKeys, CoordinatorKeys, RegistryKeys

def check(envelope: Envelope, agency: AgencyKeys, registry: RegistryKeys) -> None:
    SignedReceipt.verify(envelope, registry)
    SignedReceipt.verify(envelope, agency)
    SignedScoreResult.verify(envelope, registry)
"""


@pytest.mark.integration  # runs mypy in a subprocess
def test_the_wrong_keyring_is_a_type_error(tmp_path: Path) -> None:
    snippet = tmp_path / "wrong_keys.py"
    snippet.write_text(_WRONG_KEYS)
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(snippet)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    errors = [line for line in done.stdout.splitlines() if ": error:" in line]
    assert len(errors) == 2, done.stdout
    assert 'incompatible type "AgencyKeys"; expected "RegistryKeys"' in errors[0]
    assert 'incompatible type "RegistryKeys"; expected "CoordinatorKeys"' in errors[1]


def test_keys_of_one_kind_are_not_keys_of_another() -> None:
    assert not isinstance(AgencyKeys.of({}), CoordinatorKeys | RegistryKeys)
