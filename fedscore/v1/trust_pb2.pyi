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
    __slots__ = ("federation_id", "version", "issued_at", "not_after", "participants")
    FEDERATION_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_FIELD_NUMBER: _ClassVar[int]
    NOT_AFTER_FIELD_NUMBER: _ClassVar[int]
    PARTICIPANTS_FIELD_NUMBER: _ClassVar[int]
    federation_id: str
    version: int
    issued_at: int
    not_after: int
    participants: _containers.RepeatedCompositeFieldContainer[Participant]
    def __init__(self, federation_id: _Optional[str] = ..., version: _Optional[int] = ..., issued_at: _Optional[int] = ..., not_after: _Optional[int] = ..., participants: _Optional[_Iterable[_Union[Participant, _Mapping]]] = ...) -> None: ...
