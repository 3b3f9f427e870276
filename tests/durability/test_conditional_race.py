"""Conditional create and update stay race-safe across server processes that share one store.

Two server processes on the same database receive, at the same moment, many conditional creates (``If-None-Exist``)
and conditional updates (``PUT [type]?criteria``) with the same criteria. Exactly one resource may result: one
request creates (201), every other one finds it (conditional create: 200 with that resource; conditional update: 200,
a new version of it). Checked on the stored state through both servers: search, read and history.

Runs on backends with the "shared-store" capability (several server processes may serve one store).
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from pathlib import Path

import httpx

from tests.conftest import requires
from tests.support.server import ServerProcess, store_args

SYSTEM = "urn:aegis:test:race"
ROUNDS = 6
REQUESTS = 12  # per round, half to each server


def _patient(value: str, n: int) -> dict[str, object]:
    return {"resourceType": "Patient", "identifier": [{"system": SYSTEM, "value": value}],
            "name": [{"family": f"Racer{n}"}]}


async def _round(bases: list[str], value: str, conditional_update: bool) -> list[httpx.Response]:
    headers = {"Content-Type": "application/fhir+json"}
    criteria = f"identifier={SYSTEM}|{value}"
    async with httpx.AsyncClient(timeout=60) as client:
        start = asyncio.Event()

        async def one(n: int) -> httpx.Response:
            base = bases[n % len(bases)]
            await start.wait()
            if conditional_update:
                return await client.put(f"{base}/Patient?{criteria}", json=_patient(value, n), headers=headers)
            return await client.post(f"{base}/Patient", json=_patient(value, n),
                                     headers={**headers, "If-None-Exist": criteria})

        tasks = [asyncio.create_task(one(n)) for n in range(REQUESTS)]
        await asyncio.sleep(0.05)  # every request waits at the start line
        start.set()
        return await asyncio.gather(*tasks)


def _check(bases: list[str], value: str, responses: list[httpx.Response], conditional_update: bool) -> None:
    codes = Counter(r.status_code for r in responses)
    assert codes == {201: 1, 200: REQUESTS - 1}, f"{value}: {dict(codes)}: {[r.text[:200] for r in responses]}"
    ids = {r.json()["id"] for r in responses}
    assert len(ids) == 1, f"{value}: {len(ids)} resources were answered: {ids}"
    rid = ids.pop()
    for base in bases:
        found = httpx.get(f"{base}/Patient", params={"identifier": f"{SYSTEM}|{value}"}, timeout=30).json()
        assert found["total"] == 1 and found["entry"][0]["resource"]["id"] == rid, f"{value}: {found.get('total')}"
        history = httpx.get(f"{base}/Patient/{rid}/_history", params={"_count": 100}, timeout=30).json()
        versions = len(history.get("entry", []))
        # a conditional create makes one version; each conditional update one more
        assert versions == (REQUESTS if conditional_update else 1), f"{value}: {versions} versions"


def test_conditional_writes_race_across_processes(backend: str, tmp_path: Path) -> None:
    requires(backend, "shared-store")
    # one store (the same database) for both processes; SQLite's default is a file in each one's data directory
    args = store_args(backend) or ["--store", f"sqlite:///{tmp_path / 'shared' / 'aegis.db'}"]
    servers = [ServerProcess(tmp_path / f"s{n}", args=args) for n in range(2)]
    try:
        for server in servers:
            server.data_dir.mkdir()
            server.start()
        bases = [s.base for s in servers]
        for n in range(ROUNDS):
            conditional_update = n % 2 == 1
            value = uuid.uuid4().hex
            responses = asyncio.run(_round(bases, value, conditional_update))
            _check(bases, value, responses, conditional_update)
    finally:
        for server in servers:
            server.stop()
