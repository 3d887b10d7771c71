"""What a use case asks the repository to write, as plain values: one conditional change of an
intent, and the idempotency key that a write binds to its object."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Protocol

from gateway_svc.domain.models import PaymentIntent


class Merchant(Protocol):
    """A merchant in one of its modes, as a key's owner (paymesh.platform.callers.Merchant;
    the domain does not import the kit's transport side)."""

    @property
    def id(self) -> str: ...

    @property
    def livemode(self) -> bool: ...


@dataclass(frozen=True)
class KeyRef:
    """An idempotency key of a merchant, held by the request whose claim took it at `fence`
    (the key's `locked_at`): statements bind or settle it only while that claim still holds
    it, so a request taken over (it looked dead) cannot overwrite its retry's key. `done`:
    binding it to its object also ends it (the object's outcome is known), else it waits for
    the outcome."""

    merchant: Merchant
    key: str
    fence: datetime
    done: bool = False

    def ended(self) -> KeyRef:
        """The same held key, ended when it is bound."""
        return replace(self, done=True)


@dataclass
class IntentChange:
    """One conditional change of an intent: applied only while the intent is in one of
    `statuses` (and, when given, its PSP operation in flight is `pending_key`, or none is
    in flight with `no_pending`, or its last attempt is `attempt_key`)."""

    intent: PaymentIntent  # as read before; the change's audit and event describe `after`
    values: dict[str, Any]
    statuses: Sequence[str]
    audits: list[tuple[str, str, str, dict[str, Any]]] = field(default_factory=list)
    event: str | None = None
    pending_key: str | None = None
    attempt_key: str | None = None
    no_pending: bool = False
    bind: KeyRef | None = None  # the request's key now answers with this intent
    settles: bool = False  # the change settles a PSP operation: keys waiting on it are done

    @property
    def after(self) -> PaymentIntent:
        return self.intent.replace(**self.values)

    def holds_for(self, intent: PaymentIntent) -> bool:
        """The change's condition, as `repository.intents` writes it in SQL."""
        return (
            intent.status in [str(s) for s in self.statuses]
            and (self.pending_key is None or intent.pending_key == self.pending_key)
            and (self.attempt_key is None or intent.attempt_key == self.attempt_key)
            and (not self.no_pending or intent.pending_operation is None)
        )
