"""Creating a card at a PSP, inside the vault boundary, over keep-alive httpx clients.
`stripe`: a PaymentMethod through the Stripe HTTP API (localstripe in dev and tests);
`sandbox`: a card at paymesh's sandbox PSP."""

from __future__ import annotations

from typing import Protocol

import httpx

from paymesh.platform.http_spans import trace_httpx
from vault_proxy_svc.cards import Card


class PspUnavailable(Exception):
    """Timeout, connection error or 5xx: worth retrying later."""


class PspRejected(Exception):
    """The PSP refused the card (4xx)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


class CardProvisioner(Protocol):
    psp: str

    async def create(self, card: Card, cvc: str | None, idempotency_key: str) -> str: ...

    async def close(self) -> None: ...


class StripeCards:
    psp = "stripe"

    def __init__(self, api_base: str, secret_key: str, timeout: float = 10.0):
        self._client = trace_httpx(
            httpx.AsyncClient(
                base_url=api_base,
                auth=(secret_key, ""),
                timeout=timeout,
                limits=httpx.Limits(max_keepalive_connections=20),
            ),
            psp=self.psp,
        )

    async def create(self, card: Card, cvc: str | None, idempotency_key: str) -> str:
        """The Stripe PaymentMethod id for `card`."""
        form = {
            "type": "card",
            "card[number]": card.number,
            "card[exp_month]": str(card.exp_month),
            "card[exp_year]": str(card.exp_year),
        }
        if cvc:
            form["card[cvc]"] = cvc
        return await _create_card(self._client, "/v1/payment_methods", idempotency_key, data=form)

    async def close(self) -> None:
        await self._client.aclose()


class SandboxCards:
    psp = "sandbox"

    def __init__(self, api_base: str, timeout: float = 10.0):
        self._client = trace_httpx(
            httpx.AsyncClient(base_url=api_base, timeout=timeout), psp=self.psp
        )

    async def create(self, card: Card, cvc: str | None, idempotency_key: str) -> str:
        body = {"number": card.number, "exp_month": card.exp_month, "exp_year": card.exp_year}
        return await _create_card(self._client, "/v1/cards", idempotency_key, json=body)

    async def close(self) -> None:
        await self._client.aclose()


async def _create_card(client: httpx.AsyncClient, path: str, idempotency_key: str, **body) -> str:
    """POSTs a card to a PSP; its id, or PspUnavailable (retry) / PspRejected (the card)."""
    try:
        response = await client.post(path, headers={"Idempotency-Key": idempotency_key}, **body)
    except httpx.TimeoutException:
        raise PspUnavailable("timeout") from None
    except httpx.ConnectError:
        raise PspUnavailable("connection") from None
    except httpx.HTTPError:
        raise PspUnavailable("connection_lost") from None
    if response.status_code >= 500:
        raise PspUnavailable(f"http_{response.status_code}")
    answer = response.json()
    if response.status_code >= 400:
        error = answer.get("error", {})
        # PSPs' messages never echo the number; keep only code and message anyway.
        raise PspRejected(error.get("code") or "card_rejected", error.get("message", ""))
    return answer["id"]
