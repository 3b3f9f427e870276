"""A store view that holds every storage call of one interaction to the token's grant.

The interaction code is unchanged: it talks to this view as to any store. Each call is constrained before it reaches
the backend, with tree nodes every backend already renders:

* ``search``/``count``/``find`` (conditional matches, through the backend's own ``find``): the query tree is AND-ed
  with the grant's constraint for the type (or, at system level, per type), and the inner trees of chains and
  ``_has`` are constrained for the types they reach, so a query cannot even probe outside the grant;
* ``referenced``/``referencing`` (``_include``, ``_revinclude``, ``$everything``): the candidates are re-selected by a
  constrained search (``IdIn`` AND constraint) on the store's index, so only resources inside the grant come back;
* ``read``/``vread``/``history``: each version is checked against the same constraint by the in-memory matcher on
  the version's own extracted index values (history holds old versions, which no index describes); a read outside
  the grant is 403, history pages skip what is outside;
* ``put`` (every create, update, patch and delete, batch and transaction entries included): the current version and
  the new content must both lie inside the grant for the write's action, else 403.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from fhir_server.authz.constraints import constraint, is_all, is_none, system_constraint
from fhir_server.authz.grant import Grant
from fhir_server.search.tree import And, Chain, Has, IdIn, MatchAll, MatchNone, Node, Not, Or, Param
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
from resources import jsonio
from resources.outcome import Forbidden

T = TypeVar("T")

READ_LIKE = "rs"  # includes and $everything members: either a read or a search permission suffices
# Definitional resources the search compiler itself looks up (``:in``/``:below`` expand a ValueSet or CodeSystem
# found by url). They hold no patient data, and a lookup by the compiler returns nothing to the client, so it is not
# held to the grant; a client's own search or read of these types still needs a scope (the step refuses it).
TERMINOLOGY = frozenset({"ValueSet", "CodeSystem"})


def forbidden(message: str) -> Forbidden:
    return Forbidden(message, message_id="AEGIS-520")


class GuardedStore(Store, WriteTx):
    """``inner`` seen through ``grant``; ``actions`` are the permissions the current interaction needs."""

    def __init__(self, inner: ReadOps, grant: Grant, actions: str) -> None:
        self.inner = inner
        self.grant = grant
        self.actions = actions
        self._prepared: dict[tuple[str | None, str, tuple[str, ...] | None], Node] = {}

    # ---- constraints ------------------------------------------------------------------------------------------

    async def prepared(self, rtype: str | None, actions: str, types: tuple[str, ...] | None = None) -> Node:
        """The grant's constraint, expanded and lowered like a search tree (cached for the request)."""
        key = (rtype, actions, types)
        if key not in self._prepared:
            from fhir_server.search.rewrite import prepare

            raw = system_constraint(self.grant, actions, types) if rtype is None else \
                constraint(self.grant, rtype, actions)
            self._prepared[key] = raw if is_all(raw) or is_none(raw) else await prepare(raw, rtype, self.inner)
        return self._prepared[key]

    async def _constrain_inner(self, node: Node) -> Node:
        """Chains and ``_has`` reach resources of other types: those must lie inside the grant too."""
        if isinstance(node, And):
            return And(tuple([await self._constrain_inner(n) for n in node.items]))
        if isinstance(node, Or):
            return Or(tuple([await self._constrain_inner(n) for n in node.items]))
        if isinstance(node, Not):
            return Not(await self._constrain_inner(node.item))
        if isinstance(node, Chain):
            inner = await self._constrain_inner(node.inner)
            return Chain(node.param, node.target_type, _and(inner, await self.prepared(node.target_type, "s")))
        if isinstance(node, Has):
            inner = await self._constrain_inner(node.inner)
            return Has(node.source_type, node.ref_param, _and(inner, await self.prepared(node.source_type, "s")))
        return node

    async def _constrained(self, query: SearchQuery, actions: str) -> SearchQuery | None:
        limit = await self.prepared(query.rtype, actions)
        if is_none(limit):
            return None
        tree = await self._constrain_inner(query.tree)
        return SearchQuery(query.rtype, _and(tree, limit), query.sort, query.count, query.after, query.total,
                           query.before)

    async def allows(self, version: Version, actions: str) -> bool:
        """Whether this (non-deleted) version lies inside the grant for one of ``actions``."""
        limit = await self.prepared(version.rtype, actions)
        if is_all(limit) or is_none(limit):
            return is_all(limit)
        from fhir_server.search.matcher import Dataset, matches

        return matches(limit, _indexed(jsonio.loads(version.body), version.rid), Dataset())

    async def _allows_resource(self, rtype: str, rid: str, resource: dict[str, Any], actions: str) -> bool:
        limit = await self.prepared(rtype, actions)
        if is_all(limit) or is_none(limit):
            return is_all(limit)
        from fhir_server.search.matcher import Dataset, matches

        return matches(limit, _indexed({**resource, "id": rid}, rid), Dataset())

    async def _visible(self, version: Version, actions: str) -> bool:
        if not version.deleted:
            return await self.allows(version, actions)
        # a deletion has no content: judge it by the version it deleted
        if version.vid <= 1:
            return False
        before = await self.inner.vread(version.rtype, version.rid, version.vid - 1)
        return before is not None and not before.deleted and await self.allows(before, actions)

    async def _reselect(self, keys: list[int], versions: list[Version]) -> tuple[list[int], list[Version]]:
        """Keep the candidates that a constrained search on the index finds again."""
        by_type: dict[str, list[str]] = {}
        for v in versions:
            by_type.setdefault(v.rtype, []).append(v.rid)
        allowed: set[tuple[str, str]] = set()
        for rtype, ids in by_type.items():
            limit = await self.prepared(rtype, READ_LIKE)
            if is_none(limit):
                continue
            if is_all(limit):
                allowed.update((rtype, rid) for rid in ids)
                continue
            unique = tuple(dict.fromkeys(ids))
            page = await self.inner.search(SearchQuery(rtype, And((IdIn(unique), limit)), count=len(unique)))
            allowed.update((v.rtype, v.rid) for v in page.versions)
        kept = [(k, v) for k, v in zip(keys, versions) if (v.rtype, v.rid) in allowed]
        return [k for k, _ in kept], [v for _, v in kept]

    # ---- reads ------------------------------------------------------------------------------------------------

    async def read(self, rtype: str, rid: str) -> Version | None:
        version = await self.inner.read(rtype, rid)
        if version is not None and not await self._visible(version, self.actions):
            raise forbidden(f"the access token does not grant access to {rtype}/{rid}")
        return version

    async def vread(self, rtype: str, rid: str, vid: int) -> Version | None:
        version = await self.inner.vread(rtype, rid, vid)
        if version is not None and not await self._visible(version, self.actions):
            raise forbidden(f"the access token does not grant access to {rtype}/{rid}")
        return version

    async def history(self, query: HistoryQuery) -> Page:
        page = await self.inner.history(query)
        kept = [v for v in page.versions if await self._visible(v, self.actions)]
        return Page(kept, page.next_cursor)

    async def search(self, query: SearchQuery) -> SearchPage:
        if query.rtype in TERMINOLOGY and not self.grant.allows_any(query.rtype, self.actions):
            return await self.inner.search(query)  # the compiler's own terminology lookup (see TERMINOLOGY)
        constrained = await self._constrained(query, self.actions)
        if constrained is None:
            return SearchPage([], [], None, 0 if query.total else None)
        return await self.inner.search(constrained)

    async def find(self, rtype: str, tree: Node, *, limit: int) -> Page:
        """Conditional matches: the backend's own ``find`` (it may claim the criteria, as MongoDB does), constrained."""
        constrained = await self._constrained(SearchQuery(rtype, tree), self.actions)
        if constrained is None:
            return Page([], None)
        return await self.inner.find(rtype, constrained.tree, limit=limit)

    async def count(self, rtype: str | None, tree: Node) -> int:
        constrained = await self._constrained(SearchQuery(rtype, tree), self.actions)
        return 0 if constrained is None else await self.inner.count(rtype, constrained.tree)

    async def referenced(self, keys: list[int], params: list[Param], target_type: str | None
                         ) -> tuple[list[int], list[Version]]:
        found_keys, versions = await self.inner.referenced(keys, params, target_type)
        return await self._reselect(found_keys, versions)

    async def referencing(self, targets: list[tuple[str, str]], params: list[Param]
                          ) -> tuple[list[int], list[Version]]:
        found_keys, versions = await self.inner.referencing(targets, params)
        return await self._reselect(found_keys, versions)

    # ---- writes -----------------------------------------------------------------------------------------------

    async def put(self, rtype: str, rid: str, resource: dict[str, Any] | None, *, method: str,
                  prepared: object | None = None) -> Version:
        assert isinstance(self.inner, WriteTx)
        current = await self.inner.read(rtype, rid)
        exists = current is not None and not current.deleted
        action = "d" if resource is None else "c" if method == "POST" or not exists else "u"
        if exists and current is not None and not await self.allows(current, "d" if resource is None else "u"):
            raise forbidden(f"the access token does not grant {_verb(action)} {rtype}/{rid}")
        if resource is not None and not await self._allows_resource(rtype, rid, resource, action):
            raise forbidden(f"the access token does not grant {_verb(action)} this {rtype}: it would lie outside "
                            "the token's patient compartment or scopes")
        return await self.inner.put(rtype, rid, resource, method=method, prepared=prepared)

    async def transact(self, unit: Callable[[WriteTx], Awaitable[T]]) -> T:
        assert isinstance(self.inner, Store)

        async def guarded(tx: WriteTx) -> T:
            return await unit(GuardedStore(tx, self.grant, self.actions))

        return await self.inner.transact(guarded)

    async def open(self) -> None:
        if isinstance(self.inner, Store):
            await self.inner.open()

    async def close(self) -> None:
        if isinstance(self.inner, Store):
            await self.inner.close()

    async def outbox_read(self, consumer: str, limit: int = 100) -> list[OutboxEvent]:
        raise forbidden("the outbox is not available through the FHIR API")

    async def outbox_ack(self, consumer: str, seq: int) -> None:
        raise forbidden("the outbox is not available through the FHIR API")


def _verb(action: str) -> str:
    return {"c": "creating", "u": "updating", "d": "deleting"}.get(action, "access to")


def _and(tree: Node, limit: Node) -> Node:
    if isinstance(limit, MatchAll):
        return tree
    if isinstance(tree, MatchAll):
        return limit
    if isinstance(limit, MatchNone):
        return limit
    return And((tree, limit))


def _indexed(resource: dict[str, Any], rid: str) -> Any:
    from fhir_server.search.extract import extract
    from fhir_server.search.matcher import IndexedResource

    values: dict[str, list[Any]] = {}
    for code, value in extract(resource):
        if code != "_id":  # the matcher takes the id from ``rid``
            values.setdefault(code, []).append(value)
    return IndexedResource(str(resource.get("resourceType")), rid, values)
