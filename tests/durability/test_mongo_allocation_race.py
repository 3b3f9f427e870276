"""Allocations that must have one winner, raced by several server processes sharing one MongoDB database.

Each thread stands for a server process: its own event loop and its own ``AsyncMongoClient`` (its own connections).
FerretDB 1.24 does not make a filtered update atomic across connections (a ``find_one_and_update`` with ``$inc`` or
a compare-and-set ``update_one`` lets several callers win), so the store allocates by inserting unique ``_id``s; these
tests race the allocations against the real server and require unique results:

* writer slots (the middle bits of every version sequence number): stores opened at the same moment;
* outbox tickets (the commit order consumers read in): writers taking tickets at the same moment.

Runs on backends with the "commit-protocol" capability.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from bson import ObjectId

from fhir_server.storage import open_store_from_url
from tests.conftest import requires
from tests.support.server import fresh_mongodb_url

THREADS = 4


def _race(n: int, work: Callable[[threading.Barrier], Awaitable[Any]]) -> list[Any]:
    """Run ``work`` in ``n`` threads, each with an event loop of its own; their results (an exception re-raised)."""
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            results[i] = asyncio.run(work(barrier))  # type: ignore[arg-type]
        except BaseException as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    if errors:
        raise errors[0]
    return results


def test_stores_opened_together_get_distinct_writer_slots(backend: str) -> None:
    requires(backend, "commit-protocol")
    from fhir_server.storage.mongo.store import MongoStore

    for attempt in range(4):
        url = fresh_mongodb_url("slots")

        async def first() -> None:  # the database exists (schema, indexes) before the race, as in a deployment
            store = open_store_from_url(url)
            await store.open()
            await store.close()

        if attempt:  # the first race creates the database too (one-time steps raced: schema, probe)
            asyncio.run(first())

        async def open_one(barrier: threading.Barrier) -> tuple[int, Any]:
            store = open_store_from_url(url)
            assert isinstance(store, MongoStore)
            await asyncio.to_thread(barrier.wait)
            await store.open()
            try:
                return store._clock.slot, store._writer_id
            finally:
                # closing releases the slot: wait until every thread has its own, so none is reused in the race
                await asyncio.to_thread(barrier.wait)
                await store.close()

        slots = [slot for slot, _ in _race(THREADS, open_one)]
        assert len(set(slots)) == THREADS, f"stores opened together shared a writer slot: {sorted(slots)}"


def test_writers_taking_tickets_together_get_distinct_tickets(backend: str) -> None:
    requires(backend, "commit-protocol")
    from pymongo import AsyncMongoClient
    from pymongo.uri_parser import parse_uri

    from fhir_server.storage.mongo.outbox import Tickets

    url = fresh_mongodb_url("tickets")

    async def first() -> None:
        store = open_store_from_url(url)
        await store.open()
        await store.close()

    asyncio.run(first())
    rounds = 10

    async def take(barrier: threading.Barrier) -> list[int]:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(url)
        try:
            tickets = Tickets(client[parse_uri(url)["database"]], ObjectId())
            taken = []
            for _ in range(rounds):
                await asyncio.to_thread(barrier.wait)
                ticket = await tickets.take()
                taken.append(ticket)
                await tickets.done(ticket)
            return taken
        finally:
            await client.close()

    taken = [t for per_thread in _race(THREADS, take) for t in per_thread]
    duplicates = sorted({t for t in taken if taken.count(t) > 1})
    assert not duplicates, f"{len(duplicates)} ticket(s) were handed to more than one writer: {duplicates[:10]}"
    assert len(taken) == THREADS * rounds
