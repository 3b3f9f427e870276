"""The SQLite store's other plans agree with the oracle too.

With the default limits the oracle test's small data sets never look *broad* to the planner (``plan.py``), so
every query there is driven by its most selective condition. Here the limits are tiny: conditions count as broad
after two rows, so searches walk the type in key windows of 1 and 3 rows and then fall back to the driving plan —
the windowed path, the hand-over between the two, and keyset paging across both, checked against the oracle.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fhir_server.storage.sqlite.plan import PlanLimits
from fhir_server.storage.sqlite.store import SqliteStore
from tests.search.test_oracle import (
    ORACLE,
    check_store,
    datasets,
    loop,
    observation,
    observation_queries,
    patient,
    patient_queries,
)

__all__ = ["loop"]  # the event-loop fixture, shared with test_oracle

TINY = PlanLimits(cap=2, selective=1, windows=(1, 3), merge_targets=3)


@ORACLE
@given(data=datasets(), patient_qs=st.lists(patient_queries(), min_size=1, max_size=3),
       observation_qs=st.lists(observation_queries(), min_size=1, max_size=3))
def test_windowed_and_counted_plans_agree_with_oracle(loop: asyncio.AbstractEventLoop, data: list[dict[str, Any]],
                                                      patient_qs: list[list[tuple[str, str]]],
                                                      observation_qs: list[list[tuple[str, str]]]) -> None:
    async def run() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            await check_store(SqliteStore(str(Path(tmp) / "plans.db"), plan_limits=TINY), data, patient_qs,
                              observation_qs)

    loop.run_until_complete(run())


# no windows: every broad search goes straight to its driving condition, so chains drive as merges of their
# targets' referring rows (merge.py), with at most 3 targets (more: driven by key as before) and pages of 2 (the
# merge reads each target's rows 3 at a time, so it refills)
MERGING = PlanLimits(cap=2, selective=0, windows=(), merge_targets=3)


@ORACLE
@given(data=datasets(), observation_qs=st.lists(observation_queries(), min_size=1, max_size=4))
def test_chain_merges_agree_with_oracle(loop: asyncio.AbstractEventLoop, data: list[dict[str, Any]],
                                        observation_qs: list[list[tuple[str, str]]]) -> None:
    async def run() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            await check_store(SqliteStore(str(Path(tmp) / "merge.db"), plan_limits=MERGING), data, [],
                              observation_qs)

    loop.run_until_complete(run())


def _many_targets() -> list[dict[str, Any]]:
    """Four patients and two practitioners named Martin among others, their observations written interleaved (so
    the targets' key lists interleave), some with two Martins as performers (the merge must not repeat them)."""
    out: list[dict[str, Any]] = []
    for i in range(6):
        out.append({"resourceType": "Patient", "id": f"p{i}", "name": [{"family": "Martin" if i < 4 else "Other"}]})
    for i in range(3):
        out.append({"resourceType": "Practitioner", "id": f"d{i}", "name": [{"family": "Martin" if i < 2 else "X"}]})
    for n in range(30):
        obs: dict[str, Any] = {
            "resourceType": "Observation", "id": f"o{n}", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4" if n % 3 else "8480-6"}]},
            "subject": {"reference": f"Patient/p{(n * 5) % 6}"}}
        if n % 4 == 0:
            obs["performer"] = [{"reference": "Practitioner/d0"}, {"reference": "Practitioner/d1"}]
        elif n % 4 == 1:
            obs["performer"] = [{"reference": f"Practitioner/d{n % 3}"}]
        out.append(obs)
    return out


MANY_TARGET_QUERIES = [
    [("subject:Patient.name", "martin")],
    [("subject.name", "martin")],
    [("patient.family", "martin"), ("code", "8867-4")],
    [("performer:Practitioner.name", "martin")],
    [("performer:Practitioner.name", "martin"), ("subject:Patient.name", "martin")],
    [("subject:Patient.name", "nobody")],
]


@pytest.mark.parametrize(("windows", "merge_first"), [
    ((), 0),  # no windows: the chain drives at once
    ((3,), 0),  # a window first; the merge takes over after the walked rows (those before its edge must not return)
    ((3,), 100),  # the merge before any window
])
@pytest.mark.parametrize("merge_targets", [0, 3, 4, 100])
def test_chain_merges_over_many_targets(loop: asyncio.AbstractEventLoop, merge_targets: int,
                                        windows: tuple[int, ...], merge_first: int) -> None:
    """Chains with several targets, paged by 2 both ways, whether the targets are merged (up to ``merge_targets``)
    or the chain drives by key."""
    limits = PlanLimits(cap=2, selective=0, windows=windows, merge_targets=merge_targets, merge_first=merge_first)

    async def run() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            await check_store(SqliteStore(str(Path(tmp) / "many.db"), plan_limits=limits), _many_targets(), [],
                              MANY_TARGET_QUERIES)

    loop.run_until_complete(run())


@st.composite
def _with_appointments(draw: st.DrawFn) -> list[dict[str, Any]]:
    """An oracle data set plus appointments of no, one or two patients, some written before their patients (the
    token rows' owner of ``_has``: none, the patient's key, or unknown)."""
    data = draw(datasets())
    patients = [r["id"] for r in data if r["resourceType"] == "Patient"]
    for i in range(draw(st.integers(0, 5))):
        actors = draw(st.lists(st.sampled_from(patients), max_size=2)) if patients else []
        participants = [{"actor": {"reference": f"Patient/{p}"}, "status": "accepted"} for p in actors]
        participants.append({"actor": {"reference": "Practitioner/d0"}, "status": "accepted"})
        appointment = {"resourceType": "Appointment", "id": f"a{i}",
                       "status": draw(st.sampled_from(["booked", "proposed", "cancelled"])),
                       "participant": participants}
        data.insert(draw(st.integers(0, len(data))), appointment)
    return data


@st.composite
def _owned_has_queries(draw: st.DrawFn) -> list[tuple[str, str]]:
    """A patient's ``_has`` of a code through ``patient`` (probed through the owners when it does not drive), with
    another condition or not, and one through ``subject`` (never through the owners) beside it."""
    clauses = [(draw(st.sampled_from(["_has:Appointment:patient:status", "_has:Observation:patient:code",
                                      "_has:Observation:subject:code"])),
                draw(st.sampled_from(["booked", "booked,proposed", "8867-4", "http://loinc.org|8480-6,8867-4"])))]
    if draw(st.booleans()):
        clauses.append(draw(st.sampled_from([("gender", "male"), ("_id", "p0,p2,p3"), ("name", "smi"),
                                             ("_has:Appointment:patient:status:not", "cancelled")])))
    return clauses


@ORACLE
@given(data=_with_appointments(), patient_qs=st.lists(_owned_has_queries(), min_size=1, max_size=4))
@pytest.mark.parametrize("limits", [TINY, PlanLimits()], ids=["windowed", "default"])
def test_has_through_owners_agrees_with_oracle(loop: asyncio.AbstractEventLoop, limits: PlanLimits,
                                               data: list[dict[str, Any]],
                                               patient_qs: list[list[tuple[str, str]]]) -> None:
    async def run() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            await check_store(SqliteStore(str(Path(tmp) / "owners.db"), plan_limits=limits), data, patient_qs, [])

    loop.run_until_complete(run())


@st.composite
def _patients_observed(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Up to three patients with up to 24 observations between them (pages of 2 fill from the walk), sometimes written
    before their patients (their date rows' owner is unknown, and the walk must give way to the sort)."""
    n_patients = draw(st.integers(1, 3))
    patients = [draw(patient(i)) for i in range(n_patients)]
    observations = [draw(observation(i, n_patients, 0)) for i in range(draw(st.integers(4, 24)))]
    early = observations[:draw(st.integers(0, len(observations)))] if draw(st.booleans()) else []
    return early + patients + [r for r in observations if r not in early]


@st.composite
def _dated_queries(draw: st.DrawFn) -> list[tuple[str, str]]:
    """A patient's observations sorted by a date, with another condition or not."""
    clauses = [(draw(st.sampled_from(["patient", "patient:Patient"])),
                draw(st.sampled_from(["p0", "p1", "Patient/p2"])))]
    if draw(st.booleans()):
        clauses.append(draw(st.sampled_from([("code", "8867-4"), ("category", "vital-signs"), ("date", "ge2020-06"),
                                             ("date", "lt2020-06-15T10:30:00Z"), ("value-quantity", "gt1"),
                                             ("code:not", "8480-6")])))
    clauses.append(("_sort", draw(st.sampled_from(["date", "-date", "_lastUpdated", "-_lastUpdated"]))))
    return clauses


@ORACLE
@given(data=_patients_observed(), observation_qs=st.lists(_dated_queries(), min_size=1, max_size=4))
@pytest.mark.parametrize("window", [2, 3, 1000])
def test_date_walks_agree_with_oracle(loop: asyncio.AbstractEventLoop, window: int, data: list[dict[str, Any]],
                                      observation_qs: list[list[tuple[str, str]]]) -> None:
    """A patient's observations sorted by date off the date rows' owners (datewalk.py), for every search: windows
    of 2 and 3 rows (pages of 2: the walk often falls short and the sort takes over, also between pages) and of
    1,000 (the walk settles every page it can; a page of 1,000 reaches the end and is sorted)."""
    limits = PlanLimits(date_walk=window, date_walk_from=0)

    async def run() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            await check_store(SqliteStore(str(Path(tmp) / "walk.db"), plan_limits=limits), data, [], observation_qs)

    loop.run_until_complete(run())
