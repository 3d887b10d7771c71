import datetime

from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ApiKeyInfo(_message.Message):
    __slots__ = ("id", "livemode", "last4", "created", "revoked")
    ID_FIELD_NUMBER: _ClassVar[int]
    LIVEMODE_FIELD_NUMBER: _ClassVar[int]
    LAST4_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    REVOKED_FIELD_NUMBER: _ClassVar[int]
    id: str
    livemode: bool
    last4: str
    created: _timestamp_pb2.Timestamp
    revoked: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., livemode: _Optional[bool] = ..., last4: _Optional[str] = ..., created: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., revoked: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Merchant(_message.Message):
    __slots__ = ("id", "name", "psp_routing", "api_keys", "created")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    PSP_ROUTING_FIELD_NUMBER: _ClassVar[int]
    API_KEYS_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    psp_routing: _containers.RepeatedScalarFieldContainer[str]
    api_keys: _containers.RepeatedCompositeFieldContainer[ApiKeyInfo]
    created: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., psp_routing: _Optional[_Iterable[str]] = ..., api_keys: _Optional[_Iterable[_Union[ApiKeyInfo, _Mapping]]] = ..., created: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateMerchantRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class CreateMerchantResponse(_message.Message):
    __slots__ = ("merchant", "secret_key", "live_secret_key")
    MERCHANT_FIELD_NUMBER: _ClassVar[int]
    SECRET_KEY_FIELD_NUMBER: _ClassVar[int]
    LIVE_SECRET_KEY_FIELD_NUMBER: _ClassVar[int]
    merchant: Merchant
    secret_key: str
    live_secret_key: str
    def __init__(self, merchant: _Optional[_Union[Merchant, _Mapping]] = ..., secret_key: _Optional[str] = ..., live_secret_key: _Optional[str] = ...) -> None: ...

class ListMerchantsRequest(_message.Message):
    __slots__ = ("limit", "starting_after")
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    STARTING_AFTER_FIELD_NUMBER: _ClassVar[int]
    limit: int
    starting_after: str
    def __init__(self, limit: _Optional[int] = ..., starting_after: _Optional[str] = ...) -> None: ...

class ListMerchantsResponse(_message.Message):
    __slots__ = ("merchants", "has_more")
    MERCHANTS_FIELD_NUMBER: _ClassVar[int]
    HAS_MORE_FIELD_NUMBER: _ClassVar[int]
    merchants: _containers.RepeatedCompositeFieldContainer[Merchant]
    has_more: bool
    def __init__(self, merchants: _Optional[_Iterable[_Union[Merchant, _Mapping]]] = ..., has_more: _Optional[bool] = ...) -> None: ...

class RollApiKeyRequest(_message.Message):
    __slots__ = ("merchant_id", "livemode")
    MERCHANT_ID_FIELD_NUMBER: _ClassVar[int]
    LIVEMODE_FIELD_NUMBER: _ClassVar[int]
    merchant_id: str
    livemode: bool
    def __init__(self, merchant_id: _Optional[str] = ..., livemode: _Optional[bool] = ...) -> None: ...

class RollApiKeyResponse(_message.Message):
    __slots__ = ("secret_key", "api_key")
    SECRET_KEY_FIELD_NUMBER: _ClassVar[int]
    API_KEY_FIELD_NUMBER: _ClassVar[int]
    secret_key: str
    api_key: ApiKeyInfo
    def __init__(self, secret_key: _Optional[str] = ..., api_key: _Optional[_Union[ApiKeyInfo, _Mapping]] = ...) -> None: ...

class RevokeApiKeyRequest(_message.Message):
    __slots__ = ("merchant_id", "api_key_id")
    MERCHANT_ID_FIELD_NUMBER: _ClassVar[int]
    API_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    merchant_id: str
    api_key_id: str
    def __init__(self, merchant_id: _Optional[str] = ..., api_key_id: _Optional[str] = ...) -> None: ...

class RevokeApiKeyResponse(_message.Message):
    __slots__ = ("api_key",)
    API_KEY_FIELD_NUMBER: _ClassVar[int]
    api_key: ApiKeyInfo
    def __init__(self, api_key: _Optional[_Union[ApiKeyInfo, _Mapping]] = ...) -> None: ...

class SetPspRoutingRequest(_message.Message):
    __slots__ = ("merchant_id", "psp_routing")
    MERCHANT_ID_FIELD_NUMBER: _ClassVar[int]
    PSP_ROUTING_FIELD_NUMBER: _ClassVar[int]
    merchant_id: str
    psp_routing: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, merchant_id: _Optional[str] = ..., psp_routing: _Optional[_Iterable[str]] = ...) -> None: ...

class SetPspRoutingResponse(_message.Message):
    __slots__ = ("merchant",)
    MERCHANT_FIELD_NUMBER: _ClassVar[int]
    merchant: Merchant
    def __init__(self, merchant: _Optional[_Union[Merchant, _Mapping]] = ...) -> None: ...
