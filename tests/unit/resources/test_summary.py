"""_summary and _elements subsetting: what each mode keeps, the SUBSETTED tag, and that inputs stay untouched."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import fhirkit
import pytest

from resources import jsonio
from resources.outcome import InvalidInput
from resources.summary import SUBSETTED, SUBSETTED_SYSTEM, is_subsetted, select_elements, summarize

EXAMPLES = Path(__file__).resolve().parents[2] / "data" / "examples"
EXAMPLE_FILES = sorted(EXAMPLES.glob("*.json"))


def load(name: str) -> dict[str, Any]:
    result: dict[str, Any] = jsonio.loads((EXAMPLES / name).read_bytes())
    return result


def tags(resource: dict[str, Any]) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = resource.get("meta", {}).get("tag", [])
    return result


def subsetted_count(resource: dict[str, Any]) -> int:
    return sum(1 for t in tags(resource) if t.get("system") == SUBSETTED_SYSTEM and t.get("code") == "SUBSETTED")


# ------------------------------------------------------------------------------------------------- _summary=true


def test_summary_true_keeps_summary_modifier_and_mandatory_top_level_elements() -> None:
    patient = load("aegis-patient-primitive-extensions.json")
    out = summarize(patient, "true")
    assert set(out) == {
        "resourceType",
        "id",
        "meta",
        "modifierExtension",  # not isSummary at resource level, but a modifier: dropping it would change meaning
        "identifier",
        "active",
        "name",
        "telecom",
        "gender",
        "birthDate",
        "_birthDate",
        "deceasedBoolean",
        "address",
        "managingOrganization",
        "link",
    }
    assert is_subsetted(out)
    # what a datatype holds is kept whole, including ids and extensions on its primitives
    assert out["name"] == patient["name"]
    assert out["_birthDate"] == patient["_birthDate"]


def test_summary_true_filters_backbone_elements_recursively() -> None:
    obs = load("aegis-observation-vitals.json")
    out = summarize(obs, "true")
    assert "referenceRange" not in out and "text" not in out and "contained" not in out and "note" not in out
    assert out["valueQuantity"] == obs["valueQuantity"]
    seated = out["component"][2]
    assert seated == {"code": {"text": "Cuff position"}, "valueString": "seated"}  # dataAbsentReason is not summary
    assert out["component"][0] is obs["component"][0]  # untouched parts are shared, not copied


def test_summary_true_drops_payloads_inside_datatypes() -> None:
    obs = load("aegis-observation-vitals.json")
    sampled = summarize(obs, "true")["component"][3]["valueSampledData"]
    assert "data" not in sampled
    assert sampled["dimensions"] == 1 and str(sampled["factor"]) == "1.0000001"

    doc = {
        "resourceType": "DocumentReference",
        "status": "current",
        "content": [{"attachment": {"contentType": "text/plain", "data": "SGVsbG8=", "url": "http://x/1", "size": 5}}],
    }
    out = summarize(doc, "true")
    assert out["content"] == [{"attachment": {"contentType": "text/plain", "url": "http://x/1", "size": 5}}]
    assert doc["content"][0]["attachment"]["data"] == "SGVsbG8="


def test_summary_true_keeps_mandatory_elements_that_are_not_summary() -> None:
    appt = {
        "resourceType": "Appointment",
        "status": "booked",
        "comment": "bring papers",
        "participant": [{"actor": {"reference": "Patient/1"}, "status": "accepted", "period": {"start": "2024"}}],
    }
    out = summarize(appt, "true")
    # participant is mandatory though not a summary element; inside it the model's summary flags apply
    assert out["participant"] == [{"actor": {"reference": "Patient/1"}, "status": "accepted"}]
    assert "comment" not in out


def test_summary_true_summarises_bundle_entries_by_their_own_type() -> None:
    bundle = load("aegis-bundle-searchset.json")
    out = summarize(bundle, "true")
    patient = out["entry"][1]["resource"]
    assert set(patient) == {"resourceType", "id", "name", "managingOrganization"}
    assert not is_subsetted(patient)  # only the resource that was asked for carries the tag
    assert out["entry"][0]["resource"] is bundle["entry"][0]["resource"]
    assert is_subsetted(out)


def test_summary_true_without_anything_to_drop_is_not_tagged() -> None:
    obs = {"resourceType": "Observation", "id": "x", "status": "final", "code": {"text": "t"}, "valueBoolean": True}
    out = summarize(obs, "true")
    assert out == obs and "meta" not in out
    assert out is not obs


def test_summary_true_drops_elements_the_model_does_not_know() -> None:
    out = summarize({"resourceType": "Observation", "status": "final", "code": {"text": "t"}, "bogus": 1}, "true")
    assert "bogus" not in out and is_subsetted(out)


# ----------------------------------------------------------------------------------------------- text, data, false


def test_summary_text_keeps_text_id_meta_and_mandatory_top_level() -> None:
    obs = load("aegis-observation-vitals.json")
    out = summarize(obs, "text")
    assert set(out) == {"resourceType", "id", "meta", "text", "status", "code"}
    assert out["code"] is obs["code"]
    assert is_subsetted(out)


def test_summary_data_removes_only_text() -> None:
    patient = load("aegis-patient-primitive-extensions.json")
    out = summarize(patient, "data")
    assert set(out) == set(patient) - {"text"}
    assert is_subsetted(out)


def test_summary_data_without_text_changes_nothing() -> None:
    params = load("aegis-parameters-nested.json")
    out = summarize(params, "data")
    assert out == params and "meta" not in out


def test_summary_false_is_the_whole_resource() -> None:
    patient = load("aegis-patient-primitive-extensions.json")
    assert summarize(patient, "false") is patient


def test_unknown_summary_mode() -> None:
    with pytest.raises(InvalidInput) as info:
        summarize(load("aegis-observation-vitals.json"), "count")
    assert info.value.issues[0].expression == ("_summary",)


def test_not_a_resource() -> None:
    with pytest.raises(InvalidInput):
        summarize({"resourceType": "HumanName"}, "true")
    with pytest.raises(InvalidInput):
        select_elements({"name": []}, ["name"])


# ------------------------------------------------------------------------------------------------------- _elements


def test_elements_keeps_named_plus_id_meta_and_mandatory() -> None:
    obs = load("aegis-observation-vitals.json")
    out = select_elements(obs, ["status", "value", "nonsense"])
    assert set(out) == {"resourceType", "id", "meta", "status", "code", "valueQuantity"}
    assert out["valueQuantity"] is obs["valueQuantity"]
    assert is_subsetted(out)


def test_elements_accepts_concrete_choice_names_and_keeps_primitive_extensions() -> None:
    patient = load("aegis-patient-primitive-extensions.json")
    out = select_elements(patient, ["deceasedBoolean", " birthDate "])
    assert set(out) == {"resourceType", "id", "meta", "deceasedBoolean", "birthDate", "_birthDate"}


def test_elements_that_remove_nothing_do_not_tag() -> None:
    res = {"resourceType": "Patient", "id": "1", "active": True}
    out = select_elements(res, ["active"])
    assert out == res and not is_subsetted(out)


def test_elements_adds_meta_when_missing() -> None:
    res = {"resourceType": "Patient", "active": True, "gender": "male"}
    out = select_elements(res, ["gender"])
    assert out == {"resourceType": "Patient", "gender": "male", "meta": {"tag": [SUBSETTED]}}


# ------------------------------------------------------------------------------------------------ shared guarantees


def test_existing_tags_are_kept_and_subsetted_is_not_duplicated() -> None:
    patient = load("aegis-patient-primitive-extensions.json")
    once = summarize(patient, "true")
    assert tags(once)[0] == {"system": "http://example.org/tags", "code": "vip"}
    assert subsetted_count(once) == 1
    twice = summarize(once, "text")
    assert subsetted_count(twice) == 1


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.stem)
def test_inputs_are_never_mutated_and_results_stay_valid(path: Path) -> None:
    raw = path.read_bytes()
    resource = jsonio.loads(raw)
    before = copy.deepcopy(resource)
    results = [summarize(resource, mode) for mode in ("true", "text", "data", "false")]
    results.append(select_elements(resource, ["status", "name", "value", "url"]))
    assert resource == before
    for result in results:
        # a subset keeps every mandatory element, so a valid resource stays valid
        errors = [(i.path, i.message) for i in fhirkit.validate(jsonio.dumps(result)) if i.severity == "error"]
        assert errors == []
