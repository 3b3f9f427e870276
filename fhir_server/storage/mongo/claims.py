"""Criteria claims: conditional interactions stay race-safe across server processes sharing one database.

Inside one process the group-commit writer runs units one after the other, so a conditional create's match and its
write cannot interleave with another unit's. Two *processes* have two writers, and a match in each could find
nothing and both create. A unique index cannot stop that in general (FHIR lets identifiers repeat, criteria are
arbitrary searches, and FerretDB's unique indexes do not look inside arrays), so the match itself is guarded: before
a unit inside a write transaction runs a conditional match (:meth:`~fhir_server.storage.base.ReadOps.find`), it
*claims* the criteria by inserting ``{_id: <hash of type and criteria tree>, w: <writer>}`` into ``claims``. The
insert is atomic on the unique ``_id``: one writer holds a claim at a time. The holder keeps it until its batch is
committed **and** visible (the ``current`` documents rolled forward), then deletes it; a second process waits for
the claim, and its match, run after that, sees the first one's resource.

A claim whose holder died is taken over, after the dead writer's unfinished transactions are settled (rolled
forward or aborted, :meth:`.commit.Protocol.settle_writer`), so the taker's match sees whatever the dead writer
committed. A claim not released within ``wait`` seconds (a deadlock between two transactions claiming the same
criteria in opposite orders, or a stalled holder) fails the request with 409, which a client may retry.

The guard covers identical criteria (the same bound tree); two different queries matching the same resource are not
serialised against each other, as in every FHIR server that does not lock whole types.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError, PyMongoError

from fhir_server.search.tree import Node
from resources.outcome import Conflict


def claim_key(rtype: str, tree: Node) -> str:
    """The claim of a conditional match: the type and the bound tree with its values (canonical: equal criteria
    written differently bind to the same tree)."""
    return hashlib.sha256(f"{rtype}?{tree}".encode()).hexdigest()


class Claims:
    def __init__(self, db: AsyncDatabase[dict[str, Any]], writer_id: Any, *,
                 is_dead: Callable[[Any], Awaitable[bool]], settle_writer: Callable[[Any], Awaitable[None]],
                 wait: float = 10.0) -> None:
        self._col = db["claims"]
        self._writer_id = writer_id
        self._is_dead = is_dead
        self._settle_writer = settle_writer
        self._wait = wait
        self._leftover: set[str] = set()  # claims whose release failed: given back with the next release

    async def claim(self, held: set[str], rtype: str, tree: Node) -> None:
        """Hold the claim of these criteria (added to ``held``, the batch's claims), waiting for another holder."""
        key = claim_key(rtype, tree)
        if key in held:
            return
        deadline = time.monotonic() + self._wait
        pause = 0.002
        while True:
            try:
                await self._col.insert_one({"_id": key, "w": self._writer_id, "at": time.time()})
                held.add(key)
                return
            except DuplicateKeyError:
                pass
            holder = await self._col.find_one({"_id": key})
            if holder is None:
                continue  # released meanwhile
            if holder["w"] == self._writer_id:
                # ours from an earlier batch whose release failed (batches of one writer never overlap): still ours
                held.add(key)
                return
            if await self._is_dead(holder["w"]):
                await self._settle_writer(holder["w"])  # so that our match sees what the dead writer committed
                await self._col.delete_one({"_id": key, "w": holder["w"]})
                continue
            if time.monotonic() > deadline:
                raise Conflict(f"another server process is running a conditional interaction with the same {rtype} "
                               "criteria and has not finished; retry the request", message_id="AEGIS-362")
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.05)

    async def release(self, held: set[str]) -> None:
        """Give the batch's claims back (by ``_id``: the one filter FerretDB does not evaluate by scanning). A
        failure keeps them for the next release (meanwhile this writer's own batches may use them again)."""
        keys = held | self._leftover
        held.clear()
        if not keys:
            return
        try:
            await asyncio.gather(*[self._col.delete_one({"_id": key, "w": self._writer_id}) for key in keys])
            self._leftover.clear()
        except PyMongoError:
            self._leftover = keys
