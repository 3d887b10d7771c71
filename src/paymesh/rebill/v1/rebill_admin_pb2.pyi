import datetime

from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from paymesh.rebill.v1 import rebill_pb2 as _rebill_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RetryPolicy(_message.Message):
    __slots__ = ("merchant_id", "retry_after_days", "final_status")
    MERCHANT_ID_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_DAYS_FIELD_NUMBER: _ClassVar[int]
    FINAL_STATUS_FIELD_NUMBER: _ClassVar[int]
    merchant_id: str
    retry_after_days: _containers.RepeatedScalarFieldContainer[int]
    final_status: str
    def __init__(self, merchant_id: _Optional[str] = ..., retry_after_days: _Optional[_Iterable[int]] = ..., final_status: _Optional[str] = ...) -> None: ...

class SetRetryPolicyRequest(_message.Message):
    __slots__ = ("policy",)
    POLICY_FIELD_NUMBER: _ClassVar[int]
    policy: RetryPolicy
    def __init__(self, policy: _Optional[_Union[RetryPolicy, _Mapping]] = ...) -> None: ...

class GetRetryPolicyRequest(_message.Message):
    __slots__ = ("merchant_id",)
    MERCHANT_ID_FIELD_NUMBER: _ClassVar[int]
    merchant_id: str
    def __init__(self, merchant_id: _Optional[str] = ...) -> None: ...

class DeadLetter(_message.Message):
    __slots__ = ("id", "queue", "job_id", "reason", "body", "status", "received")
    ID_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_FIELD_NUMBER: _ClassVar[int]
    id: str
    queue: str
    job_id: str
    reason: str
    body: str
    status: str
    received: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., queue: _Optional[str] = ..., job_id: _Optional[str] = ..., reason: _Optional[str] = ..., body: _Optional[str] = ..., status: _Optional[str] = ..., received: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListDeadLettersRequest(_message.Message):
    __slots__ = ("status", "limit")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    status: str
    limit: int
    def __init__(self, status: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class ListDeadLettersResponse(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: _containers.RepeatedCompositeFieldContainer[DeadLetter]
    def __init__(self, data: _Optional[_Iterable[_Union[DeadLetter, _Mapping]]] = ...) -> None: ...

class RetryDeadLetterRequest(_message.Message):
    __slots__ = ("id", "operator")
    ID_FIELD_NUMBER: _ClassVar[int]
    OPERATOR_FIELD_NUMBER: _ClassVar[int]
    id: str
    operator: str
    def __init__(self, id: _Optional[str] = ..., operator: _Optional[str] = ...) -> None: ...

class DiscardDeadLetterRequest(_message.Message):
    __slots__ = ("id", "operator")
    ID_FIELD_NUMBER: _ClassVar[int]
    OPERATOR_FIELD_NUMBER: _ClassVar[int]
    id: str
    operator: str
    def __init__(self, id: _Optional[str] = ..., operator: _Optional[str] = ...) -> None: ...

class SearchSubscriptionsRequest(_message.Message):
    __slots__ = ("q", "merchant_id", "status", "limit", "starting_after")
    Q_FIELD_NUMBER: _ClassVar[int]
    MERCHANT_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    STARTING_AFTER_FIELD_NUMBER: _ClassVar[int]
    q: str
    merchant_id: str
    status: str
    limit: int
    starting_after: str
    def __init__(self, q: _Optional[str] = ..., merchant_id: _Optional[str] = ..., status: _Optional[str] = ..., limit: _Optional[int] = ..., starting_after: _Optional[str] = ...) -> None: ...

class SubscriptionSummary(_message.Message):
    __slots__ = ("subscription", "merchant_id")
    SUBSCRIPTION_FIELD_NUMBER: _ClassVar[int]
    MERCHANT_ID_FIELD_NUMBER: _ClassVar[int]
    subscription: _rebill_pb2.Subscription
    merchant_id: str
    def __init__(self, subscription: _Optional[_Union[_rebill_pb2.Subscription, _Mapping]] = ..., merchant_id: _Optional[str] = ...) -> None: ...

class SearchSubscriptionsResponse(_message.Message):
    __slots__ = ("data", "has_more")
    DATA_FIELD_NUMBER: _ClassVar[int]
    HAS_MORE_FIELD_NUMBER: _ClassVar[int]
    data: _containers.RepeatedCompositeFieldContainer[SubscriptionSummary]
    has_more: bool
    def __init__(self, data: _Optional[_Iterable[_Union[SubscriptionSummary, _Mapping]]] = ..., has_more: _Optional[bool] = ...) -> None: ...

class GetSubscriptionDetailRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class RebillAuditEntry(_message.Message):
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

class Dunning(_message.Message):
    __slots__ = ("retry_after_days", "attempts_made", "next_attempt_at", "final_status")
    RETRY_AFTER_DAYS_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_MADE_FIELD_NUMBER: _ClassVar[int]
    NEXT_ATTEMPT_AT_FIELD_NUMBER: _ClassVar[int]
    FINAL_STATUS_FIELD_NUMBER: _ClassVar[int]
    retry_after_days: _containers.RepeatedScalarFieldContainer[int]
    attempts_made: int
    next_attempt_at: _timestamp_pb2.Timestamp
    final_status: str
    def __init__(self, retry_after_days: _Optional[_Iterable[int]] = ..., attempts_made: _Optional[int] = ..., next_attempt_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., final_status: _Optional[str] = ...) -> None: ...

class SubscriptionDetail(_message.Message):
    __slots__ = ("summary", "renewals", "dunning", "timeline", "chain_verified", "chain_problem")
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    RENEWALS_FIELD_NUMBER: _ClassVar[int]
    DUNNING_FIELD_NUMBER: _ClassVar[int]
    TIMELINE_FIELD_NUMBER: _ClassVar[int]
    CHAIN_VERIFIED_FIELD_NUMBER: _ClassVar[int]
    CHAIN_PROBLEM_FIELD_NUMBER: _ClassVar[int]
    summary: SubscriptionSummary
    renewals: _containers.RepeatedCompositeFieldContainer[_rebill_pb2.Renewal]
    dunning: Dunning
    timeline: _containers.RepeatedCompositeFieldContainer[RebillAuditEntry]
    chain_verified: bool
    chain_problem: str
    def __init__(self, summary: _Optional[_Union[SubscriptionSummary, _Mapping]] = ..., renewals: _Optional[_Iterable[_Union[_rebill_pb2.Renewal, _Mapping]]] = ..., dunning: _Optional[_Union[Dunning, _Mapping]] = ..., timeline: _Optional[_Iterable[_Union[RebillAuditEntry, _Mapping]]] = ..., chain_verified: _Optional[bool] = ..., chain_problem: _Optional[str] = ...) -> None: ...

class GetRecoveryStatsRequest(_message.Message):
    __slots__ = ("to",)
    FROM_FIELD_NUMBER: _ClassVar[int]
    TO_FIELD_NUMBER: _ClassVar[int]
    to: _timestamp_pb2.Timestamp
    def __init__(self, to: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., **kwargs) -> None: ...

class DailyRecovery(_message.Message):
    __slots__ = ("day", "paid_first_time", "declined", "recovered")
    DAY_FIELD_NUMBER: _ClassVar[int]
    PAID_FIRST_TIME_FIELD_NUMBER: _ClassVar[int]
    DECLINED_FIELD_NUMBER: _ClassVar[int]
    RECOVERED_FIELD_NUMBER: _ClassVar[int]
    day: str
    paid_first_time: int
    declined: int
    recovered: int
    def __init__(self, day: _Optional[str] = ..., paid_first_time: _Optional[int] = ..., declined: _Optional[int] = ..., recovered: _Optional[int] = ...) -> None: ...

class RecoveryStats(_message.Message):
    __slots__ = ("days",)
    DAYS_FIELD_NUMBER: _ClassVar[int]
    days: _containers.RepeatedCompositeFieldContainer[DailyRecovery]
    def __init__(self, days: _Optional[_Iterable[_Union[DailyRecovery, _Mapping]]] = ...) -> None: ...
