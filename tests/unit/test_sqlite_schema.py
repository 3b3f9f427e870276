"""The SQLite schema's covering key indexes, and the migration of a version 2 store to them in place."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from urllib.parse import parse_qsl

import pytest

from fhir_server.search.bind import bind
from fhir_server.search.request import parse_request
from fhir_server.search.rewrite import prepare
from fhir_server.storage.base import SearchQuery, WriteTx
from fhir_server.storage.sqlite.schema import FAMILY_COLUMNS, FAMILY_KEY_COLUMNS, SCHEMA_VERSION
from fhir_server.storage.sqlite.store import SqliteStore

OBSERVATION = {
    "resourceType": "Observation", "id": "o1", "status": "final",
    "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                              "code": "vital-signs"}]}],
    "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
    "subject": {"reference": "Patient/p1"}, "effectiveDateTime": "2021-03-04T05:06:07Z",
}


async def _write_and_search(path: Path, query: str, *, write: bool) -> list[str]:
    store = SqliteStore(str(path))
    await store.open()
    try:
        if write:
            async def unit(tx: WriteTx) -> None:
                await tx.put("Observation", "o1", OBSERVATION, method="PUT")
            await store.transact(unit)
        rtype, _, qs = query.partition("?")
        tree = await prepare(bind(rtype, parse_request(parse_qsl(qs)), strict=True).tree, rtype, store)
        page = await store.search(SearchQuery(rtype, tree, (), count=10))
        return [v.rid for v in page.versions]
    finally:
        await store.close()


def _key_indexes(conn: sqlite3.Connection) -> dict[str, list[str]]:
    names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND name LIKE 'idx_%rkey'")]
    return {name: [r[2] for r in conn.execute(f"PRAGMA index_info({name})")] for name in names}


EXPECTED = {f"idx_{family}_by_rkey": ["rkey", "pid", *FAMILY_KEY_COLUMNS[family]] for family in FAMILY_COLUMNS}
QUERY = "Observation?patient=p1&category=vital-signs&date=ge2021"


def test_a_probe_reads_the_key_index_alone(tmp_path: Path) -> None:
    db = tmp_path / "aegis.db"
    assert asyncio.run(_write_and_search(db, QUERY, write=True)) == ["o1"]
    conn = sqlite3.connect(db)
    assert _key_indexes(conn) == EXPECTED
    plan = " / ".join(r[3] for r in conn.execute(
        "EXPLAIN QUERY PLAN SELECT 1 FROM idx_token WHERE rkey = 1 AND pid = 2 AND code = 'x' AND system = 'y'"))
    assert "USING COVERING INDEX idx_token_by_rkey" in plan


def test_a_version_2_store_migrates_in_place(tmp_path: Path) -> None:
    db = tmp_path / "aegis.db"
    asyncio.run(_write_and_search(db, QUERY, write=True))
    # back to version 2's layout: key indexes of the key alone
    conn = sqlite3.connect(db, isolation_level=None)
    for family in FAMILY_COLUMNS:
        conn.execute(f"DROP INDEX idx_{family}_by_rkey")
        conn.execute(f"CREATE INDEX idx_{family}_rkey ON idx_{family} (rkey)")
    conn.execute("UPDATE store_meta SET value = '2' WHERE key = 'schema_version'")
    assert _key_indexes(conn) == {f"idx_{family}_rkey": ["rkey"] for family in FAMILY_COLUMNS}
    conn.close()

    assert asyncio.run(_write_and_search(db, QUERY, write=False)) == ["o1"]
    conn = sqlite3.connect(db)
    assert _key_indexes(conn) == EXPECTED
    assert conn.execute("SELECT value FROM store_meta WHERE key = 'schema_version'").fetchone() == (str(SCHEMA_VERSION),)


def test_an_older_store_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "aegis.db"
    asyncio.run(_write_and_search(db, QUERY, write=True))
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("UPDATE store_meta SET value = '1' WHERE key = 'schema_version'")
    conn.close()
    with pytest.raises(RuntimeError, match="schema version 1"):
        asyncio.run(_write_and_search(db, QUERY, write=False))
