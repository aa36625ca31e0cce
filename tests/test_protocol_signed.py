"""Each signed object opens only under its own party's keys, parses, then checks itself.

`fedscore.protocol.signed` (the consent registry's objects, the score result),
`fedscore.protocol.questions` (the questions and answers between the coordinator and the
nodes) and `fedscore.protocol.helper_messages` (a two-server release's shares, order and
noisy sums, docs/adr/0019): a keyring's type says whose keys it holds, so the wrong
keyring is refused by mypy (checked here on a snippet) and, for an untyped caller, at
run time; a payload that
verifies but breaks its kind's invariants is refused by name. And no service opens an
envelope itself: `verify_message` and `verify_bytes` are used only where a kind is defined.
"""

from __future__ import annotations

import ast
import hashlib
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.message import Message

from fedscore.errors import Code, FedscoreError
from fedscore.protocol.helper_messages import (
    SignedHelperShare,
    SignedNoiseOrder,
    SignedNoisyShareSum,
)
from fedscore.protocol.questions import (
    MAX_BATCH_QUERIES,
    SignedContributionAnswerBatch,
    SignedContributionBatch,
    SignedLogPromise,
    SignedStatisticsAnswer,
    SignedStatisticsQuery,
)
from fedscore.protocol.signed import (
    SignedReceipt,
    SignedRevocationNotice,
    SignedScoreResult,
    SignedStatusList,
)
from fedscore.protocol.status_list import build_status_list
from fedscore.v1.consent_pb2 import ConsentReceipt, RevocationNotice, StatusList
from fedscore.v1.helper_pb2 import NoiseOrder, NoisyShareSum
from fedscore.v1.query_pb2 import (
    BatchedContributionQuery,
    ContributionAnswerBatch,
    ContributionBatch,
    LogPromise,
    ScoreResult,
)
from fedscore.v1.statistics_pb2 import HelperShare, StatisticsAnswer, StatisticsQuery
from keys.envelope import sign_message
from keys.keyring import AgencyKeys, CoordinatorKeys, HelperKeys, Keyring, RegistryKeys
from keys.signing import SigningKey

ROOT = Path(__file__).resolve().parent.parent
REGISTRY = SigningKey.generate()
COORDINATOR = SigningKey.generate()
AGENCY = SigningKey.generate()
REGISTRY_KEYS = RegistryKeys.of({"consent-registry": REGISTRY.verify_key})
COORDINATOR_KEYS = CoordinatorKeys.of({"coordinator": COORDINATOR.verify_key})
AGENCY_KEYS = AgencyKeys.of({"trc": AGENCY.verify_key})
HELPER = SigningKey.generate()
HELPER_KEYS = HelperKeys.of({"regulator-helper": HELPER.verify_key})
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
from fedscore.protocol.questions import SignedContributionAnswerBatch, SignedContributionBatch
from fedscore.protocol.signed import SignedReceipt, SignedScoreResult
from fedscore.v1.envelope_pb2 import Envelope
from keys.keyring import AgencyKeys, CoordinatorKeys, RegistryKeys

def check(
    envelope: Envelope, agency: AgencyKeys, registry: RegistryKeys, coordinator: CoordinatorKeys
) -> None:
    SignedReceipt.verify(envelope, registry)
    SignedReceipt.verify(envelope, agency)
    SignedScoreResult.verify(envelope, registry)
    SignedContributionBatch.verify(envelope, coordinator)
    SignedContributionAnswerBatch.verify(envelope, coordinator)
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
    assert len(errors) == 3, done.stdout
    assert 'incompatible type "AgencyKeys"; expected "RegistryKeys"' in errors[0]
    assert 'incompatible type "RegistryKeys"; expected "CoordinatorKeys"' in errors[1]
    assert 'incompatible type "CoordinatorKeys"; expected "AgencyKeys"' in errors[2]


def test_keys_of_one_kind_are_not_keys_of_another() -> None:
    assert not isinstance(AgencyKeys.of({}), CoordinatorKeys | RegistryKeys)


# --- the questions and answers between the coordinator and the nodes ---------------------

DIGEST = hashlib.sha256(b"the exact bytes").digest()


def _batch(**fields: Any) -> ContributionBatch:
    values: dict[str, Any] = {"batch_id": "b1", "agency_ids": ["trc"]}
    return ContributionBatch(**{**values, **fields})


def _promise(**fields: Any) -> LogPromise:
    return LogPromise(**{"origin": "coordinator", "index": 4, "query_hash": DIGEST, **fields})


def _answers(**fields: Any) -> ContributionAnswerBatch:
    values = {"batch_id": "b1", "agency_id": "trc", "batch_hash": DIGEST}
    return ContributionAnswerBatch(**{**values, **fields})


def _bins(**fields: Any) -> StatisticsAnswer:
    values = {
        "query_id": "s1",
        "agency_id": "trc",
        "coordinator_shares": [7, 9],
        "query_hash": DIGEST,
    }
    return StatisticsAnswer(**{**values, **fields})


def _share(**fields: Any) -> HelperShare:
    values = {
        "query_id": "s1",
        "agency_id": "trc",
        "query_hash": DIGEST,
        "helper": "regulator-helper",
        "bins": 2,
        "sealed_shares": b"sealed",
    }
    return HelperShare(**{**values, **fields})


def _order(**fields: Any) -> NoiseOrder:
    values = {"spec": b"spec", "release_id": "r1", "helper": "regulator-helper"}
    return NoiseOrder(**{**values, **fields})


def _noisy(**fields: Any) -> NoisyShareSum:
    values = {
        "query_id": "s1",
        "query_hash": DIGEST,
        "release_id": "r1",
        "helper": "regulator-helper",
        "noisy_sums": [1, 2],
    }
    return NoisyShareSum(**{**values, **fields})


# kind, a message that keeps its invariants, who signs it, its keys, another party's keys
QUESTIONS: list[tuple[Any, Message, SigningKey, Keyring, Keyring]] = [
    (SignedContributionBatch, _batch(), COORDINATOR, COORDINATOR_KEYS, AGENCY_KEYS),
    (
        SignedStatisticsQuery,
        StatisticsQuery(spec=b"spec", agency_id="trc"),
        COORDINATOR,
        COORDINATOR_KEYS,
        AGENCY_KEYS,
    ),
    (SignedLogPromise, _promise(), COORDINATOR, COORDINATOR_KEYS, AGENCY_KEYS),
    (SignedContributionAnswerBatch, _answers(), AGENCY, AGENCY_KEYS, COORDINATOR_KEYS),
    (SignedStatisticsAnswer, _bins(), AGENCY, AGENCY_KEYS, COORDINATOR_KEYS),
    (SignedHelperShare, _share(), AGENCY, AGENCY_KEYS, HELPER_KEYS),
    (SignedNoiseOrder, _order(), COORDINATOR, COORDINATOR_KEYS, HELPER_KEYS),
    (SignedNoisyShareSum, _noisy(), HELPER, HELPER_KEYS, COORDINATOR_KEYS),
]
QUESTION_IDS = [kind.__name__ for kind, *_ in QUESTIONS]


@pytest.mark.parametrize(
    ("kind", "message", "signer", "keys", "others"), QUESTIONS, ids=QUESTION_IDS
)
def test_each_question_and_answer_opens_under_its_own_partys_keys_only(
    kind: Any, message: Message, signer: SigningKey, keys: Keyring, others: Keyring
) -> None:
    envelope = sign_message(message, signer)
    opened = kind.verify(envelope, keys)
    assert opened.signer == next(iter(keys.participants()))
    assert [value for value in vars(opened).values() if isinstance(value, Message)] == [message]
    whose = type(keys).__name__
    with pytest.raises(TypeError, match=f"only under {whose}, not {type(others).__name__}"):
        kind.verify(envelope, others)
    # Keys of the right type that do not hold the signer's key: UNKNOWN_SIGNER.
    with pytest.raises(FedscoreError) as refused:
        kind.verify(sign_message(message, SigningKey.generate()), keys)
    assert refused.value.reason == "UNKNOWN_SIGNER"


def test_a_batch_is_bound_by_the_hash_of_its_signed_payload_and_may_fill_the_limit() -> None:
    full = _batch(queries=[BatchedContributionQuery(spec=b"s")] * MAX_BATCH_QUERIES)
    envelope = sign_message(full, COORDINATOR)
    opened = SignedContributionBatch.verify(envelope, COORDINATOR_KEYS)
    assert opened.batch_hash == hashlib.sha256(envelope.payload).digest()
    assert len(opened.batch.queries) == MAX_BATCH_QUERIES


@pytest.mark.parametrize(
    ("kind", "message", "code", "reason"),
    [
        (
            SignedContributionBatch,
            _batch(queries=[BatchedContributionQuery()] * (MAX_BATCH_QUERIES + 1)),
            Code.INVALID_ARGUMENT,
            "BATCH_TOO_LARGE",
        ),
        (SignedContributionBatch, _batch(batch_id=""), Code.INVALID_ARGUMENT, "MALFORMED_MESSAGE"),
        (
            SignedStatisticsQuery,
            StatisticsQuery(spec=b"spec"),
            Code.PERMISSION_DENIED,
            "WRONG_AGENCY",
        ),
        (SignedLogPromise, _promise(origin=""), Code.UNAUTHENTICATED, "BAD_LOG_PROMISE"),
        (SignedLogPromise, _promise(origin="another-log"), Code.UNAUTHENTICATED, "BAD_LOG_PROMISE"),
        (SignedLogPromise, _promise(query_hash=b"short"), Code.UNAUTHENTICATED, "BAD_LOG_PROMISE"),
        (
            SignedContributionAnswerBatch,
            _answers(agency_id="dsd"),
            Code.UNAUTHENTICATED,
            "SIGNER_MISMATCH",
        ),
        (SignedContributionAnswerBatch, _answers(batch_id=""), Code.INVALID_ARGUMENT, "BAD_ANSWER"),
        (
            SignedContributionAnswerBatch,
            _answers(batch_hash=b""),
            Code.INVALID_ARGUMENT,
            "BAD_ANSWER",
        ),
        (SignedStatisticsAnswer, _bins(agency_id="dsd"), Code.UNAUTHENTICATED, "SIGNER_MISMATCH"),
        (SignedStatisticsAnswer, _bins(query_id=""), Code.INVALID_ARGUMENT, "BAD_ANSWER"),
        (
            SignedStatisticsAnswer,
            _bins(query_hash=DIGEST[:31]),
            Code.INVALID_ARGUMENT,
            "BAD_ANSWER",
        ),
        (SignedHelperShare, _share(agency_id="dsd"), Code.UNAUTHENTICATED, "SIGNER_MISMATCH"),
        (SignedHelperShare, _share(query_hash=b"short"), Code.INVALID_ARGUMENT, "BAD_SHARE"),
        (SignedHelperShare, _share(sealed_shares=b""), Code.INVALID_ARGUMENT, "BAD_SHARE"),
        (SignedNoiseOrder, _order(helper=""), Code.INVALID_ARGUMENT, "BAD_ORDER"),
        (SignedNoiseOrder, _order(release_id=""), Code.INVALID_ARGUMENT, "BAD_ORDER"),
        (SignedNoisyShareSum, _noisy(helper="other"), Code.UNAUTHENTICATED, "SIGNER_MISMATCH"),
        (SignedNoisyShareSum, _noisy(release_id=""), Code.INVALID_ARGUMENT, "BAD_ANSWER"),
    ],
    ids=[
        "batch too large",
        "batch without id",
        "query for no agency",
        "promise of no log",
        "promise of another log",
        "promise without a hash",
        "answers in another agency's name",
        "answers to no batch",
        "answers without a batch hash",
        "bins in another agency's name",
        "bins for no query",
        "bins without a query hash",
        "helper share in another agency's name",
        "helper share without a query hash",
        "helper share holding nothing",
        "noise order for no helper",
        "noise order without a release id",
        "noisy sum in another helper's name",
        "noisy sum without a release id",
    ],
)
def test_a_verified_question_or_answer_that_breaks_its_invariants_is_refused(
    kind: Any, message: Message, code: Code, reason: str
) -> None:
    signer, keys = (
        (AGENCY, AGENCY_KEYS)
        if kind in (SignedContributionAnswerBatch, SignedStatisticsAnswer, SignedHelperShare)
        else (HELPER, HELPER_KEYS)
        if kind is SignedNoisyShareSum
        else (COORDINATOR, COORDINATOR_KEYS)
    )
    with pytest.raises(FedscoreError) as refused:
        kind.verify(sign_message(message, signer), keys)
    assert (refused.value.code, refused.value.reason) == (code, reason)


# --- where an envelope may be opened -----------------------------------------------------

VERIFIERS = frozenset({"verify_message", "verify_bytes"})
# Where a kind of signed object is defined: its one constructor opens the envelope. A
# trailing "/" is a whole package. Every file listed by name must use a verifier.
MAY_VERIFY = (
    "keys/envelope.py",
    "keys/admission.py",  # admission and rotation requests (the key they name)
    "policies/signing.py",  # the policy (PolicyKeys)
    "audit/core/checkpoint.py",  # checkpoints (LogKeys)
    "coordinator/bundle.py",  # release bundles (CoordinatorKeys)
    "fedscore/protocol/",
)
SOURCES = (
    "fedscore",
    "keys",
    "policies",
    "audit",
    "node",
    "consent",
    "coordinator",
    "helper",
    "bench",
)


def _verifier_uses(source: str) -> list[int]:
    """Lines naming `verify_message` or `verify_bytes`: imported, called, or passed on."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            named = any(alias.name in VERIFIERS for alias in node.names)
        elif isinstance(node, ast.Name):
            named = node.id in VERIFIERS
        elif isinstance(node, ast.Attribute):
            named = node.attr in VERIFIERS
        else:
            named = isinstance(node, ast.Constant) and node.value in VERIFIERS
        if named:
            lines.append(node.lineno)
    return sorted(set(lines))


def _uses_outside_tests() -> dict[str, list[int]]:
    return {
        str(path.relative_to(ROOT)): lines
        for package in SOURCES
        for path in sorted((ROOT / package).rglob("*.py"))
        if "v1" not in path.relative_to(ROOT).parts
        and (lines := _verifier_uses(path.read_text(encoding="utf-8")))
    }


def test_the_finder_finds_a_verifier_however_it_is_reached() -> None:
    direct = "from keys.envelope import verify_message\nverify_message(e, M, k)\n"
    assert _verifier_uses(direct) == [1, 2]
    aliased = "import keys.envelope as env\n\nenv.verify_bytes(e, t, k)\n"
    assert _verifier_uses(aliased) == [3]
    assert _verifier_uses('getattr(env, "verify_message")(e, M, k)\n') == [1]
    assert _verifier_uses('"""verify_message is only named here"""\nopen_signed(e)\n') == []


def test_no_service_opens_an_envelope_itself() -> None:
    """Only a kind's own constructor calls the envelope verifiers: never node/, consent/,
    coordinator/ (release bundles aside), the runtime, the applications or the bench."""
    uses = _uses_outside_tests()
    outside = {
        path: lines
        for path, lines in uses.items()
        if not any(path == allowed or path.startswith(allowed) for allowed in MAY_VERIFY)
    }
    assert outside == {}
    named = {allowed for allowed in MAY_VERIFY if not allowed.endswith("/")}
    assert named <= set(uses)  # the list names no file that no longer verifies
    assert any(path.startswith("fedscore/protocol/") for path in uses)
