"""The SQLite store's index rows (``storage/sqlite/rows.py``): built by value class, they must hold exactly the
family's columns; and rows built before a version is stamped (a prepare process) plus its ``_lastUpdated`` row must
be the rows of the stamped resource, so that both write paths index alike."""

from __future__ import annotations

from collections import Counter
from typing import Any

from fhir_server.search.extract import extract
from fhir_server.search.values import FAMILY_OF_TYPE, CompositeV
from fhir_server.storage.sqlite import rows
from fhir_server.storage.sqlite.schema import FAMILY_COLUMNS, UNKNOWN_OWNER
from resources.canonical import stamped
from tests.unit.search.test_extract import REPRESENTATIVE, demo_resources, example_resources


def _by_columns(family: str, value: Any) -> tuple[Any, ...]:
    if isinstance(value, CompositeV):
        return rows._composite_row(value)
    return tuple(getattr(value, col) for col in FAMILY_COLUMNS[family])


def test_rows_by_class_equal_rows_by_family() -> None:
    seen = set()
    for resource in REPRESENTATIVE + example_resources() + demo_resources():
        for _code, value in extract(resource):
            family = rows.FAMILY_OF_VALUE[value.__class__]
            assert rows.value_row(value) == _by_columns(family, value)
            seen.add(family)
    assert seen >= {"string", "token", "reference", "date", "quantity", "uri", "composite"}
    assert set(rows.FAMILY_OF_VALUE) == set(FAMILY_OF_TYPE.values())


def test_insert_statements() -> None:
    assert rows.INSERT["token"] == ("INSERT INTO idx_token (pid, system, code, text, owner, rkey)"
                                   " VALUES (?, ?, ?, ?, ?, ?)")
    assert rows.INSERT["uri"] == "INSERT INTO idx_uri (pid, uri, rkey) VALUES (?, ?, ?)"


def _all_rows(index: rows.IndexRows, extra: list[tuple[str, rows.Row]]) -> Counter[tuple[str, rows.Row]]:
    out: Counter[tuple[str, rows.Row]] = Counter()
    for family, family_rows in index.families:
        out.update((family, r) for r in family_rows)
    out.update(extra)
    return out


def test_rows_before_stamping_are_the_rows_of_the_stamped_resource() -> None:
    pids: dict[tuple[str, str], int] = {}
    resources = REPRESENTATIVE + example_resources() + demo_resources()
    for resource in resources:
        for code, _ in extract(resource):
            pids.setdefault((resource["resourceType"], code), len(pids) + 1)
        pids.setdefault((resource["resourceType"], "_lastUpdated"), len(pids) + 1)
    checked = 0
    for resource in resources:
        rtype, rid = resource["resourceType"], resource.get("id") or "x1"
        # a client's own versionId/lastUpdated are replaced by the store's
        sent = {**resource, "id": rid, "meta": {**(resource.get("meta") or {}), "versionId": "99",
                                                 "lastUpdated": "1999-01-01T00:00:00Z"}}
        stamp = "2026-11-26T02:40:00.123Z"
        final = stamped(sent, rid, 3, stamp)
        in_unit = rows.index_rows(pids, rtype, rid, final)
        ahead = rows.index_rows(pids, rtype, rid, sent)
        extra = rows.last_updated_rows(pids, rtype, stamp)
        assert len(extra) == 1 and extra[0][0] == "date"
        assert _all_rows(ahead, extra) == _all_rows(in_unit, extra)
        assert (ahead.narrative, ahead.content, ahead.owner) == (in_unit.narrative, in_unit.content, in_unit.owner)
        # and the stamped resource's own _lastUpdated is exactly the extra row
        stamped_values = [v for code, v in extract(final) if code == "_lastUpdated"]
        assert [(("date", (pids[(rtype, "_lastUpdated")],) + rows.value_row(v))) for v in stamped_values] == extra
        assert "1999" not in ahead.content and "99" not in ahead.content.split()
        checked += 1
    assert checked > 20


def _token_owners(resource: dict[str, Any]) -> str | int | None:
    rtype = resource["resourceType"]
    pids = {(rtype, code): i for i, (code, _) in enumerate(extract(resource), start=1)}
    index = rows.index_rows(pids, rtype, resource["id"], resource)
    tokens = dict(index.families)["token"]
    assert tokens and all(len(row) == 1 + len(FAMILY_COLUMNS["token"]) for row in tokens)
    return index.owner


def test_token_rows_carry_the_patient_their_resource_belongs_to() -> None:
    # the patient's id; the writer gives the token rows the patient's key (test_sqlite_schema.py)
    code = {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]}
    observation = {"resourceType": "Observation", "id": "o1", "status": "final", "code": code,
                   "subject": {"reference": "Patient/p1"}}
    assert _token_owners(observation) == "p1"
    # a group is no patient, and the performer is not the observation's `patient`
    assert _token_owners({**observation, "subject": {"reference": "Group/g1"},
                          "performer": [{"reference": "Patient/p2"}]}) is None
    appointment = {"resourceType": "Appointment", "id": "a1", "status": "booked",
                   "participant": [{"actor": {"reference": f"Patient/{p}"}, "status": "accepted"}
                                   for p in ("p1", "p2", "p1")]}
    assert _token_owners(appointment) == UNKNOWN_OWNER
    assert _token_owners({**appointment, "participant": appointment["participant"][:1]}) == "p1"
    assert _token_owners({"resourceType": "Patient", "id": "p1", "gender": "male"}) is None
