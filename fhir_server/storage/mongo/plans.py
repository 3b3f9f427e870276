"""Query plans: which queries a search sends to the server, and how the server runs them (``explain``).

The store notes every filter it sends while a search runs inside :func:`recording` (a context variable: free when
nobody records, and only the recording task's queries are noted); :func:`explain` then asks the server for the plan
of each. MongoDB answers with its query planner's ``winningPlan`` (stages such as ``IXSCAN``, ``FETCH``, ``SORT``
and the dreaded ``COLLSCAN``); FerretDB 1.x answers with the SQLite plan of its backend (``SCAN <table>``), since it
pushes nothing but ``_id`` equality down to SQLite — there every other filter is a scan, whatever the indexes.

``tests/contract/test_query_plans.py`` runs the benchmark's query shapes and asserts that MongoDB never scans a
collection for them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

Doc = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Query:
    collection: str
    filter: Doc
    sort: list[tuple[str, int]] | None = None
    limit: int = 0


@dataclass(frozen=True, slots=True)
class Plan:
    query: Query
    explain: Doc  # the server's answer

    @property
    def stages(self) -> list[str]:
        """Every stage of MongoDB's winning plan, depth first (empty when the server reports no such plan)."""
        winning = self.explain.get("queryPlanner", {}).get("winningPlan")
        out: list[str] = []
        if isinstance(winning, dict):
            _walk(winning.get("queryPlan", winning), out, None)
        return out

    @property
    def indexes(self) -> list[str]:
        """The indexes the winning plan scans."""
        winning = self.explain.get("queryPlanner", {}).get("winningPlan")
        out: list[str] = []
        if isinstance(winning, dict):
            _walk(winning.get("queryPlan", winning), None, out)
        return out

    @property
    def docs_examined(self) -> int | None:
        stats = self.explain.get("executionStats")
        return int(stats["totalDocsExamined"]) if isinstance(stats, dict) and "totalDocsExamined" in stats else None


def _walk(stage: Doc, stages: list[str] | None, indexes: list[str] | None) -> None:
    if stages is not None and "stage" in stage:
        stages.append(str(stage["stage"]))
    if indexes is not None and "indexName" in stage:
        indexes.append(str(stage["indexName"]))
    for key in ("inputStage", "queryPlan"):
        if isinstance(stage.get(key), dict):
            _walk(stage[key], stages, indexes)
    for child in stage.get("inputStages") or ():
        _walk(child, stages, indexes)


_noted: ContextVar[list[Query] | None] = ContextVar("aegis_mongo_noted_queries", default=None)


def note(collection: str, flt: Doc, sort: list[tuple[str, int]] | None = None, limit: int = 0) -> None:
    """Record a query the store is about to send (when the current task is recording)."""
    noted = _noted.get()
    if noted is not None:
        noted.append(Query(collection, flt, sort, limit))


@contextmanager
def recording() -> Iterator[list[Query]]:
    """Note the queries sent by the code run inside (in this task and the tasks it starts)."""
    noted: list[Query] = []
    token = _noted.set(noted)
    try:
        yield noted
    finally:
        _noted.reset(token)


async def explain(db: AsyncDatabase[Doc], queries: list[Query], verbosity: str = "executionStats") -> list[Plan]:
    out = []
    for q in queries:
        command: Doc = {"find": q.collection, "filter": q.filter}
        if q.sort:
            command["sort"] = dict(q.sort)
        if q.limit:
            command["limit"] = q.limit
        out.append(Plan(q, await db.command({"explain": command, "verbosity": verbosity})))
    return out
