"""Running a search: parse → bind → rewrite → store → includes. Paging and bundling stay with the caller.

The executor knows nothing of HTTP; it returns the matches, the included resources, the cursor of the next page and
what was dropped, and the interaction turns that into a searchset Bundle.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fhir_server.search.bind import BindResult, bind
from fhir_server.search.registry import params_for
from fhir_server.search.request import Include, SearchRequest, parse_request
from fhir_server.search.rewrite import prepare
from fhir_server.search.tree import And, CompartmentQ, Node, Param
from fhir_server.storage.base import ReadOps, SearchQuery, SortKey, Version

MAX_INCLUDED = 1000
MAX_ITERATIONS = 4


@dataclass(slots=True)
class SearchResult:
    matches: list[Version]
    included: list[Version]
    total: int | None
    next_after: tuple[object, ...] | None
    bound: BindResult
    count: int
    summary_count: bool = False
    unknown: tuple[str, ...] = field(default=())
    prev_before: tuple[object, ...] | None = None


def parse(pairs: list[tuple[str, str]]) -> SearchRequest:
    return parse_request(pairs)


async def criteria_tree(store: ReadOps, rtype: str, pairs: list[tuple[str, str]]) -> Node:
    """The prepared tree of a conditional interaction's criteria: full search syntax, strict (an ignored criterion
    could make a conditional write touch the wrong resource)."""
    bound = bind(rtype, parse_request(pairs), strict=True)
    return await prepare(bound.tree, rtype, store)


async def execute(
    store: ReadOps,
    rtype: str | None,
    request: SearchRequest,
    *,
    strict: bool,
    base_url: str | None,
    default_count: int,
    max_count: int,
    after: tuple[object, ...] | None,
    before: tuple[object, ...] | None = None,
    compartment: tuple[str, str] | None = None,
) -> SearchResult:
    bound = bind(rtype, request, strict=strict, base_url=base_url)
    tree = bound.tree
    if compartment is not None and rtype is not None:
        tree = And((CompartmentQ(compartment[0], compartment[1], rtype), tree))
    tree = await prepare(tree, rtype, store)
    summary_count = request.summary == "count"
    count = 0 if summary_count else min(request.count if request.count is not None else default_count, max_count)
    # ``_count=0`` asks for no entries, so the one thing the page can carry is the total (count it)
    want_total = summary_count or request.total in ("accurate", "estimate") or (count == 0 and request.total != "none")
    sort = tuple(SortKey(param, descending) for param, descending in bound.sort)
    page = await store.search(SearchQuery(rtype, tree, sort, count, after, want_total, before))
    total = page.total
    if total is None and after is None and before is None and page.next_after is None and count > 0 and request.total != "none":
        total = len(page.versions)  # exact, and free: everything fitted in one page
    included = await _includes(store, bound.request, page.keys, page.versions)
    return SearchResult(page.versions, included, total, page.next_after, bound, count, summary_count, bound.unknown,
                        page.prev_before)


def reference_params(source: str, code: str) -> list[Param]:
    if code == "*":
        return [Param(source, c, "reference") for c, p in params_for(source).items() if p.type == "reference"]
    p = params_for(source).get(code)
    return [Param(source, code, "reference")] if p is not None and p.type == "reference" else []


async def _includes(store: ReadOps, request: SearchRequest, keys: list[int], matches: list[Version]) -> list[Version]:
    if not matches or (not request.include and not request.revinclude):
        return []
    seen = {(v.rtype, v.rid) for v in matches}
    included: list[Version] = []
    frontier: list[tuple[int, Version]] = list(zip(keys, matches))
    for iteration in range(MAX_ITERATIONS):
        found: list[tuple[int, Version]] = []
        includes = [i for i in request.include if iteration == 0 or i.iterate]
        revincludes = [i for i in request.revinclude if iteration == 0 or i.iterate]
        for inc in includes:
            found += await _forward(store, inc, frontier)
        for rev in revincludes:
            found += await _reverse(store, rev, frontier)
        frontier = []
        for key, version in found:
            if (version.rtype, version.rid) not in seen and len(included) < MAX_INCLUDED:
                seen.add((version.rtype, version.rid))
                included.append(version)
                frontier.append((key, version))
        if not frontier:
            break
    return included


async def _forward(store: ReadOps, inc: Include, frontier: list[tuple[int, Version]]) -> list[tuple[int, Version]]:
    out: list[tuple[int, Version]] = []
    sources = {v.rtype for _, v in frontier} if inc.source_type == "*" else {inc.source_type}
    for source in sources:
        params = reference_params(source, inc.code)
        keys = [k for k, v in frontier if v.rtype == source]
        if params and keys:
            found_keys, versions = await store.referenced(keys, params, inc.target_type)
            out += list(zip(found_keys, versions))
    return out


async def _reverse(store: ReadOps, rev: Include, frontier: list[tuple[int, Version]]) -> list[tuple[int, Version]]:
    if rev.source_type == "*":
        return []
    params = reference_params(rev.source_type, rev.code)
    targets = [(v.rtype, v.rid) for _, v in frontier
               if rev.target_type is None or v.rtype == rev.target_type]
    if not params or not targets:
        return []
    found_keys, versions = await store.referencing(targets, params)
    return [(k, v) for k, v in zip(found_keys, versions) if v.rtype == rev.source_type]
