from paymesh.webhook.v1 import webhook_pb2 as _webhook_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StreamEventsRequest(_message.Message):
    __slots__ = ("types", "resume_after")
    TYPES_FIELD_NUMBER: _ClassVar[int]
    RESUME_AFTER_FIELD_NUMBER: _ClassVar[int]
    types: _containers.RepeatedScalarFieldContainer[str]
    resume_after: str
    def __init__(self, types: _Optional[_Iterable[str]] = ..., resume_after: _Optional[str] = ...) -> None: ...

class StreamedEvent(_message.Message):
    __slots__ = ("event", "merchant_id", "resume_token")
    EVENT_FIELD_NUMBER: _ClassVar[int]
    MERCHANT_ID_FIELD_NUMBER: _ClassVar[int]
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    event: _webhook_pb2.Event
    merchant_id: str
    resume_token: str
    def __init__(self, event: _Optional[_Union[_webhook_pb2.Event, _Mapping]] = ..., merchant_id: _Optional[str] = ..., resume_token: _Optional[str] = ...) -> None: ...
