"""Expansion: the rewrite pass that needs the store.

- ``:in``/``:not-in`` a ValueSet and ``:above``/``:below`` a code become OR-lists of codes, read from the ValueSets
  and CodeSystems stored on this server (compose.include concept lists, whole code systems, ``is-a`` and
  ``descendent-of`` filters, or a stored expansion);
- ``_list=id`` becomes the ids of the List's items of the searched type;
- a compartment (``Patient/123/Observation``) becomes an OR over the compartment's reference parameters.
"""

from __future__ import annotations

from typing import Any

from fhir_server.search.compartments import params_in
from fhir_server.search.tree import (
    And,
    Chain,
    CompartmentQ,
    Has,
    IdIn,
    ListQ,
    MatchNone,
    Node,
    Not,
    Or,
    Param,
    RefQ,
    TokenQ,
    ValueSetQ,
)
from fhir_server.storage.base import ReadOps, SearchQuery
from resources import jsonio
from resources.outcome import InvalidInput

MAX_CODES = 10_000


async def _by_url(store: ReadOps, rtype: str, url: str) -> dict[str, Any] | None:
    from fhir_server.search.rewrite import prepare_sync

    tree = prepare_sync(_uri_eq(rtype, url))
    page = await store.search(SearchQuery(rtype, tree, count=1))
    return jsonio.loads(page.versions[0].body) if page.versions else None


def _uri_eq(rtype: str, url: str) -> Node:
    from fhir_server.search.tree import UriQ

    return UriQ(Param(rtype, "url", "uri"), url.split("|", 1)[0], "eq")


def _concepts(concepts: list[dict[str, Any]]) -> dict[str, list[str]]:
    """code → its child codes, over a CodeSystem's nested concept tree."""
    tree: dict[str, list[str]] = {}

    def walk(items: list[dict[str, Any]]) -> None:
        for c in items:
            code = c.get("code")
            if not isinstance(code, str):
                continue
            children = c.get("concept") or []
            tree[code] = [x["code"] for x in children if isinstance(x.get("code"), str)]
            walk(children)

    walk(concepts)
    return tree


def _descendants(tree: dict[str, list[str]], code: str) -> list[str]:
    out, todo = [], [code]
    while todo:
        c = todo.pop()
        if c in out:
            continue
        out.append(c)
        todo.extend(tree.get(c, []))
    return out


def _ancestors(tree: dict[str, list[str]], code: str) -> list[str]:
    parents: dict[str, list[str]] = {}
    for parent, children in tree.items():
        for child in children:
            parents.setdefault(child, []).append(parent)
    out, todo = [], [code]
    while todo:
        c = todo.pop()
        if c in out:
            continue
        out.append(c)
        todo.extend(parents.get(c, []))
    return out


async def _codesystem_tree(store: ReadOps, system: str, what: str) -> dict[str, list[str]]:
    cs = await _by_url(store, "CodeSystem", system)
    if cs is None:
        raise InvalidInput(f"{what}: the CodeSystem {system!r} is not known to this server", expression=what,
                           message_id="AEGIS-340")
    return _concepts(cs.get("concept") or [])


async def _valueset_codes(store: ReadOps, url: str, what: str) -> list[tuple[str | None, str]]:
    vs = await _by_url(store, "ValueSet", url)
    if vs is None:
        raise InvalidInput(f"{what}: the ValueSet {url!r} is not known to this server", expression=what,
                           message_id="AEGIS-341")
    codes: list[tuple[str | None, str]] = []
    expansion = (vs.get("expansion") or {}).get("contains")
    if expansion:
        stack = list(expansion)
        while stack:
            c = stack.pop()
            if isinstance(c.get("code"), str):
                codes.append((c.get("system"), c["code"]))
            stack.extend(c.get("contains") or [])
        return codes
    compose = vs.get("compose") or {}
    for include in compose.get("include") or []:
        system = include.get("system")
        if include.get("concept"):
            codes.extend((system, c["code"]) for c in include["concept"] if isinstance(c.get("code"), str))
        elif system:
            tree = await _codesystem_tree(store, system, what)
            selected = set(tree)
            for f in include.get("filter") or []:
                if f.get("op") in ("is-a", "descendent-of") and f.get("property") == "concept":
                    found = set(_descendants(tree, f.get("value", "")))
                    if f["op"] == "descendent-of":
                        found.discard(f.get("value"))
                    selected &= found
                else:
                    raise InvalidInput(f"{what}: ValueSet {url!r} uses a filter this server cannot expand",
                                       expression=what, message_id="AEGIS-342")
            codes.extend((system, c) for c in sorted(selected))
        for nested in include.get("valueSet") or []:
            codes.extend(await _valueset_codes(store, nested, what))
    excluded = set()
    for exclude in compose.get("exclude") or []:
        excluded.update((exclude.get("system"), c["code"]) for c in exclude.get("concept") or [])
    return [c for c in codes if c not in excluded]


async def _expand_valueset(node: ValueSetQ, store: ReadOps) -> Node:
    what = f"{node.param.code}:{node.mode}"
    if node.mode in ("in", "not-in"):
        codes = await _valueset_codes(store, node.url, what)
    else:
        tree = await _codesystem_tree(store, node.url, what)
        if node.code is None or node.code not in tree:
            return MatchNone() if node.mode in ("above", "below") else MatchNone()
        picked = _descendants(tree, node.code) if node.mode == "below" else _ancestors(tree, node.code)
        codes = [(node.url, c) for c in picked]
    if len(codes) > MAX_CODES:
        raise InvalidInput(f"{what}: the value set has more than {MAX_CODES} codes", expression=what,
                           message_id="AEGIS-343")
    any_code = Or(tuple(TokenQ(node.param, system, code) for system, code in codes)) if codes else MatchNone()
    return Not(any_code) if node.mode == "not-in" else any_code


async def _expand_list(node: ListQ, rtype: str | None, store: ReadOps) -> Node:
    found = await store.read("List", node.list_id)
    if found is None or found.deleted:
        return MatchNone()
    ids = []
    for entry in jsonio.loads(found.body).get("entry") or []:
        ref = (entry.get("item") or {}).get("reference", "")
        kind, _, rid = ref.partition("/")
        if rid and (rtype is None or kind == rtype):
            ids.append(rid)
    return IdIn(tuple(ids)) if ids else MatchNone()


def _expand_compartment(node: CompartmentQ) -> Node:
    if node.rtype == node.compartment_type:
        own = IdIn((node.compartment_id,))
    else:
        own = None
    refs = tuple(RefQ(Param(node.rtype, code, "reference"), node.compartment_type, node.compartment_id)
                 for code in params_in(node.compartment_type, node.rtype))
    items = ((own,) if own else ()) + refs
    return Or(items) if items else MatchNone()


async def expand(node: Node, rtype: str | None, store: ReadOps) -> Node:
    if isinstance(node, And):
        return And(tuple([await expand(n, rtype, store) for n in node.items]))
    if isinstance(node, Or):
        return Or(tuple([await expand(n, rtype, store) for n in node.items]))
    if isinstance(node, Not):
        return Not(await expand(node.item, rtype, store))
    if isinstance(node, Chain):
        return Chain(node.param, node.target_type, await expand(node.inner, node.target_type, store))
    if isinstance(node, Has):
        return Has(node.source_type, node.ref_param, await expand(node.inner, node.source_type, store))
    if isinstance(node, ValueSetQ):
        return await _expand_valueset(node, store)
    if isinstance(node, ListQ):
        return await _expand_list(node, rtype, store)
    if isinstance(node, CompartmentQ):
        return _expand_compartment(node)
    return node
