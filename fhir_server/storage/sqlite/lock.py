"""The store's cross-process write lock: one writer at a time among the processes sharing a store file.

Several processes write to one SQLite store: the serving workers (``aegis serve --workers N``) and ``aegis load``
beside a running server. SQLite serialises their transactions itself, but a writer that finds the database locked
polls with sleeps of 1 ms and more (its busy handler), and two processes' group commits would stall each other.
An advisory ``flock`` on ``<store>.lock`` is taken before each write transaction and released after its COMMIT or
ROLLBACK instead: a waiting process blocks in the kernel (on a thread, never on the event loop) and wakes the
moment the lock is free. Under the lock, a process also catches its clock up with the store's newest
``lastUpdated`` (see ``SqliteStore``), so lastUpdated follows commit order across processes.

The lock is advisory: a process that writes to the file without it (the ``sqlite3`` shell) is still serialised by
SQLite's own locking, only more slowly.
"""

from __future__ import annotations

import fcntl
import os


class WriteLock:
    def __init__(self, db_path: str) -> None:
        self.path = db_path + ".lock"
        self._fd: int | None = None
        self._held = False

    def open(self) -> None:
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)

    def try_acquire(self) -> bool:
        """Take the lock if it is free now (never blocks: fine on the event loop)."""
        assert self._fd is not None, "lock is not open"
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        self._held = True
        return True

    def acquire(self) -> None:
        """Wait for the lock (blocks: call it on a thread)."""
        assert self._fd is not None, "lock is not open"
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        self._held = True

    def release(self) -> None:
        if self._held and self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            self._held = False

    def close(self) -> None:
        self.release()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
