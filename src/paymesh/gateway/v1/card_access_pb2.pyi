from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class RevokePaymentMethodRequest(_message.Message):
    __slots__ = ("payment_method",)
    PAYMENT_METHOD_FIELD_NUMBER: _ClassVar[int]
    payment_method: str
    def __init__(self, payment_method: _Optional[str] = ...) -> None: ...

class RevokePaymentMethodResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
