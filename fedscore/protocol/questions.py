"""The signed questions and answers between the coordinator and the agency nodes: one type
per kind, each opened only under the keys of the one kind of party that may sign it.

| kind                      | signed by   | keyring           | opened by                     |
|---------------------------|-------------|-------------------|-------------------------------|
| `ContributionBatch`       | coordinator | `CoordinatorKeys` | a node (`node.checks`)        |
| `StatisticsQuery`         | coordinator | `CoordinatorKeys` | a node (`node.statistics`)    |
| `LogPromise` (on its own) | coordinator | `CoordinatorKeys` | a node (`node.statistics`)    |
| `ContributionAnswerBatch` | agency node | `AgencyKeys`      | the coordinator (`dispatch`)  |
| `StatisticsAnswer`        | agency node | `AgencyKeys`      | the coordinator (`histograms`)|

Each type has one constructor, `verify`, which (1) checks the envelope under its own
keyring type (`fedscore.protocol.signed.open_signed`: a keyring of another type is a type
error, and a `TypeError` for an untyped caller, before any signature is checked), (2) only
then parses the payload, and (3) checks the invariants that belong to the object itself,
raising by reason. What needs the caller's context stays with the caller, in its protocol
steps: that a question is addressed to this very node, that an answer is the one asked of
this agency, for this question's id and hash or this batch's id and hash, with one value
per item asked (`node.question_checks`, `node.checks`, `coordinator.fanout`).

Invariants checked here, by kind:
- a question batch holds at most `MAX_BATCH_QUERIES` items (BATCH_TOO_LARGE) and names its
  id, which its answers are bound to (MALFORMED_MESSAGE); each item's spec and log promise
  are covered by the batch's one signature and checked item by item at the node, so a bad
  item refuses only itself;
- a statistics question names the agency it is asked of (WRONG_AGENCY);
- a log promise signed on its own names a log, its signer's own, and a SHA-256 query hash
  (BAD_LOG_PROMISE);
- an answer batch names the agency that signed it (SIGNER_MISMATCH), the batch id it
  answers and the SHA-256 of that batch's payload (BAD_ANSWER);
- a statistics answer names the agency that signed it (SIGNER_MISMATCH), the query id it
  answers and the SHA-256 of that question's spec (BAD_ANSWER).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Self

from fedscore.errors import InvalidArgument, PermissionDenied, Unauthenticated
from fedscore.protocol.signed import open_signed
from fedscore.v1.envelope_pb2 import Envelope
from fedscore.v1.query_pb2 import ContributionAnswerBatch, ContributionBatch, LogPromise
from fedscore.v1.statistics_pb2 import StatisticsAnswer, StatisticsQuery
from keys.keyring import AgencyKeys, CoordinatorKeys

# A batch is one transaction and one blocking stretch of a node's event loop.
MAX_BATCH_QUERIES = 256
SHA256_BYTES = 32


def _names_its_signer(named: str, signer: str, what: str) -> None:
    if named != signer:
        raise Unauthenticated(
            f"{what} names agency {named!r} but {signer} signed it", reason="SIGNER_MISMATCH"
        )


def _is_sha256(digest: bytes) -> bool:
    return len(digest) == SHA256_BYTES


@dataclass(frozen=True)
class SignedContributionBatch:
    """Score questions the coordinator signed once for every agency it names."""

    batch: ContributionBatch
    signer: str  # the coordinator
    batch_hash: bytes  # SHA-256 of the signed payload, which every answer batch names

    @classmethod
    def verify(cls, envelope: Envelope, keys: CoordinatorKeys) -> Self:
        verified = open_signed(envelope, ContributionBatch, keys, CoordinatorKeys)
        batch = verified.payload
        if len(batch.queries) > MAX_BATCH_QUERIES:
            raise InvalidArgument(
                f"batch holds {len(batch.queries)} queries; at most {MAX_BATCH_QUERIES} "
                "are allowed",
                reason="BATCH_TOO_LARGE",
            )
        if not batch.batch_id:
            raise InvalidArgument("the batch has no batch id", reason="MALFORMED_MESSAGE")
        return cls(batch, verified.signer, hashlib.sha256(envelope.payload).digest())


@dataclass(frozen=True)
class SignedStatisticsQuery:
    """A histogram question the coordinator signed for one agency; its spec is still the
    exact bytes it logged, parsed by the node as one of the shared steps."""

    query: StatisticsQuery
    signer: str  # the coordinator

    @classmethod
    def verify(cls, envelope: Envelope, keys: CoordinatorKeys) -> Self:
        verified = open_signed(envelope, StatisticsQuery, keys, CoordinatorKeys)
        query = verified.payload
        if not query.agency_id:
            raise PermissionDenied("the statistics query names no agency", reason="WRONG_AGENCY")
        return cls(query, verified.signer)


@dataclass(frozen=True)
class SignedLogPromise:
    """The coordinator's word, signed on its own, that it logged a question's spec first.

    A score question's promise travels inside its batch, covered by the batch's signature,
    and is checked with its item (`node.checks.check_log_promise`).
    """

    promise: LogPromise
    signer: str  # the coordinator, whose log it names

    @classmethod
    def verify(cls, envelope: Envelope, keys: CoordinatorKeys) -> Self:
        verified = open_signed(envelope, LogPromise, keys, CoordinatorKeys)
        promise = verified.payload
        if not promise.origin or promise.origin != verified.signer:
            raise Unauthenticated(
                f"the log promise names log {promise.origin!r}, signed by {verified.signer}",
                reason="BAD_LOG_PROMISE",
            )
        if not _is_sha256(promise.query_hash):
            raise Unauthenticated(
                "the log promise names no SHA-256 query hash", reason="BAD_LOG_PROMISE"
            )
        return cls(promise, verified.signer)


@dataclass(frozen=True)
class SignedContributionAnswerBatch:
    """An agency node's outcomes for one question batch, signed once by the node."""

    answers: ContributionAnswerBatch
    signer: str  # the agency

    @classmethod
    def verify(cls, envelope: Envelope, keys: AgencyKeys) -> Self:
        verified = open_signed(envelope, ContributionAnswerBatch, keys, AgencyKeys)
        answers = verified.payload
        _names_its_signer(answers.agency_id, verified.signer, "answer batch")
        if not answers.batch_id or not _is_sha256(answers.batch_hash):
            raise InvalidArgument(
                "the answer batch names no batch id or no SHA-256 batch hash",
                reason="BAD_ANSWER",
            )
        return cls(answers, verified.signer)


@dataclass(frozen=True)
class SignedStatisticsAnswer:
    """An agency node's masked bins for one histogram question, signed by the node."""

    answer: StatisticsAnswer
    signer: str  # the agency

    @classmethod
    def verify(cls, envelope: Envelope, keys: AgencyKeys) -> Self:
        verified = open_signed(envelope, StatisticsAnswer, keys, AgencyKeys)
        answer = verified.payload
        _names_its_signer(answer.agency_id, verified.signer, "statistics answer")
        if not answer.query_id or not _is_sha256(answer.query_hash):
            raise InvalidArgument(
                "the statistics answer names no query id or no SHA-256 query hash",
                reason="BAD_ANSWER",
            )
        return cls(answer, verified.signer)
