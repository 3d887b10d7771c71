"""What the back office keeps in its own schema: operators, their sessions (by the digest of
the cookie's id) and the append-only audit of what each did. PostgresStore is the real one;
memory_store.MemoryStore its in-memory twin for the pages' unit tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from backoffice.tables import operator_audit, operators, sessions
from paymesh.platform.audit_details import read_details, stored_details

AUDIT_CHAIN = "backoffice"  # the audit rows' merchant_id: the operators' own chain
AUDIT_ACTOR = "operator"


@dataclass(frozen=True)
class Operator:
    email: str
    role: str
    password_hash: str
    created_at: datetime


@dataclass(frozen=True)
class Session:
    digest: str
    email: str
    csrf_token: str
    created_at: datetime
    last_seen_at: datetime


@dataclass(frozen=True)
class AuditRow:
    at: datetime
    operator: str
    action: str
    object_id: str
    result: str
    details: dict[str, Any] = field(default_factory=dict)


class OperatorExists(Exception):
    pass


class Store(Protocol):
    async def create_operator(self, operator: Operator, by: str) -> None: ...
    async def operator(self, email: str) -> Operator | None: ...
    async def operators(self) -> list[Operator]: ...
    async def add_session(self, session: Session) -> None: ...
    async def session(self, digest: str) -> Session | None: ...
    async def touch_session(self, digest: str, at: datetime) -> None: ...
    async def end_session(self, digest: str) -> None: ...
    async def audit(
        self, operator: str, action: str, object_id: str, result: str, **details: Any
    ) -> None: ...
    async def audit_rows(self, limit: int = 100) -> list[AuditRow]: ...


def _operator(row: Any) -> Operator:
    return Operator(row.email, row.role, row.password_hash, row.created_at)


class PostgresStore:
    def __init__(self, engine: AsyncEngine):
        self._engine = engine

    async def create_operator(self, operator: Operator, by: str) -> None:
        """The operator and its audit row (made `by` whom), in one transaction."""
        async with self._engine.begin() as connection:
            try:
                await connection.execute(
                    insert(operators).values(
                        email=operator.email,
                        role=operator.role,
                        password_hash=operator.password_hash,
                        created_at=operator.created_at,
                    )
                )
            except IntegrityError:
                raise OperatorExists(operator.email) from None
            await connection.execute(
                insert(operator_audit),
                [
                    _audit_values(
                        by, "operator.create", operator.email, "created", role=operator.role
                    )
                ],
            )

    async def operator(self, email: str) -> Operator | None:
        async with self._engine.connect() as connection:
            row = (
                await connection.execute(select(operators).where(operators.c.email == email))
            ).first()
        return _operator(row) if row else None

    async def operators(self) -> list[Operator]:
        async with self._engine.connect() as connection:
            rows = await connection.execute(select(operators).order_by(operators.c.email))
            return [_operator(row) for row in rows]

    async def add_session(self, session: Session) -> None:
        async with self._engine.begin() as connection:
            await connection.execute(
                insert(sessions).values(
                    digest=session.digest,
                    email=session.email,
                    csrf_token=session.csrf_token,
                    created_at=session.created_at,
                    last_seen_at=session.last_seen_at,
                )
            )

    async def session(self, digest: str) -> Session | None:
        async with self._engine.connect() as connection:
            row = (
                await connection.execute(select(sessions).where(sessions.c.digest == digest))
            ).first()
        if row is None:
            return None
        return Session(row.digest, row.email, row.csrf_token, row.created_at, row.last_seen_at)

    async def touch_session(self, digest: str, at: datetime) -> None:
        async with self._engine.begin() as connection:
            await connection.execute(
                update(sessions).where(sessions.c.digest == digest).values(last_seen_at=at)
            )

    async def end_session(self, digest: str) -> None:
        async with self._engine.begin() as connection:
            await connection.execute(delete(sessions).where(sessions.c.digest == digest))

    async def audit(
        self, operator: str, action: str, object_id: str, result: str, **details: Any
    ) -> None:
        async with self._engine.begin() as connection:
            await connection.execute(
                insert(operator_audit),
                [_audit_values(operator, action, object_id, result, **details)],
            )

    async def audit_rows(self, limit: int = 100) -> list[AuditRow]:
        async with self._engine.connect() as connection:
            rows = await connection.execute(
                select(operator_audit).order_by(operator_audit.c.id.desc()).limit(limit)
            )
            found = []
            for row in rows:
                details = dict(read_details(row.details, row.details_z))
                who = str(details.pop("operator", ""))
                found.append(AuditRow(row.at, who, row.action, row.object_id, row.result, details))
            return found


def _audit_values(
    operator: str, action: str, object_id: str, result: str, **details: Any
) -> dict[str, Any]:
    stored, compressed = stored_details({"operator": operator, **details})
    return {
        "merchant_id": AUDIT_CHAIN,
        "actor": AUDIT_ACTOR,
        "action": action,
        "object_id": object_id[:40],
        "result": result,
        "details": stored,
        "details_z": compressed,
    }
