"""Creating a card at a PSP, inside the vault boundary, over keep-alive httpx clients.
`stripe`: a PaymentMethod through the Stripe HTTP API (localstripe in dev and tests);
`sandbox`: a card at paymesh's sandbox PSP.

A card is created with its CVC while the vault still holds it (minutes after tokenization),
and without one later: as a merchant-initiated card-on-file when a PSP lost the card
(`card_on_file`). The sandbox records that flag; a Stripe PaymentMethod has no such field
(the merchant-initiated mark belongs on a charge, `off_session`), and localstripe, unlike
Stripe, refuses any card without a CVC."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import httpx

from paymesh.platform.http_spans import trace_httpx
from paymesh.platform.secrets import RotatingSecret
from vault_proxy_svc.cards import Card


class PspUnavailable(Exception):
    """Timeout, connection error or 5xx: worth retrying later."""


class PspRejected(Exception):
    """The PSP refused the card (4xx). Only `code` `card_declined` is an issuer's decline
    (`decline_code`, `decline_type` hard or soft, when the PSP said)."""

    def __init__(self, code: str, message: str, decline_code: str = "", decline_type: str = ""):
        super().__init__(message)
        self.code = code
        self.decline_code = decline_code
        self.decline_type = decline_type


class CardProvisioner(Protocol):
    psp: str

    async def create(
        self, card: Card, cvc: str | None, idempotency_key: str, card_on_file: bool = False
    ) -> str: ...

    async def close(self) -> None: ...


class StripeCards:
    psp = "stripe"

    def __init__(self, api_base: str, api_key: RotatingSecret | str, timeout: float = 10.0):
        self._client = trace_httpx(
            httpx.AsyncClient(
                base_url=api_base,
                timeout=timeout,
                limits=httpx.Limits(max_keepalive_connections=20),
            ),
            psp=self.psp,
        )
        self._key = RotatingSecret.fixed(api_key) if isinstance(api_key, str) else api_key

    async def create(
        self, card: Card, cvc: str | None, idempotency_key: str, card_on_file: bool = False
    ) -> str:
        """The Stripe PaymentMethod id for `card` (`card_on_file` changes nothing here)."""
        form = {
            "type": "card",
            "card[number]": card.number,
            "card[exp_month]": str(card.exp_month),
            "card[exp_year]": str(card.exp_year),
        }
        if cvc:
            form["card[cvc]"] = cvc
        return await _create_card(
            self._client,
            "/v1/payment_methods",
            idempotency_key,
            self._key,
            lambda key: httpx.BasicAuth(key, ""),
            data=form,
        )

    async def close(self) -> None:
        await self._client.aclose()


class SandboxCards:
    psp = "sandbox"

    def __init__(self, api_base: str, api_key: RotatingSecret | None = None, timeout: float = 10.0):
        self._client = trace_httpx(
            httpx.AsyncClient(base_url=api_base, timeout=timeout), psp=self.psp
        )
        self._key = api_key

    async def create(
        self, card: Card, cvc: str | None, idempotency_key: str, card_on_file: bool = False
    ) -> str:
        body: dict = {"number": card.number, "exp_month": card.exp_month, "exp_year": card.exp_year}
        if cvc:
            body["cvc"] = cvc
        if card_on_file:
            body["card_on_file"] = "merchant_initiated"
        return await _create_card(
            self._client, "/v1/cards", idempotency_key, self._key, _Bearer, json=body
        )

    async def close(self) -> None:
        await self._client.aclose()


class _Bearer(httpx.Auth):
    def __init__(self, key: str):
        self._header = f"Bearer {key}"

    def auth_flow(self, request):
        request.headers["Authorization"] = self._header
        yield request


async def _create_card(
    client: httpx.AsyncClient,
    path: str,
    idempotency_key: str,
    api_key: RotatingSecret | None,
    auth: Callable[[str], httpx.Auth],
    **body,
) -> str:
    """POSTs a card to a PSP; its id, or PspUnavailable (retry) / PspRejected (the card). A
    refused API key (401: nothing was processed) is read again from its source and, when it
    changed, the card is sent once more with the new one."""
    refused = api_key.value if api_key is not None else ""
    response = await _post_card(client, path, idempotency_key, api_key, auth, **body)
    if response.status_code == 401 and api_key is not None and await api_key.reread(seen=refused):
        response = await _post_card(client, path, idempotency_key, api_key, auth, **body)
    return _card_id(response)


async def _post_card(
    client: httpx.AsyncClient,
    path: str,
    idempotency_key: str,
    api_key: RotatingSecret | None,
    auth: Callable[[str], httpx.Auth],
    **body,
) -> httpx.Response:
    extra = {"auth": auth(api_key.value)} if api_key is not None else {}
    try:
        return await client.post(
            path, headers={"Idempotency-Key": idempotency_key}, **extra, **body
        )
    except httpx.TimeoutException:
        raise PspUnavailable("timeout") from None
    except httpx.ConnectError:
        raise PspUnavailable("connection") from None
    except httpx.HTTPError:
        raise PspUnavailable("connection_lost") from None


def _card_id(response: httpx.Response) -> str:
    if response.status_code >= 500:
        raise PspUnavailable(f"http_{response.status_code}")
    try:
        answer = response.json()
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise PspUnavailable(f"unreadable_answer_http_{response.status_code}")
    if response.status_code >= 400:
        error = answer.get("error")
        error = error if isinstance(error, dict) else {}
        # PSPs' messages never echo the number; keep only codes and message anyway.
        raise PspRejected(
            error.get("code") or "card_rejected",
            error.get("message", ""),
            decline_code=error.get("decline_code") or "",
            decline_type=error.get("type") if error.get("type") in ("hard", "soft") else "",
        )
    return answer["id"]
