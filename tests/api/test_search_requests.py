"""How search requests are taken and judged: POST ``_search``; unknown parameters (lenient with an outcome entry, or
400 with ``Prefer: handling=strict``); malformed values (400 naming the parameter); conditional interactions with
full search criteria; and searches that see every acknowledged write at once.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.api._search import Scope, check_searchset, link_of, matches, outcomes, query_of
from tests.api._util import JSON_HEADERS, assert_error, ident, newest_change, token, uid


@pytest.fixture()
def scope(client: httpx.Client) -> Scope:
    return Scope(client)


def pat(**extra: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", **extra}


# --- POST _search ---------------------------------------------------------------------------------------------------


def test_post_search(client: httpx.Client, scope: Scope, server: Any) -> None:
    a = scope.create(pat(gender="female", name=[{"family": "Post"}]))["id"]
    b = scope.create(pat(gender="male", name=[{"family": "Post"}]))["id"]
    resp = client.post("/Patient/_search", data={"_tag": scope.tag, "gender": "female"})
    bundle = check_searchset(resp)
    assert [r["id"] for r in matches(bundle)] == [a]
    # the self link is a GET-able URL of the same search
    self_url = link_of(bundle, "self") or ""
    assert self_url.startswith(f"{server.base}/Patient?") and ("gender", "female") in query_of(self_url)
    assert [r["id"] for r in matches(check_searchset(client.get(self_url)))] == [a]
    # URL and body parameters combine (AND)
    resp = client.post("/Patient/_search", params={"_tag": scope.tag}, data={"family": "post"})
    assert {r["id"] for r in matches(check_searchset(resp))} == {a, b}
    resp = client.post("/Patient/_search", params={"gender": "male"}, data={"_tag": scope.tag, "family": "post"})
    assert [r["id"] for r in matches(check_searchset(resp))] == [b]
    # repeated body parameters AND, like repeated query parameters
    resp = client.post("/Patient/_search", content=f"_tag={scope.tag}&gender=female&gender=male".replace("|", "%7C"),
                       headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert matches(check_searchset(resp)) == []
    # paging a POST search continues with GET
    resp = client.post("/Patient/_search", data={"_tag": scope.tag, "_count": "1", "_sort": "gender"})
    first = check_searchset(resp)
    nxt = link_of(first, "next")
    assert nxt is not None
    assert [r["id"] for r in matches(check_searchset(client.get(nxt)))] == [b]


def test_post_search_refuses_other_bodies(client: httpx.Client) -> None:
    assert_error(client.post("/Patient/_search", json={"gender": "female"}), 415)
    assert_error(client.post("/Patient/_search", content=b"gender=\xff", headers={
        "Content-Type": "application/x-www-form-urlencoded"}), 400)
    assert_error(client.post("/Patient/_search", data={"birthdate": "not-a-date"}), 400, expression="birthdate")


# --- unknown parameters ---------------------------------------------------------------------------------------------


def test_unknown_parameters_are_dropped_and_reported(client: httpx.Client, scope: Scope) -> None:
    a = scope.create(pat(gender="female"))["id"]
    scope.create(pat(gender="male"))
    params = [("gender", "female"), ("colour", "blue"), ("_tag", scope.tag), ("organization.nope", "1"),
              ("shoe-size", "gt40")]
    bundle = check_searchset(client.get("/Patient", params=params))
    assert [r["id"] for r in matches(bundle)] == [a]
    found = outcomes(bundle)
    assert len(found) == 1
    issues = found[0]["issue"]
    text = json.dumps(issues)
    assert "colour" in text and "shoe-size" in text and "organization.nope" in text
    assert all(i["severity"] in ("warning", "information") for i in issues)
    # dropped from the self link, which shows what was searched
    self_query = query_of(link_of(bundle, "self") or "")
    assert ("gender", "female") in self_query and ("_tag", scope.tag) in self_query
    assert not {k for k, _ in self_query} & {"colour", "shoe-size", "organization.nope"}
    # the outcome entry is not a match and is not counted
    assert bundle.get("total") in (None, 1)
    # the same search, strict: refused, naming the first unknown parameter
    resp = client.get("/Patient", params=params, headers={"Prefer": "handling=strict"})
    assert_error(resp, 400, expression="colour")
    # strict with only known parameters is an ordinary search
    strict = check_searchset(client.get("/Patient", params=[("gender", "female"), ("_tag", scope.tag)],
                                        headers={"Prefer": "handling=strict"}))
    assert [r["id"] for r in matches(strict)] == [a] and outcomes(strict) == []
    # lenient explicitly is the default
    lenient = check_searchset(client.get("/Patient", params=params, headers={"Prefer": "handling=lenient"}))
    assert [r["id"] for r in matches(lenient)] == [a] and outcomes(lenient)


def test_unknown_parameters_in_post_search_and_compartments(client: httpx.Client, scope: Scope) -> None:
    me = scope.create(pat())["id"]
    bundle = check_searchset(client.post("/Patient/_search", data={"_id": me, "nope": "1"}))
    assert [r["id"] for r in matches(bundle)] == [me] and "nope" in json.dumps(outcomes(bundle))
    assert_error(client.post("/Patient/_search", data={"_id": me, "nope": "1"},
                             headers={"Prefer": "handling=strict"}), 400, expression="nope")
    bundle = check_searchset(client.get(f"/Patient/{me}/Observation", params={"nope": "1"}))
    assert "nope" in json.dumps(outcomes(bundle))
    assert_error(client.get(f"/Patient/{me}/Observation", params={"nope": "1"},
                            headers={"Prefer": "handling=strict"}), 400, expression="nope")


# --- malformed values -----------------------------------------------------------------------------------------------


MALFORMED = [
    ("Patient", "birthdate", "2000-13-01"),
    ("Patient", "birthdate", "2000-02-30"),
    ("Patient", "birthdate", "01/02/2000"),
    ("Patient", "birthdate", "xx2000"),
    ("Patient", "birthdate", "gte2000"),
    ("Patient", "_lastUpdated", "yesterday"),
    ("Observation", "date", "2020-01-01T25:00:00Z"),
    ("RiskAssessment", "probability", "abc"),
    ("RiskAssessment", "probability", "zz0.5"),
    ("Observation", "value-quantity", "5|http://unitsofmeasure.org"),
    ("Observation", "value-quantity", "lots"),
    ("Observation", "code-value-quantity", "1234"),
    ("Observation", "code-value-quantity", "1234$abc"),
    ("Observation", "subject", "Foo/1"),
    ("Observation", "subject", "Medication/1"),
    ("Observation", "subject", "a/b/c"),
    ("Patient", "identifier", "a|b|c"),
    ("Patient", "identifier", ""),
    ("Patient", "identifier:of-type", "MR|123"),
    ("Patient", "gender:missing", "maybe"),
    ("Patient", "name:exact", ""),
    ("Patient", "name", " "),
    ("Patient", "_text", ""),
    ("Condition", "code:below", "only-a-code"),
]
BAD_MODIFIERS = [
    ("Patient", "birthdate:exact", "2000"),
    ("Patient", "birthdate:contains", "2000"),
    ("Patient", "gender:contains", "male"),
    ("Patient", "gender:exact", "male"),
    ("Patient", "name:text", "x"),
    ("Patient", "name:in", "http://example.org/vs"),
    ("Patient", "name:below", "x"),
    ("Patient", "general-practitioner:exact", "x"),
    ("Patient", "general-practitioner:Observation", "x"),
    ("Patient", "gender:of-type", "a|b|c"),
    ("Patient", "name:bogus", "x"),
    ("RiskAssessment", "probability:not", "0.5"),
    ("Observation", "value-quantity:above", "5"),
    ("Observation", "code-value-quantity:exact", "a$1"),
    ("Patient", "_id:exact", "x"),
]


@pytest.mark.parametrize(("rtype", "name", "value"), MALFORMED + BAD_MODIFIERS)
def test_malformed_value_is_400_naming_the_parameter(client: httpx.Client, rtype: str, name: str,
                                                     value: str) -> None:
    """Malformed values are refused whether or not the client asked for strict handling (guessing could return
    wrong data), with an OperationOutcome whose issue points at the parameter."""
    for headers in ({}, {"Prefer": "handling=strict"}, {"Prefer": "handling=lenient"}):
        oo = assert_error(client.get(f"/{rtype}", params={name: value}, headers=headers), 400, expression=name)
        assert oo["issue"][0]["code"] in ("invalid", "value", "not-supported", "processing"), oo


def test_malformed_value_in_post_search_and_conditional(client: httpx.Client) -> None:
    assert_error(client.post("/Patient/_search", data={"birthdate": "2000-13-01"}), 400, expression="birthdate")
    before = newest_change(client)
    assert_error(client.post("/Patient", json=pat(), headers={**JSON_HEADERS, "If-None-Exist": "birthdate=xx1"}),
                 400, mentions="birthdate")
    assert_error(client.put("/Patient", params={"birthdate": "2000-13-01"}, json=pat(), headers=JSON_HEADERS), 400,
                 mentions="birthdate")
    assert_error(client.delete("/Patient", params={"gender:contains": "x"}), 400, mentions="gender")
    assert newest_change(client) == before


# --- conditional interactions with full criteria --------------------------------------------------------------------


def test_conditional_create_with_full_criteria(client: httpx.Client) -> None:
    family = f"Cond{uid()}"
    criteria = f"family={family}&birthdate=1980-02-03"
    headers = {**JSON_HEADERS, "If-None-Exist": criteria}
    body = pat(name=[{"family": family}], birthDate="1980-02-03")
    first = client.post("/Patient", json=body, headers=headers)
    assert first.status_code == 201, first.text
    again = client.post("/Patient", json=body, headers=headers)
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    # a different birthdate is another patient
    other = client.post("/Patient", json={**body, "birthDate": "1980-02-04"},
                        headers={**JSON_HEADERS, "If-None-Exist": f"family={family}&birthdate=1980-02-04"})
    assert other.status_code == 201
    # criteria matching both are ambiguous
    both = client.post("/Patient", json=body, headers={**JSON_HEADERS, "If-None-Exist": f"family={family}"})
    assert_error(both, 412)
    # chains and modifiers work in criteria too
    pid = first.json()["id"]
    obs = {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
           "subject": {"reference": f"Patient/{pid}"}}
    crit = f"subject:Patient.family:exact={family}&subject:Patient.birthdate=1980-02-03&code:missing=false"
    made = client.post("/Observation", json=obs, headers={**JSON_HEADERS, "If-None-Exist": crit})
    assert made.status_code == 201, made.text
    found = client.post("/Observation", json=obs, headers={**JSON_HEADERS, "If-None-Exist": crit})
    assert found.status_code == 200 and found.json()["id"] == made.json()["id"]
    # unknown parameters are never ignored in criteria
    assert_error(client.post("/Patient", json=body, headers={**JSON_HEADERS,
                                                           "If-None-Exist": f"family={family}&nope=1"}), 400,
                 mentions="nope")


def test_conditional_update_with_full_criteria(client: httpx.Client) -> None:
    family = f"Upd{uid()}"
    params = {"family": family, "gender": "female", "birthdate": "ge1990"}
    body = pat(name=[{"family": family}], gender="female", birthDate="1995-01-01")
    created = client.put("/Patient", params=params, json=body, headers=JSON_HEADERS)
    assert created.status_code == 201, created.text
    rid = created.json()["id"]
    updated = client.put("/Patient", params=params, json={**body, "active": True}, headers=JSON_HEADERS)
    assert updated.status_code == 200 and updated.json()["id"] == rid and updated.json()["meta"]["versionId"] == "2"
    # no longer matching the criteria after an update: a further conditional update creates
    client.put(f"/Patient/{rid}", json={**body, "id": rid, "birthDate": "1985-01-01"}, headers=JSON_HEADERS)
    again = client.put("/Patient", params=params, json=body, headers=JSON_HEADERS)
    assert again.status_code == 201 and again.json()["id"] != rid
    # two matches: 412
    client.post("/Patient", json=body, headers=JSON_HEADERS)
    assert_error(client.put("/Patient", params=params, json=body, headers=JSON_HEADERS), 412)


def test_conditional_delete_with_full_criteria(client: httpx.Client) -> None:
    family = f"Del{uid()}"
    keep = client.post("/Patient", json=pat(name=[{"family": family}], gender="male"), headers=JSON_HEADERS).json()
    drop = client.post("/Patient", json=pat(name=[{"family": family}], gender="female"),
                       headers=JSON_HEADERS).json()
    resp = client.delete("/Patient", params={"family": family, "gender:not": "male"})
    assert resp.status_code in (200, 204), resp.text
    assert client.get(f"/Patient/{drop['id']}").status_code == 410
    assert client.get(f"/Patient/{keep['id']}").status_code == 200
    # several matches: refused unless a count allows them
    extra = client.post("/Patient", json=pat(name=[{"family": family}]), headers=JSON_HEADERS).json()
    assert_error(client.delete("/Patient", params={"family": family}), 412)
    resp = client.delete("/Patient", params={"family": family, "_count": "5"})
    assert resp.status_code in (200, 204), resp.text
    for gone in (keep, extra):
        assert client.get(f"/Patient/{gone['id']}").status_code == 410
    # nothing matches: nothing happens
    before = newest_change(client)
    assert client.delete("/Patient", params={"family": family}).status_code in (200, 204)
    assert newest_change(client) == before


def test_conditional_patch_with_full_criteria(client: httpx.Client) -> None:
    family = f"Patch{uid()}"
    rid = client.post("/Patient", json=pat(name=[{"family": family}], birthDate="2001-01-01"),
                      headers=JSON_HEADERS).json()["id"]
    resp = client.patch("/Patient", params={"family:exact": family, "birthdate": "2001"},
                        json=[{"op": "add", "path": "/active", "value": True}],
                        headers={"Content-Type": "application/json-patch+json"})
    assert resp.status_code == 200, resp.text
    assert client.get(f"/Patient/{rid}").json()["active"] is True


# --- searches see every acknowledged write --------------------------------------------------------------------------


def test_create_then_search_at_once(client: httpx.Client) -> None:
    for _ in range(25):
        identifier = ident()
        rid = client.post("/Patient", json=pat(identifier=[identifier]), headers=JSON_HEADERS).json()["id"]
        found = check_searchset(client.get("/Patient", params={"identifier": token(identifier)}))
        assert [r["id"] for r in matches(found)] == [rid]


def test_update_then_search_at_once(client: httpx.Client, scope: Scope) -> None:
    body = scope.create(pat(name=[{"family": "Before"}], gender="male"))
    for i in range(15):
        old, new = ("before", "after") if i % 2 == 0 else ("after", "before")
        body = scope.put({**body, "name": [{"family": new.title()}], "gender": "female" if i % 2 == 0 else "male"})
        assert scope.ids("Patient", {"family": new}) == [body["id"]], i
        assert scope.ids("Patient", {"family": old}) == [], i
        assert scope.ids("Patient", {"gender": body["gender"]}) == [body["id"]], i


def test_delete_then_search_at_once(client: httpx.Client, scope: Scope) -> None:
    for _ in range(10):
        body = scope.create(pat(gender="other"))
        obs = scope.create({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                            "subject": {"reference": f"Patient/{body['id']}"}})
        assert scope.ids("Patient", {"_id": body["id"]}) == [body["id"]]
        assert client.delete(f"/Patient/{body['id']}").status_code in (200, 204)
        assert scope.ids("Patient", {"_id": body["id"]}) == []
        assert scope.ids("Patient", {"gender": "other"}) == []
        assert scope.ids("Observation", {"subject:Patient.gender": "other"}) == []
        assert scope.ids("Observation", {"subject": f"Patient/{body['id']}"}) == [obs["id"]]
        assert client.delete(f"/Observation/{obs['id']}").status_code in (200, 204)
    # a re-created (update-as-create after delete) resource is found again
    rid = uid()
    assert client.put(f"/Patient/{rid}", json=scope.tagged(pat(id=rid, gender="other")),
                      headers=JSON_HEADERS).status_code == 201
    client.delete(f"/Patient/{rid}")
    assert scope.ids("Patient", {"_id": rid}) == []
    assert client.put(f"/Patient/{rid}", json=scope.tagged(pat(id=rid, gender="other")),
                      headers=JSON_HEADERS).status_code == 201
    assert scope.ids("Patient", {"_id": rid}) == [rid]


def test_transaction_writes_are_searchable_at_once(client: httpx.Client, scope: Scope) -> None:
    identifier = ident()
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:11111111-1111-4111-8111-111111111111",
         "resource": scope.tagged(pat(identifier=[identifier])),
         "request": {"method": "POST", "url": "Patient"}},
        {"resource": scope.tagged({"resourceType": "Observation", "status": "final", "code": {"text": "tx"},
                                   "subject": {"reference": "urn:uuid:11111111-1111-4111-8111-111111111111"}}),
         "request": {"method": "POST", "url": "Observation"}},
    ]}
    resp = client.post("", json=bundle, headers=JSON_HEADERS)
    assert resp.status_code == 200, resp.text
    assert len(scope.ids("Patient", {"identifier": token(identifier)})) == 1
    assert len(scope.ids("Observation", {"subject:Patient.identifier": token(identifier)})) == 1


def test_conditional_references_and_if_none_exist_in_a_transaction(client: httpx.Client) -> None:
    family = f"Tx{uid()}"
    pid = client.post("/Patient", json=pat(name=[{"family": family}], birthDate="1970-07-07"),
                      headers=JSON_HEADERS).json()["id"]
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "tx"},
                      "subject": {"reference": f"Patient?family:exact={family}&birthdate=1970-07-07"}},
         "request": {"method": "POST", "url": "Observation"}},
        {"resource": pat(name=[{"family": family}], birthDate="1970-07-07"),
         "request": {"method": "POST", "url": "Patient", "ifNoneExist": f"family={family}&birthdate=1970"}},
    ]}
    resp = client.post("", json=bundle, headers=JSON_HEADERS)
    assert resp.status_code == 200, resp.text
    entries = resp.json()["entry"]
    assert entries[1]["response"]["status"].startswith("200")
    obs_id = entries[0]["response"]["location"].split("/")[1]
    assert client.get(f"/Observation/{obs_id}").json()["subject"]["reference"] == f"Patient/{pid}"
    # criteria that match nothing, or use an unknown parameter, fail the transaction
    bad = {**bundle, "entry": [{**bundle["entry"][0], "resource": {
        **bundle["entry"][0]["resource"], "subject": {"reference": f"Patient?family:exact={family}&nope=1"}}}]}
    before = newest_change(client)
    resp = client.post("", json=bad, headers=JSON_HEADERS)
    assert 400 <= resp.status_code < 500, resp.text
    assert newest_change(client) == before


@pytest.mark.parametrize("prefer", [["handling=strict"], ["return=minimal", "handling=strict"],
                                    ["return=minimal, handling=strict"], ["handling=strict; x=y"],
                                    ["handling=STRICT"]])
def test_prefer_strict_spellings(client: httpx.Client, prefer: list[str]) -> None:
    headers = [("Prefer", p) for p in prefer]
    assert_error(client.get("/Patient", params={"nope": "1"}, headers=headers), 400, expression="nope")


@pytest.mark.parametrize("prefer", ["handling=lenient", "return=minimal", "handling=lenient; x=y", ""])
def test_prefer_lenient_spellings(client: httpx.Client, prefer: str) -> None:
    bundle = check_searchset(client.get("/Patient", params={"nope": "1", "_count": "1"},
                                        headers={"Prefer": prefer} if prefer else {}))
    assert "nope" in json.dumps(outcomes(bundle))


@pytest.mark.parametrize("path", ["/Patient?_id={none}", "?_id={none}", "/Patient/{pid}/Observation",
                                  "/Patient/{pid}/$everything?_type=Observation", "/Patient?_summary=count&_id={none}",
                                  "/Patient?_count=0", "/Patient/{pid}/_history?_since=2999-01-01"])
def test_nothing_found_is_a_valid_bundle_in_json_and_xml(client: httpx.Client, path: str) -> None:
    """No empty arrays (json.html, xml.html): a Bundle with nothing in it has no entry element, in either format."""
    from lxml import etree

    pid = client.post("/Patient", json=pat(), headers=JSON_HEADERS).json()["id"]
    url = path.format(none=uid(), pid=pid)
    resp = client.get(url)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["resourceType"] == "Bundle" and "entry" not in body
    assert all(v != [] for v in body.values())
    resp = client.get(url, headers={"Accept": "application/fhir+xml"})
    assert resp.status_code == 200, resp.text
    root = etree.fromstring(resp.content)
    assert etree.QName(root).localname == "Bundle"
    assert root.find("{http://hl7.org/fhir}entry") is None
