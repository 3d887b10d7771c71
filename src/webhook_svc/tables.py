"""webhook_svc's tables, all in the `webhook` schema."""

from __future__ import annotations

from sqlalchemy import Boolean, Column, DateTime, MetaData, String, Table, Text, func
from sqlalchemy.dialects.postgresql import ARRAY

from paymesh.platform.outbox import outbox_table

SCHEMA = "webhook"
metadata = MetaData(schema=SCHEMA)

webhook_endpoints = Table(
    "webhook_endpoints",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("merchant_id", String(40), nullable=False),
    Column("livemode", Boolean, nullable=False),
    Column("url", Text, nullable=False),
    Column("enabled_events", ARRAY(Text), nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

outbox = outbox_table(metadata, SCHEMA)
