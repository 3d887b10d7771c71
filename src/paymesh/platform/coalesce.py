"""Group commit for calls made side by side: while one batch is out (a statement, an RPC),
the items that arrive wait and leave together when it returns; an item that finds nothing
out leaves at once, alone. Under load each round trip carries many items; at rest none waits."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Answer = TypeVar("Answer")


class Coalescer(Generic[Item, Answer]):
    def __init__(
        self, send: Callable[[list[Item]], Awaitable[Sequence[Answer]]], max_batch: int = 100
    ):
        """`send(items)` answers each item, in order (or raises: every item of the batch gets
        the error)."""
        self._send = send
        self._max_batch = max_batch
        self._waiting: list[tuple[Item, asyncio.Future[Answer]]] = []
        self._sender: asyncio.Task[None] | None = None

    async def submit(self, item: Item) -> Answer:
        answer: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, answer))
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send_waiting())
        return await answer

    async def _send_waiting(self) -> None:
        while self._waiting:
            batch = self._waiting[: self._max_batch]
            del self._waiting[: len(batch)]
            try:
                answers = await self._send([item for item, _ in batch])
            except Exception as error:  # noqa: BLE001 - each waiting caller gets it
                for _, answer in batch:
                    if not answer.done():
                        answer.set_exception(error)
                continue
            for (_, answer), value in zip(batch, answers, strict=True):
                if not answer.done():  # its caller may have been cancelled meanwhile
                    answer.set_result(value)
