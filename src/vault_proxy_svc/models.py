"""What the vault's use cases and its card stores hand each other: plain dataclasses, never
database rows. A card's number exists here only sealed (`Sealed`); its CVC never."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from paymesh.platform.problems import NotFound
from vault_proxy_svc.envelope import Sealed

# A card's columns that hold its sealed number: never in an event, never answered.
SEALED_COLUMNS = ("kek_version", "wrapped_key", "nonce", "ciphertext")


@dataclass(frozen=True)
class PaymentMethod:
    id: str
    merchant_id: str
    livemode: bool
    brand: str
    last4: str
    exp_month: int
    exp_year: int
    fingerprint: str
    sealed: Sealed | None  # None once detached: the data key is destroyed
    billing_details: dict[str, Any] | None = None
    created_at: datetime | None = None  # set by the store
    detached_at: datetime | None = None

    @property
    def detached(self) -> bool:
        return self.detached_at is not None

    def replace(self, **changes: Any) -> PaymentMethod:
        return dataclasses.replace(self, **changes)

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> PaymentMethod:
        """From a stored row, or from an event's snapshot of one (which has no sealed
        columns)."""
        wrapped_key = row.get("wrapped_key")
        sealed = (
            None
            if wrapped_key is None
            else Sealed(row["kek_version"], wrapped_key, row["nonce"], row["ciphertext"])
        )
        return cls(
            id=row["id"],
            merchant_id=row["merchant_id"],
            livemode=row["livemode"],
            brand=row["brand"],
            last4=row["last4"],
            exp_month=row["exp_month"],
            exp_year=row["exp_year"],
            fingerprint=row["fingerprint"],
            sealed=sealed,
            billing_details=row.get("billing_details"),
            created_at=row.get("created_at"),
            detached_at=row.get("detached_at"),
        )

    def columns(self) -> dict[str, Any]:
        """The card as its table's columns (but `created_at`, the database's)."""
        sealed = self.sealed
        return {
            "id": self.id,
            "merchant_id": self.merchant_id,
            "livemode": self.livemode,
            "brand": self.brand,
            "last4": self.last4,
            "exp_month": self.exp_month,
            "exp_year": self.exp_year,
            "fingerprint": self.fingerprint,
            "kek_version": sealed.kek_version if sealed else None,
            "wrapped_key": sealed.wrapped_key if sealed else None,
            "nonce": sealed.nonce if sealed else None,
            "ciphertext": sealed.ciphertext if sealed else None,
            "billing_details": self.billing_details,
            "detached_at": self.detached_at,
        }


@dataclass(frozen=True)
class CardSummary:
    """A card's masked data from its clear columns, for screens: read without the sealed
    number, so nothing is decrypted."""

    payment_method: str
    brand: str
    last4: str
    fingerprint: str
    exp_month: int
    exp_year: int

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> CardSummary:
        return cls(
            payment_method=row["id"],
            brand=row["brand"],
            last4=row["last4"],
            fingerprint=row["fingerprint"],
            exp_month=row["exp_month"],
            exp_year=row["exp_year"],
        )


@dataclass(frozen=True)
class CachedReference:
    """The hot path's answer: whether the card was detached, and its reference at one PSP
    (None if the PSP does not hold it yet)."""

    detached_at: datetime | None
    psp_reference: str | None

    @property
    def detached(self) -> bool:
        return self.detached_at is not None


@dataclass(frozen=True)
class CardAtPsp:
    """A card with its reference at one PSP (None if the PSP does not hold it yet)."""

    card: PaymentMethod
    psp_reference: str | None

    @property
    def detached(self) -> bool:
        return self.card.detached


@dataclass(frozen=True)
class AuditEntry:
    actor: str
    action: str
    result: str
    payment_method: str | None = None
    merchant_id: str | None = None
    reason: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


Found = TypeVar("Found", PaymentMethod, CachedReference, CardAtPsp)


def require_attached(found: Found | None) -> Found:
    """The card found, unless there is none or it was detached."""
    # The messages do not repeat the id: the caller knows it, and logs need not.
    if found is None:
        raise NotFound("no such payment_method", reason="resource_missing")
    if found.detached:
        raise detached()
    return found


def detached() -> NotFound:
    return NotFound(
        "the payment_method was detached; its card data is destroyed",
        reason="payment_method_detached",
    )
