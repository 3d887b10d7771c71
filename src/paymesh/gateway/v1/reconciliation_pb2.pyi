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

class MismatchKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MISMATCH_KIND_UNSPECIFIED: _ClassVar[MismatchKind]
    MISMATCH_KIND_MISSING_IN_LEDGER: _ClassVar[MismatchKind]
    MISMATCH_KIND_MISSING_AT_PSP: _ClassVar[MismatchKind]
    MISMATCH_KIND_AMOUNT_MISMATCH: _ClassVar[MismatchKind]
    MISMATCH_KIND_CURRENCY_MISMATCH: _ClassVar[MismatchKind]
    MISMATCH_KIND_STATUS_MISMATCH: _ClassVar[MismatchKind]

class MismatchState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MISMATCH_STATE_UNSPECIFIED: _ClassVar[MismatchState]
    MISMATCH_STATE_OPEN: _ClassVar[MismatchState]
    MISMATCH_STATE_RESOLVED: _ClassVar[MismatchState]
    MISMATCH_STATE_IGNORED: _ClassVar[MismatchState]

class Resolution(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RESOLUTION_UNSPECIFIED: _ClassVar[Resolution]
    RESOLUTION_RESOLVED: _ClassVar[Resolution]
    RESOLUTION_IGNORED: _ClassVar[Resolution]
MISMATCH_KIND_UNSPECIFIED: MismatchKind
MISMATCH_KIND_MISSING_IN_LEDGER: MismatchKind
MISMATCH_KIND_MISSING_AT_PSP: MismatchKind
MISMATCH_KIND_AMOUNT_MISMATCH: MismatchKind
MISMATCH_KIND_CURRENCY_MISMATCH: MismatchKind
MISMATCH_KIND_STATUS_MISMATCH: MismatchKind
MISMATCH_STATE_UNSPECIFIED: MismatchState
MISMATCH_STATE_OPEN: MismatchState
MISMATCH_STATE_RESOLVED: MismatchState
MISMATCH_STATE_IGNORED: MismatchState
RESOLUTION_UNSPECIFIED: Resolution
RESOLUTION_RESOLVED: Resolution
RESOLUTION_IGNORED: Resolution

class Mismatch(_message.Message):
    __slots__ = ("id", "psp", "reference", "kind", "state", "object_type", "payment_intent", "psp_amount", "ledger_amount", "psp_currency", "ledger_currency", "psp_status", "ledger_status", "run_id", "found", "resolved", "resolved_by", "note")
    ID_FIELD_NUMBER: _ClassVar[int]
    PSP_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    OBJECT_TYPE_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_INTENT_FIELD_NUMBER: _ClassVar[int]
    PSP_AMOUNT_FIELD_NUMBER: _ClassVar[int]
    LEDGER_AMOUNT_FIELD_NUMBER: _ClassVar[int]
    PSP_CURRENCY_FIELD_NUMBER: _ClassVar[int]
    LEDGER_CURRENCY_FIELD_NUMBER: _ClassVar[int]
    PSP_STATUS_FIELD_NUMBER: _ClassVar[int]
    LEDGER_STATUS_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    FOUND_FIELD_NUMBER: _ClassVar[int]
    RESOLVED_FIELD_NUMBER: _ClassVar[int]
    RESOLVED_BY_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    id: str
    psp: str
    reference: str
    kind: MismatchKind
    state: MismatchState
    object_type: str
    payment_intent: str
    psp_amount: int
    ledger_amount: int
    psp_currency: str
    ledger_currency: str
    psp_status: str
    ledger_status: str
    run_id: str
    found: _timestamp_pb2.Timestamp
    resolved: _timestamp_pb2.Timestamp
    resolved_by: str
    note: str
    def __init__(self, id: _Optional[str] = ..., psp: _Optional[str] = ..., reference: _Optional[str] = ..., kind: _Optional[_Union[MismatchKind, str]] = ..., state: _Optional[_Union[MismatchState, str]] = ..., object_type: _Optional[str] = ..., payment_intent: _Optional[str] = ..., psp_amount: _Optional[int] = ..., ledger_amount: _Optional[int] = ..., psp_currency: _Optional[str] = ..., ledger_currency: _Optional[str] = ..., psp_status: _Optional[str] = ..., ledger_status: _Optional[str] = ..., run_id: _Optional[str] = ..., found: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., resolved: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., resolved_by: _Optional[str] = ..., note: _Optional[str] = ...) -> None: ...

class RunReconciliationRequest(_message.Message):
    __slots__ = ("psp", "to", "operator", "reason")
    PSP_FIELD_NUMBER: _ClassVar[int]
    FROM_FIELD_NUMBER: _ClassVar[int]
    TO_FIELD_NUMBER: _ClassVar[int]
    OPERATOR_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    psp: str
    to: _timestamp_pb2.Timestamp
    operator: str
    reason: str
    def __init__(self, psp: _Optional[str] = ..., to: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., operator: _Optional[str] = ..., reason: _Optional[str] = ..., **kwargs) -> None: ...

class RunReconciliationResponse(_message.Message):
    __slots__ = ("run_id", "psp", "to", "records_checked", "new_mismatches", "mismatches")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    PSP_FIELD_NUMBER: _ClassVar[int]
    FROM_FIELD_NUMBER: _ClassVar[int]
    TO_FIELD_NUMBER: _ClassVar[int]
    RECORDS_CHECKED_FIELD_NUMBER: _ClassVar[int]
    NEW_MISMATCHES_FIELD_NUMBER: _ClassVar[int]
    MISMATCHES_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    psp: str
    to: _timestamp_pb2.Timestamp
    records_checked: int
    new_mismatches: int
    mismatches: _containers.RepeatedCompositeFieldContainer[Mismatch]
    def __init__(self, run_id: _Optional[str] = ..., psp: _Optional[str] = ..., to: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., records_checked: _Optional[int] = ..., new_mismatches: _Optional[int] = ..., mismatches: _Optional[_Iterable[_Union[Mismatch, _Mapping]]] = ..., **kwargs) -> None: ...

class ListMismatchesRequest(_message.Message):
    __slots__ = ("state", "kind", "psp", "limit", "starting_after")
    STATE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    PSP_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    STARTING_AFTER_FIELD_NUMBER: _ClassVar[int]
    state: MismatchState
    kind: MismatchKind
    psp: str
    limit: int
    starting_after: str
    def __init__(self, state: _Optional[_Union[MismatchState, str]] = ..., kind: _Optional[_Union[MismatchKind, str]] = ..., psp: _Optional[str] = ..., limit: _Optional[int] = ..., starting_after: _Optional[str] = ...) -> None: ...

class ListMismatchesResponse(_message.Message):
    __slots__ = ("mismatches", "has_more")
    MISMATCHES_FIELD_NUMBER: _ClassVar[int]
    HAS_MORE_FIELD_NUMBER: _ClassVar[int]
    mismatches: _containers.RepeatedCompositeFieldContainer[Mismatch]
    has_more: bool
    def __init__(self, mismatches: _Optional[_Iterable[_Union[Mismatch, _Mapping]]] = ..., has_more: _Optional[bool] = ...) -> None: ...

class ResolveMismatchRequest(_message.Message):
    __slots__ = ("id", "resolution", "note", "operator")
    ID_FIELD_NUMBER: _ClassVar[int]
    RESOLUTION_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    OPERATOR_FIELD_NUMBER: _ClassVar[int]
    id: str
    resolution: Resolution
    note: str
    operator: str
    def __init__(self, id: _Optional[str] = ..., resolution: _Optional[_Union[Resolution, str]] = ..., note: _Optional[str] = ..., operator: _Optional[str] = ...) -> None: ...

class ResolveMismatchResponse(_message.Message):
    __slots__ = ("mismatch",)
    MISMATCH_FIELD_NUMBER: _ClassVar[int]
    mismatch: Mismatch
    def __init__(self, mismatch: _Optional[_Union[Mismatch, _Mapping]] = ...) -> None: ...
