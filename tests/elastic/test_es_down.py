"""Elasticsearch going away and coming back: writes keep succeeding, searches keep working (the store answers), and
the outbox backlog drains into Elasticsearch by itself once it returns.

Stops and restarts the Elasticsearch of this test run (``services/stop elasticsearch`` / ``services/start --resume
elasticsearch``: same port, same data), so it needs the services of ``scripts/test``; a listed service that does
not answer fails the test.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from fhir_server.search.bind import bind
from fhir_server.search.request import parse_request
from fhir_server.search.rewrite import prepare
from fhir_server.storage import open_store_from_url
from fhir_server.storage.base import SearchQuery, Store, WriteTx
from fhir_server.storage.elastic import SearchStore
from tests.support.server import fresh_mongodb_url, search_options

ROOT = Path(__file__).resolve().parents[2]
N = 1000


def _listed(name: str) -> bool:
    return name in os.environ.get("AEGIS_TEST_SERVICES", "").split(",")


pytestmark = pytest.mark.skipif(not (_listed("ferretdb") and _listed("elasticsearch")),
                                reason="needs the ferretdb and elasticsearch services (run scripts/test)")


def _services(*args: str) -> None:
    subprocess.run([str(ROOT / "services" / args[0]), *args[1:]], check=True, cwd=ROOT, timeout=300,
                   env={**os.environ, "AEGIS_SERVICES_RUN_DIR": os.environ["AEGIS_SERVICES_RUN_DIR"]})


async def _create(store: Store, i: int) -> None:
    async def unit(tx: WriteTx) -> Any:
        return await tx.put("Patient", f"down-{i}", {"resourceType": "Patient", "identifier": [
            {"system": "urn:down", "value": str(i)}], "name": [{"family": f"Outage{i}"}]}, method="PUT")

    await store.transact(unit)


async def _tree(store: Store, pairs: list[tuple[str, str]]) -> Any:
    return await prepare(bind("Patient", parse_request(pairs), strict=True).tree, "Patient", store)


def test_writes_survive_an_outage_and_the_backlog_drains() -> None:
    options = {**search_options("mongodb+elasticsearch"), "search_fallback": True}
    store = open_store_from_url(fresh_mongodb_url("esdown"), **options)
    assert isinstance(store, SearchStore)
    store.wait_seconds = 5.0

    async def run() -> None:
        await store.open()
        assert store.indexer is not None
        stopped = False
        try:
            await _create(store, -1)
            everyone = await _tree(store, [])
            assert await store.count("Patient", everyone) == 1

            _services("stop", "elasticsearch")
            stopped = True
            # writes: all acknowledged while Elasticsearch is away
            for start in range(0, N, 50):
                await asyncio.gather(*[_create(store, i) for i in range(start, min(start + 50, N))])
            # searches keep working: the store answers
            assert await store.count("Patient", everyone) == N + 1
            page = await store.search(SearchQuery("Patient", await _tree(store, [("identifier", "urn:down|500")])))
            assert [v.rid for v in page.versions] == ["down-500"]
            assert not store.indexer.healthy

            _services("start", "--resume", "elasticsearch")
            stopped = False
            # the backlog drains by itself; then Elasticsearch alone answers (no fallback)
            deadline = time.monotonic() + 180
            while not (store.indexer.healthy and store.visibility.indexed >= store.visibility.issued):
                assert time.monotonic() < deadline, "the outbox backlog did not drain into Elasticsearch"
                await asyncio.sleep(0.2)
            store.fallback = False
            assert await store.count("Patient", everyone) == N + 1
            for i in (0, 499, N - 1):
                tree = await _tree(store, [("identifier", f"urn:down|{i}")])
                page = await store.search(SearchQuery("Patient", tree))
                assert [v.rid for v in page.versions] == [f"down-{i}"]
            family = await _tree(store, [("family", "outage99")])  # starts-with: Outage99, Outage990…999
            assert await store.count("Patient", family) == 11
        finally:
            if stopped:
                _services("start", "--resume", "elasticsearch")
            await store.close()

    asyncio.run(run())
