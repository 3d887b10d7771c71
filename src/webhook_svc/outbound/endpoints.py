"""Reads and writes merchants' webhook endpoints; no protobuf here. Signing secrets are
stored sealed (secret_box) and returned in clear only to create and roll_secret."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Row, delete, func, update
from sqlalchemy.ext.asyncio import AsyncEngine

from paymesh.platform.callers import Merchant, newest_first_page, owned_by
from paymesh.platform.db import autocommit
from paymesh.platform.errors import Conflict, NotFound
from paymesh.platform.idempotency.store import Claim, bind_key
from paymesh.platform.ids import new_id
from webhook_svc.outbound import signing
from webhook_svc.outbound.secret_box import SecretBox
from webhook_svc.tables import idempotency_keys, webhook_endpoints


@dataclass(frozen=True)
class EndpointInput:
    url: str
    enabled_events: Sequence[str]
    description: str
    signature_scheme: str


@dataclass(frozen=True)
class EndpointChange:
    url: str | None = None
    enabled_events: Sequence[str] | None = None
    description: str | None = None
    disabled: bool | None = None


class EndpointStore:
    # Never shown, never in an event.
    SECRET_COLUMNS = ("secret", "previous_secret")

    def __init__(self, engine: AsyncEngine, box: SecretBox, lists: AsyncEngine | None = None):
        self._engine = engine
        self._reads = autocommit(engine)
        self._lists = autocommit(lists or engine)  # a replica's, maybe a moment behind
        self._box = box

    def secret_of(self, endpoint: Row) -> str:
        return self._box.open(endpoint.id, endpoint.secret)

    def public_key_of(self, endpoint: Row) -> str:
        """What verifies a v1a endpoint's signatures (`whpk_…`); nothing for v1."""
        if endpoint.signature_scheme != "v1a":
            return ""
        return signing.public_key(self.secret_of(endpoint))

    async def create(self, merchant: Merchant, new: EndpointInput, key: Claim) -> tuple[Row, str]:
        """The new endpoint and its secret in clear; the request's key is bound to it in the
        same transaction."""
        endpoint_id = new_id("we_")
        secret = signing.new_secret(new.signature_scheme)
        values = {
            "id": endpoint_id,
            "merchant_id": merchant.id,
            "livemode": merchant.livemode,
            "url": new.url,
            "enabled_events": list(new.enabled_events),
            "description": new.description or None,
            "signature_scheme": new.signature_scheme,
            "secret": self._box.seal(endpoint_id, secret),
            "status": "enabled",
        }
        async with self._engine.begin() as connection:
            row = (
                await connection.execute(
                    webhook_endpoints.insert().values(values).returning(webhook_endpoints)
                )
            ).one()
            await bind_key(connection, idempotency_keys, key, row.id)
        return row, secret

    async def get(self, merchant: Merchant, endpoint_id: str) -> Row:
        async with self._reads.connect() as connection:
            row = (
                await connection.execute(owned_by(webhook_endpoints, endpoint_id, merchant))
            ).first()
        if row is None:
            raise _missing()
        return row

    async def page(
        self, merchant: Merchant, limit: int, starting_after: str
    ) -> tuple[Sequence[Row], bool]:
        async with self._lists.connect() as connection:
            return await newest_first_page(
                connection, webhook_endpoints, merchant, limit, starting_after, "webhook_endpoint"
            )

    async def update(self, merchant: Merchant, endpoint_id: str, change: EndpointChange) -> Row:
        values: dict = {"updated_at": func.now()}
        if change.url is not None:
            values["url"] = change.url
        if change.enabled_events:
            values["enabled_events"] = list(change.enabled_events)
        if change.description is not None:
            values["description"] = change.description or None
        if change.disabled is not None:
            values["status"] = "disabled" if change.disabled else "enabled"
            values["disabled_reason"] = "merchant" if change.disabled else None
            if not change.disabled:
                values["failing_since"] = None
        return await self._change(merchant, endpoint_id, values)

    async def roll(self, merchant: Merchant, endpoint_id: str, overlap_seconds: float):
        """A new secret; the current one keeps signing beside it for `overlap_seconds`."""
        current = await self.get(merchant, endpoint_id)
        secret = signing.new_secret(current.signature_scheme)
        row = await self._change(
            merchant,
            endpoint_id,
            {
                "secret": self._box.seal(endpoint_id, secret),
                "previous_secret": current.secret,
                "previous_secret_expires_at": func.now()
                + func.make_interval(0, 0, 0, 0, 0, 0, overlap_seconds),
                "updated_at": func.now(),
            },
            expected_secret=current.secret,
        )
        return row, secret

    async def delete(self, merchant: Merchant, endpoint_id: str) -> None:
        table = webhook_endpoints.c
        async with self._engine.begin() as connection:
            deleted = (
                await connection.execute(
                    delete(webhook_endpoints)
                    .where(
                        table.id == endpoint_id,
                        table.merchant_id == merchant.id,
                        table.livemode == merchant.livemode,
                    )
                    .returning(table.id)
                )
            ).first()
        if deleted is None:
            raise _missing()

    def signing_secrets(
        self,
        endpoint_id: str,
        sealed: str,
        previous: str | None,
        previous_expires_at: datetime | None,
        now: datetime,
    ) -> list[str]:
        """The secrets that sign a delivery to the endpoint now: its current one, and the
        previous one while the roll's overlap lasts."""
        in_use = [self._box.open(endpoint_id, sealed)]
        if previous and previous_expires_at and previous_expires_at > now:
            in_use.append(self._box.open(endpoint_id, previous))
        return in_use

    async def _change(
        self, merchant: Merchant, endpoint_id: str, values: dict, expected_secret: str = ""
    ) -> Row:
        table = webhook_endpoints.c
        conditions = [
            table.id == endpoint_id,
            table.merchant_id == merchant.id,
            table.livemode == merchant.livemode,
        ]
        if expected_secret:  # two rolls at once: one wins, the other changes nothing
            conditions.append(table.secret == expected_secret)
        async with self._engine.begin() as connection:
            row = (
                await connection.execute(
                    update(webhook_endpoints)
                    .where(*conditions)
                    .values(values)
                    .returning(webhook_endpoints)
                )
            ).first()
        if row is None:
            if expected_secret:
                raise Conflict("the secret was rolled by another request", reason="secret_rolled")
            raise _missing()
        return row


def _missing() -> NotFound:
    return NotFound("no such webhook_endpoint", reason="resource_missing")
