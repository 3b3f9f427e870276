"""Group commit for the SQLite store: the SQLite batch of :mod:`fhir_server.storage.group_commit`.

One batch is one SQLite transaction (``BEGIN IMMEDIATE``); each unit runs in its own SAVEPOINT (so a failing unit
rolls back alone); the batch commits once, in a worker thread. Callers are answered only after that commit returned,
so an acknowledged write is durable (``synchronous=FULL``: fsynced), while the cost of the fsync is shared by every
write that arrived while the previous commit was in flight.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable
from typing import Any

from fhir_server.storage import group_commit
from fhir_server.storage.group_commit import Batch, BatchFailed, StorageUnavailable, Unit
from fhir_server.storage.sqlite.lock import WriteLock

__all__ = ["GroupCommitWriter", "StorageUnavailable", "refresh_statistics"]

log = logging.getLogger(__name__)


class _SqliteBatch(Batch):
    def __init__(self, conn: sqlite3.Connection, executor: ThreadPoolExecutor, lock: WriteLock,
                 on_commit: Callable[[], None]) -> None:
        self._conn = conn
        self._executor = executor
        self._lock = lock
        self._on_commit = on_commit

    async def run(self, unit: Unit) -> Any:
        conn = self._conn
        try:
            conn.execute("SAVEPOINT unit")
        except sqlite3.Error as exc:
            raise BatchFailed() from exc
        try:
            result = await unit()
        except Exception:  # the unit's own failure: undo just this unit
            try:
                conn.execute("ROLLBACK TO unit")
                conn.execute("RELEASE unit")
            except sqlite3.Error as exc:
                raise BatchFailed() from exc
            raise
        try:
            conn.execute("RELEASE unit")
        except sqlite3.Error as exc:
            raise BatchFailed() from exc
        return result

    async def commit(self) -> None:
        # the one fsync of the batch, off the event loop
        await asyncio.get_running_loop().run_in_executor(self._executor, self._commit)

    def _commit(self) -> None:
        self._conn.execute("COMMIT")
        self._lock.release()  # not on failure: the rollback that follows releases it
        self._on_commit()

    async def rollback(self) -> None:
        try:
            self._conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass
        finally:
            self._lock.release()


class GroupCommitWriter(group_commit.GroupCommitWriter):
    # refresh the planner's statistics after this many writes (cheap: sampled, see refresh_statistics)
    ANALYZE_EVERY = 25_000

    def __init__(self, conn: sqlite3.Connection, lock: WriteLock, on_begin: Callable[[sqlite3.Connection], None],
                 on_commit: Callable[[], None], max_batch: int = 512) -> None:
        super().__init__(self._begin_batch, max_batch=max_batch, name="aegis-sqlite-writer",
                         after_batch=self._after)
        self._conn = conn
        self._lock = lock
        self._on_begin = on_begin
        self._on_commit = on_commit
        self._writes_since_analyze = 0
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="aegis-sqlite-commit")

    async def _begin_batch(self) -> Batch:
        # the lock is nearly always free (one serving process): then no hop to a thread
        if not self._lock.try_acquire():
            await asyncio.get_running_loop().run_in_executor(self._executor, self._lock.acquire)
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            self._on_begin(self._conn)
        except BaseException:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            self._lock.release()
            raise
        return _SqliteBatch(self._conn, self._executor, self._lock, self._on_commit)

    async def _after(self, units: int) -> None:
        self._writes_since_analyze += units
        if self._writes_since_analyze >= self.ANALYZE_EVERY:
            self._writes_since_analyze = 0
            await asyncio.get_running_loop().run_in_executor(self._executor, self._analyze)

    def _analyze(self) -> None:
        self._lock.acquire()
        try:
            refresh_statistics(self._conn)
        finally:
            self._lock.release()

    async def close(self) -> None:
        await super().close()
        self._executor.shutdown(wait=True)


def refresh_statistics(conn: sqlite3.Connection) -> None:
    """Sampled ANALYZE: without statistics SQLite guesses that ``rtype = ?`` is selective and may scan a whole type
    where an index lookup was meant; a sample of each index is enough to tell it otherwise, in milliseconds."""
    try:
        conn.execute("PRAGMA analysis_limit = 1000")
        conn.execute("ANALYZE")
    except sqlite3.Error:
        log.exception("ANALYZE failed; the query planner keeps its previous statistics")
