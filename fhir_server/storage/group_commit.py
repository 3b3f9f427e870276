"""Group commit, backend-neutral: one writer task per store runs queued units of work in batches.

Units queue up while the previous batch commits; the writer then runs every queued unit (up to ``max_batch``) in
order, each inside its own undo scope (a failing unit is undone alone and gets its own error), commits the batch
once, and only then answers the callers. So an acknowledged write is durable, and the cost of making it durable (an
fsync, a journaled write) is shared by every write that arrived meanwhile. Running the units one after the other in
one task is also what serialises a conditional interaction's match with its write inside one process.

A backend supplies the batch (:class:`Batch`): how a batch begins, how one unit runs in its undo scope, how the
batch commits or rolls back. The SQLite store's batch is one transaction with a SAVEPOINT per unit and one COMMIT
(:mod:`fhir_server.storage.sqlite.writer`); the MongoDB store's is an in-memory overlay published by its commit
protocol (:mod:`fhir_server.storage.mongo.commit`).

The crash points ``group-commit.before-commit`` (every unit ran, nothing committed) and
``group-commit.after-commit`` (committed, nobody answered yet) let fault-injection tests stop the process there
(:mod:`fhir_server.storage.faults`).
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from typing import Any

from fhir_server.storage.faults import crash_point
from resources.outcome import FhirError

log = logging.getLogger(__name__)

Unit = Callable[..., Awaitable[Any]]
Outcome = tuple["asyncio.Future[Any]", Any, BaseException | None]


class StorageUnavailable(Exception):
    """The store could not make a write durable (disk full, I/O error, database unreachable): nothing of the batch
    was written, or (said in the message) its outcome is settled later by the store."""


class BatchFailed(Exception):
    """Raised by :meth:`Batch.run` when the batch itself broke (not the unit): every unit of the batch fails."""


class Batch(ABC):
    """One batch of units, from its beginning to its commit or rollback."""

    @abstractmethod
    async def run(self, unit: Unit) -> Any:
        """Run one unit in its own undo scope: on an exception undo exactly this unit's writes and re-raise; raise
        :class:`BatchFailed` when the undo scope itself fails."""

    @abstractmethod
    async def commit(self) -> None:
        """Make every kept write durable (or raise, having written nothing: the callers learn of the failure)."""

    async def rollback(self) -> None:
        """Undo the batch after a failure outside the units (default: nothing to undo)."""


class GroupCommitWriter:
    """The writer task. ``begin`` opens a :class:`Batch`; ``after_batch(n)`` runs after each batch of n units
    (housekeeping, e.g. refreshing planner statistics), before the callers are answered."""

    def __init__(self, begin: Callable[[], Awaitable[Batch]], *, max_batch: int, name: str,
                 after_batch: Callable[[int], Awaitable[None]] | None = None) -> None:
        self._begin = begin
        self._after_batch = after_batch
        self._max_batch = max_batch
        self._name = name
        self._queue: list[tuple[Unit, asyncio.Future[Any]]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self._name)

    async def submit(self, unit: Unit) -> Any:
        if self._closing:
            raise StorageUnavailable("the store is closing")
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append((unit, fut))
        self._wake.set()
        return await fut

    async def close(self) -> None:
        """Finish what is queued, then stop the task."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                items, self._queue = self._queue[: self._max_batch], self._queue[self._max_batch:]
                outcomes = await self._run_batch(items)
                for fut, result, error in outcomes:
                    if fut.done():  # the caller went away (cancelled): the write stands, nobody to tell
                        continue
                    if error is None:
                        fut.set_result(result)
                    else:
                        fut.set_exception(error)
            if self._closing and not self._queue:
                return

    async def _run_batch(self, items: list[tuple[Unit, asyncio.Future[Any]]]) -> list[Outcome]:
        """Every unit's outcome; never raises (the writer task must outlive any failure)."""
        outcomes: list[Outcome] = []
        batch: Batch | None = None
        try:
            batch = await self._begin()
            for unit, fut in items:
                try:
                    result = await batch.run(unit)
                except BatchFailed:
                    raise
                except Exception as exc:  # the unit's own failure: the batch undid just this unit
                    outcomes.append((fut, None, exc))
                else:
                    outcomes.append((fut, result, None))
            crash_point("group-commit.before-commit")
            await batch.commit()
            crash_point("group-commit.after-commit")
        except Exception as exc:
            cause = exc.__cause__ if isinstance(exc, BatchFailed) and isinstance(exc.__cause__, Exception) else exc
            failure = cause if isinstance(cause, (StorageUnavailable, FhirError)) else None
            if failure is None:
                log.exception("group commit failed")
                failure = StorageUnavailable(f"the write could not be committed: {cause}")
            if batch is not None:
                try:
                    await batch.rollback()
                except Exception:  # the batch failed already; its callers hear about that failure
                    log.exception("rollback after a failed group commit failed")
            ran = {id(fut): error for fut, _, error in outcomes}
            # a unit that failed on its own keeps its own error; every other one shares the batch's failure
            outcomes = [(fut, None, ran.get(id(fut)) or failure) for _, fut in items]
        if self._after_batch is not None:
            try:
                await self._after_batch(len(items))
            except Exception:
                log.exception("after-batch housekeeping failed")
        return outcomes
