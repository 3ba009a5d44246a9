"""Write-behind for store writes made from synchronous outcome subscribers.

Outcome subscribers must not block the stream that produced the outcome, so their store
writes are queued here and run in order by one background task. The queue is bounded: when
the store is far behind, the oldest pending writes are dropped and counted rather than
growing memory without limit.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable

log = logging.getLogger("gateway.store")

Write = Callable[[], Awaitable[None]]


class WriteBehind:
    def __init__(self, max_pending: int = 100_000) -> None:
        self._pending: deque[Write] = deque(maxlen=max_pending)
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0

    def submit(self, write: Write) -> None:
        if len(self._pending) == self._pending.maxlen:
            self.dropped += 1
        self._pending.append(write)
        self._wakeup.set()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            await self.drain()

    async def drain(self) -> None:
        while self._pending:
            write = self._pending.popleft()
            try:
                await write()
            except Exception:  # a store hiccup must not kill the writer; the store logs details
                log.warning("state store write failed", exc_info=True)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.drain()
