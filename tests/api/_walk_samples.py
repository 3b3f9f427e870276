"""Seed resources for the CapabilityStatement search walk: for each walked type, resources that between them have a
value for (nearly) every declared search parameter, and the search value that must find them.

A sample is ``(resource, {parameter: value})``; a value is either the matching value alone (the walk derives a value
that must *not* match from the parameter's type) or ``(matching, not matching)``. Values are written by hand from
the resource, not derived by any server code, so the walk checks extraction as well as querying.

The common parameters (``_id``, ``_lastUpdated``, ``_tag`` …) are added by the walk itself to the first sample.
"""

from __future__ import annotations

from typing import Any

from tests.api._util import ident, token, uid

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
TEST_CS = "urn:aegis-test:cs"

Values = dict[str, "str | tuple[str, str]"]
Sample = tuple[dict[str, Any], Values]


def cc(code: str, system: str = TEST_CS, text: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"coding": [{"system": system, "code": code}]}
    if text:
        out["text"] = text
    return out


def ref(target: str) -> dict[str, str]:
    return {"reference": target}


def _ident() -> tuple[list[dict[str, str]], str]:
    i = ident()
    return [i], token(i)


def patient() -> list[Sample]:
    ids, tok = _ident()
    phone, email = f"555-{uid()[:8]}", f"{uid()[:10]}@example.org"
    family = "Walkerson" + uid()[:6]
    res = {
        "resourceType": "Patient",
        "identifier": ids,
        "active": True,
        "extension": [{
            "url": "http://hl7.org/fhir/StructureDefinition/patient-extensions-Patient-mothersMaidenName",
            "valueString": "Moriarty",
        }],
        "name": [{"family": family, "given": ["Jonas"]}],
        "telecom": [{"system": "phone", "value": phone}, {"system": "email", "value": email}],
        "gender": "female",
        "birthDate": "1970-03-04",
        "deceasedDateTime": "2020-01-02T10:00:00Z",
        "address": [{"use": "home", "line": ["1 Main St"], "city": "Springfield", "state": "IL",
                     "postalCode": "62701", "country": "USA"}],
        "communication": [{"language": cc("en-US", "urn:ietf:bcp:47")}],
        "generalPractitioner": [ref("Practitioner/walk-gp")],
        "managingOrganization": ref("Organization/walk-org"),
        "link": [{"other": ref("Patient/walk-other"), "type": "seealso"}],
    }
    values: Values = {
        "identifier": tok, "active": ("true", "false"), "address": "springf", "address-city": "Springfield",
        "address-country": "usa", "address-postalcode": "62701", "address-state": "IL", "address-use": "home",
        "birthdate": ("1970-03-04", "1970-03-05"), "death-date": "2020-01-02", "deceased": ("true", "false"),
        "email": email, "family": family.lower(), "gender": ("female", "male"),
        "general-practitioner": "Practitioner/walk-gp", "given": "jon", "language": "urn:ietf:bcp:47|en-US",
        "link": "Patient/walk-other", "mothersMaidenName": "Moriarty", "name": family, "organization": "walk-org",
        "phone": phone, "phonetic": family, "telecom": phone,
    }
    return [(res, values)]


def observation() -> list[Sample]:
    genetics = "http://hl7.org/fhir/StructureDefinition/observation-genetics"
    ids, tok = _ident()
    a = {
        "resourceType": "Observation",
        "identifier": ids,
        "extension": [
            {"url": genetics + "Gene", "valueCodeableConcept": cc("HGNC:11389", "http://www.genenames.org")},
            {"url": genetics + "AminoAcidChangeName", "valueString": "p.Glu6Val"},
            {"url": genetics + "DnaVariant", "valueString": "c.20A>T"},
        ],
        "status": "final",
        "category": [cc("vital-signs", "http://terminology.hl7.org/CodeSystem/observation-category")],
        "code": {"coding": [{"system": LOINC, "code": "85354-9"}], "text": "Blood pressure panel"},
        "subject": ref("Patient/walk-pat"),
        "focus": [ref("Condition/walk-cond")],
        "encounter": ref("Encounter/walk-enc"),
        "effectiveDateTime": "2021-05-06T07:08:09Z",
        "performer": [ref("Practitioner/walk-prac")],
        "valueQuantity": {"value": 120, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"},
        "method": cc("auscultation"),
        "specimen": ref("Specimen/walk-spec"),
        "device": ref("Device/walk-dev"),
        "basedOn": [ref("ServiceRequest/walk-sr")],
        "partOf": [ref("Procedure/walk-proc")],
        "hasMember": [ref("Observation/walk-member")],
        "derivedFrom": [ref("Observation/walk-source")],
        "component": [
            {"code": cc("8480-6", LOINC), "valueQuantity": {"value": 118, "unit": "mmHg", "system": UCUM,
                                                             "code": "mm[Hg]"}},
            {"code": cc("8462-4", LOINC), "valueCodeableConcept": cc("high")},
            {"code": cc("9999-1", LOINC), "dataAbsentReason": cc(
                "unknown", "http://terminology.hl7.org/CodeSystem/data-absent-reason")},
        ],
    }
    a_values: Values = {
        "identifier": tok, "status": ("final", "preliminary"),
        "category": "http://terminology.hl7.org/CodeSystem/observation-category|vital-signs",
        "code": (f"{LOINC}|85354-9", f"{LOINC}|8480-6"), "combo-code": f"{LOINC}|8480-6",
        "component-code": (f"{LOINC}|8480-6", f"{LOINC}|85354-9"),
        "subject": "Patient/walk-pat", "patient": "walk-pat", "focus": "Condition/walk-cond",
        "encounter": "Encounter/walk-enc", "date": ("2021-05-06", "2021-05-07"),
        "performer": "Practitioner/walk-prac", "value-quantity": (f"120|{UCUM}|mm[Hg]", f"118|{UCUM}|mm[Hg]"),
        "combo-value-quantity": "118", "component-value-quantity": ("gt117", "gt118"),
        "method": "auscultation", "specimen": "walk-spec", "device": "Device/walk-dev",
        "based-on": "ServiceRequest/walk-sr", "part-of": "Procedure/walk-proc", "has-member": "walk-member",
        "derived-from": "Observation/walk-source",
        "code-value-quantity": (f"{LOINC}|85354-9$120", f"{LOINC}|85354-9$118"),
        "component-code-value-quantity": (f"{LOINC}|8480-6$118|{UCUM}|mm[Hg]", f"{LOINC}|8480-6$120"),
        "combo-code-value-quantity": (f"{LOINC}|8480-6$118", f"{LOINC}|8462-4$118"),
        "component-value-concept": f"{TEST_CS}|high", "combo-value-concept": "high",
        "component-code-value-concept": (f"{LOINC}|8462-4${TEST_CS}|high", f"{LOINC}|8480-6${TEST_CS}|high"),
        "combo-code-value-concept": ("8462-4$high", "8480-6$high"),
        "component-data-absent-reason": "unknown", "combo-data-absent-reason": "unknown",
        "gene-identifier": "http://www.genenames.org|HGNC:11389",
        "amino-acid-change": "p.Glu6", "gene-amino-acid-change": "p.glu6val",
        "dna-variant": "c.20A>T", "gene-dnavariant": "c.20a",
    }
    absent = {
        "resourceType": "Observation", "status": "final", "code": cc("2339-0", LOINC),
        "dataAbsentReason": cc("asked-declined", "http://terminology.hl7.org/CodeSystem/data-absent-reason"),
    }
    concept = {
        "resourceType": "Observation", "status": "final", "code": cc("2339-1", LOINC),
        "valueCodeableConcept": cc("positive", TEST_CS, "Positive finding"),
    }
    dated = {
        "resourceType": "Observation", "status": "final", "code": cc("2339-2", LOINC),
        "valueDateTime": "2019-02-03",
    }
    string = {
        "resourceType": "Observation", "status": "final", "code": cc("2339-3", LOINC),
        "valueString": "trace amounts",
    }
    return [
        (a, a_values),
        (absent, {"data-absent-reason": "asked-declined"}),
        (concept, {"value-concept": f"{TEST_CS}|positive", "value-string": ("positive f", "finding"),
                   "code-value-concept": (f"{LOINC}|2339-1$positive", f"{LOINC}|2339-2$positive")}),
        (dated, {"value-date": ("2019-02", "2019-03"), "code-value-date": ("2339-2$2019", "2339-2$2018")}),
        (string, {"value-string": "trace", "code-value-string": ("2339-3$trace am", "2339-3$amounts")}),
    ]


def appointment() -> list[Sample]:
    ids, tok = _ident()
    res = {
        "resourceType": "Appointment",
        "identifier": ids,
        "status": "booked",
        "serviceCategory": [cc("gp")],
        "serviceType": [cc("consult")],
        "specialty": [cc("394814009", SNOMED)],
        "appointmentType": cc("ROUTINE", "http://terminology.hl7.org/CodeSystem/v2-0276"),
        "reasonCode": [cc("checkup")],
        "reasonReference": [ref("Condition/walk-cond")],
        "supportingInformation": [ref("Observation/walk-obs")],
        "start": "2022-03-04T09:00:00Z",
        "end": "2022-03-04T09:30:00Z",
        "slot": [ref("Slot/walk-slot")],
        "basedOn": [ref("ServiceRequest/walk-sr")],
        "participant": [
            {"actor": ref("Patient/walk-pat"), "status": "accepted"},
            {"actor": ref("Practitioner/walk-prac"), "status": "accepted"},
            {"actor": ref("Location/walk-loc"), "status": "tentative"},
        ],
    }
    values: Values = {
        "identifier": tok, "status": ("booked", "cancelled"), "service-category": "gp", "service-type": "consult",
        "specialty": f"{SNOMED}|394814009", "appointment-type": "ROUTINE", "reason-code": "checkup",
        "reason-reference": "Condition/walk-cond", "supporting-info": "Observation/walk-obs",
        "date": ("2022-03-04", "2022-03-05"), "slot": "walk-slot", "based-on": "ServiceRequest/walk-sr",
        "actor": "Location/walk-loc", "patient": "walk-pat", "practitioner": "Practitioner/walk-prac",
        "location": "walk-loc", "part-status": ("tentative", "declined"),
    }
    return [(res, values)]


def medication_request() -> list[Sample]:
    ids, tok = _ident()
    res = {
        "resourceType": "MedicationRequest",
        "identifier": ids,
        "status": "active",
        "intent": "order",
        "priority": "urgent",
        "category": [cc("outpatient", "http://terminology.hl7.org/CodeSystem/medicationrequest-category")],
        "medicationCodeableConcept": cc("1049502", "http://www.nlm.nih.gov/research/umls/rxnorm"),
        "subject": ref("Patient/walk-pat"),
        "encounter": ref("Encounter/walk-enc"),
        "authoredOn": "2021-02-03T04:05:06Z",
        "requester": ref("Practitioner/walk-prac"),
        "performer": ref("Organization/walk-org"),
        "performerType": cc("pharmacist"),
        "dosageInstruction": [{"timing": {"event": ["2021-02-04T08:00:00Z"]}}],
        "dispenseRequest": {"performer": ref("Organization/walk-pharmacy")},
    }
    values: Values = {
        "identifier": tok, "status": ("active", "stopped"), "intent": ("order", "plan"),
        "priority": ("urgent", "routine"), "category": "outpatient",
        "code": "http://www.nlm.nih.gov/research/umls/rxnorm|1049502", "subject": "Patient/walk-pat",
        "patient": "walk-pat", "encounter": "walk-enc", "authoredon": ("2021-02-03", "2021-02-04"),
        "requester": "Practitioner/walk-prac", "intended-performer": "Organization/walk-org",
        "intended-performertype": "pharmacist", "date": ("2021-02-04", "2021-02-03"),
        "intended-dispenser": "walk-pharmacy",
    }
    by_ref = {
        "resourceType": "MedicationRequest", "status": "active", "intent": "order",
        "medicationReference": ref("Medication/walk-med"), "subject": ref("Patient/walk-pat"),
    }
    return [(res, values), (by_ref, {"medication": "walk-med"})]


def charge_item() -> list[Sample]:
    ids, tok = _ident()
    res = {
        "resourceType": "ChargeItem",
        "identifier": ids,
        "status": "billable",
        "code": cc("01510"),
        "subject": ref("Patient/walk-pat"),
        "context": ref("Encounter/walk-enc"),
        "occurrenceDateTime": "2020-07-08T10:00:00Z",
        "performer": [{"function": cc("17561000", SNOMED), "actor": ref("Practitioner/walk-prac")}],
        "performingOrganization": ref("Organization/walk-perf"),
        "requestingOrganization": ref("Organization/walk-req"),
        "quantity": {"value": 2},
        "factorOverride": 0.8,
        "priceOverride": {"value": 40, "currency": "EUR"},
        "enterer": ref("Practitioner/walk-enterer"),
        "enteredDate": "2020-07-09T11:00:00Z",
        "account": [ref("Account/walk-acct")],
        "service": [ref("Procedure/walk-proc")],
    }
    values: Values = {
        "identifier": tok, "code": "01510", "subject": "Patient/walk-pat", "patient": "walk-pat",
        "context": "Encounter/walk-enc", "occurrence": ("2020-07-08", "2020-07-07"),
        "performer-function": f"{SNOMED}|17561000", "performer-actor": "Practitioner/walk-prac",
        "performing-organization": "walk-perf", "requesting-organization": "Organization/walk-req",
        "quantity": ("2", "3"), "factor-override": ("0.8", "0.9"),
        "price-override": ("40|urn:iso:std:iso:4217|EUR", "40|urn:iso:std:iso:4217|USD"),
        "enterer": "Practitioner/walk-enterer", "entered-date": ("ge2020-07-09", "lt2020-07-09"),
        "account": "walk-acct", "service": "Procedure/walk-proc",
    }
    return [(res, values)]


def risk_assessment() -> list[Sample]:
    ids, tok = _ident()
    res = {
        "resourceType": "RiskAssessment",
        "identifier": ids,
        "status": "final",
        "method": cc("gail"),
        "subject": ref("Patient/walk-pat"),
        "encounter": ref("Encounter/walk-enc"),
        "occurrenceDateTime": "2018-09-10T11:12:13Z",
        "condition": ref("Condition/walk-cond"),
        "performer": ref("Practitioner/walk-prac"),
        "prediction": [{
            "outcome": cc("death"),
            "probabilityDecimal": 0.25,
            "qualitativeRisk": cc("moderate", "http://terminology.hl7.org/CodeSystem/risk-probability"),
        }],
    }
    values: Values = {
        "identifier": tok, "method": "gail", "subject": "Patient/walk-pat", "patient": "walk-pat",
        "encounter": "Encounter/walk-enc", "date": ("2018-09-10", "2018-09-11"), "condition": "walk-cond",
        "performer": "Practitioner/walk-prac", "probability": ("0.25", "0.35"),
        "risk": ("http://terminology.hl7.org/CodeSystem/risk-probability|moderate", "high"),
    }
    return [(res, values)]


def imaging_study() -> list[Sample]:
    ids, tok = _ident()
    series_uid, instance_uid = f"1.2.840.{int(uid()[:8], 16)}", f"1.2.840.{int(uid()[:8], 16)}.1"
    res = {
        "resourceType": "ImagingStudy",
        "identifier": ids,
        "status": "available",
        "subject": ref("Patient/walk-pat"),
        "encounter": ref("Encounter/walk-enc"),
        "started": "2017-01-02T03:04:05Z",
        "basedOn": [ref("ServiceRequest/walk-sr")],
        "referrer": ref("Practitioner/walk-referrer"),
        "interpreter": [ref("Practitioner/walk-interp")],
        "endpoint": [ref("Endpoint/walk-ep")],
        "reasonCode": [cc("headache")],
        "series": [{
            "uid": series_uid,
            "modality": {"system": DCM, "code": "CT"},
            "bodySite": {"system": SNOMED, "code": "69536005"},
            "endpoint": [ref("Endpoint/walk-series-ep")],
            "performer": [{"actor": ref("Practitioner/walk-tech")}],
            "instance": [{"uid": instance_uid,
                          "sopClass": {"system": "urn:ietf:rfc:3986", "code": "urn:oid:1.2.840.10008.5.1.4.1.1.2"}}],
        }],
    }
    values: Values = {
        "identifier": tok, "status": ("available", "cancelled"), "subject": "Patient/walk-pat",
        "patient": "walk-pat", "encounter": "walk-enc", "started": ("2017-01-02", "2017-01-03"),
        "basedon": "ServiceRequest/walk-sr", "referrer": "walk-referrer", "interpreter": "Practitioner/walk-interp",
        "endpoint": "walk-series-ep", "reason": "headache",
        "modality": (f"{DCM}|CT", f"{DCM}|MR"),
        "bodysite": f"{SNOMED}|69536005", "performer": "Practitioner/walk-tech", "series": series_uid,
        "instance": instance_uid, "dicom-class": "urn:ietf:rfc:3986|urn:oid:1.2.840.10008.5.1.4.1.1.2",
    }
    return [(res, values)]


def encounter() -> list[Sample]:
    ids, tok = _ident()
    res = {
        "resourceType": "Encounter",
        "identifier": ids,
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "type": [cc("checkup")],
        "subject": ref("Patient/walk-pat"),
        "episodeOfCare": [ref("EpisodeOfCare/walk-eoc")],
        "basedOn": [ref("ServiceRequest/walk-sr")],
        "participant": [{"type": [cc("ATND", "http://terminology.hl7.org/CodeSystem/v3-ParticipationType")],
                         "individual": ref("Practitioner/walk-prac")}],
        "appointment": [ref("Appointment/walk-appt")],
        "period": {"start": "2016-04-05T08:00:00Z", "end": "2016-04-05T09:00:00Z"},
        "length": {"value": 60, "unit": "min", "system": UCUM, "code": "min"},
        "reasonCode": [cc("fever")],
        "reasonReference": [ref("Condition/walk-cond")],
        "diagnosis": [{"condition": ref("Condition/walk-diag")}],
        "account": [ref("Account/walk-acct")],
        "hospitalization": {"specialArrangement": [cc("wheel")]},
        "location": [{"location": ref("Location/walk-loc"),
                      "period": {"start": "2016-04-05T08:10:00Z", "end": "2016-04-05T08:50:00Z"}}],
        "serviceProvider": ref("Organization/walk-org"),
        "partOf": ref("Encounter/walk-parent"),
    }
    values: Values = {
        "identifier": tok, "status": ("finished", "planned"), "class": "AMB", "type": "checkup",
        "subject": "Patient/walk-pat", "patient": "walk-pat", "episode-of-care": "walk-eoc",
        "based-on": "ServiceRequest/walk-sr", "participant": "Practitioner/walk-prac",
        "practitioner": "walk-prac", "participant-type": "ATND", "appointment": "walk-appt",
        "date": ("2016-04-05", "2016-04-06"), "length": (f"1|{UCUM}|h", f"2|{UCUM}|h"), "reason-code": "fever",
        "reason-reference": "Condition/walk-cond", "diagnosis": "Condition/walk-diag", "account": "walk-acct",
        "special-arrangement": "wheel", "location": "walk-loc",
        "location-period": ("2016-04-05", "2016-04-04"), "service-provider": "walk-org", "part-of": "walk-parent",
    }
    return [(res, values)]


def condition() -> list[Sample]:
    ids, tok = _ident()
    clinical = "http://terminology.hl7.org/CodeSystem/condition-clinical"
    res = {
        "resourceType": "Condition",
        "identifier": ids,
        "clinicalStatus": cc("resolved", clinical),
        "verificationStatus": cc("confirmed", "http://terminology.hl7.org/CodeSystem/condition-ver-status"),
        "category": [cc("problem-list-item", "http://terminology.hl7.org/CodeSystem/condition-category")],
        "severity": cc("24484000", SNOMED),
        "code": cc("386661006", SNOMED, "Fever"),
        "bodySite": [cc("38266002", SNOMED)],
        "subject": ref("Patient/walk-pat"),
        "encounter": ref("Encounter/walk-enc"),
        "onsetDateTime": "2015-06-07",
        "abatementDateTime": "2015-06-20",
        "recordedDate": "2015-06-08T10:00:00Z",
        "asserter": ref("Practitioner/walk-prac"),
        "stage": [{"summary": cc("stage-2")}],
        "evidence": [{"code": [cc("258710007", SNOMED)], "detail": [ref("Observation/walk-obs")]}],
    }
    values: Values = {
        "identifier": tok, "clinical-status": (f"{clinical}|resolved", f"{clinical}|active"),
        "verification-status": "confirmed", "category": "problem-list-item", "severity": f"{SNOMED}|24484000",
        "code": (f"{SNOMED}|386661006", f"{SNOMED}|386661007"), "body-site": "38266002",
        "subject": "Patient/walk-pat", "patient": "walk-pat", "encounter": "walk-enc",
        "onset-date": ("2015-06-07", "2015-06-08"), "abatement-date": ("le2015-06-20", "lt2015-06-20"),
        "recorded-date": ("2015-06-08", "2015-06-07"), "asserter": "Practitioner/walk-prac", "stage": "stage-2",
        "evidence": "258710007", "evidence-detail": "Observation/walk-obs",
    }
    ages = {
        "resourceType": "Condition", "subject": ref("Patient/walk-pat"), "code": cc("73211009", SNOMED),
        "clinicalStatus": cc("remission", clinical),
        "onsetAge": {"value": 40, "unit": "years", "system": UCUM, "code": "a"},
        "abatementAge": {"value": 45, "unit": "years", "system": UCUM, "code": "a"},
    }
    texts = {
        "resourceType": "Condition", "subject": ref("Patient/walk-pat"), "code": cc("73211009", SNOMED),
        "clinicalStatus": cc("resolved", clinical),
        "onsetString": "early childhood", "abatementString": "adolescence",
    }
    return [
        (res, values),
        (ages, {"onset-age": (f"40|{UCUM}|a", f"41|{UCUM}|a"), "abatement-age": ("gt44", "gt45")}),
        (texts, {"onset-info": ("early", "childhood"), "abatement-string": "adoles"}),
    ]


SAMPLES = {
    "Patient": patient,
    "Observation": observation,
    "Appointment": appointment,
    "MedicationRequest": medication_request,
    "ChargeItem": charge_item,
    "RiskAssessment": risk_assessment,
    "ImagingStudy": imaging_study,
    "Encounter": encounter,
    "Condition": condition,
}

# declared parameters no resource can practically have a value for (the walk still runs them: 200, a searchset).
# None at present: R4's example ``part-agree`` (based on Patient, but its expression reads DocumentReference) is
# no longer declared, since nothing can ever match it.
IMPRACTICAL: set[tuple[str, str]] = set()
