"""A patient's resources sorted by date, read off the date rows' owners (``fhir_server/storage/sqlite/datewalk.py``):
the same pages, both ways, as the sort, and read through the ``(pid, owner, lo)`` index."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from fhir_server.search.bind import bind
from fhir_server.search.request import parse_request
from fhir_server.search.rewrite import prepare
from fhir_server.storage.base import SearchQuery, SortKey, WriteTx
from fhir_server.storage.sqlite import datewalk, schema
from fhir_server.storage.sqlite.plan import PlanLimits
from fhir_server.storage.sqlite.store import SqliteStore

WALK = PlanLimits(date_walk_from=0, date_walk=1000)
SORT = PlanLimits(date_walk_from=10**9)  # never walks


def _goal(gid: str, patient: str, *due: str) -> dict[str, Any]:
    return {"resourceType": "Goal", "id": gid, "lifecycleStatus": "active", "description": {"text": gid},
            "subject": {"reference": f"Patient/{patient}"}, "target": [{"dueDate": d} for d in due]}


# Goals have one date per target: a goal sorts by its latest (descending) or earliest (ascending) target, and the
# walk meets each goal once per target
GOALS = [
    {"resourceType": "Patient", "id": "p1"}, {"resourceType": "Patient", "id": "p2"},
    _goal("g1", "p1", "2021-01-01", "2025-01-01"),
    _goal("g2", "p1", "2023-01-01"),
    _goal("g3", "p1", "2020-01-01", "2024-01-01", "2022-01-01"),
    _goal("g4", "p2", "2023-06-01"),  # another patient's
    _goal("g5", "p1", "2023-01-01"),  # ties with g2
    _goal("g6", "p1"),  # no date: last either way
    _goal("g7", "p1", "2019-01-01", "2026-01-01"),
]
DESCENDING = ["g7", "g1", "g3", "g2", "g5", "g6"]  # latest targets 2026, 2025, 2024, 2023 (g2 before g5), none
ASCENDING = ["g7", "g3", "g1", "g2", "g5", "g6"]  # earliest targets 2019, 2020, 2021, 2023, 2023, none


async def _pages(store: SqliteStore, query: str, count: int) -> tuple[list[str], list[str]]:
    """The ids page by page forwards, and from the last page back to the first."""
    rtype, _, qs = query.partition("?")
    bound = bind(rtype, parse_request([tuple(p.split("=", 1)) for p in qs.split("&")]), strict=True)  # type: ignore[misc]
    tree = await prepare(bound.tree, rtype, store)
    sort = tuple(SortKey(p, d) for p, d in bound.sort)
    forward: list[str] = []
    after = None
    while True:
        page = await store.search(SearchQuery(rtype, tree, sort, count=count, after=after))
        forward += [v.rid for v in page.versions]
        if page.next_after is None:
            break
        after = page.next_after
    backward = [v.rid for v in page.versions]
    before = page.prev_before
    while before is not None:
        page = await store.search(SearchQuery(rtype, tree, sort, count=count, before=before))
        backward = [v.rid for v in page.versions] + backward
        before = page.prev_before
    return forward, backward


async def _load(path: Path, limits: PlanLimits, resources: list[dict[str, Any]]) -> SqliteStore:
    store = SqliteStore(str(path), plan_limits=limits)
    await store.open()

    async def unit(tx: WriteTx) -> None:
        for res in resources:
            await tx.put(res["resourceType"], res["id"], res, method="PUT")
    await store.transact(unit)
    return store


@pytest.mark.parametrize(("query", "expected"), [
    ("Goal?patient=p1&_sort=-target-date", DESCENDING),
    ("Goal?patient=Patient/p1&_sort=target-date", ASCENDING),
    ("Goal?patient=p1&lifecycle-status=active&_sort=-target-date", DESCENDING),
])
def test_the_walk_pages_as_the_sort_does(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, query: str,
                                         expected: list[str]) -> None:
    settled: list[int] = []  # pages the walk answered (not handed over to the sort)
    walk = datewalk.walk

    def counted(*args: Any, **kwargs: Any) -> list[tuple[Any, ...]] | None:
        rows = walk(*args, **kwargs)
        if rows is not None:
            settled.append(len(rows))
        return rows

    monkeypatch.setattr(datewalk, "walk", counted)

    async def run() -> None:
        for name, limits in (("walk", WALK), ("sort", SORT)):
            store = await _load(tmp_path / f"{name}.db", limits, GOALS)
            try:
                for count in (1, 2, 4, 10):
                    forward, backward = await _pages(store, query, count)
                    assert forward == expected, (name, count)
                    assert backward == expected, (name, count)
            finally:
                await store.close()

    asyncio.run(run())
    # pages of 1, 2 and 4 among the dated goals came off the walk; the rest (goals without a date) were sorted
    assert len(settled) >= 8


def test_unknown_owners_hand_the_page_to_the_sort(tmp_path: Path) -> None:
    """A goal written before its patient carries no owner the walk could find: the page is sorted instead."""
    late = [GOALS[2], *GOALS[:2], *GOALS[3:]]  # g1 before p1

    async def run() -> list[str]:
        store = await _load(tmp_path / "late.db", WALK, late)
        try:
            return (await _pages(store, "Goal?patient=p1&_sort=-target-date", 2))[0]
        finally:
            await store.close()

    assert asyncio.run(run()) == DESCENDING


def test_the_walk_reads_the_owner_index_and_stops_at_the_page(tmp_path: Path) -> None:
    async def run() -> None:
        store = await _load(tmp_path / "plan.db", WALK, GOALS)
        await store.close()

    asyncio.run(run())
    conn = schema.connect(str(tmp_path / "plan.db"), synchronous="NORMAL")
    date_pid = conn.execute("SELECT pid FROM search_param WHERE rtype = 'Goal' AND code = 'target-date'").fetchone()[0]
    owner = datewalk.owner_key(conn, date_pid, "p1")
    assert owner is not None
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    rows = datewalk.walk(conn, date_pid=date_pid, owner=owner, descending=True, backwards=False, cursor=None,
                         probe_where="c.deleted = 0 AND c.rtype = ?", probe_args=["Goal"], limit=3, window=3,
                         version_columns="v.rid")
    conn.set_trace_callback(None)
    assert rows is not None and [r[0] for r in rows] == DESCENDING[:3]
    plan = [r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + statements[-1])]
    conn.close()
    # the patient's dates in index order from the window's end on, ties put in key order as they come: no sort of
    # the whole walk (a materialized walk would be), so SQLite stops at the page
    assert any(p.startswith("SEARCH d USING COVERING INDEX idx_date_pid_owner_lo (pid=? AND owner=? AND lo>?)")
               for p in plan), plan
    assert "USE TEMP B-TREE FOR RIGHT PART OF ORDER BY" in plan, plan
    assert not any(p.startswith("MATERIALIZE") and p != "MATERIALIZE p" for p in plan), plan
