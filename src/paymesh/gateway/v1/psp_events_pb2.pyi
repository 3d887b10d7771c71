import datetime

from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PspEventOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PSP_EVENT_OUTCOME_UNSPECIFIED: _ClassVar[PspEventOutcome]
    PSP_EVENT_OUTCOME_APPLIED: _ClassVar[PspEventOutcome]
    PSP_EVENT_OUTCOME_ALREADY_APPLIED: _ClassVar[PspEventOutcome]
    PSP_EVENT_OUTCOME_IGNORED: _ClassVar[PspEventOutcome]
    PSP_EVENT_OUTCOME_RETRY_LATER: _ClassVar[PspEventOutcome]
PSP_EVENT_OUTCOME_UNSPECIFIED: PspEventOutcome
PSP_EVENT_OUTCOME_APPLIED: PspEventOutcome
PSP_EVENT_OUTCOME_ALREADY_APPLIED: PspEventOutcome
PSP_EVENT_OUTCOME_IGNORED: PspEventOutcome
PSP_EVENT_OUTCOME_RETRY_LATER: PspEventOutcome

class ApplyPspEventsRequest(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[ApplyPspEventRequest]
    def __init__(self, events: _Optional[_Iterable[_Union[ApplyPspEventRequest, _Mapping]]] = ...) -> None: ...

class ApplyPspEventsResponse(_message.Message):
    __slots__ = ("outcomes",)
    OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    outcomes: _containers.RepeatedCompositeFieldContainer[ApplyPspEventResponse]
    def __init__(self, outcomes: _Optional[_Iterable[_Union[ApplyPspEventResponse, _Mapping]]] = ...) -> None: ...

class ApplyPspEventRequest(_message.Message):
    __slots__ = ("psp", "event_id", "event_type", "created", "psp_reference", "attempt_key", "captured", "refunded", "disputed", "authorized", "authentication_failed")
    PSP_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    PSP_REFERENCE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_KEY_FIELD_NUMBER: _ClassVar[int]
    CAPTURED_FIELD_NUMBER: _ClassVar[int]
    REFUNDED_FIELD_NUMBER: _ClassVar[int]
    DISPUTED_FIELD_NUMBER: _ClassVar[int]
    AUTHORIZED_FIELD_NUMBER: _ClassVar[int]
    AUTHENTICATION_FAILED_FIELD_NUMBER: _ClassVar[int]
    psp: str
    event_id: str
    event_type: str
    created: _timestamp_pb2.Timestamp
    psp_reference: str
    attempt_key: str
    captured: Captured
    refunded: Refunded
    disputed: Disputed
    authorized: Authorized
    authentication_failed: AuthenticationFailed
    def __init__(self, psp: _Optional[str] = ..., event_id: _Optional[str] = ..., event_type: _Optional[str] = ..., created: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., psp_reference: _Optional[str] = ..., attempt_key: _Optional[str] = ..., captured: _Optional[_Union[Captured, _Mapping]] = ..., refunded: _Optional[_Union[Refunded, _Mapping]] = ..., disputed: _Optional[_Union[Disputed, _Mapping]] = ..., authorized: _Optional[_Union[Authorized, _Mapping]] = ..., authentication_failed: _Optional[_Union[AuthenticationFailed, _Mapping]] = ...) -> None: ...

class Captured(_message.Message):
    __slots__ = ("amount_captured", "currency")
    AMOUNT_CAPTURED_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    amount_captured: int
    currency: str
    def __init__(self, amount_captured: _Optional[int] = ..., currency: _Optional[str] = ...) -> None: ...

class Refunded(_message.Message):
    __slots__ = ("refund_reference", "amount", "currency", "refund_key")
    REFUND_REFERENCE_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    REFUND_KEY_FIELD_NUMBER: _ClassVar[int]
    refund_reference: str
    amount: int
    currency: str
    refund_key: str
    def __init__(self, refund_reference: _Optional[str] = ..., amount: _Optional[int] = ..., currency: _Optional[str] = ..., refund_key: _Optional[str] = ...) -> None: ...

class Disputed(_message.Message):
    __slots__ = ("dispute_reference", "amount", "reason", "currency", "status", "evidence_due_by")
    DISPUTE_REFERENCE_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    EVIDENCE_DUE_BY_FIELD_NUMBER: _ClassVar[int]
    dispute_reference: str
    amount: int
    reason: str
    currency: str
    status: str
    evidence_due_by: _timestamp_pb2.Timestamp
    def __init__(self, dispute_reference: _Optional[str] = ..., amount: _Optional[int] = ..., reason: _Optional[str] = ..., currency: _Optional[str] = ..., status: _Optional[str] = ..., evidence_due_by: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Authorized(_message.Message):
    __slots__ = ("amount_capturable", "currency")
    AMOUNT_CAPTURABLE_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    amount_capturable: int
    currency: str
    def __init__(self, amount_capturable: _Optional[int] = ..., currency: _Optional[str] = ...) -> None: ...

class AuthenticationFailed(_message.Message):
    __slots__ = ("code",)
    CODE_FIELD_NUMBER: _ClassVar[int]
    code: str
    def __init__(self, code: _Optional[str] = ...) -> None: ...

class ApplyPspEventResponse(_message.Message):
    __slots__ = ("outcome", "reason", "payment_intent")
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_INTENT_FIELD_NUMBER: _ClassVar[int]
    outcome: PspEventOutcome
    reason: str
    payment_intent: str
    def __init__(self, outcome: _Optional[_Union[PspEventOutcome, str]] = ..., reason: _Optional[str] = ..., payment_intent: _Optional[str] = ...) -> None: ...
