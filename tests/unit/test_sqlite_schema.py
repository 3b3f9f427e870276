"""The SQLite schema's covering key indexes and token and date owners, and the migration of version 2, 3 and 4 stores
to them in place."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest

from fhir_server.search.bind import bind
from fhir_server.search.request import parse_request
from fhir_server.search.rewrite import prepare
from fhir_server.storage.base import SearchQuery, SortKey, WriteTx
from fhir_server.storage.sqlite.schema import (
    FAMILY_COLUMNS,
    FAMILY_KEY_COLUMNS,
    SCHEMA_VERSION,
    UNKNOWN_OWNER,
)
from fhir_server.storage.sqlite.plan import PlanLimits
from fhir_server.storage.sqlite.store import SqliteStore

OBSERVATION = {
    "resourceType": "Observation", "id": "o1", "status": "final",
    "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                              "code": "vital-signs"}]}],
    "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
    "subject": {"reference": "Patient/p1"}, "effectiveDateTime": "2021-03-04T05:06:07Z",
}


async def _write_all(path: Path, resources: list[dict[str, Any]]) -> None:
    store = SqliteStore(str(path))
    await store.open()
    try:
        async def unit(tx: WriteTx) -> None:
            for res in resources:
                await tx.put(res["resourceType"], res["id"], res, method="PUT")
        await store.transact(unit)
    finally:
        await store.close()


async def _search(path: Path, query: str) -> list[str]:
    store = SqliteStore(str(path))
    await store.open()
    try:
        rtype, _, qs = query.partition("?")
        tree = await prepare(bind(rtype, parse_request(parse_qsl(qs)), strict=True).tree, rtype, store)
        page = await store.search(SearchQuery(rtype, tree, (), count=10))
        return sorted(v.rid for v in page.versions)
    finally:
        await store.close()


async def _write_and_search(path: Path, query: str, *, write: bool) -> list[str]:
    if write:
        await _write_all(path, [OBSERVATION])
    return await _search(path, query)


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


def _date_rows_of_version_4(conn: sqlite3.Connection) -> None:
    """Back to version 4's date table: no owner column, value indexes on (pid, lo) and (pid, hi)."""
    conn.execute("CREATE TABLE idx_date_v4 (pid INTEGER NOT NULL, rkey INTEGER NOT NULL, lo, hi)")
    conn.execute("INSERT INTO idx_date_v4 SELECT pid, rkey, lo, hi FROM idx_date ORDER BY rowid")
    conn.execute("DROP TABLE idx_date")
    conn.execute("ALTER TABLE idx_date_v4 RENAME TO idx_date")
    conn.execute("CREATE INDEX idx_date_pid_lo ON idx_date (pid, lo, rkey)")
    conn.execute("CREATE INDEX idx_date_pid_hi ON idx_date (pid, hi, rkey)")
    conn.execute("CREATE INDEX idx_date_by_rkey ON idx_date (rkey, pid, lo, hi)")


def _token_rows_of_version_3(conn: sqlite3.Connection) -> None:
    """Back to version 3's token table (no owner column, its value index on (pid, code, system)), and version 4's
    date table."""
    _date_rows_of_version_4(conn)
    conn.execute("CREATE TABLE idx_token_v3 (pid INTEGER NOT NULL, rkey INTEGER NOT NULL, system, code, text)")
    conn.execute("INSERT INTO idx_token_v3 SELECT pid, rkey, system, code, text FROM idx_token ORDER BY rowid")
    conn.execute("DROP TABLE idx_token")
    conn.execute("ALTER TABLE idx_token_v3 RENAME TO idx_token")
    conn.execute("CREATE INDEX idx_token_pid_code_system ON idx_token (pid, code, system, rkey)")
    conn.execute("CREATE INDEX idx_token_by_rkey ON idx_token (rkey, pid, system, code)")


def _columns(conn: sqlite3.Connection, table: str) -> list[str]:
    return [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]


def test_a_version_2_store_migrates_in_place(tmp_path: Path) -> None:
    db = tmp_path / "aegis.db"
    asyncio.run(_write_and_search(db, QUERY, write=True))
    # back to version 2's layout: key indexes of the key alone, token rows without owners
    conn = sqlite3.connect(db, isolation_level=None)
    _token_rows_of_version_3(conn)
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


OWNED: list[dict[str, Any]] = [
    {"resourceType": "Patient", "id": "p1"}, {"resourceType": "Patient", "id": "p2"},
    {"resourceType": "Patient", "id": "p3"},
    {**OBSERVATION, "id": "o1", "subject": {"reference": "Patient/p1"}},
    {**OBSERVATION, "id": "o2", "subject": {"reference": "Group/g1"}},  # no patient: no owner
    {"resourceType": "Appointment", "id": "a1", "status": "booked",  # two patients
     "participant": [{"actor": {"reference": f"Patient/{p}"}, "status": "accepted"} for p in ("p2", "p3")]},
    {"resourceType": "Appointment", "id": "a2", "status": "proposed",
     "participant": [{"actor": {"reference": "Patient/p3"}, "status": "accepted"}]},
]


def _owners(conn: sqlite3.Connection, family: str = "token") -> dict[tuple[str, str], set[str | int | None]]:
    """The owners of each resource's token (or date) rows, a patient's key given as its id."""
    out: dict[tuple[str, str], set[str | int | None]] = {}
    for rtype, rid, owner, patient in conn.execute(
            f"SELECT c.rtype, c.rid, t.owner, p.rid FROM idx_{family} t JOIN resource_current c ON c.rkey = t.rkey"
            " LEFT JOIN resource_current p ON p.rkey = t.owner AND p.rtype = 'Patient'"):
        out.setdefault((rtype, rid), set()).add(patient if patient is not None else owner)
    return out


def test_a_version_3_store_migrates_in_place_and_its_token_rows_get_their_patients(tmp_path: Path) -> None:
    db = tmp_path / "aegis.db"
    asyncio.run(_write_all(db, OWNED))
    conn = sqlite3.connect(db, isolation_level=None)
    written = _owners(conn)
    assert written[("Observation", "o1")] == {"p1"}
    assert written[("Observation", "o2")] == {None}
    assert written[("Appointment", "a1")] == {UNKNOWN_OWNER}
    assert written[("Appointment", "a2")] == {"p3"}
    assert written[("Patient", "p1")] == {None}
    dates_written = _owners(conn, "date")
    _token_rows_of_version_3(conn)
    conn.execute("UPDATE store_meta SET value = '3' WHERE key = 'schema_version'")
    assert "owner" not in _columns(conn, "idx_token")
    conn.close()

    # opening migrates; here _has drives (through the owners), below _id drives and _has probes the owners
    assert asyncio.run(_search(db, "Patient?_has:Appointment:patient:status=booked")) == ["p2", "p3"]
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT value FROM store_meta WHERE key = 'schema_version'").fetchone() == (str(SCHEMA_VERSION),)
    assert "owner" in _columns(conn, "idx_token")
    assert _owners(conn) == written
    assert _owners(conn, "date") == dates_written  # and on to version 5
    # integer affinity, or SQLite would not use the index for `owner = c.rkey` (a patient's key)
    assert [r[2] for r in conn.execute("PRAGMA table_info(idx_token)") if r[1] == "owner"] == ["INTEGER"]
    plan = " / ".join(r[3] for r in conn.execute(
        "EXPLAIN QUERY PLAN SELECT 1 FROM resource_current c WHERE EXISTS (SELECT 1 FROM idx_token t"
        " WHERE t.pid = 1 AND t.code = 'x' AND t.owner = c.rkey)"))
    assert "idx_token_pid_code_owner_system (pid=? AND code=? AND owner=?)" in plan
    indexes = {r[0]: [c[2] for c in conn.execute(f"PRAGMA index_info({r[0]})")]
               for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'idx_token'")}
    assert indexes == {"idx_token_pid_code_owner_system": ["pid", "code", "owner", "system", "rkey"],
                       "idx_token_by_rkey": ["rkey", "pid", "system", "code"]}
    conn.close()
    assert asyncio.run(_search(db, "Patient?_id=p1,p2,p3&_has:Appointment:patient:status=booked,proposed")) \
        == ["p2", "p3"]
    assert asyncio.run(_search(db, "Patient?_id=p1,p2,p3&_has:Observation:patient:code=8867-4")) == ["p1"]


def test_a_version_4_store_migrates_in_place_and_its_date_rows_get_their_patients(tmp_path: Path) -> None:
    db = tmp_path / "aegis.db"
    later = {**OBSERVATION, "id": "o3", "effectiveDateTime": "2022-01-01"}
    asyncio.run(_write_all(db, [*OWNED, later]))
    conn = sqlite3.connect(db, isolation_level=None)
    written = _owners(conn, "date")  # every resource has a date row: its _lastUpdated
    assert written[("Observation", "o1")] == {"p1"}
    assert written[("Observation", "o2")] == {None}
    assert written[("Appointment", "a1")] == {UNKNOWN_OWNER}
    assert written[("Patient", "p1")] == {None}
    _date_rows_of_version_4(conn)
    conn.execute("UPDATE store_meta SET value = '4' WHERE key = 'schema_version'")
    conn.close()

    store = SqliteStore(str(db), plan_limits=PlanLimits(date_walk_from=0))

    async def newest_first() -> list[str]:
        await store.open()
        try:
            bound = bind("Observation", parse_request([("patient", "p1"), ("_sort", "-date")]), strict=True)
            tree = await prepare(bound.tree, "Observation", store)
            sort = tuple(SortKey(p, d) for p, d in bound.sort)
            return [v.rid for v in (await store.search(SearchQuery("Observation", tree, sort, count=1))).versions]
        finally:
            await store.close()

    assert asyncio.run(newest_first()) == ["o3"]
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT value FROM store_meta WHERE key = 'schema_version'").fetchone() == (str(SCHEMA_VERSION),)
    assert _owners(conn, "date") == written
    assert [r[2] for r in conn.execute("PRAGMA table_info(idx_date)") if r[1] == "owner"] == ["INTEGER"]
    indexes = {r[0]: [c[2] for c in conn.execute(f"PRAGMA index_info({r[0]})")]
               for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'idx_date'")}
    assert indexes == {"idx_date_pid_lo": ["pid", "lo", "rkey"], "idx_date_pid_hi": ["pid", "hi", "rkey"],
                       "idx_date_pid_owner_lo": ["pid", "owner", "lo", "rkey"],
                       "idx_date_by_rkey": ["rkey", "pid", "lo", "hi"]}
    conn.close()


def test_a_resource_written_before_its_patient_is_found_through_its_reference(tmp_path: Path) -> None:
    db = tmp_path / "aegis.db"
    observations = [r for r in OWNED if r["resourceType"] == "Observation"]
    # o1 before its patient p1, in a unit of its own: its rows' owner stays unknown
    asyncio.run(_write_all(db, observations))
    asyncio.run(_write_all(db, [r for r in OWNED if r not in observations]))
    conn = sqlite3.connect(db)
    assert _owners(conn)[("Observation", "o1")] == {UNKNOWN_OWNER}
    conn.close()
    for query in ("Patient?_has:Observation:patient:code=8867-4",  # driving
                  "Patient?_id=p1,p2,p3&_has:Observation:patient:code=8867-4"):  # probed
        assert asyncio.run(_search(db, query)) == ["p1"]
    # written again once p1 exists, o1 gets its owner
    asyncio.run(_write_all(db, observations[:1]))
    conn = sqlite3.connect(db)
    assert _owners(conn)[("Observation", "o1")] == {"p1"}
    conn.close()
    # in one unit: the patient's key once the patient is written, even in the same unit
    db2 = tmp_path / "one-unit.db"
    asyncio.run(_write_all(db2, [r for r in OWNED if r not in observations] + observations))
    conn = sqlite3.connect(db2)
    assert _owners(conn)[("Observation", "o1")] == {"p1"}
    conn.close()


def test_an_older_store_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "aegis.db"
    asyncio.run(_write_and_search(db, QUERY, write=True))
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("UPDATE store_meta SET value = '1' WHERE key = 'schema_version'")
    conn.close()
    with pytest.raises(RuntimeError, match="schema version 1"):
        asyncio.run(_write_and_search(db, QUERY, write=False))

