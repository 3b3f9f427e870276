"""The search store: a primary :class:`Store` whose searches and counts Elasticsearch answers.

Everything but ``search``/``count`` (reads, history, writes, includes, the outbox) goes to the primary store, which
stays the source of truth; Elasticsearch holds a copy of the current resources, fed by the :mod:`.indexer` from the
outbox. Writes go through :meth:`SearchStore.transact`, which, once a unit has committed, gives each version a
read-your-writes ticket (:mod:`.visibility`) and hands the versions to the indexer at once (its fast path).

A search:

1. waits until every write acknowledged before it started is searchable (``visible >= issued``), asking for a
   refresh when the indexer has passed them (at most ``wait_seconds``);
2. resolves chains and ``_has`` without joins, innermost first, each by one request: a chain's inner query gives
   the ids of the matching targets (at most ``max_join``; more is a 400 ``too-costly`` outcome naming the chain),
   which become ``terms`` on the nested ``reference.key``; a ``_has`` gives, by a ``terms`` aggregation over the
   matching sources' references, the distinct resources they point at (again at most ``max_join``), which become
   ``terms`` on the document key. Bounding the *targets* rather than the sources lets ``_has`` over many sources
   that point at few resources (every Observation of a code → its patients) stay cheap;
3. renders the tree (:mod:`.render`) and reads the page in one request, ``search_after`` the cursor
   (:mod:`.paging`).

When Elasticsearch is unreachable, the indexer has not yet drained the backlog it found at start, the wait runs
out, or a tree holds something the renderer cannot express, the primary store answers the search itself (same
results, the store's speed) — unless ``fallback`` is off, in which case the search fails with 503.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from fhir_server.search.resolved import KeyIn, RefIn, as_node
from fhir_server.search.tree import And, Chain, Has, Node, Not, Or, Param, TypeIn
from fhir_server.storage.base import (
    HistoryQuery,
    OutboxEvent,
    Page,
    SearchPage,
    SearchQuery,
    Store,
    Version,
    WriteTx,
)
from fhir_server.storage.elastic import paging
from fhir_server.storage.elastic.client import EsClient, is_unavailable
from fhir_server.storage.elastic.documents import SOURCE_FIELDS, version_of
from fhir_server.storage.elastic.indexer import Indexer
from fhir_server.storage.elastic.mapping import check_prefix, index_name, index_pattern, template
from fhir_server.storage.elastic.render import Query, Unrenderable, all_of, render
from fhir_server.storage.elastic.visibility import Visibility
from resources.outcome import FhirError

log = logging.getLogger(__name__)

T = TypeVar("T")
_LIVE: Query = {"term": {"d": False}}


class TooCostly(FhirError):
    """A chain or ``_has`` whose inner query matches more resources than one search resolves."""

    status = 400
    issue_code = "too-costly"


class SearchUnavailable(FhirError):
    """Elasticsearch cannot answer now and falling back to the store is switched off."""

    status = 503
    issue_code = "transient"


class _Unsearchable(Exception):
    """This search cannot be answered by Elasticsearch now (the caller falls back or fails)."""


class _RecordingTx(WriteTx):
    """The primary store's transaction view, noting every version written (for read-your-writes and indexing)."""

    def __init__(self, tx: WriteTx, written: list[tuple[str, str, int]]) -> None:
        self._tx = tx
        self._written = written

    async def put(self, rtype: str, rid: str, resource: dict[str, Any] | None, *, method: str,
                  prepared: object | None = None) -> Version:
        version = await self._tx.put(rtype, rid, resource, method=method, prepared=prepared)
        self._written.append((rtype, rid, version.vid))
        return version

    async def read(self, rtype: str, rid: str) -> Version | None:
        return await self._tx.read(rtype, rid)

    async def vread(self, rtype: str, rid: str, vid: int) -> Version | None:
        return await self._tx.vread(rtype, rid, vid)

    async def history(self, query: HistoryQuery) -> Page:
        return await self._tx.history(query)

    async def search(self, query: SearchQuery) -> SearchPage:
        return await self._tx.search(query)

    async def count(self, rtype: str | None, tree: Node) -> int:
        return await self._tx.count(rtype, tree)

    async def referenced(self, keys: list[int], params: list[Param], target_type: str | None
                         ) -> tuple[list[int], list[Version]]:
        return await self._tx.referenced(keys, params, target_type)

    async def referencing(self, targets: list[tuple[str, str]], params: list[Param]
                          ) -> tuple[list[int], list[Version]]:
        return await self._tx.referencing(targets, params)

    async def find(self, rtype: str, tree: Node, *, limit: int) -> Page:
        return await self._tx.find(rtype, tree, limit=limit)


class SearchStore(Store):
    def __init__(self, primary: Store, url: str, *, prefix: str = "aegis", max_join: int = 10_000,
                 wait_seconds: float = 10.0, fallback: bool = True, ephemeral: bool = False) -> None:
        self.primary = primary
        self.url = url
        self.prefix = check_prefix(prefix)
        self.max_join = max_join
        self.wait_seconds = wait_seconds
        self.fallback = fallback
        self.ephemeral = ephemeral  # drop the indices on close (tests)
        self.visibility = Visibility()
        self.es: EsClient | None = None
        self.indexer: Indexer | None = None

    # ---- lifecycle -------------------------------------------------------------------------------------------------

    def index_preparer(self) -> Callable[[str, str, dict[str, Any]], object] | None:
        return self.primary.index_preparer()

    async def open(self) -> None:
        await self.primary.open()
        self.es = EsClient(self.url)
        self.indexer = Indexer(self.primary, self.es, self.prefix, self.visibility, prepare=self._install_template)
        try:
            await self._install_template()
            self.indexer.prepared = True
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            # writes do not need Elasticsearch: serve, and let the indexer install the template when it returns
            log.warning("Elasticsearch at %s is unreachable (%s): searches fall back to the store", self.url, exc)
            self.indexer.healthy = False
        self.indexer.start()

    async def _install_template(self) -> None:
        assert self.es is not None
        await self.es.call("cluster.health", wait_for_status="yellow", timeout="30s")
        await self.es.call("indices.put_index_template", name=f"{self.prefix}-resources",
                           **template(self.prefix, self.max_join))

    async def close(self) -> None:
        if self.indexer is not None:
            await self.indexer.stop()
        if self.es is not None:
            if self.ephemeral:
                try:
                    await self.es.call("indices.delete", index=index_pattern(self.prefix), allow_no_indices=True,
                                       ignore_unavailable=True, expand_wildcards="all")
                    await self.es.call("indices.delete_index_template", name=f"{self.prefix}-resources")
                except Exception as exc:  # noqa: BLE001 - cleanup only
                    log.warning("could not drop the indices of %s: %s", self.prefix, exc)
            await self.es.close()
        await self.primary.close()

    # ---- everything but search: the primary store ------------------------------------------------------------------

    async def read(self, rtype: str, rid: str) -> Version | None:
        return await self.primary.read(rtype, rid)

    async def vread(self, rtype: str, rid: str, vid: int) -> Version | None:
        return await self.primary.vread(rtype, rid, vid)

    async def history(self, query: HistoryQuery) -> Page:
        return await self.primary.history(query)

    async def referenced(self, keys: list[int], params: list[Param], target_type: str | None
                         ) -> tuple[list[int], list[Version]]:
        return await self.primary.referenced(keys, params, target_type)

    async def referencing(self, targets: list[tuple[str, str]], params: list[Param]
                          ) -> tuple[list[int], list[Version]]:
        return await self.primary.referencing(targets, params)

    async def outbox_read(self, consumer: str, limit: int = 100) -> list[OutboxEvent]:
        return await self.primary.outbox_read(consumer, limit)

    async def outbox_ack(self, consumer: str, seq: int) -> None:
        await self.primary.outbox_ack(consumer, seq)

    async def transact(self, unit: Callable[[WriteTx], Awaitable[T]]) -> T:
        written: list[tuple[str, str, int]] = []

        async def recorded(tx: WriteTx) -> T:
            written.clear()  # should the store run the unit again, only the last run's writes happen
            return await unit(_RecordingTx(tx, written))

        result = await self.primary.transact(recorded)
        # committed: tickets before the caller is answered, so any search it starts next waits for these versions
        for rtype, rid, vid in written:
            self.visibility.issue(rtype, rid, vid)
        if self.indexer is not None:
            self.indexer.submit(written)
        return result

    # ---- search and count ------------------------------------------------------------------------------------------

    async def search(self, query: SearchQuery) -> SearchPage:
        try:
            await self._await_visible()
            return await self._search(query)
        except _Unsearchable as exc:
            return await self._fall_back(exc, self.primary.search(query))

    async def count(self, rtype: str | None, tree: Node) -> int:
        try:
            await self._await_visible()
            resolved = await self._resolve(tree, rtype)
            return await self._count(rtype, resolved)
        except _Unsearchable as exc:
            return await self._fall_back(exc, self.primary.count(rtype, tree))

    async def _fall_back(self, why: Exception, answer: Awaitable[T]) -> T:
        if not self.fallback:
            if asyncio.iscoroutine(answer):
                answer.close()
            raise SearchUnavailable(f"search is unavailable: {why}", message_id="AEGIS-372")
        log.debug("search answered by the store: %s", why)
        return await answer

    async def _await_visible(self) -> None:
        """Wait until every write acknowledged before now is searchable (see :mod:`.visibility`); without a
        fallback, also wait (as long) for Elasticsearch to come back and for the start-up backlog to drain."""
        indexer = self.indexer
        vis = self.visibility
        assert indexer is not None
        target = vis.issued
        deadline = time.monotonic() + self.wait_seconds
        while True:
            down = True  # Elasticsearch cannot answer at all (rather than: is a little behind)
            if not indexer.healthy:
                why = "Elasticsearch is unreachable"
            elif not vis.ready:
                why = "the indexer is still indexing the writes made before this server started"
            elif vis.visible >= target:
                return
            elif vis.indexed >= target:
                try:
                    await indexer.refresh()
                except Exception as exc:
                    raise self._failed(exc) from exc
                continue
            else:
                why, down = f"the index is behind the writes this search must see after {self.wait_seconds} s", False
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (down and self.fallback):
                raise _Unsearchable(why)
            # notified when tickets are indexed or refreshed; polled for health and readiness
            vis.waiting += 1
            vis.last_wait = time.monotonic()
            try:
                await vis.changed(min(remaining, 0.05))
            finally:
                vis.waiting -= 1

    def _failed(self, exc: Exception) -> Exception:
        if isinstance(exc, (_Unsearchable, FhirError)):
            return exc
        if is_unavailable(exc):
            if self.indexer is not None:
                self.indexer.healthy = False  # the indexer probes and turns it back on
            return _Unsearchable(f"Elasticsearch is unreachable: {exc}")
        return exc

    def _indices(self, rtype: str | None, tree: Node) -> str:
        if rtype is not None and rtype != "Resource":
            return index_name(self.prefix, rtype)
        items = tree.items if isinstance(tree, And) else (tree,)
        for item in items:
            if isinstance(item, TypeIn) and item.types:
                return ",".join(index_name(self.prefix, t) for t in sorted(item.types))
        return index_pattern(self.prefix)

    async def _request(self, method: str, **kwargs: Any) -> Any:
        assert self.es is not None
        try:
            return await self.es.call(method, ignore_unavailable=True, allow_no_indices=True, **kwargs)
        except Exception as exc:
            raise self._failed(exc) from exc

    def _query(self, rtype: str | None, tree: Node) -> Query:
        try:
            return all_of([_LIVE, render(tree, rtype)])
        except Unrenderable as exc:
            raise _Unsearchable(str(exc)) from exc

    async def _count(self, rtype: str | None, resolved: Node) -> int:
        response = await self._request("count", index=self._indices(rtype, resolved),
                                       query=self._query(rtype, resolved))
        return int(response["count"])

    async def _search(self, query: SearchQuery) -> SearchPage:
        specs = paging.sort_specs(query.sort)
        after = paging.check_cursor(query.after, specs) if query.after is not None else None
        before = paging.check_cursor(query.before, specs) if query.before is not None else None
        resolved = await self._resolve(query.tree, query.rtype)
        base = self._query(query.rtype, resolved)
        index = self._indices(query.rtype, resolved)
        backwards = before is not None
        cursor = before if backwards else after
        need = query.count + 1
        rows: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
        if query.count > 0:
            body: dict[str, Any] = {"query": base, "sort": paging.es_sort(specs, backwards), "size": need,
                                    "track_total_hits": False, "_source": SOURCE_FIELDS}
            if cursor is not None:
                body["search_after"] = paging.search_after(cursor, specs)
            response = await self._request("search", index=index, **body)
            rows = [(paging.cursor_of(hit["sort"], specs), hit["_source"]) for hit in response["hits"]["hits"]]
        total = await self._count(query.rtype, resolved) if query.total else None
        more = len(rows) > query.count
        rows = rows[: query.count]
        if backwards:
            rows.reverse()
        next_after = rows[-1][0] if rows and (backwards or more) else None
        prev_before = rows[0][0] if rows and (query.after is not None or (backwards and more)) else None
        return SearchPage([version_of(src) for _, src in rows], [int(src["k"]) for _, src in rows], next_after,
                          total, prev_before)

    # ---- chains and _has, without joins ----------------------------------------------------------------------------

    async def _resolve(self, node: Node, rtype: str | None) -> Node:
        if isinstance(node, And):
            return And(tuple([await self._resolve(n, rtype) for n in node.items]))
        if isinstance(node, Or):
            return Or(tuple([await self._resolve(n, rtype) for n in node.items]))
        if isinstance(node, Not):
            return Not(await self._resolve(node.item, rtype))
        if isinstance(node, Chain):
            inner = await self._resolve(node.inner, node.target_type)
            response = await self._request(
                "search", index=index_name(self.prefix, node.target_type), query=self._query(node.target_type, inner),
                size=self.max_join + 1, _source=False, sort=["_doc"], track_total_hits=False)
            ids = [hit["_id"] for hit in response["hits"]["hits"]]
            self._bound(len(ids), f"the chain through {node.param.code}")
            return as_node(RefIn(node.param, node.target_type, frozenset(ids)))
        if isinstance(node, Has):
            inner = await self._resolve(node.inner, node.source_type)
            refs: list[Query] = [{"term": {"reference.p": node.ref_param.code}}]
            if rtype is not None and rtype != "Resource":
                refs.append({"term": {"reference.target_type": rtype}})
            aggs = {"refs": {"nested": {"path": "reference"}, "aggs": {"mine": {
                "filter": all_of(refs),
                "aggs": {"keys": {"terms": {"field": "reference.key", "size": self.max_join + 1}}}}}}}
            response = await self._request(
                "search", index=index_name(self.prefix, node.source_type), query=self._query(node.source_type, inner),
                size=0, aggs=aggs, track_total_hits=False)
            buckets = response.get("aggregations", {}).get("refs", {}).get("mine", {}).get("keys", {}).get(
                "buckets", [])
            self._bound(len(buckets), f"_has:{node.source_type}:{node.ref_param.code}")
            return as_node(KeyIn(frozenset(b["key"] for b in buckets)))
        return node

    def _bound(self, found: int, what: str) -> None:
        if found > self.max_join:
            raise TooCostly(f"{what} matches more than {self.max_join} resources; narrow the inner criteria",
                            message_id="AEGIS-370")

