"""The outbox in commit order, across every server process that writes to the database.

The commit records of :mod:`.commit` are the outbox. A consumer reads them after its acknowledged position and
acknowledges the last event it processed, so the order it reads in must never let a record appear *behind* a
position already acknowledged. Version sequence numbers cannot give that order when several processes write: each
process numbers its versions itself, and a slow commit with smaller numbers can land after a fast one with larger
numbers.

So every commit takes a **ticket** from one counter document (``meta`` ``{_id: "outbox", n, w: {writer: ticket}}``)
*before* inserting its commit record, and the same atomic update registers the ticket as in flight for its writer
(a compare-and-set on ``n``: one round trip when this process was the last to take one). The record carries the
ticket as ``o``; the writer unregisters it once the record is inserted or can no longer be (aborted). A reader reads
the counter document first: records with a ticket below every ticket in flight (and at most ``n``) can no longer be
joined by a smaller one, so it returns those, in ticket order, and nothing beyond. A writer that dies with a ticket
in flight holds the outbox back until recovery settles its transaction and drops the ticket
(:meth:`~.store.MongoStore` forgets dead writers at start-up and in its heartbeat).

Event positions are ``ticket << 20 | index in the record``, so acknowledging the last event read resumes inside a
record that had more events than the read's limit.
"""

from __future__ import annotations

from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from fhir_server.storage.base import OutboxEvent

Doc = dict[str, Any]
_KEY = "outbox"
INDEX_BITS = 20  # events per commit record: up to a million


def _field(writer: Any) -> str:
    return f"w.{writer}"


class Tickets:
    def __init__(self, db: AsyncDatabase[Doc], writer_id: Any) -> None:
        self._meta = db["meta"]
        self._writer = writer_id
        self._guess = 0  # the counter as this process last saw it

    async def take(self) -> int:
        """A new ticket, registered as in flight for this writer (replacing any ticket it had in flight)."""
        while True:
            ticket = self._guess + 1
            result = await self._meta.update_one({"_id": _KEY, "n": self._guess},
                                                 {"$set": {"n": ticket, _field(self._writer): ticket}})
            if result.matched_count:
                self._guess = ticket
                return ticket
            current = await self._meta.find_one({"_id": _KEY}, projection={"n": 1})
            if current is None:
                await self._meta.update_one({"_id": _KEY}, {"$setOnInsert": {"n": 0, "w": {}}}, upsert=True)
                self._guess = 0
            else:
                self._guess = int(current["n"])

    async def done(self, ticket: int) -> None:
        """This writer's ``ticket`` is no longer in flight (a newer ticket of this writer stays)."""
        await self._meta.update_one({"_id": _KEY, _field(self._writer): ticket},
                                    {"$unset": {_field(self._writer): ""}})

    async def drop(self, writer: Any) -> None:
        """A dead writer's ticket is no longer in flight (once recovery has settled its transactions)."""
        await self._meta.update_one({"_id": _KEY}, {"$unset": {_field(writer): ""}})

    async def in_flight(self) -> list[str]:
        """The writers (ids as text) with a ticket in flight."""
        counter = await self._meta.find_one({"_id": _KEY}, projection={"w": 1})
        return list((counter or {}).get("w") or {})


async def read(db: AsyncDatabase[Doc], pos: int, limit: int) -> list[OutboxEvent]:
    """Events after position ``pos``, in commit order, as far as no commit in flight could still precede them."""
    counter = await db["meta"].find_one({"_id": _KEY})
    if counter is None:
        return []
    below = min([int(t) for t in (counter.get("w") or {}).values()] + [int(counter["n"]) + 1])
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
