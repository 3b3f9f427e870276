"""Where the SQLite store runs a read: on the event loop while it is quick, on a search thread past its budget
(``SqliteStore._run``). Both must give the same answer; the interrupted read must leave no transaction open."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from urllib.parse import parse_qsl

import pytest

import fhir_server.storage.sqlite.store as sqlite_store
from fhir_server.search.bind import bind
from fhir_server.search.request import parse_request
from fhir_server.search.rewrite import prepare
from fhir_server.storage.base import SearchQuery, WriteTx
from fhir_server.storage.sqlite.store import SqliteStore


async def _search_ids(store: SqliteStore, query: str) -> list[str]:
    rtype, _, qs = query.partition("?")
    tree = await prepare(bind(rtype, parse_request(parse_qsl(qs)), strict=True).tree, rtype, store)
    page = await store.search(SearchQuery(rtype, tree, (), count=100))
    return [v.rid for v in page.versions]


async def _run(path: Path, inline_ms: float) -> tuple[list[str], list[str], bool]:
    """Write 30 observations, search them; the ids found, the threads whose connections ran reads, and whether
    the loop thread's connection was left in a transaction."""
    store = SqliteStore(str(path), inline_ms=inline_ms)
    await store.open()
    try:
        async def unit(tx: WriteTx) -> None:
            for i in range(30):
                await tx.put("Observation", f"o{i:02d}", {
                    "resourceType": "Observation", "id": f"o{i:02d}", "status": "final",
                    "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4" if i % 2 else "8480-6"}]},
                    "subject": {"reference": "Patient/p1"}}, method="PUT")
        await store.transact(unit)
        threads: list[str] = []
        original = store._thread_conn

        def spy() -> object:
            threads.append(threading.current_thread().name)
            return original()

        store._thread_conn = spy  # type: ignore[method-assign]
        ids = await _search_ids(store, "Observation?patient=p1&code=8867-4")
        left_open = store._local.conn.in_transaction if getattr(store._local, "conn", None) else False
        return ids, threads, left_open
    finally:
        await store.close()


EXPECTED = [f"o{i:02d}" for i in range(1, 30, 2)]


def test_a_quick_read_runs_on_the_event_loop(tmp_path: Path) -> None:
    ids, threads, _ = asyncio.run(_run(tmp_path / "a.db", inline_ms=1000))
    assert ids == EXPECTED
    assert threads == ["MainThread"]


def test_a_read_past_its_budget_runs_again_on_a_thread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite_store, "_PROGRESS_STEPS", 1)  # check the budget at every step: it is always spent
    ids, threads, left_open = asyncio.run(_run(tmp_path / "b.db", inline_ms=1e-9))
    assert ids == EXPECTED
    assert threads[0] == "MainThread" and threads[1:] and all(t.startswith("aegis-search") for t in threads[1:])
    assert not left_open


def test_no_budget_means_every_read_on_a_thread(tmp_path: Path) -> None:
    ids, threads, _ = asyncio.run(_run(tmp_path / "c.db", inline_ms=0))
    assert ids == EXPECTED
    assert threads and all(t.startswith("aegis-search") for t in threads)
