"""The storage interface every backend implements.

A store keeps every version of every resource as canonical JSON bytes, the current version per resource, and an
outbox of write events recorded in the same transaction as the write. Reads go through :class:`ReadOps`; all writes
go through :meth:`Store.transact`, which runs a unit of work against a :class:`WriteTx` atomically: the unit either
commits whole (and durably, before the call returns) or leaves no trace.

Conditional interactions run their match and their write inside one unit, which is what makes them race-safe.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from fhir_server.search.tree import Node, Param

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Version:
    """One stored version of a resource; ``body`` is the canonical JSON (empty for a deletion)."""

    rtype: str
    rid: str
    vid: int
    last_updated: str  # FHIR instant, UTC, fixed width: text order is time order
    deleted: bool
    method: str  # POST | PUT | PATCH | DELETE: the interaction that made this version
    body: bytes
    seq: int  # global write order

    @property
    def etag(self) -> str:
        return f'W/"{self.vid}"'


@dataclass(frozen=True, slots=True)
class HistoryQuery:
    rtype: str | None = None
    rid: str | None = None
    since: str | None = None  # instant (inclusive lower bound of last_updated)
    at: tuple[str, str] | None = None  # versions current at some point in [lo, hi)
    count: int = 50
    before_seq: int | None = None  # cursor: continue with versions older than this


@dataclass(frozen=True, slots=True)
class Page:
    versions: list[Version]
    next_cursor: int | None  # pass back as ``before_seq``/``after_seq`` to get the next page


@dataclass(frozen=True, slots=True)
class SortKey:
    param: Param  # code "_id" sorts by id
    descending: bool = False


@dataclass(frozen=True, slots=True)
class SearchQuery:
    rtype: str | None  # None: every type (narrow with a TypeIn node)
    tree: Node  # lowered (see fhir_server.search.rewrite)
    sort: tuple[SortKey, ...] = ()
    count: int = 50
    after: tuple[object, ...] | None = None  # keyset cursor: the sort values and key of the last row seen
    total: bool = False  # also count every match
    before: tuple[object, ...] | None = None  # keyset cursor for the previous page: the first row seen


@dataclass(frozen=True, slots=True)
class SearchPage:
    versions: list[Version]
    keys: list[int]  # the store's key of each version's resource (for _include/_revinclude)
    next_after: tuple[object, ...] | None
    total: int | None = None
    prev_before: tuple[object, ...] | None = None  # set when rows precede this page


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    seq: int
    rtype: str
    rid: str
    vid: int
    op: str  # create | update | delete
    recorded_at: str


class ReadOps(ABC):
    @abstractmethod
    async def read(self, rtype: str, rid: str) -> Version | None:
        """The newest version, a deletion included (callers answer 410 for it)."""

    @abstractmethod
    async def vread(self, rtype: str, rid: str, vid: int) -> Version | None: ...

    @abstractmethod
    async def history(self, query: HistoryQuery) -> Page: ...

    @abstractmethod
    async def search(self, query: SearchQuery) -> SearchPage:
        """Current, non-deleted resources matching the tree, in sort order (then creation order)."""

    @abstractmethod
    async def count(self, rtype: str | None, tree: Node) -> int:
        """How many current, non-deleted resources match."""

    @abstractmethod
    async def referenced(
        self, keys: list[int], params: list[Param], target_type: str | None
    ) -> tuple[list[int], list[Version]]:
        """Current resources that the resources ``keys`` point at through ``params`` (``_include``)."""

    @abstractmethod
    async def referencing(self, targets: list[tuple[str, str]], params: list[Param]) -> tuple[list[int], list[Version]]:
        """Current resources that point at any of ``targets`` (type, id) through ``params`` (``_revinclude``)."""

    async def find(self, rtype: str, tree: Node, *, limit: int) -> Page:
        """Matches for a conditional interaction: at most ``limit``; ``next_cursor`` set when there are more."""
        page = await self.search(SearchQuery(rtype, tree, count=limit))
        return Page(page.versions, 1 if page.next_after is not None else None)


class WriteTx(ReadOps):
    @abstractmethod
    async def put(self, rtype: str, rid: str, resource: dict[str, Any] | None, *, method: str,
                  prepared: object | None = None) -> Version:
        """Store the next version of ``rtype/rid`` (``resource=None`` records a deletion).

        The store assigns ``meta.versionId`` and ``meta.lastUpdated`` and records the outbox event. ``prepared``:
        what the store's :meth:`Store.index_preparer` computed ahead of the unit from exactly this ``resource`` and
        ``rid``; a store uses it instead of extracting the index itself, and ignores what it does not know.
        """


class Store(ReadOps):
    @abstractmethod
    async def open(self) -> None: ...

    def index_preparer(self) -> Callable[[str, str, dict[str, Any]], object] | None:
        """A picklable function ``(rtype, rid, resource) -> prepared`` that computes, in another process, the index
        data :meth:`WriteTx.put` would otherwise extract itself; None when the store has none (it extracts in
        ``put``). Valid once the store is open."""
        return None

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def transact(self, unit: Callable[[WriteTx], Awaitable[T]]) -> T:
        """Run ``unit`` atomically; return its result once the write is durable; re-raise its exception after a
        rollback."""

    @abstractmethod
    async def outbox_read(self, consumer: str, limit: int = 100) -> list[OutboxEvent]:
        """Events after the consumer's acknowledged position, oldest first."""

    @abstractmethod
    async def outbox_ack(self, consumer: str, seq: int) -> None:
        """Mark every event up to ``seq`` as processed by ``consumer``."""
