"""Group commit for the SQLite store.

Units of work queue up; one writer task runs every queued unit in order inside one SQLite transaction, each unit in
its own SAVEPOINT (so a failing unit rolls back alone), then commits once in a worker thread. Callers are answered
only after that commit returned, so an acknowledged write is durable (``synchronous=FULL``: fsynced), while the cost
of the fsync is shared by every write that arrived while the previous commit was in flight.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

log = logging.getLogger(__name__)

Unit = Callable[[], Awaitable[Any]]


class StorageUnavailable(Exception):
    """The commit itself failed (disk full, I/O error): nothing of the batch was written."""


class GroupCommitWriter:
    # refresh the planner's statistics after this many writes (cheap: sampled, see refresh_statistics)
    ANALYZE_EVERY = 25_000

    def __init__(self, conn: sqlite3.Connection, max_batch: int = 512) -> None:
        self._conn = conn
        self._writes_since_analyze = 0
        self._max_batch = max_batch
        self._queue: list[tuple[Unit, asyncio.Future[Any]]] = []
        self._wake = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="aegis-sqlite-commit")
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="aegis-sqlite-writer")

    async def submit(self, unit: Unit) -> Any:
        if self._closing:
            raise StorageUnavailable("the store is closing")
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append((unit, fut))
        self._wake.set()
        return await fut

    async def close(self) -> None:
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
        self._executor.shutdown(wait=True)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                batch, self._queue = self._queue[: self._max_batch], self._queue[self._max_batch :]
                try:
                    outcomes = await self._run_batch(batch)
                    await loop.run_in_executor(self._executor, self._conn.execute, "COMMIT")
                except sqlite3.Error as exc:
                    outcomes = [(fut, None, None) for _, fut in batch]
                    log.exception("group commit failed")
                    self._rollback()
                    outcomes = [(fut, None, StorageUnavailable(f"the write could not be committed: {exc}"))
                                for fut, _, _ in outcomes]
                self._writes_since_analyze += len(batch)
                if self._writes_since_analyze >= self.ANALYZE_EVERY:
                    self._writes_since_analyze = 0
                    await loop.run_in_executor(self._executor, refresh_statistics, self._conn)
                for fut, result, error in outcomes:
                    if fut.done():
                        continue
                    if error is None:
                        fut.set_result(result)
                    else:
                        fut.set_exception(error)
            if self._closing and not self._queue:
                return

    async def _run_batch(
        self, batch: list[tuple[Unit, asyncio.Future[Any]]]
    ) -> list[tuple[asyncio.Future[Any], Any, BaseException | None]]:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        for unit, fut in batch:
            conn.execute("SAVEPOINT unit")
            try:
                result = await unit()
            except Exception as exc:  # the unit's own failure: undo just this unit
                conn.execute("ROLLBACK TO unit")
                conn.execute("RELEASE unit")
                outcomes.append((fut, None, exc))
            else:
                conn.execute("RELEASE unit")
                outcomes.append((fut, result, None))
        return outcomes

    def _rollback(self) -> None:
        try:
            self._conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass


def refresh_statistics(conn: sqlite3.Connection) -> None:
    """Sampled ANALYZE: without statistics SQLite guesses that ``rtype = ?`` is selective and may scan a whole type
    where an index lookup was meant; a sample of each index is enough to tell it otherwise, in milliseconds."""
    try:
        conn.execute("PRAGMA analysis_limit = 1000")
        conn.execute("ANALYZE")
    except sqlite3.Error:
        log.exception("ANALYZE failed; the query planner keeps its previous statistics")
