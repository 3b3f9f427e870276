"""A patient's searches sorted by date as the patient's history grows: the date walk against the sort (SQLite).

``Observation?patient=X&_sort=-date`` — a patient's latest results, vitals, or last value of a lab — is what SMART
apps and patient-facing apps ask most, and a patient whose watch sends a heart rate every 15 minutes has 35,000
observations a year. Sorting computes every match's sort key before the first page; the date walk
(``fhir_server/storage/sqlite/datewalk.py``) reads the patient's dates in order off the date index and stops at the
page.

The tool writes one patient per history size into a scratch store (``--histories``: observations every 15 minutes,
vital signs of two codes and, every 20th, a laboratory result of two codes), then times each shape against each
patient through the search executor (``fhir_server.search.execute``: parsing, binding, planning and SQL; no Bundle,
no HTTP), first with the store's default limits (the walk), then with the walk turned off (the sort), and checks
that both answer the same resources in the same order.

Example::

    python bench/sort_history.py --histories 300,3000,30000 --record bench/RESULTS.md
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import shlex
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

# Run as a script (python bench/sort_history.py): bench/ is sys.path[0]; the project root must follow it.
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from loadclient import add_report_arguments, append_record, bounded, machine_facts, percentile_ms, report_head  # noqa: E402

from fhir_server.search.execute import execute, parse  # noqa: E402
from fhir_server.storage.base import WriteTx  # noqa: E402
from fhir_server.storage.sqlite.plan import PlanLimits  # noqa: E402
from fhir_server.storage.sqlite.store import SqliteStore  # noqa: E402

CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
VITALS = [("8867-4", "/min", 72.0), ("59408-5", "%", 97.0)]  # heart rate, oxygen saturation
LABS = [("4548-4", "%", 6.1), ("2339-0", "mg/dL", 104.0)]  # HbA1c, glucose
START = datetime(2024, 1, 1, tzinfo=timezone.utc)

# (name, query after patient=X, what it asks, the observations it answers for a history of n: their numbers, in
# order; None where only the walk and the sort are compared: many share a lastUpdated millisecond, ties go by key)
SHAPES: list[tuple[str, str, str, Callable[[int], list[int]] | None]] = [
    ("latest-10", "_sort=-date&_count=10", "the latest 10 observations", lambda n: list(range(n - 1, -1, -1))[:10]),
    ("latest-50", "_sort=-date&_count=50", "the latest 50", lambda n: list(range(n - 1, -1, -1))[:50]),
    ("vitals-latest-10", "category=vital-signs&_sort=-date&_count=10", "the latest 10 vital signs",
     lambda n: [i for i in range(n - 1, -1, -1) if not is_lab(i)][:10]),
    ("lab-latest-1", "code=http://loinc.org|4548-4&_sort=-date&_count=1", "the last HbA1c (1 in 40)",
     lambda n: [i for i in range(n - 1, -1, -1) if code_of(i) == "4548-4"][:1]),
    ("changed-latest-10", "_sort=-_lastUpdated&_count=10", "the 10 last written", None),
    ("oldest-10", "_sort=date&_count=10", "the first 10", lambda n: list(range(n))[:10]),
]
SORT_ONLY = PlanLimits(date_walk_from=10**12)


def is_lab(i: int) -> bool:
    return i % 20 == 19


def code_of(i: int) -> str:
    return LABS[i // 20 % 2][0] if is_lab(i) else VITALS[i % 2][0]


def observation(patient: str, i: int) -> dict[str, Any]:
    lab = is_lab(i)
    code, unit, value = LABS[i // 20 % 2] if lab else VITALS[i % 2]
    return {
        "resourceType": "Observation", "id": f"{patient}-{i}", "status": "final",
        "category": [{"coding": [{"system": CATEGORY, "code": "laboratory" if lab else "vital-signs"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": f"Patient/{patient}"},
        "effectiveDateTime": (START + timedelta(minutes=15 * i)).isoformat().replace("+00:00", "Z"),
        "valueQuantity": {"value": value + i % 7, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit},
    }


async def load(path: Path, histories: Sequence[int]) -> None:
    store = SqliteStore(str(path))
    await store.open()
    try:
        for size in histories:
            patient = f"history-{size}"

            async def write_patient(tx: WriteTx, patient: str = patient) -> None:
                await tx.put("Patient", patient, {"resourceType": "Patient", "id": patient}, method="PUT")
            await store.transact(write_patient)
            for start in range(0, size, 1000):
                async def write(tx: WriteTx, patient: str = patient, start: int = start, size: int = size) -> None:
                    for i in range(start, min(start + 1000, size)):
                        await tx.put("Observation", f"{patient}-{i}", observation(patient, i), method="PUT")
                await store.transact(write)
    finally:
        await store.close()


@dataclass
class Timing:
    ids: list[str]
    p50_ms: float
    p95_ms: float


async def time_shapes(path: Path, limits: PlanLimits | None, histories: Sequence[int],
                      requests: int) -> dict[tuple[str, int], Timing]:
    store = SqliteStore(str(path)) if limits is None else SqliteStore(str(path), plan_limits=limits)
    await store.open()
    out: dict[tuple[str, int], Timing] = {}
    try:
        for name, query, _, _ in SHAPES:
            for size in histories:
                pairs = [("patient", f"history-{size}"), *(tuple(p.split("=", 1)) for p in query.split("&"))]
                request = parse(pairs)  # type: ignore[arg-type]

                async def one() -> list[str]:
                    result = await execute(store, "Observation", request, strict=True, base_url=None,
                                           default_count=50, max_count=1000, after=None)
                    return [v.rid for v in result.matches]

                ids = await one()
                for _ in range(5):
                    await one()
                took: list[int] = []
                gc.collect()
                for _ in range(requests):
                    t0 = time.perf_counter_ns()
                    await one()
                    took.append(time.perf_counter_ns() - t0)
                took.sort()
                out[(name, size)] = Timing(ids, percentile_ms(took, 50), percentile_ms(took, 95))
    finally:
        await store.close()
    return out


async def main_async(args: argparse.Namespace) -> int:
    facts = machine_facts()
    command = "python bench/sort_history.py " + " ".join(
        shlex.quote(a) for a in (f"--histories={','.join(map(str, args.histories))}", f"--requests={args.requests}"))
    print(f"command: {command}")
    print("\n".join(f"{key}: {value}" for key, value in facts.items()), end="\n\n", flush=True)
    with tempfile.TemporaryDirectory(prefix="aegis-sort-history-") as tmp:
        path = Path(tmp) / "aegis.db"
        t0 = time.perf_counter()
        await load(path, args.histories)
        print(f"wrote {sum(args.histories):,} observations of {len(args.histories)} patients in "
              f"{time.perf_counter() - t0:.0f} s\n", flush=True)
        walked = await time_shapes(path, None, args.histories, args.requests)
        sorted_ = await time_shapes(path, SORT_ONLY, args.histories, args.requests)
    head = ["| shape | observations | walk p50 ms | walk p95 ms | sort p50 ms | sort p95 ms | sort / walk (p50) |",
            "|---|---:|---:|---:|---:|---:|---:|"]
    rows = []
    mismatches = []
    for name, _, _, expect in SHAPES:
        for size in args.histories:
            w, s = walked[(name, size)], sorted_[(name, size)]
            if w.ids != s.ids or not w.ids:
                mismatches.append(f"{name} at {size:,}: the walk answered {w.ids[:3]}…, the sort {s.ids[:3]}…")
            expected = None if expect is None else [f"history-{size}-{i}" for i in expect(size)]
            if expected is not None and w.ids != expected:
                mismatches.append(f"{name} at {size:,}: answered {w.ids[:3]}…, not {expected[:3]}…")
            rows.append(f"| {name} | {size:,} | {w.p50_ms:.3f} | {w.p95_ms:.3f} | {s.p50_ms:.3f} | {s.p95_ms:.3f} |"
                        f" {s.p50_ms / w.p50_ms:.1f}× |")
    shapes = [f"- `{name}`: `Observation?patient=X&{query}`, {what}" for name, query, what, _ in SHAPES]
    print("\n".join([*head, *rows, "", *shapes, *(["", *mismatches] if mismatches else [])]))
    if args.record is not None:
        append_record(args.record, [
            *report_head("Aegis: a patient's date-sorted searches as the history grows", args.label, command, facts,
                         f"{args.requests} timed searches per shape and patient, after 6 untimed"),
            "", *head, *rows, "", *shapes, *(["", *mismatches] if mismatches else []), "",
        ])  # fmt: skip
    return 1 if mismatches else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--histories", type=lambda s: [int(x) for x in s.split(",")], default=[300, 3000, 30000],
                        help="observations of each patient, comma-separated")
    parser.add_argument("--requests", type=bounded(int, 1, 100_000), default=100, help="timed searches per shape")
    add_report_arguments(parser)
    args = parser.parse_args(argv)
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
