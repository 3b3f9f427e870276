"""Index extraction: representative resources value by value, the fast path against fhirpathpy on every parameter,
and robustness on the examples, the demo data set and synthetic resources with every searchable element filled."""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fhir_server.demo import demo_bundles
from fhir_server.search.extract import (
    CURRENCY_SYSTEM,
    _collect_strings,
    extract,
    fast_normalize,
    fast_path_coverage,
    plan_for,
    text_content,
)
from fhir_server.search.fastpath import compile_path, normalise_expression, parse_reference
from fhir_server.search.registry import params_for
from fhir_server.search.values import (
    DATE_MAX,
    DATE_MIN,
    CompositeV,
    DateV,
    NumberV,
    QuantityV,
    ReferenceV,
    StringV,
    TokenV,
    UriV,
    Value,
    normalize,
)
from resources.jsonio import FhirDecimal, loads
from resources.model import resource_types, type_info

from tests.unit.search.test_ranges import _us

EXAMPLES = Path(__file__).resolve().parents[2] / "data" / "examples"
UCUM = "http://unitsofmeasure.org"
LOINC = "http://loinc.org"
FOCUS_TYPES = ("Patient", "Observation", "Encounter", "Condition", "MedicationRequest", "Appointment", "ChargeItem",
               "RiskAssessment", "ImagingStudy")


def values(resource: dict[str, Any]) -> dict[str, list[Value]]:
    out: dict[str, list[Value]] = defaultdict(list)
    for code, value in extract(resource):
        out[code].append(value)
    return dict(out)


# ---- representative resources ---------------------------------------------------------------------------------------

PATIENT = loads("""{
  "resourceType": "Patient", "id": "p1",
  "meta": {"lastUpdated": "2024-05-01T10:30:00.123Z",
    "profile": ["http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient|6.1.0"],
           "tag": [{"system": "https://aegis-fhir.org/demo", "code": "demo", "display": "Demo"}],
             "source": "http://sender.example.org#r1"},
  "extension": [{"url": "http://hl7.org/fhir/StructureDefinition/patient-mothersMaidenName", "valueString": "Müller"}],
  "identifier": [
    {"use": "usual", "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}],
      "text": "Medical Record Number"},
     "system": "https://hospital.example.org/mrn", "value": "MRN-001"},
    {"system": "http://hl7.org/fhir/sid/us-ssn", "value": "999-99-9999"}
  ],
  "active": true,
  "name": [{"use": "official", "family": "Ñúñez", "given": ["José", "María"], "prefix": ["Dr."], "suffix": ["III"]},
           {"use": "nickname", "text": "Pepe"}],
  "telecom": [{"system": "phone", "value": "+1 555 0100", "use": "home"}, {"system": "email",
    "value": "jose@example.org"}],
  "gender": "male",
  "birthDate": "1970-02",
  "deceasedDateTime": "2024-04-30T22:00:00-02:00",
  "address": [{"line": ["1 Main St", "Apt 2"], "city": "Zürich", "state": "ZH", "postalCode": "8000",
    "country": "CH", "use": "home"}],
  "communication": [{"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "es"}], "text": "Spanish"}}],
  "generalPractitioner": [{"reference": "https://other.example.org/fhir/Practitioner/gp1/_history/3"}],
  "managingOrganization": {"identifier": {"system": "urn:oid:1.2.3", "value": "ORG-9"}, "type": "Organization"},
  "link": [{"other": {"reference": "Patient/p0"}, "type": "replaces"}]
}""")

OBS_MG = loads("""{
  "resourceType": "Observation", "id": "o-mg", "status": "final",
  "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
    "code": "laboratory"}]}],
  "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7",
    "display": "Glucose [Mass/volume] in Serum or Plasma"}]},
  "subject": {"reference": "Patient/p1"},
  "effectiveDateTime": "2024-03-01",
  "valueQuantity": {"value": 1000, "unit": "mg", "system": "http://unitsofmeasure.org", "code": "mg"}
}""")

OBS_G = loads("""{
  "resourceType": "Observation", "id": "o-g", "status": "final",
  "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]},
  "subject": {"reference": "Group/g1"},
  "effectivePeriod": {"start": "2024-03-01T08:00:00Z"},
  "valueQuantity": {"value": 1.0, "unit": "g", "system": "http://unitsofmeasure.org", "code": "g"}
}""")

OBS_CONCEPT = loads("""{
  "resourceType": "Observation", "id": "o-c", "status": "amended",
  "code": {"text": "Smoking status"},
  "subject": {"reference": "urn:uuid:5eb06a68-461b-46b7-963f-4efcae57e403"},
  "effectiveTiming": {"event": ["2024-01-05", "2024-01-02T10:00:00Z"],
    "repeat": {"boundsPeriod": {"end": "2024-02-01"}}},
  "valueCodeableConcept": {"coding": [{"system": "http://snomed.info/sct", "code": "8517006",
    "display": "Ex-smoker"}], "text": "Former smoker"}
}""")

APPOINTMENT = loads("""{
  "resourceType": "Appointment", "id": "a1", "status": "booked",
  "identifier": [{"system": "urn:ietf:rfc:3986", "value": "urn:uuid:0a1b2c3d-0000-4000-8000-000000000001"}],
  "serviceCategory": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/service-category", "code": "17",
    "display": "General Practice"}]}],
  "serviceType": [{"coding": [{"code": "124", "display": "General Practice"}]}],
  "specialty": [{"coding": [{"system": "http://snomed.info/sct", "code": "394814009"}]}],
  "appointmentType": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0276", "code": "FOLLOWUP"}]},
  "reasonCode": [{"text": "Follow-up of blood pressure"}],
  "reasonReference": [{"reference": "Condition/c1"}],
  "start": "2024-06-03T09:00:00+02:00", "end": "2024-06-03T09:15:00+02:00",
  "slot": [{"reference": "Slot/s1"}],
  "basedOn": [{"reference": "ServiceRequest/sr1"}],
  "participant": [
    {"actor": {"reference": "Patient/p1", "display": "José"}, "status": "accepted"},
    {"actor": {"reference": "Practitioner/dr1"}, "status": "tentative"},
    {"actor": {"reference": "Location/room-4"}, "status": "accepted"},
    {"actor": {"reference": "urn:uuid:a90ff249-dcc8-4f9d-a176-9817f527872c"}, "status": "needs-action"}
  ]
}""")

MEDREQ = loads("""{
  "resourceType": "MedicationRequest", "id": "m1", "status": "active", "intent": "order", "priority": "urgent",
  "identifier": [{"system": "http://pharmacy.example.org/rx", "value": "RX-77"}],
  "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/medicationrequest-category",
    "code": "outpatient"}]}],
  "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm",
    "code": "310798", "display": "Hydrochlorothiazide 25 MG Oral Tablet"}]},
  "subject": {"reference": "Patient/p1"},
  "encounter": {"reference": "Encounter/e1"},
  "authoredOn": "2024-02-11T13:40:00+01:00",
  "requester": {"reference": "Practitioner/dr1"},
  "performer": {"reference": "Organization/pharm"},
  "performerType": {"coding": [{"system": "http://snomed.info/sct", "code": "46255001"}]},
  "dosageInstruction": [
    {"timing": {"event": ["2024-02-12T08:00:00Z", "2024-02-13T08:00:00Z"]}},
    {"timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d"}}}
  ],
  "dispenseRequest": {"performer": {"reference": "Organization/pharm"}, "quantity": {"value": 30, "unit": "tablet"}}
}""")

CHARGE = loads("""{
  "resourceType": "ChargeItem", "id": "ch1", "status": "billable",
  "identifier": [{"system": "http://billing.example.org", "value": "CH-1"}],
  "code": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "99213"}]},
  "subject": {"reference": "Patient/p1"},
  "context": {"reference": "Encounter/e1"},
  "occurrencePeriod": {"start": "2024-03-01T09:00:00Z", "end": "2024-03-01T09:30:00Z"},
  "performer": [{"function": {"coding": [{"system": "http://snomed.info/sct", "code": "17561000"}]},
    "actor": {"reference": "Practitioner/dr1"}}],
  "performingOrganization": {"reference": "Organization/clinic"},
  "requestingOrganization": {"reference": "Organization/clinic"},
  "quantity": {"value": 2},
  "factorOverride": 0.80,
  "priceOverride": {"value": 40.00, "currency": "EUR"},
  "enteredDate": "2024-03-01T12:00:00Z",
  "enterer": {"reference": "Practitioner/dr1"},
  "account": [{"reference": "Account/acc1"}],
  "service": [{"reference": "Observation/o-mg"}, {"reference": "Procedure/pr1"}]
}""")

RISK = loads("""{
  "resourceType": "RiskAssessment", "id": "r1", "status": "final",
  "identifier": [{"system": "http://risk.example.org", "value": "RA-1"}],
  "method": {"coding": [{"system": "http://example.org/methods", "code": "framingham"}]},
  "subject": {"reference": "Patient/p1"},
  "encounter": {"reference": "Encounter/e1"},
  "occurrenceDateTime": "2024-01-15",
  "condition": {"reference": "Condition/c1"},
  "performer": {"reference": "Practitioner/dr1"},
  "prediction": [
    {"outcome": {"text": "Heart attack"}, "probabilityDecimal": 0.02,
     "qualitativeRisk": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/risk-probability",
       "code": "low"}]}},
    {"outcome": {"text": "Stroke"}, "probabilityRange": {"low": {"value": 5, "unit": "%",
      "system": "http://unitsofmeasure.org", "code": "%"},
                                                        "high": {"value": 10, "unit": "%",
                                                          "system": "http://unitsofmeasure.org", "code": "%"}}}
  ]
}""")

IMAGING = loads("""{
  "resourceType": "ImagingStudy", "id": "is1", "status": "available",
  "identifier": [{"system": "urn:dicom:uid",
    "value": "urn:oid:2.16.124.113543.6003.1154777499.30246.19789.3503430045"}],
  "subject": {"reference": "Patient/p1"},
  "encounter": {"reference": "Encounter/e1"},
  "started": "2017-01-01T11:01:20+03:00",
  "basedOn": [{"reference": "ServiceRequest/sr1"}],
  "referrer": {"reference": "Practitioner/dr1"},
  "interpreter": [{"reference": "Practitioner/dr2"}],
  "endpoint": [{"reference": "Endpoint/wado"}],
  "reasonCode": [{"coding": [{"system": "http://snomed.info/sct", "code": "429858000"}]}],
  "series": [{
    "uid": "2.16.124.113543.6003.2588828330.45298.17418.2723805630",
    "modality": {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "CT"},
    "bodySite": {"system": "http://snomed.info/sct", "code": "67734004", "display": "Upper Trunk Structure"},
    "endpoint": [{"reference": "Endpoint/wado-series"}],
    "performer": [{"actor": {"reference": "Practitioner/tech1"}}],
    "instance": [{"uid": "2.16.124.113543.6003.189642796.63084.16748.2599092903",
                  "sopClass": {"system": "urn:ietf:rfc:3986", "code": "urn:oid:1.2.840.10008.5.1.4.1.1.2"}}]
  }]
}""")

CONDITION = loads("""{
  "resourceType": "Condition", "id": "c1",
  "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
    "code": "active"}]},
  "code": {"coding": [{"system": "http://snomed.info/sct", "code": "38341003", "display": "Hypertensive disorder"}]},
  "subject": {"reference": "Patient/p1"},
  "onsetAge": {"value": 52, "unit": "yr", "system": "http://unitsofmeasure.org", "code": "a"},
  "abatementRange": {"low": {"value": 60, "unit": "yr", "system": "http://unitsofmeasure.org", "code": "a"}},
  "recordedDate": "2024-01-15"
}""")

ENCOUNTER = loads("""{
  "resourceType": "Encounter", "id": "e1", "status": "finished",
  "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
  "subject": {"reference": "Patient/p1"},
  "participant": [{"individual": {"reference": "Practitioner/dr1"}, "type": [{"coding": [{"code": "ATND"}]}]}],
  "period": {"start": "2024-03-01T09:00:00Z", "end": "2024-03-01T09:30:00Z"},
  "length": {"value": 30, "unit": "min", "system": "http://unitsofmeasure.org", "code": "min"},
  "location": [{"location": {"reference": "Location/room-4"}, "period": {"start": "2024-03-01T09:00:00Z"}}]
}""")


# ---- synthetic resources: every element filled ---------------------------------------------------------------


def samples(ref_type: str, contact: str) -> dict[str, Any]:
    """A value for each primitive and datatype the filler puts wherever the model has one."""
    coding = {"system": "http://loinc.org", "code": "1234-5", "display": "Some Thing"}
    ucum = "http://unitsofmeasure.org"
    div = '<div xmlns="http://www.w3.org/1999/xhtml">Hello <b>world</b> &amp; more</div>'
    return {
        "boolean": True, "integer": 7, "positiveInt": 3, "unsignedInt": 0, "decimal": FhirDecimal("72.50"),
        "string": "Ünïcode Text", "markdown": "Some *markdown*", "code": "final", "id": "abc-1",
        "uri": "http://example.org/u", "url": "http://example.org/l",
        "canonical": "http://example.org/fhir/ValueSet/vs|1.0",
        "oid": "urn:oid:1.2.3", "uuid": "urn:uuid:0f4f3b0e-7b8e-4c4a-9c0a-1f2e3d4c5b6a",
        "date": "2021-03", "dateTime": "2021-03-04T10:20:30+01:00", "instant": "2021-03-04T10:20:30.123Z",
        "time": "10:20:30", "base64Binary": "AAEC", "xhtml": div,
        "Coding": coding,
        "CodeableConcept": {"coding": [coding, {"system": "http://snomed.info/sct", "code": "999"}],
                            "text": "A Concept"},
        "Identifier": {"system": "http://ids.example.org", "value": "ID-1", "type": {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}], "text": "MRN"}},
        "Reference": {"reference": f"{ref_type}/r1",
                      "identifier": {"system": "http://ids.example.org", "value": "R-1"}},
        "Quantity": {"value": FhirDecimal("1.20E+3"), "unit": "mg", "system": ucum, "code": "mg", "comparator": "<"},
        "Age": {"value": 42, "unit": "yr", "system": ucum, "code": "a"},
        "Duration": {"value": 15, "unit": "min", "system": ucum, "code": "min"},
        "Distance": {"value": 3, "unit": "km", "system": ucum, "code": "km"},
        "Count": {"value": 2, "system": ucum, "code": "1"},
        "Money": {"value": FhirDecimal("14.40"), "currency": "USD"},
        "Range": {"low": {"value": 1, "unit": "g", "system": ucum, "code": "g"},
                  "high": {"value": FhirDecimal("2.5"), "unit": "g", "system": ucum, "code": "g"}},
        "Ratio": {"numerator": {"value": 1}, "denominator": {"value": 2}},
        "Period": {"start": "2021-01-01", "end": "2021-02-01T10:00:00Z"},
        "Timing": {"event": ["2021-05-01T08:00:00Z", "2021-05-03"],
                   "repeat": {"boundsPeriod": {"start": "2021-04-01"}}},
        "HumanName": {"family": "Ñúñez", "given": ["José", "Ana"], "prefix": ["Dr."], "suffix": ["Jr"],
                      "text": "Dr. José Ñúñez"},
        "Address": {"line": ["1 Main St", "Apt 2"], "city": "Zürich", "district": "D", "state": "ZH",
                    "postalCode": "8000", "country": "CH", "text": "1 Main St, Zürich", "use": "home"},
        "ContactPoint": {"system": contact, "value": "+1 555 0100", "use": "home"},
        "Attachment": {"url": "http://example.org/doc.pdf", "contentType": "application/pdf"},
        "Annotation": {"text": "note"},
        "SampledData": {"origin": {"value": 0}, "period": 1, "dimensions": 1, "data": "1 2"},
        "Signature": {"type": [coding], "when": "2021-01-01T00:00:00Z", "who": {"reference": f"{ref_type}/r1"}},
        "Meta": {"lastUpdated": "2024-01-02T03:04:05.678Z", "source": "http://source.example.org#abc",
                 "profile": ["http://example.org/fhir/StructureDefinition/p|2.0"], "tag": [coding],
                 "security": [coding]},
        "Narrative": {"status": "generated", "div": div},
    }


def _extension_urls(rtype: str) -> list[str]:
    urls: set[str] = set()
    for p in params_for(rtype).values():
        urls.update(re.findall(r"extension\('([^']*)'\)", p.expression or ""))
    return sorted(urls)


def fill(type_key: str, ref_type: str = "Patient", contact: str = "email", variant: int = 0,
         depth: int = 0) -> dict[str, Any]:
    """A resource (or element) of ``type_key`` with every element filled from the model: the ``variant``-th option
    of each choice element, backbone elements and datatypes three levels deep, references to ``ref_type``, and
    extensions with the URLs the type's SearchParameters look for."""
    table = samples(ref_type, contact)
    out: dict[str, Any] = {}
    info = type_info(type_key)
    assert info is not None
    if info.kind == "resource":
        out["resourceType"] = type_key
        out["id"] = "res-1"
    for el in info.elements:
        if el.json_name in ("modifierExtension", "contained", "implicitRules", "extension"):
            continue
        if el.choice_base is not None:
            options = [e for e in info.elements if e.choice_base == el.choice_base]
            if options[variant % len(options)].json_name != el.json_name:
                continue
        key = el.child_type_key or el.type_code
        if key in table:
            value = table[key]
        elif key not in ("Extension", "Resource") and depth < 3 and type_info(key) is not None:
            value = fill(key, ref_type, contact, variant, depth + 1)
        else:
            continue
        out[el.json_name] = [value] if el.is_array else value
    if info.kind == "resource":
        exts = []
        for url in _extension_urls(type_key):
            exts += [{"url": url, "valueString": "ext text"},
                     {"url": url, "valueCodeableConcept": table["CodeableConcept"]},
                     {"url": url, "valueReference": table["Reference"]}]
        if exts:
            out["extension"] = exts
    return out


REF_TYPES = ("Patient", "Practitioner", "Location", "Organization", "RelatedPerson", "Device")


def synthetic(rtype: str) -> list[dict[str, Any]]:
    # 12 variants reach every option of the longest choice elements searched (Observation.value has 11)
    return [fill(rtype, REF_TYPES[v % len(REF_TYPES)], ("email", "phone")[v % 2], v) for v in range(12)]


def example_resources() -> list[dict[str, Any]]:
    out = []
    for path in sorted(EXAMPLES.glob("*.json")):
        resource = loads(path.read_bytes())
        out.append(resource)
        if resource.get("resourceType") == "Bundle":
            out.extend(e["resource"] for e in resource.get("entry", []) if "resource" in e)
    return out


def demo_resources() -> list[dict[str, Any]]:
    out = []
    for bundle in demo_bundles(4, 7):
        out.append(bundle)  # the Bundle itself is a resource with search parameters too
        out.extend(entry["resource"] for entry in bundle["entry"])
    return out


# ---- Patient ---------------------------------------------------------------------------------------------------------


def test_patient() -> None:
    v = values(PATIENT)
    assert "_id" not in v  # the store indexes ids itself
    assert v["active"] == [TokenV(None, "true")]
    assert v["gender"] == [TokenV(None, "male")]
    assert v["birthdate"] == [DateV(_us(1970, 2, 1), _us(1970, 3, 1))]
    assert v["deceased"] == [TokenV(None, "true")]
    assert v["death-date"] == [DateV(_us(2024, 5, 1), _us(2024, 5, 1) + 1_000_000)]
    # HumanName: each part, normalised for case and accents, and as written
    assert StringV("nunez", "Ñúñez") in v["name"] and StringV("jose", "José") in v["name"]
    assert {s.exact for s in v["name"]} == {"José", "María", "Dr.", "III", "Ñúñez", "Pepe"}
    assert v["family"] == [StringV("nunez", "Ñúñez")]
    assert v["given"] == [StringV("jose", "José"), StringV("maria", "María")]
    assert v["phonetic"] == v["name"]
    # Address: every part
    assert {s.exact for s in v["address"]} == {"1 Main St", "Apt 2", "Zürich", "ZH", "8000", "CH"}
    assert v["address-city"] == [StringV("zurich", "Zürich")]
    assert v["address-use"] == [TokenV(None, "home")]
    # Identifier: system|value, type text for :text, and the :of-type composite
    assert v["identifier"] == [TokenV("https://hospital.example.org/mrn", "MRN-001", "medical record number"),
                               TokenV("http://hl7.org/fhir/sid/us-ssn", "999-99-9999")]
    assert v["identifier:of-type"] == [CompositeV((
        TokenV("http://terminology.hl7.org/CodeSystem/v2-0203", "MR"),
        TokenV("https://hospital.example.org/mrn", "MRN-001")))]
    # ContactPoint: the value, without and with the ContactPoint.system
    assert v["phone"] == [TokenV(None, "+1 555 0100"), TokenV("phone", "+1 555 0100")]
    assert v["email"] == [TokenV(None, "jose@example.org"), TokenV("email", "jose@example.org")]
    assert len(v["telecom"]) == 4
    # CodeableConcept: codings and the text
    assert v["language"] == [TokenV("urn:ietf:bcp:47", "es"), TokenV(None, None, "spanish")]
    # references: absolute with history, identifier-only with Reference.type, relative
    assert v["general-practitioner"] == [ReferenceV(
        "Practitioner", "gp1", "https://other.example.org/fhir/Practitioner/gp1/_history/3")]
    assert v["organization"] == [ReferenceV("Organization", None, None, "urn:oid:1.2.3", "ORG-9")]
    assert v["link"] == [ReferenceV("Patient", "p0")]
    # meta
    assert v["_lastUpdated"] == [DateV(_us(2024, 5, 1, 10, 30) + 123_000, _us(2024, 5, 1, 10, 30) + 124_000)]
    assert v["_profile"] == [UriV("http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient"),
                             UriV("http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient|6.1.0")]
    assert v["_tag"] == [TokenV("https://aegis-fhir.org/demo", "demo", "demo")]
    assert v["_source"] == [UriV("http://sender.example.org#r1")]


def test_patient_extension_parameter() -> None:
    # the R4 definition names a URL no real extension uses; extraction follows the definition
    url = "http://hl7.org/fhir/StructureDefinition/patient-extensions-Patient-mothersMaidenName"
    patient = {"resourceType": "Patient", "extension": [{"url": url, "valueString": "Müller"},
                                                        {"url": "http://other", "valueString": "x"}]}
    assert values(patient)["mothersMaidenName"] == [StringV("muller", "Müller")]


@pytest.mark.parametrize(("deceased", "expected"), [
    ({}, "false"), ({"deceasedBoolean": False}, "false"), ({"deceasedBoolean": True}, "true"),
    ({"deceasedDateTime": "2020"}, "true"),
])
def test_patient_deceased(deceased: dict[str, Any], expected: str) -> None:
    assert values({"resourceType": "Patient", **deceased})["deceased"] == [TokenV(None, expected)]


# ---- Observation -----------------------------------------------------------------------------------------------------


def test_observation_vitals_example() -> None:
    obs = loads((EXAMPLES / "aegis-observation-vitals.json").read_bytes())
    v = values(obs)
    assert v["status"] == [TokenV(None, "final")]
    assert v["code"] == [TokenV(LOINC, "85354-9", "blood pressure panel"), TokenV(None, None, "blood pressure")]
    assert v["category"] == [TokenV("http://terminology.hl7.org/CodeSystem/observation-category", "vital-signs",
                                    "vital signs")]
    # effectivePeriod: from the start to the end of the end's precision
    assert v["date"] == [DateV(_us(2024, 1, 2, 3, 0, 0), _us(2024, 1, 2, 3, 4, 1))]
    assert v["subject"] == v["patient"] == [ReferenceV("Patient", "pat-1")]
    assert v["performer"] == [ReferenceV("Practitioner", "1")]
    assert v["device"] == [ReferenceV("Device", None, "#cuff")]  # contained: typed from the contained resource
    # value: 72.50 /min keeps its precision and converts to s-1
    (q,) = v["value-quantity"]
    assert (q.value, q.lo, q.hi, q.system, q.code, q.unit) == (72.5, 72.495, 72.505, UCUM, "/min", "beats/minute")
    assert q.canon_code == "s-1" and q.canon_value == pytest.approx(72.5 / 60)
    # components: codes, quantities (1.20E+3 keeps three significant figures), composites pair code with value
    assert {t.code for t in v["component-code"]} == {"8480-6", "8462-4", None}
    assert [(c.value, c.lo, c.hi) for c in v["component-value-quantity"]] == [(107.0, 106.5, 107.5),
                                                                             (1200.0, 1195.0, 1205.0)]
    composites = v["component-code-value-quantity"]
    pairs = {(c.parts[0].code, c.parts[1].value) for c in composites}  # type: ignore[union-attr]
    assert pairs == {("8480-6", 107.0), ("8462-4", 1200.0)}
    combo = {(c.parts[0].code, c.parts[1].value) for c in v["combo-code-value-quantity"]}  # type: ignore[union-attr]
    assert combo == {("85354-9", 72.5), ("8480-6", 107.0), ("8462-4", 1200.0)}
    assert {t.code for t in v["combo-code"]} == {"85354-9", "8480-6", "8462-4", None}
    assert v["combo-data-absent-reason"] == v["component-data-absent-reason"] == [TokenV(None, None, "n/a")]
    # SampledData has no quantity semantics; a string value is not a quantity
    assert len(v["combo-value-quantity"]) == 3
    assert "value-string" not in v and "value-concept" not in v


def test_code_value_quantity_mg_and_g() -> None:
    mg, g = values(OBS_MG), values(OBS_G)
    (cmg,), (cg,) = mg["code-value-quantity"], g["code-value-quantity"]
    assert isinstance(cmg, CompositeV) and isinstance(cg, CompositeV)
    assert cmg.parts[0] == TokenV(LOINC, "2345-7", "glucose [mass/volume] in serum or plasma")
    assert cg.parts[0] == TokenV(LOINC, "2345-7")
    qmg, qg = cmg.parts[1], cg.parts[1]
    assert isinstance(qmg, QuantityV) and isinstance(qg, QuantityV)
    assert (qmg.value, qmg.code) == (1000.0, "mg") and (qg.value, qg.code) == (1.0, "g")
    # 1000 mg and 1.0 g are the same canonical quantity, each inside the other's precision range
    assert qmg.canon_code == qg.canon_code == "g"
    assert qmg.canon_value == qg.canon_value == 1.0
    assert (qmg.canon_lo, qmg.canon_hi) == (0.9995, 1.0005) and (qg.canon_lo, qg.canon_hi) == (0.95, 1.05)
    assert qg.canon_lo <= qmg.canon_value < qg.canon_hi  # type: ignore[operator]
    assert mg["value-quantity"] == [qmg] and g["combo-value-quantity"] == [qg]


def test_observation_dates_and_concepts() -> None:
    g = values(OBS_G)
    assert g["date"] == [DateV(_us(2024, 3, 1, 8), DATE_MAX)]  # a Period without end is open
    assert g["subject"] == [ReferenceV("Group", "g1")]
    assert "patient" not in g  # subject is a Group
    assert values(OBS_MG)["date"] == [DateV(_us(2024, 3, 1), _us(2024, 3, 2))]
    c = values(OBS_CONCEPT)
    # Timing: one range over its outer limits; boundsPeriod without start leaves it open
    assert c["date"] == [DateV(DATE_MIN, _us(2024, 2, 2))]
    assert c["value-concept"] == [TokenV("http://snomed.info/sct", "8517006", "ex-smoker"),
                                  TokenV(None, None, "former smoker")]
    assert c["value-string"] == [StringV("former smoker", "Former smoker")]  # (value as CodeableConcept).text
    assert c["code"] == [TokenV(None, None, "smoking status")]
    # a composite pairs codes, not texts: a text-only code gives no code-value-concept
    assert "code-value-concept" not in c
    # urn:uuid references are URLs; their type is unknown, so they are no "patient"
    assert c["subject"] == [ReferenceV(None, None, "urn:uuid:5eb06a68-461b-46b7-963f-4efcae57e403")]
    assert "patient" not in c


def test_observation_timing_events_only() -> None:
    obs = {"resourceType": "Observation", "effectiveTiming": {"event": ["2024-01-05", "2024-01-02T10:00:00Z"]}}
    assert values(obs)["date"] == [DateV(_us(2024, 1, 2, 10), _us(2024, 1, 6))]
    obs = {"resourceType": "Observation", "effectiveTiming": {"repeat": {"frequency": 2}}}
    assert "date" not in values(obs)


def test_observation_value_types() -> None:
    base = {"resourceType": "Observation", "code": {"coding": [{"system": LOINC, "code": "1-1"}]}}
    v = values({**base, "valueDateTime": "2024-01-01T10:00:00Z"})
    assert v["value-date"] == [DateV(_us(2024, 1, 1, 10), _us(2024, 1, 1, 10, 0, 1))]
    assert v["code-value-date"] == [CompositeV((TokenV(LOINC, "1-1"), v["value-date"][0]))]  # as(DateTime) fixed
    v = values({**base, "valuePeriod": {"start": "2024-01-01", "end": "2024-01-31"}})
    assert v["value-date"] == [DateV(_us(2024, 1, 1), _us(2024, 2, 1))]
    v = values({**base, "valueString": "Positive"})
    assert v["value-string"] == [StringV("positive", "Positive")]
    assert v["code-value-string"] == [CompositeV((TokenV(LOINC, "1-1"), StringV("positive", "Positive")))]
    v = values({**base, "valueBoolean": True, "valueRange": {"low": {"value": 1}}})
    assert "value-quantity" not in v  # Range is not a value-quantity option in R4


# ---- other types -----------------------------------------------------------------------------------------------------


def test_appointment() -> None:
    v = values(APPOINTMENT)
    assert v["date"] == [DateV(_us(2024, 6, 3, 7), _us(2024, 6, 3, 7, 0, 1))]
    assert v["actor"] == [ReferenceV("Patient", "p1"), ReferenceV("Practitioner", "dr1"),
                          ReferenceV("Location", "room-4"),
                          ReferenceV(None, None, "urn:uuid:a90ff249-dcc8-4f9d-a176-9817f527872c")]
    # where(resolve() is T) keeps the references to T
    assert v["patient"] == [ReferenceV("Patient", "p1")]
    assert v["practitioner"] == [ReferenceV("Practitioner", "dr1")]
    assert v["location"] == [ReferenceV("Location", "room-4")]
    assert v["part-status"] == [TokenV(None, "accepted"), TokenV(None, "tentative"), TokenV(None, "needs-action")]
    assert v["service-type"] == [TokenV(None, "124", "general practice")]
    assert v["reason-code"] == [TokenV(None, None, "follow-up of blood pressure")]
    assert v["slot"] == [ReferenceV("Slot", "s1")]
    assert v["status"] == [TokenV(None, "booked")]


def test_medication_request() -> None:
    v = values(MEDREQ)
    assert v["code"] == [TokenV("http://www.nlm.nih.gov/research/umls/rxnorm", "310798",
                                "hydrochlorothiazide 25 mg oral tablet")]
    assert "medication" not in v  # (medication as Reference): the medication is a concept here
    assert v["authoredon"] == [DateV(_us(2024, 2, 11, 12, 40), _us(2024, 2, 11, 12, 40, 1))]
    assert v["date"] == [DateV(_us(2024, 2, 12, 8), _us(2024, 2, 12, 8, 0, 1)),
                         DateV(_us(2024, 2, 13, 8), _us(2024, 2, 13, 8, 0, 1))]
    assert v["intended-dispenser"] == v["intended-performer"] == [ReferenceV("Organization", "pharm")]
    assert v["requester"] == [ReferenceV("Practitioner", "dr1")]
    assert v["patient"] == v["subject"] == [ReferenceV("Patient", "p1")]
    assert v["priority"] == [TokenV(None, "urgent")]
    contained = loads((EXAMPLES / "aegis-medicationrequest-dosage.json").read_bytes())
    assert values(contained)["medication"] == [ReferenceV("Medication", None, "#med")]


def test_charge_item() -> None:
    v = values(CHARGE)
    assert v["occurrence"] == [DateV(_us(2024, 3, 1, 9), _us(2024, 3, 1, 9, 30, 1))]
    assert v["factor-override"] == [NumberV(0.8, 0.795, 0.805)]
    assert v["price-override"] == [QuantityV(40.0, 39.995, 40.005, CURRENCY_SYSTEM, "EUR")]
    assert v["quantity"] == [QuantityV(2.0, 1.5, 2.5, None, None)]
    assert v["performer-function"] == [TokenV("http://snomed.info/sct", "17561000")]
    assert v["performer-actor"] == [ReferenceV("Practitioner", "dr1")]
    assert v["service"] == [ReferenceV("Observation", "o-mg"), ReferenceV("Procedure", "pr1")]
    assert v["patient"] == [ReferenceV("Patient", "p1")]
    assert v["entered-date"] == [DateV(_us(2024, 3, 1, 12), _us(2024, 3, 1, 12, 0, 1))]


def test_risk_assessment() -> None:
    v = values(RISK)
    # a decimal with its precision; a Range gives one value per bound
    assert v["probability"] == [NumberV(0.02, 0.015, 0.025), NumberV(5.0, 4.5, 5.5), NumberV(10.0, 9.5, 10.5)]
    assert v["risk"] == [TokenV("http://terminology.hl7.org/CodeSystem/risk-probability", "low")]
    assert v["date"] == [DateV(_us(2024, 1, 15), _us(2024, 1, 16))]
    assert v["method"] == [TokenV("http://example.org/methods", "framingham")]
    assert v["condition"] == [ReferenceV("Condition", "c1")]


def test_imaging_study() -> None:
    v = values(IMAGING)
    assert v["modality"] == [TokenV("http://dicom.nema.org/resources/ontology/DCM", "CT")]
    assert v["bodysite"] == [TokenV("http://snomed.info/sct", "67734004", "upper trunk structure")]
    assert v["series"] == [TokenV(None, "2.16.124.113543.6003.2588828330.45298.17418.2723805630")]
    assert v["instance"] == [TokenV(None, "2.16.124.113543.6003.189642796.63084.16748.2599092903")]
    assert v["dicom-class"] == [TokenV("urn:ietf:rfc:3986", "urn:oid:1.2.840.10008.5.1.4.1.1.2")]
    assert v["endpoint"] == [ReferenceV("Endpoint", "wado"), ReferenceV("Endpoint", "wado-series")]
    assert v["performer"] == [ReferenceV("Practitioner", "tech1")]
    assert v["started"] == [DateV(_us(2017, 1, 1, 8, 1, 20), _us(2017, 1, 1, 8, 1, 21))]
    assert v["identifier"] == [TokenV("urn:dicom:uid",
                                      "urn:oid:2.16.124.113543.6003.1154777499.30246.19789.3503430045")]


def test_condition_ages() -> None:
    v = values(CONDITION)
    (onset,) = v["onset-age"]
    assert (onset.value, onset.code, onset.canon_code) == (52.0, "a", "s")
    assert onset.canon_value == 52 * 365.25 * 86400
    (abatement,) = v["abatement-age"]  # a Range with only a low bound
    assert (abatement.value, abatement.lo, abatement.hi) == (60.0, 59.5, 60.5)
    assert "abatement-date" not in v and "onset-date" not in v
    assert v["recorded-date"] == [DateV(_us(2024, 1, 15), _us(2024, 1, 16))]


def test_encounter() -> None:
    v = values(ENCOUNTER)
    assert v["date"] == [DateV(_us(2024, 3, 1, 9), _us(2024, 3, 1, 9, 30, 1))]
    (length,) = v["length"]
    assert (length.value, length.canon_value, length.canon_code) == (30.0, 1800.0, "s")
    assert v["location-period"] == [DateV(_us(2024, 3, 1, 9), DATE_MAX)]
    assert v["practitioner"] == v["participant"] == [ReferenceV("Practitioner", "dr1")]
    assert v["participant-type"] == [TokenV(None, "ATND")]
    assert v["class"] == [TokenV("http://terminology.hl7.org/CodeSystem/v3-ActCode", "AMB")]


def test_values_are_unique_per_parameter() -> None:
    obs = {"resourceType": "Observation",
           "code": {"coding": [{"system": LOINC, "code": "1-1"}, {"system": LOINC, "code": "1-1"}]},
           "component": [{"code": {"coding": [{"system": LOINC, "code": "1-1"}]}}]}
    assert values(obs)["combo-code"] == [TokenV(LOINC, "1-1")]


def test_uri_and_canonical_parameters() -> None:
    vs = {"resourceType": "ValueSet", "url": "http://example.org/fhir/ValueSet/x", "version": "2.0",
          "compose": {"include": [{"system": "http://loinc.org", "valueSet": ["http://example.org/vs|1"]}]}}
    v = values(vs)
    assert v["url"] == [UriV("http://example.org/fhir/ValueSet/x")]
    assert v["version"] == [TokenV(None, "2.0")]
    assert v["reference"] == [UriV("http://loinc.org")]
    cm = {"resourceType": "ConceptMap", "sourceCanonical": "http://example.org/vs|3", "targetUri": "urn:oid:1.2"}
    v = values(cm)
    # a choice of primitives: sourceCanonical is "source" (reference), never "source-uri"
    assert v["source"] == [ReferenceV(None, None, "http://example.org/vs")]
    assert "source-uri" not in v
    assert v["target-uri"] == [ReferenceV(None, None, "urn:oid:1.2")]


def test_reference_parsing() -> None:
    assert parse_reference("Patient/1") == ("Patient", "1", None)
    assert parse_reference("Patient/1/_history/2") == ("Patient", "1", None)
    assert parse_reference("http://x.org/fhir/Patient/1") == ("Patient", "1", "http://x.org/fhir/Patient/1")
    assert parse_reference("urn:uuid:abc") == (None, None, "urn:uuid:abc")
    assert parse_reference("http://x.org/fhir/ValueSet/v|1.0") == ("ValueSet", "v", "http://x.org/fhir/ValueSet/v")
    assert parse_reference("http://x.org/something") == (None, None, "http://x.org/something")
    assert parse_reference("Unknown/1") == (None, None, "Unknown/1")
    assert parse_reference("123") == (None, "123", None)
    assert parse_reference("#c1") == (None, None, "#c1")
    assert parse_reference("") == (None, None, None)


def test_has_extension_goes_through_fhirpathpy() -> None:
    url = "http://hl7.org/fhir/StructureDefinition/questionnaireresponse-isSubject"
    qr = {"resourceType": "QuestionnaireResponse", "item": [
        {"linkId": "1", "extension": [{"url": url, "valueBoolean": True}],
         "answer": [{"valueReference": {"reference": "Patient/p9"}}]},
        {"linkId": "2", "answer": [{"valueReference": {"reference": "Patient/p8"}}]},
    ]}
    assert values(qr)["item-subject"] == [ReferenceV("Patient", "p9")]
    assert not next(p for p in plan_for("QuestionnaireResponse") if p.code == "item-subject").fast


def test_malformed_values_are_skipped() -> None:
    patient = {"resourceType": "Patient", "birthDate": "2021-02-29", "gender": 5, "name": "not a list",
               "identifier": [{"system": 1, "value": ["x"]}, None, "junk"],
               "telecom": [{"system": "phone"}], "managingOrganization": {"display": "only a display"},
               "meta": {"lastUpdated": "yesterday", "tag": {"code": "x"}}}
    v = values(patient)
    assert "birthdate" not in v and "_lastUpdated" not in v and "telecom" not in v and "organization" not in v
    assert v["deceased"] == [TokenV(None, "false")]
    assert values({"resourceType": "NotAType", "id": "1"}) == {}
    assert values({"id": "1"}) == {}


# ---- _text and _content ----------------------------------------------------------------------------------------------


def test_text_content() -> None:
    obs = loads((EXAMPLES / "aegis-observation-vitals.json").read_bytes())
    narrative, content = text_content(obs)
    assert narrative == "blood pressure 107/60 mmhg, pulse 72.50/min"
    assert "<div" not in content and "xmlns" not in content
    for word in ("blood pressure panel", "systolic", "seated", "right arm", "cuff 3000", "dr. a", narrative):
        assert word in content
    patient = {"resourceType": "Patient", "name": [{"family": "Ñúñez"}],
               "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\"><p>Ana&nbsp;&amp;"
                                                      "<b>José</b></p></div>"}}
    narrative, content = text_content(patient)
    assert narrative == "ana & jose"
    assert "nunez" in content and "patient" not in content.split()
    assert text_content({"resourceType": "Basic"}) == ("", "")
    # the version's stamp is not content
    stamped = {"resourceType": "Basic", "meta": {"versionId": "7", "lastUpdated": "2024-05-01T10:30:00.123Z",
                                                 "source": "urn:src"}}
    assert text_content(stamped) == ("", "urn:src")
    # the same as normalising the concatenation in one go (of everything but the stamp)
    for resource in REPRESENTATIVE:
        parts: list[str] = []
        meta = resource.get("meta")
        unstamped = resource if not isinstance(meta, dict) else \
            {**resource, "meta": {k: v for k, v in meta.items() if k not in ("versionId", "lastUpdated")}}
        _collect_strings(unstamped, parts, top=True)
        assert text_content(resource)[1] == normalize(" ".join(parts))


@given(st.text() | st.text(alphabet=st.characters(max_codepoint=127)))
def test_fast_normalize_is_normalize(text: str) -> None:
    assert fast_normalize(text) == normalize(text)


# ---- the fast path and fhirpathpy agree ------------------------------------------------------------------------------


def _by_param(pairs: list[tuple[str, Value]]) -> dict[str, set[Value]]:
    out: dict[str, set[Value]] = defaultdict(set)
    for code, value in pairs:
        out[code].add(value)
    return dict(out)


def _assert_engines_agree(resource: dict[str, Any]) -> set[str]:
    fast = _by_param(extract(resource))
    slow = _by_param(extract(resource, reference_engine=True))
    assert fast == slow, {k: (fast.get(k), slow.get(k)) for k in set(fast) | set(slow) if fast.get(k) != slow.get(k)}
    return set(fast)


REPRESENTATIVE = [PATIENT, OBS_MG, OBS_G, OBS_CONCEPT, APPOINTMENT, MEDREQ, CHARGE, RISK, IMAGING, CONDITION, ENCOUNTER]


@pytest.mark.parametrize("resource", REPRESENTATIVE, ids=lambda r: f"{r['resourceType']}/{r['id']}")
def test_engines_agree_on_representative_resources(resource: dict[str, Any]) -> None:
    _assert_engines_agree(resource)


def test_engines_agree_on_examples_and_demo_data() -> None:
    for resource in example_resources() + demo_resources():
        _assert_engines_agree(resource)


@pytest.mark.parametrize("rtype", sorted(resource_types()))
def test_engines_agree_on_synthetic_resources(rtype: str) -> None:
    """Every element filled (each choice option in turn, references to several types): the fast path gives exactly
    what fhirpathpy gives, parameter by parameter."""
    seen: set[str] = set()
    for resource in synthetic(rtype):
        seen |= _assert_engines_agree(resource)
    if rtype in FOCUS_TYPES:
        # and for the types search is mostly about, every parameter was exercised with a value
        assert {p.code for p in plan_for(rtype)} <= seen


def test_fast_path_coverage() -> None:
    coverage = fast_path_coverage(FOCUS_TYPES)
    assert all(fast == total for fast, total in coverage.values()), coverage
    everything = fast_path_coverage(sorted(resource_types()))
    slow = sum(total - fast for fast, total in everything.values())
    assert slow <= 6, slow  # Bundle.composition/message, QuestionnaireResponse.item-subject, 2 MolecularSequence


def test_normalised_expressions() -> None:
    assert normalise_expression("(Observation.value as Quantity) | Observation.component.value.as(Quantity)",
                                "Observation") == \
        "(Observation.value.ofType(Quantity)) | Observation.component.value.ofType(Quantity)"
    assert normalise_expression("Resource.meta.lastUpdated", "Patient") == "Patient.meta.lastUpdated"
    assert normalise_expression("value.as(DateTime)", None) == "value.ofType(dateTime)"
    assert compile_path("Patient.name.where(use = 'official').given", "Patient") is not None
    assert compile_path("Bundle.entry[0].resource", "Bundle") is None
    assert compile_path("Patient.name.first()", "Patient") is None


# ---- robustness ------------------------------------------------------------------------------------------------------


def test_never_raises_on_examples_and_demo_data() -> None:
    total = 0
    for resource in example_resources() + demo_resources():
        total += len(extract(resource))
        text_content(resource)
    assert total > 1000


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8)
    | st.decimals(allow_nan=False, allow_infinity=False).map(lambda d: FhirDecimal(str(d))),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=8,
)


def _mutate(value: Any, draw: Any, path_choice: int) -> Any:
    """Replace one node below the root of a JSON tree (chosen by a number) with arbitrary JSON."""
    counter = [path_choice]

    def walk(node: Any) -> Any:
        counter[0] -= 1
        if counter[0] == 0:
            return draw
        if isinstance(node, dict):
            return {k: (v if k == "resourceType" else walk(v)) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return {k: (v if k == "resourceType" else walk(v)) for k, v in value.items()}


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(rtype=st.sampled_from(FOCUS_TYPES), variant=st.integers(0, 11), where=st.integers(1, 400),
       replacement=_json)
def test_never_raises_on_malformed_resources(rtype: str, variant: int, where: int, replacement: Any) -> None:
    resource = _mutate(fill(rtype, variant=variant), replacement, where)
    extract(resource)
    text_content(resource)
