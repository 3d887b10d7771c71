"""The kit's idempotency rules as plain functions (paymesh.platform.idempotency.keys), and its
servicer decorator over an in-memory twin of the key store that follows the same rules."""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
from google.protobuf.message import Message

from paymesh.platform.callers import Merchant
from paymesh.platform.errors import ReplayedError, to_status_proto
from paymesh.platform.idempotency import rpc
from paymesh.platform.idempotency.keys import (
    AwaitOutcome,
    Replay,
    StoredKey,
    TakeOver,
    Wait,
    checked_key,
    key_digest,
    request_digest,
    settlement,
    verdict,
)
from paymesh.platform.idempotency.store import Claim, NewKey
from paymesh.platform.problems import (
    Conflict,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from paymesh.vault.v1 import vault_pb2
from paymesh.webhook.v1 import webhook_pb2
from tests.support import cards

MERCHANT = Merchant("acct_1", False)
NOW = datetime(2026, 12, 7, tzinfo=UTC)
STALE = 60.0


# --- the key as sent ----------------------------------------------------------------------


@pytest.mark.parametrize("raw", [None, ""])
def test_no_key_is_none(raw):
    assert checked_key(raw) is None


def test_a_key_of_printable_ascii_up_to_255_characters_passes():
    assert checked_key("k" * 255) == "k" * 255
    assert checked_key("order 1/2 ~!") == "order 1/2 ~!"


@pytest.mark.parametrize("raw", ["k" * 256, "order\n1", "ördér", "tab\there"])
def test_any_other_key_is_bad_input_naming_the_header(raw):
    with pytest.raises(InvalidArgument) as raised:
        checked_key(raw)
    [violation] = raised.value.violations
    assert (violation.field, violation.reason) == ("idempotency-key", "invalid_idempotency_key")


# --- what is stored -----------------------------------------------------------------------


def _request(number: str) -> vault_pb2.CreatePaymentMethodRequest:
    return vault_pb2.CreatePaymentMethodRequest(
        card=vault_pb2.CardInput(number=number, exp_month=12, exp_year=2030, cvc="123")
    )


def test_the_request_fingerprint_is_keyed_and_holds_no_card_data():
    request = _request(cards.VISA)
    digest = request_digest(b"secret-1", "CreatePaymentMethod", request)

    assert len(digest) == 64
    assert cards.VISA not in digest and "123" not in digest
    assert digest == request_digest(b"secret-1", "CreatePaymentMethod", _request(cards.VISA))
    assert digest != request_digest(b"secret-2", "CreatePaymentMethod", request)
    assert digest != request_digest(b"secret-1", "CreatePaymentMethod", _request(cards.MASTERCARD))
    assert digest != request_digest(b"secret-1", "DetachPaymentMethod", request)
    unkeyed = hashlib.sha256(
        b"CreatePaymentMethod\0" + request.SerializeToString(deterministic=True)
    ).hexdigest()
    assert digest != unkeyed


def test_a_key_is_stored_as_a_keyed_digest_of_the_merchant_and_the_key():
    stored = key_digest(b"secret-1", MERCHANT, cards.VISA)

    assert len(stored) == 64 and cards.VISA not in stored
    assert stored == key_digest(b"secret-1", MERCHANT, cards.VISA)
    assert stored != key_digest(b"secret-2", MERCHANT, cards.VISA)
    assert stored != key_digest(b"secret-1", MERCHANT, cards.MASTERCARD)
    assert stored != key_digest(b"secret-1", Merchant("acct_2", False), cards.VISA)
    assert stored != key_digest(b"secret-1", Merchant("acct_1", True), cards.VISA)


def test_without_its_secret_nothing_is_stored():
    with pytest.raises(RuntimeError):
        key_digest(b"", MERCHANT, "k")


# --- what a stored key means ----------------------------------------------------------------


def _row(**fields) -> StoredKey:
    return StoredKey(**{"request_hash": "h", "state": "running", "locked_at": NOW, **fields})


def test_the_same_key_with_another_request_is_a_conflict_whatever_its_state():
    for state in ("running", "done", "released"):
        with pytest.raises(Conflict) as raised:
            verdict(_row(state=state, object_id="pi_1"), "other", 0, STALE)
        assert raised.value.reason == "idempotency_key_reused"


def test_a_done_key_replays_its_error_its_object_or_its_answer():
    assert verdict(_row(state="done", is_error=True, response=b"e"), "h", 0, STALE) == Replay(
        error=b"e"
    )
    assert verdict(_row(state="done", object_id="sub_1"), "h", 0, STALE) == Replay(
        object_id="sub_1"
    )
    assert verdict(_row(state="done", response=b"a"), "h", 0, STALE) == Replay(response=b"a")


def test_a_done_key_replays_however_old_it_is():
    assert verdict(_row(state="done", object_id="we_1"), "h", 10 * STALE, STALE) == Replay(
        object_id="we_1"
    )


def test_a_key_held_by_a_live_request_is_waited_for():
    assert verdict(_row(), "h", 1, STALE) == Wait()
    assert verdict(_row(object_id="pi_1"), "h", 1, STALE) == Wait()


def test_a_released_key_runs_again_from_its_object():
    assert verdict(_row(state="released", object_id="pi_1"), "h", 0, STALE) == TakeOver("pi_1")


def test_a_key_whose_request_died_before_binding_anything_runs_again():
    assert verdict(_row(), "h", STALE + 1, STALE) == TakeOver(None)


def test_a_key_whose_request_died_or_answered_after_binding_awaits_the_outcome():
    assert verdict(_row(object_id="pi_1"), "h", STALE + 1, STALE) == AwaitOutcome("pi_1")
    assert verdict(_row(object_id="pi_1", response=b"503"), "h", 0, STALE) == AwaitOutcome("pi_1")


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (InvalidArgument.for_field("amount", "invalid_amount", "x"), "store"),
        (NotFound("no such thing", reason="resource_missing"), "store"),
        (FailedPrecondition("no", reason="x"), "store"),
        (Unavailable("maybe", reason="psp_outcome_unknown"), "await"),
        (Unavailable("db", reason="database_unavailable"), "release"),
        (RuntimeError("boom"), "release"),
    ],
)
def test_a_failed_request_stores_its_own_error_awaits_an_unknown_outcome_or_releases(error, kind):
    assert settlement(error) == kind


# --- the decorator, over an in-memory twin of the store ---------------------------------------


@dataclass
class MemoryKeys:
    """Keys in a dict, judged by the same `verdict` as the SQL store."""

    rows: dict[tuple, StoredKey] = field(default_factory=dict)
    fences: int = 0

    def first_use(self, merchant, key, method, request) -> NewKey:
        return NewKey(merchant, key, request_digest(b"s", method, request))

    async def claim(self, merchant, key, method, request) -> Claim:
        if not key:
            return Claim(merchant)
        digest = request_digest(b"s", method, request)
        row = self.rows.get((merchant, key))
        if row is None:
            return self._take(merchant, key, digest, None)
        decided = verdict(row, digest, 0, STALE)
        if isinstance(decided, Replay):
            return Claim(merchant, key, replay=decided)
        if isinstance(decided, TakeOver):
            return self._take(merchant, key, digest, decided.resume_from)
        raise Conflict("in use", reason="idempotency_key_in_use")

    def _take(self, merchant, key, digest, resume_from) -> Claim:
        self.fences += 1
        fence = datetime.fromtimestamp(self.fences, UTC)
        self.rows[(merchant, key)] = StoredKey(digest, "running", fence)
        return Claim(merchant, key, fence, resume_from=resume_from)

    def _held(self, claim: Claim) -> StoredKey | None:
        row = self.rows.get((claim.merchant, claim.key))
        return row if row and row.state == "running" and row.locked_at == claim.fence else None

    def bind(self, claim: Claim, object_id: str) -> None:
        if claim.key is None:
            return
        row = self._held(claim)
        assert row is not None
        self.rows[(claim.merchant, claim.key)] = StoredKey(
            row.request_hash, "done", row.locked_at, object_id
        )

    async def settle(self, claim, object_id, answer) -> None:
        row = self._held(claim) if claim.key else None
        if row is not None:
            self.rows[(claim.merchant, claim.key)] = StoredKey(
                row.request_hash, "done", row.locked_at, object_id, answer
            )

    async def settle_error(self, claim, error) -> None:
        row = self._held(claim) if claim.key else None
        if row is None:
            return
        if settlement(error) == "store":
            status = to_status_proto(error).SerializeToString()
            self.rows[(claim.merchant, claim.key)] = StoredKey(
                row.request_hash, "done", row.locked_at, None, status, True
            )
        elif settlement(error) == "release":
            del self.rows[(claim.merchant, claim.key)]


class Callers:
    async def merchant(self, context) -> Merchant:
        return MERCHANT


class Context:
    def __init__(self):
        self.initial_metadata = None

    async def send_initial_metadata(self, metadata):
        self.initial_metadata = metadata


class Servicer:
    """Endpoints in a dict; the vault's `ok` says whether a card can be used now."""

    def __init__(self):
        self.idempotency = MemoryKeys()
        self.callers = Callers()
        self.endpoints: dict[str, str] = {}
        self.runs = 0
        self.card_usable = True

    async def replay(self, claim: Claim) -> Message:
        object_id = claim.replay_object or ""
        return webhook_pb2.WebhookEndpoint(id=object_id, url=self.endpoints[object_id])

    @rpc.idempotent(binds=True)
    async def CreateWebhookEndpoint(self, request, context, claim: Claim):
        self.runs += 1
        if not self.card_usable:
            raise InvalidArgument.for_field("url", "invalid_url", "refused now")
        if not request.url:
            raise InvalidArgument.for_field("url", "missing", "url is required")
        endpoint_id = f"we_{self.runs}"
        self.endpoints[endpoint_id] = request.url
        self.idempotency.bind(claim, endpoint_id)
        return webhook_pb2.WebhookEndpoint(id=endpoint_id, url=request.url)

    @rpc.idempotent(answer=webhook_pb2.RedeliverEventResponse)
    async def RedeliverEvent(self, request, context, claim: Claim):
        self.runs += 1
        return webhook_pb2.RedeliverEventResponse(scheduled=self.runs)


def _call(servicer, method: str, request, key: str | None):
    async def scenario():
        context = Context()
        metadata = (("idempotency-key", key),) if key else ()
        with rpc.call_key(metadata):
            try:
                return await getattr(servicer, method)(request, context), context
            except Exception as error:  # noqa: BLE001 - the answer under test
                return error, context

    return asyncio.run(scenario())


CREATE = webhook_pb2.CreateWebhookEndpointRequest(url="https://example.com/a")


def test_a_retry_is_answered_with_the_object_as_it_is_now_without_running_again():
    servicer = Servicer()
    first, _ = _call(servicer, "CreateWebhookEndpoint", CREATE, "k1")
    servicer.endpoints[first.id] = "https://example.com/changed"
    servicer.card_usable = False  # what the request is checked against has changed since

    again, context = _call(servicer, "CreateWebhookEndpoint", CREATE, "k1")

    assert servicer.runs == 1
    assert again.id == first.id and again.url == "https://example.com/changed"
    assert context.initial_metadata == rpc.REPLAYED


def test_a_request_of_its_own_error_is_replayed_as_that_error():
    servicer = Servicer()
    bad = webhook_pb2.CreateWebhookEndpointRequest()
    first, _ = _call(servicer, "CreateWebhookEndpoint", bad, "k1")

    again, context = _call(servicer, "CreateWebhookEndpoint", bad, "k1")

    assert isinstance(first, InvalidArgument)
    assert isinstance(again, ReplayedError) and again.status.message == first.message
    assert servicer.runs == 1
    assert context.initial_metadata == rpc.REPLAYED


def test_the_same_key_with_another_request_is_refused_and_runs_nothing():
    servicer = Servicer()
    _call(servicer, "CreateWebhookEndpoint", CREATE, "k1")
    other = webhook_pb2.CreateWebhookEndpointRequest(url="https://example.com/b")

    refused, _ = _call(servicer, "CreateWebhookEndpoint", other, "k1")

    assert isinstance(refused, Conflict) and refused.reason == "idempotency_key_reused"
    assert servicer.runs == 1


def test_without_a_key_every_request_runs():
    servicer = Servicer()
    _call(servicer, "CreateWebhookEndpoint", CREATE, None)
    again, context = _call(servicer, "CreateWebhookEndpoint", CREATE, None)

    assert servicer.runs == 2 and again.id == "we_2"
    assert context.initial_metadata is None


def test_an_answer_that_is_no_object_is_stored_and_replayed_as_it_was():
    servicer = Servicer()
    request = webhook_pb2.RedeliverEventRequest(id="evt_1")
    first, _ = _call(servicer, "RedeliverEvent", request, "k1")

    again, context = _call(servicer, "RedeliverEvent", request, "k1")

    assert first.scheduled == again.scheduled == 1
    assert servicer.runs == 1
    assert context.initial_metadata == rpc.REPLAYED


def test_a_bad_key_is_refused_before_anything_runs():
    servicer = Servicer()

    refused, _ = _call(servicer, "CreateWebhookEndpoint", CREATE, "k" * 256)

    assert isinstance(refused, InvalidArgument)
    assert servicer.runs == 0 and servicer.idempotency.rows == {}
