from fedscore.v1 import envelope_pb2 as _envelope_pb2
from fedscore.v1 import query_pb2 as _query_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StatisticsSpec(_message.Message):
    __slots__ = ("query_id", "release", "policy_hash", "year", "participants", "contribution_bound", "issued_at", "expires_at", "coordinator", "kind", "helper")
    QUERY_ID_FIELD_NUMBER: _ClassVar[int]
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    POLICY_HASH_FIELD_NUMBER: _ClassVar[int]
    YEAR_FIELD_NUMBER: _ClassVar[int]
    PARTICIPANTS_FIELD_NUMBER: _ClassVar[int]
    CONTRIBUTION_BOUND_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    COORDINATOR_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    HELPER_FIELD_NUMBER: _ClassVar[int]
    query_id: str
    release: str
    policy_hash: str
    year: int
    participants: _containers.RepeatedScalarFieldContainer[str]
    contribution_bound: int
    issued_at: int
    expires_at: int
    coordinator: str
    kind: _query_pb2.QuestionKind
    helper: str
    def __init__(self, query_id: _Optional[str] = ..., release: _Optional[str] = ..., policy_hash: _Optional[str] = ..., year: _Optional[int] = ..., participants: _Optional[_Iterable[str]] = ..., contribution_bound: _Optional[int] = ..., issued_at: _Optional[int] = ..., expires_at: _Optional[int] = ..., coordinator: _Optional[str] = ..., kind: _Optional[_Union[_query_pb2.QuestionKind, str]] = ..., helper: _Optional[str] = ...) -> None: ...

class StatisticsQuery(_message.Message):
    __slots__ = ("spec", "agency_id", "log_promise")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    AGENCY_ID_FIELD_NUMBER: _ClassVar[int]
    LOG_PROMISE_FIELD_NUMBER: _ClassVar[int]
    spec: bytes
    agency_id: str
    log_promise: _envelope_pb2.Envelope
    def __init__(self, spec: _Optional[bytes] = ..., agency_id: _Optional[str] = ..., log_promise: _Optional[_Union[_envelope_pb2.Envelope, _Mapping]] = ...) -> None: ...

class StatisticsAnswer(_message.Message):
    __slots__ = ("query_id", "agency_id", "coordinator_shares", "query_hash", "helper_share")
    QUERY_ID_FIELD_NUMBER: _ClassVar[int]
    AGENCY_ID_FIELD_NUMBER: _ClassVar[int]
    COORDINATOR_SHARES_FIELD_NUMBER: _ClassVar[int]
    QUERY_HASH_FIELD_NUMBER: _ClassVar[int]
    HELPER_SHARE_FIELD_NUMBER: _ClassVar[int]
    query_id: str
    agency_id: str
    coordinator_shares: _containers.RepeatedScalarFieldContainer[int]
    query_hash: bytes
    helper_share: _envelope_pb2.Envelope
    def __init__(self, query_id: _Optional[str] = ..., agency_id: _Optional[str] = ..., coordinator_shares: _Optional[_Iterable[int]] = ..., query_hash: _Optional[bytes] = ..., helper_share: _Optional[_Union[_envelope_pb2.Envelope, _Mapping]] = ...) -> None: ...

class HelperShare(_message.Message):
    __slots__ = ("query_id", "agency_id", "query_hash", "helper", "bins", "sealed_shares")
    QUERY_ID_FIELD_NUMBER: _ClassVar[int]
    AGENCY_ID_FIELD_NUMBER: _ClassVar[int]
    QUERY_HASH_FIELD_NUMBER: _ClassVar[int]
    HELPER_FIELD_NUMBER: _ClassVar[int]
    BINS_FIELD_NUMBER: _ClassVar[int]
    SEALED_SHARES_FIELD_NUMBER: _ClassVar[int]
    query_id: str
    agency_id: str
    query_hash: bytes
    helper: str
    bins: int
    sealed_shares: bytes
    def __init__(self, query_id: _Optional[str] = ..., agency_id: _Optional[str] = ..., query_hash: _Optional[bytes] = ..., helper: _Optional[str] = ..., bins: _Optional[int] = ..., sealed_shares: _Optional[bytes] = ...) -> None: ...

class HistogramItem(_message.Message):
    __slots__ = ("query",)
    QUERY_FIELD_NUMBER: _ClassVar[int]
    query: _envelope_pb2.Envelope
    def __init__(self, query: _Optional[_Union[_envelope_pb2.Envelope, _Mapping]] = ...) -> None: ...

class HistogramBatchRequest(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[HistogramItem]
    def __init__(self, items: _Optional[_Iterable[_Union[HistogramItem, _Mapping]]] = ...) -> None: ...

class HistogramOutcome(_message.Message):
    __slots__ = ("answer", "refusal")
    ANSWER_FIELD_NUMBER: _ClassVar[int]
    REFUSAL_FIELD_NUMBER: _ClassVar[int]
    answer: _envelope_pb2.Envelope
    refusal: _query_pb2.ItemRefusal
    def __init__(self, answer: _Optional[_Union[_envelope_pb2.Envelope, _Mapping]] = ..., refusal: _Optional[_Union[_query_pb2.ItemRefusal, _Mapping]] = ...) -> None: ...

class HistogramBatchResponse(_message.Message):
    __slots__ = ("outcomes",)
    OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    outcomes: _containers.RepeatedCompositeFieldContainer[HistogramOutcome]
    def __init__(self, outcomes: _Optional[_Iterable[_Union[HistogramOutcome, _Mapping]]] = ...) -> None: ...
