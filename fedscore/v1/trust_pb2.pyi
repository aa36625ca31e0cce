from fedscore.v1 import envelope_pb2 as _envelope_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Role(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROLE_UNSPECIFIED: _ClassVar[Role]
    ROLE_AGENCY: _ClassVar[Role]
    ROLE_CONSENT_REGISTRY: _ClassVar[Role]
    ROLE_COORDINATOR: _ClassVar[Role]
    ROLE_RELYING_PARTY: _ClassVar[Role]
    ROLE_REGULATOR: _ClassVar[Role]
    ROLE_CITIZEN_PORTAL: _ClassVar[Role]
    ROLE_POLICY_AUTHORITY: _ClassVar[Role]
    ROLE_HELPER_AGGREGATOR: _ClassVar[Role]

class Sector(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SECTOR_UNSPECIFIED: _ClassVar[Sector]
    SECTOR_COMMERCIAL: _ClassVar[Sector]
    SECTOR_CIVIL_SOCIETY: _ClassVar[Sector]
    SECTOR_CITIZEN_AGENT: _ClassVar[Sector]
    SECTOR_PUBLIC_SERVICE: _ClassVar[Sector]
ROLE_UNSPECIFIED: Role
ROLE_AGENCY: Role
ROLE_CONSENT_REGISTRY: Role
ROLE_COORDINATOR: Role
ROLE_RELYING_PARTY: Role
ROLE_REGULATOR: Role
ROLE_CITIZEN_PORTAL: Role
ROLE_POLICY_AUTHORITY: Role
ROLE_HELPER_AGGREGATOR: Role
SECTOR_UNSPECIFIED: Sector
SECTOR_COMMERCIAL: Sector
SECTOR_CIVIL_SOCIETY: Sector
SECTOR_CITIZEN_AGENT: Sector
SECTOR_PUBLIC_SERVICE: Sector

class Participant(_message.Message):
    __slots__ = ("id", "role", "display_name", "endpoint", "signing_public_key", "box_public_key", "not_before", "not_after", "sector")
    ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    SIGNING_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    BOX_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    NOT_BEFORE_FIELD_NUMBER: _ClassVar[int]
    NOT_AFTER_FIELD_NUMBER: _ClassVar[int]
    SECTOR_FIELD_NUMBER: _ClassVar[int]
    id: str
    role: Role
    display_name: str
    endpoint: str
    signing_public_key: bytes
    box_public_key: bytes
    not_before: int
    not_after: int
    sector: Sector
    def __init__(self, id: _Optional[str] = ..., role: _Optional[_Union[Role, str]] = ..., display_name: _Optional[str] = ..., endpoint: _Optional[str] = ..., signing_public_key: _Optional[bytes] = ..., box_public_key: _Optional[bytes] = ..., not_before: _Optional[int] = ..., not_after: _Optional[int] = ..., sector: _Optional[_Union[Sector, str]] = ...) -> None: ...

class TrustRegistry(_message.Message):
    __slots__ = ("federation_id", "version", "issued_at", "not_after", "participants", "previous_digest", "root")
    FEDERATION_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_FIELD_NUMBER: _ClassVar[int]
    NOT_AFTER_FIELD_NUMBER: _ClassVar[int]
    PARTICIPANTS_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_DIGEST_FIELD_NUMBER: _ClassVar[int]
    ROOT_FIELD_NUMBER: _ClassVar[int]
    federation_id: str
    version: int
    issued_at: int
    not_after: int
    participants: _containers.RepeatedCompositeFieldContainer[Participant]
    previous_digest: bytes
    root: RootPolicy
    def __init__(self, federation_id: _Optional[str] = ..., version: _Optional[int] = ..., issued_at: _Optional[int] = ..., not_after: _Optional[int] = ..., participants: _Optional[_Iterable[_Union[Participant, _Mapping]]] = ..., previous_digest: _Optional[bytes] = ..., root: _Optional[_Union[RootPolicy, _Mapping]] = ...) -> None: ...

class RootKey(_message.Message):
    __slots__ = ("custodian", "public_key")
    CUSTODIAN_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    custodian: str
    public_key: bytes
    def __init__(self, custodian: _Optional[str] = ..., public_key: _Optional[bytes] = ...) -> None: ...

class RootPolicy(_message.Message):
    __slots__ = ("threshold", "keys")
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    threshold: int
    keys: _containers.RepeatedCompositeFieldContainer[RootKey]
    def __init__(self, threshold: _Optional[int] = ..., keys: _Optional[_Iterable[_Union[RootKey, _Mapping]]] = ...) -> None: ...

class RegistrySignature(_message.Message):
    __slots__ = ("key_id", "signature")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    signature: bytes
    def __init__(self, key_id: _Optional[str] = ..., signature: _Optional[bytes] = ...) -> None: ...

class SignedRegistry(_message.Message):
    __slots__ = ("registry", "signatures")
    REGISTRY_FIELD_NUMBER: _ClassVar[int]
    SIGNATURES_FIELD_NUMBER: _ClassVar[int]
    registry: bytes
    signatures: _containers.RepeatedCompositeFieldContainer[RegistrySignature]
    def __init__(self, registry: _Optional[bytes] = ..., signatures: _Optional[_Iterable[_Union[RegistrySignature, _Mapping]]] = ...) -> None: ...

class AdmissionRequest(_message.Message):
    __slots__ = ("participant_id", "role", "display_name", "endpoint", "signing_public_key", "box_public_key", "csr_pem", "created_at", "replaces_signing_public_key")
    PARTICIPANT_ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    SIGNING_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    BOX_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    CSR_PEM_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    REPLACES_SIGNING_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    participant_id: str
    role: Role
    display_name: str
    endpoint: str
    signing_public_key: bytes
    box_public_key: bytes
    csr_pem: bytes
    created_at: int
    replaces_signing_public_key: bytes
    def __init__(self, participant_id: _Optional[str] = ..., role: _Optional[_Union[Role, str]] = ..., display_name: _Optional[str] = ..., endpoint: _Optional[str] = ..., signing_public_key: _Optional[bytes] = ..., box_public_key: _Optional[bytes] = ..., csr_pem: _Optional[bytes] = ..., created_at: _Optional[int] = ..., replaces_signing_public_key: _Optional[bytes] = ...) -> None: ...

class KeyRequest(_message.Message):
    __slots__ = ("request", "endorsement")
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    ENDORSEMENT_FIELD_NUMBER: _ClassVar[int]
    request: _envelope_pb2.Envelope
    endorsement: _envelope_pb2.Envelope
    def __init__(self, request: _Optional[_Union[_envelope_pb2.Envelope, _Mapping]] = ..., endorsement: _Optional[_Union[_envelope_pb2.Envelope, _Mapping]] = ...) -> None: ...

class GetTrustRequest(_message.Message):
    __slots__ = ("since_version",)
    SINCE_VERSION_FIELD_NUMBER: _ClassVar[int]
    since_version: int
    def __init__(self, since_version: _Optional[int] = ...) -> None: ...

class TrustUpdate(_message.Message):
    __slots__ = ("registries", "policy")
    REGISTRIES_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    registries: _containers.RepeatedCompositeFieldContainer[SignedRegistry]
    policy: _envelope_pb2.Envelope
    def __init__(self, registries: _Optional[_Iterable[_Union[SignedRegistry, _Mapping]]] = ..., policy: _Optional[_Union[_envelope_pb2.Envelope, _Mapping]] = ...) -> None: ...

class GetTrustResponse(_message.Message):
    __slots__ = ("update",)
    UPDATE_FIELD_NUMBER: _ClassVar[int]
    update: TrustUpdate
    def __init__(self, update: _Optional[_Union[TrustUpdate, _Mapping]] = ...) -> None: ...

class OfferTrustRequest(_message.Message):
    __slots__ = ("update",)
    UPDATE_FIELD_NUMBER: _ClassVar[int]
    update: TrustUpdate
    def __init__(self, update: _Optional[_Union[TrustUpdate, _Mapping]] = ...) -> None: ...

class OfferTrustResponse(_message.Message):
    __slots__ = ("registry_version", "policy_hash")
    REGISTRY_VERSION_FIELD_NUMBER: _ClassVar[int]
    POLICY_HASH_FIELD_NUMBER: _ClassVar[int]
    registry_version: int
    policy_hash: str
    def __init__(self, registry_version: _Optional[int] = ..., policy_hash: _Optional[str] = ...) -> None: ...
