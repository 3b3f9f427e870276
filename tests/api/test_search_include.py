"""``_include`` and ``_revinclude`` (search.html#include): forward and reverse, with a target type, ``*``, and
``:iterate``; included resources come once, with ``search.mode = include``, and never as both match and include.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.api._search import Scope, all_pages, included, keys, matches, outcomes


@pytest.fixture()
def scope(client: httpx.Client) -> Scope:
    return Scope(client)


def ref(key: str) -> dict[str, str]:
    return {"reference": key}


@pytest.fixture()
def graph(scope: Scope) -> dict[str, str]:
    """org ← patient ← (obs1, obs2 ← provenance), enc (of patient, by prac), obs1 performed by prac; other patient."""
    k: dict[str, str] = {}

    def make(name: str, res: dict[str, Any]) -> None:
        k[name] = f"{res['resourceType']}/{scope.create(res)['id']}"

    make("org", {"resourceType": "Organization", "name": "Org"})
    make("parent_org", {"resourceType": "Organization", "name": "Parent"})
    scope.client.put(f"/{k['org']}", json=scope.tagged({"resourceType": "Organization", "id": k["org"].split("/")[1],
                                                         "name": "Org", "partOf": ref(k["parent_org"])}))
    make("prac", {"resourceType": "Practitioner"})
    make("pat", {"resourceType": "Patient", "managingOrganization": ref(k["org"]),
                 "generalPractitioner": [ref(k["prac"])]})
    make("other", {"resourceType": "Patient"})
    make("enc", {"resourceType": "Encounter", "status": "finished", "class": {"code": "AMB"},
                 "subject": ref(k["pat"]), "participant": [{"individual": ref(k["prac"])}]})
    obs = {"resourceType": "Observation", "status": "final", "code": {"text": "x"}}
    make("obs1", {**obs, "subject": ref(k["pat"]), "encounter": ref(k["enc"]), "performer": [ref(k["prac"])]})
    make("obs2", {**obs, "subject": ref(k["pat"]), "hasMember": [ref(k["obs1"])]})
    make("obs_other", {**obs, "subject": ref(k["other"])})
    make("prov", {"resourceType": "Provenance", "recorded": "2020-01-01T00:00:00Z", "target": [ref(k["obs2"])],
                  "agent": [{"who": ref(k["prac"])}]})
    return k


def run(scope: Scope, rtype: str, params: list[tuple[str, str]]) -> tuple[set[str], list[str]]:
    bundle = scope.search(rtype, params)
    assert not outcomes(bundle), outcomes(bundle)
    inc = keys(included(bundle))
    assert len(inc) == len(set(inc)), f"included twice: {inc}"
    assert not set(inc) & set(keys(matches(bundle))), "a resource is both a match and an include"
    return set(keys(matches(bundle))), inc


def test_include(scope: Scope, graph: dict[str, str]) -> None:
    g = graph
    found, inc = run(scope, "Observation", [("_id", g["obs1"].split("/")[1]), ("_include", "Observation:subject")])
    assert found == {g["obs1"]} and set(inc) == {g["pat"]}
    # both observations point at the same patient: included once
    found, inc = run(scope, "Observation", [("subject", g["pat"]), ("_include", "Observation:patient")])
    assert found == {g["obs1"], g["obs2"]} and inc == [g["pat"]]
    found, inc = run(scope, "Observation", [("subject", g["pat"]), ("_include", "Observation:subject"),
                                            ("_include", "Observation:performer"),
                                            ("_include", "Observation:encounter")])
    assert set(inc) == {g["pat"], g["prac"], g["enc"]}
    # a target type narrows what is included
    found, inc = run(scope, "Observation", [("subject", g["pat"]), ("_include", "Observation:subject:Group")])
    assert inc == []
    found, inc = run(scope, "Observation", [("subject", g["pat"]), ("_include", "Observation:subject:Patient")])
    assert inc == [g["pat"]]
    # a match that is also referenced stays a match (obs2 has member obs1)
    found, inc = run(scope, "Observation", [("subject", g["pat"]), ("_include", "Observation:has-member")])
    assert found == {g["obs1"], g["obs2"]} and inc == []


def test_include_wildcard(scope: Scope, graph: dict[str, str]) -> None:
    g = graph
    found, inc = run(scope, "Observation", [("_id", g["obs1"].split("/")[1]), ("_include", "*")])
    assert set(inc) == {g["pat"], g["enc"], g["prac"]}
    found, inc = run(scope, "Observation", [("_id", g["obs1"].split("/")[1]), ("_include", "Observation:*")])
    assert set(inc) == {g["pat"], g["enc"], g["prac"]}


def test_include_iterate(scope: Scope, graph: dict[str, str]) -> None:
    g = graph
    obs1 = g["obs1"].split("/")[1]
    found, inc = run(scope, "Observation", [("_id", obs1), ("_include", "Observation:subject"),
                                            ("_include", "Patient:organization")])
    assert set(inc) == {g["pat"]}  # without :iterate the second include applies to the matches only
    found, inc = run(scope, "Observation", [("_id", obs1), ("_include", "Observation:subject"),
                                            ("_include:iterate", "Patient:organization")])
    assert set(inc) == {g["pat"], g["org"]}
    found, inc = run(scope, "Observation", [("_id", obs1), ("_include", "Observation:subject"),
                                            ("_include:iterate", "Patient:organization"),
                                            ("_include:iterate", "Organization:partof")])
    assert set(inc) == {g["pat"], g["org"], g["parent_org"]}


def test_revinclude(scope: Scope, graph: dict[str, str]) -> None:
    g = graph
    pat = g["pat"].split("/")[1]
    found, inc = run(scope, "Patient", [("_id", pat), ("_revinclude", "Observation:subject")])
    assert found == {g["pat"]} and set(inc) == {g["obs1"], g["obs2"]}
    found, inc = run(scope, "Patient", [("_id", pat), ("_revinclude", "Observation:subject"),
                                        ("_revinclude", "Encounter:patient")])
    assert set(inc) == {g["obs1"], g["obs2"], g["enc"]}
    found, inc = run(scope, "Patient", [("_id", pat), ("_revinclude", "Provenance:target")])
    assert inc == []
    found, inc = run(scope, "Patient", [("_id", pat), ("_revinclude", "Observation:subject"),
                                        ("_revinclude:iterate", "Provenance:target")])
    assert set(inc) == {g["obs1"], g["obs2"], g["prov"]}
    # revinclude and include together; the practitioner is referenced by several resources, included once
    found, inc = run(scope, "Patient", [("_id", pat), ("_revinclude", "Encounter:subject"),
                                        ("_include", "Patient:general-practitioner"),
                                        ("_include:iterate", "Encounter:participant")])
    assert set(inc) == {g["enc"], g["prac"]}
    # the other patient's observations never come along
    found, inc = run(scope, "Patient", [("_revinclude", "Observation:subject")])
    assert found == {g["pat"], g["other"]}
    assert set(inc) == {g["obs1"], g["obs2"], g["obs_other"]}


def test_include_skips_deleted_and_missing_targets(scope: Scope, graph: dict[str, str]) -> None:
    g = graph
    scope.client.delete(f"/{g['enc']}")
    dangling = scope.create({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                             "subject": ref("Patient/does-not-exist")})["id"]
    found, inc = run(scope, "Observation", [("_id", f"{g['obs1'].split('/')[1]},{dangling}"),
                                            ("_include", "Observation:encounter"),
                                            ("_include", "Observation:subject")])
    assert set(inc) == {g["pat"]}


def test_unknown_include_is_lenient_unless_strict(client: httpx.Client, scope: Scope, graph: dict[str, str]) -> None:
    bundle = scope.search("Observation", [("_include", "Observation:nope")])
    assert included(bundle) == []
    assert "Observation:nope" in str(outcomes(bundle))
    self_link = bundle["link"][0]["url"]
    assert "nope" not in self_link
    resp = client.get("/Observation", params={"_include": "Observation:nope"}, headers={"Prefer": "handling=strict"})
    assert resp.status_code == 400, resp.text
    resp = client.get("/Observation", params={"_include": "not a include"})
    assert resp.status_code == 400, resp.text


def test_revinclude_wildcard_is_reported(client: httpx.Client, scope: Scope, graph: dict[str, str]) -> None:
    bundle = scope.search("Patient", [("_id", graph["pat"].split("/")[1]), ("_revinclude", "*")])
    assert keys(matches(bundle)) == [graph["pat"]]
    assert "_revinclude" in str(outcomes(bundle))
    resp = client.get("/Patient", params={"_revinclude": "*"}, headers={"Prefer": "handling=strict"})
    assert resp.status_code == 400, resp.text
    # a source type with any of its parameters is fine
    found, inc = run(scope, "Patient", [("_id", graph["pat"].split("/")[1]), ("_revinclude", "Observation:*")])
    assert set(inc) == {graph["obs1"], graph["obs2"]}


def test_includes_follow_the_page(scope: Scope) -> None:
    """Each page carries the includes of its own matches; totals count matches only."""
    patients = [scope.create({"resourceType": "Patient", "name": [{"family": f"P{i}"}]})["id"] for i in range(5)]
    for pid in patients:
        for _ in range(2):
            scope.create({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                          "subject": {"reference": f"Patient/{pid}"}})
    pages = all_pages(scope.client, "/Observation",
                      scope.scoped([("_count", "3"), ("_include", "Observation:subject"), ("_total", "accurate")]))
    assert all(p["total"] == 10 for p in pages)
    for page in pages:
        subjects = {r["subject"]["reference"] for r in matches(page)}
        assert set(keys(included(page))) == subjects
    pages = all_pages(scope.client, "/Patient", scope.scoped([("_count", "2"), ("_sort", "family"),
                                                              ("_revinclude", "Observation:subject")]))
    assert [len(matches(p)) for p in pages] == [2, 2, 1]
    for page in pages:
        ids = {r["id"] for r in matches(page)}
        inc = included(page)
        assert len(inc) == 2 * len(ids)
        assert {r["subject"]["reference"].split("/")[1] for r in inc} == ids
    bundle = scope.search("Patient", [("_summary", "count"), ("_revinclude", "Observation:subject")])
    assert bundle["total"] == 5 and bundle.get("entry", []) == []
