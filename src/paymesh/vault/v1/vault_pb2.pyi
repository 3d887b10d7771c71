import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CardInput(_message.Message):
    __slots__ = ("number", "exp_month", "exp_year", "cvc")
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    EXP_MONTH_FIELD_NUMBER: _ClassVar[int]
    EXP_YEAR_FIELD_NUMBER: _ClassVar[int]
    CVC_FIELD_NUMBER: _ClassVar[int]
    number: str
    exp_month: int
    exp_year: int
    cvc: str
    def __init__(self, number: _Optional[str] = ..., exp_month: _Optional[int] = ..., exp_year: _Optional[int] = ..., cvc: _Optional[str] = ...) -> None: ...

class Address(_message.Message):
    __slots__ = ("line1", "line2", "city", "state", "postal_code", "country")
    LINE1_FIELD_NUMBER: _ClassVar[int]
    LINE2_FIELD_NUMBER: _ClassVar[int]
    CITY_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    POSTAL_CODE_FIELD_NUMBER: _ClassVar[int]
    COUNTRY_FIELD_NUMBER: _ClassVar[int]
    line1: str
    line2: str
    city: str
    state: str
    postal_code: str
    country: str
    def __init__(self, line1: _Optional[str] = ..., line2: _Optional[str] = ..., city: _Optional[str] = ..., state: _Optional[str] = ..., postal_code: _Optional[str] = ..., country: _Optional[str] = ...) -> None: ...

class BillingDetails(_message.Message):
    __slots__ = ("name", "email", "address")
    NAME_FIELD_NUMBER: _ClassVar[int]
    EMAIL_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    name: str
    email: str
    address: Address
    def __init__(self, name: _Optional[str] = ..., email: _Optional[str] = ..., address: _Optional[_Union[Address, _Mapping]] = ...) -> None: ...

class Card(_message.Message):
    __slots__ = ("brand", "last4", "exp_month", "exp_year", "fingerprint")
    BRAND_FIELD_NUMBER: _ClassVar[int]
    LAST4_FIELD_NUMBER: _ClassVar[int]
    EXP_MONTH_FIELD_NUMBER: _ClassVar[int]
    EXP_YEAR_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    brand: str
    last4: str
    exp_month: int
    exp_year: int
    fingerprint: str
    def __init__(self, brand: _Optional[str] = ..., last4: _Optional[str] = ..., exp_month: _Optional[int] = ..., exp_year: _Optional[int] = ..., fingerprint: _Optional[str] = ...) -> None: ...

class PaymentMethod(_message.Message):
    __slots__ = ("id", "type", "card", "created", "livemode", "billing_details")
    ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    CARD_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    LIVEMODE_FIELD_NUMBER: _ClassVar[int]
    BILLING_DETAILS_FIELD_NUMBER: _ClassVar[int]
    id: str
    type: str
    card: Card
    created: _timestamp_pb2.Timestamp
    livemode: bool
    billing_details: BillingDetails
    def __init__(self, id: _Optional[str] = ..., type: _Optional[str] = ..., card: _Optional[_Union[Card, _Mapping]] = ..., created: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., livemode: _Optional[bool] = ..., billing_details: _Optional[_Union[BillingDetails, _Mapping]] = ...) -> None: ...

class GetPaymentMethodRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class CreatePaymentMethodRequest(_message.Message):
    __slots__ = ("type", "card", "billing_details")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    CARD_FIELD_NUMBER: _ClassVar[int]
    BILLING_DETAILS_FIELD_NUMBER: _ClassVar[int]
    type: str
    card: CardInput
    billing_details: BillingDetails
    def __init__(self, type: _Optional[str] = ..., card: _Optional[_Union[CardInput, _Mapping]] = ..., billing_details: _Optional[_Union[BillingDetails, _Mapping]] = ...) -> None: ...

class DetachPaymentMethodRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class GetPspTokenRequest(_message.Message):
    __slots__ = ("payment_method", "psp", "reason")
    PAYMENT_METHOD_FIELD_NUMBER: _ClassVar[int]
    PSP_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    payment_method: str
    psp: str
    reason: str
    def __init__(self, payment_method: _Optional[str] = ..., psp: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class GetPspTokenResponse(_message.Message):
    __slots__ = ("psp", "psp_reference", "cached")
    PSP_FIELD_NUMBER: _ClassVar[int]
    PSP_REFERENCE_FIELD_NUMBER: _ClassVar[int]
    CACHED_FIELD_NUMBER: _ClassVar[int]
    psp: str
    psp_reference: str
    cached: bool
    def __init__(self, psp: _Optional[str] = ..., psp_reference: _Optional[str] = ..., cached: _Optional[bool] = ...) -> None: ...

class ReprovisionPspTokenRequest(_message.Message):
    __slots__ = ("payment_method", "psp", "unknown_reference", "reason")
    PAYMENT_METHOD_FIELD_NUMBER: _ClassVar[int]
    PSP_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_REFERENCE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    payment_method: str
    psp: str
    unknown_reference: str
    reason: str
    def __init__(self, payment_method: _Optional[str] = ..., psp: _Optional[str] = ..., unknown_reference: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class ReprovisionPspTokenResponse(_message.Message):
    __slots__ = ("psp", "psp_reference", "reprovisioned")
    PSP_FIELD_NUMBER: _ClassVar[int]
    PSP_REFERENCE_FIELD_NUMBER: _ClassVar[int]
    REPROVISIONED_FIELD_NUMBER: _ClassVar[int]
    psp: str
    psp_reference: str
    reprovisioned: bool
    def __init__(self, psp: _Optional[str] = ..., psp_reference: _Optional[str] = ..., reprovisioned: _Optional[bool] = ...) -> None: ...

class GetCardSummariesRequest(_message.Message):
    __slots__ = ("payment_methods",)
    PAYMENT_METHODS_FIELD_NUMBER: _ClassVar[int]
    payment_methods: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, payment_methods: _Optional[_Iterable[str]] = ...) -> None: ...

class CardSummary(_message.Message):
    __slots__ = ("payment_method", "brand", "last4", "fingerprint", "exp_month", "exp_year")
    PAYMENT_METHOD_FIELD_NUMBER: _ClassVar[int]
    BRAND_FIELD_NUMBER: _ClassVar[int]
    LAST4_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    EXP_MONTH_FIELD_NUMBER: _ClassVar[int]
    EXP_YEAR_FIELD_NUMBER: _ClassVar[int]
    payment_method: str
    brand: str
    last4: str
    fingerprint: str
    exp_month: int
    exp_year: int
    def __init__(self, payment_method: _Optional[str] = ..., brand: _Optional[str] = ..., last4: _Optional[str] = ..., fingerprint: _Optional[str] = ..., exp_month: _Optional[int] = ..., exp_year: _Optional[int] = ...) -> None: ...

class GetCardSummariesResponse(_message.Message):
    __slots__ = ("cards",)
    CARDS_FIELD_NUMBER: _ClassVar[int]
    cards: _containers.RepeatedCompositeFieldContainer[CardSummary]
    def __init__(self, cards: _Optional[_Iterable[_Union[CardSummary, _Mapping]]] = ...) -> None: ...
