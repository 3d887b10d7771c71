import datetime

from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from paymesh.gateway.v1 import disputes_pb2 as _disputes_pb2
from paymesh.gateway.v1 import gateway_pb2 as _gateway_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SearchPaymentsRequest(_message.Message):
    __slots__ = ("q", "merchant_id", "status", "psp", "amount_min", "amount_max", "created_from", "created_to", "limit", "starting_after")
    Q_FIELD_NUMBER: _ClassVar[int]
    MERCHANT_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PSP_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MIN_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MAX_FIELD_NUMBER: _ClassVar[int]
    CREATED_FROM_FIELD_NUMBER: _ClassVar[int]
    CREATED_TO_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    STARTING_AFTER_FIELD_NUMBER: _ClassVar[int]
    q: str
    merchant_id: str
    status: str
    psp: str
    amount_min: int
    amount_max: int
    created_from: _timestamp_pb2.Timestamp
    created_to: _timestamp_pb2.Timestamp
    limit: int
    starting_after: str
    def __init__(self, q: _Optional[str] = ..., merchant_id: _Optional[str] = ..., status: _Optional[str] = ..., psp: _Optional[str] = ..., amount_min: _Optional[int] = ..., amount_max: _Optional[int] = ..., created_from: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created_to: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., limit: _Optional[int] = ..., starting_after: _Optional[str] = ...) -> None: ...

class PaymentSummary(_message.Message):
    __slots__ = ("payment_intent", "merchant_id", "merchant_name", "card_brand", "card_last4", "card_fingerprint")
    PAYMENT_INTENT_FIELD_NUMBER: _ClassVar[int]
    MERCHANT_ID_FIELD_NUMBER: _ClassVar[int]
    MERCHANT_NAME_FIELD_NUMBER: _ClassVar[int]
    CARD_BRAND_FIELD_NUMBER: _ClassVar[int]
    CARD_LAST4_FIELD_NUMBER: _ClassVar[int]
    CARD_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    payment_intent: _gateway_pb2.PaymentIntent
    merchant_id: str
    merchant_name: str
    card_brand: str
    card_last4: str
    card_fingerprint: str
    def __init__(self, payment_intent: _Optional[_Union[_gateway_pb2.PaymentIntent, _Mapping]] = ..., merchant_id: _Optional[str] = ..., merchant_name: _Optional[str] = ..., card_brand: _Optional[str] = ..., card_last4: _Optional[str] = ..., card_fingerprint: _Optional[str] = ...) -> None: ...

class SearchPaymentsResponse(_message.Message):
    __slots__ = ("data", "has_more")
    DATA_FIELD_NUMBER: _ClassVar[int]
    HAS_MORE_FIELD_NUMBER: _ClassVar[int]
    data: _containers.RepeatedCompositeFieldContainer[PaymentSummary]
    has_more: bool
    def __init__(self, data: _Optional[_Iterable[_Union[PaymentSummary, _Mapping]]] = ..., has_more: _Optional[bool] = ...) -> None: ...

class GetPaymentDetailRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class AuditEntry(_message.Message):
    __slots__ = ("at", "actor", "action", "object_id", "result", "details_json", "operator")
    AT_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    OBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    DETAILS_JSON_FIELD_NUMBER: _ClassVar[int]
    OPERATOR_FIELD_NUMBER: _ClassVar[int]
    at: _timestamp_pb2.Timestamp
    actor: str
    action: str
    object_id: str
    result: str
    details_json: str
    operator: str
    def __init__(self, at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., actor: _Optional[str] = ..., action: _Optional[str] = ..., object_id: _Optional[str] = ..., result: _Optional[str] = ..., details_json: _Optional[str] = ..., operator: _Optional[str] = ...) -> None: ...

class ChainCheck(_message.Message):
    __slots__ = ("verified", "rows", "problem")
    VERIFIED_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    PROBLEM_FIELD_NUMBER: _ClassVar[int]
    verified: bool
    rows: int
    problem: str
    def __init__(self, verified: _Optional[bool] = ..., rows: _Optional[int] = ..., problem: _Optional[str] = ...) -> None: ...

class PspAttempt(_message.Message):
    __slots__ = ("key", "psp", "operation", "outcome", "psp_reference", "trace_id", "at", "code")
    KEY_FIELD_NUMBER: _ClassVar[int]
    PSP_FIELD_NUMBER: _ClassVar[int]
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    PSP_REFERENCE_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    key: str
    psp: str
    operation: str
    outcome: str
    psp_reference: str
    trace_id: str
    at: _timestamp_pb2.Timestamp
    code: str
    def __init__(self, key: _Optional[str] = ..., psp: _Optional[str] = ..., operation: _Optional[str] = ..., outcome: _Optional[str] = ..., psp_reference: _Optional[str] = ..., trace_id: _Optional[str] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., code: _Optional[str] = ...) -> None: ...

class PaymentDetail(_message.Message):
    __slots__ = ("summary", "timeline", "chain", "attempts", "refunds", "disputes")
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    TIMELINE_FIELD_NUMBER: _ClassVar[int]
    CHAIN_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    REFUNDS_FIELD_NUMBER: _ClassVar[int]
    DISPUTES_FIELD_NUMBER: _ClassVar[int]
    summary: PaymentSummary
    timeline: _containers.RepeatedCompositeFieldContainer[AuditEntry]
    chain: ChainCheck
    attempts: _containers.RepeatedCompositeFieldContainer[PspAttempt]
    refunds: _containers.RepeatedCompositeFieldContainer[_gateway_pb2.Refund]
    disputes: _containers.RepeatedCompositeFieldContainer[_disputes_pb2.Dispute]
    def __init__(self, summary: _Optional[_Union[PaymentSummary, _Mapping]] = ..., timeline: _Optional[_Iterable[_Union[AuditEntry, _Mapping]]] = ..., chain: _Optional[_Union[ChainCheck, _Mapping]] = ..., attempts: _Optional[_Iterable[_Union[PspAttempt, _Mapping]]] = ..., refunds: _Optional[_Iterable[_Union[_gateway_pb2.Refund, _Mapping]]] = ..., disputes: _Optional[_Iterable[_Union[_disputes_pb2.Dispute, _Mapping]]] = ...) -> None: ...

class RefundPaymentRequest(_message.Message):
    __slots__ = ("payment_intent", "amount", "reason", "operator", "idempotency_key")
    PAYMENT_INTENT_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    OPERATOR_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    payment_intent: str
    amount: int
    reason: str
    operator: str
    idempotency_key: str
    def __init__(self, payment_intent: _Optional[str] = ..., amount: _Optional[int] = ..., reason: _Optional[str] = ..., operator: _Optional[str] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class SearchDisputesRequest(_message.Message):
    __slots__ = ("status", "merchant_id", "psp", "limit", "starting_after")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MERCHANT_ID_FIELD_NUMBER: _ClassVar[int]
    PSP_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    STARTING_AFTER_FIELD_NUMBER: _ClassVar[int]
    status: str
    merchant_id: str
    psp: str
    limit: int
    starting_after: str
    def __init__(self, status: _Optional[str] = ..., merchant_id: _Optional[str] = ..., psp: _Optional[str] = ..., limit: _Optional[int] = ..., starting_after: _Optional[str] = ...) -> None: ...

class DisputeSummary(_message.Message):
    __slots__ = ("dispute", "merchant_id", "evidence_due_by")
    DISPUTE_FIELD_NUMBER: _ClassVar[int]
    MERCHANT_ID_FIELD_NUMBER: _ClassVar[int]
    EVIDENCE_DUE_BY_FIELD_NUMBER: _ClassVar[int]
    dispute: _disputes_pb2.Dispute
    merchant_id: str
    evidence_due_by: _timestamp_pb2.Timestamp
    def __init__(self, dispute: _Optional[_Union[_disputes_pb2.Dispute, _Mapping]] = ..., merchant_id: _Optional[str] = ..., evidence_due_by: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class SearchDisputesResponse(_message.Message):
    __slots__ = ("data", "has_more")
    DATA_FIELD_NUMBER: _ClassVar[int]
    HAS_MORE_FIELD_NUMBER: _ClassVar[int]
    data: _containers.RepeatedCompositeFieldContainer[DisputeSummary]
    has_more: bool
    def __init__(self, data: _Optional[_Iterable[_Union[DisputeSummary, _Mapping]]] = ..., has_more: _Optional[bool] = ...) -> None: ...

class ExportMoneyMovementsRequest(_message.Message):
    __slots__ = ("to", "merchant_id")
    FROM_FIELD_NUMBER: _ClassVar[int]
    TO_FIELD_NUMBER: _ClassVar[int]
    MERCHANT_ID_FIELD_NUMBER: _ClassVar[int]
    to: _timestamp_pb2.Timestamp
    merchant_id: str
    def __init__(self, to: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., merchant_id: _Optional[str] = ..., **kwargs) -> None: ...

class MoneyMovement(_message.Message):
    __slots__ = ("type", "id", "payment_intent", "merchant_id", "amount", "currency", "psp", "psp_reference", "fee", "settled")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_INTENT_FIELD_NUMBER: _ClassVar[int]
    MERCHANT_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    PSP_FIELD_NUMBER: _ClassVar[int]
    PSP_REFERENCE_FIELD_NUMBER: _ClassVar[int]
    FEE_FIELD_NUMBER: _ClassVar[int]
    SETTLED_FIELD_NUMBER: _ClassVar[int]
    type: str
    id: str
    payment_intent: str
    merchant_id: str
    amount: int
    currency: str
    psp: str
    psp_reference: str
    fee: int
    settled: _timestamp_pb2.Timestamp
    def __init__(self, type: _Optional[str] = ..., id: _Optional[str] = ..., payment_intent: _Optional[str] = ..., merchant_id: _Optional[str] = ..., amount: _Optional[int] = ..., currency: _Optional[str] = ..., psp: _Optional[str] = ..., psp_reference: _Optional[str] = ..., fee: _Optional[int] = ..., settled: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ExportMoneyMovementsResponse(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: _containers.RepeatedCompositeFieldContainer[MoneyMovement]
    def __init__(self, data: _Optional[_Iterable[_Union[MoneyMovement, _Mapping]]] = ...) -> None: ...

class GetPaymentStatsRequest(_message.Message):
    __slots__ = ("to",)
    FROM_FIELD_NUMBER: _ClassVar[int]
    TO_FIELD_NUMBER: _ClassVar[int]
    to: _timestamp_pb2.Timestamp
    def __init__(self, to: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., **kwargs) -> None: ...

class DailyPspStats(_message.Message):
    __slots__ = ("day", "psp", "attempted", "succeeded", "volume")
    class VolumeEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    DAY_FIELD_NUMBER: _ClassVar[int]
    PSP_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTED_FIELD_NUMBER: _ClassVar[int]
    SUCCEEDED_FIELD_NUMBER: _ClassVar[int]
    VOLUME_FIELD_NUMBER: _ClassVar[int]
    day: str
    psp: str
    attempted: int
    succeeded: int
    volume: _containers.ScalarMap[str, int]
    def __init__(self, day: _Optional[str] = ..., psp: _Optional[str] = ..., attempted: _Optional[int] = ..., succeeded: _Optional[int] = ..., volume: _Optional[_Mapping[str, int]] = ...) -> None: ...

class DeclineCount(_message.Message):
    __slots__ = ("code", "count")
    CODE_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    code: str
    count: int
    def __init__(self, code: _Optional[str] = ..., count: _Optional[int] = ...) -> None: ...

class PaymentStats(_message.Message):
    __slots__ = ("days", "declines")
    DAYS_FIELD_NUMBER: _ClassVar[int]
    DECLINES_FIELD_NUMBER: _ClassVar[int]
    days: _containers.RepeatedCompositeFieldContainer[DailyPspStats]
    declines: _containers.RepeatedCompositeFieldContainer[DeclineCount]
    def __init__(self, days: _Optional[_Iterable[_Union[DailyPspStats, _Mapping]]] = ..., declines: _Optional[_Iterable[_Union[DeclineCount, _Mapping]]] = ...) -> None: ...
