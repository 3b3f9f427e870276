"""The outbox in commit order, across every server process that writes to the database.

The commit records of :mod:`.commit` are the outbox. A consumer reads them after its acknowledged position and
acknowledges the last event it processed, so the order it reads in must never let a record appear *behind* a
position already acknowledged. Version sequence numbers cannot give that order when several processes write: each
process numbers its versions itself, and a slow commit with smaller numbers can land after a fast one with larger
numbers.

So every commit takes a **ticket** *before* inserting its commit record. A ticket is a document of ``tickets``,
``{_id: n, f: writer}``, and taking one is **inserting** it: the unique ``_id`` gives each number to exactly one
writer, on every server (FerretDB 1.24 does not make a filtered update atomic across connections, so a counter
document updated with a compare-and-set or ``$inc`` would hand one number to several writers). A writer inserts the
number after the highest it knows of, and on a duplicate key reads the highest taken and tries the next: so ticket
``n`` is only ever inserted once ``n - 1`` exists, and the tickets are dense and appear in number order. The same
insert registers the ticket as in flight (``f``, the writer); the record carries the ticket as ``o``, and the writer
unsets ``f`` (by ``_id``) once the record is inserted or can no longer be (aborted). Ticket documents are kept (one
small document per commit), so a number is never handed out twice.

A reader reads the highest ticket first, then the tickets in flight: records with a ticket below every ticket in
flight (and at most the highest) can no longer be joined by a smaller one, so it returns those, in ticket order, and
nothing beyond. A writer that dies with a ticket in flight holds the outbox back until recovery settles its
transaction and drops the ticket (:meth:`~.store.MongoStore` forgets dead writers at start-up and in its heartbeat).

Event positions are ``ticket << 20 | index in the record``, so acknowledging the last event read resumes inside a
record that had more events than the read's limit.
"""

from __future__ import annotations

from typing import Any

from pymongo import DESCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError, PyMongoError

from fhir_server.storage.base import OutboxEvent

Doc = dict[str, Any]
COLLECTION = "tickets"
INDEX_BITS = 20  # events per commit record: up to a million


async def _highest(db: AsyncDatabase[Doc]) -> int:
    newest = await db[COLLECTION].find({}, projection={"_id": 1}).sort("_id", DESCENDING).limit(1).to_list()
    return int(newest[0]["_id"]) if newest else 0


class Tickets:
    def __init__(self, db: AsyncDatabase[Doc], writer_id: Any) -> None:
        self._db = db
        self._col = db[COLLECTION]
        self._writer = writer_id
        self._guess = 0  # the highest ticket this process knows to exist
        self._open: set[int] = set()  # this writer's tickets still registered in flight

    async def take(self) -> int:
        """A new ticket, registered as in flight for this writer (an earlier ticket of this writer that is still
        registered, because its release failed, is released now: its commit's fate was decided before)."""
        while True:
            ticket = self._guess + 1
            try:
                await self._col.insert_one({"_id": ticket, "f": self._writer})
            except DuplicateKeyError:
                self._guess = max(self._guess + 1, await _highest(self._db))
                continue
            self._guess = ticket
            break
        for earlier in sorted(self._open):
            try:
                await self.done(earlier)
            except PyMongoError:
                break
        self._open.add(ticket)
        return ticket

    async def done(self, ticket: int) -> None:
        """This writer's ``ticket`` is no longer in flight (by ``_id``: only its writer, or the settler of a dead
        writer, clears it, and clearing is idempotent)."""
        await self._col.update_one({"_id": ticket}, {"$unset": {"f": ""}})
        self._open.discard(ticket)

    async def drop(self, writer: Any) -> None:
        """A dead writer's tickets are no longer in flight (once recovery has settled its transactions)."""
        async for doc in self._col.find({"f": writer}, projection={"_id": 1}):
            await self._col.update_one({"_id": doc["_id"]}, {"$unset": {"f": ""}})

    async def in_flight(self) -> list[str]:
        """The writers (ids as text) with a ticket in flight."""
        return list({str(doc["f"]) async for doc in self._col.find({"f": {"$exists": True}}, projection={"f": 1})})


async def read(db: AsyncDatabase[Doc], pos: int, limit: int) -> list[OutboxEvent]:
    """Events after position ``pos``, in commit order, as far as no commit in flight could still precede them."""
    # the highest first: every ticket up to it was inserted (registered in flight) before this read; each is then
    # either still in flight below, or released, which happens only after its record was inserted or aborted
    highest = await _highest(db)
    flying = [int(doc["_id"]) async for doc in db[COLLECTION].find({"f": {"$exists": True}}, projection={"_id": 1})]
    below = min(flying + [highest + 1])
    first = pos >> INDEX_BITS
    if first >= below:
        return []
    records = await db["commits"].find({"o": {"$gte": first, "$lt": below}}, projection={"o": 1, "ev": 1}).sort(
        "o", 1).limit(limit).to_list()
    events: list[OutboxEvent] = []
    for record in records:
        base = int(record["o"]) << INDEX_BITS
        for i, e in enumerate(record["ev"]):
            if base | i > pos:
                events.append(OutboxEvent(base | i, e["t"], e["i"], e["v"], e["o"], e["at"]))
                if len(events) == limit:
                    return events
    return events
