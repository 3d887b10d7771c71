"""Creating operators (the CLI's `paymesh operators create` and the Operators page)."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from backoffice.access import ROLES
from backoffice.passwords import MIN_LENGTH, generate_password, hash_password
from backoffice.store import Operator, Store

_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


class InvalidOperator(ValueError):
    """The field named in the message is wrong."""


def check(email: str, role: str, password: str | None) -> None:
    if not _EMAIL.fullmatch(email) or len(email) > 254:
        raise InvalidOperator(f"email: {email!r} is not an email address")
    if role not in ROLES:
        raise InvalidOperator(f"role: {role!r} is not one of {', '.join(ROLES)}")
    if password is not None and len(password) < MIN_LENGTH:
        raise InvalidOperator(f"password: at least {MIN_LENGTH} characters")


async def create_operator(
    store: Store, email: str, role: str, password: str | None = None, by: str = "cli"
) -> tuple[Operator, str]:
    """The new operator and its password (a generated one-time one unless given). Raises
    InvalidOperator, or store.OperatorExists for a taken email."""
    email = email.strip().lower()
    check(email, role, password)
    password = password or generate_password()
    operator = Operator(email, role, hash_password(password), datetime.now(UTC))
    await store.create_operator(operator, by)
    return operator, password
