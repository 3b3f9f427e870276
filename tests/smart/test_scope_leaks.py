"""The scope-leak suite: for each kind of token, every path that can return a resource returns nothing outside the
grant — searches, each ``_include``/``_revinclude`` form, chains, ``_has``, history, ``$everything``, compartment
and system searches, reads, and the GET entries of a batch. Seed: see tests/smart/conftest.py."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.smart.conftest import LAB, PASSWORD, Smart
from tests.smart.oauth import backend_token, standalone_token

ALL = {"Patient/pa", "Patient/pb", "Patient/pc", "Practitioner/dr1", "Organization/org1", "Observation/oa-lab",
       "Observation/oa-vital", "Observation/ob-lab", "Observation/oc-vital", "Encounter/ea", "Condition/ca",
       "Condition/cb", "Group/g1", "Bundle/bun1"}
# Group/g1 lists pa as a member, which puts it in pa's compartment (the official CompartmentDefinition)
PATIENT_A = {"Patient/pa", "Observation/oa-lab", "Observation/oa-vital", "Encounter/ea", "Condition/ca",
             "Practitioner/dr1", "Organization/org1", "Group/g1"}
GRANULAR_A = {"Patient/pa", "Observation/oa-lab"}
SYSTEM_OBS = {"Observation/oa-lab", "Observation/oa-vital", "Observation/ob-lab", "Observation/oc-vital"}

PATHS = [
    "Observation", "Patient", "Condition", "Encounter", "Group", "Practitioner", "Organization",
    "Observation?_include=Observation:subject", "Observation?_include=Observation:patient",
    "Observation?_include=Observation:performer", "Observation?_include=*",
    "Observation?_include=Observation:subject:Patient", "Patient?_revinclude=Observation:subject:Patient",
    "Condition?_include=Condition:encounter&_include:iterate=Encounter:subject&_revinclude:iterate=Group:member",
    "Observation?_include=Observation:subject&_include:iterate=Patient:general-practitioner",
    "Observation?_include=Observation:subject&_include:iterate=Patient:organization",
    "Patient?_revinclude=Observation:subject", "Patient?_revinclude=Observation:patient",
    "Patient?_revinclude=Condition:subject&_revinclude:iterate=Encounter:subject",
    "Patient?_revinclude=Group:member", "Group?_include=Group:member", "Practitioner?_revinclude=Observation:performer",
    "Practitioner?_revinclude=Patient:general-practitioner&_revinclude:iterate=Observation:subject",
    "Encounter?_revinclude=Condition:encounter", "Condition?_include=Condition:encounter",
    "Patient?_id=pb", "Patient?_id=pa,pb,pc", "Observation?subject=Patient/pb", "Observation?patient=pc",
    "Observation?subject:Patient.family=Beta", "Observation?patient.family=Alpha",
    "Patient?_has:Observation:subject:category=laboratory", "Patient?_has:Condition:subject:code:text=b",
    "Patient?_has:Observation:subject:category=vital-signs",
    "Patient?_has:Encounter:subject:_has:Condition:encounter:code:text=a",
    "Condition?encounter.status=finished", "Patient?general-practitioner.family=Who",
    "_history", "Observation/_history", "Patient/_history", "Patient/pa/_history", "Patient/pb/_history",
    "Observation/ob-lab/_history", "Observation/ob-lab/_history/1", "Observation/oa-lab/_history/1",
    "Patient/pa/$everything", "Patient/pb/$everything", "Patient/pc/$everything?_type=Observation",
    "Patient/pa/Observation", "Patient/pb/Observation", "Patient/pb/Condition", "Patient/pb/Patient",
    "?_type=Observation,Patient,Group,Condition", "?_type=Observation&_include=Observation:subject",
    "Observation/ob-lab", "Observation/oa-lab", "Patient/pb", "Patient/pa", "Group/g1", "Condition/cb",
    "Bundle", "Bundle/bun1", "?_type=Bundle,Patient",
]


def returned(body: Any) -> set[str]:
    """Every resource in a response body, nested Bundles (batch responses, search results) included."""
    found: set[str] = set()
    if isinstance(body, dict):
        rtype = body.get("resourceType")
        if rtype == "Bundle" and body.get("type") == "collection":
            found.add(f"Bundle/{body['id']}")
        elif rtype == "Bundle":
            for entry in body.get("entry") or []:
                found |= returned(entry.get("resource"))
        elif rtype and rtype != "OperationOutcome" and body.get("id"):
            found.add(f"{rtype}/{body['id']}")
    return found


def fetch_all(smart: Smart, token: str) -> dict[str, tuple[int, set[str]]]:
    out: dict[str, tuple[int, set[str]]] = {}
    with smart.fhir(token) as fhir:
        for path in PATHS:
            r = fhir.get("/" + path if not path.startswith("?") else path)
            assert r.status_code in (200, 403), (path, r.status_code, r.text)
            out[path] = (r.status_code, returned(r.json()) if r.status_code == 200 else set())
        # the same reads as GET entries of one batch
        batch = {"resourceType": "Bundle", "type": "batch",
                 "entry": [{"request": {"method": "GET", "url": p}} for p in PATHS]}
        r = fhir.post("", json=batch, headers={"Content-Type": "application/fhir+json"})
        assert r.status_code == 200, r.text
        entries = r.json()["entry"]
        assert len(entries) == len(PATHS)
        for path, entry in zip(PATHS, entries):
            status = int(entry["response"]["status"].split()[0])
            assert status in (200, 403), (path, entry)
            out["batch " + path] = (status, returned(entry.get("resource")))
        # POST _search (form body) takes the same path as GET
        r = fhir.post("/Observation/_search", data={"_include": "Observation:subject"})
        out["POST Observation/_search"] = (r.status_code, returned(r.json()) if r.status_code == 200 else set())
    return out


def assert_within(results: dict[str, tuple[int, set[str]]], allowed: set[str]) -> None:
    leaks = {path: found - allowed for path, (_, found) in results.items() if found - allowed}
    assert not leaks, f"resources outside the grant came back: {leaks}"


@pytest.fixture(scope="module")
def patient_token(smart: Smart) -> str:
    # a practitioner signs in and picks patient pa in the patient picker
    token = standalone_token(smart.ep, smart.public_id, "launch/patient patient/*.rs", "drwho", PASSWORD, patient="pa")
    assert token["patient"] == "pa"
    return str(token["access_token"])


@pytest.fixture(scope="module")
def granular_token(smart: Smart) -> str:
    scope = f"launch/patient patient/Observation.rs?category={LAB} patient/Patient.rs"
    token = standalone_token(smart.ep, smart.public_id, scope, "drwho", PASSWORD, patient="pa")
    assert token["patient"] == "pa"
    return str(token["access_token"])


@pytest.fixture(scope="module")
def patient_user_token(smart: Smart) -> str:
    token = standalone_token(smart.ep, smart.public_id, "openid fhirUser user/*.rs", "alice", PASSWORD)
    return str(token["access_token"])


@pytest.fixture(scope="module")
def practitioner_user_token(smart: Smart) -> str:
    token = standalone_token(smart.ep, smart.public_id, "openid fhirUser user/*.rs", "drwho", PASSWORD)
    return str(token["access_token"])


@pytest.fixture(scope="module")
def system_obs_token(smart: Smart) -> str:
    got = backend_token(smart.ep, smart.backend_keys["ES384"], "ES384", smart.backend_id, "system/Observation.rs")
    assert got.status_code == 200, got.text
    return str(got.json()["access_token"])


def test_patient_scoped_token_sees_only_its_patient(smart: Smart, patient_token: str) -> None:
    results = fetch_all(smart, patient_token)
    assert_within(results, PATIENT_A)
    # the paths really ran (and returned what the grant allows)
    assert results["Observation"][1] == {"Observation/oa-lab", "Observation/oa-vital"}
    assert results["Observation?_include=Observation:performer"][1] == {
        "Observation/oa-lab", "Observation/oa-vital", "Practitioner/dr1"}
    assert results["Patient?_revinclude=Observation:subject"][1] == {
        "Patient/pa", "Observation/oa-lab", "Observation/oa-vital"}
    assert results["Practitioner?_revinclude=Patient:general-practitioner&_revinclude:iterate=Observation:subject"][1] \
        == {"Practitioner/dr1", "Patient/pa", "Observation/oa-lab", "Observation/oa-vital"}
    # $everything: the compartment, plus (search.mode include) what its members refer to, within the grant
    assert results["Patient/pa/$everything"][1] == {"Patient/pa", "Observation/oa-lab", "Observation/oa-vital",
                                                     "Encounter/ea", "Condition/ca", "Group/g1", "Practitioner/dr1",
                                                     "Organization/org1"}
    assert results["Patient?_has:Observation:subject:category=laboratory"][1] == {"Patient/pa"}
    assert results["Observation?subject:Patient.family=Beta"][1] == set()
    assert results["Patient/pa/$everything"][1] >= {"Group/g1"}
    assert results["Bundle"] == (200, set())  # outside the compartment and not shared reference data
    for denied in ("Patient/pb", "Observation/ob-lab", "Patient/pb/$everything", "Patient/pb/_history",
                   "Observation/ob-lab/_history/1", "Bundle/bun1"):
        assert results[denied][0] == 403, denied
        assert results["batch " + denied][0] == 403, denied
    assert results["Observation/_history"][1] == {"Observation/oa-lab", "Observation/oa-vital"}


def test_granular_token_sees_only_laboratory_observations_of_its_patient(smart: Smart, granular_token: str) -> None:
    results = fetch_all(smart, granular_token)
    assert_within(results, GRANULAR_A)
    assert results["Observation"][1] == {"Observation/oa-lab"}
    assert results["Patient?_revinclude=Observation:subject"][1] == {"Patient/pa", "Observation/oa-lab"}
    assert results["Observation/oa-lab"][0] == 200
    # _has cannot probe resources outside the grant: pa has a vital-signs Observation this token may not see
    assert results["Patient?_has:Observation:subject:category=laboratory"][1] == {"Patient/pa"}
    assert results["Patient?_has:Observation:subject:category=vital-signs"][1] == set()
    for denied in ("Condition", "Encounter", "Practitioner", "Observation/ob-lab"):
        assert results[denied][0] == 403, denied


def test_patient_user_token_is_held_to_the_users_own_compartment(smart: Smart, patient_user_token: str) -> None:
    results = fetch_all(smart, patient_user_token)
    assert_within(results, PATIENT_A)
    assert results["Patient"][1] == {"Patient/pa"}


def test_practitioner_user_token_sees_every_patient(smart: Smart, practitioner_user_token: str) -> None:
    results = fetch_all(smart, practitioner_user_token)
    assert_within(results, ALL)
    assert results["Patient"][1] == {"Patient/pa", "Patient/pb", "Patient/pc"}
    assert results["Group?_include=Group:member"][1] == {"Group/g1", "Patient/pa", "Patient/pb"}


def test_system_token_for_observations_sees_only_observations(smart: Smart, system_obs_token: str) -> None:
    results = fetch_all(smart, system_obs_token)
    assert_within(results, SYSTEM_OBS)
    assert results["Observation?_include=Observation:subject"][1] == SYSTEM_OBS
    assert results["Patient"][0] == 403
    assert results["?_type=Observation,Patient,Group,Condition"][1] == SYSTEM_OBS
    # chains cannot probe resources outside the grant (Patients here) either
    assert results["Observation?subject:Patient.family=Beta"][1] == set()
    assert results["Observation?patient.family=Alpha"][1] == set()


def test_totals_count_only_what_the_grant_allows(smart: Smart, patient_token: str, granular_token: str) -> None:
    for token, expected in ((patient_token, 2), (granular_token, 1)):
        with smart.fhir(token) as fhir:
            assert fhir.get("/Observation?_summary=count").json()["total"] == expected
            assert fhir.get("/Observation?_total=accurate&_count=1").json()["total"] == expected
            assert fhir.get("/Observation?_count=0").json()["total"] == expected


def test_paging_links_keep_the_constraint(smart: Smart, patient_token: str) -> None:
    with smart.fhir(patient_token) as fhir:
        seen: set[str] = set()
        url: str | None = "/Observation?_count=1"
        while url:
            page = fhir.get(url).json()
            seen |= returned(page)
            url = next((link["url"] for link in page["link"] if link["relation"] == "next"), None)
        assert seen == {"Observation/oa-lab", "Observation/oa-vital"}


def test_a_patient_token_without_write_scopes_cannot_write(smart: Smart, patient_token: str) -> None:
    with smart.fhir(patient_token) as fhir:
        r = fhir.post("/Observation", json={"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                                            "subject": {"reference": "Patient/pa"}},
                      headers={"Content-Type": "application/fhir+json"})
        assert r.status_code == 403
        assert r.json()["resourceType"] == "OperationOutcome"


def _obs(pid: str, code: str, oid: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"resourceType": "Observation", "status": "final",
                            "code": {"coding": [{"system": "urn:test", "code": code}]},
                            "subject": {"reference": f"Patient/{pid}"}}
    if oid:
        body["id"] = oid
    return body


def test_patient_scoped_writes_stay_in_the_patients_compartment(smart: Smart) -> None:
    token = standalone_token(smart.ep, smart.public_id, "launch/patient patient/*.cruds", "alice", PASSWORD)
    headers = {"Content-Type": "application/fhir+json"}
    system = smart.fhir(smart.system_token)
    with smart.fhir(token["access_token"]) as fhir, system:
        assert fhir.post("/Observation", json=_obs("pa", "w"), headers=headers).status_code == 201
        assert fhir.post("/Observation", json=_obs("pb", "w"), headers=headers).status_code == 403
        assert fhir.put("/Observation/w-new-b", json=_obs("pb", "w", "w-new-b"), headers=headers).status_code == 403
        # moving another patient's resource into my compartment is an update of a resource I may not touch
        assert fhir.put("/Observation/ob-lab", json=_obs("pa", "w", "ob-lab"), headers=headers).status_code == 403
        assert fhir.delete("/Observation/ob-lab").status_code == 403
        assert fhir.patch("/Observation/ob-lab", json=[{"op": "replace", "path": "/status", "value": "amended"}],
                          headers={"Content-Type": "application/json-patch+json"}).status_code == 403
        # conditional delete only sees my patient's matches
        for pid, oid in (("pa", "w-cond-a"), ("pb", "w-cond-b")):
            assert system.put(f"/Observation/{oid}", json=_obs(pid, "cond", oid), headers=headers).status_code == 201
        r = fhir.delete("/Observation?code=urn:test|cond&_count=10")
        assert r.status_code == 200, r.text
        assert system.get("/Observation/w-cond-a").status_code == 410
        assert system.get("/Observation/w-cond-b").status_code == 200
        # conditional update cannot reach the other patient's match either: it creates in my compartment instead
        r = fhir.put("/Observation?code=urn:test|cond", json=_obs("pb", "cond"), headers=headers)
        assert r.status_code == 403
        # a transaction with one entry outside the compartment fails whole
        tx = {"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": _obs("pa", "tx", "w-tx-a"), "request": {"method": "PUT", "url": "Observation/w-tx-a"}},
            {"resource": _obs("pb", "tx", "w-tx-b"), "request": {"method": "PUT", "url": "Observation/w-tx-b"}}]}
        r = fhir.post("", json=tx, headers=headers)
        assert r.status_code == 403, r.text
        assert system.get("/Observation/w-tx-a").status_code == 404
        # conditional references and ifNoneExist inside a transaction resolve within the grant only
        tx = {"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": {**_obs("pa", "tx2"), "subject": {"reference": "Patient?family=Beta"}},
             "request": {"method": "POST", "url": "Observation"}}]}
        r = fhir.post("", json=tx, headers=headers)
        assert r.status_code == 412, r.text  # Patient?family=Beta matches nothing this token may see
        tx = {"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": _obs("pa", "tx3"), "request": {"method": "POST", "url": "Observation",
                                                         "ifNoneExist": "_id=ob-lab"}}]}
        r = fhir.post("", json=tx, headers=headers)
        assert r.status_code == 200, r.text
        assert r.json()["entry"][0]["response"]["status"].startswith("201")  # created, not ob-lab returned
        # conditional create's match is constrained too: it does not find pb's resource, so it creates (for pa)
        r = fhir.post("/Observation", json=_obs("pa", "cond"), headers={**headers,
                                                                        "If-None-Exist": "code=urn:test|cond"})
        assert r.status_code == 201, r.text


def test_403_for_a_type_the_token_has_no_scope_for(smart: Smart, granular_token: str) -> None:
    with smart.fhir(granular_token) as fhir:
        r = fhir.get("/Condition")
        assert r.status_code == 403
        outcome = r.json()
        assert outcome["resourceType"] == "OperationOutcome"
        assert outcome["issue"][0]["code"] == "forbidden"


def test_http_client_without_token_gets_nothing(smart: Smart) -> None:
    for path in ("/Observation", "/Patient/pa", "/_history", "/Patient/pa/$everything"):
        r = httpx.get(smart.base + path, timeout=30)
        assert r.status_code == 401
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert r.json()["resourceType"] == "OperationOutcome"


def test_terminology_expansion_works_for_tokens_without_terminology_scopes(smart: Smart, granular_token: str) -> None:
    vs = {"resourceType": "ValueSet", "id": "vs-glucose", "url": "http://example.org/vs/glucose", "status": "active",
          "compose": {"include": [{"system": "http://loinc.org", "concept": [{"code": "2345-7"}]}]}}
    with smart.fhir(smart.system_token) as system:
        assert system.put("/ValueSet/vs-glucose", json=vs,
                          headers={"Content-Type": "application/fhir+json"}).status_code in (200, 201)
    with smart.fhir(granular_token) as fhir:  # no scope on ValueSet: the expansion still sees it
        assert fhir.get("/ValueSet/vs-glucose").status_code == 403
        r = fhir.get("/Observation", params={"code:in": "http://example.org/vs/glucose"})
        assert r.status_code == 200, r.text
        assert returned(r.json()) == {"Observation/oa-lab"}  # ob-lab has the code too, but is pb's
