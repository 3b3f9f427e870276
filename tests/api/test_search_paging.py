"""Paging (search.html#paging): next links to the end give every match exactly once, also while other clients write;
self/next/first links; compartment search (``Patient/X/Observation``); ``Patient/X/$everything`` with ``_since``,
``_type``, ``_count`` and paging.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import pytest

from tests.api._search import Scope, all_pages, check_searchset, included, keys, link_of, matches, query_of
from tests.api._util import FHIR_JSON, JSON_HEADERS, assert_error, create, uid, wait_ms
from tests.support.server import ServerProcess


@pytest.fixture()
def scope(client: httpx.Client) -> Scope:
    return Scope(client)


def pat(**extra: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", **extra}


def obs(subject: str | None = None, code: str = "x", **extra: Any) -> dict[str, Any]:
    res: dict[str, Any] = {"resourceType": "Observation", "status": "final",
                           "code": {"coding": [{"system": "urn:aegis-test:cs", "code": code}]}, **extra}
    if subject:
        res["subject"] = {"reference": subject}
    return res


# --- links and paging to the end ------------------------------------------------------------------------------------


@pytest.mark.parametrize("sort", [None, "family", "-birthdate,family", "_lastUpdated", "-_id"])
def test_next_links_give_every_match_once(scope: Scope, sort: str | None) -> None:
    ids = {scope.create(pat(name=[{"family": f"F{i % 4}"}], birthDate=f"19{50 + i % 7}"))["id"] for i in range(23)}
    scope.create({"resourceType": "Observation", "status": "final", "code": {"text": "not a patient"}})
    params = [("_count", "5")] + ([("_sort", sort)] if sort else [])
    pages = all_pages(scope.client, "/Patient", scope.scoped(params))
    assert [len(matches(p)) for p in pages] == [5, 5, 5, 5, 3]
    seen = [r["id"] for p in pages for r in matches(p)]
    assert len(seen) == len(set(seen)) == 23 and set(seen) == ids
    # one page with everything has the same order
    one = [r["id"] for r in matches(scope.search("Patient", [("_count", "50")] + params[1:]))]
    assert seen == one


def test_links(client: httpx.Client, scope: Scope, server: ServerProcess) -> None:
    for i in range(5):
        scope.create(pat(gender="female", name=[{"family": f"Link{i}"}]))
    params = [("gender", "female"), ("_count", "2"), ("_sort", "family")]
    first = scope.search("Patient", params)
    self_url = link_of(first, "self")
    assert self_url is not None and self_url.startswith(f"{server.base}/Patient?")
    assert set(query_of(self_url)) == {*params, ("_tag", scope.tag)}
    assert link_of(first, "previous") is None
    nxt = link_of(first, "next")
    assert nxt is not None and nxt.startswith(f"{server.base}/Patient?")
    assert {k for k, _ in query_of(nxt)} == {"gender", "_count", "_sort", "_tag", "_cursor"}
    second = check_searchset(client.get(nxt))
    # a page with a cursor links back to the first page; its self link reproduces it
    assert link_of(second, "self") == nxt
    first_again = check_searchset(client.get(link_of(second, "first") or ""))
    assert keys(matches(first_again)) == keys(matches(first))
    assert "_cursor" not in dict(query_of(link_of(second, "first") or ""))
    assert keys(matches(check_searchset(client.get(nxt)))) == keys(matches(second))
    # the cursor is opaque and checked
    assert_error(client.get("/Patient", params={"_cursor": "bm90LWEtY3Vyc29y"}), 400, expression="_cursor")


def test_paging_while_others_write(client: httpx.Client, scope: Scope) -> None:
    """Between page fetches, new matches are created and some existing ones updated or deleted: no resource comes
    twice, no unchanged one is missed."""
    initial = [scope.create(pat(gender="male", name=[{"family": f"P{i:02d}"}]))["id"] for i in range(20)]
    bodies = {r["id"]: r for r in (client.get(f"/Patient/{i}").json() for i in initial)}
    touched: set[str] = set()
    seen: list[str] = []
    url: str | None = None
    page = scope.search("Patient", {"gender": "male", "_count": "4"})
    step = 0
    while True:
        seen += [r["id"] for r in matches(page)]
        # writes between pages: create two more matches, update one, delete one
        for _ in range(2):
            scope.create(pat(gender="male", name=[{"family": "Zlate"}]))
        upd = initial[(step * 7 + 3) % 20]
        scope.put({**bodies[upd], "active": step % 2 == 0})
        touched.add(upd)
        gone = initial[(step * 5 + 11) % 20]
        if gone not in touched:
            client.delete(f"/Patient/{gone}")
            touched.add(gone)
        step += 1
        url = link_of(page, "next")
        if url is None:
            break
        page = check_searchset(client.get(url))
        assert step < 100
    assert len(seen) == len(set(seen)), "a resource came twice"
    unchanged = set(initial) - touched
    assert unchanged <= set(seen), f"missed {unchanged - set(seen)}"


def test_paging_with_a_concurrent_writer(server: ServerProcess, scope: Scope) -> None:
    """A second client creates and updates matches in a loop while the first pages through (several sort orders)."""
    initial = [scope.create(pat(gender="female", birthDate=f"19{60 + i % 30}", name=[{"family": f"C{i:03d}"}]))
               for i in range(60)]
    victims = {r["id"] for r in initial[::3]}
    stop = threading.Event()
    errors: list[str] = []
    writes = [0]

    def writer() -> None:
        with httpx.Client(base_url=server.base, timeout=30, headers={"Accept": FHIR_JSON}) as c:
            n = 0
            while not stop.is_set():
                res = scope.tagged(pat(gender="female", birthDate="1975", name=[{"family": f"New{n}"}]))
                if c.post("/Patient", json=res, headers=JSON_HEADERS).status_code != 201:
                    errors.append("create failed")
                victim = initial[(n * 3) % 60]
                resp = c.put(f"/Patient/{victim['id']}", json={**victim, "active": bool(n % 2)},
                             headers=JSON_HEADERS)
                if resp.status_code != 200:
                    errors.append(f"update failed: {resp.text}")
                n += 1
                writes[0] = n

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        for sort in (None, "family", "-birthdate", "birthdate,-family"):
            params = [("gender", "female"), ("_count", "7")] + ([("_sort", sort)] if sort else [])
            seen: list[str] = []
            writes_before = writes[0]
            for page in all_pages(scope.client, "/Patient", scope.scoped(params)):
                seen += [r["id"] for r in matches(page)]
                # let the writer land at least one more write before the next page is fetched
                mark, deadline = writes[0], time.monotonic() + 10
                while writes[0] == mark and time.monotonic() < deadline and thread.is_alive():
                    time.sleep(0.002)
            assert len(seen) == len(set(seen)), f"duplicates with _sort={sort}"
            unchanged = {r["id"] for r in initial} - victims
            assert unchanged <= set(seen), f"missed {len(unchanged - set(seen))} with _sort={sort}"
            assert thread.is_alive(), f"the writer stopped: {errors[:3]}"
            assert writes[0] > writes_before, "the writer did not write while this search was paged"
    finally:
        stop.set()
        thread.join()
    assert not errors, errors[:3]


# --- compartment search ---------------------------------------------------------------------------------------------


def test_compartment_search(client: httpx.Client, scope: Scope, server: ServerProcess) -> None:
    me = scope.create(pat())["id"]
    other = scope.create(pat())["id"]
    mine = {scope.create(obs(f"Patient/{me}", code=c))["id"] for c in ("a", "b", "a")}
    performed = scope.create(obs(f"Patient/{other}", performer=[{"reference": f"Patient/{me}"}]))["id"]
    theirs = scope.create(obs(f"Patient/{other}"))["id"]
    enc = scope.create({"resourceType": "Encounter", "status": "planned", "class": {"code": "AMB"},
                        "subject": {"reference": f"Patient/{me}"}})["id"]
    bundle = check_searchset(client.get(f"/Patient/{me}/Observation"))
    found = {r["id"] for r in matches(bundle)}
    assert found == mine | {performed}
    assert theirs not in found
    assert link_of(bundle, "self") == f"{server.base}/Patient/{me}/Observation"
    with_code = {r["id"] for r in matches(check_searchset(client.get(f"/Patient/{me}/Observation",
                                                                     params={"code": "a"})))}
    assert len(with_code) == 2 and with_code < mine
    assert [r["id"] for r in matches(check_searchset(client.get(f"/Patient/{me}/Encounter")))] == [enc]
    assert matches(check_searchset(client.get(f"/Patient/{uid()}/Observation"))) == []
    # paging stays inside the compartment
    pages = all_pages(client, f"/Patient/{me}/Observation", {"_count": "1"})
    assert len(pages) == 4
    assert {r["id"] for p in pages for r in matches(p)} == mine | {performed}
    for p in pages[1:]:
        assert (link_of(p, "self") or "").startswith(f"{server.base}/Patient/{me}/Observation?")
    # the compartment owner itself
    assert [r["id"] for r in matches(check_searchset(client.get(f"/Patient/{me}/Patient")))] == [me]
    # not a compartment, or a type outside it
    assert_error(client.get(f"/Observation/{me}/Patient"), 400)
    assert_error(client.get(f"/Patient/{me}/Organization"), 400)
    # other compartments: Practitioner
    prac = scope.create({"resourceType": "Practitioner"})["id"]
    by_prac = scope.create(obs(f"Patient/{other}", performer=[{"reference": f"Practitioner/{prac}"}]))["id"]
    assert [r["id"] for r in matches(check_searchset(client.get(f"/Practitioner/{prac}/Observation")))] == [by_prac]


# --- $everything ----------------------------------------------------------------------------------------------------


@pytest.fixture()
def chart(scope: Scope) -> dict[str, Any]:
    """A patient's record written in two rounds ("early", then "late" after the instant ``since``), and another
    patient's observation."""
    me = scope.create(pat())["id"]
    other = scope.create(pat())["id"]
    subject = {"reference": f"Patient/{me}"}

    def made_key(res: dict[str, Any]) -> str:
        return f"{res['resourceType']}/{scope.create(res)['id']}"

    early = [made_key(obs(f"Patient/{me}")) for _ in range(6)]
    early.append(made_key({"resourceType": "Encounter", "status": "planned", "class": {"code": "AMB"},
                           "subject": subject}))
    early.append(made_key({"resourceType": "Condition", "subject": subject}))
    scope.create(obs(f"Patient/{other}"))
    wait_ms(30)
    since = scope.create(pat())["meta"]["lastUpdated"]  # an instant after every early write
    wait_ms(30)
    late = [made_key(obs(f"Patient/{me}")) for _ in range(3)]
    late.append(made_key({"resourceType": "MedicationRequest", "status": "active", "intent": "order",
                          "medicationCodeableConcept": {"text": "x"}, "subject": subject}))
    return {"me": me, "other": other, "early": early, "late": late, "since": since}


def test_everything(client: httpx.Client, chart: dict[str, Any]) -> None:
    me = chart["me"]
    bundle = check_searchset(client.get(f"/Patient/{me}/$everything"))
    got = keys(matches(bundle))
    assert got[0] == f"Patient/{me}"
    assert set(got) == {f"Patient/{me}", *chart["early"], *chart["late"]}
    assert len(got) == len(set(got))
    assert f"Patient/{chart['other']}" not in got


def test_everything_paging(client: httpx.Client, chart: dict[str, Any]) -> None:
    me = chart["me"]
    pages = all_pages(client, f"/Patient/{me}/$everything", {"_count": "3"})
    assert [len(matches(p)) for p in pages] == [3, 3, 3, 3, 1]
    got = [k for p in pages for k in keys(matches(p))]
    assert len(got) == len(set(got)) == 13
    assert set(got) == {f"Patient/{me}", *chart["early"], *chart["late"]}


def test_everything_since_and_type(client: httpx.Client, chart: dict[str, Any]) -> None:
    me = chart["me"]
    got = set(keys(matches(check_searchset(client.get(f"/Patient/{me}/$everything",
                                                      params={"_since": chart["since"]})))))
    assert set(chart["late"]) <= got and not (set(chart["early"]) & got)
    got = set(keys(matches(check_searchset(client.get(f"/Patient/{me}/$everything",
                                                      params={"_type": "Encounter,Condition"})))))
    assert got == {k for k in chart["early"] if not k.startswith("Observation/")}
    got = set(keys(matches(check_searchset(client.get(f"/Patient/{me}/$everything",
                                                      params={"_type": "Patient,MedicationRequest"})))))
    assert got == {f"Patient/{me}", *[k for k in chart["late"] if k.startswith("MedicationRequest/")]}
    pages = all_pages(client, f"/Patient/{me}/$everything", {"_type": "Observation", "_count": "4",
                                                               "_since": chart["since"]})
    assert {k for p in pages for k in keys(matches(p))} == {k for k in chart["late"] if k.startswith("Observation/")}


def test_everything_brings_referenced_resources(client: httpx.Client, scope: Scope) -> None:
    org = scope.create({"resourceType": "Organization", "name": "Clinic"})["id"]
    doc = scope.create({"resourceType": "Practitioner", "name": [{"family": "House"}]})["id"]
    stranger = scope.create({"resourceType": "Practitioner", "name": [{"family": "Nobody"}]})["id"]
    me = scope.create({**pat(), "managingOrganization": {"reference": f"Organization/{org}"}})["id"]
    seen = scope.create({**obs(f"Patient/{me}"), "performer": [{"reference": f"Practitioner/{doc}"}]})["id"]
    again = scope.create({**obs(f"Patient/{me}"), "performer": [{"reference": f"Practitioner/{doc}"}]})["id"]
    bundle = check_searchset(client.get(f"/Patient/{me}/$everything"))
    assert set(keys(matches(bundle))) == {f"Patient/{me}", f"Observation/{seen}", f"Observation/{again}"}
    # referenced, not members: once each, as includes; an unreferenced practitioner is not there
    assert sorted(keys(included(bundle))) == [f"Organization/{org}", f"Practitioner/{doc}"]
    assert f"Practitioner/{stranger}" not in keys(included(bundle))
    only = check_searchset(client.get(f"/Patient/{me}/$everything", params={"_type": "Observation,Practitioner"}))
    assert set(keys(matches(only))) == {f"Observation/{seen}", f"Observation/{again}"}
    assert keys(included(only)) == [f"Practitioner/{doc}"]


def test_everything_errors(client: httpx.Client, chart: dict[str, Any]) -> None:
    assert_error(client.get(f"/Patient/{uid()}/$everything"), 404)
    me = chart["me"]
    assert_error(client.get(f"/Patient/{me}/$everything", params={"_since": "yesterday"}), 400,
                 expression="_since")
    assert_error(client.get(f"/Patient/{me}/$everything", params={"_type": "Nope"}), 400, expression="_type")
    client.delete(f"/Patient/{me}")
    assert client.get(f"/Patient/{me}/$everything").status_code == 410


def test_everything_is_a_declared_operation(client: httpx.Client) -> None:
    body = create(client, pat())
    resp = client.post(f"/Patient/{body['id']}/$everything")
    assert resp.status_code == 200, resp.text
    assert keys(matches(resp.json())) == [f"Patient/{body['id']}"]


@pytest.mark.parametrize("family", ["A&B=C+D%_x", "Smith, Jr", "Ünïcødé 𝔘", "a|b$c\\d", "q?x#y"])
def test_links_keep_awkward_values(client: httpx.Client, scope: Scope, family: str) -> None:
    """Self and next links re-encode values (``&``, ``+``, ``%``, ``,``, ``|``, ``\\``, non-ASCII) so that following
    them runs the same search."""
    escaped = family.replace("\\", "\\\\").replace(",", "\\,").replace("|", "\\|").replace("$", "\\$")
    ids = {scope.create(pat(name=[{"family": family}]))["id"] for _ in range(3)}
    scope.create(pat(name=[{"family": family + "x"}]))
    first = scope.search("Patient", [("family:exact", escaped), ("_count", "2")])
    self_url = link_of(first, "self") or ""
    assert [r["id"] for r in matches(check_searchset(client.get(self_url)))] == [r["id"] for r in matches(first)]
    nxt = link_of(first, "next")
    assert nxt is not None
    second = check_searchset(client.get(nxt))
    assert {r["id"] for r in matches(first) + matches(second)} == ids
    assert link_of(second, "next") is None


def test_last_page_exactly_full_has_no_next(scope: Scope) -> None:
    for _ in range(6):
        scope.create(pat())
    pages = all_pages(scope.client, "/Patient", scope.scoped({"_count": "3"}))
    assert [len(matches(p)) for p in pages] == [3, 3]
    assert link_of(pages[-1], "next") is None


@pytest.mark.parametrize("sort", [None, "-birthdate,family"])
def test_previous_links_walk_back_to_the_first_page(scope: Scope, sort: str | None) -> None:
    created = [scope.create(pat(gender="male", birthDate=f"19{50 + i % 7}", name=[{"family": f"P{i:02d}"}]))
               for i in range(11)]
    params = [("gender", "male"), ("_count", "3")] + ([("_sort", sort)] if sort else [])
    forward: list[list[str]] = []
    page = check_searchset(scope.client.get("/Patient", params=scope.scoped(params)))
    assert link_of(page, "previous") is None
    while True:
        forward.append([r["id"] for r in matches(page)])
        nxt = link_of(page, "next")
        if nxt is None:
            break
        page = check_searchset(scope.client.get(nxt))
    assert sorted(i for p in forward for i in p) == sorted(r["id"] for r in created)
    backward: list[list[str]] = []
    while (prev := link_of(page, "previous")) is not None:
        page = check_searchset(scope.client.get(prev))
        backward.insert(0, [r["id"] for r in matches(page)])
    assert backward == forward[:-1]
