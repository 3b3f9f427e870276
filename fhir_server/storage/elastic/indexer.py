"""The indexer: an outbox consumer that keeps the Elasticsearch indices equal to the primary store's current state.

Loop: read a batch of outbox events after this consumer's acknowledged position, index the *current* state of each
resource they name, then acknowledge the batch. Indexing the current state (not the event's version) makes the
order of events irrelevant and reprocessing harmless: documents carry the version id as an external version
(``external_gte``), so Elasticsearch keeps the newest whatever arrives last. Acknowledging only after the bulk
request succeeded makes delivery at-least-once: a crash or an unreachable Elasticsearch leaves the events in the
outbox, and the loop picks them up again (with backoff) until they are indexed — the backlog drains by itself.

Two ways in. The outbox is the durable one: every write of every process, after crashes and outages. The fast
path serves this process's own writes: the search store hands over each committed version at once, so its
read-your-writes searches do not wait for an outbox read; the outbox later skips what the fast path indexed at
that version already. The outbox is then polled at ``idle_poll`` (or slower, so reading it costs at most ~10 % of
the time when a read is expensive), which is how writes of other processes arrive.

The current state comes from the primary store's public API: a search by ``_id`` per type (versions with the
store's keys, which ``_include`` needs), and a read for the resources that search does not return (deleted ones).
A store may expose an event a moment before the version it names is readable (MongoDB: the commit record is the
outbox entry and precedes the roll-forward), so an event whose version is not readable yet is retried shortly.

Documents are built from the stored bytes with the same extraction the stores use (:mod:`.documents`), a few at a
time between awaits so the event loop keeps serving requests.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fhir_server.search.tree import IdIn
from fhir_server.storage.base import OutboxEvent, SearchQuery, Store, Version
from fhir_server.storage.elastic.client import EsClient, is_unavailable
from fhir_server.storage.elastic.documents import document
from fhir_server.storage.elastic.mapping import index_name
from fhir_server.storage.elastic.visibility import Visibility

log = logging.getLogger(__name__)

_IDS_PER_LOOKUP = 32  # the store's point-lookup batch (MongoDB: parallel _id lookups up to 32)
_MAX_FRESH = 100_000  # bounds the fast path's memory
_NOT_YET_RETRIES = 200  # × 10 ms: how long an event may precede its version before the batch is retried


class RetryBatch(Exception):
    """The batch could not be indexed now (Elasticsearch unavailable or overloaded, version not readable yet)."""


class Indexer:
    def __init__(self, store: Store, es: EsClient, prefix: str, visibility: Visibility, *,
                 prepare: Callable[[], Awaitable[None]], batch: int = 500, idle_poll: float = 1.0) -> None:
        self.store = store
        self.es = es
        self.prefix = prefix
        self.visibility = visibility
        self.consumer = f"elasticsearch:{prefix}"
        self.batch = batch
        self.idle_poll = idle_poll
        self.healthy = True  # False while Elasticsearch is unreachable (searches fall back)
        self.prepare = prepare  # installs the index template: before the first document and after an outage
        self.prepared = False
        self.dirty: set[str] = set()  # indices written since their last refresh
        self.indexed_total = 0
        self._wake = asyncio.Event()
        self._fresh: dict[tuple[str, str], int] = {}  # committed here, not yet indexed (the fast path)
        self._covered: dict[tuple[str, str], int] = {}  # indexed by the fast path, not yet passed by the outbox
        self._task: asyncio.Task[None] | None = None
        self._refresh_lock = asyncio.Lock()

    # ---- lifecycle -------------------------------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="aegis-es-indexer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    def submit(self, versions: list[tuple[str, str, int]]) -> None:
        """Versions ``(type, id, vid)`` this process has just committed: index them now (the fast path), without
        waiting for the next outbox read."""
        for rtype, rid, vid in versions:
            key = (rtype, rid)
            if len(self._fresh) < _MAX_FRESH:  # beyond: the outbox brings them (an outage, a huge burst)
                self._fresh[key] = max(self._fresh.get(key, 0), vid)
        self._wake.set()

    # ---- the loop --------------------------------------------------------------------------------------------------

    async def _run(self) -> None:
        backoff = 0.1
        next_outbox = 0.0  # when to read the outbox next (monotonic)
        fresh: dict[tuple[str, str], int] = {}
        while True:
            try:
                if not self.healthy or not self.prepared:
                    await self.prepare()  # also the probe: raises while Elasticsearch is away
                    if not self.healthy:
                        log.warning("Elasticsearch is reachable again; indexing the backlog")
                    self.prepared = self.healthy = True
                self._wake.clear()
                if self._fresh:
                    fresh, self._fresh = self._fresh, {}
                    await self._index(fresh)
                    if len(self._covered) > _MAX_FRESH:
                        self._covered.clear()  # the outbox lags far behind: it indexes them again, harmlessly
                    for key, vid in fresh.items():
                        self._covered[key] = max(self._covered.get(key, 0), vid)
                    fresh = {}
                elif time.monotonic() >= next_outbox:
                    started = time.monotonic()
                    events = await self.store.outbox_read(self.consumer, self.batch)
                    cost = time.monotonic() - started
                    if events:
                        await self._index(self._not_covered(events))
                        await self.store.outbox_ack(self.consumer, events[-1].seq)
                    elif not self.visibility.ready:
                        await self.refresh()  # what was indexed before this process started is searchable now
                        self.visibility.mark_ready()
                    # a full batch: read on at once; else poll, at most ~10 % of the time reading (an outbox read
                    # can cost in proportion to the outbox's size: FerretDB uses no index for it)
                    full = len(events) == self.batch
                    next_outbox = 0.0 if full else time.monotonic() + max(self.idle_poll, 10 * cost)
                else:
                    await self._idle(next_outbox - time.monotonic())
                backoff = 0.1
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the loop must survive anything and retry
                if is_unavailable(exc) or isinstance(exc, RetryBatch):
                    if self.healthy and not isinstance(exc, RetryBatch):
                        log.warning("Elasticsearch unavailable (%s): searches fall back to the store; the outbox "
                                    "keeps every write until it returns", exc)
                    self.healthy = self.healthy and isinstance(exc, RetryBatch)
                else:
                    log.exception("indexing failed; retrying")
                for key, vid in fresh.items():  # retried: their tickets complete only when indexed
                    if len(self._fresh) < _MAX_FRESH:
                        self._fresh[key] = max(self._fresh.get(key, 0), vid)
                fresh = {}
                next_outbox = 0.0
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    def _not_covered(self, events: list[OutboxEvent]) -> dict[tuple[str, str], int]:
        """The resources of ``events`` still to index: not those the fast path indexed at that version or later
        (each fast-path entry is dropped once the outbox has passed its version)."""
        wanted: dict[tuple[str, str], int] = {}
        for e in events:
            key = (e.rtype, e.rid)
            covered = self._covered.get(key)
            if covered is not None and e.vid >= covered:
                del self._covered[key]
            if covered is None or e.vid > covered:
                wanted[key] = max(wanted.get(key, 0), e.vid)
        return wanted

    async def _idle(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._wake.wait(), max(seconds, 0.0))
        except asyncio.TimeoutError:
            pass

    # ---- one batch -------------------------------------------------------------------------------------------------

    async def _index(self, wanted: dict[tuple[str, str], int]) -> None:
        """Index the current state of every resource ``(type, id)`` at version ``wanted[…]`` or later."""
        if not wanted:
            return
        current = await self._current(wanted)
        ops: list[dict[str, Any]] = []
        targets: list[tuple[str, str, int]] = []
        for n, ((rtype, rid), (version, key)) in enumerate(current.items()):
            if n % 16 == 15:
                await asyncio.sleep(0)  # extraction is CPU work: let requests through between documents
            ops.append({"index": {"_index": index_name(self.prefix, rtype), "_id": rid, "version": version.vid,
                                  "version_type": "external_gte"}})
            ops.append(document(version, key))
            targets.append((rtype, rid, version.vid))
        # searches wait (or did a moment ago, so more will): make these searchable in the same round trip
        refresh = self.visibility.waiting > 0 or time.monotonic() - self.visibility.last_wait < 1.0
        if ops:
            response = await self.es.call("bulk", operations=ops, refresh=refresh)
            for (rtype, rid, vid), item in zip(targets, response["items"]):
                result = item["index"]
                status = result.get("status", 500)
                if status == 429 or status >= 500:
                    raise RetryBatch(f"{rtype}/{rid}: {result.get('error')}")
                if status >= 400 and status != 409:  # 409: a newer version is indexed already
                    log.error("Elasticsearch refused %s/%s/_history/%s: %s", rtype, rid, vid, result.get("error"))
                if not refresh:
                    self.dirty.add(index_name(self.prefix, rtype))
        for rtype, rid, vid in targets:
            self.visibility.indexed_version(rtype, rid, vid)
        self.visibility.batch_done()
        if refresh and not self.dirty and not self._refresh_lock.locked():
            # nothing else awaits a refresh (none in flight either): everything indexed is searchable
            self.visibility.refreshed(self.visibility.indexed)
        self.indexed_total += len(targets)

    async def _current(self, wanted: dict[tuple[str, str], int]) -> dict[tuple[str, str], tuple[Version, int]]:
        """The current version (with its store key; 0 for a deletion) of every resource, at least as new as the
        events name; retried briefly for versions the store has not made readable yet."""
        out: dict[tuple[str, str], tuple[Version, int]] = {}
        pending = dict(wanted)
        for _ in range(_NOT_YET_RETRIES):
            by_type: dict[str, list[str]] = {}
            for rtype, rid in pending:
                by_type.setdefault(rtype, []).append(rid)
            for rtype, rids in by_type.items():
                for i in range(0, len(rids), _IDS_PER_LOOKUP):
                    chunk = rids[i:i + _IDS_PER_LOOKUP]
                    page = await self.store.search(SearchQuery(rtype, IdIn(tuple(chunk)), count=len(chunk)))
                    for version, key in zip(page.versions, page.keys):
                        if version.vid >= pending[(rtype, version.rid)]:
                            out[(rtype, version.rid)] = (version, key)
                    missing = [r for r in chunk if (rtype, r) not in out]
                    reads = await asyncio.gather(*[self.store.read(rtype, r) for r in missing])
                    for rid, read in zip(missing, reads):
                        if read is not None and read.deleted and read.vid >= pending[(rtype, rid)]:
                            out[(rtype, rid)] = (read, 0)
            pending = {k: v for k, v in pending.items() if k not in out}
            if not pending:
                return out
            await asyncio.sleep(0.01)
        raise RetryBatch(f"{len(pending)} versions named by the outbox are not readable yet, e.g. {next(iter(pending))}")

    # ---- refresh (read-your-writes) -----------------------------------------------------------------------------------

    async def refresh(self) -> None:
        """Make everything indexed so far searchable; one refresh at a time serves every search waiting for it."""
        async with self._refresh_lock:
            upto = self.visibility.indexed
            if self.visibility.visible >= upto and not self.dirty:
                return
            dirty, self.dirty = self.dirty, set()
            if dirty:
                try:
                    await self.es.call("indices.refresh", index=",".join(sorted(dirty)), ignore_unavailable=True)
                except BaseException:
                    self.dirty |= dirty
                    raise
            self.visibility.refreshed(upto)

