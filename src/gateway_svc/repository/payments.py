"""PaymentRepository: the store of the payment path (intents, refunds and their lists), the
one object the use cases and the in-memory twin (gateway_svc.memory_repository) share."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from gateway_svc.repository.intents import Intents
from gateway_svc.repository.lists import Lists
from gateway_svc.repository.refunds import Refunds
from paymesh.platform.db import autocommit
from paymesh.platform.direct_sql import DirectSql


class PaymentRepository(Intents, Refunds, Lists):
    """`direct`: the statements of the payment path (reads by id, the intent's insert and
    changes, key bindings) run straight on psycopg; transactions of several statements and
    the sweep's scans go through the engine. `lists`: the engine of the merchant's list
    (DATABASE_READ_URL's replica, which may lag), `engine` by default."""

    def __init__(self, engine: AsyncEngine, direct: DirectSql, lists: AsyncEngine | None = None):
        self._engine = engine
        self._autocommit = autocommit(engine)
        self._lists = autocommit(lists or engine)
        self._direct = direct
