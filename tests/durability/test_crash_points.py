"""Fault injection: the server is killed (SIGKILL) at exact steps of its commit path in the middle of transaction
Bundles; after a restart every transaction is whole or absent — through read, vread, search and history — and every
acknowledged one is whole.

Each backend with the "transactions" capability runs every crash point of :mod:`fhir_server.storage.faults`; a point
the backend's write path never passes (the server does not die) skips. The transactions are built so that a
half-finished commit would show: each creates a Patient and three Observations (new ``current`` documents) and
updates the same 36 pre-existing Observations (replacements), 40 versions in all — on MongoDB more than one
32-statement chunk, so the chunk crash points stop the roll-forward and the publication half-way.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import pytest

from fhir_server.storage import open_store_from_url
from fhir_server.storage.faults import ENV
from tests.conftest import requires
from tests.support.server import ServerProcess, store_args

SYSTEM = "urn:aegis:test:crash"
POOL = 36  # pre-existing Observations every transaction updates
PER_TX = 4 + POOL  # versions one transaction writes
CLIENTS = 6
TRANSACTIONS_PER_CLIENT = 6

# (point, pass): the pass that kills, late enough that some transactions were acknowledged before
CRASH_POINTS = [
    ("group-commit.before-commit", 3),
    ("group-commit.after-commit", 3),
    ("mongo.versions-written", 3),
    ("mongo.ticket-taken", 3),
    ("mongo.commit-recorded", 3),
    ("mongo.current-chunk", 4),
    ("mongo.published-chunk", 5),
]


def _marker(res: dict[str, object]) -> str:
    return str(res["identifier"][0]["value"])  # type: ignore[index]


def _obs(marker: str, subject: str | None = None) -> dict[str, object]:
    obs: dict[str, object] = {"resourceType": "Observation", "status": "final",
                              "identifier": [{"system": SYSTEM, "value": marker}],
                              "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
                              "valueQuantity": {"value": 72.50, "unit": "/min"}}
    if subject:
        obs["subject"] = {"reference": subject}
    return obs


def _transaction(marker: str) -> dict[str, object]:
    patient = f"urn:uuid:{uuid.uuid4()}"
    return {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": patient, "request": {"method": "POST", "url": "Patient",
                                         "ifNoneExist": f"identifier={SYSTEM}|{marker}"},  # (holds a claim)
         "resource": {"resourceType": "Patient", "identifier": [{"system": SYSTEM, "value": marker}]}},
        *[{"request": {"method": "POST", "url": "Observation"}, "resource": _obs(marker, patient)} for _ in range(3)],
        *[{"request": {"method": "PUT", "url": f"Observation/pool-{n}"},
           "resource": {**_obs(marker), "id": f"pool-{n}"}} for n in range(POOL)],
    ]}


def _seed(server: ServerProcess) -> None:
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "PUT", "url": f"Observation/pool-{n}"}, "resource": {**_obs("seed"), "id": f"pool-{n}"}}
        for n in range(POOL)]}
    with httpx.Client(base_url=server.base, timeout=60) as client:
        r = client.post("", json=bundle, headers={"Content-Type": "application/fhir+json"})
        assert r.status_code == 200, r.text


async def _load(server: ServerProcess, tried: set[str], acked: set[str]) -> None:
    async def client_loop(client: httpx.AsyncClient) -> None:
        for _ in range(TRANSACTIONS_PER_CLIENT):
            marker = uuid.uuid4().hex
            tried.add(marker)
            try:
                r = await client.post("", json=_transaction(marker))
            except httpx.TransportError:
                return  # the server died: this transaction is unacknowledged, and so is every later one
            assert r.status_code == 200, r.text
            acked.add(marker)

    async with httpx.AsyncClient(base_url=server.base, timeout=60,
                                 headers={"Content-Type": "application/fhir+json"}) as client:
        await asyncio.gather(*[client_loop(client) for _ in range(CLIENTS)])


def _history(client: httpx.Client) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    url: str | None = "/_history?_count=500"
    while url:
        page = client.get(url)
        assert page.status_code == 200, page.text
        bundle = page.json()
        out += [e["resource"] for e in bundle.get("entry", []) if "resource" in e]
        url = next((link["url"] for link in bundle["link"] if link["relation"] == "next"), None)
    return out


def _store_url(server: ServerProcess) -> str:
    args = server.args
    return args[args.index("--store") + 1] if "--store" in args else f"sqlite:///{server.data_dir / 'aegis.db'}"


async def _outbox(url: str) -> set[tuple[str, str, int]]:
    """Every event of the store's outbox, read to the end by a fresh consumer."""
    store = open_store_from_url(url)
    await store.open()
    try:
        seen: list[tuple[str, str, int]] = []
        while events := await store.outbox_read("crash-test", limit=500):
            seen += [(e.rtype, e.rid, e.vid) for e in events]
            await store.outbox_ack("crash-test", events[-1].seq)
    finally:
        await store.close()
    assert len(seen) == len(set(seen)), "an event was handed out twice"
    return set(seen)


def _verify(server: ServerProcess, tried: set[str], acked: set[str]) -> dict[str, int]:
    with httpx.Client(base_url=server.base, timeout=60) as client:
        versions = _history(client)
        by_marker: dict[str, list[dict[str, object]]] = {}
        for res in versions:
            by_marker.setdefault(_marker(res), []).append(res)
        visible = {m for m in tried if m in by_marker}
        for marker in tried:
            found = by_marker.get(marker, [])
            assert len(found) in (0, PER_TX), f"transaction {marker} is half-visible in history: {len(found)}"
            if marker in acked:
                assert len(found) == PER_TX, f"acknowledged transaction {marker} lost"
        # every version in history reads back by vread, with its content
        for res in versions:
            meta = res["meta"]
            r = client.get(f"/{res['resourceType']}/{res['id']}/_history/{meta['versionId']}")  # type: ignore[index]
            assert r.status_code == 200 and _marker(r.json()) == _marker(res)
        # the current pool versions are the newest visible ones, and were written by visible transactions
        newest: dict[str, int] = {}
        for res in versions:
            if str(res["id"]).startswith("pool-"):
                vid = int(res["meta"]["versionId"])  # type: ignore[index]
                newest[str(res["id"])] = max(newest.get(str(res["id"]), 0), vid)
        pool_marker: dict[str, str] = {}
        for n in range(POOL):
            r = client.get(f"/Observation/pool-{n}")
            assert r.status_code == 200
            body = r.json()
            assert int(body["meta"]["versionId"]) == newest[f"pool-{n}"], f"pool-{n}: read is not the newest version"
            assert _marker(body) in visible | {"seed"}
            pool_marker[f"pool-{n}"] = _marker(body)
        # search agrees: each visible transaction's Patient and Observations, and no trace of invisible ones
        for marker in tried:
            patients = client.get("/Patient", params={"identifier": f"{SYSTEM}|{marker}"}).json()
            observations = client.get("/Observation", params={"identifier": f"{SYSTEM}|{marker}",
                                                              "_count": 100}).json()
            expected = 3 + sum(1 for m in pool_marker.values() if m == marker) if marker in visible else 0
            assert patients["total"] == (1 if marker in visible else 0), marker
            assert observations["total"] == expected, marker
        # and nothing stays locked: every pool resource takes a new version, and a conditional create with a dead
        # transaction's criteria (claimed when it died) finds its Patient when it happened, creates one when not
        for n in range(POOL):
            r = client.put(f"/Observation/pool-{n}", json={**_obs("after"), "id": f"pool-{n}"},
                           headers={"Content-Type": "application/fhir+json"})
            assert r.status_code == 200, r.text
        for marker in tried:
            r = client.post("/Patient", json={"resourceType": "Patient",
                                              "identifier": [{"system": SYSTEM, "value": marker}]},
                            headers={"Content-Type": "application/fhir+json",
                                     "If-None-Exist": f"identifier={SYSTEM}|{marker}"})
            assert r.status_code == (200 if marker in visible else 201), (marker, r.status_code, r.text[:300])
    return {"tried": len(tried), "acknowledged": len(acked), "visible": len(visible)}


@pytest.mark.parametrize("point", [f"{p}@{n}" for p, n in CRASH_POINTS])
def test_crash_in_the_middle_of_transactions(backend: str, point: str, tmp_path: Path) -> None:
    requires(backend, "transactions")
    server = ServerProcess(tmp_path, args=store_args(backend))
    tried: set[str] = set()
    acked: set[str] = set()
    try:
        server.start()
        _seed(server)
        server.stop()
        server.env = {ENV: point}
        server.start()
        asyncio.run(_load(server, tried, acked))
        assert server.proc is not None
        try:  # a client can see the connection drop a moment before the process is reaped
            server.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pytest.skip(f"{backend}'s write path has no crash point {point.partition('@')[0]}")
        server.env = {}
        server.start()
        counts = _verify(server, tried, acked)
        with httpx.Client(base_url=server.base, timeout=60) as client:
            stored = {(str(r["resourceType"]), str(r["id"]), int(r["meta"]["versionId"]))  # type: ignore[index]
                      for r in _history(client)}
        server.stop()
        # the outbox agrees with what is visible: one event per version, none for a transaction that did not happen
        events = asyncio.run(_outbox(_store_url(server)))
        assert events == stored, (f"outbox and history differ: {len(events - stored)} extra, "
                                  f"{len(stored - events)} missing")
    finally:
        server.stop()
    print(f"{backend} {point}: {counts}")
    assert counts["acknowledged"] < counts["tried"], "the crash did not interrupt any transaction"


def _leftovers(url: str) -> int:
    """What a dead writer left in a MongoDB store, peeked at read-only (opening a store would run recovery, which is
    exactly what must happen without a restart here): versions still tagged with a transaction, and outbox tickets
    in flight."""
    from pymongo import MongoClient
    from pymongo.uri_parser import parse_uri

    with MongoClient(url, serverSelectionTimeoutMS=5000) as client:
        db = client[parse_uri(url)["database"]]
        tagged = db["versions"].count_documents({"p": {"$exists": True}})
        counter = db["meta"].find_one({"_id": "outbox"}) or {}
        return tagged + len(counter.get("w") or {})


@pytest.mark.parametrize("point", [f"{p}@{n}" for p, n in CRASH_POINTS if p.startswith("mongo.")])
def test_a_surviving_process_settles_what_a_dead_one_left(backend: str, point: str, tmp_path: Path) -> None:
    """Two server processes share the store; one dies in the middle of transactions and is *not* restarted. The
    survivor settles the dead writer's transactions by itself (its heartbeat finds writers whose process is gone),
    and then everything holds as after a restart: all-or-nothing, acknowledged ones whole, the outbox unblocked."""
    requires(backend, "commit-protocol")
    args = store_args(backend)
    dying = ServerProcess(tmp_path / "dying", args=args)
    survivor = ServerProcess(tmp_path / "survivor", args=args)
    tried: set[str] = set()
    acked: set[str] = set()
    try:
        for server in (dying, survivor):
            server.data_dir.mkdir()
        survivor.start()
        _seed(survivor)
        dying.env = {ENV: point}
        dying.start()
        asyncio.run(_load(dying, tried, acked))
        assert dying.proc is not None
        dying.proc.wait(timeout=10)
        url = _store_url(survivor)
        deadline = time.monotonic() + 60  # the heartbeat runs every lease/4 (15 s)
        while _leftovers(url) and time.monotonic() < deadline:
            time.sleep(1)
        assert not _leftovers(url), "the surviving process did not settle the dead writer's transactions"
        counts = _verify(survivor, tried, acked)
        with httpx.Client(base_url=survivor.base, timeout=60) as client:
            stored = {(str(r["resourceType"]), str(r["id"]), int(r["meta"]["versionId"]))  # type: ignore[index]
                      for r in _history(client)}
        survivor.stop()
        events = asyncio.run(_outbox(url))
        assert events == stored, (f"outbox and history differ: {len(events - stored)} extra, "
                                  f"{len(stored - events)} missing")
    finally:
        dying.stop()
        survivor.stop()
    print(f"{backend} {point} (survivor): {counts}")
    assert counts["acknowledged"] < counts["tried"], "the crash did not interrupt any transaction"
