"""gRPC transport of webhook_svc's merchant API: decode, check, call the stores, encode."""

from __future__ import annotations

from google.protobuf.json_format import ParseDict
from google.protobuf.struct_pb2 import Struct

from paymesh.platform.callers import Callers
from paymesh.platform.errors import InvalidArgument
from paymesh.platform.idempotency.rpc import idempotent
from paymesh.platform.idempotency.store import Claim, Idempotency
from paymesh.platform.problems import FieldViolation
from paymesh.platform.wire import (
    page_limit,
    require_id,
    required_datetime,
    timestamp,
)
from paymesh.webhook.v1 import webhook_pb2, webhook_pb2_grpc
from webhook_svc.domain import rules
from webhook_svc.outbound import signing
from webhook_svc.outbound.destinations import AddressPolicy, check_url
from webhook_svc.outbound.endpoints import EndpointChange, EndpointInput, EndpointStore
from webhook_svc.outbound.events import EventStore

SECRET_OVERLAP_SECONDS = 24 * 3600


def endpoint_message(row, secret: str = "", public_key: str = "") -> webhook_pb2.WebhookEndpoint:
    return webhook_pb2.WebhookEndpoint(
        id=row.id,
        url=row.url,
        enabled_events=row.enabled_events,
        status=row.status,
        created=timestamp(row.created_at),
        livemode=row.livemode,
        description=row.description or "",
        signature_scheme=row.signature_scheme,
        secret=secret if row.signature_scheme == "v1" else "",
        public_key=public_key,
        disabled_reason=row.disabled_reason or "",
        previous_secret_expires_at=timestamp(row.previous_secret_expires_at),
    )


def event_message(row, attempts=()) -> webhook_pb2.Event:
    return webhook_pb2.Event(
        id=row.id,
        type=row.type,
        created=timestamp(row.created_at),
        object=ParseDict(row.object, Struct()),
        sequence=row.sequence,
        livemode=row.livemode,
        attempts=[
            webhook_pb2.DeliveryAttempt(
                webhook_endpoint=a.endpoint_id,
                url=a.url,
                at=timestamp(a.at),
                status_code=a.status_code or 0,
                duration_ms=a.duration_ms,
                error=a.error or "",
                attempt=a.attempt,
            )
            for a in attempts
        ],
    )


class WebhookServicer(webhook_pb2_grpc.WebhookServiceServicer):
    """Every POST is `@idempotent`: a retry under its key is answered with the endpoint the
    key is bound to, as it is now, or with the stored answer or error, before its request is
    looked at."""

    def __init__(
        self,
        endpoints: EndpointStore,
        events: EventStore,
        callers: Callers,
        destinations: AddressPolicy,
        idempotency: Idempotency,
    ):
        self._endpoints = endpoints
        self._events = events
        self.callers = callers
        self._destinations = destinations
        self.idempotency = idempotency

    async def replay(self, claim: Claim) -> webhook_pb2.WebhookEndpoint:
        """An endpoint a key is bound to, as reads show it."""
        return self._shown(await self._endpoints.get(claim.merchant, claim.replay_object or ""))

    async def _replay_with_secret(self, claim: Claim) -> webhook_pb2.WebhookEndpoint:
        """An endpoint a key is bound to, with its secret as it is now: what its creation or
        roll answered."""
        row = await self._endpoints.get(claim.merchant, claim.replay_object or "")
        secret = self._endpoints.secret_of(row)
        return endpoint_message(row, secret, signing.public_key(secret))

    @idempotent(binds=True, replay=_replay_with_secret)
    async def CreateWebhookEndpoint(self, request, context, claim: Claim):
        scheme = request.signature_scheme or "v1"
        violations = [
            *rules.enabled_events_violations(request.enabled_events),
            *_optional(rules.description_violation(request.description)),
        ]
        if scheme not in signing.SCHEMES:
            violations.append(FieldViolation("signature_scheme", "invalid_value", "v1 or v1a"))
        violations += await self._url_violations(request.url)
        if violations:
            raise InvalidArgument(violations)
        new = EndpointInput(
            url=request.url,
            enabled_events=list(request.enabled_events),
            description=request.description,
            signature_scheme=scheme,
        )
        row, secret = await self._endpoints.create(claim.merchant, new, claim)
        return endpoint_message(row, secret, signing.public_key(secret))

    async def GetWebhookEndpoint(self, request, context):
        merchant = await self.callers.merchant(context)
        row = await self._endpoints.get(merchant, _endpoint_id(request.id))
        return self._shown(row)

    async def ListWebhookEndpoints(self, request, context):
        merchant = await self.callers.merchant(context)
        rows, has_more = await self._endpoints.page(
            merchant, page_limit(request.limit), request.starting_after
        )
        return webhook_pb2.ListWebhookEndpointsResponse(
            data=[self._shown(r) for r in rows], has_more=has_more
        )

    @idempotent()
    async def UpdateWebhookEndpoint(self, request, context, claim: Claim):
        merchant = claim.merchant
        endpoint_id = _endpoint_id(request.id)
        violations = []
        if request.enabled_events:
            violations += rules.enabled_events_violations(request.enabled_events)
        if request.HasField("description"):
            violations += _optional(rules.description_violation(request.description))
        if request.HasField("url"):
            violations += await self._url_violations(request.url)
        if violations:
            raise InvalidArgument(violations)
        change = EndpointChange(
            url=request.url if request.HasField("url") else None,
            enabled_events=list(request.enabled_events) or None,
            description=request.description if request.HasField("description") else None,
            disabled=request.disabled if request.HasField("disabled") else None,
        )
        return self._shown(await self._endpoints.update(merchant, endpoint_id, change))

    async def DeleteWebhookEndpoint(self, request, context):
        merchant = await self.callers.merchant(context)
        endpoint_id = _endpoint_id(request.id)
        await self._endpoints.delete(merchant, endpoint_id)
        return webhook_pb2.DeleteWebhookEndpointResponse(id=endpoint_id, deleted=True)

    @idempotent(replay=_replay_with_secret)
    async def RollWebhookEndpointSecret(self, request, context, claim: Claim):
        row, secret = await self._endpoints.roll(
            claim.merchant, _endpoint_id(request.id), SECRET_OVERLAP_SECONDS
        )
        return endpoint_message(row, secret, signing.public_key(secret))

    @idempotent(answer=webhook_pb2.RecoverWebhookEndpointResponse)
    async def RecoverWebhookEndpoint(self, request, context, claim: Claim):
        merchant = claim.merchant
        endpoint_id = _endpoint_id(request.id)
        since = required_datetime(request, "since")
        await self._endpoints.get(merchant, endpoint_id)
        scheduled = await self._events.recover(merchant, endpoint_id, since)
        return webhook_pb2.RecoverWebhookEndpointResponse(scheduled=scheduled)

    async def ListEvents(self, request, context):
        merchant = await self.callers.merchant(context)
        if request.type and request.type not in rules.EVENT_TYPES:
            raise InvalidArgument.for_field("type", "invalid_event_type", "an event type")
        rows, has_more = await self._events.page(
            merchant, page_limit(request.limit), request.starting_after, request.type
        )
        return webhook_pb2.ListEventsResponse(
            data=[event_message(r) for r in rows], has_more=has_more
        )

    async def GetEvent(self, request, context):
        merchant = await self.callers.merchant(context)
        row, attempts = await self._events.get(merchant, _event_id(request.id))
        return event_message(row, attempts)

    @idempotent(answer=webhook_pb2.RedeliverEventResponse)
    async def RedeliverEvent(self, request, context, claim: Claim):
        scheduled = await self._events.redeliver(claim.merchant, _event_id(request.id))
        return webhook_pb2.RedeliverEventResponse(scheduled=scheduled)

    def _shown(self, row) -> webhook_pb2.WebhookEndpoint:
        """An endpoint as reads show it: never the secret; a v1a endpoint's public key."""
        return endpoint_message(row, public_key=self._endpoints.public_key_of(row))

    async def _url_violations(self, url: str) -> list[FieldViolation]:
        if not url:
            return [FieldViolation("url", "missing", "url is required")]
        problem = await check_url(self._destinations, url)
        return [FieldViolation("url", "invalid_url", problem)] if problem else []


def _endpoint_id(value: str) -> str:
    return require_id(value, "we_", "webhook_endpoint")


def _event_id(value: str) -> str:
    return require_id(value, "evt_", "event")


def _optional(violation: FieldViolation | None) -> list[FieldViolation]:
    return [violation] if violation else []
