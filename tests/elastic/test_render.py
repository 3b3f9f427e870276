"""The Elasticsearch renderer and cursors, without a server: a few shapes spelled out (the oracle test checks the
meaning against real Elasticsearch)."""

from __future__ import annotations

from typing import Any

import pytest

from fhir_server.search.bind import bind
from fhir_server.search.request import parse_request
from fhir_server.search.rewrite import prepare_sync
from fhir_server.search.tree import Cond, Param, Row
from fhir_server.storage.base import SortKey
from fhir_server.storage.elastic import paging
from fhir_server.search.resolved import KeyIn, RefIn, as_node
from fhir_server.storage.elastic.render import MATCH_NONE, Unrenderable, render
from resources.outcome import InvalidInput


def _render(rtype: str, pairs: list[tuple[str, str]]) -> Any:
    return render(prepare_sync(bind(rtype, parse_request(pairs), strict=True).tree), rtype)


def test_token_conditions_hold_on_one_nested_value() -> None:
    assert _render("Observation", [("code", "http://loinc.org|8867-4")]) == {"nested": {"path": "token", "query": {
        "bool": {"filter": [{"term": {"token.p": "code"}}, {"bool": {"filter": [
            {"term": {"token.code": "8867-4"}}, {"term": {"token.system": "http://loinc.org"}}]}}]}}}}


def test_no_system_is_a_missing_field_inside_the_value() -> None:
    q = _render("Observation", [("code", "|8480-6")])
    assert {"bool": {"must_not": [{"exists": {"field": "token.system"}}]}} in \
        q["nested"]["query"]["bool"]["filter"][1]["bool"]["filter"]


def test_composite_components_are_typed_by_their_definition() -> None:
    q = str(_render("Observation", [("code-value-quantity", "http://loinc.org|8867-4$gt100")]))
    assert "composite.p0.token.code" in q and "composite.p1.quantity.value" in q


def test_id_is_the_document_id_field() -> None:
    assert _render("Patient", [("_id", "a,b")]) == {"terms": {"i": ["a", "b"]}}


def test_parameters_of_another_type_are_guarded_by_type() -> None:
    row = Row(Param("Patient", "gender", "token"), ((Cond("code", "=", "male"),),))
    assert render(row, None)["bool"]["filter"][0] == {"term": {"t": "Patient"}}
    assert "bool" not in render(row, "Patient")


def test_resolved_chains_and_has_are_terms() -> None:
    ref = RefIn(Param("Observation", "subject", "reference"), "Patient", frozenset({"p2", "p1"}))
    assert render(as_node(ref), "Observation") == {"nested": {"path": "reference", "query": {"bool": {"filter": [
        {"term": {"reference.p": "subject"}}, {"terms": {"reference.key": ["Patient/p1", "Patient/p2"]}}]}}}}
    assert render(as_node(KeyIn(frozenset())), "Patient") == MATCH_NONE


def test_null_operands_never_match_and_unknown_fields_are_refused() -> None:
    assert render(Row(Param("Patient", "gender", "token"), ((Cond("code", "=", None),),)), "Patient") == MATCH_NONE
    with pytest.raises(Unrenderable):
        render(Row(Param("Patient", "gender", "token"), ((Cond("nope", "=", "x"),),)), "Patient")


def test_text_search_is_a_wildcard_per_word_with_escapes() -> None:
    assert _render("Patient", [("_content", "a*b")]) == {"wildcard": {"tc": {"value": "*a\\*b*"}}}


def test_cursors_mark_missing_values_and_give_them_back_as_sentinels() -> None:
    specs = paging.sort_specs((SortKey(Param("Patient", "birthdate", "date"), True),
                               SortKey(Param("Patient", "family", "string")), SortKey(Param("Patient", "_id", "token"))))
    assert paging.es_sort(specs, False)[0] == {"so_l.birthdate.d": {"order": "desc", "missing": "_last",
                                                                     "unmapped_type": "long"}}
    assert paging.es_sort(specs, True)[1] == {"so_k.family.a": {"order": "desc", "missing": "_first",
                                                                 "unmapped_type": "keyword"}}
    cursor = paging.cursor_of([-(2**63), None, "p1", 42], specs)  # what Elasticsearch reports for missing values
    assert cursor == (3, 0, 0, "p1", 42)
    assert paging.search_after(cursor, specs) == [-(2**63), None, "p1", 42]
    assert paging.check_cursor(cursor, specs) == cursor
    with pytest.raises(InvalidInput):
        paging.check_cursor((4, 0, 0, "p1", 42), specs)  # _id always has a value
    with pytest.raises(InvalidInput):
        paging.check_cursor((0, "x", "a", "p1", 42), specs)  # a date sorts by number
