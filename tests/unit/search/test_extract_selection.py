"""Extraction runs only the parameters a resource's top-level keys can feed (``extract._selected_plan``): skipping
the others must change nothing, not even the order of the values (the index rows are inserted in that order)."""

from __future__ import annotations

from typing import Any

import pytest

from fhir_server.search import extract as extract_module
from fhir_server.search.extract import _hot_plan, extract, plan_for
from resources.model import resource_types
from tests.unit.search.test_extract import REPRESENTATIVE, demo_resources, example_resources, synthetic


def _extract_every_plan(resource: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """extract() with every plan of the type evaluated, whatever keys the resource has."""
    with monkeypatch.context() as m:
        m.setattr(extract_module, "_selected_plan",
                  lambda rtype, engine, *keys: tuple(p[:4] for p in _hot_plan(rtype, engine)))
        return extract(resource)


def _with_extensions(resource: dict[str, Any]) -> dict[str, Any]:
    # the genetics extensions of Observation (and any other root extension parameter) get a value to find
    ext = [{"url": "http://hl7.org/fhir/StructureDefinition/observation-geneticsGene",
            "valueCodeableConcept": {"coding": [{"system": "http://www.genenames.org", "code": "HGNC:1100"}]}},
           {"url": "http://hl7.org/fhir/StructureDefinition/observation-geneticsDnaVariant", "valueString": "c.1A>G"}]
    return {**resource, "extension": ext}


def test_selection_changes_nothing_on_examples_and_demo_data(monkeypatch: pytest.MonkeyPatch) -> None:
    for resource in REPRESENTATIVE + example_resources() + demo_resources():
        for variant in (resource, _with_extensions(resource)):
            assert extract(variant) == _extract_every_plan(variant, monkeypatch)


@pytest.mark.parametrize("rtype", sorted(resource_types()))
def test_selection_changes_nothing_on_synthetic_resources(rtype: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for resource in synthetic(rtype):
        for variant in (resource, _with_extensions(resource)):
            assert extract(variant) == _extract_every_plan(variant, monkeypatch)
        # the same resource stripped to one top-level key at a time: each selection is exact on its own
        for key in resource:
            if key != "resourceType":
                one = {"resourceType": rtype, key: resource[key]}
                assert extract(one) == _extract_every_plan(one, monkeypatch)


def _with_meta(resource: dict[str, Any]) -> dict[str, Any]:
    # every meta element a parameter reads, then each alone (meta keys restrict _profile, _tag, … in turn)
    return {**resource, "meta": {"versionId": "1", "lastUpdated": "2024-01-02T03:04:05Z", "source": "http://s",
                                 "profile": ["http://p"], "tag": [{"system": "http://t", "code": "t"}],
                                 "security": [{"system": "http://s", "code": "s"}]}}


@pytest.mark.parametrize("rtype", ["Patient", "Observation", "Encounter", "Bundle"])
def test_selection_by_meta_keys(rtype: str, monkeypatch: pytest.MonkeyPatch) -> None:
    full = _with_meta({"resourceType": rtype, "id": "x"})
    variants = [full, {**full, "meta": []}, {**full, "meta": [full["meta"]]}, {**full, "meta": "x"}]
    variants += [{**full, "meta": {key: value}} for key, value in full["meta"].items()]
    for resource in variants:
        assert extract(resource) == _extract_every_plan(resource, monkeypatch)


def test_root_composites_and_extensions_have_keys() -> None:
    plans = {p.code: p for p in plan_for("Observation")}
    assert "valueQuantity" in plans["code-value-quantity"].keys
    assert {"component", "valueQuantity"} <= set(plans["combo-code-value-quantity"].keys)
    assert plans["gene-identifier"].keys == ("extension",)
