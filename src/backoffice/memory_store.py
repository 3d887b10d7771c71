"""The in-memory twin of store.PostgresStore, for the pages' unit tests."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

from backoffice.store import AuditRow, Operator, OperatorExists, Session


class MemoryStore:
    def __init__(self) -> None:
        self.operators_by_email: dict[str, Operator] = {}
        self.sessions: dict[str, Session] = {}
        self.audit_log: list[AuditRow] = []

    async def create_operator(self, operator: Operator, by: str) -> None:
        if operator.email in self.operators_by_email:
            raise OperatorExists(operator.email)
        self.operators_by_email[operator.email] = operator
        await self.audit(by, "operator.create", operator.email, "created", role=operator.role)

    async def operator(self, email: str) -> Operator | None:
        return self.operators_by_email.get(email)

    async def operators(self) -> list[Operator]:
        return sorted(self.operators_by_email.values(), key=lambda o: o.email)

    async def add_session(self, session: Session) -> None:
        self.sessions[session.digest] = session

    async def session(self, digest: str) -> Session | None:
        return self.sessions.get(digest)

    async def touch_session(self, digest: str, at: datetime) -> None:
        if digest in self.sessions:
            self.sessions[digest] = dataclasses.replace(self.sessions[digest], last_seen_at=at)

    async def end_session(self, digest: str) -> None:
        self.sessions.pop(digest, None)

    async def audit(
        self, operator: str, action: str, object_id: str, result: str, **details: Any
    ) -> None:
        row = AuditRow(datetime.now(UTC), operator, action, object_id, result, details)
        self.audit_log.append(row)

    async def audit_rows(self, limit: int = 100) -> list[AuditRow]:
        return list(reversed(self.audit_log))[:limit]
