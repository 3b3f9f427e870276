"""Property-based: every backend returns exactly what the in-memory matcher (the oracle) returns.

Hypothesis generates small data sets (patients, practitioners, observations with names, accents, dates of every
precision, periods, quantities in convertible units, codes with and without systems, references) and search query
strings over them (modifiers, prefixes, OR lists, AND repeats, chains, _has, :missing, composites, sorting). Each
query is parsed and bound once; the store answers it through its renderer, the matcher by evaluating the same tree
over the same extracted values. Any difference is a bug in one of the two. Paging through the same query in small
pages must give the same sequence as one big page.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fhir_server.search.bind import bind
from fhir_server.search.extract import extract, text_content
from fhir_server.search.matcher import Dataset, IndexedResource
from fhir_server.search.matcher import search as oracle_search
from fhir_server.search.request import parse_request
from fhir_server.search.rewrite import prepare
from fhir_server.search.tree import And, CompartmentQ
from fhir_server.storage import open_store_from_url
from fhir_server.storage.base import SearchQuery, SortKey, Store, WriteTx
from resources import jsonio
from tests.support.server import fresh_mongodb_url, search_options

FAMILIES = ["Smith", "Smyth", "Müller", "Muller", "O'Neil", "van Dijk", "Ng"]
GIVENS = ["Anna", "Ánna", "Bob", "Chloé", "Zoë"]
CODES = [("http://loinc.org", "8867-4"), ("http://loinc.org", "8480-6"), (None, "8480-6"), ("http://snomed.info/sct",
                                                                                            "271649006")]
UNITS = ["mg", "g", "kg", "mmol/L", "mg/dL"]
DATES = ["2020", "2020-06", "2020-06-15", "2020-06-15T10:30:00Z", "2020-06-15T10:30:00.250+02:00",
         "2021-01-01T00:00:00Z", "2019-12-31", "2020-06-14T23:59:59Z"]
DECIMALS = ["1", "1.0", "1.00", "0.5", "100", "100.0", "1000", "0.001", "5.4", "99.5", "1e2"]


@st.composite
def patient(draw: st.DrawFn, i: int) -> dict[str, Any]:
    res: dict[str, Any] = {"resourceType": "Patient", "id": f"p{i}"}
    if draw(st.booleans()):
        res["name"] = [{"family": draw(st.sampled_from(FAMILIES)),
                        "given": draw(st.lists(st.sampled_from(GIVENS), min_size=1, max_size=2))}]
    if draw(st.booleans()):
        res["birthDate"] = draw(st.sampled_from(["1970", "1970-03", "1970-03-02", "1985-12-31", "2000-01-01"]))
    if draw(st.booleans()):
        res["gender"] = draw(st.sampled_from(["male", "female", "other"]))
    if draw(st.booleans()):
        res["identifier"] = [{"system": draw(st.sampled_from(["urn:a", "urn:b"])),
                              "value": draw(st.sampled_from(["1", "2", "X"]))}]
    return res


@st.composite
def observation(draw: st.DrawFn, i: int, patients: int, practitioners: int) -> dict[str, Any]:
    system, code = draw(st.sampled_from(CODES))
    coding: dict[str, Any] = {"code": code}
    if system:
        coding["system"] = system
    res: dict[str, Any] = {"resourceType": "Observation", "id": f"o{i}", "status": "final",
                           "code": {"coding": [coding]}}
    if patients and draw(st.booleans()):
        res["subject"] = {"reference": f"Patient/p{draw(st.integers(0, patients - 1))}"}
    if practitioners and draw(st.booleans()):
        res["performer"] = [{"reference": f"Practitioner/d{draw(st.integers(0, practitioners - 1))}"}]
    elif patients and draw(st.booleans()):
        # a second way into a patient's compartment (Observation's are subject and performer)
        res["performer"] = [{"reference": f"Patient/p{draw(st.integers(0, patients - 1))}"}]
    when = draw(st.sampled_from(["none", "dateTime", "period"]))
    if when == "dateTime":
        res["effectiveDateTime"] = draw(st.sampled_from([d for d in DATES if "T" in d] + ["2020", "2020-06-15"]))
    elif when == "period":
        period: dict[str, str] = {}
        if draw(st.booleans()):
            period["start"] = "2020-06-01T00:00:00Z"
        if draw(st.booleans()):
            period["end"] = "2020-07-01T00:00:00Z"
        if period:
            res["effectivePeriod"] = period
    if draw(st.booleans()):
        res["valueQuantity"] = {"value": jsonio.loads(draw(st.sampled_from(DECIMALS))),
                                "system": "http://unitsofmeasure.org", "code": draw(st.sampled_from(UNITS))}
    if draw(st.booleans()):
        res["category"] = [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                        "code": draw(st.sampled_from(["vital-signs", "laboratory"]))}]}]
    return res


@st.composite
def datasets(draw: st.DrawFn) -> list[dict[str, Any]]:
    n_patients = draw(st.integers(0, 6))
    n_practitioners = draw(st.integers(0, 2))
    out = [draw(patient(i)) for i in range(n_patients)]
    for i in range(n_practitioners):
        out.append({"resourceType": "Practitioner", "id": f"d{i}",
                    "name": [{"family": draw(st.sampled_from(FAMILIES))}]})
    out += [draw(observation(i, n_patients, n_practitioners)) for i in range(draw(st.integers(0, 12)))]
    return out


def _prefix(draw: st.DrawFn) -> str:
    return draw(st.sampled_from(["", "eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"]))


@st.composite
def patient_queries(draw: st.DrawFn) -> list[tuple[str, str]]:
    clauses: list[tuple[str, str]] = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["name", "family:exact", "given:contains", "birthdate", "gender", "identifier",
                                     "has", "missing", "gender:not"]))
        if kind == "name":
            clauses.append(("name", ",".join(draw(st.lists(st.sampled_from(["smi", "mu", "MÜL", "ann", "zoe", "x"]),
                                                            min_size=1, max_size=2)))))
        elif kind == "family:exact":
            clauses.append((kind, draw(st.sampled_from(FAMILIES))))
        elif kind == "given:contains":
            clauses.append((kind, draw(st.sampled_from(["nn", "o", "loé"]))))
        elif kind == "birthdate":
            clauses.append(("birthdate", _prefix(draw) + draw(st.sampled_from(["1970", "1970-03", "1970-03-02",
                                                                                "1985", "2000-01-01"]))))
        elif kind in ("gender", "gender:not"):
            clauses.append((kind, draw(st.sampled_from(["male", "female", "male,other"]))))
        elif kind == "identifier":
            clauses.append(("identifier", draw(st.sampled_from(["urn:a|1", "1", "|1", "urn:b|", "urn:a|X,urn:b|2"]))))
        elif kind == "has":
            clauses.append(("_has:Observation:patient:code", draw(st.sampled_from(["8867-4", "http://loinc.org|8480-6"]))))
        else:
            clauses.append((draw(st.sampled_from(["name:missing", "birthdate:missing"])),
                            draw(st.sampled_from(["true", "false"]))))
    if draw(st.booleans()):
        clauses.append(("_sort", draw(st.sampled_from(["name", "-birthdate", "birthdate,-name", "_id", "-gender"]))))
    return clauses


@st.composite
def observation_queries(draw: st.DrawFn) -> list[tuple[str, str]]:
    clauses: list[tuple[str, str]] = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["code", "date", "value-quantity", "subject", "chain", "category", "composite",
                                     "missing", "code:not", "performer-chain"]))
        if kind in ("code", "code:not"):
            clauses.append((kind, draw(st.sampled_from(["8867-4", "http://loinc.org|8480-6", "|8480-6",
                                                         "http://loinc.org|", "8480-6,271649006"]))))
        elif kind == "date":
            clauses.append(("date", _prefix(draw) + draw(st.sampled_from(DATES))))
        elif kind == "value-quantity":
            value = draw(st.sampled_from(["1", "100", "0.5", "1000", "5.4", "1e2"]))
            unit = draw(st.sampled_from(["", "|http://unitsofmeasure.org|mg", "|http://unitsofmeasure.org|g",
                                         "||kg", "|http://unitsofmeasure.org|mmol/L"]))
            clauses.append(("value-quantity", _prefix(draw) + value + unit))
        elif kind == "subject":
            clauses.append((draw(st.sampled_from(["subject", "patient", "subject:Patient"])),
                            draw(st.sampled_from(["p0", "Patient/p1", "p0,p2"]))))
        elif kind == "chain":
            clauses.append((draw(st.sampled_from(["subject:Patient.name", "patient.family", "subject:Patient.gender"])),
                            draw(st.sampled_from(["smi", "müller", "male"]))))
        elif kind == "performer-chain":
            clauses.append(("performer:Practitioner.name", draw(st.sampled_from(["smi", "ng"]))))
        elif kind == "category":
            clauses.append(("category", draw(st.sampled_from(["vital-signs", "laboratory,vital-signs"]))))
        elif kind == "composite":
            clauses.append(("code-value-quantity", "http://loinc.org|8867-4$" + _prefix(draw)
                            + draw(st.sampled_from(["1", "100", "1000|http://unitsofmeasure.org|mg"]))))
        else:
            clauses.append((draw(st.sampled_from(["value-quantity:missing", "subject:missing", "date:missing"])),
                            draw(st.sampled_from(["true", "false"]))))
    if draw(st.booleans()):
        clauses.append(("_sort", draw(st.sampled_from(["date", "-date", "value-quantity", "-code,_id"]))))
    return clauses


def _index(resources: list[dict[str, Any]]) -> Dataset:
    data = Dataset()
    for res in resources:
        values: dict[str, list[Any]] = {}
        for code, value in extract(res):
            values.setdefault(code, []).append(value)
        text, content = text_content(res)
        data.add(IndexedResource(res["resourceType"], res["id"], values, text, content))
    return data


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    lp = asyncio.new_event_loop()
    yield lp
    lp.close()


def _store_url(backend: str, path: Path) -> str:
    if backend == "sqlite":
        return f"sqlite:///{path / 'oracle.db'}"
    if backend in ("mongodb", "mongodb+elasticsearch"):
        return fresh_mongodb_url("oracle")
    raise AssertionError(backend)


async def _load(store: Store, resources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    stored = []
    for res in resources:
        async def unit(tx: WriteTx, res: dict[str, Any] = res) -> bytes:
            return (await tx.put(res["resourceType"], res["id"], res, method="PUT")).body
        stored.append(jsonio.loads(await store.transact(unit)))
    return stored


async def _compare(store: Store, stored: list[dict[str, Any]], rtype: str, pairs: list[tuple[str, str]],
                   compartment: tuple[str, str] | None = None) -> None:
    request = parse_request(pairs)
    bound = bind(rtype, request, strict=True)
    tree = bound.tree
    if compartment is not None:
        tree = And((CompartmentQ(compartment[0], compartment[1], rtype), tree))
    tree = await prepare(tree, rtype, store)
    label = ("/".join(compartment) + "/" if compartment else "") + f"{rtype}?{request.format()}"
    sort = tuple(SortKey(p, d) for p, d in bound.sort)
    page = await store.search(SearchQuery(rtype, tree, sort, count=1000, total=True))
    got = [v.rid for v in page.versions]
    expected = sorted(r.rid for r in oracle_search(rtype, tree, _index(stored)))
    assert sorted(got) == expected, f"{label}\ntree: {tree}"
    assert page.total == len(expected)
    # small pages, followed by cursor, give the same sequence as one page
    paged: list[str] = []
    after = None
    while True:
        small = await store.search(SearchQuery(rtype, tree, sort, count=2, after=after))
        paged += [v.rid for v in small.versions]
        if small.next_after is None:
            break
        after = small.next_after
    assert paged == got, f"paging differs for {label}"
    # and back again with previous links, from the last page to the first
    if len(got) > 2:
        backwards: list[str] = []
        page_back = await store.search(SearchQuery(rtype, tree, sort, count=2, after=after))
        backwards = [v.rid for v in page_back.versions]
        before = page_back.prev_before
        while before is not None:
            page_back = await store.search(SearchQuery(rtype, tree, sort, count=2, before=before))
            backwards = [v.rid for v in page_back.versions] + backwards
            before = page_back.prev_before
        assert backwards == got, f"backward paging differs for {label}"


ORACLE = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                          HealthCheck.function_scoped_fixture])


@ORACLE
@given(data=datasets(), patient_qs=st.lists(patient_queries(), min_size=1, max_size=3),
       observation_qs=st.lists(observation_queries(), min_size=1, max_size=3))
def test_store_agrees_with_oracle(backend: str, loop: asyncio.AbstractEventLoop, data: list[dict[str, Any]],
                                  patient_qs: list[list[tuple[str, str]]],
                                  observation_qs: list[list[tuple[str, str]]]) -> None:
    async def run() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            store = open_store_from_url(_store_url(backend, Path(tmp)), **search_options(backend))
            await check_store(store, data, patient_qs, observation_qs)

    loop.run_until_complete(run())


async def check_store(store: Store, data: list[dict[str, Any]], patient_qs: list[list[tuple[str, str]]],
                      observation_qs: list[list[tuple[str, str]]]) -> None:
    """Open ``store``, load ``data`` and compare every query with the oracle; close the store whatever happens."""
    await store.open()
    try:
        stored = await _load(store, data)
        for q in patient_qs:
            await _compare(store, stored, "Patient", q)
        for q in observation_qs:
            await _compare(store, stored, "Observation", q)
            await _compare(store, stored, "Observation", q, compartment=("Patient", "p0"))
    finally:
        await store.close()
