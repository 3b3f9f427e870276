"""Seeded, reproducible Synthea-like data for the search benchmark: transaction Bundles written to a directory.

Why our own generator (measured on the 2-core reference machine, Python 3.11):

* ``tietai-synthea`` 1.5.0 makes rich lifetime histories (~2,200 resources per patient) but runs at ~0.6 patients/s
  on one thread (1,000 patients ≈ 30 min), has no Appointments, and two runs of ``-p 10 -s 42`` differed in every
  file (timestamps follow the wall clock).
* ``carebundle`` 0.5.0 is byte-reproducible and fast (100 patients in ~2.4 s) but gives ~45 resources per patient
  from a single encounter: 1,000 patients would fall far short of 200,000 resources and of date-range searches.
* This module (same style as ``fhir_server/demo.py``: vocabulary tables, one ``random.Random`` per patient seeded with
  the string ``"{seed}/{index}"``, a fixed "today") writes ~325 resources per patient with ten years of history
  (1,000 patients in ~20 s including validation; 10,000 with replication in ~2 min), depends on nothing outside the
  project, and is byte-reproducible.

What one patient gets (all inside one transaction Bundle, POST entries with ``urn:uuid:`` fullUrls, so the server
assigns ids and rewrites references, as it must for Synthea output):

* a Patient (MRN identifier, name, gender, birth date, address, general practitioner, managing organization);
* ambulatory Encounters (class ``AMB``; yearly wellness visits, chronic-disease follow-ups, acute visits) with a
  period, each with an Appointment derived from it (``fulfilled``, same start/end) and one future ``booked`` one;
  inpatient (``IMP``, several days) and emergency (``EMER``) Encounters for some patients;
* vital-sign Observations at every visit (blood-pressure panel with systolic/diastolic components and no value of its
  own, heart rate, respiratory rate, temperature, SpO2, weight, height, BMI) and laboratory Observations (basic
  metabolic panel, CBC, lipids, HbA1c, renal markers) with LOINC codes, UCUM units, categories and
  ``effectiveDateTime`` spread over ten years; patients of the French clinic have glucose in ``g/L`` instead of
  ``mg/dL`` (a real practice there) and urine albumin/creatinine is in ``mg/g``, so unit-converting quantity searches
  have something to find; about 3 % of laboratory results are ``cancelled`` with a ``dataAbsentReason`` and no value;
* Conditions (SNOMED CT; chronic ones active on the problem list, acute ones resolved encounter diagnoses);
* MedicationRequests (RxNorm; chronic medications renewed every year, older renewals completed, the last active;
  acute ones completed).

Organizations and Practitioners are shared by all patients: ``shared.ndjson`` holds one transaction Bundle that PUTs
them with fixed ids (load it first), patient Bundles refer to them as ``Organization/bench-org-NN``.

Scaling: ``--patients`` above ``--base-cohort`` (default 1,000) replicates the generated cohort instead of simulating
every patient: patient ``k`` copies base patient ``k % base`` with fresh ``urn:uuid``s (every fullUrl and reference
carries the patient number in its first group), a fresh MRN, fresh names and a birth date moved by up to 60 days.
The clinical content of a copy is that of its base patient (so per-patient expected counts carry over).

Output directory (``--out``): ``shared.ndjson``, ``patients-NNNN.ndjson`` (100 Bundles per file, one per line, in
patient order) and ``manifest.json``: parameters, counts per type, timings, the code lists, and ~200 sample patients
(MRN, names, birth date) with the number of resources each search shape of ``search_load.py`` must find for them,
plus cohort-wide expectations (patients per name prefix, per birth date, per LOINC code, glucose above 100 mg/dL).
Every Bundle is checked with ``fhirkit.validate`` (which validates each entry's resource) before it is written.

Re-running with the same parameters and the same generator source is a no-op ("cached") unless ``--force``.

Usage::

    python bench/datagen.py --patients 1000 --seed 42 --out /tmp/aegis-bench-data/p1000-s42
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import sys
import time
import unicodedata
from functools import lru_cache
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import fhirkit
import orjson

Resource = dict[str, Any]

# Bump nothing by hand: the cache key includes a hash of this file, so any change regenerates.
MANIFEST = "manifest.json"
SHARED_FILE = "shared.ndjson"
BUNDLES_PER_FILE = 100
MAX_PATIENTS = 100_000
DEFAULT_SAMPLES = 200

MRN_SYSTEM = "https://aegis-fhir.org/bench/mrn"
NATIONAL_ID_SYSTEM = "https://aegis-fhir.org/bench/national-id"
BENCH_TAG = {"system": "https://aegis-fhir.org/bench", "code": "synthetic", "display": "Aegis benchmark data"}

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
SNOMED = "http://snomed.info/sct"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
COND_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
COND_VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
COND_CATEGORY = "http://terminology.hl7.org/CodeSystem/condition-category"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
DATA_ABSENT = "http://terminology.hl7.org/CodeSystem/data-absent-reason"
APPOINTMENT_TYPE = "http://terminology.hl7.org/CodeSystem/v2-0276"
MEDREQ_CATEGORY = "http://terminology.hl7.org/CodeSystem/medicationrequest-category"

# The data set's "today": history lies in the ten years before it, booked appointments after it. Fixed so the output
# never depends on when it is generated.
ANCHOR = datetime(2025, 6, 30, 12, 0, tzinfo=timezone.utc)
HISTORY_DAYS = 3652
UTC = timezone.utc


# --------------------------------------------------------------------------------------------------------------------
# Vocabulary (facts: public code systems; names are common first and last names)
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class City:
    name: str
    state: str | None
    postal: str  # '#' is a random digit
    country: str
    utc_offset_minutes: int  # standard time only, so offsets stay predictable
    streets: tuple[str, ...]


# Offsets include negative, zero, positive and a half-hour one so that date search must normalise to UTC.
CITIES: tuple[City, ...] = (
    City("Boston", "MA", "021##", "US", -300, ("Beacon Street", "Tremont Street", "Elm Road", "Summer Street")),
    City("Chicago", "IL", "606##", "US", -360, ("Lake Shore Drive", "Halsted Street", "Clark Street")),
    City("Denver", "CO", "802##", "US", -420, ("Colfax Avenue", "Larimer Street", "Market Street")),
    City("Seattle", "WA", "981##", "US", -480, ("Pine Street", "Westlake Avenue", "Union Street")),
    City("Atlanta", "GA", "303##", "US", -300, ("Peachtree Street", "Ponce de Leon Avenue")),
    City("Lyon", None, "6900#", "FR", 60, ("Rue de la République", "Quai Saint-Antoine", "Cours Lafayette")),
    City("Lisboa", None, "1###-###", "PT", 0, ("Rua Augusta", "Avenida da Liberdade")),
    City("Helsinki", None, "00###", "FI", 120, ("Mannerheimintie", "Aleksanterinkatu")),
    City("Kolkata", "WB", "700###", "IN", 330, ("Park Street", "Camac Street")),
)

# One or two organisations per city; patients are cared for by an organisation of their own city.
ORGANIZATIONS: tuple[tuple[str, int], ...] = (
    ("Beacon Hill Family Medicine", 0), ("Back Bay Internal Medicine", 0), ("Lakeview Primary Care", 1),
    ("Loop Health Partners", 1), ("Front Range Clinic", 2), ("Puget Sound Medical Group", 3),
    ("Emerald City Health", 3), ("Piedmont Family Practice", 4), ("Centre Médical Bellecour", 5),
    ("Clínica da Baixa", 6), ("Kamppi Health Centre", 7), ("Park Street Polyclinic", 8),
)  # fmt: skip
PRACTITIONERS_PER_ORG = 8
# Labs of the French clinic report glucose as a mass concentration in g/L, as many French laboratories do.
GLUCOSE_G_PER_L_COUNTRIES = frozenset({"FR"})

GIVEN_FEMALE = (
    "Amelia", "Zoë", "Fatima", "Ingrid", "Léa", "Mei", "Olivia", "Priya", "Sofía", "Hannah", "Aisha", "Chloé",
    "Emma", "Isabel", "Julia", "Keiko", "Laila", "Maren", "Nadia", "Noor", "Paula", "Rosa", "Sakura", "Tanvi",
    "Valentina", "Yara", "Ana", "Beatriz", "Camille", "Daniela", "Elena", "Greta", "Helena", "Irene", "Joana",
    "Katarina", "Lucía", "Mariam", "Nina", "Oona",
)  # fmt: skip
GIVEN_MALE = (
    "Liam", "Mateo", "Noah", "Jonas", "Kenji", "Arjun", "Olivier", "Samuel", "Tomás", "Elias", "Omar", "André",
    "Bruno", "Carlos", "Daniel", "Emil", "Felipe", "Gabriel", "Hugo", "Ibrahim", "Jakob", "Karan", "Lars",
    "Marco", "Nikolai", "Oskar", "Pedro", "Rafael", "Stefan", "Theo", "Vikram", "Wei", "Yusuf", "Aleksi",
    "Benoît", "Cyril", "Diego", "Eero", "Fábio", "Henrik",
)  # fmt: skip
FAMILY = (
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Miller", "Davis", "García", "Rodríguez", "Martínez",
    "Hernández", "López", "González", "Wilson", "Anderson", "Thomas", "Taylor", "Moore", "Jackson", "Martin",
    "Lee", "Pérez", "Thompson", "White", "Harris", "Sánchez", "Clark", "Ramírez", "Lewis", "Robinson", "Walker",
    "Young", "Allen", "King", "Wright", "Scott", "Torres", "Nguyen", "Hill", "Flores", "Green", "Adams",
    "Nelson", "Baker", "Hall", "Rivera", "Campbell", "Mitchell", "Carter", "Roberts", "Müller", "Schmidt",
    "Schneider", "Fischer", "Weber", "Meyer", "Wagner", "Becker", "Schulz", "Hoffmann", "Dubois", "Lefèvre",
    "Moreau", "Laurent", "Simon", "Michel", "Garnier", "Rousseau", "Fontaine", "Chevalier", "Silva", "Santos",
    "Ferreira", "Pereira", "Oliveira", "Costa", "Rodrigues", "Almeida", "Carvalho", "Gonçalves", "Virtanen",
    "Korhonen", "Mäkinen", "Nieminen", "Mäkelä", "Hämäläinen", "Laine", "Heikkinen", "Koskinen", "Järvinen",
    "Sharma", "Banerjee", "Chatterjee", "Mukherjee", "Das", "Bose", "Ghosh", "Sen", "Gupta", "Iyer", "Rossi",
    "Russo", "Ferrari", "Esposito", "Bianchi", "Romano", "Colombo", "Ricci", "Marino", "Greco", "Kowalski",
    "Nowak", "Wiśniewski", "Wójcik", "Kowalczyk", "Tanaka", "Suzuki", "Takahashi", "Watanabe", "Yamamoto",
    "Okafor", "Adeyemi", "Mensah", "Abubakar", "Haddad", "Khoury", "Cohen", "Levi", "Andersson", "Johansson",
    "Karlsson", "Nilsson", "Eriksson", "Larsson", "Olsen", "Hansen", "Jensen", "Nielsen", "Novák", "Dvořák",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Lab:
    loinc: str
    display: str
    ucum: str  # also the human-readable unit: lab reports print UCUM as is
    places: int  # digits after the decimal point the analyser reports
    low: float
    high: float


LABS: dict[str, Lab] = {
    "glucose": Lab("2339-0", "Glucose [Mass/volume] in Blood", "mg/dL", 0, 70, 99),
    "bun": Lab("6299-2", "Urea nitrogen [Mass/volume] in Blood", "mg/dL", 0, 7, 20),
    "creatinine": Lab("38483-4", "Creatinine [Mass/volume] in Blood", "mg/dL", 2, 0.6, 1.2),
    "calcium": Lab("49765-1", "Calcium [Mass/volume] in Blood", "mg/dL", 1, 8.5, 10.2),
    "sodium": Lab("2947-0", "Sodium [Moles/volume] in Blood", "mmol/L", 0, 136, 145),
    "potassium": Lab("6298-4", "Potassium [Moles/volume] in Blood", "mmol/L", 1, 3.5, 5.1),
    "chloride": Lab("2069-3", "Chloride [Moles/volume] in Blood", "mmol/L", 0, 98, 107),
    "co2": Lab("20565-8", "Carbon dioxide, total [Moles/volume] in Blood", "mmol/L", 0, 22, 29),
    "hemoglobin": Lab("718-7", "Hemoglobin [Mass/volume] in Blood", "g/dL", 1, 12.0, 17.5),
    "hematocrit": Lab("4544-3", "Hematocrit [Volume Fraction] of Blood by Automated count", "%", 1, 36.0, 50.0),
    "leukocytes": Lab("6690-2", "Leukocytes [#/volume] in Blood by Automated count", "10*3/uL", 1, 4.0, 11.0),
    "platelets": Lab("777-3", "Platelets [#/volume] in Blood by Automated count", "10*3/uL", 0, 150, 400),
    "cholesterol": Lab("2093-3", "Cholesterol [Mass/volume] in Serum or Plasma", "mg/dL", 0, 125, 200),
    "triglyceride": Lab("2571-8", "Triglyceride [Mass/volume] in Serum or Plasma", "mg/dL", 0, 40, 150),
    "hdl": Lab("2085-9", "Cholesterol in HDL [Mass/volume] in Serum or Plasma", "mg/dL", 0, 40, 90),
    "ldl": Lab("18262-6", "Cholesterol in LDL [Mass/volume] in Serum or Plasma by Direct assay", "mg/dL", 0, 50, 130),
    "hba1c": Lab("4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", "%", 1, 4.0, 5.6),
    "albumin": Lab("1751-7", "Albumin [Mass/volume] in Serum or Plasma", "g/dL", 1, 3.5, 5.0),
    "egfr": Lab(
        "33914-3",
        "Glomerular filtration rate/1.73 sq M.predicted [Volume Rate/Area] in Serum or Plasma by Creatinine-based "
        "formula (MDRD)",
        "mL/min/{1.73_m2}", 0, 60, 120,
    ),  # fmt: skip
    "uacr": Lab("14959-1", "Microalbumin/Creatinine [Mass Ratio] in Urine", "mg/g", 1, 0.0, 30.0),
}
PANELS: dict[str, tuple[str, ...]] = {
    "bmp": ("glucose", "bun", "creatinine", "calcium", "sodium", "potassium", "chloride", "co2"),
    "cbc": ("hemoglobin", "hematocrit", "leukocytes", "platelets"),
    "lipid": ("cholesterol", "triglyceride", "hdl", "ldl"),
    "a1c": ("hba1c",),
    "renal": ("albumin", "egfr", "uacr"),
    "diabetic": ("glucose", "hba1c", "uacr"),
}
GLUCOSE_LOINC = LABS["glucose"].loinc
HBA1C_LOINC = LABS["hba1c"].loinc

VITALS: dict[str, tuple[str, str, str, str]] = {  # name -> (LOINC, display, unit, UCUM)
    "bp": ("85354-9", "Blood pressure panel with all children optional", "", ""),
    "systolic": ("8480-6", "Systolic blood pressure", "mmHg", "mm[Hg]"),
    "diastolic": ("8462-4", "Diastolic blood pressure", "mmHg", "mm[Hg]"),
    "heart_rate": ("8867-4", "Heart rate", "beats/minute", "/min"),
    "resp_rate": ("9279-1", "Respiratory rate", "breaths/minute", "/min"),
    "temperature": ("8310-5", "Body temperature", "°C", "Cel"),
    "spo2": ("59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry", "%", "%"),
    "weight": ("29463-7", "Body weight", "kg", "kg"),
    "height": ("8302-2", "Body height", "cm", "cm"),
    "bmi": ("39156-5", "Body mass index (BMI) [Ratio]", "kg/m2", "kg/m2"),
}
SYSTOLIC_LOINC = VITALS["systolic"][0]


@dataclass(frozen=True, slots=True)
class Drug:
    rxnorm: str
    display: str
    per_day: int
    text: str


DRUGS: dict[str, Drug] = {
    "lisinopril": Drug("314076", "lisinopril 10 MG Oral Tablet", 1, "Take 1 tablet by mouth once daily"),
    "amlodipine": Drug("197361", "amlodipine 5 MG Oral Tablet", 1, "Take 1 tablet by mouth once daily"),
    "hctz": Drug("310798", "hydrochlorothiazide 25 MG Oral Tablet", 1, "Take 1 tablet by mouth every morning"),
    "metformin": Drug(
        "860975", "24 HR metformin hydrochloride 500 MG Extended Release Oral Tablet", 2,
        "Take 1 tablet by mouth twice daily with meals",
    ),  # fmt: skip
    "atorvastatin": Drug("259255", "atorvastatin 80 MG Oral Tablet", 1, "Take 1 tablet by mouth at bedtime"),
    "simvastatin": Drug("312961", "simvastatin 20 MG Oral Tablet", 1, "Take 1 tablet by mouth at bedtime"),
    "albuterol": Drug(
        "745679", "200 ACTUAT albuterol 0.09 MG/ACTUAT Metered Dose Inhaler", 2, "Inhale 2 puffs as needed"
    ),
    "ferrous": Drug("310325", "ferrous sulfate 325 MG Oral Tablet", 1, "Take 1 tablet by mouth once daily"),
    "ibuprofen": Drug("310965", "ibuprofen 200 MG Oral Tablet", 3, "Take 1 tablet by mouth up to three times daily"),
    "acetaminophen": Drug("313782", "acetaminophen 325 MG Oral Tablet", 4, "Take 1 tablet up to four times daily"),
    "amoxicillin": Drug("308182", "amoxicillin 250 MG Oral Capsule", 3, "Take 1 capsule by mouth three times daily"),
    "penicillin": Drug(
        "834061", "penicillin V potassium 250 MG Oral Tablet", 4, "Take 1 tablet by mouth four times daily"
    ),
    "aspirin": Drug("243670", "aspirin 81 MG Oral Tablet", 1, "Take 1 tablet by mouth once daily"),
}


@dataclass(frozen=True, slots=True)
class Disease:
    key: str
    snomed: str
    display: str
    prevalence: float  # chronic: share of patients; acute: expected episodes per year
    drugs: tuple[str, ...]  # one is chosen
    panels: tuple[str, ...] = ()  # follow-up labs for chronic conditions


CHRONIC: tuple[Disease, ...] = (
    Disease("hypertension", "38341003", "Hypertensive disorder, systemic arterial (disorder)", 0.35,
            ("lisinopril", "amlodipine", "hctz"), ("bmp",)),
    Disease("diabetes", "44054006", "Diabetes mellitus type 2 (disorder)", 0.15, ("metformin",), ("diabetic",)),
    Disease("prediabetes", "714628002", "Prediabetes (finding)", 0.15, (), ("a1c",)),
    Disease("hyperlipidemia", "55822004", "Hyperlipidemia (disorder)", 0.30, ("atorvastatin", "simvastatin"),
            ("lipid",)),
    Disease("asthma", "195967001", "Asthma (disorder)", 0.08, ("albuterol",)),
    Disease("ckd", "433144002", "Chronic kidney disease stage 3 (disorder)", 0.05, (), ("renal",)),
    Disease("osteoarthritis", "239873007", "Osteoarthritis of knee (disorder)", 0.12, ("ibuprofen",)),
    Disease("anemia", "271737000", "Anemia (disorder)", 0.05, ("ferrous",), ("cbc",)),
)  # fmt: skip
ACUTE: tuple[Disease, ...] = (
    Disease("bronchitis", "10509002", "Acute bronchitis (disorder)", 0.12, ("acetaminophen",)),
    Disease("sinusitis", "444814009", "Viral sinusitis (disorder)", 0.15, ()),
    Disease("pharyngitis", "43878008", "Streptococcal sore throat (disorder)", 0.08, ("penicillin",)),
    Disease("otitis", "65363002", "Otitis media (disorder)", 0.05, ("amoxicillin",)),
    Disease("sprain", "44465007", "Sprain of ankle (disorder)", 0.05, ("ibuprofen",)),
)
INPATIENT: tuple[Disease, ...] = (
    Disease("pneumonia", "233604007", "Pneumonia (disorder)", 0.0, ("amoxicillin",)),
    Disease("appendicitis", "74400008", "Appendicitis (disorder)", 0.0, ("acetaminophen",)),
)
OBESITY = Disease("obesity", "162864005", "Body mass index 30+ - obesity (finding)", 0.0, ())

ENCOUNTER_TYPES: dict[str, tuple[str, str]] = {
    "wellness": ("162673000", "General examination of patient (procedure)"),
    "followup": ("390906007", "Follow-up encounter (procedure)"),
    "acute": ("185345009", "Encounter for symptom (procedure)"),
    "emergency": ("50849002", "Emergency room admission (procedure)"),
    "inpatient": ("32485007", "Hospital admission (procedure)"),
}
CLASS_DISPLAY = {"AMB": "ambulatory", "IMP": "inpatient encounter", "EMER": "emergency"}


# --------------------------------------------------------------------------------------------------------------------
# Small builders
# --------------------------------------------------------------------------------------------------------------------


def _meta() -> Resource:
    return {"tag": [dict(BENCH_TAG)]}


def _coding(system: str, code: str, display: str) -> Resource:
    return {"system": system, "code": code, "display": display}


def _concept(system: str, code: str, display: str, text: str | None = None) -> Resource:
    return {"coding": [_coding(system, code, display)], "text": text or display}


def _quantity(value: int | Decimal, unit: str, ucum: str) -> Resource:
    return {"value": value, "unit": unit, "system": UCUM, "code": ucum}


def _decimal(value: float, places: int) -> int | Decimal:
    """Round like an instrument and keep trailing zeros (72.5 at 2 places is ``Decimal('72.50')``)."""
    scaled = int(Decimal(repr(value)).scaleb(places).quantize(Decimal(1), rounding=ROUND_HALF_UP))
    return scaled if places == 0 else Decimal(scaled).scaleb(-places)


def _dt(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


def _json_default(value: Any) -> Any:
    # Decimals go out as their exact digits (72.50 stays 72.50), as FHIR requires of decimals.
    if isinstance(value, Decimal):
        return orjson.Fragment(str(value).encode())
    raise TypeError(f"cannot serialise {type(value).__name__}")


def dumps(value: Any) -> bytes:
    data: bytes = orjson.dumps(value, default=_json_default)
    return data


def fold(text: str) -> str:
    """Case- and accent-insensitive form used to predict what a FHIR string search matches (García -> garcia)."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch)).casefold()


def _fill_digits(rng: random.Random, template: str) -> str:
    return "".join(str(rng.randrange(10)) if ch == "#" else ch for ch in template)


def org_id(index: int) -> str:
    return f"bench-org-{index + 1:02d}"


def practitioner_id(org: int, n: int) -> str:
    return f"bench-pract-{org + 1:02d}-{n + 1}"


def patient_urn(pk: int) -> str:
    # The patient number leads every urn of its Bundle, which is what makes replication a byte substitution.
    return f"urn:uuid:{pk:08x}-0000-4000-8000-000000000000"


def mrn(seed: int, pk: int) -> str:
    return f"M{seed}-{pk + 1:06d}"


# --------------------------------------------------------------------------------------------------------------------
# Shared Organizations and Practitioners
# --------------------------------------------------------------------------------------------------------------------


@lru_cache(maxsize=None)
def _practitioner_name(org: int, n: int) -> tuple[str, str, str]:
    rng = random.Random(f"practitioner/{org}/{n}")  # independent of the seed: shared resources never change
    gender = rng.choice(("female", "male"))
    given = rng.choice(GIVEN_FEMALE if gender == "female" else GIVEN_MALE)
    return gender, given, rng.choice(FAMILY)


def shared_bundle() -> Resource:
    """One transaction Bundle that PUTs every Organization and Practitioner (fixed ids, identical for every seed)."""
    entries: list[Resource] = []
    for index, (name, city_index) in enumerate(ORGANIZATIONS):
        city = CITIES[city_index]
        address: Resource = {"use": "work", "line": [f"{10 + index} {city.streets[0]}"], "city": city.name}
        if city.state:
            address["state"] = city.state
        address["country"] = city.country
        organization = {
            "resourceType": "Organization",
            "id": org_id(index),
            "meta": _meta(),
            "identifier": [{"system": "https://aegis-fhir.org/bench/organization", "value": f"ORG-{index + 1:03d}"}],
            "active": True,
            "type": [
                _concept("http://terminology.hl7.org/CodeSystem/organization-type", "prov", "Healthcare Provider")
            ],
            "name": name,
            "telecom": [{"system": "phone", "value": f"+1 555 01{index:02d}", "use": "work"}],
            "address": [address],
        }
        entries.append({"resource": organization, "request": {"method": "PUT", "url": f"Organization/{org_id(index)}"}})
        for n in range(PRACTITIONERS_PER_ORG):
            gender, given, family = _practitioner_name(index, n)
            practitioner = {
                "resourceType": "Practitioner",
                "id": practitioner_id(index, n),
                "meta": _meta(),
                "identifier": [{"system": "http://hl7.org/fhir/sid/us-npi", "value": f"99{index:02d}{n:06d}"}],
                "active": True,
                "name": [{"use": "official", "family": family, "given": [given], "prefix": ["Dr."]}],
                "gender": gender,
                "qualification": [
                    {"code": _concept("http://terminology.hl7.org/CodeSystem/v2-0360", "MD", "Doctor of Medicine")}
                ],
            }
            entries.append(
                {"resource": practitioner, "request": {"method": "PUT", "url": f"Practitioner/{practitioner['id']}"}}
            )
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def _practitioner_display(org: int, n: int) -> str:
    _, given, family = _practitioner_name(org, n)
    return f"Dr. {given} {family}"


# --------------------------------------------------------------------------------------------------------------------
# One patient
# --------------------------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Person:
    """What differs between a base patient and its copies: identity, not clinical history."""

    pk: int
    gender: str
    given: list[str]
    family: str
    birth: date


@dataclass(slots=True)
class Built:
    """A generated base patient: its Bundle split so copies can swap the Patient entry and the urn prefix."""

    person: Person
    city: int
    org: int
    patient_extra: Resource  # address, telecom etc.: copied unchanged
    rest: bytes  # every entry after the Patient, serialised and comma-joined
    entries: int  # entries in the Bundle, the Patient included
    counts: Counter[str]  # resources per type, the Patient included
    facts: dict[str, Any]  # what searches must find for this patient (see facts_of)


def _names(rng: random.Random, gender: str) -> tuple[list[str], str]:
    if gender == "female":
        pool: Sequence[str] = GIVEN_FEMALE
    elif gender == "male":
        pool = GIVEN_MALE
    else:
        pool = GIVEN_FEMALE + GIVEN_MALE
    given = [rng.choice(pool)]
    if rng.random() < 0.3:
        given.append(rng.choice([name for name in pool if name != given[0]]))
    return given, rng.choice(FAMILY)


def patient_resource(person: Person, seed: int, extra: Resource) -> Resource:
    rng = random.Random(f"{seed}/national/{person.pk}")
    resource: Resource = {
        "resourceType": "Patient",
        "meta": _meta(),
        "identifier": [
            {
                "use": "usual",
                "type": _concept("http://terminology.hl7.org/CodeSystem/v2-0203", "MR", "Medical record number"),
                "system": MRN_SYSTEM,
                "value": mrn(seed, person.pk),
            },
            {"use": "official", "system": NATIONAL_ID_SYSTEM, "value": f"{rng.randrange(10**9):09d}"},
        ],
        "active": True,
        "name": [{"use": "official", "family": person.family, "given": list(person.given)}],
        "gender": person.gender,
        "birthDate": person.birth.isoformat(),
    }
    resource.update(extra)
    return resource


def _patient_entry(person: Person, seed: int, extra: Resource) -> bytes:
    resource = patient_resource(person, seed, extra)
    return dumps({"fullUrl": patient_urn(person.pk), "resource": resource, "request": {"method": "POST",
                                                                                       "url": "Patient"}})


class PatientBuilder:
    """Simulates one base patient's ten years of care (see the module docstring for what is made)."""

    def __init__(self, seed: int, pk: int) -> None:
        self.rng = random.Random(f"{seed}/{pk}")
        self.seed = seed
        self.pk = pk
        self.seq = 0
        self.entries: list[Resource] = []
        rng = self.rng
        self.org = rng.randrange(len(ORGANIZATIONS))
        self.city = ORGANIZATIONS[self.org][1]
        self.tz = timezone(timedelta(minutes=CITIES[self.city].utc_offset_minutes))
        self.gp = rng.randrange(PRACTITIONERS_PER_ORG)
        self.glucose_g_per_l = CITIES[self.city].country in GLUCOSE_G_PER_L_COUNTRIES

    # -- references ---------------------------------------------------------------------------------------------------

    def _urn(self) -> str:
        self.seq += 1
        return f"urn:uuid:{self.pk:08x}-{self.seq:04x}-4{self.seed % 4096:03x}-8000-{self.seq * 7919:012x}"

    def _post(self, resource: Resource) -> str:
        urn = self._urn()
        self.entries.append(
            {"fullUrl": urn, "resource": resource, "request": {"method": "POST", "url": resource["resourceType"]}}
        )
        return urn

    def _subject(self) -> Resource:
        # No display: copies change the name, and a reference display would then lie.
        return {"reference": patient_urn(self.pk)}

    def _practitioner(self, n: int | None = None) -> Resource:
        n = self.gp if n is None else n
        return {"reference": f"Practitioner/{practitioner_id(self.org, n)}",
                "display": _practitioner_display(self.org, n)}

    def _organization(self) -> Resource:
        return {"reference": f"Organization/{org_id(self.org)}", "display": ORGANIZATIONS[self.org][0]}

    # -- the patient --------------------------------------------------------------------------------------------------

    def build(self) -> Built:
        rng = self.rng
        gender = rng.choices(("female", "male", "other", "unknown"), weights=(48, 48, 2, 2))[0]
        given, family = _names(rng, gender)
        age_days = rng.randrange(20 * 365, 90 * 365)
        person = Person(self.pk, gender, given, family, ANCHOR.date() - timedelta(days=age_days))
        city = CITIES[self.city]
        address: Resource = {
            "use": "home",
            "line": [f"{rng.randrange(1, 400)} {rng.choice(city.streets)}"],
            "city": city.name,
            "postalCode": _fill_digits(rng, city.postal),
            "country": city.country,
        }
        if city.state:
            address["state"] = city.state
        extra: Resource = {
            "telecom": [{"system": "phone", "value": f"555-{rng.randrange(10000):04d}", "use": "mobile"}],
            "address": [address],
            "generalPractitioner": [self._practitioner()],
            "managingOrganization": self._organization(),
        }
        self._history(person)
        counts: Counter[str] = Counter(entry["resource"]["resourceType"] for entry in self.entries)
        counts["Patient"] += 1
        facts = facts_of([entry["resource"] for entry in self.entries])
        rest = b",".join(dumps(entry) for entry in self.entries)
        return Built(person, self.city, self.org, extra, rest, len(self.entries) + 1, counts, facts)

    def _history(self, person: Person) -> None:
        rng = self.rng
        start = ANCHOR - timedelta(days=HISTORY_DAYS)
        chronic = [d for d in CHRONIC if rng.random() < d.prevalence]
        if any(d.key == "diabetes" for d in chronic):
            chronic = [d for d in chronic if d.key != "prediabetes"]
        height = rng.gauss(176.0 if person.gender == "male" else 163.0, 7.0)
        bmi = min(max(rng.gauss(27.0, 4.5), 18.0), 42.0)
        if bmi >= 30:
            chronic.append(OBESITY)
        state = {
            "height": height,
            "weight": bmi * (height / 100.0) ** 2,
            "systolic": rng.gauss(142.0 if any(d.key == "hypertension" for d in chronic) else 118.0, 8.0),
            "diastolic": rng.gauss(88.0, 5.0),
        }
        # Chronic conditions are diagnosed at some point of the history (or before it) and followed up afterwards.
        onsets = {d.key: start + timedelta(days=rng.randrange(-1500, HISTORY_DAYS - 200)) for d in chronic}

        visits: list[tuple[datetime, str, Disease | None]] = []
        day = rng.randrange(0, 300)
        while day < HISTORY_DAYS - 5:  # a wellness visit every year or two
            visits.append((self._clinic_time(start + timedelta(days=day)), "wellness", None))
            day += rng.randrange(330, 760)
        for disease in chronic:
            if not disease.panels and disease.key != "hypertension":
                continue
            day = max(0, (onsets[disease.key] - start).days) + rng.randrange(20, 60)
            while day < HISTORY_DAYS - 5:  # a follow-up about once a year after diagnosis
                visits.append((self._clinic_time(start + timedelta(days=day)), "followup", disease))
                day += rng.randrange(300, 480)
        for disease in ACUTE:
            for _ in range(self._poisson(disease.prevalence * HISTORY_DAYS / 365)):
                when = start + timedelta(days=rng.randrange(HISTORY_DAYS - 5))
                visits.append((self._clinic_time(when), "acute", disease))
        for _ in range(self._poisson(0.4)):
            when = start + timedelta(days=rng.randrange(HISTORY_DAYS - 10), hours=rng.randrange(24))
            visits.append((when.astimezone(self.tz), "emergency", rng.choice(ACUTE)))
        for _ in range(self._poisson(0.3)):
            when = start + timedelta(days=rng.randrange(HISTORY_DAYS - 10), hours=rng.randrange(24))
            visits.append((when.astimezone(self.tz), "inpatient", rng.choice(INPATIENT)))
        visits.sort(key=lambda visit: visit[0])

        encounters: list[tuple[datetime, str]] = []
        chronic_done: set[str] = set()
        for when, kind, reason in visits:
            enc_urn = self._visit(kind, when, reason, state, chronic, onsets)
            encounters.append((when, enc_urn))
            self._drift(state, chronic)
            for chronic_disease in chronic:
                # The chronic problem is recorded at the first visit on or after its onset.
                if chronic_disease.key not in chronic_done and onsets[chronic_disease.key] <= when:
                    chronic_done.add(chronic_disease.key)
                    self._condition(chronic_disease, onsets[chronic_disease.key], enc_urn, chronic=True)
        for disease in chronic:
            if disease.key not in chronic_done and encounters:
                self._condition(disease, onsets[disease.key], encounters[-1][1], chronic=True)
        self._chronic_medications(chronic, onsets, encounters)
        for _ in range(rng.randint(1, 2)):
            self._appointment(self._clinic_time(ANCHOR + timedelta(days=rng.randrange(7, 120))), None, "booked",
                              "FOLLOWUP")

    def _poisson(self, mean: float) -> int:
        # Knuth's method: small means only, and bounded so a bad mean cannot loop for long.
        limit, product, count = pow(2.718281828459045, -mean), self.rng.random(), 0
        while product > limit and count < 100:
            product *= self.rng.random()
            count += 1
        return count

    def _clinic_time(self, day: datetime) -> datetime:
        local = day.astimezone(self.tz)
        hour, minute = self.rng.randrange(8, 17), self.rng.choice((0, 15, 30, 45))
        return datetime(local.year, local.month, local.day, hour, minute, tzinfo=self.tz)

    def _drift(self, state: dict[str, float], chronic: list[Disease]) -> None:
        rng = self.rng
        state["weight"] = min(max(state["weight"] + rng.gauss(0.2, 1.5), 40.0), 160.0)
        treated = any(d.key == "hypertension" for d in chronic)
        state["systolic"] = min(max(state["systolic"] + rng.gauss(-0.5 if treated else 0.3, 3.5), 95.0), 185.0)
        state["diastolic"] = min(max(state["diastolic"] + rng.gauss(0.0, 2.0), 55.0), 110.0)

    # -- encounters and appointments ----------------------------------------------------------------------------------

    def _visit(
        self, kind: str, when: datetime, disease: Disease | None, state: dict[str, float], chronic: list[Disease],
        onsets: dict[str, datetime],
    ) -> str:
        rng = self.rng
        if kind == "inpatient":
            days = rng.randint(2, 6)
            end = when + timedelta(days=days, hours=rng.randrange(2, 8))
            enc_urn = self._encounter("IMP", kind, when, end, disease)
            for day in range(days):
                self._vitals(when + timedelta(days=day, hours=1), state, enc_urn, full=day == 0)
            self._labs(("bmp", "cbc"), when + timedelta(hours=2), enc_urn, state, chronic)
        elif kind == "emergency":
            end = when + timedelta(hours=rng.randint(2, 7))
            enc_urn = self._encounter("EMER", kind, when, end, disease)
            self._vitals(when + timedelta(minutes=20), state, enc_urn, full=False)
            if rng.random() < 0.5:
                self._labs(("cbc",), when + timedelta(minutes=45), enc_urn, state, chronic)
        else:
            end = when + timedelta(minutes=rng.choice((15, 20, 30, 45)))
            appointment_type = {"wellness": "ROUTINE", "followup": "FOLLOWUP", "acute": "WALKIN"}[kind]
            appointment = self._appointment(when, end, "fulfilled", appointment_type)
            enc_urn = self._encounter("AMB", kind, when, end, disease, appointment)
            self._vitals(when + timedelta(minutes=5), state, enc_urn, full=True)
            if kind == "wellness":
                # Every visit checks the metabolic panel; blood count and lipids every other visit on average.
                panels = ["bmp"] + [panel for panel in ("cbc", "lipid") if rng.random() < 0.5]
                if any(d.key in ("diabetes", "prediabetes") for d in chronic if onsets[d.key] <= when):
                    panels.append("a1c")
                self._labs(tuple(panels), when + timedelta(minutes=20), enc_urn, state, chronic)
            elif kind == "followup" and disease is not None and disease.panels:
                self._labs(disease.panels, when + timedelta(minutes=20), enc_urn, state, chronic)
        if disease is not None and kind != "followup":
            self._condition(disease, when, enc_urn, chronic=False, abated=end + timedelta(days=rng.randint(5, 20)))
            if disease.drugs:
                self._medication(rng.choice(disease.drugs), when + timedelta(minutes=25), enc_urn, "completed",
                                 days=10)
        return enc_urn

    def _encounter(
        self, klass: str, kind: str, start: datetime, end: datetime, disease: Disease | None,
        appointment: str | None = None,
    ) -> str:
        code, display = ENCOUNTER_TYPES[kind]
        resource: Resource = {
            "resourceType": "Encounter",
            "meta": _meta(),
            "status": "finished",
            "class": _coding(ACT_CODE, klass, CLASS_DISPLAY[klass]),
            "type": [_concept(SNOMED, code, display)],
            "subject": self._subject(),
            "participant": [
                {
                    "type": [_concept("http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "PPRF",
                                      "primary performer")],
                    "individual": self._practitioner(self.gp if klass == "AMB" else self.rng.randrange(
                        PRACTITIONERS_PER_ORG)),
                }
            ],
            "period": {"start": _dt(start), "end": _dt(end)},
            "serviceProvider": self._organization(),
        }
        if appointment:
            resource["appointment"] = [{"reference": appointment}]
        if disease is not None:
            resource["reasonCode"] = [_concept(SNOMED, disease.snomed, disease.display)]
        if klass == "IMP":
            resource["hospitalization"] = {
                "admitSource": _concept("http://terminology.hl7.org/CodeSystem/admit-source", "emd",
                                        "From accident/emergency department"),
                "dischargeDisposition": _concept("http://terminology.hl7.org/CodeSystem/discharge-disposition",
                                                 "home", "Home"),
            }
        return self._post(resource)

    def _appointment(self, start: datetime, end: datetime | None, status: str, kind: str) -> str:
        rng = self.rng
        minutes = rng.choice((15, 20, 30)) if end is None else int((end - start).total_seconds() // 60)
        end = end or start + timedelta(minutes=minutes)
        booked = min(start - timedelta(days=rng.randrange(1, 40), hours=rng.randrange(8)), ANCHOR - timedelta(hours=2))
        displays = {"ROUTINE": "Routine appointment - default if not valued",
                    "FOLLOWUP": "A follow up visit from a previous appointment",
                    "WALKIN": "A previously unscheduled walk-in visit"}
        return self._post({
            "resourceType": "Appointment",
            "meta": _meta(),
            "status": status,
            "appointmentType": _concept(APPOINTMENT_TYPE, kind, displays[kind]),
            "description": {"ROUTINE": "Annual check-up", "FOLLOWUP": "Follow-up visit",
                            "WALKIN": "Same-day visit"}[kind],
            "start": _dt(start),
            "end": _dt(end),
            "minutesDuration": minutes,
            "created": _dt(booked.astimezone(self.tz)),
            "participant": [
                {"actor": self._subject(), "required": "required", "status": "accepted"},
                {"actor": self._practitioner(), "required": "required", "status": "accepted"},
            ],
        })  # fmt: skip

    # -- observations -------------------------------------------------------------------------------------------------

    def _observation(self, category: str, code: str, display: str, when: datetime, enc: str, **body: Any) -> str:
        category_display = {"vital-signs": "Vital Signs", "laboratory": "Laboratory"}[category]
        resource: Resource = {
            "resourceType": "Observation",
            "meta": _meta(),
            "status": "final",
            "category": [{"coding": [_coding(OBS_CATEGORY, category, category_display)], "text": category_display}],
            "code": _concept(LOINC, code, display),
            "subject": self._subject(),
            "encounter": {"reference": enc},
            "effectiveDateTime": _dt(when),
        }
        resource.update(body)
        return self._post(resource)

    def _vital(self, name: str, when: datetime, enc: str, value: int | Decimal, **extra: Any) -> str:
        code, display, unit, ucum = VITALS[name]
        return self._observation("vital-signs", code, display, when, enc, valueQuantity=_quantity(value, unit, ucum),
                                 **extra)

    def _vitals(self, when: datetime, state: dict[str, float], enc: str, *, full: bool) -> None:
        rng = self.rng
        systolic = _decimal(state["systolic"] + rng.gauss(0, 4), 0)
        # Never exactly on the boundaries search_load queries (gt140): precision semantics must not decide a count.
        systolic = 141 if systolic == 140 else systolic
        diastolic = _decimal(min(state["diastolic"] + rng.gauss(0, 3), float(systolic) - 25), 0)
        code, display, _, _ = VITALS["bp"]
        components = []
        for name, value in (("systolic", systolic), ("diastolic", diastolic)):
            c_code, c_display, unit, ucum = VITALS[name]
            components.append(
                {"code": _concept(LOINC, c_code, c_display), "valueQuantity": _quantity(value, unit, ucum)}
            )
        self._observation("vital-signs", code, display, when, enc, component=components)
        self._vital("heart_rate", when, enc, _decimal(rng.gauss(72, 9), 0))
        self._vital("resp_rate", when, enc, _decimal(rng.gauss(15, 2), 0))
        self._vital("temperature", when, enc, _decimal(rng.gauss(36.8, 0.3), 1))
        self._vital("spo2", when, enc, _decimal(min(rng.gauss(97.5, 1.2), 100.0), 0))
        if not full:
            return
        weight = _decimal(state["weight"], 1)
        weight_urn = self._vital("weight", when, enc, weight)
        height_urn = self._vital("height", when, enc, _decimal(state["height"], 1))
        bmi = float(weight) / (state["height"] / 100.0) ** 2
        self._vital("bmi", when, enc, _decimal(bmi, 1), derivedFrom=[{"reference": weight_urn},
                                                                     {"reference": height_urn}])

    def _lab_value(self, name: str, chronic: list[Disease]) -> float:
        rng = self.rng
        keys = {d.key for d in chronic}
        lab = LABS[name]
        if name == "glucose":
            return rng.gauss(150, 35) if "diabetes" in keys else rng.gauss(104 if "prediabetes" in keys else 90, 10)
        if name == "hba1c":
            return rng.gauss(7.6, 0.8) if "diabetes" in keys else rng.gauss(6.0 if "prediabetes" in keys else 5.2, 0.3)
        if name in ("cholesterol", "ldl", "triglyceride") and "hyperlipidemia" in keys:
            return rng.gauss(lab.high * 1.2, lab.high * 0.1)
        if name in ("egfr",) and "ckd" in keys:
            return rng.gauss(45, 7)
        if name in ("creatinine",) and "ckd" in keys:
            return rng.gauss(1.7, 0.2)
        if name == "uacr":
            return rng.gauss(60, 25) if keys & {"diabetes", "ckd"} else abs(rng.gauss(12, 6))
        if name in ("hemoglobin", "hematocrit") and "anemia" in keys:
            return rng.gauss(lab.low * 0.85, lab.low * 0.04)
        return rng.gauss((lab.low + lab.high) / 2, (lab.high - lab.low) / 5)

    def _labs(
        self, panels: Sequence[str], drawn: datetime, enc: str, state: dict[str, float], chronic: list[Disease]
    ) -> None:
        rng = self.rng
        issued = (drawn + timedelta(hours=rng.randrange(3, 30), minutes=rng.randrange(60))).astimezone(UTC)
        names: list[str] = []
        for panel in panels:
            names.extend(name for name in PANELS[panel] if name not in names)
        for name in names:
            lab = LABS[name]
            common: dict[str, Any] = {"issued": _dt(issued)}
            if rng.random() < 0.03:
                # Specimen problem: no value, which is what value-quantity:missing=true must find.
                self._observation("laboratory", lab.loinc, lab.display, drawn, enc, status="cancelled",
                                  dataAbsentReason=_concept(DATA_ABSENT, "not-performed", "Not Performed"), **common)
                continue
            value = _decimal(max(self._lab_value(name, chronic), lab.low / 3, 0.1), lab.places)
            unit, low, high = lab.ucum, _decimal(lab.low, lab.places), _decimal(lab.high, lab.places)
            if name == "glucose":
                value = 101 if value == 100 else value  # keep clear of the gt100 mg/dL query boundary
                if self.glucose_g_per_l:
                    # 1 g/L = 100 mg/dL; two decimals, as French labs print it.
                    value = Decimal(int(value)).scaleb(-2)
                    unit, low, high = "g/L", Decimal("0.70"), Decimal("0.99")
            flag = ("L", "Low") if value < low else (("H", "High") if value > high else ("N", "Normal"))
            self._observation(
                "laboratory", lab.loinc, lab.display, drawn, enc,
                valueQuantity=_quantity(value, unit, unit),
                interpretation=[_concept(INTERPRETATION, *flag)],
                referenceRange=[{"low": _quantity(low, unit, unit), "high": _quantity(high, unit, unit)}],
                **common,
            )  # fmt: skip

    # -- conditions and medications -----------------------------------------------------------------------------------

    def _condition(
        self, disease: Disease, onset: datetime, enc: str, *, chronic: bool, abated: datetime | None = None
    ) -> None:
        status = "active" if chronic else "resolved"
        category = ("problem-list-item", "Problem List Item") if chronic else (
            "encounter-diagnosis", "Encounter Diagnosis")
        resource: Resource = {
            "resourceType": "Condition",
            "meta": _meta(),
            "clinicalStatus": _concept(COND_CLINICAL, status, status.capitalize()),
            "verificationStatus": _concept(COND_VERIFICATION, "confirmed", "Confirmed"),
            "category": [_concept(COND_CATEGORY, *category)],
            "code": _concept(SNOMED, disease.snomed, disease.display),
            "subject": self._subject(),
            "encounter": {"reference": enc},
            "onsetDateTime": _dt(onset.astimezone(self.tz)),
            "recordedDate": _dt(max(onset, ANCHOR - timedelta(days=HISTORY_DAYS)).astimezone(self.tz)),
        }
        if abated is not None:
            resource["abatementDateTime"] = _dt(abated)
        self._post(resource)

    def _medication(self, name: str, authored: datetime, enc: str, status: str, *, days: int) -> None:
        drug = DRUGS[name]
        dosage: Resource = {
            "sequence": 1,
            "text": drug.text,
            "timing": {"repeat": {"frequency": drug.per_day, "period": 1, "periodUnit": "d"}},
            "route": _concept(SNOMED, "26643006", "Oral route"),
        }
        self._post({
            "resourceType": "MedicationRequest",
            "meta": _meta(),
            "status": status,
            "intent": "order",
            "category": [_concept(MEDREQ_CATEGORY, "community", "Community")],
            "medicationCodeableConcept": _concept(RXNORM, drug.rxnorm, drug.display),
            "subject": self._subject(),
            "encounter": {"reference": enc},
            "authoredOn": _dt(authored),
            "requester": self._practitioner(),
            "dosageInstruction": [dosage],
            "dispenseRequest": {
                "numberOfRepeatsAllowed": 0 if days < 30 else 3,
                "quantity": _quantity(days * drug.per_day, "tablet", "{tbl}"),
                "expectedSupplyDuration": _quantity(days, "days", "d"),
            },
        })  # fmt: skip

    def _chronic_medications(
        self, chronic: list[Disease], onsets: dict[str, datetime], encounters: list[tuple[datetime, str]]
    ) -> None:
        if not encounters:
            return
        times = [when for when, _ in encounters]
        for disease in chronic:
            if not disease.drugs:
                continue
            name = self.rng.choice(disease.drugs)
            # Renewed once a year at the first visit after each anniversary of the diagnosis; the last one is active,
            # and one patient in ten stopped the drug at some renewal.
            renewals: list[tuple[datetime, str]] = []
            due = onsets[disease.key]
            while True:
                index = bisect_left(times, due)
                if index >= len(times):
                    break
                renewals.append(encounters[index])
                due = encounters[index][0] + timedelta(days=365)
            stopped_at = len(renewals) - 1 if self.rng.random() < 0.1 else None
            for number, (when, enc) in enumerate(renewals):
                last = number == len(renewals) - 1
                status = ("stopped" if number == stopped_at else "active") if last else "completed"
                self._medication(name, when + timedelta(minutes=25), enc, status, days=90)
            if disease.key == "hypertension" and renewals and self.rng.random() < 0.5:
                self._medication("aspirin", renewals[-1][0] + timedelta(minutes=26), renewals[-1][1], "active",
                                 days=90)


# --------------------------------------------------------------------------------------------------------------------
# Facts: what search_load.py must find
# --------------------------------------------------------------------------------------------------------------------


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text)


def facts_of(resources: list[Resource]) -> dict[str, Any]:
    """Per-patient counts each patient-scoped search shape must return (the Patient itself not included)."""
    obs_by_category: Counter[str] = Counter()
    obs_by_code: Counter[str] = Counter()
    enc_by_class: Counter[str] = Counter()
    cond_by_status: Counter[str] = Counter()
    cond_by_category: Counter[str] = Counter()
    med_by_status: Counter[str] = Counter()
    missing_value = systolic_gt140 = glucose_gt100 = 0
    busy: list[tuple[datetime, datetime]] = []  # every dated thing, to find quiet days for date-range windows
    labs: list[datetime] = []
    encounters: list[datetime] = []
    appointments: list[datetime] = []
    for r in resources:
        kind = r["resourceType"]
        if kind == "Observation":
            obs_by_category[r["category"][0]["coding"][0]["code"]] += 1
            code = r["code"]["coding"][0]["code"]
            obs_by_code[code] += 1
            when = _instant(r["effectiveDateTime"])
            busy.append((when, when))
            if r["category"][0]["coding"][0]["code"] == "laboratory":
                labs.append(when)
            quantity = r.get("valueQuantity")
            if quantity is None:
                missing_value += 1
            elif code == GLUCOSE_LOINC:
                mg_per_dl = quantity["value"] * (100 if quantity["code"] == "g/L" else 1)
                glucose_gt100 += mg_per_dl > 100
            for component in r.get("component", ()):
                is_systolic = component["code"]["coding"][0]["code"] == SYSTOLIC_LOINC
                if is_systolic and component["valueQuantity"]["value"] > 140:
                    systolic_gt140 += 1
        elif kind == "Encounter":
            enc_by_class[r["class"]["code"]] += 1
            start, end = _instant(r["period"]["start"]), _instant(r["period"]["end"])
            busy.append((start, end))
            encounters.append(start)
        elif kind == "Appointment":
            start, end = _instant(r["start"]), _instant(r["end"])
            busy.append((start, end))
            appointments.append(start)
        elif kind == "Condition":
            cond_by_status[r["clinicalStatus"]["coding"][0]["code"]] += 1
            cond_by_category[r["category"][0]["coding"][0]["code"]] += 1
        elif kind == "MedicationRequest":
            med_by_status[r["status"]] += 1
    window = _window(busy, labs, encounters, appointments)
    return {
        "Observation": sum(obs_by_category.values()),
        "Encounter": sum(enc_by_class.values()),
        "Appointment": len(appointments),
        "Condition": sum(cond_by_status.values()),
        "MedicationRequest": sum(med_by_status.values()),
        "obs_by_category": dict(obs_by_category),
        "obs_by_code": dict(obs_by_code),
        "obs_missing_value_quantity": missing_value,
        "obs_systolic_gt140": systolic_gt140,
        "obs_glucose_gt100_mg_dl": glucose_gt100,
        "enc_by_class": dict(enc_by_class),
        "cond_by_clinical_status": dict(cond_by_status),
        "cond_by_category": dict(cond_by_category),
        "medreq_by_status": dict(med_by_status),
        "window": window,
    }


def _window(
    busy: list[tuple[datetime, datetime]], labs: list[datetime], encounters: list[datetime],
    appointments: list[datetime],
) -> dict[str, Any]:
    """Two quiet days (nothing dated within two days either side, in any time zone) about a third and two thirds
    into the history, and how many labs, encounters and appointments fall between or after them.

    Quiet days make the expected counts independent of how a server interprets a date without a time zone."""
    days: set[date] = set()
    for began, ended in busy:
        first, last = began.astimezone(UTC).date(), ended.astimezone(UTC).date()
        span = min((last - first).days, 60)
        for offset in range(-3, span + 4):
            days.add(first + timedelta(days=offset))
    origin = (ANCHOR - timedelta(days=HISTORY_DAYS)).date()

    def quiet_near(target: date) -> date:
        for step in range(0, 400):  # bounded search outwards from the target day
            for candidate in (target + timedelta(days=step), target - timedelta(days=step)):
                if candidate not in days:
                    return candidate
        return target

    start = quiet_near(origin + timedelta(days=HISTORY_DAYS // 3))
    end = quiet_near(origin + timedelta(days=2 * HISTORY_DAYS // 3))
    if end <= start:
        end = quiet_near(start + timedelta(days=400))
    low = datetime(start.year, start.month, start.day, tzinfo=UTC)
    high = datetime(end.year, end.month, end.day, tzinfo=UTC)
    return {
        "start": start.isoformat(),
        "end": end.isoformat(),
        "labs_between": sum(low < t < high for t in labs),
        "encounters_between": sum(low < t < high for t in encounters),
        "appointments_after_start": sum(t > low for t in appointments),
    }


# --------------------------------------------------------------------------------------------------------------------
# Cohort, replication, files
# --------------------------------------------------------------------------------------------------------------------


BUNDLE_HEAD = b'{"resourceType":"Bundle","type":"transaction","entry":['


def copy_person(base: Person, pk: int, seed: int) -> Person:
    """A copy's identity: same gender, other names, birth date moved by up to 60 days (never into the history)."""
    rng = random.Random(f"{seed}/copy/{pk}")
    given, family = _names(rng, base.gender)
    shift = timedelta(days=rng.randrange(-60, 1))  # earlier only: a later birth could follow the first visit
    return Person(pk, base.gender, given, family, base.birth + shift)


def bundle_bytes(built: Built, person: Person, seed: int) -> bytes:
    rest = built.rest
    if person.pk != built.person.pk:
        # Every urn of the base Bundle starts with the base patient number: swap it for the copy's.
        rest = rest.replace(b"urn:uuid:%08x-" % built.person.pk, b"urn:uuid:%08x-" % person.pk)
    return BUNDLE_HEAD + _patient_entry(person, seed, built.patient_extra) + b"," + rest + b"]}"


def check_bundle(data: bytes, where: str) -> None:
    """fhirkit validates every entry's resource as part of the Bundle (checked: it reports
    ``Bundle.entry[0].resource.status: required element missing``)."""
    issues = fhirkit.validate(data)
    if issues:
        shown = "; ".join(str(issue) for issue in issues[:5])
        raise SystemExit(f"generated data fails fhirkit.validate ({where}): {len(issues)} issue(s): {shown}")


def source_hash() -> str:
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]


@dataclass(slots=True)
class Cohort:
    seed: int
    base: list[Built] = field(default_factory=list)
    people: list[Person] = field(default_factory=list)


def sample_indices(patients: int, samples: int) -> list[int]:
    """Evenly spread over all patients (copies included) so samples hit both early and late rows of the store."""
    count = min(samples, patients)
    return sorted({(i * patients) // count for i in range(count)})


def expectations(cohort: Cohort, samples: list[int]) -> tuple[list[Resource], Resource]:
    """Sample patients with per-patient expected counts, and cohort-wide expected counts."""
    base_n = len(cohort.base)
    folded = [(fold(p.family), [fold(g) for g in p.given]) for p in cohort.people]
    births = Counter(p.birth for p in cohort.people)
    out: list[Resource] = []
    for pk in samples:
        person = cohort.people[pk]
        built = cohort.base[pk % base_n]
        query = fold(person.family)
        name_hits = [i for i, (fam, giv) in enumerate(folded) if fam.startswith(query) or any(g.startswith(query)
                                                                                            for g in giv)]
        family_gender = sum(
            1 for i, (fam, _) in enumerate(folded) if fam.startswith(query) and cohort.people[i].gender == person.gender
        )
        out.append({
            "pk": pk,
            "mrn": mrn(cohort.seed, pk),
            "family": person.family,
            "family_query": unicodedata.normalize("NFKD", person.family).encode("ascii", "ignore").decode(),
            "given": person.given,
            "gender": person.gender,
            "birthDate": person.birth.isoformat(),
            "facts": built.facts,
            "cohort": {
                "patients_named": len(name_hits),
                "patients_family_gender": family_gender,
                "patients_born_same_day": births[person.birth],
                "observations_of_patients_named": sum(cohort.base[i % base_n].facts["Observation"] for i in name_hits),
            },
        })  # fmt: skip
    multiplicity = [0] * base_n
    for pk in range(len(cohort.people)):
        multiplicity[pk % base_n] += 1
    has_code: Counter[str] = Counter()
    glucose = 0
    glucose_mg_unit = 0
    for b, built in enumerate(cohort.base):
        for code in built.facts["obs_by_code"]:
            has_code[code] += multiplicity[b]
        glucose += built.facts["obs_glucose_gt100_mg_dl"] * multiplicity[b]
        if CITIES[built.city].country not in GLUCOSE_G_PER_L_COUNTRIES:
            glucose_mg_unit += built.facts["obs_glucose_gt100_mg_dl"] * multiplicity[b]
    cohort_facts = {
        "patients_with_observation_code": dict(has_code),
        "glucose_gt100_mg_dl_any_unit": glucose,
        "glucose_gt100_mg_dl_in_mg_dl_only": glucose_mg_unit,
    }
    return out, cohort_facts


def generate(args: argparse.Namespace) -> int:
    out: Path = args.out
    key = {
        "patients": args.patients, "seed": args.seed, "base_cohort": min(args.base_cohort, args.patients),
        "samples": args.samples, "generator": source_hash(),
    }  # fmt: skip
    manifest_path = out / MANIFEST
    if manifest_path.exists() and not args.force:
        try:
            old = orjson.loads(manifest_path.read_bytes())
        except orjson.JSONDecodeError:
            old = {}
        if old.get("key") == key and all((out / name).exists() for name in old.get("files", [])):
            print(f"cached: {out} already holds this data set ({old['total']:,} resources); --force regenerates")
            return 0

    started = time.perf_counter()
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    counts: Counter[str] = Counter()
    files: list[str] = []

    shared = dumps(shared_bundle())
    check_bundle(shared, SHARED_FILE)
    (tmp / SHARED_FILE).write_bytes(shared + b"\n")
    files.append(SHARED_FILE)
    counts.update({"Organization": len(ORGANIZATIONS), "Practitioner": len(ORGANIZATIONS) * PRACTITIONERS_PER_ORG})

    cohort = Cohort(args.seed)
    base_n = key["base_cohort"]
    for pk in range(base_n):
        cohort.base.append(PatientBuilder(args.seed, pk).build())
    base_time = time.perf_counter() - started
    print(f"simulated {base_n:,} base patients in {base_time:.1f} s", flush=True)

    validate_time = 0.0
    bundle_entries: list[int] = []
    handle = None
    for pk in range(args.patients):
        built = cohort.base[pk % base_n]
        person = built.person if pk < base_n else copy_person(built.person, pk, args.seed)
        cohort.people.append(person)
        data = bundle_bytes(built, person, args.seed)
        clock = time.perf_counter()
        check_bundle(data, f"patient {pk}")
        validate_time += time.perf_counter() - clock
        if pk % BUNDLES_PER_FILE == 0:
            if handle is not None:
                handle.close()
            name = f"patients-{pk // BUNDLES_PER_FILE:04d}.ndjson"
            files.append(name)
            handle = (tmp / name).open("wb")
        assert handle is not None
        handle.write(data + b"\n")
        counts.update(built.counts)
        bundle_entries.append(built.entries)
    if handle is not None:
        handle.close()

    samples, cohort_facts = expectations(cohort, sample_indices(args.patients, args.samples))
    elapsed = time.perf_counter() - started
    total = sum(counts.values())
    manifest = {
        "key": key,
        "generator": "bench/datagen.py",
        "command": command_line(args),
        "anchor": ANCHOR.isoformat(),
        "history_days": HISTORY_DAYS,
        "patients": args.patients,
        "total": total,
        "counts": dict(sorted(counts.items())),
        "bundles": args.patients,
        "entries_per_bundle": {"min": min(bundle_entries, default=0), "max": max(bundle_entries, default=0),
                               "mean": round(sum(bundle_entries) / max(1, len(bundle_entries)), 1)},
        "files": files,
        "seconds": {"total": round(elapsed, 2), "simulate_base": round(base_time, 2),
                    "validate": round(validate_time, 2)},
        "systems": {"mrn": MRN_SYSTEM, "loinc": LOINC, "ucum": UCUM, "snomed": SNOMED, "rxnorm": RXNORM,
                    "observation_category": OBS_CATEGORY, "act_code": ACT_CODE},
        "codes": {
            "glucose": GLUCOSE_LOINC, "hba1c": HBA1C_LOINC, "systolic": SYSTOLIC_LOINC, "bp_panel": VITALS["bp"][0],
            "labs": {name: lab.loinc for name, lab in LABS.items()},
            "vitals": {name: value[0] for name, value in VITALS.items()},
            "conditions": {d.key: d.snomed for d in (*CHRONIC, *ACUTE, *INPATIENT, OBESITY)},
            "medications": {name: drug.rxnorm for name, drug in DRUGS.items()},
        },
        "cohort": cohort_facts,
        "samples": samples,
    }  # fmt: skip
    (tmp / MANIFEST).write_bytes(orjson.dumps(manifest, default=_json_default, option=orjson.OPT_INDENT_2))
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    size = sum(f.stat().st_size for f in out.iterdir())
    print(f"wrote {args.patients:,} patients, {total:,} resources ({size / 2**20:,.0f} MiB) to {out} "
          f"in {elapsed:.1f} s ({total / elapsed:,.0f} resources/s; fhirkit.validate {validate_time:.1f} s)")
    width = max(len(name) for name in counts)
    for name, n in sorted(counts.items(), key=lambda item: -item[1]):
        print(f"  {name:<{width}}  {n:>10,}")
    print(f"  {'total':<{width}}  {total:>10,}")
    return 0


def command_line(args: argparse.Namespace) -> str:
    return (f"python bench/datagen.py --patients {args.patients} --seed {args.seed} --base-cohort {args.base_cohort} "
            f"--samples {args.samples} --out {args.out}")


def iter_bundles(directory: Path) -> Iterator[tuple[str, bytes]]:
    """``(file name, Bundle bytes)`` of a generated directory in load order: shared first, then patients."""
    manifest = orjson.loads((directory / MANIFEST).read_bytes())
    for name in manifest["files"]:
        with (directory / name).open("rb") as handle:
            for line in handle:
                if line.strip():
                    yield name, line.rstrip(b"\n")


def _bounded_int(low: int, high: int) -> Any:
    def parse(text: str) -> int:
        value = int(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text} is outside [{low}, {high}]")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Write seeded Synthea-like transaction Bundles for the Aegis search benchmark.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--patients", type=_bounded_int(1, MAX_PATIENTS), default=1000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--base-cohort", type=_bounded_int(1, MAX_PATIENTS), default=1000,
        help="patients simulated; any beyond are copies of them with fresh ids, identifiers and names",
    )  # fmt: skip
    parser.add_argument("--samples", type=_bounded_int(1, 10_000), default=DEFAULT_SAMPLES,
                        help="sample patients recorded in the manifest for search_load.py")
    parser.add_argument("--out", type=Path, required=True, help="output directory (replaced when regenerated)")
    parser.add_argument("--force", action="store_true", help="regenerate even when the directory is up to date")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return generate(args)


if __name__ == "__main__":
    sys.exit(main())
