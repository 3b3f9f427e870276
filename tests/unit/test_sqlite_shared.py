"""Several processes on one SQLite store (``aegis serve --workers N``, ``aegis load`` beside a server): their writes
take turns through the cross-process write lock, and lastUpdated follows commit order whatever each one's clock
says. Two stores opened on one file stand in for two processes (each has its own connections, lock descriptor and
clock)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from fhir_server.storage.base import Version, WriteTx
from fhir_server.storage.sqlite.store import SqliteStore


def _put(rid: str) -> Callable[[WriteTx], Awaitable[Version]]:
    async def unit(tx: WriteTx) -> Version:
        return await tx.put("Patient", rid, {"resourceType": "Patient", "id": rid}, method="PUT")

    return unit


def test_last_updated_follows_commit_order_across_processes(tmp_path: Path) -> None:
    async def run() -> None:
        a, b = SqliteStore(str(tmp_path / "aegis.db")), SqliteStore(str(tmp_path / "aegis.db"))
        await a.open()
        await b.open()
        try:
            a._last_millis = time.time_ns() // 1_000_000 + 10 * 86_400_000  # a clock ten days ahead
            ahead = await a.transact(_put("from-a"))
            behind = await b.transact(_put("from-b"))
            assert behind.seq > ahead.seq
            assert behind.last_updated >= ahead.last_updated, (ahead.last_updated, behind.last_updated)
        finally:
            await a.close()
            await b.close()

    asyncio.run(run())


def test_writers_of_one_store_take_turns(tmp_path: Path) -> None:
    async def run() -> None:
        stores = [SqliteStore(str(tmp_path / "aegis.db")) for _ in range(3)]
        for s in stores:
            await s.open()
        try:
            # every store writes at once, many small batches each: none may fail with "database is locked"
            versions = await asyncio.gather(*(stores[i % 3].transact(_put(f"p{i}")) for i in range(300)))
            assert len({v.seq for v in versions}) == 300
            by_seq = sorted(versions, key=lambda v: v.seq)
            stamps = [v.last_updated for v in by_seq]
            assert stamps == sorted(stamps), "lastUpdated went back in commit order"
            for s in stores:
                assert (await s.read("Patient", "p299")) is not None
        finally:
            for s in stores:
                await s.close()

    asyncio.run(run())
