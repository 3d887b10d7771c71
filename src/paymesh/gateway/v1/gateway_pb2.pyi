import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from paymesh.gateway.v1 import disputes_pb2 as _disputes_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PaymentError(_message.Message):
    __slots__ = ("code", "decline_code", "message", "type")
    CODE_FIELD_NUMBER: _ClassVar[int]
    DECLINE_CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    code: str
    decline_code: str
    message: str
    type: str
    def __init__(self, code: _Optional[str] = ..., decline_code: _Optional[str] = ..., message: _Optional[str] = ..., type: _Optional[str] = ...) -> None: ...

class PaymentIntent(_message.Message):
    __slots__ = ("id", "amount", "amount_capturable", "amount_received", "amount_refunded", "currency", "status", "payment_method", "capture_method", "psp", "last_payment_error", "description", "metadata", "created", "livemode", "next_action", "cancellation_reason")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_CAPTURABLE_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_REFUNDED_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_METHOD_FIELD_NUMBER: _ClassVar[int]
    CAPTURE_METHOD_FIELD_NUMBER: _ClassVar[int]
    PSP_FIELD_NUMBER: _ClassVar[int]
    LAST_PAYMENT_ERROR_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    LIVEMODE_FIELD_NUMBER: _ClassVar[int]
    NEXT_ACTION_FIELD_NUMBER: _ClassVar[int]
    CANCELLATION_REASON_FIELD_NUMBER: _ClassVar[int]
    id: str
    amount: int
    amount_capturable: int
    amount_received: int
    amount_refunded: int
    currency: str
    status: str
    payment_method: str
    capture_method: str
    psp: str
    last_payment_error: PaymentError
    description: str
    metadata: _containers.ScalarMap[str, str]
    created: _timestamp_pb2.Timestamp
    livemode: bool
    next_action: NextAction
    cancellation_reason: str
    def __init__(self, id: _Optional[str] = ..., amount: _Optional[int] = ..., amount_capturable: _Optional[int] = ..., amount_received: _Optional[int] = ..., amount_refunded: _Optional[int] = ..., currency: _Optional[str] = ..., status: _Optional[str] = ..., payment_method: _Optional[str] = ..., capture_method: _Optional[str] = ..., psp: _Optional[str] = ..., last_payment_error: _Optional[_Union[PaymentError, _Mapping]] = ..., description: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., created: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., livemode: _Optional[bool] = ..., next_action: _Optional[_Union[NextAction, _Mapping]] = ..., cancellation_reason: _Optional[str] = ...) -> None: ...

class NextAction(_message.Message):
    __slots__ = ("type", "redirect_to_url")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    REDIRECT_TO_URL_FIELD_NUMBER: _ClassVar[int]
    type: str
    redirect_to_url: RedirectToUrl
    def __init__(self, type: _Optional[str] = ..., redirect_to_url: _Optional[_Union[RedirectToUrl, _Mapping]] = ...) -> None: ...

class RedirectToUrl(_message.Message):
    __slots__ = ("url", "return_url")
    URL_FIELD_NUMBER: _ClassVar[int]
    RETURN_URL_FIELD_NUMBER: _ClassVar[int]
    url: str
    return_url: str
    def __init__(self, url: _Optional[str] = ..., return_url: _Optional[str] = ...) -> None: ...

class GetPaymentIntentRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class CreatePaymentIntentRequest(_message.Message):
    __slots__ = ("amount", "currency", "payment_method", "capture_method", "confirm", "description", "metadata", "return_url")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_METHOD_FIELD_NUMBER: _ClassVar[int]
    CAPTURE_METHOD_FIELD_NUMBER: _ClassVar[int]
    CONFIRM_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    RETURN_URL_FIELD_NUMBER: _ClassVar[int]
    amount: int
    currency: str
    payment_method: str
    capture_method: str
    confirm: bool
    description: str
    metadata: _containers.ScalarMap[str, str]
    return_url: str
    def __init__(self, amount: _Optional[int] = ..., currency: _Optional[str] = ..., payment_method: _Optional[str] = ..., capture_method: _Optional[str] = ..., confirm: _Optional[bool] = ..., description: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., return_url: _Optional[str] = ...) -> None: ...

class ListPaymentIntentsRequest(_message.Message):
    __slots__ = ("limit", "starting_after")
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    STARTING_AFTER_FIELD_NUMBER: _ClassVar[int]
    limit: int
    starting_after: str
    def __init__(self, limit: _Optional[int] = ..., starting_after: _Optional[str] = ...) -> None: ...

class ListPaymentIntentsResponse(_message.Message):
    __slots__ = ("data", "has_more")
    DATA_FIELD_NUMBER: _ClassVar[int]
    HAS_MORE_FIELD_NUMBER: _ClassVar[int]
    data: _containers.RepeatedCompositeFieldContainer[PaymentIntent]
    has_more: bool
    def __init__(self, data: _Optional[_Iterable[_Union[PaymentIntent, _Mapping]]] = ..., has_more: _Optional[bool] = ...) -> None: ...

class ConfirmPaymentIntentRequest(_message.Message):
    __slots__ = ("id", "payment_method", "return_url")
    ID_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_METHOD_FIELD_NUMBER: _ClassVar[int]
    RETURN_URL_FIELD_NUMBER: _ClassVar[int]
    id: str
    payment_method: str
    return_url: str
    def __init__(self, id: _Optional[str] = ..., payment_method: _Optional[str] = ..., return_url: _Optional[str] = ...) -> None: ...

class CapturePaymentIntentRequest(_message.Message):
    __slots__ = ("id", "amount_to_capture")
    ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_TO_CAPTURE_FIELD_NUMBER: _ClassVar[int]
    id: str
    amount_to_capture: int
    def __init__(self, id: _Optional[str] = ..., amount_to_capture: _Optional[int] = ...) -> None: ...

class CancelPaymentIntentRequest(_message.Message):
    __slots__ = ("id", "cancellation_reason")
    ID_FIELD_NUMBER: _ClassVar[int]
    CANCELLATION_REASON_FIELD_NUMBER: _ClassVar[int]
    id: str
    cancellation_reason: str
    def __init__(self, id: _Optional[str] = ..., cancellation_reason: _Optional[str] = ...) -> None: ...

class Refund(_message.Message):
    __slots__ = ("id", "amount", "currency", "payment_intent", "status", "reason", "created", "livemode")
    ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_INTENT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    LIVEMODE_FIELD_NUMBER: _ClassVar[int]
    id: str
    amount: int
    currency: str
    payment_intent: str
    status: str
    reason: str
    created: _timestamp_pb2.Timestamp
    livemode: bool
    def __init__(self, id: _Optional[str] = ..., amount: _Optional[int] = ..., currency: _Optional[str] = ..., payment_intent: _Optional[str] = ..., status: _Optional[str] = ..., reason: _Optional[str] = ..., created: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., livemode: _Optional[bool] = ...) -> None: ...

class CreateRefundRequest(_message.Message):
    __slots__ = ("payment_intent", "amount", "reason")
    PAYMENT_INTENT_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    payment_intent: str
    amount: int
    reason: str
    def __init__(self, payment_intent: _Optional[str] = ..., amount: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class GetRefundRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...
