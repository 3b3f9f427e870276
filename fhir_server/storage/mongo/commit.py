"""The commit protocol: all-or-nothing transactions with single-document atomic writes only.

MongoDB makes one document write atomic; multi-document transactions need a replica set, and FerretDB and a
standalone ``mongod`` have none. So a batch of writes is published by one atomic write, the *commit record*:

1. **Invisible versions.** Every new version is inserted into ``versions`` tagged ``p: <tx id>`` (and ``w: <writer
   id>``). Readers of ``versions`` ignore tagged documents. The ``_id`` is ``"<type>/<id>/<vid>"``, so a second
   writer of the same version fails here with a duplicate key (:class:`~resources.outcome.Conflict`, 409), before
   anything is visible.
2. **Commit record.** One document ``{_id: <tx id>, st: "c", o, ev: [events]}`` is inserted into ``commits``. This
   insert is the commit point: once it exists the transaction has happened. The same document is the outbox entry of
   the transaction (``ev`` lists its events; ``o``, a ticket taken just before, orders it for consumers across
   processes: :mod:`.outbox`), so the outbox is written in the same atomic step as the commit and cannot disagree
   with it.
3. **Roll forward.** The ``current`` documents (pointer, body and search index of each resource) are replaced by
   the new versions: inserted for new resources, and replaced with a compare-and-set on the version id they had
   (``{_id, v: <previous vid>}``) for existing ones, so a roll-forward never goes backwards and can run twice.
4. **Publish.** The ``p``/``w`` tags are removed (``$unset``), with ``j: true``: on one server the journal is
   sequential, so that durable write makes every earlier write of the batch durable too. Only then are the callers
   answered (group commit: one protocol run serves every unit that queued while the previous one ran).

Readers see a transaction whole or not at all, at the granularity that matters: ``current`` documents change only
after the commit point, and only to committed versions. (A reader running *during* step 3 of a multi-resource
transaction can see some resources new and others still old, for the few milliseconds step 3 takes: read committed,
not snapshot isolation. Acknowledged writes are never partially visible.)

**Recovery** (at start-up; and whenever a writer meets another transaction's tagged version in its way): versions
still tagged ``p`` belong to a transaction that is committed but not yet rolled forward (it has a commit record:
redo steps 3–4, which are idempotent) or that never committed. A never-committed transaction is aborted only when
its writer is dead — the ``writers`` collection holds one heartbeat document per running store process; a writer is
dead when it is on this machine and its process is gone, or when its heartbeat is older than the lease — and the
abort is decided by the same single-document atomicity: the recoverer inserts ``{_id: <tx id>, st: "a"}`` into
``commits``. Exactly one of the commit record and the abort marker can exist, so a writer that was merely slow
finds its commit insert refused (duplicate key) and reports the write as failed instead of publishing versions that
recovery deleted. Abort markers stay (they are tiny) so that this decision can never be reversed.

**FerretDB** (the test server) needs three accommodations, none of which changes the protocol: statements go in
chunks of 32 per update command (it stops answering one with 100), step 4 untags by ``_id`` (any other filter is a
scan of the collection), and on the packed layout step 3's compare-and-set is a read of ``v`` by ``_id`` followed
by a replace by ``_id`` (a two-field filter would scan; this leaves a one-round-trip window for another *process*).
FerretDB also runs every update as a scan of the collection, so step 4 (one update per version) dominates its write
cost and grows with the database (``bench/RESULTS.md``); on MongoDB each is an ``_id`` index lookup.

**Serialisation.** One writer task per store process runs the queued units one after the other (the shared
group-commit writer of :mod:`fhir_server.storage.group_commit`, with :class:`MongoBatch`), so conditional creates
and updates in one process never race. A unit sees the database plus the uncommitted writes of the earlier units of
its batch (:class:`Overlay`), and a failing unit's writes are dropped alone. Across processes the unique ``_id`` of
versions (step 1) and of ``current`` documents stop two writers from creating the same resource or version, and a
conditional match claims its criteria first (:mod:`.claims`), so two processes never both create for one criteria.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from bson import ObjectId
from pymongo import ReplaceOne, UpdateOne, WriteConcern
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError, PyMongoError

from fhir_server.storage.faults import crash_point
from fhir_server.storage.group_commit import Batch, StorageUnavailable
from fhir_server.storage.mongo import schema
from fhir_server.storage.mongo.claims import Claims
from fhir_server.storage.mongo.outbox import Tickets
from resources import jsonio
from resources.outcome import Conflict

log = logging.getLogger(__name__)

def build_current(rtype: str, rid: str, vid: int, *, deleted: bool, key: int, seq: int, last_updated: str,
                  method: str, body: bytes, resource: dict[str, Any] | None, layout: str) -> dict[str, Any]:
    """The ``current`` document of a version: pointer, body and the search index extracted from the resource."""
    index: dict[str, Any] = {}
    if resource is not None and not deleted:
        from fhir_server.search.extract import extract, text_content

        narrative, content = text_content(resource)
        index = schema.index_fields(extract(resource), narrative, content)
    return schema.current_doc(rtype, rid, vid, deleted=deleted, key=key, seq=seq, last_updated=last_updated,
                              method=method, body=body, index=index, layout=layout)


@dataclass(slots=True)
class Pending:
    """One version written by a unit of the running batch, not yet committed."""

    rtype: str
    rid: str
    vid: int
    seq: int
    last_updated: str
    deleted: bool
    method: str
    body: bytes
    op: str  # create | update | delete (the outbox event)
    prev_vid: int | None  # version of the current document before the batch (None: no document yet)
    current: dict[str, Any]  # the current document this version makes

    @property
    def key(self) -> str:
        return f"{self.rtype}/{self.rid}"

    def version_doc(self) -> dict[str, Any]:
        return schema.version_doc(self.rtype, self.rid, self.vid, deleted=self.deleted, seq=self.seq,
                                  last_updated=self.last_updated, method=self.method, body=self.body)


@dataclass(slots=True)
class Overlay:
    """The uncommitted writes of one batch: what its units see on top of the database."""

    writes: list[Pending] = field(default_factory=list)
    latest: dict[str, Pending] = field(default_factory=dict)
    claims: set[str] = field(default_factory=set)  # criteria claims held until the batch is visible (.claims)

    def mark(self) -> int:
        return len(self.writes)

    def rollback(self, mark: int) -> None:
        """Drop the writes after ``mark`` (a unit failed): earlier units' writes stay."""
        del self.writes[mark:]
        self.latest = {w.key: w for w in self.writes}

    def add(self, write: Pending) -> None:
        self.writes.append(write)
        self.latest[write.key] = write

    def version(self, rtype: str, rid: str, vid: int) -> Pending | None:
        for w in self.writes:
            if w.rtype == rtype and w.rid == rid and w.vid == vid:
                return w
        return None


BULK_CHUNK = 32  # statements per update command: FerretDB 1.24 stops answering one with 100 of them


async def _bulk(collection: Any, ops: list[Any], point: str) -> None:
    for start in range(0, len(ops), BULK_CHUNK):
        await collection.bulk_write(ops[start:start + BULK_CHUNK], ordered=False)
        crash_point(point)


class Protocol:
    """Steps 1–4 and recovery against one database (see the module docstring)."""

    def __init__(self, db: AsyncDatabase[dict[str, Any]], writer_id: ObjectId,
                 is_dead: Callable[[Any], Awaitable[bool]], layout: str) -> None:
        self.db = db
        self.layout = layout
        self.writer_id = writer_id
        self._is_dead = is_dead
        wc = db.write_concern.document
        # j:true on the publishing write; keep any w the URL asked for (w:majority on a replica set)
        self._durable = WriteConcern(w=wc.get("w"), wtimeout=wc.get("wtimeout"), j=True)
        self.unsettled: set[ObjectId] = set()  # committed here, roll-forward interrupted by an error
        self.tickets = Tickets(db, writer_id)
        self._stuck_ticket: int | None = None  # a ticket whose release failed (it holds the outbox back)

    # ---- the happy path ------------------------------------------------------------------------------------------

    async def commit(self, writes: list[Pending]) -> None:
        await self.settle_own()
        tx = ObjectId()
        await self._insert_versions(tx, writes)
        crash_point("mongo.versions-written")
        try:
            ticket = await self.tickets.take()  # the commit's place in the outbox (.outbox)
        except PyMongoError as exc:
            await self._discard_quietly(tx)
            raise StorageUnavailable(f"the write could not be committed: {exc}") from exc
        crash_point("mongo.ticket-taken")
        record = {"_id": tx, "st": "c", "o": ticket, "w": self.writer_id, "at": writes[0].last_updated,
                  "ev": [{"s": w.seq, "t": w.rtype, "i": w.rid, "v": w.vid, "o": w.op, "at": w.last_updated}
                         for w in writes]}
        try:
            await self.db["commits"].insert_one(record)
        except DuplicateKeyError:
            # recovery in another process took this writer for dead and aborted the transaction: it never happened
            await self._discard(tx)
            await self._release(ticket)
            raise StorageUnavailable("the transaction was aborted by recovery in another server process "
                                     "(this one looked dead); nothing was written") from None
        except PyMongoError as exc:
            # the commit record may or may not have been written: find out, then finish or abort
            settled = await self._settle_after_error(tx)
            await self._release(ticket)  # (after the fate is decided: no record can appear behind it any more)
            if settled:
                return
            raise StorageUnavailable(f"the write could not be committed: {exc}") from exc
        crash_point("mongo.commit-recorded")
        await self._release(ticket)
        try:
            await self._roll_forward(writes)
            await self._publish(tx, [f"{w.rtype}/{w.rid}/{w.vid}" for w in writes])
        except PyMongoError as exc:
            self.unsettled.add(tx)
            raise StorageUnavailable(f"the transaction committed, but making it visible failed ({exc}); it "
                                     "becomes visible when the store can reach the database again") from exc

    async def _insert_versions(self, tx: ObjectId, writes: list[Pending]) -> None:
        docs = [{**w.version_doc(), "p": tx, "w": self.writer_id} for w in writes]
        versions = self.db["versions"]
        for _ in range(3):
            try:
                await versions.insert_many(docs, ordered=True)
                return
            except BulkWriteError as exc:
                await self._discard(tx)
                errors = exc.details.get("writeErrors") or []
                if not errors or errors[0].get("code") != 11000:
                    raise StorageUnavailable(f"the write could not be stored: {exc}") from exc
                blocked = docs[errors[0]["index"]]
                blocker = await versions.find_one({"_id": blocked["_id"]}, projection={"p": 1, "w": 1})
                if blocker is None:
                    continue  # gone meanwhile (aborted by someone): try again
                if "p" in blocker and await self.settle(blocker["p"], blocker.get("w")) == "aborted":
                    continue  # an abandoned transaction held the version; it is gone now
                raise Conflict(f"{blocked['t']}/{blocked['i']} was changed by another server process at the same "
                               "time; retry the request", message_id="AEGIS-361") from None
            except PyMongoError as exc:
                await self._discard_quietly(tx)
                raise StorageUnavailable(f"the write could not be stored: {exc}") from exc
        raise Conflict("the resources were changed by another server process at the same time; retry the request",
                       message_id="AEGIS-361")

    async def _roll_forward(self, writes: list[Pending]) -> None:
        newest: dict[str, Pending] = {}
        for w in writes:
            newest[w.key] = w  # prev_vid of every write of a key is the version before the batch
        current = self.db["current"]
        inserts = [w.current for w in newest.values() if w.prev_vid is None]
        updates = [w for w in newest.values() if w.prev_vid is not None]
        if inserts:
            try:
                await current.insert_many(inserts, ordered=False)
            except BulkWriteError as exc:
                # a duplicate means someone (a recoverer) rolled this version forward already
                if any(e.get("code") != 11000 for e in exc.details.get("writeErrors") or []):
                    raise
            crash_point("mongo.current-chunk")
        if self.layout == schema.PACKED:
            # FerretDB evaluates any filter but a lone _id by scanning the whole collection, so the compare-and-set
            # becomes read, compare, replace by _id (leaving a window of one round trip in which another *process*
            # could roll a newer version forward first; this layout serves tests, not production)
            found = await asyncio.gather(*[current.find_one({"_id": w.key}, projection={"v": 1}) for w in updates])
            ops = [ReplaceOne({"_id": w.key}, w.current) for w, doc in zip(updates, found)
                   if doc is not None and doc["v"] == w.prev_vid]
        else:
            ops = [ReplaceOne({"_id": w.key, "v": w.prev_vid}, w.current) for w in updates]
        # no match means the document moved on already (rolled forward by a recoverer): nothing to do
        await _bulk(current, ops, "mongo.current-chunk")

    async def _publish(self, tx: ObjectId, version_ids: list[str] | None = None) -> None:
        """Untag the versions of ``tx`` (by ``_id`` when known: FerretDB scans for any other filter)."""
        versions = self.db["versions"].with_options(write_concern=self._durable)
        if version_ids is None:
            await versions.update_many({"p": tx}, {"$unset": {"p": "", "w": ""}})
        else:
            await _bulk(versions, [UpdateOne({"_id": v}, {"$unset": {"p": "", "w": ""}}) for v in version_ids],
                        "mongo.published-chunk")

    async def _discard(self, tx: ObjectId) -> None:
        await self.db["versions"].delete_many({"p": tx})

    async def _discard_quietly(self, tx: ObjectId) -> None:
        try:
            await self._discard(tx)
        except PyMongoError:
            log.warning("could not remove the versions of failed transaction %s; recovery will", tx)

    async def _settle_after_error(self, tx: ObjectId) -> bool:
        """After an error writing the commit record: True when it was written (and the transaction is now
        complete), False when the transaction is aborted. Raises when the database cannot tell."""
        try:
            fate = await self._decide(tx, abort=True)
            if fate == "committed":
                await self.finish(tx)
                return True
            await self._discard(tx)
            return False
        except PyMongoError as exc:
            raise StorageUnavailable(f"the outcome of the write is unknown ({exc}); the store settles it when "
                                     "the database is reachable again") from exc

    async def _release(self, ticket: int) -> None:
        """Unregister a ticket in flight; a failure keeps it for :meth:`settle_own` (it holds the outbox back
        meanwhile, which is safe)."""
        try:
            await self.tickets.done(ticket)
            self._stuck_ticket = None
        except PyMongoError:
            self._stuck_ticket = ticket

    async def release_stuck(self) -> None:
        """Retry releasing a ticket whose release failed (the heartbeat calls this: an idle writer must not hold
        the outbox back)."""
        if self._stuck_ticket is not None:
            await self._release(self._stuck_ticket)

    async def settle_own(self) -> None:
        """Finish transactions of this process whose roll-forward an error interrupted (before the next batch, so
        ``current`` never skips a version), and release a ticket left in flight."""
        for tx in list(self.unsettled):
            await self.finish(tx)
            self.unsettled.discard(tx)
        if self._stuck_ticket is not None:
            await self._release(self._stuck_ticket)

    # ---- recovery ------------------------------------------------------------------------------------------------

    async def _decide(self, tx: Any, *, abort: bool) -> str:
        """``committed``, ``aborted`` or ``running``; with ``abort``, a transaction without a commit record is
        aborted (atomically: only one of the commit record and the abort marker can be inserted)."""
        commits = self.db["commits"]
        record = await commits.find_one({"_id": tx}, projection={"st": 1})
        if record is None:
            if not abort:
                return "running"
            try:
                await commits.insert_one({"_id": tx, "st": "a", "w": self.writer_id, "at": time.time()})
                return "aborted"
            except DuplicateKeyError:
                record = await commits.find_one({"_id": tx}, projection={"st": 1})
                if record is None:
                    raise StorageUnavailable(f"transaction {tx} is in an inconsistent state") from None
        return "committed" if record.get("st") == "c" else "aborted"

    async def settle(self, tx: Any, writer: Any) -> str:
        """Bring another transaction to its end if it can be: roll a committed one forward, remove an aborted one or
        one whose writer is dead. Returns its fate (``running`` when its writer is alive and it has not committed)."""
        fate = await self._decide(tx, abort=False)
        if fate == "running" and writer != self.writer_id and await self._is_dead(writer):
            fate = await self._decide(tx, abort=True)
        if fate == "committed":
            await self.finish(tx)
        elif fate == "aborted":
            await self._discard(tx)
        return fate

    async def finish(self, tx: Any) -> None:
        """Steps 3–4 for a committed transaction, from its stored versions alone (idempotent)."""
        current = self.db["current"]
        newest: dict[str, dict[str, Any]] = {}
        async for doc in self.db["versions"].find({"p": tx}):
            key = f"{doc['t']}/{doc['i']}"
            if key not in newest or newest[key]["v"] < doc["v"]:
                newest[key] = doc
        for key, doc in newest.items():
            body = bytes(doc["b"])
            resource = jsonio.loads(body) if body and not doc["d"] else None
            for _ in range(10):
                cur = await current.find_one({"_id": key}, projection={"v": 1, "k": 1})
                if cur is not None and cur["v"] >= doc["v"]:
                    break
                new = build_current(doc["t"], doc["i"], doc["v"], deleted=doc["d"],
                                    key=cur["k"] if cur is not None else doc["s"], seq=doc["s"],
                                    last_updated=doc["lu"], method=doc["m"], body=body, resource=resource,
                                    layout=self.layout)
                if cur is None:
                    try:
                        await current.insert_one(new)
                        break
                    except DuplicateKeyError:
                        continue
                result = await current.replace_one({"_id": key, "v": cur["v"]}, new)
                if result.matched_count:
                    break
        await self._publish(tx)

    async def settle_writer(self, writer: Any) -> None:
        """Settle every unfinished transaction of a (dead) writer, found through the sparse ``pending`` index."""
        txs = {v["p"] async for v in self.db["versions"].find({"p": {"$exists": True}, "w": writer},
                                                              projection={"p": 1})}
        for tx in txs:
            await self.settle(tx, writer)

    async def recover(self) -> dict[str, int]:
        """Settle every tagged version's transaction (at start-up, before this process writes)."""
        owners: dict[Any, Any] = {}
        async for doc in self.db["versions"].find({"p": {"$exists": True}}, projection={"p": 1, "w": 1}):
            owners.setdefault(doc["p"], doc.get("w"))
        counts = {"committed": 0, "aborted": 0, "running": 0}
        for tx, writer in owners.items():
            counts[await self.settle(tx, writer)] += 1
        if owners:
            log.warning("recovery: %d transaction(s) rolled forward, %d aborted, %d left to their live writers",
                        counts["committed"], counts["aborted"], counts["running"])
        return counts


class MongoBatch(Batch):
    """A batch of the group-commit writer (:mod:`fhir_server.storage.group_commit`): units write into an
    :class:`Overlay` (a failing unit's writes are dropped alone), and the protocol commits the overlay once."""

    def __init__(self, protocol: Protocol, claims: Claims, make_tx: Callable[[Overlay], Any]) -> None:
        self._protocol = protocol
        self._claims = claims
        self._make_tx = make_tx
        self.overlay = Overlay()

    async def run(self, unit: Callable[..., Awaitable[Any]]) -> Any:
        mark = self.overlay.mark()
        try:
            return await unit(self._make_tx(self.overlay))
        except Exception:
            self.overlay.rollback(mark)
            raise

    async def commit(self) -> None:
        if self.overlay.writes:
            await self._protocol.commit(self.overlay.writes)
        # only now, with every write visible, may another process's conditional match run
        await self._claims.release(self.overlay.claims)

    async def rollback(self) -> None:
        if not self._protocol.unsettled:  # (a committed batch not yet visible keeps its claims until it is)
            await self._claims.release(self.overlay.claims)
