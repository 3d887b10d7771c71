"""rebill_svc's tables, all in the `rebill` schema."""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, DateTime, MetaData, String, Table, func

from paymesh.platform.outbox import outbox_table

SCHEMA = "rebill"
metadata = MetaData(schema=SCHEMA)

subscriptions = Table(
    "subscriptions",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("merchant_id", String(40), nullable=False),
    Column("livemode", Boolean, nullable=False),
    Column("payment_method", String(40), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("interval", String(10), nullable=False),
    Column("status", String(16), nullable=False),
    Column("current_period_start", DateTime(timezone=True), nullable=False),
    Column("current_period_end", DateTime(timezone=True), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

outbox = outbox_table(metadata, SCHEMA)
