"""Checkpoints of the store's write-ahead log, on a thread and a connection of their own.

By default SQLite checkpoints inside the COMMIT that takes the log past 1,000 pages: the pages are copied back into
the database file and the file is fsynced, all while the group-commit writer waits for that COMMIT. On a large store
an ingest batch dirties thousands of pages scattered over the indexes, and their random writes and the fsync took
about half of every batch (COMMIT p50 90 ms at 19 GiB). Here the writer's COMMIT only appends to the log and fsyncs
it; this thread copies the log back after commits, PASSIVE (it never waits for, or blocks, the writer or readers),
at most every ``interval`` seconds, so a page rewritten by several batches is written back once.

The writer keeps SQLite's automatic checkpoint as a backstop at a far larger log (``BACKSTOP_PAGES``), for a
checkpointer that falls behind. Durability is unchanged: a commit is durable once its log frames are fsynced, and a
checkpoint fsyncs the database before the log is reused.
"""

from __future__ import annotations

import logging
import sqlite3
import threading

from fhir_server.storage.sqlite import schema

log = logging.getLogger(__name__)

# The writer's own automatic checkpoint, should this thread fall behind: 256 MiB of log at the default page size.
BACKSTOP_PAGES = 65536


class Checkpointer:
    def __init__(self, path: str, *, synchronous: str, interval: float = 0.25,
                 backstop_pages: int = BACKSTOP_PAGES) -> None:
        self._path = path
        self._synchronous = synchronous
        self._interval = interval
        self._backstop_pages = backstop_pages
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, writer: sqlite3.Connection) -> None:
        """Take over the checkpoints of ``writer``, the store's writing connection: its own become the backstop."""
        writer.execute(f"PRAGMA wal_autocheckpoint = {self._backstop_pages:d}")
        self._thread = threading.Thread(target=self._run, name="aegis-sqlite-checkpoint", daemon=True)
        self._thread.start()

    def committed(self) -> None:
        """A write transaction committed: there is log to copy back (called from any thread)."""
        self._wake.set()

    def close(self) -> None:
        """Stop after one last checkpoint, so a store closed cleanly leaves little log behind."""
        if self._thread is None:
            return
        self._closing.set()
        self._wake.set()
        self._thread.join()
        self._thread = None

    def _run(self) -> None:
        conn = schema.connect(self._path, synchronous=self._synchronous)
        try:
            while True:
                self._wake.wait()
                self._wake.clear()
                self._checkpoint(conn)
                if self._closing.is_set():
                    return
                # let commits accumulate: a page dirtied by several of them is copied back once
                self._closing.wait(self._interval)
        finally:
            conn.close()

    @staticmethod
    def _checkpoint(conn: sqlite3.Connection) -> None:
        try:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error:
            # the writer's backstop checkpoint still bounds the log; nothing is lost by skipping one
            log.exception("background checkpoint failed")
