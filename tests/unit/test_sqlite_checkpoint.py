"""The write-ahead log is copied back into the database by the store's checkpoint thread, not by the writer's
COMMIT (:mod:`fhir_server.storage.sqlite.checkpoint`), and it stays bounded under sustained writes."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from fhir_server.storage.base import Version, WriteTx
from fhir_server.storage.sqlite.store import SqliteStore


def _patient(rid: str, family: str, note: str = "") -> Callable[[WriteTx], Awaitable[Version]]:
    resource = {"resourceType": "Patient", "id": rid, "name": [{"family": family}]}
    if note:
        resource["text"] = {"status": "generated", "div": f'<div xmlns="http://www.w3.org/1999/xhtml">{note}</div>'}

    async def unit(tx: WriteTx) -> Version:
        return await tx.put("Patient", rid, resource, method="PUT")

    return unit


def test_a_commit_reaches_the_database_file_without_a_checkpoint_in_the_writer(tmp_path: Path) -> None:
    db = tmp_path / "aegis.db"

    async def run() -> None:
        store = SqliteStore(str(db))  # the writer's own checkpoint waits for 256 MiB of log: this write is tiny
        await store.open()
        try:
            await store.transact(_patient("p1", "Zqxwvutsrq"))
            assert (await store.read("Patient", "p1")) is not None
            deadline = time.monotonic() + 10
            while b"Zqxwvutsrq" not in db.read_bytes():
                assert time.monotonic() < deadline, "the committed write never left the log while the store was open"
                await asyncio.sleep(0.05)
        finally:
            await store.close()

    asyncio.run(run())


def test_the_log_stays_bounded_under_sustained_writes(tmp_path: Path) -> None:
    db = tmp_path / "aegis.db"
    wal = Path(str(db) + "-wal")
    note = "x" * 8000

    async def run() -> int:
        store = SqliteStore(str(db), wal_backstop_pages=64)
        await store.open()
        largest = 0
        try:
            for round_ in range(20):
                await asyncio.gather(*(store.transact(_patient(f"p{round_}-{i}", f"F{i}", note)) for i in range(20)))
                largest = max(largest, wal.stat().st_size if wal.exists() else 0)
            assert (await store.read("Patient", "p19-19")) is not None
        finally:
            await store.close()
        return largest

    largest = asyncio.run(run())
    written = os.path.getsize(db)
    assert written > 4 * 2**20, written  # 400 resources of 8 KB went through the log ...
    assert largest < 2 * 2**20, largest  # ... which was reused, never holding more than a few batches
