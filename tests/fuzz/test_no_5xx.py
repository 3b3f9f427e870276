"""Property-based: thousands of generated bodies thrown at create, update, transaction and patch never produce a 5xx.

Bodies come from three sources: arbitrary JSON, valid resources mutated at a random place (the inputs most likely
to slip past a parser and break something later), and raw bytes. Every 4xx must be an OperationOutcome; every 2xx
must have stored something readable.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.server import ServerProcess

TYPES = ["Patient", "Observation", "Appointment", "MedicationRequest", "ChargeItem", "Bundle", "Foo", ""]

SEEDS: list[dict[str, Any]] = [
    {"resourceType": "Patient", "name": [{"family": "Doe", "given": ["Jane"]}], "birthDate": "1970-01-01",
     "gender": "female", "identifier": [{"system": "urn:s", "value": "1"}],
     "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">Jane</div>"}},
    {"resourceType": "Observation", "status": "final", "code": {"coding": [{"system": "http://loinc.org",
     "code": "8867-4"}]}, "subject": {"reference": "Patient/1"}, "effectiveDateTime": "2020-01-01T10:00:00Z",
     "valueQuantity": {"value": 72.5, "unit": "/min"}, "component": [{"code": {"text": "x"}, "valueString": "y"}]},
    {"resourceType": "Appointment", "status": "booked", "participant": [{"actor": {"reference": "Patient/1"},
     "status": "accepted"}], "start": "2020-01-01T10:00:00Z", "end": "2020-01-01T10:30:00Z"},
    {"resourceType": "MedicationRequest", "status": "active", "intent": "order", "medicationCodeableConcept":
     {"text": "aspirin"}, "subject": {"reference": "Patient/1"},
     "dosageInstruction": [{"timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d"}}}]},
]

json_leaf = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=30),
    st.sampled_from(["", " ", "1970-13-45", "2020-01-01T10:00:00", "<div>", "Patient/1", "urn:uuid:x", "\u0000"]),
)
json_value = st.recursive(
    json_leaf,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=5)),
    max_leaves=25,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, prefix + (i,))
    return out


@st.composite
def mutated_resource(draw: st.DrawFn) -> Any:
    resource = json.loads(json.dumps(draw(st.sampled_from(SEEDS))))
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(resource)
        path = draw(st.sampled_from(paths))
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if not path:
            if action == "add" and isinstance(resource, dict):
                resource[draw(st.text(max_size=10))] = draw(json_value)
            continue
        parent = resource
        for step in path[:-1]:
            parent = parent[step]
        last = path[-1]
        if action == "replace":
            parent[last] = draw(json_value)
        elif action == "delete":
            del parent[last]
        elif isinstance(parent[last], dict):
            parent[last][draw(st.text(max_size=10))] = draw(json_value)
        elif isinstance(parent[last], list):
            parent[last].append(draw(json_value))
    return resource


bodies = st.one_of(
    mutated_resource().map(lambda r: json.dumps(r).encode()),
    json_value.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=200),
)

FUZZ = settings(max_examples=700, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                          HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base, timeout=30, headers={"Content-Type": "application/fhir+json"}) as c:
        yield c


def _check(r: httpx.Response, http: httpx.Client) -> None:
    assert r.status_code < 500, f"{r.request.method} {r.request.url} → {r.status_code}: {r.text[:500]}"
    if r.status_code >= 400:
        assert r.json()["resourceType"] == "OperationOutcome"
    elif r.status_code in (200, 201) and r.request.method in ("POST", "PUT") and "location" in r.headers:
        assert http.get(r.headers["location"]).status_code == 200


@FUZZ
@given(rtype=st.sampled_from(TYPES), body=bodies)
def test_create_never_5xx(http: httpx.Client, rtype: str, body: bytes) -> None:
    _check(http.post(f"/{rtype}" if rtype else "/Patient", content=body), http)


@FUZZ
@given(rid=st.sampled_from(["a1", "b-2", "x" * 65, "%20", "..", "a.b"]), body=bodies)
def test_update_never_5xx(http: httpx.Client, rid: str, body: bytes) -> None:
    try:
        rtype = json.loads(body).get("resourceType", "Patient")
        if not isinstance(rtype, str) or not rtype.isalpha():
            rtype = "Patient"
    except (ValueError, AttributeError, UnicodeDecodeError):
        rtype = "Patient"
    _check(http.put(f"/{rtype}/{rid}", content=body), http)


@st.composite
def transactions(draw: st.DrawFn) -> bytes:
    entries = []
    for _ in range(draw(st.integers(0, 4))):
        resource = draw(st.one_of(mutated_resource(), st.sampled_from(SEEDS), json_value))
        method = draw(st.sampled_from(["POST", "PUT", "DELETE", "GET", "PATCH", "FOO"]))
        url = draw(st.sampled_from(["Patient", "Patient/1", "Observation?identifier=x", "", "Foo/1",
                                    "Patient?name=x", "http://elsewhere/Patient/1"]))
        entry: dict[str, Any] = {"resource": resource, "request": {"method": method, "url": url}}
        if draw(st.booleans()):
            entry["fullUrl"] = draw(st.sampled_from(["urn:uuid:0f3e", "urn:uuid:0f3e", "Patient/1", ""]))
        if draw(st.booleans()):
            entry = draw(st.sampled_from([entry, {"request": entry["request"]}, {"resource": resource}]))
        entries.append(entry)
    bundle: Any = {"resourceType": "Bundle", "type": draw(st.sampled_from(["transaction", "batch", "collection"])),
                   "entry": entries}
    if draw(st.integers(0, 4)) == 0:
        bundle = draw(json_value)
    return json.dumps(bundle).encode()


@FUZZ
@given(body=transactions())
def test_transaction_never_5xx(http: httpx.Client, body: bytes) -> None:
    _check(http.post("", content=body), http)


@FUZZ
@given(body=st.one_of(json_value.map(lambda v: json.dumps(v).encode()), st.binary(max_size=100)),
       ctype=st.sampled_from(["application/json-patch+json", "application/fhir+json", "text/plain"]))
def test_patch_never_5xx(http: httpx.Client, body: bytes, ctype: str) -> None:
    created = http.post("/Patient", json=SEEDS[0])
    assert created.status_code == 201
    rid = created.json()["id"]
    r = http.patch(f"/Patient/{rid}", content=body, headers={"Content-Type": ctype})
    _check(r, http)
