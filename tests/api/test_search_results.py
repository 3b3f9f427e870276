"""Result parameters (search.html#return): ``_sort`` (several keys, ``-`` descending), ``_count``, ``_total``,
``_summary`` (true, text, data, count, false) and ``_elements``."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.api._search import Scope, link_of, matches, query_of
from tests.api._util import SUBSETTED_CODE, assert_error, has_subsetted_tag, wait_ms


@pytest.fixture()
def scope(client: httpx.Client) -> Scope:
    return Scope(client)


def pat(**extra: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", **extra}


# --- _sort ----------------------------------------------------------------------------------------------------------


@pytest.fixture()
def family(scope: Scope) -> dict[str, str]:
    people = {
        "ann_1990": pat(name=[{"family": "Ames", "given": ["Ann"]}], birthDate="1990-05-01", gender="female"),
        "bob_1985": pat(name=[{"family": "Baker", "given": ["Bob"]}], birthDate="1985-01-01", gender="male"),
        "cat_1990": pat(name=[{"family": "Baker", "given": ["Cat"]}], birthDate="1990-01-01", gender="female"),
        "dan_2000": pat(name=[{"family": "Cole", "given": ["Dan"]}], birthDate="2000-12-31", gender="male"),
        "eve_none": pat(name=[{"family": "Ames", "given": ["Eve"]}], gender="female"),
        "zed_none": pat(gender="other"),
    }
    out: dict[str, str] = {}
    for name, res in people.items():
        out[scope.create(res)["id"]] = name
        wait_ms(2)
    return out


def order(scope: Scope, family: dict[str, str], sort: str, **more: str) -> list[str]:
    return [family[i] for i in scope.ids("Patient", {"_sort": sort, **more})]


def test_sort_single_key(scope: Scope, family: dict[str, str]) -> None:
    assert order(scope, family, "birthdate") == ["bob_1985", "cat_1990", "ann_1990", "dan_2000", "eve_none",
                                                 "zed_none"]
    assert order(scope, family, "-birthdate")[:4] == ["dan_2000", "ann_1990", "cat_1990", "bob_1985"]
    # resources without a value come last either way
    assert set(order(scope, family, "-birthdate")[4:]) == {"eve_none", "zed_none"}
    assert order(scope, family, "given") == ["ann_1990", "bob_1985", "cat_1990", "dan_2000", "eve_none", "zed_none"]
    assert order(scope, family, "-given")[:5] == ["eve_none", "dan_2000", "cat_1990", "bob_1985", "ann_1990"]


def test_sort_several_keys(scope: Scope, family: dict[str, str]) -> None:
    assert order(scope, family, "family,given") == ["ann_1990", "eve_none", "bob_1985", "cat_1990", "dan_2000",
                                                    "zed_none"]
    assert order(scope, family, "family,-given") == ["eve_none", "ann_1990", "cat_1990", "bob_1985", "dan_2000",
                                                     "zed_none"]
    assert order(scope, family, "gender,-birthdate") == ["ann_1990", "cat_1990", "eve_none", "dan_2000",
                                                         "bob_1985", "zed_none"]
    assert order(scope, family, "-gender,birthdate") == ["zed_none", "bob_1985", "dan_2000", "cat_1990",
                                                         "ann_1990", "eve_none"]


def test_sort_by_id_and_last_updated(scope: Scope, family: dict[str, str]) -> None:
    created = list(family)  # insertion order = creation order
    assert scope.ids("Patient", {"_sort": "_lastUpdated"}) == created
    assert scope.ids("Patient", {"_sort": "-_lastUpdated"}) == created[::-1]
    assert scope.ids("Patient", {"_sort": "_id"}) == sorted(created)
    assert scope.ids("Patient", {"_sort": "-_id"}) == sorted(created, reverse=True)


def test_sort_is_kept_across_pages(scope: Scope, family: dict[str, str]) -> None:
    """Paging a sorted search (two per page) gives the same order as one page."""
    assert order(scope, family, "family,-given", _count="2") == order(scope, family, "family,-given")
    assert order(scope, family, "-birthdate", _count="1") == order(scope, family, "-birthdate")
    bundle = scope.search("Patient", {"_sort": "family,-given", "_count": "2"})
    nxt = link_of(bundle, "next")
    assert nxt is not None and ("_sort", "family,-given") in query_of(nxt)


def test_sort_unknown_key(client: httpx.Client, scope: Scope, family: dict[str, str]) -> None:
    bundle = scope.search("Patient", {"_sort": "nope,birthdate"})
    assert [family[r["id"]] for r in matches(bundle)][:2] == ["bob_1985", "cat_1990"]
    assert "nope" in str([e for e in bundle["entry"] if e["search"]["mode"] == "outcome"])
    assert ("_sort", "birthdate") in query_of(bundle["link"][0]["url"])
    assert_error(client.get("/Patient", params={"_sort": "nope"}, headers={"Prefer": "handling=strict"}), 400,
                 expression="_sort")


# --- _count and _total ----------------------------------------------------------------------------------------------


@pytest.fixture()
def seven(scope: Scope) -> list[str]:
    return [scope.create(pat(gender="female"))["id"] for _ in range(7)]


def test_count(scope: Scope, seven: list[str]) -> None:
    bundle = scope.search("Patient", {"_count": "3"})
    assert len(matches(bundle)) == 3 and link_of(bundle, "next") is not None
    assert len(scope.ids("Patient", {"_count": "3"})) == 7
    bundle = scope.search("Patient", {"_count": "7"})
    assert len(matches(bundle)) == 7 and link_of(bundle, "next") is None
    assert bundle["total"] == 7  # everything fitted in one page: the total is known
    bundle = scope.search("Patient", {"_count": "100000"})  # above the maximum: capped, not refused
    assert len(matches(bundle)) == 7


def test_count_zero_gives_the_total_only(scope: Scope, seven: list[str]) -> None:
    bundle = scope.search("Patient", {"_count": "0"})
    assert matches(bundle) == []
    assert link_of(bundle, "next") is None
    assert bundle["total"] == 7  # not 0: nothing was asked for but the count
    bundle = scope.search("Patient", {"_count": "0", "_total": "accurate"})
    assert bundle["total"] == 7
    bundle = scope.search("Patient", {"_count": "0", "_total": "none"})
    assert "total" not in bundle and matches(bundle) == []


@pytest.mark.parametrize("total", ["accurate", "estimate"])
def test_total_requested(scope: Scope, seven: list[str], total: str) -> None:
    bundle = scope.search("Patient", {"_count": "2", "_total": total})
    assert len(matches(bundle)) == 2
    if total == "accurate":
        assert bundle["total"] == 7
    else:
        assert bundle.get("total", 7) >= 2
    # later pages keep the same total
    nxt = link_of(bundle, "next")
    assert nxt is not None
    page2 = scope.client.get(nxt).json()
    if total == "accurate":
        assert page2["total"] == 7


def test_total_none(scope: Scope, seven: list[str]) -> None:
    bundle = scope.search("Patient", {"_total": "none"})
    assert "total" not in bundle and len(matches(bundle)) == 7
    bundle = scope.search("Patient", {"_total": "none", "_count": "2"})
    assert "total" not in bundle
    assert ("_total", "none") in query_of(link_of(bundle, "next") or "")


# --- _summary and _elements -----------------------------------------------------------------------------------------


@pytest.fixture()
def rich(scope: Scope) -> str:
    return scope.create(pat(
        text={"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">Rich</div>'},
        name=[{"family": "Rich"}], gender="female", birthDate="1970-01-01",
        maritalStatus={"text": "married"}, photo=[{"contentType": "image/png", "data": "AAAA"}],
        contact=[{"name": {"family": "Kin"}}], communication=[{"language": {"text": "en"}}],
    ))["id"]


def test_summary_true(scope: Scope, rich: str) -> None:
    res = matches(scope.search("Patient", {"_summary": "true"}))[0]
    assert res["id"] == rich and res["name"] == [{"family": "Rich"}] and res["birthDate"] == "1970-01-01"
    for absent in ("text", "maritalStatus", "photo", "contact", "communication"):
        assert absent not in res, absent
    assert has_subsetted_tag(res)


def test_summary_text(scope: Scope, rich: str) -> None:
    res = matches(scope.search("Patient", {"_summary": "text"}))[0]
    assert res["id"] == rich and "Rich" in res["text"]["div"]
    for absent in ("name", "gender", "photo", "contact"):
        assert absent not in res, absent
    assert has_subsetted_tag(res)


def test_summary_data(scope: Scope, rich: str) -> None:
    res = matches(scope.search("Patient", {"_summary": "data"}))[0]
    assert "text" not in res
    assert res["photo"] and res["contact"] and res["maritalStatus"] == {"text": "married"}
    assert has_subsetted_tag(res)


def test_summary_count(scope: Scope, rich: str) -> None:
    scope.create(pat())
    bundle = scope.search("Patient", {"_summary": "count"})
    assert bundle["total"] == 2
    assert bundle.get("entry", []) == []
    assert link_of(bundle, "next") is None


def test_summary_false(scope: Scope, rich: str) -> None:
    res = matches(scope.search("Patient", {"_summary": "false"}))[0]
    full = scope.client.get(f"/Patient/{rich}").json()
    assert res == full
    assert not has_subsetted_tag(res)


def test_elements(scope: Scope, rich: str) -> None:
    res = matches(scope.search("Patient", {"_elements": "gender,birthDate"}))[0]
    assert res["id"] == rich and res["gender"] == "female" and res["birthDate"] == "1970-01-01"
    for absent in ("name", "text", "photo", "contact", "maritalStatus"):
        assert absent not in res, absent
    assert has_subsetted_tag(res)
    assert any(t.get("code") == SUBSETTED_CODE for t in res["meta"]["tag"])
    # the scope tag (meta) is kept: meta is not an element the client left out
    bundle = scope.search("Patient", {"_elements": "name", "_count": "1"})
    assert set(matches(bundle)[0]) <= {"resourceType", "id", "meta", "name"}


def test_summary_and_elements_apply_to_includes(scope: Scope, rich: str) -> None:
    obs = scope.create({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                        "subject": {"reference": f"Patient/{rich}"}, "note": [{"text": "long note"}]})["id"]
    bundle = scope.search("Observation", {"_id": obs, "_include": "Observation:subject", "_summary": "true"})
    entries = {e["resource"]["resourceType"]: e["resource"] for e in bundle["entry"]}
    assert "note" not in entries["Observation"] and "photo" not in entries["Patient"]


def test_bad_result_parameters(client: httpx.Client) -> None:
    for params, name in (({"_count": "x"}, "_count"), ({"_summary": "all"}, "_summary"),
                         ({"_total": "maybe"}, "_total"), ({"_elements": "a b"}, "_elements"),
                         ({"_sort": "a,,b"}, "_sort"), ({"_count": "2", "_count ": "3"}, None)):
        resp = client.get("/Patient", params=params)
        if name is None:
            assert resp.status_code in (200, 400)
        else:
            assert_error(resp, 400, expression=name)
    assert_error(client.get("/Patient", params=[("_summary", "true"), ("_summary", "false")]), 400,
                 expression="_summary")
