"""The pool of prepare processes (``AEGIS_PREPARE_WORKERS``), started on first use.

A transaction Bundle of ``AEGIS_PREPARE_MIN_BYTES`` or more is parsed, validated and indexed in one of these
processes while the event loop writes the previous one, so ingest uses a second core (see ``bench/RESULTS.md``).
Smaller requests are not worth the hop: a one-entry transaction took ~0.5 ms longer through the pool (median
1.6 ms against 1.1 ms, sequential requests). With the pool off (0 workers) everything is prepared on the event loop.

The processes are spawned, not forked: the server process has threads and open SQLite connections by then. They
hold no store connection and write nothing, so losing one loses no data: the request is prepared on the event loop
instead, and the pool is restarted on the next use.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from fhir_server.lifecycle import exit_with_parent, settle_heap
from fhir_server.prepare.transaction import IndexPreparer, PreparedTransaction, prepare_transaction

log = logging.getLogger(__name__)

_index_preparer: IndexPreparer | None = None  # in a worker process: the store's, set by _init


def _init(index_preparer: IndexPreparer | None, parent: int) -> None:
    global _index_preparer
    _index_preparer = index_preparer
    exit_with_parent(parent, "aegis-prepare-watchdog")
    import fhir_server.interactions.bundle  # noqa: F401  (the work's modules, loaded before the heap is frozen)
    import fhir_server.search.extract  # noqa: F401

    settle_heap()


def _prepare(body: bytes, base: str) -> PreparedTransaction | None:
    return prepare_transaction(body, base, _index_preparer)


class PreparePool:
    def __init__(self, workers: int, min_bytes: int) -> None:
        self.workers = workers
        self.min_bytes = min_bytes
        self._index_preparer: IndexPreparer | None = None
        self._executor: ProcessPoolExecutor | None = None

    def attach(self, index_preparer: IndexPreparer | None) -> None:
        """The store's index preparer (once the store is open: it carries the store's parameter ids)."""
        self._index_preparer = index_preparer

    def wants(self, body: bytes) -> bool:
        return self.workers > 0 and len(body) >= self.min_bytes

    async def transaction(self, body: bytes, base: str) -> PreparedTransaction | None:
        """The prepared transaction, or None: not one the pool prepares, or the pool failed (logged)."""
        executor = self._executor
        if executor is None:
            executor = self._executor = ProcessPoolExecutor(
                self.workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init,
                initargs=(self._index_preparer, os.getpid()))
        try:
            return await asyncio.get_running_loop().run_in_executor(executor, _prepare, body, base)
        except BrokenProcessPool:
            log.error("a prepare process died; restarting the pool, this request is prepared on the event loop")
            if self._executor is executor:
                self._executor = None
                executor.shutdown(wait=False, cancel_futures=True)
        except Exception:
            log.exception("preparing a transaction failed; it is prepared on the event loop")
        return None

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
