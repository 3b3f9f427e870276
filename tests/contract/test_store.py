"""The storage contract, run against every backend through the :class:`Store` interface alone."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fhir_server.search.criteria import criteria_tree, parse_criteria
from fhir_server.storage import open_store_from_url
from fhir_server.storage.base import HistoryQuery, Store, Version, WriteTx
from resources import jsonio
from tests.support.server import fresh_mongodb_url, search_options

def _url(backend: str, tmp_path: Path) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    if backend in ("mongodb", "mongodb+elasticsearch"):
        return fresh_mongodb_url("contract")
    raise AssertionError(backend)


@pytest.fixture()
def store(backend: str, tmp_path: Path) -> Iterator[tuple[asyncio.AbstractEventLoop, Store]]:
    async def make() -> Store:
        s = open_store_from_url(_url(backend, tmp_path), **search_options(backend))
        await s.open()
        return s

    loop = asyncio.new_event_loop()
    s = loop.run_until_complete(make())
    yield loop, s
    loop.run_until_complete(s.close())
    loop.close()


def _obs(value: str, ident: str | None = None) -> dict[str, Any]:
    res: dict[str, Any] = {"resourceType": "Observation", "status": "final", "code": {"text": value}}
    if ident:
        res["identifier"] = [{"system": "urn:t", "value": ident}]
    return res


def put(rtype: str, rid: str, res: dict[str, Any] | None, method: str = "PUT") -> Callable[[WriteTx], Awaitable[Version]]:
    async def unit(tx: WriteTx) -> Version:
        return await tx.put(rtype, rid, res, method=method)

    return unit


def test_versions_meta_and_reads(store: Any) -> None:
    loop, s = store
    v1 = loop.run_until_complete(s.transact(put("Observation", "o1", _obs("a"), "POST")))
    v2 = loop.run_until_complete(s.transact(put("Observation", "o1", _obs("b"))))
    assert (v1.vid, v2.vid) == (1, 2)
    body = jsonio.loads(loop.run_until_complete(s.read("Observation", "o1")).body)
    assert body["id"] == "o1" and body["meta"]["versionId"] == "2" and body["code"]["text"] == "b"
    assert body["meta"]["lastUpdated"] == v2.last_updated >= v1.last_updated
    old = loop.run_until_complete(s.vread("Observation", "o1", 1))
    assert jsonio.loads(old.body)["code"]["text"] == "a"
    assert loop.run_until_complete(s.vread("Observation", "o1", 3)) is None
    assert loop.run_until_complete(s.read("Observation", "nope")) is None


def test_decimal_precision_is_kept(store: Any) -> None:
    loop, s = store
    res = jsonio.loads(b'{"resourceType":"Observation","status":"final","code":{"text":"x"},'
                       b'"valueQuantity":{"value":72.50}}')
    loop.run_until_complete(s.transact(put("Observation", "d1", res)))
    assert b'"value":72.50' in loop.run_until_complete(s.read("Observation", "d1")).body


def test_delete_is_a_version(store: Any) -> None:
    loop, s = store
    loop.run_until_complete(s.transact(put("Observation", "x", _obs("a", "del-1"))))
    gone = loop.run_until_complete(s.transact(put("Observation", "x", None, "DELETE")))
    assert gone.deleted and gone.vid == 2
    assert loop.run_until_complete(s.read("Observation", "x")).deleted
    page = loop.run_until_complete(s.find("Observation", criteria_tree("Observation", parse_criteria([("identifier", "urn:t|del-1")])),
                                       limit=10))
    assert page.versions == []


def test_failed_unit_leaves_no_trace_and_does_not_affect_others(store: Any) -> None:
    loop, s = store

    async def failing(tx: WriteTx) -> None:
        await tx.put("Observation", "f1", _obs("a"), method="POST")
        await tx.put("Observation", "f2", _obs("b"), method="POST")
        raise RuntimeError("boom")

    async def both() -> list[Any]:
        return await asyncio.gather(s.transact(failing), s.transact(put("Observation", "ok", _obs("c"))),
                                    return_exceptions=True)

    results = loop.run_until_complete(both())
    assert isinstance(results[0], RuntimeError) and isinstance(results[1], Version)
    assert loop.run_until_complete(s.read("Observation", "f1")) is None
    assert loop.run_until_complete(s.read("Observation", "f2")) is None
    assert loop.run_until_complete(s.read("Observation", "ok")) is not None
    events = loop.run_until_complete(s.outbox_read("t"))
    assert [(e.rid, e.op) for e in events] == [("ok", "create")]


def test_concurrent_units_are_serialised(store: Any) -> None:
    loop, s = store

    async def bump(tx: WriteTx) -> Version:
        cur = await tx.read("Observation", "counter")
        n = int(jsonio.loads(cur.body)["code"]["text"]) if cur else 0
        return await tx.put("Observation", "counter", _obs(str(n + 1)), method="PUT")

    async def many() -> None:
        await asyncio.gather(*[s.transact(bump) for _ in range(200)])

    loop.run_until_complete(many())
    cur = loop.run_until_complete(s.read("Observation", "counter"))
    assert cur.vid == 200 and jsonio.loads(cur.body)["code"]["text"] == "200"


def test_history_paging_newest_first(store: Any) -> None:
    loop, s = store
    for i in range(7):
        loop.run_until_complete(s.transact(put("Observation", "h", _obs(str(i)))))
    seen: list[int] = []
    cursor = None
    while True:
        page = loop.run_until_complete(s.history(HistoryQuery("Observation", "h", count=3, before_seq=cursor)))
        seen += [v.vid for v in page.versions]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == [7, 6, 5, 4, 3, 2, 1]


def test_outbox_consume_and_ack(store: Any) -> None:
    loop, s = store
    for i in range(5):
        loop.run_until_complete(s.transact(put("Patient", f"p{i}", {"resourceType": "Patient"}, "POST")))
    loop.run_until_complete(s.transact(put("Patient", "p0", None, "DELETE")))
    events = loop.run_until_complete(s.outbox_read("indexer", limit=3))
    assert [e.rid for e in events] == ["p0", "p1", "p2"] and all(e.op == "create" for e in events)
    loop.run_until_complete(s.outbox_ack("indexer", events[-1].seq))
    rest = loop.run_until_complete(s.outbox_read("indexer"))
    assert [(e.rid, e.op, e.vid) for e in rest] == [("p3", "create", 1), ("p4", "create", 1), ("p0", "delete", 2)]
    # consumers are independent
    assert len(loop.run_until_complete(s.outbox_read("other"))) == 6


def test_identifier_criteria(store: Any) -> None:
    loop, s = store
    loop.run_until_complete(s.transact(put("Observation", "i1", _obs("a", "A"))))
    loop.run_until_complete(s.transact(put("Observation", "i2", _obs("b", "B"))))
    find = lambda q: sorted(v.rid for v in loop.run_until_complete(  # noqa: E731
        s.find("Observation", criteria_tree("Observation", parse_criteria(q)), limit=10)).versions)
    assert find([("identifier", "urn:t|A")]) == ["i1"]
    assert find([("identifier", "A,B")]) == ["i1", "i2"]
    assert find([("identifier", "urn:other|A")]) == []
    assert find([("identifier", "urn:t|")]) == ["i1", "i2"]
    assert find([("_id", "i2"), ("identifier", "A,B")]) == ["i2"]
    loop.run_until_complete(s.transact(put("Observation", "i1", _obs("a", "C"))))
    assert find([("identifier", "A")]) == []
    assert find([("identifier", "C")]) == ["i1"]


def test_a_unit_reads_its_own_index_writes(store: Any) -> None:
    """Within one unit: a search sees what the unit wrote before it, a rewrite replaces the unit's own index rows,
    and what the unit wrote last is indexed once it ends (stores may defer index writes inside a unit)."""
    loop, s = store
    tree = lambda q: criteria_tree("Observation", parse_criteria(q))  # noqa: E731

    async def unit(tx: WriteTx) -> list[list[str]]:
        seen = []
        await tx.put("Observation", "u1", _obs("a", "U1"), method="PUT")
        seen.append([v.rid for v in (await tx.find("Observation", tree([("identifier", "U1")]), limit=5)).versions])
        await tx.put("Observation", "u1", _obs("a", "U2"), method="PUT")
        seen.append([v.rid for v in (await tx.find("Observation", tree([("identifier", "U1")]), limit=5)).versions])
        seen.append([v.rid for v in (await tx.find("Observation", tree([("identifier", "U2")]), limit=5)).versions])
        await tx.put("Observation", "u3", _obs("c", "U3"), method="PUT")
        return seen

    assert loop.run_until_complete(s.transact(unit)) == [["u1"], [], ["u1"]]
    find = lambda q: sorted(v.rid for v in loop.run_until_complete(  # noqa: E731
        s.find("Observation", tree(q), limit=10)).versions)
    assert find([("identifier", "U1,U2,U3")]) == ["u1", "u3"]
    assert find([("identifier", "U1")]) == []
