from fedscore.v1 import envelope_pb2 as _envelope_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class QuestionKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    QUESTION_KIND_UNSPECIFIED: _ClassVar[QuestionKind]
    QUESTION_KIND_SCORE: _ClassVar[QuestionKind]
    QUESTION_KIND_HISTOGRAM: _ClassVar[QuestionKind]
QUESTION_KIND_UNSPECIFIED: QuestionKind
QUESTION_KIND_SCORE: QuestionKind
QUESTION_KIND_HISTOGRAM: QuestionKind

class ScoreQuery(_message.Message):
    __slots__ = ("relying_party", "purpose_id", "token", "nonce", "issued_at", "year")
    RELYING_PARTY_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_FIELD_NUMBER: _ClassVar[int]
    YEAR_FIELD_NUMBER: _ClassVar[int]
    relying_party: str
    purpose_id: str
    token: _envelope_pb2.Envelope
    nonce: bytes
    issued_at: int
    year: int
    def __init__(self, relying_party: _Optional[str] = ..., purpose_id: _Optional[str] = ..., token: _Optional[_Union[_envelope_pb2.Envelope, _Mapping]] = ..., nonce: _Optional[bytes] = ..., issued_at: _Optional[int] = ..., year: _Optional[int] = ...) -> None: ...

class ScoreResult(_message.Message):
    __slots__ = ("query_id", "purpose_id", "relying_party", "token_id", "year", "score", "band", "eligible", "policy_hash", "request_nonce_hash", "log_index", "issued_at")
    QUERY_ID_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_ID_FIELD_NUMBER: _ClassVar[int]
    RELYING_PARTY_FIELD_NUMBER: _ClassVar[int]
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    YEAR_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    BAND_FIELD_NUMBER: _ClassVar[int]
    ELIGIBLE_FIELD_NUMBER: _ClassVar[int]
    POLICY_HASH_FIELD_NUMBER: _ClassVar[int]
    REQUEST_NONCE_HASH_FIELD_NUMBER: _ClassVar[int]
    LOG_INDEX_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_FIELD_NUMBER: _ClassVar[int]
    query_id: str
    purpose_id: str
    relying_party: str
    token_id: str
    year: int
    score: int
    band: str
    eligible: bool
    policy_hash: str
    request_nonce_hash: bytes
    log_index: int
    issued_at: int
    def __init__(self, query_id: _Optional[str] = ..., purpose_id: _Optional[str] = ..., relying_party: _Optional[str] = ..., token_id: _Optional[str] = ..., year: _Optional[int] = ..., score: _Optional[int] = ..., band: _Optional[str] = ..., eligible: _Optional[bool] = ..., policy_hash: _Optional[str] = ..., request_nonce_hash: _Optional[bytes] = ..., log_index: _Optional[int] = ..., issued_at: _Optional[int] = ...) -> None: ...

class QuerySpec(_message.Message):
    __slots__ = ("query_id", "purpose_id", "policy_hash", "year", "participants", "issued_at", "expires_at", "coordinator", "request", "kind")
    QUERY_ID_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_ID_FIELD_NUMBER: _ClassVar[int]
    POLICY_HASH_FIELD_NUMBER: _ClassVar[int]
    YEAR_FIELD_NUMBER: _ClassVar[int]
    PARTICIPANTS_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    COORDINATOR_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    query_id: str
    purpose_id: str
    policy_hash: str
    year: int
    participants: _containers.RepeatedScalarFieldContainer[str]
    issued_at: int
    expires_at: int
    coordinator: str
    request: _envelope_pb2.Envelope
    kind: QuestionKind
    def __init__(self, query_id: _Optional[str] = ..., purpose_id: _Optional[str] = ..., policy_hash: _Optional[str] = ..., year: _Optional[int] = ..., participants: _Optional[_Iterable[str]] = ..., issued_at: _Optional[int] = ..., expires_at: _Optional[int] = ..., coordinator: _Optional[str] = ..., request: _Optional[_Union[_envelope_pb2.Envelope, _Mapping]] = ..., kind: _Optional[_Union[QuestionKind, str]] = ...) -> None: ...

class LogPromise(_message.Message):
    __slots__ = ("origin", "index", "leaf_hash", "query_hash", "logged_at")
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    LEAF_HASH_FIELD_NUMBER: _ClassVar[int]
    QUERY_HASH_FIELD_NUMBER: _ClassVar[int]
    LOGGED_AT_FIELD_NUMBER: _ClassVar[int]
    origin: str
    index: int
    leaf_hash: bytes
    query_hash: bytes
    logged_at: int
    def __init__(self, origin: _Optional[str] = ..., index: _Optional[int] = ..., leaf_hash: _Optional[bytes] = ..., query_hash: _Optional[bytes] = ..., logged_at: _Optional[int] = ...) -> None: ...

class ContributionAnswer(_message.Message):
    __slots__ = ("query_id", "agency_id", "masked_value", "query_hash")
    QUERY_ID_FIELD_NUMBER: _ClassVar[int]
    AGENCY_ID_FIELD_NUMBER: _ClassVar[int]
    MASKED_VALUE_FIELD_NUMBER: _ClassVar[int]
    QUERY_HASH_FIELD_NUMBER: _ClassVar[int]
    query_id: str
    agency_id: str
    masked_value: int
    query_hash: bytes
    def __init__(self, query_id: _Optional[str] = ..., agency_id: _Optional[str] = ..., masked_value: _Optional[int] = ..., query_hash: _Optional[bytes] = ...) -> None: ...

class BatchedContributionQuery(_message.Message):
    __slots__ = ("spec", "log_promise")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    LOG_PROMISE_FIELD_NUMBER: _ClassVar[int]
    spec: bytes
    log_promise: LogPromise
    def __init__(self, spec: _Optional[bytes] = ..., log_promise: _Optional[_Union[LogPromise, _Mapping]] = ...) -> None: ...

class ContributionBatch(_message.Message):
    __slots__ = ("batch_id", "agency_ids", "issued_at", "queries")
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    AGENCY_IDS_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_FIELD_NUMBER: _ClassVar[int]
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    batch_id: str
    agency_ids: _containers.RepeatedScalarFieldContainer[str]
    issued_at: int
    queries: _containers.RepeatedCompositeFieldContainer[BatchedContributionQuery]
    def __init__(self, batch_id: _Optional[str] = ..., agency_ids: _Optional[_Iterable[str]] = ..., issued_at: _Optional[int] = ..., queries: _Optional[_Iterable[_Union[BatchedContributionQuery, _Mapping]]] = ...) -> None: ...

class ItemRefusal(_message.Message):
    __slots__ = ("code", "reason", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    reason: str
    message: str
    def __init__(self, code: _Optional[int] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class ContributionOutcome(_message.Message):
    __slots__ = ("answer", "refusal")
    ANSWER_FIELD_NUMBER: _ClassVar[int]
    REFUSAL_FIELD_NUMBER: _ClassVar[int]
    answer: ContributionAnswer
    refusal: ItemRefusal
    def __init__(self, answer: _Optional[_Union[ContributionAnswer, _Mapping]] = ..., refusal: _Optional[_Union[ItemRefusal, _Mapping]] = ...) -> None: ...

class ContributionAnswerBatch(_message.Message):
    __slots__ = ("batch_id", "agency_id", "batch_hash", "outcomes")
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    AGENCY_ID_FIELD_NUMBER: _ClassVar[int]
    BATCH_HASH_FIELD_NUMBER: _ClassVar[int]
    OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    batch_id: str
    agency_id: str
    batch_hash: bytes
    outcomes: _containers.RepeatedCompositeFieldContainer[ContributionOutcome]
    def __init__(self, batch_id: _Optional[str] = ..., agency_id: _Optional[str] = ..., batch_hash: _Optional[bytes] = ..., outcomes: _Optional[_Iterable[_Union[ContributionOutcome, _Mapping]]] = ...) -> None: ...

class ScoreRequest(_message.Message):
    __slots__ = ("query",)
    QUERY_FIELD_NUMBER: _ClassVar[int]
    query: _envelope_pb2.Envelope
    def __init__(self, query: _Optional[_Union[_envelope_pb2.Envelope, _Mapping]] = ...) -> None: ...

class ScoreResponse(_message.Message):
    __slots__ = ("result",)
    RESULT_FIELD_NUMBER: _ClassVar[int]
    result: _envelope_pb2.Envelope
    def __init__(self, result: _Optional[_Union[_envelope_pb2.Envelope, _Mapping]] = ...) -> None: ...

class ContributeBatchRequest(_message.Message):
    __slots__ = ("batch",)
    BATCH_FIELD_NUMBER: _ClassVar[int]
    batch: _envelope_pb2.Envelope
    def __init__(self, batch: _Optional[_Union[_envelope_pb2.Envelope, _Mapping]] = ...) -> None: ...

class ContributeBatchResponse(_message.Message):
    __slots__ = ("answers",)
    ANSWERS_FIELD_NUMBER: _ClassVar[int]
    answers: _envelope_pb2.Envelope
    def __init__(self, answers: _Optional[_Union[_envelope_pb2.Envelope, _Mapping]] = ...) -> None: ...

class ScoreBatchRequest(_message.Message):
    __slots__ = ("queries",)
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    queries: _containers.RepeatedCompositeFieldContainer[_envelope_pb2.Envelope]
    def __init__(self, queries: _Optional[_Iterable[_Union[_envelope_pb2.Envelope, _Mapping]]] = ...) -> None: ...

class ScoreBatchOutcome(_message.Message):
    __slots__ = ("sequence", "result", "refusal")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    REFUSAL_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    result: _envelope_pb2.Envelope
    refusal: ItemRefusal
    def __init__(self, sequence: _Optional[int] = ..., result: _Optional[_Union[_envelope_pb2.Envelope, _Mapping]] = ..., refusal: _Optional[_Union[ItemRefusal, _Mapping]] = ...) -> None: ...

class ScoreBatchResponse(_message.Message):
    __slots__ = ("outcomes",)
    OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    outcomes: _containers.RepeatedCompositeFieldContainer[ScoreBatchOutcome]
    def __init__(self, outcomes: _Optional[_Iterable[_Union[ScoreBatchOutcome, _Mapping]]] = ...) -> None: ...

class NotifyRevocationRequest(_message.Message):
    __slots__ = ("notice",)
    NOTICE_FIELD_NUMBER: _ClassVar[int]
    notice: _envelope_pb2.Envelope
    def __init__(self, notice: _Optional[_Union[_envelope_pb2.Envelope, _Mapping]] = ...) -> None: ...

class NotifyRevocationResponse(_message.Message):
    __slots__ = ("party",)
    PARTY_FIELD_NUMBER: _ClassVar[int]
    party: str
    def __init__(self, party: _Optional[str] = ...) -> None: ...

class PushRevocationRequest(_message.Message):
    __slots__ = ("notice",)
    NOTICE_FIELD_NUMBER: _ClassVar[int]
    notice: _envelope_pb2.Envelope
    def __init__(self, notice: _Optional[_Union[_envelope_pb2.Envelope, _Mapping]] = ...) -> None: ...

class PushRevocationResponse(_message.Message):
    __slots__ = ("party",)
    PARTY_FIELD_NUMBER: _ClassVar[int]
    party: str
    def __init__(self, party: _Optional[str] = ...) -> None: ...
