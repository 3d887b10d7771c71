"""Column shapes the services' table definitions share (their migrations keep their own
copies: a revision never changes once applied)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, DateTime, func


def moment(name: str, nullable: bool = True) -> Column[datetime]:
    """A timestamptz column."""
    return Column(name, DateTime(timezone=True), nullable=nullable)


def set_now(name: str) -> Column[datetime]:
    """A timestamptz column the database fills with now() on insert."""
    return Column(name, DateTime(timezone=True), nullable=False, server_default=func.now())
