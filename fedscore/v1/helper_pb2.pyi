from fedscore.v1 import envelope_pb2 as _envelope_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class NoiseOrder(_message.Message):
    __slots__ = ("spec", "log_promise", "release_id", "epsilon_nano", "shares", "helper")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    LOG_PROMISE_FIELD_NUMBER: _ClassVar[int]
    RELEASE_ID_FIELD_NUMBER: _ClassVar[int]
    EPSILON_NANO_FIELD_NUMBER: _ClassVar[int]
    SHARES_FIELD_NUMBER: _ClassVar[int]
    HELPER_FIELD_NUMBER: _ClassVar[int]
    spec: bytes
    log_promise: _envelope_pb2.Envelope
    release_id: str
    epsilon_nano: int
    shares: _containers.RepeatedCompositeFieldContainer[_envelope_pb2.Envelope]
    helper: str
    def __init__(self, spec: _Optional[bytes] = ..., log_promise: _Optional[_Union[_envelope_pb2.Envelope, _Mapping]] = ..., release_id: _Optional[str] = ..., epsilon_nano: _Optional[int] = ..., shares: _Optional[_Iterable[_Union[_envelope_pb2.Envelope, _Mapping]]] = ..., helper: _Optional[str] = ...) -> None: ...

class NoisyShareSum(_message.Message):
    __slots__ = ("query_id", "query_hash", "release_id", "helper", "noisy_sums", "epsilon_nano")
    QUERY_ID_FIELD_NUMBER: _ClassVar[int]
    QUERY_HASH_FIELD_NUMBER: _ClassVar[int]
    RELEASE_ID_FIELD_NUMBER: _ClassVar[int]
    HELPER_FIELD_NUMBER: _ClassVar[int]
    NOISY_SUMS_FIELD_NUMBER: _ClassVar[int]
    EPSILON_NANO_FIELD_NUMBER: _ClassVar[int]
    query_id: str
    query_hash: bytes
    release_id: str
    helper: str
    noisy_sums: _containers.RepeatedScalarFieldContainer[int]
    epsilon_nano: int
    def __init__(self, query_id: _Optional[str] = ..., query_hash: _Optional[bytes] = ..., release_id: _Optional[str] = ..., helper: _Optional[str] = ..., noisy_sums: _Optional[_Iterable[int]] = ..., epsilon_nano: _Optional[int] = ...) -> None: ...

class NoiseShareSumRequest(_message.Message):
    __slots__ = ("order",)
    ORDER_FIELD_NUMBER: _ClassVar[int]
    order: _envelope_pb2.Envelope
    def __init__(self, order: _Optional[_Union[_envelope_pb2.Envelope, _Mapping]] = ...) -> None: ...

class NoiseShareSumResponse(_message.Message):
    __slots__ = ("sum",)
    SUM_FIELD_NUMBER: _ClassVar[int]
    sum: _envelope_pb2.Envelope
    def __init__(self, sum: _Optional[_Union[_envelope_pb2.Envelope, _Mapping]] = ...) -> None: ...
