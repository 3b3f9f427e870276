"""The SQLite store builds index rows by value class (``store._ROW_OF_CLASS``); they must be exactly the rows of
``store._index_rows`` by family, for every value class, so the index of existing databases stays the same."""

from __future__ import annotations

from fhir_server.search.extract import extract
from fhir_server.search.values import FAMILY_OF_TYPE
from fhir_server.storage.sqlite import store
from tests.unit.search.test_extract import REPRESENTATIVE, demo_resources, example_resources


def test_rows_by_class_equal_rows_by_family() -> None:
    seen = set()
    for resource in REPRESENTATIVE + example_resources() + demo_resources():
        for _code, value in extract(resource):
            family = store._FAMILY_OF_VALUE[type(value).__name__]
            by_class_family, build = store._ROW_OF_CLASS[value.__class__]
            assert by_class_family == family
            assert build(value) == store._index_rows(family, value)
            seen.add(family)
    assert seen >= {"string", "token", "reference", "date", "quantity", "uri", "composite"}
    assert set(store._ROW_OF_CLASS) == set(FAMILY_OF_TYPE.values())


def test_insert_statements() -> None:
    assert store._INSERT_INDEX["token"] == \
        "INSERT INTO idx_token (pid, rkey, system, code, text) VALUES (?, ?, ?, ?, ?)"
    assert store._INSERT_INDEX["uri"] == "INSERT INTO idx_uri (pid, rkey, uri) VALUES (?, ?, ?)"
