"""The outbox in commit order when several server processes write to one store.

Two stores open on the same database (two writers, as two server processes would be). Writer A takes its outbox
ticket and stalls before its commit record is written; writer B commits meanwhile. A consumer must not be handed B's
events yet — acknowledging them would put A's earlier-ticketed commit behind its position for ever. Once A's commit
lands, the consumer gets A's events, then B's, and nothing is lost.

Runs on backends with the "commit-protocol" capability, against the MongoDB store's ticket protocol
(:mod:`fhir_server.storage.mongo.outbox`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from bson import ObjectId

from fhir_server.storage import open_store_from_url
from fhir_server.storage.base import Version, WriteTx
from tests.conftest import requires
from tests.support.server import fresh_mongodb_url


def _put(rid: str) -> Any:
    async def unit(tx: WriteTx) -> Version:
        return await tx.put("Patient", rid, {"resourceType": "Patient"}, method="PUT")

    return unit


def test_a_consumer_never_passes_a_commit_in_flight(backend: str) -> None:
    requires(backend, "commit-protocol")
    from fhir_server.storage.mongo.store import MongoStore

    async def run() -> None:
        url = fresh_mongodb_url("outbox")
        a, b = open_store_from_url(url), open_store_from_url(url)
        assert isinstance(a, MongoStore) and isinstance(b, MongoStore)
        await a.open()
        await b.open()
        try:
            await a.transact(_put("before"))
            assert [e.rid for e in await b.outbox_read("c")] == ["before"]
            # A: a commit in flight — ticket taken, record not yet written
            ticket = await a._protocol.tickets.take()
            await b.transact(_put("from-b"))
            assert [e.rid for e in await b.outbox_read("c")] == ["before"], "B's commit was handed out past A's"
            # A's record lands (as Protocol.commit writes it), and A releases its ticket
            assert a._db is not None
            await a._db["commits"].insert_one({"_id": ObjectId(), "st": "c", "o": ticket, "w": a._writer_id,
                                               "at": "", "ev": [{"s": 1, "t": "Patient", "i": "from-a", "v": 1,
                                                                 "o": "create", "at": ""}]})
            await a._protocol.tickets.done(ticket)
            events = await b.outbox_read("c")
            assert [e.rid for e in events] == ["before", "from-a", "from-b"]
            await b.outbox_ack("c", events[1].seq)
            last = await a.outbox_read("c")
            assert [e.rid for e in last] == ["from-b"]
            await a.outbox_ack("c", last[0].seq)
            # a limit inside one record resumes inside it
            async def many(tx: WriteTx) -> None:
                for n in range(5):
                    await tx.put("Patient", f"m{n}", {"resourceType": "Patient"}, method="PUT")

            await a.transact(many)
            first = await b.outbox_read("c", limit=3)
            await b.outbox_ack("c", first[-1].seq)
            rest = await b.outbox_read("c")
            assert [e.rid for e in first + rest] == [f"m{n}" for n in range(5)]
        finally:
            await a.close()
            await b.close()

    asyncio.run(run())
