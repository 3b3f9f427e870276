"""Acknowledged writes survive ``kill -9`` of the server, and no half-written transaction is ever visible.

A write load (creates, updates, transactions) runs against a real server process that is killed at a random moment,
several times over. After each restart every acknowledged version must be readable with the content it was written
with, and every transaction that was attempted must be there whole or not at all.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.conftest import requires
from tests.support.server import ServerProcess, store_args

SYSTEM = "urn:aegis:test:kill9"
ROUNDS = 5


@dataclass
class Ledger:
    versions: dict[tuple[str, str, str], str] = field(default_factory=dict)  # (type, id, vid) -> marker
    latest: dict[tuple[str, str], int] = field(default_factory=dict)
    transactions_acked: set[str] = field(default_factory=set)
    transactions_tried: set[str] = field(default_factory=set)


def _observation(marker: str, subject: str | None = None) -> dict[str, object]:
    obs: dict[str, object] = {
        "resourceType": "Observation",
        "status": "final",
        "identifier": [{"system": SYSTEM, "value": marker}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "valueQuantity": {"value": 72.50, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"},
    }
    if subject:
        obs["subject"] = {"reference": subject}
    return obs


async def _writer(client: httpx.AsyncClient, ledger: Ledger, rng: random.Random, stop: asyncio.Event) -> None:
    mine: list[tuple[str, str]] = []
    while not stop.is_set():
        roll = rng.random()
        try:
            if roll < 0.45 or not mine:
                marker = uuid.uuid4().hex
                r = await client.post("/Observation", json=_observation(marker))
                if r.status_code == 201:
                    body = r.json()
                    key = ("Observation", body["id"])
                    ledger.versions[(*key, body["meta"]["versionId"])] = marker
                    ledger.latest[key] = int(body["meta"]["versionId"])
                    mine.append(key)
            elif roll < 0.75:
                rtype, rid = rng.choice(mine)
                marker = uuid.uuid4().hex
                r = await client.put(f"/{rtype}/{rid}", json={**_observation(marker), "id": rid})
                if r.status_code in (200, 201):
                    body = r.json()
                    ledger.versions[(rtype, rid, body["meta"]["versionId"])] = marker
                    ledger.latest[(rtype, rid)] = int(body["meta"]["versionId"])
            else:
                tx = uuid.uuid4().hex
                patient_url = f"urn:uuid:{uuid.uuid4()}"
                bundle = {
                    "resourceType": "Bundle",
                    "type": "transaction",
                    "entry": [
                        {"fullUrl": patient_url,
                         "resource": {"resourceType": "Patient", "identifier": [{"system": SYSTEM, "value": tx}]},
                         "request": {"method": "POST", "url": "Patient"}},
                        *[{"resource": _observation(tx, patient_url), "request": {"method": "POST", "url": "Observation"}}
                          for _ in range(3)],
                    ],
                }
                ledger.transactions_tried.add(tx)
                r = await client.post("", json=bundle)
                if r.status_code == 200:
                    ledger.transactions_acked.add(tx)
        except httpx.TransportError:
            await asyncio.sleep(0.01)  # the server is gone; unacknowledged, so nothing is recorded


async def _load_until_killed(server: ServerProcess, ledger: Ledger, rng: random.Random) -> None:
    stop = asyncio.Event()
    async with httpx.AsyncClient(base_url=server.base, timeout=10,
                                 headers={"Content-Type": "application/fhir+json"}) as client:
        tasks = [asyncio.create_task(_writer(client, ledger, random.Random(rng.random()), stop)) for _ in range(8)]
        await asyncio.sleep(rng.uniform(0.4, 1.5))
        server.kill()
        await asyncio.sleep(0.2)
        stop.set()
        await asyncio.gather(*tasks)


def _all_versions(client: httpx.Client) -> dict[tuple[str, str, str], dict[str, object]]:
    """Every stored version, read through system history, following ``next`` links to the end."""
    out: dict[tuple[str, str, str], dict[str, object]] = {}
    url: str | None = "/_history?_count=1000"
    while url:
        page = client.get(url)
        assert page.status_code == 200, page.text
        bundle = page.json()
        for entry in bundle.get("entry", []):
            res = entry.get("resource")
            if res is not None:
                out[(res["resourceType"], res["id"], res["meta"]["versionId"])] = res
        url = next((link["url"] for link in bundle["link"] if link["relation"] == "next"), None)
    return out


def _verify(server: ServerProcess, ledger: Ledger) -> None:
    with httpx.Client(base_url=server.base, timeout=30) as client:
        stored = _all_versions(client)
        for key, marker in ledger.versions.items():
            assert key in stored, f"acknowledged {key} lost"
            assert stored[key]["identifier"][0]["value"] == marker  # type: ignore[index]
        for (rtype, rid), vid in list(ledger.latest.items())[:50]:
            current = client.get(f"/{rtype}/{rid}").json()
            assert int(current["meta"]["versionId"]) >= vid
        by_tx: dict[str, list[dict[str, object]]] = {}
        for res in stored.values():
            marker = res["identifier"][0]["value"]  # type: ignore[index]
            if marker in ledger.transactions_tried:
                by_tx.setdefault(marker, []).append(res)
        for tx in ledger.transactions_tried:
            found = by_tx.get(tx, [])
            assert len(found) in (0, 4), f"transaction {tx} is half-visible: {len(found)} of 4 resources"
            if tx in ledger.transactions_acked:
                assert len(found) == 4, f"acknowledged transaction {tx} lost"
            if found:
                patient = next(r for r in found if r["resourceType"] == "Patient")
                for obs in (r for r in found if r["resourceType"] == "Observation"):
                    assert obs["subject"]["reference"] == f"Patient/{patient['id']}"  # type: ignore[index]
        # the identifier index agrees with the stored resources: a sample of transactions found by search
        for tx in sorted(ledger.transactions_acked)[:10]:
            page = client.get("/Observation", params={"identifier": f"{SYSTEM}|{tx}"}).json()
            assert page["total"] == 3


def test_acknowledged_writes_survive_kill9(backend: str, tmp_path: Path) -> None:
    requires(backend, "durable-kill9")
    rng = random.Random(int(time.time()))
    ledger = Ledger()
    server = ServerProcess(tmp_path, args=store_args(backend))
    try:
        for _ in range(ROUNDS):
            server.start()
            asyncio.run(_load_until_killed(server, ledger, rng))
            server.start()
            _verify(server, ledger)
            server.stop()
    finally:
        server.stop()
    print(f"kill -9 rounds: {ROUNDS}; acknowledged versions: {len(ledger.versions)}; "
          f"transactions acknowledged/tried: {len(ledger.transactions_acked)}/{len(ledger.transactions_tried)}")
    assert len(ledger.versions) > 100, "the load produced too few acknowledged writes to mean anything"
    assert ledger.transactions_acked, "no transaction was acknowledged"
