"""PSP connectors behind one interface: `sandbox` (paymesh's simulator) and `stripe` (the
Stripe HTTP API; localstripe in dev and tests). Each keeps one keep-alive aiohttp session (a
quarter of httpx's CPU per call: 0.19 against 0.75 ms, issue 9) and reads every answer into
paymesh's outcome taxonomy (`gateway_svc.domain.outcomes`): an authorization, a decline, the
customer's action the PSP waits for (3-D Secure), a refusal, proof that nothing happened
(`NotProcessed`), a card reference the PSP does not know, or an `OutcomeUnknown`. A payment
the PSP reports (an authorization's answer, one found by its key, one looked up by its
reference) is read the same way. Each PSP's error answers are read by a pure function
(`sandbox_error`, `stripe_error`), unit-tested answer by answer."""

from __future__ import annotations

import base64
import time
import urllib.request
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiohttp

from gateway_svc.domain.outcomes import (
    AuthenticationFailed,
    Authorization,
    CardUnknownAtPsp,
    CustomerActionRequired,
    NotProcessed,
    OutcomeUnknown,
    PspDeclined,
    PspRefused,
)
from gateway_svc.metrics import PSP_CALL_ERRORS, PSP_CALLS, PSP_REQUEST_DURATION
from paymesh.platform.http_spans import aiohttp_tracing
from paymesh.platform.loop_lag import LoopLag
from paymesh.platform.secrets import RotatingSecret

# Errors raised before a request left this process: the PSP never saw it. (aiohttp's connect
# timeout covers the wait for a pooled connection too.)
_NEVER_SENT = (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)
# A timeout is the PSP's fault only if our loop was not itself this late for a good part of it.
_OVERLOAD_SHARE = 0.25


class Connector(Protocol):
    name: str

    async def authorize(
        self,
        *,
        card: str,
        amount: int,
        currency: str,
        capture: bool,
        idempotency_key: str,
        return_url: str = "",
    ) -> Authorization:
        """Raises PspDeclined, CustomerActionRequired (the customer is sent on to the PSP,
        and back to `return_url` where the PSP takes one), or a PSP failure."""
        ...

    async def retrieve(self, reference: str) -> Authorization:
        """The payment `reference` as the PSP tells it now, read as `authorize` reads its
        answer: how a customer's authentication ended, if it did."""
        ...

    async def capture(self, reference: str, amount: int, idempotency_key: str) -> int:
        """Captures; returns the amount the PSP reports captured."""
        ...

    async def void(self, reference: str, idempotency_key: str) -> None: ...

    async def refund(self, reference: str, amount: int, idempotency_key: str) -> str: ...

    async def find(self, idempotency_key: str) -> Authorization | None:
        """The authorization made under the key, None if there is none; raises as
        `authorize` does for one that was declined or waits for the customer."""
        ...

    async def close(self) -> None: ...


class _Unauthorized(Exception):
    """The PSP refused the API key (401): nothing was processed."""

    def __init__(self, key: str, body: Any):
        self.key = key
        self.body = body if isinstance(body, dict) else {}


class HttpConnector:
    """Shared HTTP plumbing: timing, the reading of failures, metrics, and the API key: read
    again when the PSP refuses it (401), and the call sent once more with the new key (a 401
    processed nothing)."""

    name = "http"
    # Whether this PSP documents its 5xx answers as "nothing was processed".
    five_hundreds_process_nothing = False

    def __init__(
        self,
        api_base: str,
        timeout: float,
        loop_lag: LoopLag | None = None,
        api_key: RotatingSecret | str | None = None,
    ):
        self._client = _session(api_base, timeout, trace_configs=aiohttp_tracing(psp=self.name))
        self._proxy = _env_proxy(api_base)
        self._api_base = api_base
        self._timeout = timeout
        self._loop_lag = loop_lag
        self._api_key = RotatingSecret.fixed(api_key) if isinstance(api_key, str) else api_key
        self._authorization = ("", "")  # (key, its header): computed once per key

    def authorization(self, key: str) -> str:
        """The Authorization header for `key`."""
        raise NotImplementedError

    def _auth_headers(self) -> tuple[str, dict[str, str]]:
        if self._api_key is None:
            return "", {}
        key = self._api_key.value
        if self._authorization[0] != key:
            self._authorization = (key, self.authorization(key))
        return key, {"Authorization": self._authorization[1]}

    async def _call(
        self, operation: str, method: str, path: str, idempotency_key: str | None = None, **kw
    ) -> dict[str, Any]:
        try:
            return await self._call_once(operation, method, path, idempotency_key, **kw)
        except _Unauthorized as refused:
            if self._api_key is None or not await self._api_key.reread(seen=refused.key):
                raise self.error_of(operation, 401, refused.body) from None
        try:
            return await self._call_once(operation, method, path, idempotency_key, **kw)
        except _Unauthorized as refused:
            raise self.error_of(operation, 401, refused.body) from None

    async def _call_once(
        self, operation: str, method: str, path: str, idempotency_key: str | None = None, **kw
    ) -> dict[str, Any]:
        key, headers = self._auth_headers()
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        PSP_CALLS.labels(self.name, operation).inc()
        started = time.perf_counter()
        sent_at = time.monotonic()
        try:
            # A redirect is not followed: aiohttp would resend a POST as a GET.
            async with self._client.request(
                method, path, headers=headers, allow_redirects=False, proxy=self._proxy, **kw
            ) as response:
                status = response.status
                body = await response.json(content_type=None) if status < 500 else None
            if status == 401 and self._api_key is not None:
                raise _Unauthorized(key, body)
        except _NEVER_SENT as error:
            self._count(operation, "connection")
            raise NotProcessed(f"{self.name}: {type(error).__name__}") from None
        except TimeoutError:
            if self._overloaded_since(sent_at):
                # Our own loop was late, not the PSP: no PSP error (the breaker ignores it too).
                raise OutcomeUnknown(f"{self.name}: timeout (local)", psp_at_fault=False) from None
            self._count(operation, "timeout")
            raise OutcomeUnknown(f"{self.name}: timeout") from None
        except (aiohttp.ClientError, ValueError) as error:
            # The request went out; its answer did not come back whole.
            self._count(operation, "connection_lost")
            raise OutcomeUnknown(f"{self.name}: {type(error).__name__}") from None
        finally:
            PSP_REQUEST_DURATION.labels(self.name, operation).observe(time.perf_counter() - started)
        if status >= 500:
            self._count(operation, f"http_{status}")
            failure = NotProcessed if self.five_hundreds_process_nothing else OutcomeUnknown
            raise failure(f"{self.name}: http_{status}")
        if not isinstance(body, dict) or 300 <= status < 400:
            # An answer we cannot read (empty, not an object, a redirect): it may have worked.
            self._count(operation, "unreadable_answer")
            raise OutcomeUnknown(f"{self.name}: unreadable answer (http_{status})")
        if status >= 400:
            raise self.error_of(operation, status, body)
        return body

    def _overloaded_since(self, sent_at: float) -> bool:
        if self._loop_lag is None:
            return False
        return self._loop_lag.worst_since(sent_at) > self._timeout * _OVERLOAD_SHARE

    def _count(self, operation: str, reason: str) -> None:
        """A failure of the PSP's own (never a decline or a refusal: those are answers)."""
        PSP_CALL_ERRORS.labels(self.name, operation, reason).inc()

    def error_of(self, operation: str, status: int, body: dict[str, Any]) -> Exception:
        """The outcome a 4xx answer to `operation` stands for."""
        raise NotImplementedError

    async def close(self) -> None:
        await self._client.close()


def _env_proxy(api_base: str) -> str | None:
    """The proxy HTTP_PROXY / HTTPS_PROXY / NO_PROXY name for the PSP, as httpx honoured them,
    read once: aiohttp's trust_env reads them (and ~/.netrc) on every call, 0.6 ms each.
    (SSL_CERT_FILE needs nothing here: OpenSSL reads it itself.)"""
    parts = urlsplit(api_base)
    if not parts.hostname or urllib.request.proxy_bypass(parts.hostname):
        return None
    return urllib.request.getproxies().get(parts.scheme)


def basic_auth(secret_key: str) -> str:
    """Stripe's API key as HTTP basic credentials (the key is the user, no password)."""
    return "Basic " + base64.b64encode(f"{secret_key}:".encode()).decode()


def _session(api_base: str, timeout: float, **kw) -> aiohttp.ClientSession:
    """A keep-alive session; `timeout` bounds the connection (with the wait for a pooled one)
    and each wait for the answer's bytes, as httpx's timeout did."""
    if urlsplit(api_base).path not in ("", "/"):
        # The connectors' paths are absolute (/v1/…): a base path would be dropped, not kept.
        raise ValueError(f"a PSP API base must be scheme://host[:port], got {api_base!r}")
    return aiohttp.ClientSession(
        base_url=api_base,
        timeout=aiohttp.ClientTimeout(total=None, connect=timeout, sock_read=timeout),
        connector=aiohttp.TCPConnector(limit=100, keepalive_timeout=30),
        **kw,
    )


def _error(body: dict[str, Any]) -> dict[str, Any]:
    error = body.get("error")
    return error if isinstance(error, dict) else {}


def _decline(psp: str, error: dict[str, Any], kind: str) -> PspDeclined:
    return PspDeclined(
        error.get("decline_code") or "generic_decline",
        error.get("message") or "Your card was declined.",
        kind,
        psp=psp,
    )


def sandbox_error(operation: str, status: int, body: dict[str, Any]) -> Exception:
    """The sandbox's 4xx answers: a decline (its type says hard or soft), a charge of a card it
    does not hold (404 `resource_missing` on `card`), or a refusal."""
    error = _error(body)
    if error.get("code") == "card_declined":
        kind = error.get("type")
        return _decline("sandbox", error, kind if kind in ("hard", "soft") else "hard")
    if (
        operation == "authorize"
        and error.get("code") == "resource_missing"
        and error.get("param") == "card"
    ):
        return CardUnknownAtPsp("sandbox")
    return PspRefused(error.get("code") or f"http_{status}")


# Stripe's decline codes worth a later retry.
_STRIPE_SOFT_DECLINES = ("insufficient_funds", "try_again_later")


def stripe_decline_kind(error: dict[str, Any]) -> str:
    if error.get("type") in ("hard", "soft"):
        return error["type"]
    return "soft" if error.get("decline_code") in _STRIPE_SOFT_DECLINES else "hard"


def stripe_error(operation: str, status: int, body: dict[str, Any]) -> Exception:
    """Stripe's 4xx answers: a decline (`card_declined`, hard or soft by its decline code), a
    charge of a PaymentMethod it does not hold (Stripe: `resource_missing` on
    `payment_method`; localstripe: a bare 404, the payment method being the only object a
    charge names), or a refusal."""
    error = _error(body)
    if error.get("code") == "card_declined":
        return _decline("stripe", error, stripe_decline_kind(error))
    if operation == "authorize" and (
        (error.get("code") == "resource_missing" and error.get("param") == "payment_method")
        or (status == 404 and error.get("type") == "invalid_request_error")
    ):
        return CardUnknownAtPsp("stripe")
    return PspRefused(error.get("code") or f"http_{status}")


class SandboxConnector(HttpConnector):
    name = "sandbox"
    five_hundreds_process_nothing = True  # the simulator's documented contract

    def authorization(self, key):
        return f"Bearer {key}"

    def error_of(self, operation, status, body):
        return sandbox_error(operation, status, body)

    async def authorize(self, *, card, amount, currency, capture, idempotency_key, return_url=""):
        body = {"card": card, "amount": amount, "currency": currency, "capture": capture}
        if return_url:  # where the sandbox's 3-D Secure page sends the customer back
            body["return_url"] = return_url
        charge = await self._call("authorize", "POST", "/v1/charges", idempotency_key, json=body)
        return self._read(charge)

    async def retrieve(self, reference):
        return self._read(await self._call("retrieve", "GET", f"/v1/charges/{reference}"))

    def _read(self, charge: dict[str, Any]) -> Authorization:
        status = charge.get("status")
        if status == "requires_action":
            url = ((charge.get("next_action") or {}).get("redirect_to_url") or {}).get("url")
            raise CustomerActionRequired(self.name, charge["id"], url or "")
        if status == "failed":
            raise AuthenticationFailed()
        if status == "canceled":  # voided while it waited for its customer: nothing held
            raise PspRefused("charge_canceled")
        return Authorization(charge["id"], status == "captured")

    async def capture(self, reference, amount, idempotency_key):
        charge = await self._call(
            "capture",
            "POST",
            f"/v1/charges/{reference}/capture",
            idempotency_key,
            json={"amount": amount},
        )
        return int(charge["amount_captured"])

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
            return self._read(charge)
        return None


class StripeConnector(HttpConnector):
    name = "stripe"

    def __init__(
        self,
        api_base: str,
        api_key: RotatingSecret | str,
        timeout: float,
        loop_lag: LoopLag | None = None,
    ):
        super().__init__(api_base, timeout, loop_lag, api_key)

    def authorization(self, key):
        return basic_auth(key)

    def error_of(self, operation, status, body):
        return stripe_error(operation, status, body)

    async def authorize(self, *, card, amount, currency, capture, idempotency_key, return_url=""):
        # `return_url` is not sent: localstripe refuses the parameter (400), so the customer
        # comes back from Stripe's authentication page through the merchant's own flow.
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
        return self._read(intent)

    async def retrieve(self, reference):
        return self._read(await self._call("retrieve", "GET", f"/v1/payment_intents/{reference}"))

    def _read(self, intent: dict[str, Any]) -> Authorization:
        """A Stripe PaymentIntent as an outcome. requires_capture and succeeded hold money;
        requires_action waits for the customer; requires_payment_method failed."""
        status = intent.get("status")
        if status in ("succeeded", "requires_capture"):
            return Authorization(intent["id"], status == "succeeded")
        if status in ("requires_action", "requires_source_action"):
            raise CustomerActionRequired(self.name, intent["id"], self._action_url(intent))
        if status == "requires_payment_method":
            error = intent.get("last_payment_error") or {}
            if error.get("code") == "payment_intent_authentication_failure":
                raise AuthenticationFailed()
            raise _decline("stripe", error, stripe_decline_kind(error))
        if status == "canceled":  # canceled while it waited for its customer: nothing held
            raise PspRefused("payment_intent_canceled")
        # processing (an asynchronous payment method), or a status we do not read: the
        # payment may still move money; the recovery sweep asks again.
        raise OutcomeUnknown(f"stripe: payment intent {status}", psp_at_fault=False)

    def _action_url(self, intent: dict[str, Any]) -> str:
        """Where the customer authenticates: Stripe's redirect (given a return_url), else the
        page Stripe.js would open. localstripe has neither (its `use_stripe_sdk` names no
        page): the URL of its authentication call stands for the page there (POST it with
        `success=true|false`, as localstripe's Stripe.js does)."""
        action = intent.get("next_action") or {}
        url = (action.get("redirect_to_url") or {}).get("url") or (
            action.get("use_stripe_sdk") or {}
        ).get("stripe_js")
        if isinstance(url, str) and url.startswith(("https://", "http://")):
            return url
        secret = intent.get("client_secret") or ""
        return (
            f"{self._api_base}/v1/payment_intents/{intent['id']}/_authenticate"
            f"?client_secret={secret}"
        )

    async def capture(self, reference, amount, idempotency_key):
        intent = await self._call(
            "capture",
            "POST",
            f"/v1/payment_intents/{reference}/capture",
            idempotency_key,
            data={"amount_to_capture": amount},
        )
        return int(intent.get("amount_received") or amount)

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
            # paymesh's refund id rides along, so the refund's webhooks name it
            # (gateway_svc.domain.psp_events: a refund is never counted twice).
            data={
                "payment_intent": reference,
                "amount": amount,
                "metadata[paymesh_refund]": idempotency_key,
            },
        )
        return refund["id"]

    async def find(self, idempotency_key):
        listing = await self._call("find", "GET", "/v1/payment_intents", params={"limit": 100})
        for intent in listing.get("data", []):
            if (intent.get("metadata") or {}).get("paymesh_attempt") == idempotency_key:
                return self._read(intent)
        return None
