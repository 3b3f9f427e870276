"""Search benchmark: US Core-like query shapes against a server loaded with ``bench/datagen.py`` data.

Each *shape* is one kind of search (``Observation?patient=X&category=Y``, ``Patient?name=Z``, ``_include``, chains,
``_has``, quantities with unit conversion, ...). It is instantiated with values drawn from the loaded data: the
generator's manifest lists ~200 sample patients (MRN, names, birth date, codes, quiet date windows) together with the
number of resources each shape must find for them, and this tool learns their server ids with
``Patient?identifier=MRN`` (falling back to paging through ``Patient`` when identifier search does not work). Every
shape is run at each ``--clients`` level (default 1 and 16) for ``--seconds`` after ``--warmup``, over the client in
``bench/loadclient.py`` (closed loop, latency from request written to body received).

What every response is checked for:

* ``200`` and a ``searchset`` Bundle, otherwise an error (excluded from latency, listed, exit status 1);
* the number of ``match`` entries on the first page against what the data holds (``min(expected, _count)``), the
  ``total`` when the server sends one, the number of ``include`` entries for ``_include``/``_revinclude``, and the
  order for ``_sort``: a difference is a *count mismatch* warning, with an example;
* zero-result shapes are warned about: a search that finds nothing is cheap and its figures would mean nothing;
* ``OperationOutcome`` entries (``search.mode = outcome``, how a lenient server reports parameters it ignored) are
  warned about with their text. By default requests carry ``Prefer: handling=strict`` so an unsupported parameter
  fails loudly (400) instead of being silently dropped; ``--lenient`` leaves the header out.

Before a shape is timed, one probe request runs; a shape whose probe fails (e.g. ``400`` because the server does not
support the parameter yet) is reported as *skipped* with the server's message, not timed, and makes the exit status 1.

Single-patient shapes (scope ``patient``) are marked against the targets of issue #3 (p50 ≤ 10 ms, p95 ≤ 40 ms).
``--json FILE`` writes the figures; ``--baseline FILE`` (an earlier ``--json``, e.g. the 1,000-patient run) adds the
p50 growth factor per shape and clients (target ≤ 1.5× from 1,000 to 10,000 patients).

Example::

    python bench/search_load.py --base http://127.0.0.1:8080/fhir --data /tmp/aegis-bench-data/p1000-s42 \\
        --clients 1,16 --seconds 5 --record bench/RESULTS.md --json /tmp/search-1000.json
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from itertools import pairwise
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import orjson

# Run as a script (python bench/search_load.py): bench/ is then sys.path[0], where the sibling modules are.
from datagen import MANIFEST
from loadclient import (  # noqa: I001
    Client, HttpError, Operation, OpResult, OpWorker, Response, SetupError, Target, add_report_arguments,
    append_record, bounded, machine_facts, parse_target, report_head, run, run_operation, server_facts,
    write_figures,
)

# Issue #3's targets for single-patient searches on the 2-core machine.
TARGET_P50_MS = 10.0
TARGET_P95_MS = 40.0
TARGET_GROWTH = 1.5

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
COND_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"


# --------------------------------------------------------------------------------------------------------------------
# Shapes
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Expect:
    """What one instance must return; None means "not checked"."""

    matches: int | None = None  # total matches; the first page must hold min(matches, _count)
    included: int | None = None  # include entries on the first page
    sort_desc: str | None = None  # element whose value must not increase along the page (e.g. effectiveDateTime)
    count_only: bool = False  # _summary=count: total must equal matches, no entries expected
    paged: bool = True  # False when the first page is not limited by _count (whole result expected)
    offset: int = 0  # matches before this page (the 'next' page of the paging shape)


@dataclass(frozen=True, slots=True)
class Sample:
    pid: str  # server id of the sample patient
    data: dict[str, Any]  # the manifest's sample entry
    index: int


# A builder returns the query (relative to the FHIR base, without _count) and its expectation, or None when the
# sample has nothing for this shape (the instance is then left out rather than run with an empty answer).
Builder = Callable[[Sample, dict[str, Any]], tuple[str, Expect] | None]


@dataclass(frozen=True, slots=True)
class Shape:
    name: str
    scope: str  # "patient": one patient's data (issue #3's latency targets apply); "cohort": across patients
    resource: str  # the type whose entries are the matches
    models: str  # what it stands for (US Core interaction or feature)
    build: Builder
    add_count: bool = True  # append &_count=page
    next_page: bool = False  # the instance is the 'next' link of the built query, learned in set-up


def q(value: str) -> str:
    """Percent-encode a parameter value ('|' and ',' included) as a careful client would."""
    return quote(value, safe="")


def _facts(s: Sample) -> dict[str, Any]:
    return s.data["facts"]  # type: ignore[no-any-return]


def _obs_code(s: Sample, m: dict[str, Any]) -> tuple[str, Expect] | None:
    by_code: dict[str, int] = _facts(s)["obs_by_code"]
    codes = sorted(by_code)
    code = codes[s.index % len(codes)]
    return f"Observation?patient={s.pid}&code={q(f'{LOINC}|{code}')}", Expect(by_code[code])


def _obs_category(s: Sample, m: dict[str, Any]) -> tuple[str, Expect] | None:
    by_category: dict[str, int] = _facts(s)["obs_by_category"]
    # Alternate the plain-code and system|code forms US Core clients use.
    if s.index % 2:
        return f"Observation?patient={s.pid}&category=vital-signs", Expect(by_category.get("vital-signs", 0))
    value = q(f"{OBS_CATEGORY}|laboratory")
    return f"Observation?patient={s.pid}&category={value}", Expect(by_category.get("laboratory", 0))


def _obs_category_date(s: Sample, m: dict[str, Any]) -> tuple[str, Expect] | None:
    w = _facts(s)["window"]
    path = f"Observation?patient={s.pid}&category=laboratory&date=ge{w['start']}&date=lt{w['end']}"
    return path, Expect(w["labs_between"])


def _obs_code_or(s: Sample, m: dict[str, Any]) -> tuple[str, Expect] | None:
    vitals = m["codes"]["vitals"]
    by_code = _facts(s)["obs_by_code"]
    a, b = vitals["heart_rate"], vitals["resp_rate"]
    return (f"Observation?patient={s.pid}&code={q(f'{LOINC}|{a}')},{q(f'{LOINC}|{b}')}",
            Expect(by_code.get(a, 0) + by_code.get(b, 0)))


def _has_code(s: Sample, m: dict[str, Any]) -> tuple[str, Expect] | None:
    # Rarer codes so _has has to discriminate: HbA1c (diabetics and prediabetics), urine albumin, eGFR.
    labs = m["codes"]["labs"]
    code = (labs["hba1c"], labs["uacr"], labs["egfr"])[s.index % 3]
    expected = m["cohort"]["patients_with_observation_code"].get(code, 0)
    return f"Patient?_has:Observation:patient:code={q(f'{LOINC}|{code}')}", Expect(expected)


def _glucose(unit_query: str) -> Builder:
    def build(s: Sample, m: dict[str, Any]) -> tuple[str, Expect] | None:
        code = q(f"{LOINC}|{m['codes']['glucose']}")
        return (f"Observation?code={code}&value-quantity={q(unit_query)}",
                Expect(m["cohort"]["glucose_gt100_mg_dl_any_unit"]))

    return build


def _condition_status(s: Sample, m: dict[str, Any]) -> tuple[str, Expect] | None:
    by_status: dict[str, int] = _facts(s)["cond_by_clinical_status"]
    status = "active" if by_status.get("active") else "resolved"
    return (f"Condition?patient={s.pid}&clinical-status={q(f'{COND_CLINICAL}|{status}')}",
            Expect(by_status.get(status, 0)))


def _medreq_status(s: Sample, m: dict[str, Any]) -> tuple[str, Expect] | None:
    by_status: dict[str, int] = _facts(s)["medreq_by_status"]
    status = "active" if by_status.get("active") else "completed"
    return f"MedicationRequest?patient={s.pid}&status={status}", Expect(by_status.get(status, 0))


def _patient_scoped(path: str, key: Callable[[dict[str, Any]], int], **expect: Any) -> Builder:
    def build(s: Sample, m: dict[str, Any]) -> tuple[str, Expect] | None:
        return path.format(pid=s.pid, **_facts(s)["window"]), Expect(key(_facts(s)), **expect)

    return build


def _cohort_sample(path: str, key: str, value: Callable[[Sample], str]) -> Builder:
    def build(s: Sample, m: dict[str, Any]) -> tuple[str, Expect] | None:
        return path.format(value=q(value(s))), Expect(s.data["cohort"][key])

    return build


SHAPES: tuple[Shape, ...] = (
    # --- Patient ---
    Shape("patient-identifier", "patient", "Patient", "US Core Patient?identifier=system|value",
          lambda s, m: (f"Patient?identifier={q(m['systems']['mrn'] + '|' + s.data['mrn'])}", Expect(1))),
    Shape("patient-name", "cohort", "Patient", "US Core Patient?name= (starts-with, accent-insensitive)",
          _cohort_sample("Patient?name={value}", "patients_named", lambda s: s.data["family_query"])),
    Shape("patient-family-gender", "cohort", "Patient", "US Core Patient?family=&gender=",
          lambda s, m: (f"Patient?family={q(s.data['family_query'])}&gender={s.data['gender']}",
                        Expect(s.data["cohort"]["patients_family_gender"]))),
    Shape("patient-birthdate", "cohort", "Patient", "US Core Patient?birthdate=",
          _cohort_sample("Patient?birthdate={value}", "patients_born_same_day", lambda s: s.data["birthDate"])),
    Shape("patient-revinclude-obs", "patient", "Patient", "_revinclude: Patient?_id=X&_revinclude=Observation:patient",
          lambda s, m: (f"Patient?_id={s.pid}&_revinclude=Observation:patient",
                        Expect(1, included=_facts(s)["Observation"], paged=False)),
          add_count=False),
    Shape("patient-has-obs-code", "cohort", "Patient", "_has: Patient?_has:Observation:patient:code=", _has_code),
    # --- Observation, one patient ---
    Shape("obs-patient", "patient", "Observation", "Observation?patient=",
          _patient_scoped("Observation?patient={pid}", lambda f: f["Observation"])),
    Shape("obs-patient-category", "patient", "Observation", "US Core Observation?patient=&category=", _obs_category),
    Shape("obs-patient-code", "patient", "Observation", "US Core Observation?patient=&code=", _obs_code),
    Shape("obs-patient-category-date", "patient", "Observation",
          "US Core Observation?patient=&category=&date=ge&date=lt", _obs_category_date),
    Shape("obs-patient-code-or", "patient", "Observation", "OR: Observation?patient=&code=a,b", _obs_code_or),
    Shape("obs-patient-sort-date", "patient", "Observation", "_sort: Observation?patient=&_sort=-date",
          _patient_scoped("Observation?patient={pid}&_sort=-date", lambda f: f["Observation"],
                          sort_desc="effectiveDateTime")),
    Shape("obs-patient-missing-value", "patient", "Observation", ":missing: value-quantity:missing=true",
          _patient_scoped("Observation?patient={pid}&value-quantity:missing=true",
                          lambda f: f["obs_missing_value_quantity"])),
    Shape("obs-patient-include-patient", "patient", "Observation", "_include: Observation?patient=&_include=",
          _patient_scoped("Observation?patient={pid}&_include=Observation:patient", lambda f: f["Observation"],
                          included=1)),
    Shape("obs-patient-component-gt", "patient", "Observation",
          "composite: component-code-value-quantity=8480-6$gt140",
          _patient_scoped("Observation?patient={pid}&component-code-value-quantity="
                          + q(f"{LOINC}|8480-6$gt140"), lambda f: f["obs_systolic_gt140"])),
    Shape("obs-patient-glucose-g-dl", "patient", "Observation",
          "quantity, UCUM: glucose gt0.100 g/dL (data in mg/dL and g/L)",
          _patient_scoped("Observation?patient={pid}&code=" + q(f"{LOINC}|2339-0") + "&value-quantity="
                          + q(f"gt0.100|{UCUM}|g/dL"), lambda f: f["obs_glucose_gt100_mg_dl"])),
    Shape("obs-patient-summary-count", "patient", "Observation", "_summary=count",
          _patient_scoped("Observation?patient={pid}&_summary=count", lambda f: f["Observation"], count_only=True),
          add_count=False),
    Shape("obs-compartment", "patient", "Observation", "compartment: Patient/X/Observation?category=",
          _patient_scoped("Patient/{pid}/Observation?category=vital-signs",
                          lambda f: f["obs_by_category"].get("vital-signs", 0))),
    Shape("obs-patient-page2", "patient", "Observation", "paging: the 'next' link of Observation?patient=",
          _patient_scoped("Observation?patient={pid}", lambda f: f["Observation"]), next_page=True),
    Shape("obs-chain-identifier", "patient", "Observation", "chain: Observation?subject:Patient.identifier=",
          lambda s, m: (f"Observation?subject:Patient.identifier={q(m['systems']['mrn'] + '|' + s.data['mrn'])}",
                        Expect(_facts(s)["Observation"]))),
    # --- Observation, across patients ---
    Shape("obs-chain-name", "cohort", "Observation", "chain: Observation?subject.name=",
          _cohort_sample("Observation?subject.name={value}", "observations_of_patients_named",
                         lambda s: s.data["family_query"])),
    Shape("obs-code-quantity-mg", "cohort", "Observation", "quantity: code=glucose&value-quantity=gt100|UCUM|mg/dL",
          _glucose(f"gt100|{UCUM}|mg/dL")),
    Shape("obs-code-quantity-g", "cohort", "Observation", "quantity, mg vs g: value-quantity=gt1.00|UCUM|g/L",
          _glucose(f"gt1.00|{UCUM}|g/L")),
    # --- Encounter, Condition, MedicationRequest, Appointment ---
    Shape("encounter-patient", "patient", "Encounter", "US Core Encounter?patient=",
          _patient_scoped("Encounter?patient={pid}", lambda f: f["Encounter"])),
    Shape("encounter-patient-date", "patient", "Encounter", "US Core Encounter?patient=&date=ge&date=lt",
          _patient_scoped("Encounter?patient={pid}&date=ge{start}&date=lt{end}",
                          lambda f: f["window"]["encounters_between"])),
    Shape("encounter-patient-class", "patient", "Encounter", "US Core Encounter?patient=&class=",
          _patient_scoped("Encounter?patient={pid}&class=" + q(f"{ACT_CODE}|AMB"),
                          lambda f: f["enc_by_class"].get("AMB", 0))),
    Shape("condition-patient-clinical-status", "patient", "Condition", "US Core Condition?patient=&clinical-status=",
          _condition_status),
    Shape("condition-patient-category", "patient", "Condition", "US Core Condition?patient=&category=",
          _patient_scoped("Condition?patient={pid}&category=problem-list-item",
                          lambda f: f["cond_by_category"].get("problem-list-item", 0))),
    Shape("medreq-patient-status", "patient", "MedicationRequest", "US Core MedicationRequest?patient=&status=",
          _medreq_status),
    Shape("medreq-patient-intent", "patient", "MedicationRequest", "US Core MedicationRequest?patient=&intent=",
          _patient_scoped("MedicationRequest?patient={pid}&intent=order", lambda f: f["MedicationRequest"])),
    Shape("appointment-patient-date", "patient", "Appointment", "Appointment?patient=&date=ge",
          _patient_scoped("Appointment?patient={pid}&date=ge{start}",
                          lambda f: f["window"]["appointments_after_start"])),
)  # fmt: skip
SHAPE_NAMES = tuple(shape.name for shape in SHAPES)


# --------------------------------------------------------------------------------------------------------------------
# Checking answers
# --------------------------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Instance:
    raw: bytes  # the whole HTTP request, built once
    path: str
    expect: Expect


def _utc(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


@dataclass(slots=True)
class Verdict:
    error: str | None = None  # the answer is not a searchset Bundle: an error
    matches: int = 0
    mismatch: str | None = None  # the answer is a searchset but not the one the data calls for: a warning
    kind: str = ""  # which check the mismatch failed, to group them
    outcome: str | None = None  # the server reported something in an OperationOutcome entry


def judge(response: Response, shape: Shape, expect: Expect, page: int) -> Verdict:
    if response.status != 200:
        return Verdict(error=f"status {response.status}: {_diagnostics(response.body)}")
    try:
        bundle = orjson.loads(response.body)
    except orjson.JSONDecodeError:
        return Verdict(error="body is not JSON")
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle" or bundle.get("type") != "searchset":
        return Verdict(error="not a searchset Bundle")
    verdict = Verdict()
    matches: list[dict[str, Any]] = []
    included = 0
    for entry in bundle.get("entry") or ():
        resource = entry.get("resource") or {}
        mode = (entry.get("search") or {}).get("mode")
        if mode == "outcome" or (mode is None and resource.get("resourceType") == "OperationOutcome"):
            texts = [str(i.get("diagnostics") or (i.get("details") or {}).get("text") or "")
                     for i in resource.get("issue") or ()]
            verdict.outcome = "; ".join(t for t in texts if t)[:200] or "OperationOutcome entry"
        elif mode == "include":
            included += 1
        elif mode == "match" or (mode is None and resource.get("resourceType") == shape.resource):
            matches.append(resource)
        else:
            included += 1
    verdict.matches = len(matches)
    total = bundle.get("total")
    if expect.count_only:
        verdict.matches = total if isinstance(total, int) else 0
        if total != expect.matches:
            verdict.mismatch, verdict.kind = f"_summary=count total {total}, data holds {expect.matches}", "total"
        return verdict
    if expect.matches is not None:
        left = max(0, expect.matches - expect.offset)
        wanted = left if not expect.paged else min(left, page)
        if len(matches) != wanted:
            verdict.mismatch = f"{len(matches)} matches on the page, data calls for {wanted} (of {expect.matches})"
            verdict.kind = "matches"
        elif isinstance(total, int) and total != expect.matches:
            verdict.mismatch, verdict.kind = f"total {total}, data holds {expect.matches}", "total"
    if verdict.mismatch is None and expect.included is not None and included != expect.included:
        verdict.mismatch = f"{included} include entries, data calls for {expect.included}"
        verdict.kind = "include"
    if verdict.mismatch is None and expect.sort_desc:
        try:
            moments = [_utc(str(r[expect.sort_desc])) for r in matches]
        except (KeyError, ValueError):
            moments = []
        if any(later > earlier for earlier, later in pairwise(moments)):
            verdict.mismatch, verdict.kind = f"entries not in descending {expect.sort_desc} order", "sort"
    return verdict


def _diagnostics(body: bytes) -> str:
    """The server's own words from an OperationOutcome, else the start of the body."""
    try:
        outcome = orjson.loads(body)
        issue = (outcome.get("issue") or [{}])[0]
        return str(issue.get("diagnostics") or (issue.get("details") or {}).get("text") or body[:160])[:200]
    except (orjson.JSONDecodeError, AttributeError, IndexError):
        return repr(body[:160])


class Tally:
    """What a shape's judged answers held besides their latency: the matches, and judge()'s warnings."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.results = 0
        self.zero = 0
        self.mismatches: Counter[str] = Counter()
        self.mismatch_example: dict[str, str] = {}
        self.outcomes: Counter[str] = Counter()

    def count(self, verdict: Verdict, path: str) -> None:
        """A searchset answer to GET ``path`` (``verdict.error`` is None)."""
        self.results += verdict.matches
        self.zero += verdict.matches == 0
        if verdict.mismatch is not None:
            self.mismatches[verdict.kind] += 1
            self.mismatch_example.setdefault(verdict.kind, f"{verdict.mismatch} — GET {path}")
        if verdict.outcome is not None:
            self.outcomes[verdict.outcome] += 1

    def notes(self, label: str, ok: int) -> list[str]:
        """Warnings for the report, ``ok`` being the number of answers counted."""
        found: list[str] = []
        if ok and self.zero == ok:
            found.append(f"- {label}: WARNING every response had zero results: the figures measure nothing")
        elif self.zero:
            found.append(f"- {label}: {self.zero:,} of {ok:,} responses had zero results")
        for key, n in self.mismatches.most_common(2):
            found.append(f"- {label}: {n:,}x count mismatch, e.g. {self.mismatch_example[key]}")
        for text, n in self.outcomes.most_common(2):
            found.append(f"- {label}: {n:,}x OperationOutcome entry from the server: {text}")
        return found


class SearchOp(Operation, Tally):
    """One shape at one concurrency: the workers cycle through its instances, each starting at its own offset."""

    def __init__(self, shape: Shape, instances: list[Instance], page: int) -> None:
        self.name = shape.name
        self.shape = shape
        self.instances = instances
        self.page = page
        self.begin_measurement()

    def begin_measurement(self) -> None:
        self.reset()

    def worker(self, index: int, clients: int) -> OpWorker:
        return _SearchWorker(self, index * max(1, len(self.instances) // clients))


class _SearchWorker(OpWorker):
    def __init__(self, op: SearchOp, start: int) -> None:
        self.op = op
        self.n = start
        self.current = op.instances[0]

    def build(self) -> bytes:
        self.n += 1
        self.current = self.op.instances[self.n % len(self.op.instances)]
        return self.current.raw

    def check(self, response: Response) -> str | None:
        op = self.op
        verdict = judge(response, op.shape, self.current.expect, op.page)
        if verdict.error is not None:
            return f"{verdict.error}"
        op.count(verdict, self.current.path)
        return None


# --------------------------------------------------------------------------------------------------------------------
# Set-up: learn ids, build instances, probe
# --------------------------------------------------------------------------------------------------------------------


async def resolve_samples(client: Client, target: Target, manifest: dict[str, Any], limit: int) -> tuple[
        list[Sample], list[str]]:
    """Server ids of the sample patients, by MRN; notes on anything odd (duplicates, missing patients)."""
    base = target.base_path
    system = manifest["systems"]["mrn"]
    samples: list[Sample] = []
    notes: list[str] = []
    wanted = manifest["samples"][:limit]
    by_mrn: dict[str, list[str]] | None = None
    duplicates = 0
    for data in wanted:
        ids: list[str] = []
        if by_mrn is None:
            status, bundle = await client.get_json(f"{base}/Patient?identifier={q(system + '|' + data['mrn'])}")
            if status == 200 and isinstance(bundle, dict):
                ids = [str((e.get("resource") or {}).get("id")) for e in bundle.get("entry") or ()
                       if (e.get("resource") or {}).get("resourceType") == "Patient"]
            if not ids and not samples:
                # Identifier search unusable (or the first sample missing): map every MRN by paging through Patient.
                by_mrn = await _page_patients(client, base, system, manifest["patients"])
                notes.append("identifier search did not find the first sample; ids learned by paging Patient")
        if by_mrn is not None:
            ids = by_mrn.get(data["mrn"], [])
        if len(ids) > 1:
            duplicates += 1
        if ids:
            samples.append(Sample(ids[0], data, len(samples)))
    if duplicates:
        notes.append(f"{duplicates} sample MRN(s) found on several Patients: the data was loaded more than once, "
                     "so expected counts are off")
    if len(samples) < len(wanted):
        notes.append(f"only {len(samples)} of {len(wanted)} sample patients found on the server")
    return samples, notes


async def _page_patients(client: Client, base: str, system: str, patients: int) -> dict[str, list[str]]:
    by_mrn: dict[str, list[str]] = {}
    path: str | None = f"{base}/Patient?_count=1000"
    for _ in range(patients // 1000 + 20):  # bounded: enough pages for every patient plus slack
        if path is None:
            break
        status, bundle = await client.get_json(path)
        if status != 200 or not isinstance(bundle, dict):
            break
        for entry in bundle.get("entry") or ():
            resource = entry.get("resource") or {}
            for identifier in resource.get("identifier") or ():
                if identifier.get("system") == system:
                    by_mrn.setdefault(str(identifier.get("value")), []).append(str(resource.get("id")))
        path = _next_path(bundle)
    return by_mrn


def _next_path(bundle: dict[str, Any]) -> str | None:
    for link in bundle.get("link") or ():
        if link.get("relation") == "next" and link.get("url"):
            parts = urlsplit(str(link["url"]))
            return parts.path + (f"?{parts.query}" if parts.query else "")
    return None


def _headers(args: argparse.Namespace) -> list[tuple[str, str]]:
    return [] if args.lenient else [("Prefer", "handling=strict")]


async def build_instances(
    shape: Shape, samples: list[Sample], manifest: dict[str, Any], target: Target, client: Client,
    args: argparse.Namespace,
) -> tuple[list[Instance], str | None]:
    """The shape's instances (at most --instances), and a reason when there are none."""
    headers = _headers(args)
    built: list[tuple[str, Expect]] = []
    seen: set[str] = set()
    for sample in samples:
        made = shape.build(sample, manifest)
        if made is None:
            continue
        path, expect = made
        if path in seen:
            continue  # cohort shapes repeat for samples with the same name or birth date
        seen.add(path)
        if shape.add_count:
            path += f"&_count={args.page}"
        built.append((path, expect))
    # Prefer instances that must find something: an empty answer measures nothing.
    useful = [item for item in built if item[1].matches != 0]
    built = (useful or built)[: args.instances]
    if not built:
        return [], "no sample patient has data for this shape"
    instances: list[Instance] = []
    for path, expect in built:
        if shape.next_page:
            status, bundle = await client.get_json(f"{target.base_path}/{path}", headers)
            if status != 200 or not isinstance(bundle, dict):
                return [], f"first page answered {status}"
            next_path = _next_path(bundle)
            if next_path is None or expect.matches is None or expect.matches <= args.page:
                continue
            instances.append(Instance(target.request("GET", next_path, headers=headers), next_path,
                                      Expect(expect.matches, offset=args.page)))
            if len(instances) >= min(args.instances, 32):  # each costs a set-up request; 32 cursors are plenty
                break
        else:
            full = f"{target.base_path}/{path}"
            instances.append(Instance(target.request("GET", full, headers=headers), full, expect))
    if not instances:
        return [], "no first page had a 'next' link"
    return instances, None


async def probe(client: Client, shape: Shape, instance: Instance, page: int, args: argparse.Namespace) -> str | None:
    """One untimed request; None when the answer is a searchset. A time-out is retried a few times: after a slow
    shape the server may still be working off requests whose clients gave up, and that backlog must drain before
    the next shape is measured (its figures would include it otherwise)."""
    problem = ""
    for _ in range(args.probe_tries):
        try:
            response = await client.send("GET", instance.path, headers=_headers(args))
        except TimeoutError:
            problem = f"no answer within {args.timeout:g} s ({args.probe_tries} tries)"
            continue
        except (OSError, HttpError) as exc:
            return f"{type(exc).__name__}: {exc}"
        return judge(response, shape, instance.expect, page).error
    return problem


# --------------------------------------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Row:
    shape: Shape
    clients: int
    result: OpResult | None
    op: SearchOp | None
    instances: int = 0
    skipped: str = ""
    baseline_p50: float | None = None
    notes: list[str] = field(default_factory=list)

    def figures(self) -> dict[str, Any]:
        r, op = self.result, self.op
        out: dict[str, Any] = {"shape": self.shape.name, "scope": self.shape.scope, "clients": self.clients,
                               "instances": self.instances, "skipped": self.skipped}
        if r is not None and op is not None and r.wall:
            out.update({
                "ok": r.ok, "errors": r.error_count, "req_per_s": r.ok / r.wall,
                "p50_ms": r.percentile_ms(50), "p95_ms": r.percentile_ms(95), "p99_ms": r.percentile_ms(99),
                "max_ms": r.percentile_ms(100), "results_per_req": op.results / r.ok if r.ok else 0.0,
                "zero_result_responses": op.zero, "count_mismatches": sum(op.mismatches.values()),
                "client_cpu": r.client_cpu / r.wall,
                "server_cpu": r.server_cpu / r.wall if r.server_cpu is not None else None,
            })  # fmt: skip
        return out


def table_head(with_baseline: bool) -> str:
    growth = " p50 × base |" if with_baseline else ""
    align = "---:|" if with_baseline else ""
    return (
        "| shape | scope | clients | ok | errors | req/s | p50 ms | p95 ms | p99 ms | max ms | results/req | count "
        f"check | client CPU | server CPU | target |{growth}\n"
        f"|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---|{align}"
    )


def table_row(row: Row, with_baseline: bool) -> str:
    r, op = row.result, row.op
    if r is None or op is None or not r.wall:
        cells = [row.shape.name, row.shape.scope, str(row.clients), "—", "—", "—", "—", "—", "—", "—", "—",
                 f"skipped: {row.skipped[:80]}", "—", "—", "—"]
        return "| " + " | ".join(cells + (["—"] if with_baseline else [])) + " |"
    wall = r.wall
    p50, p95 = r.percentile_ms(50), r.percentile_ms(95)

    def ms(value: float) -> str:
        return "—" if math.isnan(value) else f"{value:.2f}"

    mismatches = sum(op.mismatches.values())
    if op.zero == r.ok and r.ok:
        check = "⚠ zero results"
    elif mismatches:
        check = f"⚠ {mismatches:,} off"
    elif op.outcomes:
        check = "⚠ outcome"
    else:
        check = "ok" if r.ok else "—"
    target = "—"
    if row.shape.scope == "patient" and r.ok:
        target = "✓" if _meets_targets(r) else "✗"
    cells = [
        row.shape.name, row.shape.scope, str(row.clients), f"{r.ok:,}", f"{r.error_count:,}", f"{r.ok / wall:,.0f}",
        ms(p50), ms(p95), ms(r.percentile_ms(99)), ms(r.percentile_ms(100)),
        f"{op.results / r.ok:,.1f}" if r.ok else "—", check, f"{r.client_cpu / wall:.0%}",
        f"{r.server_cpu / wall:.0%}" if r.server_cpu is not None else "—", target,
    ]  # fmt: skip
    if with_baseline:
        if row.baseline_p50 and not math.isnan(p50):
            factor = p50 / row.baseline_p50
            cells.append(f"{factor:.2f}{'' if factor <= TARGET_GROWTH else ' ✗'}")
        else:
            cells.append("—")
    return "| " + " | ".join(cells) + " |"


def row_notes(row: Row) -> list[str]:
    found: list[str] = []
    label = f"{row.shape.name} ×{row.clients}"
    if row.skipped:
        return [f"- {row.shape.name}: skipped: {row.skipped}"]
    r, op = row.result, row.op
    if r is None or op is None:
        return found
    for text, n in r.errors.most_common(3):
        found.append(f"- {label}: {n:,}x error: {text}")
    found += op.notes(label, r.ok)
    if r.wall and r.client_cpu / r.wall > 0.85:
        found.append(f"- {label}: the client used {r.client_cpu / r.wall:.0%} of a core; figures may be client-bound")
    return found


def selection_flags(args: argparse.Namespace) -> list[str]:
    """The reproducing command's flags for what was run and how: shapes (unless all), --lenient, --cpu."""
    flags = ["--shapes", ",".join(args.shapes)] if args.shapes != list(SHAPE_NAMES) else []
    flags += ["--lenient"] if args.lenient else []
    return flags + (["--cpu", str(args.cpu)] if args.cpu is not None else [])


def reproduce_command(args: argparse.Namespace) -> str:
    argv = [
        "python", sys.argv[0],
        "--base", args.base,
        "--data", str(args.data),
        "--clients", ",".join(str(c) for c in args.clients),
        "--seconds", f"{args.seconds:g}",
        "--warmup", f"{args.warmup:g}",
        "--page", str(args.page),
        "--samples", str(args.samples),
        "--instances", str(args.instances),
        "--timeout", f"{args.timeout:g}",
        "--probe-tries", str(args.probe_tries),
    ]  # fmt: skip
    argv += selection_flags(args)
    for pid in args.server_pid:
        argv += ["--server-pid", str(pid)]
    if args.baseline is not None:
        argv += ["--baseline", str(args.baseline)]
    return shlex.join(argv)


# --------------------------------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------------------------------


def _load_baseline(path: Path | None) -> dict[tuple[str, int], float]:
    if path is None:
        return {}
    figures = orjson.loads(path.read_bytes())
    return {(f["shape"], f["clients"]): f["p50_ms"] for f in figures.get("rows", []) if f.get("p50_ms")}


async def main_async(args: argparse.Namespace) -> int:
    target = parse_target(args.base, "/healthz")
    manifest = orjson.loads((args.data / MANIFEST).read_bytes())
    baseline = _load_baseline(args.baseline)
    server = await server_facts(target)
    facts = machine_facts(args.cpu)
    command = reproduce_command(args)
    data_line = (f"data: {args.data} ({manifest['patients']:,} patients, {manifest['total']:,} resources, seed "
                 f"{manifest['key']['seed']}; generated by `{manifest['command']}`)")
    print(f"command: {command}")
    print(f"target: {args.base}, server: {server}")
    print(data_line)
    print("\n".join(f"{key}: {value}" for key, value in facts.items()), end="\n\n", flush=True)

    client = Client(target, args.timeout)
    try:
        samples, notes = await resolve_samples(client, target, manifest, args.samples)
        notes = [f"- {note}" for note in notes]
        if not samples:
            raise SetupError("no sample patient of the manifest was found on the server: is this data set loaded?")
        print(f"{len(samples)} sample patients resolved\n", flush=True)
        with_baseline = bool(baseline)
        print(table_head(with_baseline), flush=True)
        rows: list[Row] = []
        for shape in (s for s in SHAPES if s.name in args.shapes):
            instances, reason = await build_instances(shape, samples, manifest, target, client, args)
            if not reason:
                reason = await probe(client, shape, instances[0], args.page, args) or ""
            if reason:
                row = Row(shape, args.clients[0], None, None, len(instances), skipped=reason)
                rows.append(row)
                print(table_row(row, with_baseline), flush=True)
                continue
            for clients in args.clients:
                op = SearchOp(shape, instances, args.page)
                result = await run_operation(op, target, clients, args.seconds, None, args.warmup, args.timeout,
                                             args.server_pid)
                row = Row(shape, clients, result, op, len(instances), baseline_p50=baseline.get((shape.name, clients)))
                rows.append(row)
                print(table_row(row, with_baseline), flush=True)
    finally:
        client.close()

    for row in rows:
        notes.extend(row_notes(row))
    summary = _summary(rows)
    print("\n" + "\n".join(summary))
    if notes:
        print("\nNotes:\n" + "\n".join(notes))
    if args.json is not None:
        write_figures(args.json, {"command": command, "server": server, "data": str(args.data),
                                  "patients": manifest["patients"], "facts": facts,
                                  "rows": [row.figures() for row in rows]})
    if args.record is not None:
        append_record(args.record, [
            *report_head(f"Aegis search, {manifest['patients']:,} patients", args.label, command, facts,
                         f"target: `{args.base}`, server: {server}", data_line),
            f"- targets (issue #3, scope `patient`): p50 ≤ {TARGET_P50_MS:g} ms and p95 ≤ {TARGET_P95_MS:g} ms"
            + (f"; p50 growth against `{args.baseline}` ≤ {TARGET_GROWTH:g}×" if with_baseline else ""),
            "", table_head(with_baseline), *(table_row(row, with_baseline) for row in rows), "",
            *summary, "",
            *(["Notes:", "", *notes, ""] if notes else []),
        ])  # fmt: skip
    failed = any(row.skipped or (row.result is not None and row.result.error_count) for row in rows)
    if args.strict_counts:
        failed = failed or any(row.op is not None and (row.op.mismatches or row.op.zero) for row in rows)
    return 1 if failed else 0


def _summary(rows: list[Row]) -> list[str]:
    ran = [row for row in rows if row.result is not None and row.result.ok]
    skipped = sorted({row.shape.name for row in rows if row.skipped})
    lines = [f"shapes run: {len({row.shape.name for row in ran})}, skipped: {len(skipped)}"
             + (f" ({', '.join(skipped)})" if skipped else "")]
    patient_rows = [row for row in ran if row.shape.scope == "patient" and row.result is not None]
    for clients in sorted({row.clients for row in patient_rows}):
        group = [row for row in patient_rows if row.clients == clients]
        met = sum(1 for row in group if row.result is not None and _meets_targets(row.result))
        lines.append(f"single-patient shapes meeting p50 ≤ {TARGET_P50_MS:g} ms and p95 ≤ {TARGET_P95_MS:g} ms at "
                     f"{clients} client(s): {met} of {len(group)}")
    grown = [(row.result.percentile_ms(50) / row.baseline_p50, f"{row.shape.name} ×{row.clients}")
             for row in ran if row.baseline_p50 and row.result is not None]
    return lines + growth_summary(grown)


def growth_summary(factors: list[tuple[float, str]]) -> list[str]:
    """The summary line of p50 growth against a baseline, from (factor, what grew) pairs: how many stay within the
    target, and the worst."""
    if not factors:
        return []
    factor, worst = max(factors, key=lambda item: item[0])
    within = sum(1 for f, _ in factors if f <= TARGET_GROWTH)
    return [f"p50 growth against the baseline ≤ {TARGET_GROWTH:g}×: {within} of {len(factors)} "
            f"(worst {worst}: {factor:.2f}×)"]


def _meets_targets(result: OpResult) -> bool:
    return result.percentile_ms(50) <= TARGET_P50_MS and result.percentile_ms(95) <= TARGET_P95_MS


def _clients(text: str) -> list[int]:
    try:
        levels = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--clients wants numbers like 1,16, got {text!r}") from None
    if not levels or any(not 1 <= level <= 256 for level in levels):
        raise argparse.ArgumentTypeError("--clients levels must be between 1 and 256")
    return levels


def shape_list(text: str) -> list[str]:
    """Comma-separated names; a trailing '*' selects by prefix (obs-patient*)."""
    chosen: list[str] = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        hits = [n for n in SHAPE_NAMES if (n.startswith(part[:-1]) if part.endswith("*") else n == part)]
        if not hits:
            raise argparse.ArgumentTypeError(f"no shape matches {part!r}; shapes: {', '.join(SHAPE_NAMES)}")
        chosen.extend(h for h in hits if h not in chosen)
    return chosen


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Run US Core-like search shapes against a loaded Aegis server; report latency per shape.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--base", default="http://127.0.0.1:8080/fhir", help="FHIR base URL (loopback only)")
    parser.add_argument("--data", type=Path, default=None, help="the bench/datagen.py directory that was loaded")
    parser.add_argument("--clients", type=_clients, default=[1, 16], help="concurrency levels, comma-separated")
    parser.add_argument("--seconds", type=bounded(float, 0.5, 600), default=5.0, help="measured seconds per shape "
                        "and level")
    parser.add_argument("--warmup", type=bounded(float, 0, 60), default=1.0, help="unmeasured seconds before each")
    parser.add_argument("--shapes", type=shape_list, default=list(SHAPE_NAMES),
                        help="comma-separated shape names, 'prefix*' allowed; --list-shapes shows them")
    parser.add_argument("--list-shapes", action="store_true", help="print the shapes and exit")
    parser.add_argument("--page", type=bounded(int, 1, 1000), default=50, help="_count sent with each search")
    parser.add_argument("--samples", type=bounded(int, 1, 10_000), default=200, help="sample patients to use")
    parser.add_argument("--instances", type=bounded(int, 1, 10_000), default=100,
                        help="distinct queries per shape (cycled through by the clients)")
    parser.add_argument("--lenient", action="store_true", help="do not send Prefer: handling=strict")
    parser.add_argument("--strict-counts", action="store_true",
                        help="count mismatches and zero-result answers make the exit status 1")
    parser.add_argument("--timeout", type=bounded(float, 1, 300), default=30.0,
                        help="seconds to wait for an answer (stragglers after a run, set-up and probe requests)")
    parser.add_argument("--probe-tries", type=bounded(int, 1, 20), default=5,
                        help="probe attempts per shape when the server does not answer in --timeout")
    parser.add_argument("--cpu", type=int, default=None, help="pin this client to one CPU (e.g. 0; server on 1)")
    parser.add_argument("--server-pid", type=int, action="append", default=[], help="server process id(s)")
    add_report_arguments(parser, figures=True)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.list_shapes:
        for shape in SHAPES:
            print(f"{shape.name:<36} {shape.scope:<8} {shape.models}")
        return 0
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    try:
        parse_target(args.base, "/healthz")
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.data is None or not (args.data / MANIFEST).exists():
        print(f"error: {args.data} has no {MANIFEST}; generate it with bench/datagen.py", file=sys.stderr)
        return 2
    try:
        return run(main_async(args))
    except SetupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
