"""Tests for the synthetic demo data set (fhir_server.demo): validity, reproducibility and referential integrity."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import fhirkit
import pytest

from fhir_server.demo import (
    MRN_SYSTEM,
    ORGANIZATION_REF,
    PRACTITIONER_REF,
    demo_bundles,
)
from resources.jsonio import dumps, loads

Resource = dict[str, Any]

REPO_ROOT = Path(__file__).resolve().parents[2]

# Small enough to keep the suite fast, big enough to reach the optional branches (conditions, extra labs, sharing).
PATIENTS = 12

# FHIR dateTime with time must carry a zone; the demo promises one everywhere.
ZONED = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(Z|[+-]\d{2}:\d{2})$")
URN_UUID = re.compile(r"^urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


@pytest.fixture(scope="module")
def bundles() -> list[Resource]:
    return list(demo_bundles(PATIENTS, seed=42))


def _walk(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    yield path, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _walk(value, f"{path}[{index}]")


def _references(resource: Resource) -> list[str]:
    return [node["reference"] for _, node in _walk(resource) if isinstance(node, dict) and "reference" in node]


def _resources(bundles: list[Resource]) -> Iterator[Resource]:
    for bundle in bundles:
        for entry in bundle["entry"]:
            yield entry["resource"]


def test_bundles_are_transactions_one_per_patient(bundles: list[Resource]) -> None:
    assert len(bundles) == PATIENTS
    for bundle in bundles:
        assert bundle["resourceType"] == "Bundle" and bundle["type"] == "transaction"
        patients = [e for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient"]
        assert len(patients) == 1
        assert fhirkit.validate(bundle) == []


def test_every_resource_validates(bundles: list[Resource]) -> None:
    for resource in _resources(bundles):
        # Both the dict (Decimals and all) and its wire form must be clean.
        assert fhirkit.validate(resource) == [], resource
        issues = fhirkit.validate(dumps(resource))
        assert [str(issue) for issue in issues] == [], resource["resourceType"]


def test_no_empty_elements_or_nulls(bundles: list[Resource]) -> None:
    # ele-1 (no empty elements) is an invariant fhirkit does not check, so check it here.
    for bundle in bundles:
        for path, node in _walk(bundle):
            assert node is not None, path
            if isinstance(node, (dict, list, str)):
                assert len(node) > 0, path


def test_invariants_fhirkit_does_not_check(bundles: list[Resource]) -> None:
    for resource in _resources(bundles):
        for path, node in _walk(resource):
            # qty-3: a Quantity/Duration code needs a system.
            if isinstance(node, dict) and "value" in node and "code" in node:
                assert "system" in node, path
        kind = resource["resourceType"]
        if kind == "Appointment":
            # app-2/app-3: booked or fulfilled appointments have both start and end.
            assert ZONED.match(resource["start"]) and ZONED.match(resource["end"])
            assert datetime.fromisoformat(resource["start"]) < datetime.fromisoformat(resource["end"])
        if kind == "Observation":
            assert ZONED.match(resource["effectiveDateTime"]), resource["effectiveDateTime"]
            codes = {c["code"] for c in resource["code"]["coding"]}
            for component in resource.get("component", []):
                # obs-7: a component must not repeat the Observation's own code.
                assert not codes & {c["code"] for c in component["code"]["coding"]}
            # obs-6: no dataAbsentReason next to a value.
            assert "dataAbsentReason" not in resource


def test_contents_cover_the_brief(bundles: list[Resource]) -> None:
    counts = Counter(r["resourceType"] for r in _resources(bundles))
    for kind in ("Patient", "Observation", "Appointment", "MedicationRequest", "ChargeItem"):
        assert counts[kind] >= PATIENTS, kind
    assert counts["Practitioner"] == 1 and counts["Organization"] == 1

    categories: Counter[str] = Counter()
    statuses: set[str] = set()
    has_bp_panel = False
    for resource in _resources(bundles):
        kind = resource["resourceType"]
        if kind == "Patient":
            assert resource["identifier"][0]["system"] == MRN_SYSTEM
            for key in ("name", "gender", "birthDate", "address", "telecom"):
                assert key in resource, key
        elif kind == "Observation":
            for category in resource["category"]:
                categories[category["coding"][0]["code"]] += 1
            if resource["code"]["coding"][0]["code"] == "85354-9":
                has_bp_panel = True
                assert {c["code"]["coding"][0]["code"] for c in resource["component"]} == {"8480-6", "8462-4"}
            else:
                assert resource["valueQuantity"]["system"] == "http://unitsofmeasure.org"
        elif kind == "Appointment":
            statuses.add(resource["status"])
            assert any(p["actor"]["reference"].startswith("urn:uuid:") for p in resource["participant"])
            assert all(p["status"] for p in resource["participant"])
        elif kind == "MedicationRequest":
            assert resource["status"] == "active" and resource["intent"] == "order"
            coding = resource["medicationCodeableConcept"]["coding"][0]
            assert coding["system"] == "http://www.nlm.nih.gov/research/umls/rxnorm"
            assert resource["dosageInstruction"][0]["timing"]["repeat"]["frequency"] >= 1
        elif kind == "ChargeItem":
            assert resource["status"] == "billable"
            assert {"code", "subject", "occurrenceDateTime", "quantity"} <= resource.keys()
    assert categories["vital-signs"] > 0 and categories["laboratory"] > 0
    assert statuses == {"booked", "fulfilled"}
    assert has_bp_panel


def test_mrns_are_unique(bundles: list[Resource]) -> None:
    mrns = [r["identifier"][0]["value"] for r in _resources(bundles) if r["resourceType"] == "Patient"]
    assert len(set(mrns)) == len(mrns)


def test_decimal_precision_survives_the_wire(bundles: list[Resource]) -> None:
    decimals = [node for _, node in _walk(bundles) if isinstance(node, Decimal)]
    assert decimals, "measured values with a fraction must be Decimal"
    # At least one value with a significant trailing zero (like 72.50) so precision loss would show.
    assert any(str(d).endswith("0") and "." in str(d) for d in decimals)
    for bundle in bundles:
        wire = dumps(bundle)
        assert loads(wire) == bundle
        assert dumps(loads(wire)) == wire
    assert not any(isinstance(node, float) for _, node in _walk(bundles)), "floats would lose precision"


def test_same_seed_is_byte_identical() -> None:
    first = b"\n".join(dumps(b) for b in demo_bundles(PATIENTS, seed=7))
    second = b"\n".join(dumps(b) for b in demo_bundles(PATIENTS, seed=7))
    assert first == second


def test_output_does_not_depend_on_the_process() -> None:
    # String hashing is randomised per process; the data set must not pick that up (e.g. through set order).
    expected = b"".join(dumps(b) + b"\n" for b in demo_bundles(3, seed=11))
    for hash_seed in ("0", "4242"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        run = subprocess.run(
            [sys.executable, "-m", "fhir_server.demo", "--patients", "3", "--seed", "11"],
            capture_output=True, env=env, check=True, timeout=60, cwd=REPO_ROOT,
        )  # fmt: skip
        assert run.stdout == expected


def test_different_seed_differs_and_prefix_is_stable() -> None:
    a = [dumps(b) for b in demo_bundles(5, seed=1)]
    b = [dumps(b) for b in demo_bundles(5, seed=2)]
    assert a != b
    # A smaller data set is a prefix of a bigger one with the same seed.
    assert a == [dumps(b) for b in demo_bundles(8, seed=1)][:5]


def test_references_resolve_inside_the_bundle(bundles: list[Resource]) -> None:
    shared = {entry["request"]["url"] for entry in bundles[0]["entry"] if entry["request"]["method"] == "PUT"}
    assert shared == {PRACTITIONER_REF, ORGANIZATION_REF}
    for number, bundle in enumerate(bundles):
        full_urls = [entry["fullUrl"] for entry in bundle["entry"] if "fullUrl" in entry]
        assert len(full_urls) == len(set(full_urls))
        for entry in bundle["entry"]:
            resource, request = entry["resource"], entry["request"]
            if request["method"] == "POST":
                assert URN_UUID.match(entry["fullUrl"])
                assert request["url"] == resource["resourceType"] and "id" not in resource
            else:
                assert number == 0
                assert request == {"method": "PUT", "url": f"{resource['resourceType']}/{resource['id']}"}
            for reference in _references(resource):
                if reference.startswith("urn:uuid:"):
                    assert reference in full_urls, reference
                else:
                    # Literal references only to the shared resources, which the first Bundle creates.
                    assert reference in shared, reference


def test_patient_resources_point_at_their_own_patient(bundles: list[Resource]) -> None:
    for bundle in bundles:
        patient_urn = next(e["fullUrl"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")
        for entry in bundle["entry"]:
            resource = entry["resource"]
            if "subject" in resource:
                assert resource["subject"]["reference"] == patient_urn


def test_without_shared_resources_everything_is_posted() -> None:
    for bundle in demo_bundles(3, seed=42, shared=False):
        assert fhirkit.validate(bundle) == []
        full_urls = {entry["fullUrl"] for entry in bundle["entry"]}
        for entry in bundle["entry"]:
            assert entry["request"]["method"] == "POST"
            assert fhirkit.validate(entry["resource"]) == []
            for reference in _references(entry["resource"]):
                assert reference in full_urls


def test_rejects_negative_count() -> None:
    with pytest.raises(ValueError):
        next(demo_bundles(-1))
