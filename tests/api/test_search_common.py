"""Common search parameters (search.html#all): ``_id``, ``_lastUpdated``, ``_tag``, ``_profile``, ``_security``,
``_source``, ``_text``, ``_content``, ``_list``; reverse chaining with ``_has`` (nested); chained parameters
(multi-level, with type qualifiers); system-level search with ``_type``.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.api._search import Scope, get, keys, matches, outcomes
from tests.api._util import assert_error, create, uid, wait_ms

LOINC = "http://loinc.org"


@pytest.fixture()
def scope(client: httpx.Client) -> Scope:
    return Scope(client)


def ref(rtype: str, rid: str) -> dict[str, str]:
    return {"reference": f"{rtype}/{rid}"}


def obs(code: str = "x", **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "urn:aegis-test:cs", "code": code}]}, **extra}


def narrative(text: str) -> dict[str, str]:
    return {"status": "generated", "div": f'<div xmlns="http://www.w3.org/1999/xhtml"><p>{text}</p></div>'}


# --- _id and _lastUpdated -------------------------------------------------------------------------------------------


def test_id(scope: Scope) -> None:
    a, b, c = (scope.create({"resourceType": "Patient"})["id"] for _ in range(3))
    assert scope.idset("Patient", {"_id": a}) == {a}
    assert scope.idset("Patient", {"_id": f"{a},{c}"}) == {a, c}
    assert scope.idset("Patient", {"_id": uid()}) == set()
    assert scope.idset("Patient", [("_id", f"{a},{b}"), ("_id", f"{b},{c}")]) == {b}
    assert scope.idset("Patient", {"_id:not": a}) == {b, c}
    # an id of another type is not this type's resource
    assert scope.idset("Observation", {"_id": a}) == set()


def test_last_updated(scope: Scope) -> None:
    first = scope.create({"resourceType": "Patient"})
    wait_ms(20)
    second = scope.create({"resourceType": "Patient"})
    t1, t2 = first["meta"]["lastUpdated"], second["meta"]["lastUpdated"]
    assert t1 < t2
    a, b = first["id"], second["id"]
    assert scope.idset("Patient", {"_lastUpdated": t1}) == {a}
    assert scope.idset("Patient", {"_lastUpdated": f"eq{t2}"}) == {b}
    assert scope.idset("Patient", {"_lastUpdated": f"gt{t1}"}) == {b}
    assert scope.idset("Patient", {"_lastUpdated": f"ge{t1}"}) == {a, b}
    assert scope.idset("Patient", {"_lastUpdated": f"lt{t2}"}) == {a}
    assert scope.idset("Patient", {"_lastUpdated": f"le{t2}"}) == {a, b}
    assert scope.idset("Patient", {"_lastUpdated": f"ne{t1}"}) == {b}
    assert scope.idset("Patient", {"_lastUpdated": "gt2000-01-01"}) == {a, b}
    assert scope.idset("Patient", {"_lastUpdated": "lt2000-01-01"}) == set()
    # an update moves lastUpdated on
    wait_ms(20)
    updated = scope.put({**first, "active": True})
    t3 = updated["meta"]["lastUpdated"]
    assert scope.idset("Patient", {"_lastUpdated": f"gt{t2}"}) == {a}
    assert scope.idset("Patient", {"_lastUpdated": t1}) == set()
    assert scope.idset("Patient", {"_lastUpdated": t3}) == {a}


# --- meta: _tag, _profile, _security, _source -----------------------------------------------------------------------


def test_tag_profile_security_source(scope: Scope) -> None:
    mark = scope.code
    profile_a = f"http://example.org/fhir/StructureDefinition/{mark}-a"
    profile_b = f"http://example.org/fhir/StructureDefinition/{mark}-b"
    conf = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
    a = scope.create({"resourceType": "Patient", "meta": {
        "tag": [{"system": "urn:aegis-test:t", "code": f"red-{mark}"}],
        "profile": [profile_a], "security": [{"system": conf, "code": "R"}],
        "source": f"urn:aegis-test:src:{mark}#a"}})["id"]
    b = scope.create({"resourceType": "Patient", "meta": {
        "tag": [{"system": "urn:aegis-test:t", "code": f"blue-{mark}"}, {"code": f"red-{mark}"}],
        "profile": [profile_a, profile_b], "security": [{"system": conf, "code": "N"}],
        "source": f"urn:aegis-test:src:{mark}#b"}})["id"]
    c = scope.create({"resourceType": "Patient"})["id"]
    assert scope.idset("Patient", {"_tag": f"red-{mark}"}) == {a, b}
    assert scope.idset("Patient", {"_tag": f"urn:aegis-test:t|red-{mark}"}) == {a}
    assert scope.idset("Patient", {"_tag": f"|red-{mark}"}) == {b}
    assert scope.idset("Patient", {"_tag": f"blue-{mark}"}) == {b}
    assert scope.idset("Patient", {"_tag:not": f"blue-{mark}"}) == {a, c}
    assert scope.idset("Patient", {"_profile": profile_a}) == {a, b}
    assert scope.idset("Patient", {"_profile": profile_b}) == {b}
    assert scope.idset("Patient", {"_profile:missing": "true"}) == {c}
    assert scope.idset("Patient", {"_profile:below": f"http://example.org/fhir/StructureDefinition/{mark}"}) == {a, b}
    assert scope.idset("Patient", {"_security": f"{conf}|R"}) == {a}
    assert scope.idset("Patient", {"_security": "N"}) == {b}
    assert scope.idset("Patient", {"_security:missing": "true"}) == {c}
    assert scope.idset("Patient", {"_source": f"urn:aegis-test:src:{mark}#a"}) == {a}
    assert scope.idset("Patient", {"_source": f"urn:aegis-test:src:{mark}#b,urn:aegis-test:src:{mark}#a"}) == {a, b}
    assert scope.idset("Patient", {"_source": f"urn:aegis-test:src:{mark}"}) == set()


# --- _text and _content ---------------------------------------------------------------------------------------------


def test_text_and_content(scope: Scope) -> None:
    mark = scope.code
    a = scope.create({"resourceType": "Patient", "text": narrative(f"Allergic to PÉNICILLIN {mark}"),
                      "name": [{"family": "Quokka"}]})["id"]
    b = scope.create({"resourceType": "Patient", "text": narrative("Likes quokkas"),
                      "name": [{"family": f"Penicillin{mark}"}]})["id"]
    c = scope.create({"resourceType": "Patient", "name": [{"family": "Zebra"}]})["id"]
    assert scope.idset("Patient", {"_text": "penicillin"}) == {a}
    assert scope.idset("Patient", {"_text": f"allergic {mark}"}) == {a}
    assert scope.idset("Patient", {"_text": "quokka"}) == {b}
    assert scope.idset("Patient", {"_text": "zebra"}) == set()
    assert scope.idset("Patient", {"_text": "quokka,allergic"}) == {a, b}
    assert scope.idset("Patient", {"_content": "penicillin"}) == {a, b}
    assert scope.idset("Patient", {"_content": "quokka"}) == {a, b}
    assert scope.idset("Patient", {"_content": "zebra"}) == {c}
    assert scope.idset("Patient", [("_content", "quokka"), ("_text", "likes")]) == {b}
    assert scope.idset("Patient", {"_content": "nothing-like-this"}) == set()


# --- _list ----------------------------------------------------------------------------------------------------------


def test_list(client: httpx.Client, scope: Scope) -> None:
    p1, p2, p3 = (scope.create({"resourceType": "Patient"})["id"] for _ in range(3))
    o1 = scope.create(obs())["id"]
    listed = create(client, {"resourceType": "List", "status": "current", "mode": "working", "entry": [
        {"item": ref("Patient", p1)}, {"item": ref("Patient", p3)}, {"item": ref("Observation", o1)}]})["id"]
    other = create(client, {"resourceType": "List", "status": "current", "mode": "working",
                            "entry": [{"item": ref("Patient", p2)}]})["id"]
    empty = create(client, {"resourceType": "List", "status": "current", "mode": "working"})["id"]
    assert scope.idset("Patient", {"_list": listed}) == {p1, p3}
    assert scope.idset("Observation", {"_list": listed}) == {o1}
    assert scope.idset("Patient", {"_list": f"{listed},{other}"}) == {p1, p2, p3}
    assert scope.idset("Patient", {"_list": empty}) == set()
    assert scope.idset("Patient", {"_list": uid()}) == set()
    assert scope.idset("Patient", [("_list", listed), ("_id", f"{p1},{p2}")]) == {p1}
    # the List is read when the search runs: an edit shows at once
    resp = client.put(f"/List/{other}", json={"resourceType": "List", "id": other, "status": "current",
                                              "mode": "working", "entry": [{"item": ref("Patient", p3)}]})
    assert resp.status_code == 200
    assert scope.idset("Patient", {"_list": other}) == {p3}


# --- _has -----------------------------------------------------------------------------------------------------------


@pytest.fixture()
def clinic(scope: Scope) -> dict[str, str]:
    """Patients with Encounters and Observations, and a Provenance, for reverse chains."""
    ids: dict[str, str] = {}
    for name in ("ann", "bob", "cat", "dan"):
        ids[name] = scope.create({"resourceType": "Patient", "name": [{"family": f"{name}{scope.code}"}]})["id"]
    ids["org"] = scope.create({"resourceType": "Organization", "name": f"Clinic {scope.code}"})["id"]
    ids["prac"] = scope.create({"resourceType": "Practitioner", "name": [{"family": f"Doc{scope.code}"}]})["id"]
    enc = {"resourceType": "Encounter", "status": "finished", "class": {"code": "AMB"}}
    ids["enc_ann"] = scope.create({**enc, "subject": ref("Patient", ids["ann"]),
                                   "serviceProvider": ref("Organization", ids["org"])})["id"]
    ids["enc_bob"] = scope.create({**enc, "subject": ref("Patient", ids["bob"])})["id"]
    ids["obs_ann_hr"] = scope.create(obs("hr", subject=ref("Patient", ids["ann"]),
                                         encounter=ref("Encounter", ids["enc_ann"])))["id"]
    ids["obs_bob_bp"] = scope.create(obs("bp", subject=ref("Patient", ids["bob"]),
                                         encounter=ref("Encounter", ids["enc_bob"]),
                                         performer=[ref("Practitioner", ids["prac"])]))["id"]
    ids["obs_cat_hr"] = scope.create(obs("hr", subject=ref("Patient", ids["cat"])))["id"]
    ids["prov"] = scope.create({"resourceType": "Provenance", "recorded": "2020-01-01T00:00:00Z",
                                "target": [ref("Observation", ids["obs_bob_bp"])],
                                "agent": [{"who": ref("Practitioner", ids["prac"])}]})["id"]
    return ids


def test_has(scope: Scope, clinic: dict[str, str]) -> None:
    c = clinic
    assert scope.idset("Patient", {"_has:Observation:subject:code": "hr"}) == {c["ann"], c["cat"]}
    assert scope.idset("Patient", {"_has:Observation:patient:code": "bp"}) == {c["bob"]}
    assert scope.idset("Patient", {"_has:Observation:subject:code": "hr,bp"}) == {c["ann"], c["bob"], c["cat"]}
    assert scope.idset("Patient", {"_has:Observation:subject:code": "nothing"}) == set()
    assert scope.idset("Patient", {"_has:Encounter:subject:_id": c["enc_bob"]}) == {c["bob"]}
    assert scope.idset("Patient", [("_has:Observation:subject:code", "hr"),
                                   ("_has:Encounter:subject:status", "finished")]) == {c["ann"]}
    assert scope.idset("Practitioner", {"_has:Observation:performer:code": "bp"}) == {c["prac"]}
    # a deleted referrer no longer counts
    scope.client.delete(f"/Observation/{c['obs_cat_hr']}")
    assert scope.idset("Patient", {"_has:Observation:subject:code": "hr"}) == {c["ann"]}


def test_has_nested(scope: Scope, clinic: dict[str, str]) -> None:
    c = clinic
    # patients with an encounter that an hr observation points at
    assert scope.idset("Patient", {"_has:Encounter:subject:_has:Observation:encounter:code": "hr"}) == {c["ann"]}
    assert scope.idset("Patient", {"_has:Encounter:subject:_has:Observation:encounter:code": "bp"}) == {c["bob"]}
    # patients with an observation that a Provenance by the practitioner targets
    assert scope.idset("Patient", {"_has:Observation:subject:_has:Provenance:target:agent": c["prac"]}) == {c["bob"]}
    # _has then a chain on the referring resource
    assert scope.idset("Patient", {"_has:Encounter:subject:service-provider.name": "clinic"}) == {c["ann"]}


# --- chains ---------------------------------------------------------------------------------------------------------


def test_chain(scope: Scope, clinic: dict[str, str]) -> None:
    c, mark = clinic, scope.code
    assert scope.idset("Observation", {"subject:Patient.name": f"ann{mark}"}) == {c["obs_ann_hr"]}
    assert scope.idset("Observation", {"patient.name": f"bob{mark}"}) == {c["obs_bob_bp"]}
    assert scope.idset("Observation", {"subject.family": f"cat{mark},ann{mark}"}) == {c["obs_ann_hr"],
                                                                                      c["obs_cat_hr"]}
    assert scope.idset("Observation", {"subject:Patient.name": f"dan{mark}"}) == set()
    assert scope.idset("Observation", [("subject:Patient.name", f"ann{mark}"), ("code", "hr")]) == {c["obs_ann_hr"]}
    assert scope.idset("Observation", [("subject:Patient.name", f"ann{mark}"), ("code", "bp")]) == set()
    assert scope.idset("Observation", {"subject:Patient._id": c["bob"]}) == {c["obs_bob_bp"]}
    assert scope.idset("Observation", {"encounter.status": "finished"}) == {c["obs_ann_hr"], c["obs_bob_bp"]}
    assert scope.idset("Observation", {"performer:Practitioner.name": f"doc{mark}"}) == {c["obs_bob_bp"]}


def test_chain_multi_level(scope: Scope, clinic: dict[str, str]) -> None:
    c, mark = clinic, scope.code
    assert scope.idset("Observation", {"encounter.service-provider.name": f"clinic {mark}"}) == {c["obs_ann_hr"]}
    assert scope.idset("Observation", {"encounter:Encounter.subject:Patient.name": f"bob{mark}"}) == {
        c["obs_bob_bp"]}
    assert scope.idset("Provenance", {"target:Observation.subject:Patient.name": f"bob{mark}"}) == {c["prov"]}
    assert scope.idset("Provenance", {"target:Observation.encounter.subject:Patient.name": f"bob{mark}"}) == {
        c["prov"]}
    assert scope.idset("Provenance", {"target:Observation.encounter.subject:Patient.name": f"ann{mark}"}) == set()


def test_chain_type_qualifier_picks_the_target(scope: Scope) -> None:
    """Without a type, a chain through a multi-type reference searches every target type with the parameter."""
    name = f"Shared{scope.code}"
    p = scope.create({"resourceType": "Patient", "name": [{"family": name}]})["id"]
    loc = scope.create({"resourceType": "Location", "name": name})["id"]
    grp = scope.create({"resourceType": "Group", "type": "person", "actual": True, "name": name})["id"]
    o_p = scope.create(obs(subject=ref("Patient", p)))["id"]
    o_l = scope.create(obs(subject=ref("Location", loc)))["id"]
    o_g = scope.create(obs(subject=ref("Group", grp)))["id"]
    # Group has no name parameter: skipped without a type, unknown with one
    assert scope.idset("Observation", {"subject.name": name}) == {o_p, o_l}
    assert scope.idset("Observation", {"subject:Patient.name": name}) == {o_p}
    assert scope.idset("Observation", {"subject:Location.name": name}) == {o_l}
    assert scope.idset("Observation", {"subject:Group._id": grp}) == {o_g}
    assert scope.idset("Observation", [("subject:Group.actual", "true"), ("_id", f"{o_p},{o_g}")]) == {o_g}
    assert_error(scope.client.get("/Observation", params={"subject:Group.name": name},
                                  headers={"Prefer": "handling=strict"}), 400, expression="subject:Group.name")


def test_chain_follows_current_versions(scope: Scope) -> None:
    p = scope.create({"resourceType": "Patient", "name": [{"family": f"Before{scope.code}"}]})
    o = scope.create(obs(subject=ref("Patient", p["id"])))["id"]
    assert scope.idset("Observation", {"subject:Patient.name": f"before{scope.code}"}) == {o}
    scope.put({**p, "name": [{"family": f"After{scope.code}"}]})
    assert scope.idset("Observation", {"subject:Patient.name": f"before{scope.code}"}) == set()
    assert scope.idset("Observation", {"subject:Patient.name": f"after{scope.code}"}) == {o}
    scope.client.delete(f"/Patient/{p['id']}")
    assert scope.idset("Observation", {"subject:Patient.name": f"after{scope.code}"}) == set()


def test_chain_errors(client: httpx.Client) -> None:
    assert_error(client.get("/Observation", params={"code.name": "x"}), 400, expression="code.name")
    assert_error(client.get("/Observation", params={"subject:Foo.name": "x"}), 400, expression="subject:Foo.name")
    assert_error(client.get("/Observation", params={"subject:Medication.name": "x"}), 400,
                 expression="subject:Medication.name")
    deep = "encounter.subject:Patient.organization.partof.partof.name"
    assert_error(client.get("/Observation", params={deep: "x"}), 400, expression=deep)


# --- system level and _type -----------------------------------------------------------------------------------------


def test_system_search_with_type(client: httpx.Client, scope: Scope) -> None:
    p = scope.create({"resourceType": "Patient", "gender": "female"})["id"]
    o = scope.create(obs())["id"]
    e = scope.create({"resourceType": "Encounter", "status": "planned", "class": {"code": "AMB"}})["id"]
    tag = ("_tag", scope.tag)
    assert set(keys(matches(get(client, "", [tag])))) == {f"Patient/{p}", f"Observation/{o}", f"Encounter/{e}"}
    bundle = get(client, "", [tag, ("_type", "Patient,Observation")])
    assert set(keys(matches(bundle))) == {f"Patient/{p}", f"Observation/{o}"}
    assert set(keys(matches(get(client, "", [tag, ("_type", "Encounter")])))) == {f"Encounter/{e}"}
    assert set(keys(matches(get(client, "", [tag, ("_id", f"{p},{e}")])))) == {f"Patient/{p}", f"Encounter/{e}"}
    # a parameter every listed type has, though not common to all types
    bundle = get(client, "", [tag, ("_type", "Observation,Encounter"), ("status", "final,planned")])
    assert set(keys(matches(bundle))) == {f"Observation/{o}", f"Encounter/{e}"}
    # ... but one that some listed type lacks is unknown: dropped and reported, or 400 when strict
    bundle = get(client, "", [tag, ("_type", "Patient,Observation"), ("gender", "female")])
    assert set(keys(matches(bundle))) == {f"Patient/{p}", f"Observation/{o}"}
    assert "gender" in str(outcomes(bundle))
    assert_error(client.get("", params=[tag, ("_type", "Patient,Observation"), ("gender", "female")],
                            headers={"Prefer": "handling=strict"}), 400, expression="gender")
    # POST on the base's _search
    resp = client.post("/_search", data={"_tag": scope.tag, "_type": "Observation"})
    assert resp.status_code == 200, resp.text
    assert keys(matches(resp.json())) == [f"Observation/{o}"]


def test_system_search_unknown_parameter_is_reported(client: httpx.Client, scope: Scope) -> None:
    p = scope.create({"resourceType": "Patient", "gender": "female"})["id"]
    bundle = get(client, "", [("_tag", scope.tag), ("gender", "female")])
    # gender is not a common parameter: dropped (lenient) and reported
    assert keys(matches(bundle)) == [f"Patient/{p}"]
    assert outcomes(bundle) and "gender" in str(outcomes(bundle)[0])
    assert_error(client.get("", params={"_tag": scope.tag, "gender": "female"},
                            headers={"Prefer": "handling=strict"}), 400, expression="gender")
    assert_error(client.get("", params={"_type": "Nope"}), 400, expression="_type")
    assert_error(client.get("/Patient", params={"_type": "Observation"}), 400, expression="_type")


def test_system_search_with_has_and_chains(client: httpx.Client, scope: Scope, clinic: dict[str, str]) -> None:
    """Reverse chains at system level find any type the reference points at (here Patients and Encounters)."""
    c = clinic
    tag = ("_tag", scope.tag)
    got = set(keys(matches(get(client, "", [tag, ("_has:Observation:subject:code", "hr")]))))
    assert got == {f"Patient/{c['ann']}", f"Patient/{c['cat']}"}
    got = set(keys(matches(get(client, "", [tag, ("_has:Observation:encounter:code", "bp")]))))
    assert got == {f"Encounter/{c['enc_bob']}"}
    got = set(keys(matches(get(client, "", [tag, ("_type", "Patient,Encounter"),
                                             ("_has:Observation:subject:code", "hr,bp")]))))
    assert got == {f"Patient/{c['ann']}", f"Patient/{c['bob']}", f"Patient/{c['cat']}"}
    got = set(keys(matches(get(client, "", [tag, ("_type", "Encounter"),
                                             ("_has:Observation:encounter:code", "hr")]))))
    assert got == {f"Encounter/{c['enc_ann']}"}
    got = set(keys(matches(get(client, "", [tag, ("_type", "Observation"),
                                             ("subject:Patient.name", f"ann{scope.code}")]))))
    assert got == {f"Observation/{c['obs_ann_hr']}"}
