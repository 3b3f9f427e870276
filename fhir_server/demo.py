"""Seeded, reproducible synthetic demo data: one FHIR R4 transaction Bundle per patient.

This module owns the demo data set that ``aegis`` can load into an empty server (and that tests and benchmarks use as
realistic payloads). Everything is made up: names, identifiers and addresses come from small built-in lists, phone
numbers and e-mail addresses use reserved ranges (``555`` numbers, ``example.org``), and every resource carries the
tag ``https://aegis-fhir.org/demo|demo`` so a server operator can find and purge it with ``_tag``.

Shape of the data set (``demo_bundles(patients, seed)`` yields one Bundle per patient):

* The first Bundle also creates one shared ``Practitioner`` and one shared ``Organization`` with **PUT and fixed ids**
  (``Practitioner/aegis-demo-practitioner``, ``Organization/aegis-demo-organization``). Fixed ids let every later
  Bundle refer to them with a plain relative reference, and PUT makes reloading the demo (any seed) update them
  instead of piling up duplicates. Their content does not depend on the seed for the same reason. A server that
  refuses update-as-create can load ``demo_bundles(..., shared=False)``, which leaves them (and all references to
  them) out.
* Everything that belongs to the patient is created with **POST and ``urn:uuid:`` fullUrls**, referring to each other
  through those URNs: this exercises server-assigned ids and the reference rewriting a transaction must do, and lets
  the same data set be loaded any number of times side by side.
* Per patient: the Patient (MRN under ``https://aegis-fhir.org/demo/mrn``), three to six past visits, each with a
  fulfilled Appointment, vital signs (a blood-pressure panel with systolic/diastolic components, heart rate,
  respiratory rate, temperature, SpO2, weight, and BMI derived from weight and the first visit's height) and an
  office-visit ChargeItem; laboratory results with reference ranges and their ChargeItems at some visits; one booked
  future Appointment; one to four active MedicationRequests (RxNorm) that follow the patient's simulated conditions.

Reproducibility: output depends only on ``(seed, patient index)``. Each patient has its own ``random.Random`` seeded
with the string ``"{seed}/{index}"`` (string seeds are hashed with SHA-512, so this is stable across processes and
``PYTHONHASHSEED``), which also makes ``demo_bundles(5, s)`` exactly the first five Bundles of ``demo_bundles(20, s)``.
"Today" is the fixed :data:`ANCHOR`, never the clock. Measured values with a fraction are :class:`decimal.Decimal`
with the precision a device would report (``72.50`` kg stays ``72.50``); serialise with :func:`resources.jsonio.dumps`.

Run ``python -m fhir_server.demo --patients 20 --seed 42`` to write the Bundles as NDJSON (one per line) to stdout.
"""

from __future__ import annotations

import argparse
import random
import sys
import unicodedata
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

Resource = dict[str, Any]

MRN_SYSTEM = "https://aegis-fhir.org/demo/mrn"
DEMO_TAG: dict[str, str] = {
    "system": "https://aegis-fhir.org/demo",
    "code": "demo",
    "display": "Aegis synthetic demo data",
}
PRACTITIONER_ID = "aegis-demo-practitioner"
ORGANIZATION_ID = "aegis-demo-organization"
PRACTITIONER_REF = f"Practitioner/{PRACTITIONER_ID}"
ORGANIZATION_REF = f"Organization/{ORGANIZATION_ID}"

# The data set's "today": visits lie in the two years before it, booked appointments after it. Fixed so that the
# output never depends on when it is generated.
ANCHOR = datetime(2024, 6, 28, 12, 0, tzinfo=timezone.utc)

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
SNOMED = "http://snomed.info/sct"
CPT = "http://www.ama-assn.org/go/cpt"
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
APPOINTMENT_TYPE = "http://terminology.hl7.org/CodeSystem/v2-0276"


# --------------------------------------------------------------------------------------------------------------------
# Vocabulary
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _City:
    name: str
    state: str | None
    postal: str  # template, '#' is a random digit
    country: str
    utc_offset_minutes: int  # standard time; the demo ignores DST so offsets stay predictable
    phone_prefix: str
    streets: tuple[str, ...]


# Offsets deliberately include a negative, a zero, a positive and a half-hour one so that date search and
# normalisation to UTC get exercised.
_CITIES: tuple[_City, ...] = (
    _City("Boston", "MA", "021##", "US", -300, "+1 617 555", ("Beacon Street", "Tremont Street", "Elm Road")),
    _City("Chicago", "IL", "606##", "US", -360, "+1 312 555", ("Lake Shore Drive", "Halsted Street")),
    _City("Denver", "CO", "802##", "US", -420, "+1 303 555", ("Colfax Avenue", "Larimer Street")),
    _City("Seattle", "WA", "981##", "US", -480, "+1 206 555", ("Pine Street", "Westlake Avenue")),
    _City("Zürich", None, "80##", "CH", 60, "+41 44 555", ("Bahnhofstrasse", "Seefeldstrasse")),
    _City("Lyon", None, "6900#", "FR", 60, "+33 4 55", ("Rue de la République", "Quai Saint-Antoine")),
    _City("Lisboa", None, "1###-###", "PT", 0, "+351 21 555", ("Rua Augusta", "Avenida da Liberdade")),
    _City("Helsinki", None, "00###", "FI", 120, "+358 9 555", ("Mannerheimintie", "Aleksanterinkatu")),
    _City("Kolkata", "WB", "700###", "IN", 330, "+91 33 555", ("Park Street", "Camac Street")),
)

_GIVEN_FEMALE = ("Amelia", "Zoë", "Fatima", "Ingrid", "Léa", "Mei", "Olivia", "Priya", "Sofía", "Hannah", "Aisha")
_GIVEN_MALE = ("Liam", "Mateo", "Noah", "Jonas", "Kenji", "Arjun", "Olivier", "Samuel", "Tomás", "Elias", "Omar")
_FAMILY = (
    "Smith", "García", "Müller", "Nguyen", "O'Brien", "Kowalski", "Rossi", "Virtanen", "Sharma", "Silva",
    "Dubois", "Okafor", "Tanaka", "Andersson", "Cohen", "Núñez",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class _Lab:
    loinc: str
    display: str
    ucum: str  # also used as the human-readable unit: lab reports print UCUM as is
    places: int  # digits after the decimal point the analyser reports; 0 means an integer
    low: float
    high: float
    cpt: str  # which billable panel the result belongs to


_LABS: dict[str, _Lab] = {
    "glucose": _Lab("2339-0", "Glucose [Mass/volume] in Blood", "mg/dL", 0, 70, 99, "80048"),
    "creatinine": _Lab("2160-0", "Creatinine [Mass/volume] in Serum or Plasma", "mg/dL", 2, 0.6, 1.2, "80048"),
    "hba1c": _Lab("4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", "%", 1, 4.0, 5.6, "83036"),
    "cholesterol": _Lab("2093-3", "Cholesterol [Mass/volume] in Serum or Plasma", "mg/dL", 0, 125, 200, "80061"),
    "triglyceride": _Lab("2571-8", "Triglyceride [Mass/volume] in Serum or Plasma", "mg/dL", 0, 40, 150, "80061"),
    "hdl": _Lab("2085-9", "Cholesterol in HDL [Mass/volume] in Serum or Plasma", "mg/dL", 0, 40, 90, "80061"),
    "hemoglobin": _Lab("718-7", "Hemoglobin [Mass/volume] in Blood", "g/dL", 1, 12.0, 17.5, "85025"),
    "leukocytes": _Lab("6690-2", "Leukocytes [#/volume] in Blood by Automated count", "10*3/uL", 1, 4.0, 11.0, "85025"),
}

# CPT codes are referenced by number only with our own wording: the AMA's descriptors are licensed text.
_CPT_TEXT: dict[str, str] = {
    "99213": "Office visit, established patient, low complexity",
    "99214": "Office visit, established patient, moderate complexity",
    "80048": "Basic metabolic panel",
    "80061": "Lipid panel",
    "83036": "Hemoglobin A1c",
    "85025": "Complete blood count with differential",
}
# Demo list prices in US dollars (the one demo clinic bills in USD); there so ChargeItems carry Money decimals.
_CPT_PRICE: dict[str, Decimal] = {
    "99213": Decimal("92.50"),
    "99214": Decimal("131.00"),
    "80048": Decimal("14.40"),
    "80061": Decimal("18.20"),
    "83036": Decimal("13.30"),
    "85025": Decimal("10.70"),
}


@dataclass(frozen=True, slots=True)
class _Drug:
    rxnorm: str
    display: str
    per_day: int
    text: str


_DRUGS: dict[str, _Drug] = {
    "lisinopril": _Drug("314076", "lisinopril 10 MG Oral Tablet", 1, "Take 1 tablet by mouth once daily"),
    "amlodipine": _Drug("197361", "amlodipine 5 MG Oral Tablet", 1, "Take 1 tablet by mouth once daily"),
    "hctz": _Drug("310798", "hydrochlorothiazide 25 MG Oral Tablet", 1, "Take 1 tablet by mouth every morning"),
    "metformin": _Drug(
        "860975",
        "24 HR metformin hydrochloride 500 MG Extended Release Oral Tablet",
        2,
        "Take 1 tablet by mouth twice daily with meals",
    ),
    "atorvastatin": _Drug(
        "259255", "atorvastatin 80 MG Oral Tablet", 1, "Take 1 tablet by mouth once daily at bedtime"
    ),
    "aspirin": _Drug("243670", "aspirin 81 MG Oral Tablet", 1, "Take 1 tablet by mouth once daily"),
    "acetaminophen": _Drug(
        "313782",
        "acetaminophen 325 MG Oral Tablet",
        4,
        "Take 1 tablet by mouth up to four times daily as needed for pain",
    ),
}


# --------------------------------------------------------------------------------------------------------------------
# Small builders
# --------------------------------------------------------------------------------------------------------------------


def _meta() -> Resource:
    # A fresh dict each time: callers may mutate a resource (e.g. a server adding meta.versionId) and must not
    # change other resources through a shared object.
    return {"tag": [dict(DEMO_TAG)]}


def _coding(system: str, code: str, display: str) -> Resource:
    return {"system": system, "code": code, "display": display}


def _concept(system: str, code: str, display: str, text: str | None = None) -> Resource:
    return {"coding": [_coding(system, code, display)], "text": text or display}


def _quantity(value: int | Decimal, unit: str, ucum: str) -> Resource:
    return {"value": value, "unit": unit, "system": UCUM, "code": ucum}


def _decimal(value: float, places: int) -> int | Decimal:
    """Round like an instrument would and keep trailing zeros (72.5 at 2 places is ``Decimal('72.50')``)."""
    scaled = int(Decimal(repr(value)).scaleb(places).quantize(Decimal(1), rounding=ROUND_HALF_UP))
    return scaled if places == 0 else Decimal(scaled).scaleb(-places)


def _fhir_datetime(moment: datetime) -> str:
    # isoformat() gives "+00:00" for UTC rather than "Z"; both are valid FHIR, and a numeric offset everywhere keeps
    # the output uniform.
    return moment.isoformat(timespec="seconds")


def _ascii(text: str) -> str:
    """Fold to ASCII for e-mail local parts (Zoë Núñez -> zoe.nunez)."""
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return "".join(ch for ch in folded.lower() if ch.isalnum())


def _fill_digits(rng: random.Random, template: str) -> str:
    return "".join(str(rng.randrange(10)) if ch == "#" else ch for ch in template)


class _Entries:
    """Accumulates Bundle entries; hands out the ``urn:uuid:`` each POSTed resource is known by inside the Bundle."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self.items: list[Resource] = []

    def post(self, resource: Resource) -> str:
        # uuid4 layout built from the seeded generator, so the URNs are as reproducible as the rest.
        urn = f"urn:uuid:{uuid.UUID(int=self._rng.getrandbits(128), version=4)}"
        self.items.append(
            {"fullUrl": urn, "resource": resource, "request": {"method": "POST", "url": resource["resourceType"]}}
        )
        return urn

    def put(self, resource: Resource) -> None:
        # No fullUrl: the entry is identified by request.url and everything refers to it by that relative reference.
        url = f"{resource['resourceType']}/{resource['id']}"
        self.items.append({"resource": resource, "request": {"method": "PUT", "url": url}})


# --------------------------------------------------------------------------------------------------------------------
# Shared resources
# --------------------------------------------------------------------------------------------------------------------


def shared_resources() -> list[Resource]:
    """The Organization and Practitioner every patient refers to; identical for every seed."""
    organization: Resource = {
        "resourceType": "Organization",
        "id": ORGANIZATION_ID,
        "meta": _meta(),
        "identifier": [{"system": "https://aegis-fhir.org/demo/organization", "value": "AEGIS-DEMO-CLINIC"}],
        "active": True,
        "type": [_concept("http://terminology.hl7.org/CodeSystem/organization-type", "prov", "Healthcare Provider")],
        "name": "Aegis Demo Clinic",
        "telecom": [
            {"system": "phone", "value": "+1 617 555 0100", "use": "work"},
            {"system": "email", "value": "clinic@example.org", "use": "work"},
        ],
        "address": [
            {
                "use": "work",
                "line": ["1 Demo Plaza"],
                "city": "Boston",
                "state": "MA",
                "postalCode": "02110",
                "country": "US",
            }
        ],
    }
    practitioner: Resource = {
        "resourceType": "Practitioner",
        "id": PRACTITIONER_ID,
        "meta": _meta(),
        "identifier": [{"system": "https://aegis-fhir.org/demo/practitioner", "value": "DEMO-PR-0001"}],
        "active": True,
        "name": [{"use": "official", "family": "Demo", "given": ["Grace"], "prefix": ["Dr."]}],
        "telecom": [{"system": "email", "value": "grace.demo@example.org", "use": "work"}],
        "gender": "female",
        "qualification": [
            {"code": _concept("http://terminology.hl7.org/CodeSystem/v2-0360", "MD", "Doctor of Medicine", "MD")}
        ],
    }
    return [organization, practitioner]


# --------------------------------------------------------------------------------------------------------------------
# One patient
# --------------------------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Profile:
    """Hidden state that keeps a patient's numbers plausible and consistent from visit to visit."""

    gender: str
    height_cm: float
    weight_kg: float
    systolic: float
    diastolic: float
    hypertension: bool
    diabetes: bool
    dyslipidemia: bool


class _PatientBuilder:
    def __init__(self, seed: int, index: int, shared: bool) -> None:
        self.rng = random.Random(f"{seed}/{index}")
        self.seed = seed
        self.index = index
        self.shared = shared
        self.entries = _Entries(self.rng)
        self.city = self.rng.choice(_CITIES)
        self.tz = timezone(timedelta(minutes=self.city.utc_offset_minutes))
        self.patient_urn = ""
        self.patient_display = ""

    # -- references ---------------------------------------------------------------------------------------------------

    def _patient_ref(self) -> Resource:
        return {"reference": self.patient_urn, "display": self.patient_display}

    def _performer(self) -> list[Resource]:
        return [{"reference": PRACTITIONER_REF, "display": "Dr. Grace Demo"}] if self.shared else []

    def _with_optional(self, resource: Resource, **optional: Any) -> Resource:
        # FHIR forbids empty arrays/objects (ele-1), so optional references are left out rather than emitted empty.
        resource.update({key: value for key, value in optional.items() if value})
        return resource

    # -- the patient --------------------------------------------------------------------------------------------------

    def build(self) -> list[Resource]:
        profile = self._profile()
        self.patient_urn = self.entries.post(self._patient(profile))
        visits = self._visit_times()
        height_urn = ""
        lab_done = False
        for number, when in enumerate(visits):
            self._appointment(when, "fulfilled", follow_up=number > 0)
            height_urn = self._vitals(profile, when, height_urn)
            # Labs at random visits, forced at the last one if none yet, so every patient has laboratory results.
            if (number == len(visits) - 1 and not lab_done) or self.rng.random() < 0.4:
                self._labs(profile, when)
                lab_done = True
            self._charge("99214" if profile.hypertension or profile.diabetes else "99213", when, [])
            self._drift(profile)
        self._appointment(self._future_visit(), "booked", follow_up=True)
        self._medications(profile, visits)
        return self.entries.items

    def _profile(self) -> _Profile:
        rng = self.rng
        gender = rng.choices(("female", "male", "other", "unknown"), weights=(48, 48, 2, 2))[0]
        tall = gender == "male"
        height = rng.gauss(176.0 if tall else 163.0, 7.0)
        bmi = min(max(rng.gauss(27.0, 4.5), 18.0), 42.0)
        hypertension = rng.random() < 0.4
        return _Profile(
            gender=gender,
            height_cm=height,
            weight_kg=bmi * (height / 100.0) ** 2,
            systolic=rng.gauss(142.0 if hypertension else 118.0, 8.0),
            diastolic=rng.gauss(90.0 if hypertension else 76.0, 5.0),
            hypertension=hypertension,
            diabetes=rng.random() < 0.25,
            dyslipidemia=rng.random() < 0.35,
        )

    def _patient(self, profile: _Profile) -> Resource:
        rng, city = self.rng, self.city
        if profile.gender == "female":
            pool: Sequence[str] = _GIVEN_FEMALE
        elif profile.gender == "male":
            pool = _GIVEN_MALE
        else:
            pool = _GIVEN_FEMALE + _GIVEN_MALE
        given = [rng.choice(pool)]
        if rng.random() < 0.3:
            given.append(rng.choice([name for name in pool if name != given[0]]))
        family = rng.choice(_FAMILY)
        self.patient_display = f"{' '.join(given)} {family}"
        age_days = rng.randrange(18 * 365, 90 * 365)
        birth = ANCHOR.date() - timedelta(days=age_days)
        address: Resource = {
            "use": "home",
            "type": "both",
            "line": [f"{rng.randrange(1, 400)} {rng.choice(city.streets)}"],
            "city": city.name,
            "state": city.state,
            "postalCode": _fill_digits(rng, city.postal),
            "country": city.country,
        }
        if not city.state:
            del address["state"]  # no empty values in FHIR (ele-1)
        patient: Resource = {
            "resourceType": "Patient",
            "meta": _meta(),
            "identifier": [
                {
                    "use": "usual",
                    "type": _concept(
                        "http://terminology.hl7.org/CodeSystem/v2-0203", "MR", "Medical record number", "MRN"
                    ),
                    "system": MRN_SYSTEM,
                    # Derived, not drawn: unique within a data set and distinct between seeds by construction.
                    "value": f"D{self.seed}-{self.index + 1:05d}",
                }
            ],
            "active": True,
            "name": [{"use": "official", "family": family, "given": given}],
            "telecom": [
                {"system": "phone", "value": f"{city.phone_prefix} {rng.randrange(10000):04d}", "use": "mobile"},
                {
                    "system": "email",
                    "value": f"{_ascii(given[0])}.{_ascii(family)}{rng.randrange(100)}@example.org",
                    "use": "home",
                },
            ],
            "gender": profile.gender,
            "birthDate": birth.isoformat(),
            "address": [address],
        }
        return self._with_optional(
            patient,
            generalPractitioner=self._performer(),
            managingOrganization=(
                {"reference": ORGANIZATION_REF, "display": "Aegis Demo Clinic"} if self.shared else None
            ),
        )

    def _visit_times(self) -> list[datetime]:
        count = self.rng.randint(3, 6)
        days = sorted(self.rng.sample(range(7, 730), count), reverse=True)
        return [self._clinic_time(ANCHOR - timedelta(days=day)) for day in days]

    def _future_visit(self) -> datetime:
        return self._clinic_time(ANCHOR + timedelta(days=self.rng.randrange(7, 90)))

    def _clinic_time(self, day: datetime) -> datetime:
        # Local clinic hours in the patient's own offset, so timestamps carry a variety of offsets.
        local = day.astimezone(self.tz)
        hour, minute = self.rng.randrange(8, 17), self.rng.choice((0, 15, 30, 45))
        return datetime(local.year, local.month, local.day, hour, minute, tzinfo=self.tz)

    def _drift(self, profile: _Profile) -> None:
        # Small random walk between visits: trends over time are what makes a time series worth querying.
        profile.weight_kg += self.rng.gauss(0.0, 1.2)
        profile.systolic += self.rng.gauss(-1.0 if profile.hypertension else 0.0, 4.0)
        profile.diastolic += self.rng.gauss(0.0, 2.5)

    # -- clinical resources -------------------------------------------------------------------------------------------

    def _appointment(self, start: datetime, status: str, *, follow_up: bool) -> None:
        minutes = self.rng.choice((15, 20, 30))
        booked_at = start - timedelta(days=self.rng.randrange(3, 40), hours=self.rng.randrange(8))
        # Nothing is booked after the data set's "today", not even the future appointment.
        booked_at = min(booked_at, ANCHOR.astimezone(self.tz) - timedelta(hours=self.rng.randrange(1, 48)))
        kind = ("FOLLOWUP", "A follow up visit from a previous appointment") if follow_up else (
            "CHECKUP", "A routine check-up, such as an annual physical"
        )
        participants: list[Resource] = [
            {
                "actor": self._patient_ref(),
                "required": "required",
                "status": "accepted",
            }
        ]
        if self.shared:
            participants.append({"actor": self._performer()[0], "required": "required", "status": "accepted"})
        self.entries.post(
            {
                "resourceType": "Appointment",
                "meta": _meta(),
                "status": status,
                "appointmentType": _concept(APPOINTMENT_TYPE, *kind),
                "description": "Follow-up visit" if follow_up else "Annual check-up",
                "start": _fhir_datetime(start),
                "end": _fhir_datetime(start + timedelta(minutes=minutes)),
                "minutesDuration": minutes,
                "created": _fhir_datetime(booked_at),
                "participant": participants,
            }
        )

    def _observation(
        self, category: str, loinc: str, display: str, when: datetime, **body: Any
    ) -> Resource:
        category_display = {"vital-signs": "Vital Signs", "laboratory": "Laboratory"}[category]
        resource: Resource = {
            "resourceType": "Observation",
            "meta": _meta(),
            "status": "final",
            "category": [{"coding": [_coding(OBS_CATEGORY, category, category_display)], "text": category_display}],
            "code": _concept(LOINC, loinc, display),
            "subject": self._patient_ref(),
            "effectiveDateTime": _fhir_datetime(when),
        }
        resource.update(body)
        return self._with_optional(resource, performer=self._performer())

    def _vital(
        self, loinc: str, display: str, when: datetime, value: int | Decimal, unit: str, ucum: str, **extra: Any
    ) -> str:
        return self.entries.post(
            self._observation("vital-signs", loinc, display, when, valueQuantity=_quantity(value, unit, ucum), **extra)
        )

    def _vitals(self, profile: _Profile, visit: datetime, height_urn: str) -> str:
        rng = self.rng
        when = visit + timedelta(minutes=5)
        systolic = _decimal(profile.systolic, 0)
        diastolic = _decimal(min(profile.diastolic, profile.systolic - 25), 0)
        self.entries.post(
            self._observation(
                "vital-signs",
                "85354-9",
                "Blood pressure panel with all children optional",
                when,
                component=[
                    {
                        "code": _concept(LOINC, "8480-6", "Systolic blood pressure"),
                        "valueQuantity": _quantity(systolic, "mmHg", "mm[Hg]"),
                    },
                    {
                        "code": _concept(LOINC, "8462-4", "Diastolic blood pressure"),
                        "valueQuantity": _quantity(diastolic, "mmHg", "mm[Hg]"),
                    },
                ],
            )
        )
        self._vital("8867-4", "Heart rate", when, _decimal(rng.gauss(72, 9), 0), "beats/minute", "/min")
        self._vital("9279-1", "Respiratory rate", when, _decimal(rng.gauss(15, 2), 0), "breaths/minute", "/min")
        self._vital("8310-5", "Body temperature", when, _decimal(rng.gauss(36.8, 0.3), 1), "°C", "Cel")
        self._vital(
            "59408-5",
            "Oxygen saturation in Arterial blood by Pulse oximetry",
            when,
            _decimal(min(rng.gauss(97.5, 1.2), 100.0), 0),
            "%",
            "%",
        )
        # Scales report two decimals; kept as Decimal so 72.50 is written back as 72.50.
        weight = _decimal(profile.weight_kg, 2)
        weight_urn = self._vital("29463-7", "Body weight", when, weight, "kg", "kg")
        if not height_urn:
            height_urn = self._vital("8302-2", "Body height", when, _decimal(profile.height_cm, 1), "cm", "cm")
        bmi = float(weight) / (profile.height_cm / 100.0) ** 2
        self._vital(
            "39156-5",
            "Body mass index (BMI) [Ratio]",
            when,
            _decimal(bmi, 1),
            "kg/m2",
            "kg/m2",
            derivedFrom=[{"reference": weight_urn}, {"reference": height_urn}],
        )
        return height_urn

    def _lab_value(self, name: str, profile: _Profile) -> float:
        rng = self.rng
        if name == "glucose":
            return rng.gauss(150, 30) if profile.diabetes else rng.gauss(88, 9)
        if name == "hba1c":
            return rng.gauss(7.6, 0.8) if profile.diabetes else rng.gauss(5.2, 0.3)
        if name == "cholesterol":
            return rng.gauss(235, 25) if profile.dyslipidemia else rng.gauss(175, 20)
        if name == "triglyceride":
            return rng.gauss(190, 40) if profile.dyslipidemia else rng.gauss(110, 25)
        if name == "hdl":
            return rng.gauss(42, 6) if profile.dyslipidemia else rng.gauss(55, 8)
        lab = _LABS[name]
        return rng.gauss((lab.low + lab.high) / 2, (lab.high - lab.low) / 5)

    def _labs(self, profile: _Profile, visit: datetime) -> None:
        rng = self.rng
        drawn = visit + timedelta(minutes=20)
        issued = (drawn + timedelta(hours=rng.randrange(4, 30), minutes=rng.randrange(60))).astimezone(timezone.utc)
        names = ["glucose", "creatinine", "hemoglobin", "leukocytes", "cholesterol", "triglyceride", "hdl"]
        if profile.diabetes or rng.random() < 0.3:
            names.append("hba1c")
        by_panel: dict[str, list[Resource]] = {}
        for name in names:
            lab = _LABS[name]
            value = _decimal(max(self._lab_value(name, profile), lab.low / 3), lab.places)
            flag = ("L", "Low") if value < _decimal(lab.low, lab.places) else (
                ("H", "High") if value > _decimal(lab.high, lab.places) else ("N", "Normal")
            )
            urn = self.entries.post(
                self._observation(
                    "laboratory",
                    lab.loinc,
                    lab.display,
                    drawn,
                    # issued is an instant and must carry seconds and a zone: UTC as a lab system would stamp it.
                    issued=_fhir_datetime(issued),
                    valueQuantity=_quantity(value, lab.ucum, lab.ucum),
                    interpretation=[_concept(INTERPRETATION, *flag)],
                    referenceRange=[
                        {
                            "low": _quantity(_decimal(lab.low, lab.places), lab.ucum, lab.ucum),
                            "high": _quantity(_decimal(lab.high, lab.places), lab.ucum, lab.ucum),
                        }
                    ],
                )
            )
            by_panel.setdefault(lab.cpt, []).append({"reference": urn})
        for cpt, results in by_panel.items():
            self._charge(cpt, drawn, results)

    def _charge(self, cpt: str, when: datetime, service: list[Resource]) -> None:
        charge: Resource = {
            "resourceType": "ChargeItem",
            "meta": _meta(),
            "status": "billable",
            "code": _concept(CPT, cpt, _CPT_TEXT[cpt]),
            "subject": self._patient_ref(),
            "occurrenceDateTime": _fhir_datetime(when),
            "quantity": {"value": 1},
            "priceOverride": {"value": _CPT_PRICE[cpt], "currency": "USD"},
            "overrideReason": "Demo list price",
            "enteredDate": _fhir_datetime(when + timedelta(hours=2)),
        }
        self.entries.post(
            self._with_optional(
                charge,
                performingOrganization={"reference": ORGANIZATION_REF} if self.shared else None,
                enterer={"reference": PRACTITIONER_REF} if self.shared else None,
                service=service,
            )
        )

    def _medications(self, profile: _Profile, visits: list[datetime]) -> None:
        rng = self.rng
        names: list[str] = []
        if profile.hypertension:
            names.append(rng.choice(("lisinopril", "amlodipine", "hctz")))
        if profile.diabetes:
            names.append("metformin")
        if profile.dyslipidemia:
            names.append("atorvastatin")
        if (profile.hypertension or profile.diabetes) and rng.random() < 0.5:
            names.append("aspirin")
        if not names:
            names.append("acetaminophen")
        for name in names:
            drug = _DRUGS[name]
            authored = rng.choice(visits) + timedelta(minutes=25)
            as_needed = name == "acetaminophen"
            dosage: Resource = {
                "sequence": 1,
                "text": drug.text,
                "timing": {"repeat": {"frequency": drug.per_day, "period": 1, "periodUnit": "d"}},
                "route": _concept(SNOMED, "26643006", "Oral route"),
                "doseAndRate": [
                    {
                        "type": _concept("http://terminology.hl7.org/CodeSystem/dose-rate-type", "ordered", "Ordered"),
                        "doseQuantity": _quantity(1, "tablet", "{tbl}"),
                    }
                ],
            }
            if as_needed:
                dosage["asNeededBoolean"] = True
            request: Resource = {
                "resourceType": "MedicationRequest",
                "meta": _meta(),
                "status": "active",
                "intent": "order",
                "medicationCodeableConcept": _concept(RXNORM, drug.rxnorm, drug.display),
                "subject": self._patient_ref(),
                "authoredOn": _fhir_datetime(authored),
                "dosageInstruction": [dosage],
                "dispenseRequest": {
                    "numberOfRepeatsAllowed": 3,
                    "quantity": _quantity(30 * drug.per_day, "tablet", "{tbl}"),
                    "expectedSupplyDuration": _quantity(30, "days", "d"),
                },
            }
            self.entries.post(
                self._with_optional(
                    request,
                    requester={"reference": PRACTITIONER_REF, "display": "Dr. Grace Demo"} if self.shared else None,
                )
            )


# --------------------------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------------------------


def demo_bundles(patients: int = 20, seed: int = 42, *, shared: bool = True) -> Iterator[Resource]:
    """Yield one transaction Bundle per patient; load them in order (the first creates the shared resources).

    With ``shared=False`` there is no Practitioner/Organization and no reference to them, and every entry is a POST.
    """
    if patients < 0:
        raise ValueError("patients must be >= 0")
    for index in range(patients):
        builder = _PatientBuilder(seed, index, shared)
        if shared and index == 0:
            for resource in shared_resources():
                builder.entries.put(resource)
        yield {"resourceType": "Bundle", "type": "transaction", "entry": builder.build()}


def _main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write the Aegis demo data set as NDJSON transaction Bundles.")
    parser.add_argument("--patients", type=int, default=20)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--no-shared", action="store_true", help="leave out the shared Practitioner/Organization")
    args = parser.parse_args(argv)
    from resources.jsonio import dumps

    out = sys.stdout.buffer
    for bundle in demo_bundles(args.patients, args.seed, shared=not args.no_shared):
        out.write(dumps(bundle) + b"\n")
    out.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
