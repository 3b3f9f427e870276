"""Read-your-writes: which acknowledged writes are searchable in Elasticsearch yet.

When a unit has committed, before its caller is answered, the search store gives every version it wrote a
*ticket* (a number, increasing in this process) and hands the versions to the indexer's fast path, which always
indexes them (the current state, at least as new) and then completes their tickets. So:

* ``issued``  — the newest ticket; a search that starts now must see every write up to it;
* ``indexed`` — every ticket up to it is in Elasticsearch;
* ``visible`` — every ticket up to it is searchable: indexed *and* refreshed.

A search takes ``target = issued`` when it starts and waits until ``visible >= target``. While searches wait (or
have waited within the last second), the indexer writes its batches with ``refresh=true``, so one round trip makes
them indexed and searchable; a search that finds its writes indexed but not refreshed asks for a refresh itself
(one refresh serves every search waiting). Writes still in flight when a search starts get no ticket yet, so they
never hold it up.

Writes committed before this process started are covered by ``ready``: it turns true when the indexer has read the
outbox to its end once. Until then, and whenever the indexer cannot reach Elasticsearch, searches are answered by
the primary store (see :mod:`.search`).
"""

from __future__ import annotations

import asyncio


class Visibility:
    def __init__(self) -> None:
        self.issued = 0
        self.indexed = 0
        self.visible = 0
        self.ready = False
        self.waiting = 0  # searches waiting for the indexer now (it then refreshes with its bulk request)
        self.last_wait = -1e9  # when a search last waited (monotonic)
        self._outstanding: dict[int, tuple[str, str, int]] = {}  # ticket → (type, id, vid), in ticket order
        self._by_resource: dict[tuple[str, str], list[int]] = {}
        self._changed = asyncio.Event()

    # ---- writers ---------------------------------------------------------------------------------------------------

    def issue(self, rtype: str, rid: str, vid: int) -> int:
        self.issued += 1
        ticket = self.issued
        self._outstanding[ticket] = (rtype, rid, vid)
        self._by_resource.setdefault((rtype, rid), []).append(ticket)
        return ticket

    # ---- the indexer ---------------------------------------------------------------------------------------------

    def indexed_version(self, rtype: str, rid: str, vid: int) -> None:
        """A version of ``rtype/rid`` at least as new as ``vid`` is in the index (not yet refreshed)."""
        tickets = self._by_resource.get((rtype, rid))
        if not tickets:
            return
        for ticket in list(tickets):
            entry = self._outstanding.get(ticket)
            if entry is not None and entry[2] <= vid:
                del self._outstanding[ticket]
                self._forget(rtype, rid, ticket)

    def batch_done(self) -> None:
        self._advance()

    def refreshed(self, upto: int) -> None:
        """A refresh that started when ``indexed`` was ``upto`` has finished."""
        if upto > self.visible:
            self.visible = upto
            self._notify()

    def mark_ready(self) -> None:
        if not self.ready:
            self.ready = True
            self._notify()

    # ---- searches ------------------------------------------------------------------------------------------------

    async def changed(self, timeout: float) -> None:
        """Wait until something above changes (or ``timeout`` seconds pass)."""
        event = self._changed
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except asyncio.TimeoutError:
            pass

    # ---- internals -------------------------------------------------------------------------------------------------

    def _forget(self, rtype: str, rid: str, ticket: int) -> None:
        tickets = self._by_resource.get((rtype, rid))
        if tickets is not None:
            tickets.remove(ticket)
            if not tickets:
                del self._by_resource[(rtype, rid)]

    def _advance(self) -> None:
        oldest = next(iter(self._outstanding), None)
        indexed = self.issued if oldest is None else oldest - 1
        if indexed != self.indexed:
            self.indexed = indexed
            self._notify()

    def _notify(self) -> None:
        # wake every waiter; each re-checks its own target
        self._changed.set()
        self._changed = asyncio.Event()
