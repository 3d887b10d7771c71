"""PSP connectors behind one interface: `sandbox` (paymesh's simulator) and `stripe` (the
Stripe HTTP API; localstripe in dev and tests). Each keeps one keep-alive httpx client and
maps the PSP's answers into paymesh's taxonomy: a decline (never retried, never failed
over), a retryable failure (timeout, connection error, 5xx), or any other PSP error."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from gateway_svc.metrics import PSP_CALL_ERRORS, PSP_REQUEST_DURATION


@dataclass(frozen=True)
class Authorization:
    reference: str
    captured: bool


class PspDeclined(Exception):
    def __init__(self, decline_code: str, message: str, kind: str):
        super().__init__(message)
        self.decline_code = decline_code
        self.message = message
        self.kind = kind  # hard: do not retry this card; soft: a later retry may pass


class PspRetryable(Exception):
    """Timeout, connection error or 5xx: the same call may succeed later or elsewhere."""


class PspFailed(Exception):
    """The PSP refused the request itself (4xx other than a decline)."""


class Connector(Protocol):
    name: str

    async def authorize(
        self, *, card: str, amount: int, currency: str, capture: bool, idempotency_key: str
    ) -> Authorization: ...

    async def capture(self, reference: str, amount: int, idempotency_key: str) -> None: ...

    async def void(self, reference: str, idempotency_key: str) -> None: ...

    async def refund(self, reference: str, amount: int, idempotency_key: str) -> str: ...

    async def find(self, idempotency_key: str) -> Authorization | None: ...

    async def close(self) -> None: ...


class HttpConnector:
    """Shared HTTP plumbing: timing, error mapping, metrics."""

    name = "http"

    def __init__(self, client: httpx.AsyncClient):
        self._client = client

    async def _call(
        self, operation: str, method: str, path: str, idempotency_key: str | None = None, **kw
    ) -> dict[str, Any]:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        started = time.perf_counter()
        try:
            response = await self._client.request(method, path, headers=headers, **kw)
        except httpx.TimeoutException:
            PSP_CALL_ERRORS.labels(self.name, "timeout").inc()
            raise PspRetryable("timeout") from None
        except httpx.HTTPError as error:
            PSP_CALL_ERRORS.labels(self.name, "connection").inc()
            raise PspRetryable(type(error).__name__) from None
        finally:
            PSP_REQUEST_DURATION.labels(self.name, operation).observe(time.perf_counter() - started)
        if response.status_code >= 500:
            PSP_CALL_ERRORS.labels(self.name, f"http_{response.status_code}").inc()
            raise PspRetryable(f"http_{response.status_code}")
        body = response.json()
        if response.status_code >= 400:
            self._raise_for(body)
        return body

    def _raise_for(self, body: dict[str, Any]) -> None:
        error = body.get("error", {})
        if error.get("code") == "card_declined":
            PSP_CALL_ERRORS.labels(self.name, "card_declined").inc()
            raise PspDeclined(
                error.get("decline_code") or "generic_decline",
                error.get("message") or "Your card was declined.",
                error.get("type") if error.get("type") in ("hard", "soft") else "hard",
            )
        PSP_CALL_ERRORS.labels(self.name, error.get("code") or "rejected").inc()
        raise PspFailed(error.get("code") or "psp_error")

    async def close(self) -> None:
        await self._client.aclose()


class SandboxConnector(HttpConnector):
    name = "sandbox"

    def __init__(self, api_base: str, timeout: float):
        super().__init__(httpx.AsyncClient(base_url=api_base, timeout=timeout))

    async def authorize(self, *, card, amount, currency, capture, idempotency_key):
        charge = await self._call(
            "authorize",
            "POST",
            "/v1/charges",
            idempotency_key,
            json={"card": card, "amount": amount, "currency": currency, "capture": capture},
        )
        return Authorization(charge["id"], charge["status"] == "captured")

    async def capture(self, reference, amount, idempotency_key):
        await self._call(
            "capture",
            "POST",
            f"/v1/charges/{reference}/capture",
            idempotency_key,
            json={"amount": amount},
        )

    async def void(self, reference, idempotency_key):
        await self._call("void", "POST", f"/v1/charges/{reference}/void", idempotency_key, json={})

    async def refund(self, reference, amount, idempotency_key):
        refund = await self._call(
            "refund",
            "POST",
            "/v1/refunds",
            idempotency_key,
            json={"charge": reference, "amount": amount},
        )
        return refund["id"]

    async def find(self, idempotency_key):
        found = await self._call(
            "find", "GET", "/v1/charges", params={"idempotency_key": idempotency_key}
        )
        for charge in found["data"]:
            return Authorization(charge["id"], charge["status"] == "captured")
        return None


class StripeConnector(HttpConnector):
    name = "stripe"

    def __init__(self, api_base: str, secret_key: str, timeout: float):
        super().__init__(
            httpx.AsyncClient(base_url=api_base, auth=(secret_key, ""), timeout=timeout)
        )

    def _raise_for(self, body: dict[str, Any]) -> None:
        error = body.get("error", {})
        if error.get("code") == "card_declined" and error.get("type") not in ("hard", "soft"):
            # Stripe's decline codes: insufficient_funds and the like are worth a later retry.
            soft = error.get("decline_code") in ("insufficient_funds", "try_again_later")
            error = {**error, "type": "soft" if soft else "hard"}
        super()._raise_for({"error": error})

    async def authorize(self, *, card, amount, currency, capture, idempotency_key):
        intent = await self._call(
            "authorize",
            "POST",
            "/v1/payment_intents",
            idempotency_key,
            data={
                "amount": amount,
                "currency": currency,
                "payment_method": card,
                "confirm": "true",
                "capture_method": "automatic" if capture else "manual",
                "metadata[paymesh_attempt]": idempotency_key,
            },
        )
        if intent["status"] == "requires_payment_method":
            error = intent.get("last_payment_error") or {}
            raise PspDeclined(
                error.get("decline_code") or "generic_decline",
                error.get("message") or "Your card was declined.",
                "hard",
            )
        return Authorization(intent["id"], intent["status"] == "succeeded")

    async def capture(self, reference, amount, idempotency_key):
        await self._call(
            "capture",
            "POST",
            f"/v1/payment_intents/{reference}/capture",
            idempotency_key,
            data={"amount_to_capture": amount},
        )

    async def void(self, reference, idempotency_key):
        await self._call(
            "void", "POST", f"/v1/payment_intents/{reference}/cancel", idempotency_key, data={}
        )

    async def refund(self, reference, amount, idempotency_key):
        refund = await self._call(
            "refund",
            "POST",
            "/v1/refunds",
            idempotency_key,
            data={"payment_intent": reference, "amount": amount},
        )
        return refund["id"]

    async def find(self, idempotency_key):
        listing = await self._call("find", "GET", "/v1/payment_intents", params={"limit": 100})
        for intent in listing.get("data", []):
            if (intent.get("metadata") or {}).get("paymesh_attempt") == idempotency_key:
                return Authorization(intent["id"], intent["status"] == "succeeded")
        return None
