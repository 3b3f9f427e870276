"""Query plans of the benchmark's search shapes: no collection scans on MongoDB.

Every search shape of ``bench/search_load.py`` (``SHAPES``) runs against a small seeded data set through the store's
``explain`` (:mod:`fhir_server.storage.mongo.plans`), which asks the server for the plan of every query the search
sends — the main query per sort partition, chain and ``_has`` inner queries, ``_include``/``_revinclude`` lookups,
totals. The plans must not contain ``COLLSCAN``, and a shape scoped to one patient must be driven by an index more
selective than "every resource of the type".

Needs a server that reports query plans (capability "query-plans": MongoDB). FerretDB 1.x does not: it evaluates
every filter but ``_id`` equality by scanning (its explain shows the SQLite plan, ``SCAN``), so there is nothing to
assert there; see the README.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from fhir_server.search.execute import execute, parse
from fhir_server.storage import open_store_from_url
from fhir_server.storage.base import WriteTx
from tests.conftest import requires
from tests.support.server import fresh_mongodb_url

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
MRN = "urn:aegis:test:mrn"
CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
PATIENTS = 40

# (name, type, query, compartment, scoped to one patient) — the shapes of bench/search_load.py SHAPES, p7 the patient
SHAPES: list[tuple[str, str, str, tuple[str, str] | None, bool]] = [
    ("patient-identifier", "Patient", f"identifier={MRN}|mrn-7", None, True),
    ("patient-name", "Patient", "name=fam3", None, False),
    ("patient-family-gender", "Patient", "family=fam3&gender=female", None, False),
    ("patient-birthdate", "Patient", "birthdate=1970-01-08", None, False),
    ("patient-revinclude-obs", "Patient", "_id=p7&_revinclude=Observation:patient", None, True),
    ("patient-has-obs-code", "Patient", f"_has:Observation:patient:code={LOINC}|2339-0", None, False),
    ("obs-patient", "Observation", "patient=p7", None, True),
    ("obs-patient-category", "Observation", "patient=p7&category=vital-signs", None, True),
    ("obs-patient-code", "Observation", f"patient=p7&code={LOINC}|8867-4", None, True),
    ("obs-patient-category-date", "Observation", "patient=p7&category=laboratory&date=ge2020-01-01&date=lt2021-01-01",
     None, True),
    ("obs-patient-code-or", "Observation", f"patient=p7&code={LOINC}|8867-4,{LOINC}|2339-0", None, True),
    ("obs-patient-sort-date", "Observation", "patient=p7&_sort=-date", None, True),
    ("obs-patient-missing-value", "Observation", "patient=p7&value-quantity:missing=true", None, True),
    ("obs-patient-include-patient", "Observation", "patient=p7&_include=Observation:patient", None, True),
    ("obs-patient-component-gt", "Observation", f"patient=p7&component-code-value-quantity={LOINC}|8480-6$gt140",
     None, True),
    ("obs-patient-glucose-g-dl", "Observation", f"patient=p7&code={LOINC}|2339-0&value-quantity=gt0.100|{UCUM}|g/dL",
     None, True),
    ("obs-patient-summary-count", "Observation", "patient=p7&_summary=count", None, True),
    ("obs-compartment", "Observation", "category=vital-signs", ("Patient", "p7"), True),
    ("obs-patient-page2", "Observation", "patient=p7&_count=2", None, True),
    ("obs-chain-identifier", "Observation", f"subject:Patient.identifier={MRN}|mrn-7", None, True),
    ("obs-chain-name", "Observation", "subject.name=fam3", None, False),
    ("obs-code-quantity-mg", "Observation", f"code={LOINC}|2339-0&value-quantity=gt100|{UCUM}|mg/dL", None, False),
    ("obs-code-quantity-g", "Observation", f"code={LOINC}|2339-0&value-quantity=gt1.00|{UCUM}|g/L", None, False),
    ("encounter-patient", "Encounter", "patient=p7", None, True),
    ("encounter-patient-date", "Encounter", "patient=p7&date=ge2020-01-01&date=lt2021-01-01", None, True),
    ("encounter-patient-class", "Encounter", "patient=p7&class=http://terminology.hl7.org/CodeSystem/v3-ActCode|AMB",
     None, True),
    ("condition-patient-clinical-status", "Condition",
     "patient=p7&clinical-status=http://terminology.hl7.org/CodeSystem/condition-clinical|active", None, True),
    ("condition-patient-category", "Condition", "patient=p7&category=problem-list-item", None, True),
    ("medreq-patient-status", "MedicationRequest", "patient=p7&status=active", None, True),
    ("medreq-patient-intent", "MedicationRequest", "patient=p7&intent=order", None, True),
    ("appointment-patient-date", "Appointment", "patient=p7&date=ge2020-01-01", None, True),
]


def _resources(n: int) -> list[dict[str, Any]]:
    pid = f"p{n}"
    subject = {"reference": f"Patient/{pid}"}
    out: list[dict[str, Any]] = [{
        "resourceType": "Patient", "id": pid, "identifier": [{"system": MRN, "value": f"mrn-{n}"}],
        "name": [{"family": f"Fam{n % 5}", "given": [f"Given{n}"]}], "gender": "female" if n % 2 else "male",
        "birthDate": f"1970-01-{n % 28 + 1:02d}"}]
    for k in range(6):
        date = f"2020-{k % 12 + 1:02d}-15T10:00:00Z"
        out.append({"resourceType": "Observation", "id": f"{pid}-hr{k}", "status": "final", "subject": subject,
                    "category": [{"coding": [{"system": CATEGORY, "code": "vital-signs"}]}],
                    "code": {"coding": [{"system": LOINC, "code": "8867-4"}]}, "effectiveDateTime": date,
                    "valueQuantity": {"value": 60 + k, "unit": "/min", "system": UCUM, "code": "/min"}})
        out.append({"resourceType": "Observation", "id": f"{pid}-glu{k}", "status": "final", "subject": subject,
                    "category": [{"coding": [{"system": CATEGORY, "code": "laboratory"}]}],
                    "code": {"coding": [{"system": LOINC, "code": "2339-0"}]}, "effectiveDateTime": date,
                    "valueQuantity": {"value": 90 + 5 * k, "unit": "mg/dL", "system": UCUM, "code": "mg/dL"}})
        out.append({"resourceType": "Observation", "id": f"{pid}-bp{k}", "status": "final", "subject": subject,
                    "category": [{"coding": [{"system": CATEGORY, "code": "vital-signs"}]}],
                    "code": {"coding": [{"system": LOINC, "code": "85354-9"}]}, "effectiveDateTime": date,
                    "component": [{"code": {"coding": [{"system": LOINC, "code": "8480-6"}]},
                                   "valueQuantity": {"value": 120 + 10 * k, "unit": "mm[Hg]", "system": UCUM,
                                                     "code": "mm[Hg]"}}]})
        out.append({"resourceType": "Encounter", "id": f"{pid}-enc{k}", "status": "finished", "subject": subject,
                    "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
                    "period": {"start": date, "end": date}})
    out.append({"resourceType": "Condition", "id": f"{pid}-cond", "subject": subject,
                "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                               "code": "active"}]},
                "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-category",
                                          "code": "problem-list-item"}]}],
                "code": {"text": "x"}})
    out.append({"resourceType": "MedicationRequest", "id": f"{pid}-mr", "status": "active", "intent": "order",
                "subject": subject, "medicationCodeableConcept": {"text": "x"}})
    out.append({"resourceType": "Appointment", "id": f"{pid}-apt", "status": "booked",
                "start": "2020-06-01T09:00:00Z", "end": "2020-06-01T09:30:00Z",
                "participant": [{"actor": subject, "status": "accepted"}]})
    return out


def test_benchmark_shapes_use_indexes(backend: str, tmp_path: Path) -> None:
    requires(backend, "query-plans")
    from fhir_server.storage.mongo.store import MongoStore

    async def run() -> list[str]:
        store = open_store_from_url(fresh_mongodb_url("plans"))
        assert isinstance(store, MongoStore)
        await store.open()
        report: list[str] = []
        try:
            for n in range(PATIENTS):
                async def unit(tx: WriteTx, n: int = n) -> None:
                    for res in _resources(n):
                        await tx.put(res["resourceType"], res["id"], res, method="PUT")

                await store.transact(unit)
            for name, rtype, query, compartment, scoped in SHAPES:
                pairs = [tuple(p.split("=", 1)) for p in query.split("&")]

                async def search(pairs: list[Any] = pairs, rtype: str = rtype, compartment: Any = compartment) -> Any:
                    result = await execute(store, rtype, parse(pairs), strict=True, base_url=None, default_count=50,
                                           max_count=1000, after=None, compartment=compartment)
                    if result.next_after is not None:  # and the next page, as obs-patient-page2 does
                        await execute(store, rtype, parse(pairs), strict=True, base_url=None, default_count=50,
                                      max_count=1000, after=result.next_after, compartment=compartment)
                    return result

                plans = await store.explain(search)
                assert plans, f"{name}: no query was sent"
                for plan in plans:
                    assert "COLLSCAN" not in plan.stages, f"{name}: {plan.query} scans: {plan.stages}"
                    report.append(f"{name}: {'/'.join(plan.indexes) or '-'} examined {plan.docs_examined} "
                                  f"{plan.query.filter}")
                if scoped:
                    used = {ix for plan in plans for ix in plan.indexes}
                    assert used - {"type_key"}, f"{name}: only the whole-type index drives it: {report[-len(plans):]}"
        finally:
            await store.close()
        return report

    print("\n".join(asyncio.run(run())))
