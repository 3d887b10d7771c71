"""What each PSP says it settled, read a page at a time for reconciliation, and one record
looked up by its reference. The sandbox lists its money movements
(`GET /v1/transactions`, oldest first: charges, refunds, and disputes' withdrawals and
reversals); Stripe lists charges and refunds (`GET /v1/charges`, `GET /v1/refunds`, with
`limit` and `starting_after`), and paymesh keeps Stripe's payment intent id, which each charge
names. Stripe's disputes are not read: localstripe has none to test a reader against."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any, Protocol

import aiohttp

from gateway_svc.domain.reconciliation import (
    CHARGE,
    DISPUTE,
    DISPUTE_REVERSAL,
    REFUND,
    SETTLED,
    PspRecord,
)
from gateway_svc.psp.connectors import basic_auth
from paymesh.platform.secrets import RotatingSecret

PAGE_SIZE = 100


class SettlementsUnavailable(Exception):
    """The PSP's listing could not be read: the run fails and is tried again."""


class Settlements(Protocol):
    psp: str
    object_types: tuple[str, ...]  # the ledger's records it can look up (charge, refund, …)

    def pages(self, start: datetime, end: datetime) -> AsyncIterator[list[PspRecord]]: ...

    async def lookup(self, object_type: str, reference: str) -> PspRecord | None: ...

    async def close(self) -> None: ...


class _Http:
    def __init__(self, api_base: str, timeout: float, api_key: RotatingSecret | None = None):
        self._session = aiohttp.ClientSession(
            base_url=api_base, timeout=aiohttp.ClientTimeout(total=timeout)
        )
        self._api_key = api_key

    def authorization(self, key: str) -> str:
        return f"Bearer {key}"

    async def get(self, path: str, params: dict[str, Any] | None = None) -> dict | None:
        """The answer's JSON object; None for a 404. A refused API key (401) is read again
        from its source; the run fails and is tried again with it."""
        key = self._api_key.value if self._api_key is not None else None
        headers = {"Authorization": self.authorization(key)} if key is not None else {}
        try:
            async with self._session.get(path, params=params, headers=headers) as response:
                if response.status == 401 and self._api_key is not None:
                    await self._api_key.reread(seen=key)
                if response.status == 404:
                    return None
                if response.status != 200:
                    raise SettlementsUnavailable(f"GET {path}: http_{response.status}")
                return await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as error:
            raise SettlementsUnavailable(f"GET {path}: {type(error).__name__}") from None

    async def close(self) -> None:
        await self._session.close()


class SandboxSettlements(_Http):
    psp = "sandbox"
    object_types = (CHARGE, REFUND, DISPUTE)

    async def pages(self, start: datetime, end: datetime) -> AsyncIterator[list[PspRecord]]:
        params: dict[str, Any] = {
            "limit": PAGE_SIZE,
            "created[gte]": math.floor(start.timestamp()),
            "created[lt]": math.ceil(end.timestamp()),
        }
        while True:
            page = await self.get("/v1/transactions", params) or {}
            rows = page.get("data", [])
            if rows:
                yield [_sandbox_record(row) for row in rows]
            if not page.get("has_more") or not rows:
                return
            params["starting_after"] = rows[-1]["id"]

    async def lookup(self, object_type: str, reference: str) -> PspRecord | None:
        if object_type == CHARGE:
            charge = await self.get(f"/v1/charges/{reference}")
            if charge is None:
                return None
            return PspRecord(
                CHARGE,
                reference,
                int(charge["amount_captured"]),
                charge["currency"],
                SETTLED if charge["status"] == "captured" else charge["status"],
            )
        if object_type == DISPUTE:
            dispute = await self.get(f"/v1/disputes/{reference}")
            if dispute is None:
                return None
            return PspRecord(
                DISPUTE,
                reference,
                int(dispute["amount"]),
                dispute["currency"],
                dispute["status"],
                charge=dispute["charge"],
            )
        refund = await self.get(f"/v1/refunds/{reference}")
        if refund is None:
            return None
        return PspRecord(REFUND, reference, int(refund["amount"]), refund["currency"])


# The sandbox's transaction types, and the sign of their amounts (money out is negative).
_SANDBOX_TYPES = {CHARGE: 1, REFUND: -1, DISPUTE: -1, DISPUTE_REVERSAL: 1}


def _sandbox_record(row: dict) -> PspRecord:
    sign = _SANDBOX_TYPES.get(row["type"])
    if sign is None:  # money the ledger cannot account for: the run fails, loudly
        raise SettlementsUnavailable(f"unknown transaction type {row['type']!r}")
    charge = "" if row["type"] == CHARGE else row["charge"]
    return PspRecord(
        row["type"], row["source"], sign * int(row["amount"]), row["currency"], charge=charge
    )


class StripeSettlements(_Http):
    psp = "stripe"
    object_types = (CHARGE, REFUND)

    def authorization(self, key: str) -> str:
        return basic_auth(key)

    async def pages(self, start: datetime, end: datetime) -> AsyncIterator[list[PspRecord]]:
        since, until = start.timestamp(), end.timestamp()
        # Charges created after `since` (the one filter localstripe shares with Stripe).
        async for charges in self._listing("/v1/charges", {"created[gt]": math.floor(since) - 1}):
            records = [
                _stripe_charge(c)
                for c in charges
                if since <= c["created"] < until and c.get("captured") and c.get("paid", True)
            ]
            if records:
                yield records
        # Refunds, newest first: stop at the first one older than the period.
        async for refunds in self._listing("/v1/refunds", {}):
            records = [
                _stripe_refund(r)
                for r in refunds
                if since <= r["created"] < until and r.get("status") == "succeeded"
            ]
            if records:
                yield records
            if refunds[-1]["created"] < since:
                return

    async def _listing(self, path: str, params: dict[str, Any]) -> AsyncIterator[list[dict]]:
        params = {**params, "limit": PAGE_SIZE}
        while True:
            page = await self.get(path, params) or {}
            rows = page.get("data", [])
            if rows:
                yield rows
            if not page.get("has_more") or not rows:
                return
            params["starting_after"] = rows[-1]["id"]

    async def lookup(self, object_type: str, reference: str) -> PspRecord | None:
        if object_type == CHARGE:
            intent = await self.get(f"/v1/payment_intents/{reference}")
            if intent is None:
                return None
            received = intent.get("amount_received")
            return PspRecord(
                CHARGE,
                reference,
                int(intent["amount"] if received is None else received),
                intent["currency"],
                SETTLED if intent["status"] == "succeeded" else intent["status"],
            )
        refund = await self.get(f"/v1/refunds/{reference}")
        if refund is None:
            return None
        return PspRecord(
            REFUND,
            reference,
            int(refund["amount"]),
            refund["currency"],
            SETTLED if refund.get("status") == "succeeded" else refund.get("status", ""),
        )


def _stripe_charge(charge: dict) -> PspRecord:
    captured = charge.get("amount_captured")
    return PspRecord(
        CHARGE,
        charge.get("payment_intent") or charge["id"],
        int(charge["amount"] if captured is None else captured),
        charge["currency"],
    )


def _stripe_refund(refund: dict) -> PspRecord:
    return PspRecord(
        REFUND,
        refund["id"],
        int(refund["amount"]),
        refund["currency"],
        charge=refund.get("payment_intent") or refund.get("charge") or "",
    )
