"""The sandbox PSP: an in-repo payment processor simulator, run as its own HTTP server.

    python -m dev.sandbox_psp --port 8430

Stripe's test cards decide outcomes (4242424242424242 succeeds; 4000000000000002
generic_decline, hard; 4000000000009995 insufficient_funds, soft; 4000000000000119
processing_error, retryable 500; 4000002500003155 and 4000002760003184 need the customer's
3-D Secure authentication on every charge, as localstripe has them). Every POST honours an
Idempotency-Key: the same key gets the same answer and never a second charge.
GET /v1/transactions lists settled money movements for reconciliation, oldest first, in pages;
GET /_stats counts charges and requests (in all, and by operation); GET /_declines lists every
decline made ({data: [{idempotency_key, decline_code, type}]}): what the PSP really declined.

Cards live in memory only: a restarted sandbox holds none, and a charge of a card it does not
hold is a 404 `resource_missing` on `card` (nothing is charged). `POST /_forget_cards` drops
every card it holds, as a restart does (charges, refunds and idempotency keys stay), and
answers {forgotten: n}. A card may be created without a CVC, and marked as a merchant-initiated
card-on-file (`card_on_file: "merchant_initiated"`, as paymesh's vault re-creates a card a PSP
lost); its charges say so (`card_on_file`).

Runtime knobs, `POST /_knobs`, lie the way real PSPs do (each rate from 0 to 1):
  latency_ms, latency_jitter_ms  every answer waits latency_ms plus up to latency_jitter_ms
  error_rate      a 503 before anything is processed (documented: a 5xx processed nothing)
  timeout_rate    the request hangs before anything is processed, past any client deadline
  ambiguous_rate  the operation is applied in full (and recorded in /v1/transactions), then
                  the answer hangs past any client deadline: the client cannot tell what
                  happened until it asks again with the same Idempotency-Key
  operations      the operations the knobs apply to: card, authorize, capture, void, refund
                  (empty or absent: all of them)
  soft_declines   {"<amount>": n}: the next n charges of that amount are declined as
                  insufficient_funds (soft), then they pass again: a customer who tops up

3-D Secure: a charge of such a card answers 200 with `status: requires_action` and
`next_action: {type: redirect_to_url, redirect_to_url: {url}}`, holding nothing. The customer
stands at that page:
  GET  /3ds/{charge}             the authentication page (two buttons)
  POST /3ds/{charge}/complete    {"result": "succeed" | "fail"} (JSON, or the page's form,
                                 which is sent back to the charge's return_url if it had one)
after which the charge is captured (or authorized, for capture: false) or failed
(`failure_code: authentication_failed`), and announced. A void cancels a charge still waiting.

Webhooks: every capture, refund and dispute (made through the API or at the PSP's own
"dashboard" below), and every end of a 3-D Secure authentication, is announced to
SANDBOX_WEBHOOK_URL as a Stripe-like event {id, type, created, data: {object}}
(charge.captured, charge.authorized, charge.failed, charge.refunded,
charge.dispute.created, charge.dispute.closed), signed as Stripe signs: `Sandbox-Signature:
t=…,v1=<hex HMAC-SHA256 of "{t}.{body}">` with SANDBOX_WEBHOOK_SECRET (or
WEBHOOK_SANDBOX_SECRET).
Events are sent as they happen, several at once (the events of one charge one after the
other, in order). A delivery that is not answered 2xx is sent again (8 attempts, from 0.5 s
apart, doubling).
Webhook knobs (`POST /_knobs`):
  webhook_copies  every event is sent this many times (default 1)
  webhook_hold    true: events wait until `POST /_webhooks/flush`
  webhook_order   in_order | reverse | shuffle: the order a flush sends held events in
  POST /_dashboard/charges/{id}/capture {amount?} | /refund {amount} | /dispute {amount?,
       reason?}   operations made at the PSP, not through its API (they announce themselves)
  POST /_dashboard/disputes/{id}/close {status: won|lost}   the bank decides a dispute
  A dispute ({id: du_…, object: dispute, charge, amount, currency, reason (default
  fraudulent), status, created, evidence_details: {due_by: a week after it opened}}) is the
  customer's bank taking a captured charge's money back, one per charge: it opens
  `needs_response` (amount: 1 to the amount captured, all of it by default), and `/close`
  makes it `won` or `lost`. As Stripe's balance transactions do, the opening withdraws the
  amount (a `dispute` transaction, negative) and a won dispute reinstates it (a
  `dispute_reversal` transaction, positive); a lost one moves
  nothing more.
  POST /_dashboard/charges/{id}/alter {amount?, currency?}   the PSP's books change a settled
       charge's amount or currency (and its transaction's) without any event: a PSP's error
       that only reconciliation can find
  POST /_dashboard/charges/{id}/forget   the PSP loses a charge: it, its refunds, disputes
       and transactions are gone from every listing and lookup, without any event (a record
       lost at the PSP)
  GET  /_webhooks  every delivery attempt: {data: [{event, type, status, reason, attempt,
       sent_at}]} (reason: an error's ErrorInfo reason; sent_at: when the attempt was sent,
       Unix time in seconds)

API keys: with SANDBOX_API_KEYS set (comma-separated), every /v1/ call must carry
`Authorization: Bearer <one of them>` or is answered 401 `invalid_api_key` (the key named by
its last 4 characters), as Stripe answers a rolled key; `POST /_keys {api_keys: [...]}` rolls
them at runtime (empty: any caller, the default). GET /_stats counts refusals (`unauthorized`).

API (JSON in and out):
  POST /v1/cards                 {number, exp_month, exp_year, cvc?, card_on_file?}
                                 -> {id: card_…}
  POST /v1/charges               {card, amount, currency, capture, return_url?} -> charge
                                 (captured, authorized or requires_action) | 402 decline
                                 | 404 resource_missing (param card: no such card)
  GET  /v1/charges?idempotency_key=K  -> {data: [charge]}   (find a charge after a crash;
                                        without K, every charge: the PSP's ledger)
  GET  /v1/charges/{id}          the charge, or 404
  GET  /v1/refunds/{id}          the refund {id, charge, amount, currency, created}, or 404
  GET  /v1/disputes/{id}         the dispute, or 404
  GET  /v1/transactions?limit=&starting_after=&created[gte]=&created[lt]=
                                 settled money movements, oldest first: {data: [{id: txn_…,
                                 type: charge|refund|dispute|dispute_reversal, source:
                                 ch_…|rf_…|du_…, charge, amount (negative for a refund or a
                                 dispute), currency, created}], has_more};
                                 limit 1 to 100 (none: all), starting_after a txn id
  POST /v1/charges/{id}/capture  {amount?}
  POST /v1/charges/{id}/void
  POST /v1/refunds               {charge, amount}
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import heapq
import hmac
import html
import http.client
import json
import os
import random
import secrets
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

DECLINES = {
    "4000000000000002": ("generic_decline", "hard", "Your card was declined."),
    "4000000000009995": ("insufficient_funds", "soft", "Your card has insufficient funds."),
}
PROCESSING_ERROR = "4000000000000119"
LOOKUPS = ("charges", "refunds", "disputes")
EVIDENCE_DAYS = 7  # a dispute's evidence_details.due_by: its opening + a week
THREE_D_SECURE = ("4000002500003155", "4000002760003184")
THREE_D_SECURE_RESULTS = ("succeed", "fail")
HANG_SECONDS = 30.0  # longer than any client deadline
RATE_KNOBS = ("latency_ms", "latency_jitter_ms", "error_rate", "timeout_rate", "ambiguous_rate")
DEFAULT_KNOBS: dict[str, Any] = {
    **{name: 0.0 for name in RATE_KNOBS},
    "operations": [],
    "soft_declines": {},
    "webhook_copies": 1,
    "webhook_hold": False,
    "webhook_order": "in_order",
}
WEBHOOK_ORDERS = ("in_order", "reverse", "shuffle")
WEBHOOK_ATTEMPTS = 8
WEBHOOK_LANES = 16  # events of different charges are sent side by side, as PSPs do: enough
# lanes to keep up with the charges of a saturated machine (4 fell behind a rebill run: two
# thirds of its webhooks arrived after the last renewal, and the run did not pay for them)
DEV_WEBHOOK_SECRET = "whsec_paymesh_dev_sandbox"  # noqa: S105 - webhook_svc's dev default


def operation_of(path: str) -> str:
    """The operation a POST path performs, as the `operations` knob names it."""
    parts = path.strip("/").split("/")
    if parts == ["v1", "charges"]:
        return "authorize"
    if parts[:2] == ["v1", "charges"] and len(parts) == 4:
        return parts[3]  # capture | void
    return {"cards": "card", "refunds": "refund"}.get(parts[-1], "other")


def parse_knobs(body: dict) -> dict[str, Any]:
    """The knobs a POST /_knobs sets; ValueError on anything else."""
    knobs: dict[str, Any] = {}
    for name, value in body.items():
        if name == "operations":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ValueError("operations must be a list of names")
            knobs[name] = value
        elif name == "soft_declines":
            if not isinstance(value, dict) or not all(
                str(k).isdigit() and isinstance(n, int) and n >= 0 for k, n in value.items()
            ):
                raise ValueError('soft_declines must map amounts to counts: {"1000": 2}')
            knobs[name] = {str(k): n for k, n in value.items()}
        elif name == "webhook_copies":
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 100:
                raise ValueError("webhook_copies must be 1 to 100")
            knobs[name] = value
        elif name == "webhook_hold":
            if not isinstance(value, bool):
                raise ValueError("webhook_hold must be true or false")
            knobs[name] = value
        elif name == "webhook_order":
            if value not in WEBHOOK_ORDERS:
                raise ValueError(f"webhook_order must be one of {', '.join(WEBHOOK_ORDERS)}")
            knobs[name] = value
        elif name in RATE_KNOBS:
            knobs[name] = float(value)
        else:
            raise ValueError(f"unknown knob {name!r}")
    return knobs


def signature(payload: bytes, secret: str, timestamp: int) -> str:
    """Stripe's scheme: `t=…,v1=<hex HMAC-SHA256 of "{t}.{payload}">`."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + payload, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


class _Lane:
    """One sender's queue of (when, seq, event, attempt), the condition that wakes it, and its
    kept-alive connection to the webhook URL."""

    def __init__(self, lock: threading.Lock):
        self.sends: list[tuple[float, int, dict, int]] = []
        self.wake = threading.Condition(lock)
        self.connection: http.client.HTTPConnection | None = None


class Webhooks:
    """Announces events to one URL, as a PSP does: at the rate they happen, from WEBHOOK_LANES
    sender threads, with retries. The events of one charge (its capture, refunds, disputes)
    always go through the same lane, so they leave in the order they happened unless the knobs
    say otherwise; events of different charges are sent side by side. Holds events while the
    `webhook_hold` knob says so, and sends copies and orders as the knobs say."""

    def __init__(self, url: str, secret: str, knobs: dict[str, Any]):
        self.url = url
        self.secret = secret
        self.knobs = knobs
        self.lock = threading.Lock()
        self.held: list[dict] = []
        self.lanes = [_Lane(self.lock) for _ in range(WEBHOOK_LANES)]
        self.seq = 0
        self.log: list[dict] = []
        if url:
            for lane in self.lanes:
                threading.Thread(
                    target=self._run, args=(lane,), daemon=True, name="webhooks"
                ).start()

    def announce(self, event_type: str, obj: dict[str, Any]) -> dict:
        event = {
            "id": "evt_" + secrets.token_hex(12),
            "object": "event",
            "type": event_type,
            "created": int(time.time()),
            "data": {"object": dict(obj)},
        }
        with self.lock:
            if self.knobs["webhook_hold"]:
                self.held.append(event)
            else:
                for _ in range(self.knobs["webhook_copies"]):
                    self._push(time.monotonic(), event, 1)
        return event

    def flush(self) -> int:
        with self.lock:
            events, self.held = self.held, []
            order = self.knobs["webhook_order"]
            copies = [e for e in events for _ in range(self.knobs["webhook_copies"])]
            if order == "reverse":
                copies.reverse()
            elif order == "shuffle":
                random.shuffle(copies)
            for event in copies:
                self._push(time.monotonic(), event, 1)
            return len(copies)

    def _push(self, when: float, event: dict, attempt: int) -> None:
        """Queues a send in the charge's lane and wakes that lane only (call under the lock)."""
        self.seq += 1
        obj = event["data"]["object"]
        charge = str(obj.get("charge") or obj.get("id") or "")
        lane = self.lanes[zlib.crc32(charge.encode()) % len(self.lanes)]
        heapq.heappush(lane.sends, (when, self.seq, event, attempt))
        lane.wake.notify()

    def _run(self, lane: _Lane) -> None:
        sends = lane.sends
        while True:
            with self.lock:
                while not sends or sends[0][0] > time.monotonic():
                    lane.wake.wait(sends[0][0] - time.monotonic() if sends else None)
                _, _, event, attempt = heapq.heappop(sends)
            sent_at = time.time()
            status, reason = self._send(lane, event)
            with self.lock:
                self.log.append(
                    {
                        "event": event["id"],
                        "type": event["type"],
                        "status": status,
                        "reason": reason,
                        "attempt": attempt,
                        "sent_at": sent_at,
                    }
                )
                del self.log[:-5000]
                if not 200 <= status < 300 and attempt < WEBHOOK_ATTEMPTS:
                    self._push(time.monotonic() + 0.5 * 2 ** (attempt - 1), event, attempt + 1)

    def _send(self, lane: _Lane, event: dict) -> tuple[int, str]:
        """POSTs the event on the lane's kept-alive connection: the HTTP status (0 if none)
        and, for an error, its ErrorInfo reason ("" if none)."""
        payload = json.dumps(event).encode()
        headers = {
            "Content-Type": "application/json",
            "Sandbox-Signature": signature(payload, self.secret, int(time.time())),
            "User-Agent": "paymesh-sandbox-psp/1",
        }
        target = urlsplit(self.url)
        # A kept-alive connection the server closed meanwhile fails at once: once more on a
        # new one (a PSP delivers at least once, so a rare second delivery is fair).
        for _ in range(2):
            if lane.connection is None:
                connect = (
                    http.client.HTTPSConnection
                    if target.scheme == "https"
                    else http.client.HTTPConnection
                )
                lane.connection = connect(target.netloc, timeout=10)
            try:
                lane.connection.request("POST", target.path or "/", payload, headers)
                answer = lane.connection.getresponse()
                raw = answer.read()
            except (OSError, http.client.HTTPException):
                lane.connection.close()
                lane.connection = None
                continue
            if answer.will_close:
                lane.connection.close()
                lane.connection = None
            return answer.status, (_error_reason(raw) if answer.status >= 400 else "")
        return 0, ""


def _error_reason(raw: bytes) -> str:
    """The ErrorInfo reason of an error as the edge answers it ("" if it has none)."""
    try:
        details = json.loads(raw).get("details") or []
    except (ValueError, AttributeError):
        return ""
    return next((d.get("reason", "") for d in details if "ErrorInfo" in d.get("@type", "")), "")


class Sandbox:
    def __init__(
        self,
        webhook_url: str = "",
        webhook_secret: str = DEV_WEBHOOK_SECRET,
        public_url: str = "http://127.0.0.1:8430",
        api_keys: list[str] | None = None,
    ):
        self.public_url = public_url  # where customers reach its 3-D Secure pages
        # The API keys it accepts (`Authorization: Bearer <key>` on /v1/): none, any caller.
        self.api_keys: set[str] = set(api_keys or ())
        self.lock = threading.Lock()
        self.cards: dict[str, str] = {}  # card id -> number (a simulator may keep them)
        self.card_on_file: set[str] = set()  # cards created as a merchant-initiated card-on-file
        self.charges: dict[str, dict[str, Any]] = {}
        self.refunds: dict[str, dict[str, Any]] = {}
        self.disputes: dict[str, dict[str, Any]] = {}
        self.declines: list[dict[str, Any]] = []  # every decline made: GET /_declines
        self.by_key: dict[str, tuple[int, dict[str, Any]]] = {}
        self.key_locks: dict[str, threading.Lock] = {}
        self.transactions: list[dict[str, Any]] = []
        self.knobs: dict[str, Any] = dict(DEFAULT_KNOBS)
        self.stats: dict[str, Any] = {
            "charges_created": 0,
            "requests": 0,
            "ambiguous": 0,
            "unauthorized": 0,
            "requests_by_operation": {},
        }
        self.webhooks = Webhooks(webhook_url, webhook_secret, self.knobs)

    def handle(self, path: str, body: dict, key: str | None) -> tuple[int, dict]:
        """A POST; with an idempotency key, concurrent and later repeats get the first answer."""
        if not key:
            return self._route(path, body, None)
        with self.lock:
            key_lock = self.key_locks.setdefault(key, threading.Lock())
        with key_lock:
            if key in self.by_key:
                return self.by_key[key]
            status, answer = self._route(path, body, key)
            if status < 500:  # a failure may be retried for real
                self.by_key[key] = (status, answer)
            return status, answer

    def _route(self, path: str, body: dict, key: str | None) -> tuple[int, dict]:
        parts = path.strip("/").split("/")
        if parts == ["v1", "cards"]:
            return self._create_card(body)
        if parts == ["v1", "charges"]:
            return self._charge(body, key)
        if parts[:2] == ["v1", "charges"] and len(parts) == 4:
            return self._change(parts[2], parts[3], body)
        if parts == ["v1", "refunds"]:
            return self._refund(body, key)
        return 404, _error("resource_missing", "unknown route")

    def _create_card(self, body: dict) -> tuple[int, dict]:
        number = str(body.get("number", ""))
        if not number.isdigit():
            return 400, _error("invalid_number", "card number must be digits")
        card_id = "card_" + secrets.token_hex(12)
        with self.lock:
            self.cards[card_id] = number
            if body.get("card_on_file"):
                self.card_on_file.add(card_id)
        return 200, {"id": card_id, "last4": number[-4:]}

    def forget_cards(self) -> int:
        """Drops every card, as a restart does; how many there were."""
        with self.lock:
            forgotten = len(self.cards)
            self.cards.clear()
            self.card_on_file.clear()
            return forgotten

    def _charge(self, body: dict, key: str | None) -> tuple[int, dict]:
        card = str(body.get("card") or "")
        number = self.cards.get(card)
        amount = body.get("amount")
        if not card or not isinstance(amount, int) or amount <= 0:
            return 400, _error("invalid_request", "card and a positive amount are required")
        if number is None:
            return 404, _error("resource_missing", "no such card", param="card")
        if number == PROCESSING_ERROR:
            return 500, _error("processing_error", "An error occurred while processing the card.")
        if number in DECLINES:
            return self._decline(DECLINES[number], key)
        if self._declines_soft(amount):
            return self._decline(DECLINES["4000000000009995"], key)
        capture = bool(body.get("capture", True))
        if number in THREE_D_SECURE:
            return self._charge_awaiting_customer(body, amount, capture, key)
        charge = {
            "id": "ch_" + secrets.token_hex(12),
            "amount": amount,
            "amount_captured": amount if capture else 0,
            "amount_refunded": 0,
            "currency": body.get("currency"),
            "status": "captured" if capture else "authorized",
            "idempotency_key": key,
            "created": int(time.time()),
            "card_on_file": card in self.card_on_file,
        }
        with self.lock:
            self.charges[charge["id"]] = charge
            self.stats["charges_created"] += 1
            if capture:
                self._settle("charge", charge["id"], amount, charge["currency"], charge["id"])
                self.webhooks.announce("charge.captured", charge)
        return 200, charge

    def _decline(self, decline: tuple[str, str, str], key: str | None) -> tuple[int, dict]:
        code, kind, message = decline
        with self.lock:
            self.declines.append({"idempotency_key": key, "decline_code": code, "type": kind})
        return 402, _error("card_declined", message, decline_code=code, type=kind)

    def _charge_awaiting_customer(
        self, body: dict, amount: int, capture: bool, key: str | None
    ) -> tuple[int, dict]:
        """A charge that holds nothing until its customer authenticates at its page."""
        charge_id = "ch_" + secrets.token_hex(12)
        charge = {
            "id": charge_id,
            "amount": amount,
            "amount_captured": 0,
            "amount_refunded": 0,
            "currency": body.get("currency"),
            "status": "requires_action",
            "capture": capture,
            "next_action": {
                "type": "redirect_to_url",
                "redirect_to_url": {"url": f"{self.public_url}/3ds/{charge_id}"},
            },
            "return_url": str(body.get("return_url") or ""),
            "idempotency_key": key,
            "created": int(time.time()),
        }
        with self.lock:
            self.charges[charge_id] = charge
            self.stats["charges_created"] += 1
        return 200, charge

    def authenticate(self, charge_id: str, result: str) -> tuple[int, dict]:
        """The customer's 3-D Secure answer for a charge waiting for it."""
        if result not in THREE_D_SECURE_RESULTS:
            return 400, _error("invalid_request", "result must be succeed or fail")
        with self.lock:
            charge = self.charges.get(charge_id)
            if charge is None:
                return 404, _error("resource_missing", "no such charge")
            if charge["status"] != "requires_action":
                return 400, _error("charge_unexpected_state", f"the charge is {charge['status']}")
            charge["next_action"] = None
            if result == "fail":
                charge.update(status="failed", failure_code="authentication_failed")
                self.webhooks.announce("charge.failed", charge)
            elif charge["capture"]:
                charge.update(status="captured", amount_captured=charge["amount"])
                self._settle("charge", charge_id, charge["amount"], charge["currency"], charge_id)
                self.webhooks.announce("charge.captured", charge)
            else:
                charge["status"] = "authorized"
                self.webhooks.announce("charge.authorized", charge)
            return 200, dict(charge)

    def _declines_soft(self, amount: int) -> bool:
        with self.lock:
            left = self.knobs["soft_declines"].get(str(amount), 0)
            if left:
                self.knobs["soft_declines"] = {**self.knobs["soft_declines"], str(amount): left - 1}
            return left > 0

    def _change(self, charge_id: str, action: str, body: dict) -> tuple[int, dict]:
        with self.lock:
            charge = self.charges.get(charge_id)
            if charge is None:
                return 404, _error("resource_missing", "no such charge")
            if action == "capture" and charge["status"] == "authorized":
                amount = body.get("amount") or charge["amount"]
                if not 0 < amount <= charge["amount"]:
                    return 400, _error("invalid_amount", "cannot capture more than authorized")
                charge.update(status="captured", amount_captured=amount)
                self._settle("charge", charge_id, amount, charge["currency"], charge_id)
                self.webhooks.announce("charge.captured", charge)
                return 200, dict(charge)
            if action == "void" and charge["status"] == "authorized":
                charge["status"] = "voided"
                return 200, dict(charge)
            if action == "void" and charge["status"] == "requires_action":
                charge.update(status="canceled", next_action=None)  # its page answers no more
                return 200, dict(charge)
        return 400, _error(
            "charge_unexpected_state", f"cannot {action} a {charge['status']} charge"
        )

    def _refund(self, body: dict, key: str | None = None) -> tuple[int, dict]:
        with self.lock:
            charge = self.charges.get(str(body.get("charge")))
            amount = body.get("amount")
            if charge is None or charge["status"] != "captured":
                return 400, _error("charge_not_captured", "only captured charges can be refunded")
            if not isinstance(amount, int) or not 0 < amount <= (
                charge["amount_captured"] - charge["amount_refunded"]
            ):
                return 400, _error("invalid_amount", "refund exceeds what is left")
            charge["amount_refunded"] += amount
            refund = {"id": "rf_" + secrets.token_hex(12), "charge": charge["id"], "amount": amount}
            self.refunds[refund["id"]] = {
                **refund,
                "currency": charge["currency"],
                "created": int(time.time()),
            }
            self._settle("refund", refund["id"], -amount, charge["currency"], charge["id"])
            self.webhooks.announce(
                "charge.refunded",
                {
                    **refund,
                    "object": "refund",
                    "currency": charge["currency"],
                    "idempotency_key": key,
                },
            )
        return 200, refund

    def dashboard(self, charge_id: str, action: str, body: dict) -> tuple[int, dict]:
        """An operation made at the PSP itself (its dashboard), not through its API."""
        if action == "capture":
            return self._change(charge_id, "capture", body)
        if action == "refund":
            return self._refund({"charge": charge_id, "amount": body.get("amount")})
        if action == "dispute":
            return self._dispute(charge_id, body)
        if action == "alter":
            return self._alter(charge_id, body)
        if action == "forget":
            return self._forget(charge_id)
        return 404, _error("resource_missing", "unknown dashboard action")

    def _dispute(self, charge_id: str, body: dict) -> tuple[int, dict]:
        """The customer's bank disputes a captured charge: the amount is withdrawn at once."""
        amount, reason = body.get("amount"), body.get("reason", "fraudulent")
        if not isinstance(reason, str) or not reason:
            return 400, _error("invalid_reason", "reason must be a word, e.g. fraudulent")
        with self.lock:
            charge = self.charges.get(charge_id)
            if charge is None or charge["status"] != "captured":
                return 400, _error("charge_not_captured", "only captured charges are disputed")
            if any(d["charge"] == charge_id for d in self.disputes.values()):
                return 400, _error("charge_disputed", "the charge is disputed already")
            amount = charge["amount_captured"] if amount is None else amount
            if not isinstance(amount, int) or not 0 < amount <= charge["amount_captured"]:
                return 400, _error("invalid_amount", "1 to the amount captured")
            dispute = {
                "id": "du_" + secrets.token_hex(12),
                "object": "dispute",
                "charge": charge_id,
                "amount": amount,
                "currency": charge["currency"],
                "reason": reason,
                "status": "needs_response",
                "created": int(time.time()),
                # As Stripe's: the merchant has a week to send evidence.
                "evidence_details": {"due_by": int(time.time()) + EVIDENCE_DAYS * 86400},
            }
            self.disputes[dispute["id"]] = dispute
            self._settle("dispute", dispute["id"], -amount, charge["currency"], charge_id)
            self.webhooks.announce("charge.dispute.created", dispute)
            return 200, dict(dispute)

    def close_dispute(self, dispute_id: str, body: dict) -> tuple[int, dict]:
        """The bank decides: `won` gives the amount back to the merchant, `lost` keeps it."""
        status = body.get("status")
        if status not in ("won", "lost"):
            return 400, _error("invalid_status", "status must be won or lost")
        with self.lock:
            dispute = self.disputes.get(dispute_id)
            if dispute is None:
                return 404, _error("resource_missing", "no such dispute")
            if dispute["status"] in ("won", "lost"):
                return 400, _error("dispute_closed", f"the dispute is {dispute['status']} already")
            dispute["status"] = status
            if status == "won":
                amount, currency = dispute["amount"], dispute["currency"]
                self._settle("dispute_reversal", dispute_id, amount, currency, dispute["charge"])
            self.webhooks.announce("charge.dispute.closed", dispute)
            return 200, dict(dispute)

    def _alter(self, charge_id: str, body: dict) -> tuple[int, dict]:
        """The PSP's books say another amount or currency for a settled charge, silently."""
        amount, currency = body.get("amount"), body.get("currency")
        if amount is not None and (not isinstance(amount, int) or amount <= 0):
            return 400, _error("invalid_amount", "amount must be a positive integer")
        with self.lock:
            charge = self.charges.get(charge_id)
            if charge is None or charge["status"] != "captured":
                return 400, _error("charge_not_captured", "only captured charges are altered")
            changes = {"amount_captured": amount} if amount is not None else {}
            if currency:
                changes["currency"] = str(currency)
            charge.update(changes)
            for transaction in self.transactions:
                if transaction["type"] == "charge" and transaction["source"] == charge_id:
                    transaction.update(
                        amount=charge["amount_captured"], currency=charge["currency"]
                    )
            return 200, dict(charge)

    def _forget(self, charge_id: str) -> tuple[int, dict]:
        """The PSP loses a charge and its refunds: gone from every listing, silently."""
        with self.lock:
            if self.charges.pop(charge_id, None) is None:
                return 404, _error("resource_missing", "no such charge")
            self.transactions = [t for t in self.transactions if t["charge"] != charge_id]
            self.refunds = {k: r for k, r in self.refunds.items() if r["charge"] != charge_id}
            self.disputes = {k: d for k, d in self.disputes.items() if d["charge"] != charge_id}
            return 200, {"id": charge_id, "forgotten": True}

    def _settle(self, kind: str, source: str, amount: int, currency: str, charge: str) -> None:
        self.transactions.append(
            {
                "id": "txn_" + secrets.token_hex(12),
                "type": kind,
                "source": source,
                "charge": charge,
                "amount": amount,
                "currency": currency,
                "created": int(time.time()),
            }
        )

    def transactions_page(self, query: dict[str, list[str]]) -> tuple[int, dict]:
        """Settled money movements, oldest first, a page at a time (Stripe's list shape)."""
        try:
            # Without a limit, every one (what tests of the PSP's own ledger read).
            limit = int(query.get("limit", ["0"])[0]) or len(self.transactions) or 1
            since = int(query.get("created[gte]", ["0"])[0])
            until = int(query.get("created[lt]", [str(2**63)])[0])
        except ValueError:
            return 400, _error("invalid_request", "limit and created[…] must be integers")
        if "limit" in query and not 1 <= limit <= 100:
            return 400, _error("invalid_request", "limit must be 1 to 100")
        after = query.get("starting_after", [None])[0]
        with self.lock:
            rows = self.transactions
            start = 0
            if after is not None:
                start = next((i + 1 for i, t in enumerate(rows) if t["id"] == after), None)
                if start is None:
                    return 400, _error("resource_missing", "starting_after: no such transaction")
            page = [dict(t) for t in rows[start:] if since <= t["created"] < until]
        return 200, {"object": "list", "data": page[:limit], "has_more": len(page) > limit}

    def lookup(self, kind: str, object_id: str) -> tuple[int, dict]:
        """A charge, refund or dispute by id (`kind`: charges | refunds | disputes)."""
        with self.lock:
            kinds = {"charges": self.charges, "refunds": self.refunds, "disputes": self.disputes}
            found = kinds[kind].get(object_id)
            if found is None:
                return 404, _error("resource_missing", f"no such {kind[:-1]}")
            return 200, dict(found)

    def find_charges(self, idempotency_key: str | None) -> list[dict]:
        """The charges made under a key (all of them without one): the PSP's own ledger."""
        with self.lock:
            return [
                dict(c)
                for c in self.charges.values()
                if idempotency_key is None or c["idempotency_key"] == idempotency_key
            ]


def three_d_secure_page(charge: dict) -> str:
    """The customer's authentication page of a charge: two buttons, succeed or fail."""
    amount = f"{charge['amount']} {html.escape(str(charge['currency']))}"
    action = f"/3ds/{html.escape(charge['id'])}/complete"
    buttons = "".join(
        f'<form method="post" action="{action}"><input type="hidden" name="result"'
        f' value="{result}"><button type="submit">{label}</button></form>'
        for result, label in (("succeed", "Complete authentication"), ("fail", "Fail it"))
    )
    return (
        "<!doctype html><title>3-D Secure (sandbox)</title>"
        f"<h1>3-D Secure test page</h1><p>Charge of {amount}.</p>{buttons}"
    )


def _error(code: str, message: str, **extra: str) -> dict:
    return {"error": {"code": code, "message": message, **extra}}


def make_handler(sandbox: Sandbox):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive
        # Headers and body go out in two writes: without TCP_NODELAY, Nagle's algorithm and
        # the client's delayed ACK add 40 ms to every answer.
        disable_nagle_algorithm = True
        form_posted = False  # the request's body was the 3-D Secure page's form

        def log_message(self, format, *args):  # noqa: A002 - stdlib signature
            pass

        def _reply(self, status: int, body: dict) -> None:
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def _body(self) -> dict:
            """The JSON body; the 3-D Secure page's form when it is not JSON."""
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            self.form_posted = False
            try:
                return json.loads(raw or b"{}")
            except json.JSONDecodeError:
                kind = self.headers.get("Content-Type") or ""
                if not kind.startswith("application/x-www-form-urlencoded"):
                    return {}
            self.form_posted = True
            return {k: v[0] for k, v in parse_qs(raw.decode(errors="replace")).items()}

        def _page(self, status: int, page: str) -> None:
            payload = page.encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def _three_d_secure_done(self, charge_id: str, body: dict) -> None:
            """The customer's answer: JSON for a caller, the way back for the page's form."""
            status, charge = sandbox.authenticate(charge_id, str(body.get("result")))
            if status == 200 and self.form_posted:
                if charge.get("return_url"):
                    self.send_response(303)
                    self.send_header("Location", charge["return_url"])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                return self._page(200, f"<p>Authentication {html.escape(charge['status'])}.</p>")
            self._reply(status, charge)

        def _refused_key(self) -> bool:
            """A /v1/ call without a key the sandbox accepts is answered 401, as Stripe does
            (naming the key by its last 4 characters only)."""
            if not sandbox.api_keys or not self.path.startswith("/v1/"):
                return False
            given = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
            if given in sandbox.api_keys:
                return False
            with sandbox.lock:
                sandbox.stats["unauthorized"] += 1
            self._reply(
                401,
                _error(
                    "invalid_api_key",
                    f"Invalid API Key provided: …{given[-4:]}" if given else "No API key provided",
                    type="invalid_request_error",
                ),
            )
            return True

        def do_GET(self):
            if self._refused_key():
                return None
            url = urlsplit(self.path)
            parts = url.path.strip("/").split("/")
            if len(parts) == 2 and parts[0] == "3ds":
                status, charge = sandbox.lookup("charges", parts[1])
                if status != 200 or charge["status"] != "requires_action":
                    return self._page(404, "<p>Nothing to authenticate here.</p>")
                return self._page(200, three_d_secure_page(charge))
            if url.path == "/v1/transactions":
                return self._reply(*sandbox.transactions_page(parse_qs(url.query)))
            parts = url.path.strip("/").split("/")
            if len(parts) == 3 and parts[0] == "v1" and parts[1] in LOOKUPS:
                return self._reply(*sandbox.lookup(parts[1], parts[2]))
            if url.path == "/v1/charges":
                key = parse_qs(url.query).get("idempotency_key", [None])[0]
                return self._reply(200, {"data": sandbox.find_charges(key)})
            if url.path == "/_webhooks":
                with sandbox.webhooks.lock:
                    return self._reply(200, {"data": list(sandbox.webhooks.log)})
            if url.path == "/_declines":
                with sandbox.lock:
                    return self._reply(200, {"data": list(sandbox.declines)})
            if url.path == "/_stats":
                with sandbox.lock:
                    stats = {**sandbox.stats}
                    stats["requests_by_operation"] = dict(stats["requests_by_operation"])
                    return self._reply(200, stats)
            return self._reply(404, _error("resource_missing", "unknown route"))

        def do_POST(self):
            body = self._body()
            if self._refused_key():
                return None
            if self.path == "/_keys":  # the PSP's dashboard rolls its API keys
                sandbox.api_keys = {str(key) for key in body.get("api_keys") or ()}
                return self._reply(200, {"api_keys": len(sandbox.api_keys)})
            if self.path == "/_knobs":
                try:
                    sandbox.knobs.update(parse_knobs(body))
                except (TypeError, ValueError) as error:
                    return self._reply(400, _error("invalid_knobs", str(error)))
                return self._reply(200, sandbox.knobs)
            if self.path == "/_webhooks/flush":
                return self._reply(200, {"sent": sandbox.webhooks.flush()})
            if self.path == "/_forget_cards":
                return self._reply(200, {"forgotten": sandbox.forget_cards()})
            parts = self.path.strip("/").split("/")
            if len(parts) == 3 and parts[0] == "3ds" and parts[2] == "complete":
                return self._three_d_secure_done(parts[1], body)  # the customer, not the API
            if parts[:2] == ["_dashboard", "charges"] and len(parts) == 4:
                return self._reply(*sandbox.dashboard(parts[2], parts[3], body))
            if parts[:2] == ["_dashboard", "disputes"] and parts[3:] == ["close"]:
                return self._reply(*sandbox.close_dispute(parts[2], body))
            operation = operation_of(self.path)
            with sandbox.lock:
                sandbox.stats["requests"] += 1
                by_operation = sandbox.stats["requests_by_operation"]
                by_operation[operation] = by_operation.get(operation, 0) + 1
            knobs = sandbox.knobs
            faulty = not knobs["operations"] or operation in knobs["operations"]
            if not faulty:
                knobs = DEFAULT_KNOBS
            delay = knobs["latency_ms"] + random.uniform(0, knobs["latency_jitter_ms"])  # noqa: S311
            if delay:
                time.sleep(delay / 1000)
            if random.random() < knobs["timeout_rate"]:  # noqa: S311 - a simulator's dice
                time.sleep(HANG_SECONDS)
                return self._reply(504, _error("timeout", "simulated timeout"))
            if random.random() < knobs["error_rate"]:  # noqa: S311
                return self._reply(503, _error("unavailable", "simulated outage"))
            key = self.headers.get("Idempotency-Key")
            status, answer = sandbox.handle(self.path, body, key)
            if random.random() < knobs["ambiguous_rate"]:  # noqa: S311
                # Done and recorded, but the answer is lost: the hardest real fault.
                with sandbox.lock:
                    sandbox.stats["ambiguous"] += 1
                time.sleep(HANG_SECONDS)
            self._reply(status, answer)

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description="paymesh's sandbox PSP")
    parser.add_argument("--port", type=int, default=8430)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--webhook-url",
        default=os.environ.get("SANDBOX_WEBHOOK_URL", ""),
        help="where events are announced (default $SANDBOX_WEBHOOK_URL; empty: nowhere)",
    )
    parser.add_argument(
        "--public-url",
        default=os.environ.get("SANDBOX_PUBLIC_URL", ""),
        help="where customers reach its 3-D Secure pages (default http://HOST:PORT)",
    )
    args = parser.parse_args()
    # The secret from the environment only: a command line is visible to every local user.
    secret = (
        os.environ.get("SANDBOX_WEBHOOK_SECRET")
        or os.environ.get("WEBHOOK_SANDBOX_SECRET", "").split(",")[0]
        or DEV_WEBHOOK_SECRET
    )
    public_url = args.public_url or f"http://{args.host}:{args.port}"
    api_keys = [k for k in os.environ.get("SANDBOX_API_KEYS", "").split(",") if k]
    sandbox = Sandbox(
        args.webhook_url, secret, public_url=public_url.rstrip("/"), api_keys=api_keys
    )
    server = ThreadingHTTPServer((args.host, args.port), make_handler(sandbox))
    server.daemon_threads = True
    print(json.dumps({"event": "sandbox_psp_started", "port": args.port}), flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()


if __name__ == "__main__":
    main()
