from fedscore.v1 import envelope_pb2 as _envelope_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SealedSubject(_message.Message):
    __slots__ = ("agency_id", "blob")
    AGENCY_ID_FIELD_NUMBER: _ClassVar[int]
    BLOB_FIELD_NUMBER: _ClassVar[int]
    agency_id: str
    blob: bytes
    def __init__(self, agency_id: _Optional[str] = ..., blob: _Optional[bytes] = ...) -> None: ...

class SubjectSeal(_message.Message):
    __slots__ = ("token_id", "agency_id", "national_id")
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    AGENCY_ID_FIELD_NUMBER: _ClassVar[int]
    NATIONAL_ID_FIELD_NUMBER: _ClassVar[int]
    token_id: str
    agency_id: str
    national_id: str
    def __init__(self, token_id: _Optional[str] = ..., agency_id: _Optional[str] = ..., national_id: _Optional[str] = ...) -> None: ...

class ConsentToken(_message.Message):
    __slots__ = ("token_id", "purpose_id", "policy_hash", "relying_party", "agencies", "domains", "not_before", "not_after", "max_uses", "legal_basis", "sealed_subjects", "status_index", "issuer", "issued_at")
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_ID_FIELD_NUMBER: _ClassVar[int]
    POLICY_HASH_FIELD_NUMBER: _ClassVar[int]
    RELYING_PARTY_FIELD_NUMBER: _ClassVar[int]
    AGENCIES_FIELD_NUMBER: _ClassVar[int]
    DOMAINS_FIELD_NUMBER: _ClassVar[int]
    NOT_BEFORE_FIELD_NUMBER: _ClassVar[int]
    NOT_AFTER_FIELD_NUMBER: _ClassVar[int]
    MAX_USES_FIELD_NUMBER: _ClassVar[int]
    LEGAL_BASIS_FIELD_NUMBER: _ClassVar[int]
    SEALED_SUBJECTS_FIELD_NUMBER: _ClassVar[int]
    STATUS_INDEX_FIELD_NUMBER: _ClassVar[int]
    ISSUER_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_FIELD_NUMBER: _ClassVar[int]
    token_id: str
    purpose_id: str
    policy_hash: str
    relying_party: str
    agencies: _containers.RepeatedScalarFieldContainer[str]
    domains: _containers.RepeatedScalarFieldContainer[str]
    not_before: int
    not_after: int
    max_uses: int
    legal_basis: str
    sealed_subjects: _containers.RepeatedCompositeFieldContainer[SealedSubject]
    status_index: int
    issuer: str
    issued_at: int
    def __init__(self, token_id: _Optional[str] = ..., purpose_id: _Optional[str] = ..., policy_hash: _Optional[str] = ..., relying_party: _Optional[str] = ..., agencies: _Optional[_Iterable[str]] = ..., domains: _Optional[_Iterable[str]] = ..., not_before: _Optional[int] = ..., not_after: _Optional[int] = ..., max_uses: _Optional[int] = ..., legal_basis: _Optional[str] = ..., sealed_subjects: _Optional[_Iterable[_Union[SealedSubject, _Mapping]]] = ..., status_index: _Optional[int] = ..., issuer: _Optional[str] = ..., issued_at: _Optional[int] = ...) -> None: ...

class ConsentReceipt(_message.Message):
    __slots__ = ("receipt_id", "token_id", "event", "controller", "purpose_id", "purpose_description", "relying_party", "agencies", "event_time", "not_before", "not_after", "legal_basis", "how_to_withdraw")
    RECEIPT_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    CONTROLLER_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_ID_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    RELYING_PARTY_FIELD_NUMBER: _ClassVar[int]
    AGENCIES_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_FIELD_NUMBER: _ClassVar[int]
    NOT_BEFORE_FIELD_NUMBER: _ClassVar[int]
    NOT_AFTER_FIELD_NUMBER: _ClassVar[int]
    LEGAL_BASIS_FIELD_NUMBER: _ClassVar[int]
    HOW_TO_WITHDRAW_FIELD_NUMBER: _ClassVar[int]
    receipt_id: str
    token_id: str
    event: str
    controller: str
    purpose_id: str
    purpose_description: str
    relying_party: str
    agencies: _containers.RepeatedScalarFieldContainer[str]
    event_time: int
    not_before: int
    not_after: int
    legal_basis: str
    how_to_withdraw: str
    def __init__(self, receipt_id: _Optional[str] = ..., token_id: _Optional[str] = ..., event: _Optional[str] = ..., controller: _Optional[str] = ..., purpose_id: _Optional[str] = ..., purpose_description: _Optional[str] = ..., relying_party: _Optional[str] = ..., agencies: _Optional[_Iterable[str]] = ..., event_time: _Optional[int] = ..., not_before: _Optional[int] = ..., not_after: _Optional[int] = ..., legal_basis: _Optional[str] = ..., how_to_withdraw: _Optional[str] = ...) -> None: ...

class StatusList(_message.Message):
    __slots__ = ("issuer", "sequence", "issued_at", "ttl_seconds", "size_bits", "compressed_bits")
    ISSUER_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SIZE_BITS_FIELD_NUMBER: _ClassVar[int]
    COMPRESSED_BITS_FIELD_NUMBER: _ClassVar[int]
    issuer: str
    sequence: int
    issued_at: int
    ttl_seconds: int
    size_bits: int
    compressed_bits: bytes
    def __init__(self, issuer: _Optional[str] = ..., sequence: _Optional[int] = ..., issued_at: _Optional[int] = ..., ttl_seconds: _Optional[int] = ..., size_bits: _Optional[int] = ..., compressed_bits: _Optional[bytes] = ...) -> None: ...

class RevocationNotice(_message.Message):
    __slots__ = ("issuer", "token_id", "status_index", "revoked_at")
    ISSUER_FIELD_NUMBER: _ClassVar[int]
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_INDEX_FIELD_NUMBER: _ClassVar[int]
    REVOKED_AT_FIELD_NUMBER: _ClassVar[int]
    issuer: str
    token_id: str
    status_index: int
    revoked_at: int
    def __init__(self, issuer: _Optional[str] = ..., token_id: _Optional[str] = ..., status_index: _Optional[int] = ..., revoked_at: _Optional[int] = ...) -> None: ...

class GrantRequest(_message.Message):
    __slots__ = ("national_id", "purpose_id", "relying_party", "not_before", "not_after", "max_uses")
    NATIONAL_ID_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_ID_FIELD_NUMBER: _ClassVar[int]
    RELYING_PARTY_FIELD_NUMBER: _ClassVar[int]
    NOT_BEFORE_FIELD_NUMBER: _ClassVar[int]
    NOT_AFTER_FIELD_NUMBER: _ClassVar[int]
    MAX_USES_FIELD_NUMBER: _ClassVar[int]
    national_id: str
    purpose_id: str
    relying_party: str
    not_before: int
    not_after: int
    max_uses: int
    def __init__(self, national_id: _Optional[str] = ..., purpose_id: _Optional[str] = ..., relying_party: _Optional[str] = ..., not_before: _Optional[int] = ..., not_after: _Optional[int] = ..., max_uses: _Optional[int] = ...) -> None: ...

class GrantResponse(_message.Message):
    __slots__ = ("token", "receipt")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    token: _envelope_pb2.Envelope
    receipt: _envelope_pb2.Envelope
    def __init__(self, token: _Optional[_Union[_envelope_pb2.Envelope, _Mapping]] = ..., receipt: _Optional[_Union[_envelope_pb2.Envelope, _Mapping]] = ...) -> None: ...

class RevokeRequest(_message.Message):
    __slots__ = ("national_id", "token_id")
    NATIONAL_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    national_id: str
    token_id: str
    def __init__(self, national_id: _Optional[str] = ..., token_id: _Optional[str] = ...) -> None: ...

class RevokeResponse(_message.Message):
    __slots__ = ("receipt",)
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    receipt: _envelope_pb2.Envelope
    def __init__(self, receipt: _Optional[_Union[_envelope_pb2.Envelope, _Mapping]] = ...) -> None: ...

class ConsentStatusRequest(_message.Message):
    __slots__ = ("token_id",)
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    token_id: str
    def __init__(self, token_id: _Optional[str] = ...) -> None: ...

class ConsentStatusResponse(_message.Message):
    __slots__ = ("token_id", "status")
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    token_id: str
    status: str
    def __init__(self, token_id: _Optional[str] = ..., status: _Optional[str] = ...) -> None: ...

class ListGrantsRequest(_message.Message):
    __slots__ = ("national_id",)
    NATIONAL_ID_FIELD_NUMBER: _ClassVar[int]
    national_id: str
    def __init__(self, national_id: _Optional[str] = ...) -> None: ...

class GrantSummary(_message.Message):
    __slots__ = ("token_id", "purpose_id", "relying_party", "not_before", "not_after", "status", "granted_at", "revoked_at")
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_ID_FIELD_NUMBER: _ClassVar[int]
    RELYING_PARTY_FIELD_NUMBER: _ClassVar[int]
    NOT_BEFORE_FIELD_NUMBER: _ClassVar[int]
    NOT_AFTER_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    GRANTED_AT_FIELD_NUMBER: _ClassVar[int]
    REVOKED_AT_FIELD_NUMBER: _ClassVar[int]
    token_id: str
    purpose_id: str
    relying_party: str
    not_before: int
    not_after: int
    status: str
    granted_at: int
    revoked_at: int
    def __init__(self, token_id: _Optional[str] = ..., purpose_id: _Optional[str] = ..., relying_party: _Optional[str] = ..., not_before: _Optional[int] = ..., not_after: _Optional[int] = ..., status: _Optional[str] = ..., granted_at: _Optional[int] = ..., revoked_at: _Optional[int] = ...) -> None: ...

class ListGrantsResponse(_message.Message):
    __slots__ = ("grants",)
    GRANTS_FIELD_NUMBER: _ClassVar[int]
    grants: _containers.RepeatedCompositeFieldContainer[GrantSummary]
    def __init__(self, grants: _Optional[_Iterable[_Union[GrantSummary, _Mapping]]] = ...) -> None: ...

class GetStatusListRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetStatusListResponse(_message.Message):
    __slots__ = ("status_list",)
    STATUS_LIST_FIELD_NUMBER: _ClassVar[int]
    status_list: _envelope_pb2.Envelope
    def __init__(self, status_list: _Optional[_Union[_envelope_pb2.Envelope, _Mapping]] = ...) -> None: ...
