"""The MongoDB implementation of the storage interface, on PyMongo's native asyncio client (``AsyncMongoClient``).

Reads: a read is one ``_id`` lookup in ``current`` (body included); a vread one in ``versions``. A search resolves
chains and ``_has`` to id lists (:func:`.render.resolve`), renders the tree to a filter and then either

* lets the server filter, sort and limit (the filter is exact: MongoDB, whose ``$elemMatch`` pins all conditions to
  one value), reading the sort partitions of :mod:`.render` in order and stopping once the page is full; or
* checks candidates in Python (the filter is a superset: FerretDB 1.x, or a unit reading its own uncommitted
  writes), sorting and cutting the page in Python with the same order and cursors.

Writes: units run in the single group-commit writer of the process (:mod:`fhir_server.storage.group_commit`, with
a :class:`.commit.MongoBatch`) and commit through the protocol of
:mod:`.commit`. Version sequence numbers are ``(milliseconds << 20) | (writer slot << 10) | counter``: increasing
within a process, unique across up to 1024 concurrent writer processes, ordered by time between them, and free of a
round trip per write.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

from bson import ObjectId
from pymongo import AsyncMongoClient, DESCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import ConnectionFailure, DuplicateKeyError, PyMongoError
from pymongo.uri_parser import parse_uri

from fhir_server.search.resolved import KeyIn, RefIn, as_node
from fhir_server.search.tree import Node, Or, Param
from fhir_server.storage.base import (
    HistoryQuery,
    OutboxEvent,
    Page,
    ReadOps,
    SearchPage,
    SearchQuery,
    Store,
    Version,
    WriteTx,
)
from fhir_server.storage.mongo import outbox, plans, render, schema
from fhir_server.storage.group_commit import Batch, GroupCommitWriter, StorageUnavailable
from fhir_server.storage.mongo.claims import Claims
from fhir_server.storage.mongo.commit import MongoBatch, Overlay, Pending, Protocol, build_current
from fhir_server.storage.mongo.render import Rendered, Renderer, SortSpec, all_of
from fhir_server.storage.sqlite.store import _parse_instant_millis, format_instant
from resources import jsonio
from resources.canonical import stamped

log = logging.getLogger(__name__)

T = TypeVar("T")
P = ParamSpec("P")
Doc = dict[str, Any]

_VERSION_FIELDS = {"t": 1, "i": 1, "v": 1, "lu": 1, "d": 1, "m": 1, "b": 1, "s": 1, "k": 1, "so": 1}
# up to this many keys are fetched by parallel _id lookups: on MongoDB index lookups; on FerretDB the one filter it
# evaluates inside SQLite (a scan of raw JSON that stops at the match) instead of decoding every document in Go
_POINT_LOOKUPS = 32
_SLOTS = 1024  # writer slots: the 10 bits of a sequence number between its milliseconds and its counter


def _version(doc: Doc) -> Version:
    return Version(doc["t"], doc["i"], doc["v"], doc["lu"], bool(doc["d"]), doc["m"], bytes(doc["b"]), doc["s"])


def _unavailable(fn: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, Coroutine[Any, Any, T]]:
    """A lost database connection is the storage being unavailable (503), not an internal error."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await fn(*args, **kwargs)
        except ConnectionFailure as exc:
            raise StorageUnavailable(f"the database is unreachable: {exc}") from exc

    return wrapper


class SeqClock:
    """Version sequence numbers: ``(ms << 20) | (slot << 10) | n``, strictly increasing in this process."""

    def __init__(self, slot: int) -> None:
        self.slot = slot & 1023
        self.ms = 0
        self.n = 0

    def observe(self, seq: int) -> None:
        """Continue after ``seq`` (the newest stored), even if the wall clock is behind it."""
        if seq >> 20 >= self.ms:
            self.ms, self.n = seq >> 20, 1024

    def next(self) -> int:
        now = time.time_ns() // 1_000_000
        if now > self.ms:
            self.ms, self.n = now, 0
        elif self.n >= 1024:
            self.ms, self.n = self.ms + 1, 0
        seq = self.ms << 20 | self.slot << 10 | self.n
        self.n += 1
        return seq


class _Reads(ReadOps):
    _store: MongoStore

    # ---- hooks for the transaction view ----------------------------------------------------------------------------

    def _overlay(self) -> Overlay | None:
        return None

    def _pending_view(self, rtype: str | None) -> tuple[list[str], list[Doc]] | None:
        """(keys of resources written in the running batch, their current documents that are live and of
        ``rtype``); None outside a transaction or when the batch wrote nothing yet."""
        overlay = self._overlay()
        if overlay is None or not overlay.latest:
            return None
        # copies: a check caches the unpacked index in the document, which must not reach the database
        docs = [dict(w.current) for w in overlay.latest.values() if not w.deleted and rtype in (None, w.rtype)]
        return list(overlay.latest), docs

    # ---- point reads ---------------------------------------------------------------------------------------------

    @_unavailable
    async def read(self, rtype: str, rid: str) -> Version | None:
        overlay = self._overlay()
        pending = overlay.latest.get(f"{rtype}/{rid}") if overlay is not None else None
        if pending is not None:
            return _pending_version(pending)
        doc = await self._store._col("current").find_one({"_id": f"{rtype}/{rid}"}, projection=_VERSION_FIELDS)
        return _version(doc) if doc is not None else None

    @_unavailable
    async def vread(self, rtype: str, rid: str, vid: int) -> Version | None:
        overlay = self._overlay()
        pending = overlay.version(rtype, rid, vid) if overlay is not None else None
        if pending is not None:
            return _pending_version(pending)
        doc = await self._store._col("versions").find_one({"_id": f"{rtype}/{rid}/{vid}"})
        if doc is None or "p" in doc:  # tagged: not (yet) published
            return None
        return _version(doc)

    @_unavailable
    async def history(self, query: HistoryQuery) -> Page:
        versions = self._store._col("versions")
        flt: Doc = {"p": {"$exists": False}}
        if query.rtype is not None:
            flt["t"] = query.rtype
        if query.rid is not None:
            flt["i"] = query.rid
        lu: Doc = {}
        if query.since is not None:
            lu["$gte"] = query.since
        if query.at is not None:
            lu["$lt"] = query.at[1]
            flt["d"] = False
        if lu:
            flt["lu"] = lu
        before = query.before_seq
        out: list[Version] = []
        need = query.count + 1
        while len(out) < need:
            page_flt = flt if before is None else {**flt, "s": {"$lt": before}}
            plans.note("versions", page_flt, [("s", -1)], need)
            batch = await versions.find(page_flt).sort("s", DESCENDING).limit(need if query.at is None else
                                                                               max(need, 100)).to_list()
            if not batch:
                break
            for doc in batch:
                if query.at is None or await self._current_in(doc, query.at[0]):
                    out.append(_version(doc))
                    if len(out) == need:
                        break
            before = batch[-1]["s"]
            if query.at is None:
                break
        more = len(out) > query.count
        out = out[: query.count]
        return Page(out, out[-1].seq if more and out else None)

    async def _current_in(self, doc: Doc, lo: str) -> bool:
        """Whether a version was still current at ``lo``: it has no (published) successor, or one made after."""
        nxt = await self._store._col("versions").find_one({"_id": f"{doc['t']}/{doc['i']}/{doc['v'] + 1}"},
                                                          projection={"lu": 1, "p": 1})
        return nxt is None or "p" in nxt or nxt["lu"] > lo

    # ---- search ----------------------------------------------------------------------------------------------------

    async def _plan(self, rtype: str | None, tree: Node) -> tuple[Node, Rendered]:
        resolved = await render.resolve(tree, rtype, self._collect, self._store.max_join)
        return resolved, self._store._renderer.render(resolved, rtype)

    def _base(self, rtype: str | None, flt: Doc, exclude: list[str] | None) -> Doc:
        parts: list[Doc] = [{"d": False}]
        if rtype is not None:
            parts.append({"t": rtype})
        parts.append(flt)
        if exclude:
            parts.append({"_id": {"$nin": exclude}})
        return all_of(parts)

    def _projection(self, tree: Node, checked: bool) -> Doc | None:
        """Everything a page needs; the index arrays only when candidates are checked in Python."""
        if not checked:
            return {**_VERSION_FIELDS, "i": 1}
        return None if render.needs_text(tree) else {"tc": 0, "tn": 0}

    async def _candidates(self, rtype: str | None, resolved: Node, rendered: Rendered,
                          view: tuple[list[str], list[Doc]] | None, projection: Doc | None) -> list[Doc]:
        """Every document that may match, for checking in Python: fetched by ``_id`` when the tree pins a few ids
        (the one lookup FerretDB does not scan for), else by the filter; plus the batch's own uncommitted ones."""
        exclude = view[0] if view is not None else []
        pinned = _pinned_keys(resolved, rtype)
        docs: list[Doc]
        if pinned is not None and len(pinned) <= _POINT_LOOKUPS:
            col = self._store._col("current")
            plans.note("current", {"_id": {"$in": pinned}})
            found = await asyncio.gather(*[col.find_one({"_id": k}, projection=projection) for k in pinned
                                           if k not in exclude])
            docs = [d for d in found if d is not None and not d["d"] and rtype in (None, d["t"])]
        else:
            flt = self._base(rtype, rendered.filter, exclude)
            plans.note("current", flt)
            docs = await self._store._col("current").find(flt, projection=projection).to_list()
        if view is not None:
            docs.extend(view[1])
        return docs

    async def _collect(self, rtype: str, tree: Node, limit: int) -> list[Doc]:
        """Live resources of ``rtype`` matching a resolved tree (for chains and ``_has``): ids and references."""
        rendered = self._store._renderer.render(tree, rtype)
        view = self._pending_view(rtype)
        if rendered.exact and view is None:
            plans.note("current", self._base(rtype, rendered.filter, None), limit=limit)
            return await self._store._col("current").find(self._base(rtype, rendered.filter, None),
                                                          projection={"i": 1, "t": 1, "reference": 1, "x": 1}).limit(
                limit).to_list()
        docs = await self._candidates(rtype, tree, rendered, view, self._projection(tree, True))
        check = render.Checker(tree)
        return [d for d in docs if check(d)][:limit]

    @_unavailable
    async def search(self, query: SearchQuery) -> SearchPage:
        specs = render.sort_specs(query.sort)
        after = render.check_cursor(query.after, specs) if query.after is not None else None
        before = render.check_cursor(query.before, specs) if query.before is not None else None
        resolved, rendered = await self._plan(query.rtype, query.tree)
        view = self._pending_view(query.rtype)
        if (rendered.exact and view is None and _pinned_keys(resolved, query.rtype) is None
                and self._store._renderer.sorts_in_server(specs)):
            rows, total = await self._search_server(query, rendered, specs, after, before)
        else:
            rows, total = await self._search_checked(query, resolved, rendered, view, specs, after, before)
        return _page(rows, query, specs, total)

    async def _search_server(self, query: SearchQuery, rendered: Rendered, specs: list[SortSpec],
                             after: tuple[Any, ...] | None, before: tuple[Any, ...] | None
                             ) -> tuple[list[Doc], int | None]:
        col = self._store._col("current")
        base = self._base(query.rtype, rendered.filter, None)
        backwards = before is not None
        cursor = before if backwards else after
        need = query.count + 1
        rows: list[Doc] = []
        if query.count > 0:
            masks = render.partitions(specs)
            if backwards:
                masks.reverse()
            start = masks.index(cursor[0]) if cursor is not None and cursor[0] in masks else 0
            for mask in masks[start:]:
                parts = [base, render.partition_filter(mask, specs)]
                if cursor is not None and mask == cursor[0]:
                    parts.append(render.keyset_filter(cursor, specs, backwards))
                plans.note("current", all_of(parts), render.partition_sort(mask, specs, backwards), need - len(rows))
                found = await col.find(all_of(parts), projection={**_VERSION_FIELDS, "i": 1}).sort(
                    render.partition_sort(mask, specs, backwards)).limit(need - len(rows)).to_list()
                rows.extend(found)
                if len(rows) >= need:
                    break
        if query.total:
            plans.note("current", base)
        total = await col.count_documents(base) if query.total else None
        return rows, total

    async def _search_checked(self, query: SearchQuery, resolved: Node, rendered: Rendered,
                              view: tuple[list[str], list[Doc]] | None, specs: list[SortSpec],
                              after: tuple[Any, ...] | None, before: tuple[Any, ...] | None
                              ) -> tuple[list[Doc], int | None]:
        docs = await self._candidates(query.rtype, resolved, rendered, view, self._projection(resolved, True))
        check = render.Checker(resolved)
        keyed = render.sort_in_python([d for d in docs if check(d)], specs)
        total = len(keyed) if query.total else None
        backwards = before is not None
        if after is not None and not backwards:
            keyed = [x for x in keyed if render.compare(x[0], after, specs) > 0]
        if before is not None:
            keyed = [x for x in keyed if render.compare(x[0], before, specs) < 0]
            keyed.reverse()
        rows = [d for _, d in keyed[: query.count + 1]] if query.count > 0 else []
        return rows, total

    @_unavailable
    async def count(self, rtype: str | None, tree: Node) -> int:
        resolved, rendered = await self._plan(rtype, tree)
        view = self._pending_view(rtype)
        if rendered.exact and view is None:
            plans.note("current", self._base(rtype, rendered.filter, None))
            return int(await self._store._col("current").count_documents(self._base(rtype, rendered.filter, None)))
        docs = await self._candidates(rtype, resolved, rendered, view, self._projection(resolved, True))
        check = render.Checker(resolved)
        return sum(1 for d in docs if check(d))

    @_unavailable
    async def referenced(
        self, keys: list[int], params: list[Param], target_type: str | None
    ) -> tuple[list[int], list[Version]]:
        if not keys or not params:
            return [], []
        codes: dict[str, set[str]] = {}
        for p in params:
            codes.setdefault(p.rtype, set()).add(p.code)
        plans.note("current", {"k": {"$in": keys}, "d": False})
        sources = await self._store._col("current").find({"k": {"$in": keys}, "d": False},
                                                         projection={"t": 1, "reference": 1, "x": 1}).to_list()
        targets: dict[str, None] = {}
        for src in sources:
            wanted = codes.get(src["t"], set())
            for sub in schema.index_of(src).get("reference") or ():
                tt, tid = sub.get("target_type"), sub.get("target_id")
                if sub["p"] in wanted and tt and tid is not None and target_type in (None, tt):
                    targets[f"{tt}/{tid}"] = None
        docs = await self._store._get_many(list(targets))
        return [d["k"] for d in docs], [_version(d) for d in docs]

    @_unavailable
    async def referencing(self, targets: list[tuple[str, str]], params: list[Param]) -> tuple[list[int], list[Version]]:
        if not targets or not params:
            return [], []
        by_type: dict[str, set[str]] = {}
        for rtype, rid in targets:
            by_type.setdefault(rtype, set()).add(rid)
        tree = Or(tuple(as_node(RefIn(p, t, frozenset(ids)))
                        for p in params for t, ids in sorted(by_type.items())))
        rendered = self._store._renderer.render(tree, None)
        if rendered.exact:
            plans.note("current", self._base(None, rendered.filter, None))
            docs = await self._store._col("current").find(self._base(None, rendered.filter, None),
                                                          projection={**_VERSION_FIELDS, "i": 1}).to_list()
        else:
            check = render.Checker(tree)
            docs = [d for d in await self._candidates(None, tree, rendered, None, {"tc": 0, "tn": 0}) if check(d)]
        docs.sort(key=lambda d: d["k"])
        return [d["k"] for d in docs], [_version(d) for d in docs]


def _pending_version(w: Pending) -> Version:
    return Version(w.rtype, w.rid, w.vid, w.last_updated, w.deleted, w.method, w.body, w.seq)


def _pinned_keys(tree: Node, rtype: str | None) -> list[str] | None:
    """The ``_id`` keys a tree restricts its matches to (an ``_id`` search, a ``_has``), when it does at the top."""
    from fhir_server.search.tree import And, IdIn

    items = tree.items if isinstance(tree, And) else (tree,)
    for item in items:
        if isinstance(item, IdIn) and rtype is not None and rtype != "Resource":
            return [f"{rtype}/{i}" for i in item.ids]
        if isinstance(item, KeyIn):
            return sorted(item.keys)
    return None


def _page(rows: list[Doc], query: SearchQuery, specs: list[SortSpec], total: int | None) -> SearchPage:
    """Cut the page and its cursors exactly as the SQLite store does (rows: ``count + 1`` at most, in reading
    order, which is reversed for a backward page)."""
    backwards = query.before is not None
    more = len(rows) > query.count
    rows = rows[: query.count]
    if backwards:
        rows.reverse()
    after = render.cursor_of(rows[-1], specs) if rows and (backwards or more) else None
    before = render.cursor_of(rows[0], specs) if rows and (query.after is not None or (backwards and more)) else None
    return SearchPage([_version(d) for d in rows], [d["k"] for d in rows], after, total, before)


class _Tx(_Reads, WriteTx):
    def __init__(self, store: MongoStore, overlay: Overlay) -> None:
        self._store = store
        self._batch = overlay

    def _overlay(self) -> Overlay | None:
        return self._batch

    @_unavailable
    async def find(self, rtype: str, tree: Node, *, limit: int) -> Page:
        """A conditional match inside a write: claimed first, so that no other server process runs the same match
        until this batch is visible (:mod:`.claims`)."""
        await self._store._claims.claim(self._batch.claims, rtype, tree)
        return await super().find(rtype, tree, limit=limit)

    @_unavailable
    async def put(self, rtype: str, rid: str, resource: dict[str, Any] | None, *, method: str,
                  prepared: object | None = None) -> Version:
        store = self._store
        key = f"{rtype}/{rid}"
        pending = self._batch.latest.get(key)
        if pending is not None:
            prev: tuple[int, bool, int] | None = (pending.vid, pending.deleted, pending.current["k"])
            prev_vid = pending.prev_vid
        else:
            doc = await store._col("current").find_one({"_id": key}, projection={"v": 1, "d": 1, "k": 1})
            prev = (doc["v"], bool(doc["d"]), doc["k"]) if doc is not None else None
            prev_vid = doc["v"] if doc is not None else None
        vid = prev[0] + 1 if prev else 1
        seq = store._clock.next()
        last_updated = store.next_timestamp()
        deleted = resource is None
        final = None if resource is None else stamped(resource, rid, vid, last_updated)
        body = b"" if final is None else jsonio.dumps(final)
        current = build_current(rtype, rid, vid, deleted=deleted, key=prev[2] if prev else seq, seq=seq,
                                last_updated=last_updated, method=method, body=body, resource=final,
                                layout=store.layout)
        op = "delete" if deleted else "create" if prev is None or prev[1] else "update"
        self._batch.add(Pending(rtype, rid, vid, seq, last_updated, deleted, method, body, op, prev_vid, current))
        return Version(rtype, rid, vid, last_updated, deleted, method, body, seq)


def _host_id() -> str:
    """This machine: host name plus boot id (a pid is only meaningful on the machine and boot it ran in)."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
    except OSError:
        boot = ""
    return f"{socket.gethostname()}/{boot}"


def _process_start(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot, from ``/proc``); None where that is unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: count fields after its closing parenthesis
    fields = stat[stat.rfind(b")") + 2:].split()
    try:
        return int(fields[19])  # field 22: starttime
    except (IndexError, ValueError):
        return None


def _process_alive(pid: Any, started: Any) -> bool:
    """Whether the process that registered as ``pid`` (started at ``started``) still runs on this machine. A pid is
    reused after its process dies (in a container a restarted server is pid 1 again), so the start time must match
    too when it is known."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if started is None:
        return True
    now = _process_start(pid)
    return now is None or now == started


class MongoStore(_Reads, Store):
    """``mongodb://host[:port]/[database][?options]`` (database ``aegis`` when the URL names none)."""

    def __init__(self, url: str, *, max_batch: int = 256, max_join: int = 10_000, lease_seconds: float = 60.0) -> None:
        self.url = url
        self.database = parse_uri(url).get("database") or "aegis"
        self.max_join = max_join
        self._max_batch = max_batch
        self._lease = lease_seconds
        self._store = self
        self._client: AsyncMongoClient[Doc] | None = None
        self._db: AsyncDatabase[Doc] | None = None
        self._writer: GroupCommitWriter | None = None
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._renderer = Renderer(schema.FIELDS)
        self.layout = schema.FIELDS
        self._clock = SeqClock(0)
        self._last_millis = 0
        self._writer_id = ObjectId()
        self._slot_key: str | None = None  # this writer's slot document in ``meta``
        self._host = _host_id()

    def _col(self, name: str) -> AsyncCollection[Doc]:
        assert self._db is not None, "store is not open"
        return self._db[name]

    async def open(self) -> None:
        options: dict[str, Any] = {}
        if "serverselectiontimeoutms" not in self.url.lower():
            options["serverSelectionTimeoutMS"] = 10_000
        self._client = AsyncMongoClient(self.url, **options)
        self._db = self._client[self.database]
        try:
            self.layout = await schema.ensure(self._db)
            self._renderer = Renderer(self.layout)
            await self._register()  # alive before holding a slot: a slot of a writer without liveness is free
            self._clock = SeqClock(await self._take_slot())
            await self._register()
            protocol = Protocol(self._db, self._writer_id, self._is_dead, self.layout)
            self._protocol = protocol
            self._claims = Claims(self._db, self._writer_id, is_dead=self._is_dead,
                                  settle_writer=protocol.settle_writer)
            await protocol.recover()
            await self._forget_dead_writers()
            newest = await self._col("versions").find({}, projection={"s": 1, "lu": 1}).sort(
                "s", DESCENDING).limit(1).to_list()
        except ConnectionFailure as exc:
            raise StorageUnavailable(f"cannot reach MongoDB at {parse_uri(self.url)['nodelist']}: {exc}") from exc
        if newest:
            self._clock.observe(int(newest[0]["s"]))
            self._last_millis = _parse_instant_millis(newest[0]["lu"])
        self._writer = GroupCommitWriter(self._begin_batch, max_batch=self._max_batch, name="aegis-mongo-writer")
        self._writer.start()
        self._heartbeat_task = asyncio.create_task(self._heartbeat(), name="aegis-mongo-heartbeat")

    async def _begin_batch(self) -> Batch:
        return MongoBatch(self._protocol, self._claims, lambda overlay: _Tx(self, overlay))

    async def close(self) -> None:
        if self._writer is not None:
            await self._writer.close()
            self._writer = None
        if self._heartbeat_task is not None:
            self._heartbeat_task.cancel()
            try:
                await self._heartbeat_task
            except asyncio.CancelledError:
                pass
            self._heartbeat_task = None
        if self._client is not None:
            try:
                # a clean exit: nobody needs to wait for this writer's lease to run out
                if hasattr(self, "_protocol"):  # (open may have failed before it)
                    await self._protocol.release_stuck()
                await self._col("writers").delete_one({"_id": self._writer_id})
                if self._slot_key is not None:
                    await self._col("meta").delete_one({"_id": self._slot_key, "w": self._writer_id})
            except PyMongoError:
                pass
            await self._client.close()
            self._client = None

    async def _take_slot(self) -> int:
        """A writer slot no live process holds: an **insert** of ``meta`` ``{_id: "slot:<n>", w: <writer>}`` for
        the lowest free ``n`` (the unique ``_id`` gives a slot to exactly one process; FerretDB 1.24 lets several
        processes win a ``find_one_and_update`` with ``$inc``, so a counter would hand two of them one slot, and
        then the same sequence numbers). A clean close deletes the document; a dead writer's stays until every
        slot is taken (so a writer merely taken for dead keeps its slot as long as possible), and is then taken
        over."""
        meta = self._col("meta")
        held = {doc["_id"] async for doc in meta.find({"_id": {"$regex": "^slot:"}}, projection={"_id": 1})}
        for n in [n for n in range(_SLOTS) if f"slot:{n}" not in held] + list(range(_SLOTS)):
            key = f"slot:{n}"
            if key in held:  # (second pass) held: free it only when its writer is dead
                holder = await meta.find_one({"_id": key})
                if holder is not None:
                    if not await self._is_dead(holder.get("w")):
                        continue
                    await meta.delete_one({"_id": key, "w": holder.get("w")})
            try:
                await meta.insert_one({"_id": key, "w": self._writer_id, "at": time.time()})
            except DuplicateKeyError:
                continue
            self._slot_key = key
            return n
        raise StorageUnavailable(f"all {_SLOTS} writer slots are held by live server processes")

    async def _register(self) -> None:
        """This process's liveness document (an upsert: a process declared dead while it stalled comes back)."""
        pid = os.getpid()
        await self._col("writers").update_one({"_id": self._writer_id}, {"$set": {
            "slot": self._clock.slot, "host": self._host, "pid": pid, "ps": _process_start(pid), "beat": time.time()}},
            upsert=True)

    async def _heartbeat(self) -> None:
        """Keep this writer's lease, and settle what writers that died (in any process, on any machine) left."""
        while True:
            await asyncio.sleep(self._lease / 4)
            try:
                await self._register()
                await self._protocol.release_stuck()
                await self._forget_dead_writers()
            except PyMongoError as exc:
                log.warning("heartbeat failed: %s", exc)
            except Exception:  # the heartbeat must outlive anything: without it other processes think this one dead
                log.exception("heartbeat failed")

    async def _forget_dead_writers(self) -> None:
        """Settle the unfinished transactions of every dead writer, then drop its liveness document. (Start-up
        recovery settles every transaction it finds; this catches writers that die later, and transactions that
        start-up left to a writer that was still alive then.) The versions of a dead writer are found through the
        sparse ``pending`` index."""
        async for doc in self._col("writers").find({"_id": {"$ne": self._writer_id}}):
            if not await self._dead(doc):
                continue
            await self._settle_dead(doc["_id"])
            await self._col("writers").delete_one({"_id": doc["_id"], "beat": doc.get("beat")})
        # a ticket in flight whose writer is gone altogether (its liveness document dropped already)
        for writer in await self._protocol.tickets.in_flight():
            if ObjectId.is_valid(writer) and ObjectId(writer) != self._writer_id:
                if await self._col("writers").find_one({"_id": ObjectId(writer)}, projection={"_id": 1}) is None:
                    await self._settle_dead(ObjectId(writer))

    async def _settle_dead(self, writer: ObjectId) -> None:
        """What a dead writer left: its transactions settled, then its claims and its outbox ticket dropped."""
        await self._protocol.settle_writer(writer)
        await self._col("claims").delete_many({"w": writer})
        await self._protocol.tickets.drop(writer)

    async def _dead(self, doc: Doc) -> bool:
        if doc.get("host") == self._host and not _process_alive(doc.get("pid"), doc.get("ps")):
            return True
        return bool(time.time() - float(doc.get("beat", 0)) > self._lease)

    async def _is_dead(self, writer: Any) -> bool:
        if writer == self._writer_id:
            return False
        doc = await self._col("writers").find_one({"_id": writer})
        return doc is None or await self._dead(doc)

    def next_timestamp(self) -> str:
        # Non-decreasing even if the wall clock steps back, so lastUpdated order never contradicts write order.
        self._last_millis = max(self._last_millis, time.time_ns() // 1_000_000)
        return format_instant(self._last_millis)

    async def _get_many(self, keys: list[str]) -> list[Doc]:
        """Live ``current`` documents by key, in the order asked."""
        col = self._col("current")
        plans.note("current", {"_id": {"$in": keys}})
        if len(keys) <= _POINT_LOOKUPS:
            found = await asyncio.gather(*[col.find_one({"_id": k}, projection=_VERSION_FIELDS) for k in keys])
        else:
            by_key = {d["_id"]: d for d in await col.find({"_id": {"$in": keys}}, projection=_VERSION_FIELDS)
                      .to_list()}
            found = [by_key.get(k) for k in keys]
        return [d for d in found if d is not None and not d["d"]]

    async def explain(self, run: Callable[[], Awaitable[Any]]) -> list[plans.Plan]:
        """The server's plans of every query that ``run`` (a search through this store) sends (:mod:`.plans`)."""
        assert self._db is not None, "store is not open"
        with plans.recording() as noted:
            await run()
        return await plans.explain(self._db, noted)

    async def transact(self, unit: Callable[[WriteTx], Awaitable[T]]) -> T:
        assert self._writer is not None, "store is not open"
        result: T = await self._writer.submit(unit)
        return result

    @_unavailable
    async def outbox_read(self, consumer: str, limit: int = 100) -> list[OutboxEvent]:
        assert self._db is not None, "store is not open"
        pos_doc = await self._col("consumers").find_one({"_id": consumer})
        pos = int(pos_doc["pos"]) if pos_doc is not None else 0
        return await outbox.read(self._db, pos, limit)

    @_unavailable
    async def outbox_ack(self, consumer: str, seq: int) -> None:
        consumers = self._col("consumers")
        # no upsert: on FerretDB 1.24 upserts of one new _id racing each other fail with duplicate keys
        while not (await consumers.update_one({"_id": consumer}, {"$max": {"pos": seq}})).matched_count:
            try:
                await consumers.insert_one({"_id": consumer, "pos": seq})
                return
            except DuplicateKeyError:
                continue  # created meanwhile: update it
