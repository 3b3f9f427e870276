"""Service time of the search shapes, in process: ``bench/search_load.py``'s shapes, instances and answer checks, with
the Aegis ASGI application called directly on a store directory — no HTTP, no load generator, one request at a time.

Why: ``search_load.py`` measures what a client sees, which includes the client itself (up to ~1 ms of its CPU per
large answer), uvicorn and loopback; on a shared 2-core VM those figures move by 15–50 % from run to run. Here each
request still goes through everything the server does for it — routing, parsing, planning, SQL, the Bundle and its
serialisation — and nothing else, so the growth between two stores (``--baseline``) is the engine's own.

Each shape's instances (at most ``--instances``) run ``--rounds`` times in turn (more for a shape with few
instances, up to ``--min-requests`` timed requests) after one untimed round that warms the caches; every answer is
judged as ``search_load.py`` judges it (status, searchset, the number of matches the data calls for, includes, sort
order). The store is opened as the server opens it, with authorization off; the tool only reads. Stop any server
using the store while this runs: its work would be in the figures.

Example::

    python bench/search_inprocess.py --store /tmp/aegis-1k --data /tmp/aegis-bench-data/p1000 --json /tmp/ip-1k.json
    python bench/search_inprocess.py --store /tmp/aegis-10k --data /tmp/aegis-bench-data/p10000 \\
        --baseline /tmp/ip-1k.json --record bench/RESULTS.md
"""

from __future__ import annotations

import argparse
import gc
import logging
import math
import os
import shlex
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import orjson

# Run as a script (python bench/search_inprocess.py): bench/ is sys.path[0]; the project root must follow it.
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from datagen import MANIFEST  # noqa: E402
from loadclient import (  # noqa: E402
    Client, Response, Target, add_report_arguments, append_record, bounded, machine_facts, percentile_ms,
    report_head, run, write_figures,
)
from search_load import (  # noqa: E402
    SHAPE_NAMES, SHAPES, TARGET_GROWTH, Shape, Tally, build_instances, growth_summary, judge, resolve_samples,
    selection_flags, shape_list,
)

from fhir_server.app import AegisApp  # noqa: E402
from fhir_server.settings import Settings  # noqa: E402

HOST = "inprocess"


class AsgiClient(Client):
    """``search_load``'s set-up client over the application itself: ``send`` calls the app (``get_json`` is
    inherited)."""

    def __init__(self, app: AegisApp, target: Target) -> None:
        super().__init__(target)
        self.app = app

    async def send(self, method: str, path: str, body: bytes = b"",
                   headers: Sequence[tuple[str, str]] = ()) -> Response:
        """``path`` includes the base path and the percent-encoded query, as on the wire."""
        route, _, query = path.partition("?")
        scope = {
            "type": "http", "method": method, "path": unquote(route), "raw_path": route.encode(),
            "query_string": query.encode(), "root_path": "", "scheme": "http", "http_version": "1.1",
            "server": (HOST, 80), "client": ("127.0.0.1", 0),
            "headers": [(b"host", HOST.encode()), *((k.lower().encode(), v.encode()) for k, v in headers)],
        }  # fmt: skip
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        async def collect(message: Any) -> None:
            sent.append(message)

        await self.app(scope, receive, collect)
        head = sent[0]
        return Response(head["status"], {k.lower(): v for k, v in head["headers"]},
                        b"".join(m.get("body", b"") for m in sent[1:]))


@dataclass(slots=True)
class ShapeRun:
    shape: Shape
    instances: int = 0
    latencies_ns: list[int] = field(default_factory=list)  # sorted once measured
    tally: Tally = field(default_factory=Tally)
    errors: Counter[str] = field(default_factory=Counter)
    skipped: str = ""
    baseline_p50: float | None = None

    def percentile_ms(self, p: float) -> float:
        return percentile_ms(self.latencies_ns, p)

    @property
    def growth(self) -> float | None:
        return self.percentile_ms(50) / self.baseline_p50 if self.baseline_p50 and self.latencies_ns else None

    def figures(self) -> dict[str, Any]:
        return {"shape": self.shape.name, "scope": self.shape.scope, "requests": len(self.latencies_ns),
                "p50_ms": self.percentile_ms(50), "p95_ms": self.percentile_ms(95),
                "p99_ms": self.percentile_ms(99), "results": self.tally.results, "errors": sum(self.errors.values()),
                "mismatches": sum(self.tally.mismatches.values()), "skipped": self.skipped or None}


async def measure(client: AsgiClient, shape: Shape, samples: list[Any], manifest: dict[str, Any],
                  target: Target, args: argparse.Namespace) -> ShapeRun:
    result = ShapeRun(shape)
    instances, reason = await build_instances(shape, samples, manifest, target, client, args)
    result.instances = len(instances)
    if reason:
        result.skipped = reason
        return result
    headers = [] if args.lenient else [("Prefer", "handling=strict")]
    clock = time.perf_counter_ns
    # shapes with one query (cohort-wide quantities) or a few get more passes: enough requests for a median
    rounds = max(args.rounds, math.ceil(args.min_requests / len(instances)))
    for round_ in range(rounds + 1):
        for instance in instances:
            start = clock()
            response = await client.send("GET", instance.path, headers=headers)
            elapsed = clock() - start
            verdict = judge(response, shape, instance.expect, args.page)
            if round_ == 0:  # warm-up: untimed, but an answer that is not a searchset stops the shape here
                if verdict.error is not None:
                    result.skipped = verdict.error
                    return result
                continue
            if verdict.error is not None:
                result.errors[verdict.error] += 1
                continue
            result.latencies_ns.append(elapsed)
            result.tally.count(verdict, instance.path)
    result.latencies_ns.sort()
    return result


def table_head(with_baseline: bool) -> str:
    head = "| shape | scope | instances | requests | p50 ms | p95 ms | p99 ms | results/req | count check |"
    rule = "|---|---|---:|---:|---:|---:|---:|---:|---|"
    if with_baseline:
        head += " p50 × base |"
        rule += "---:|"
    return f"{head}\n{rule}"


def table_row(run_: ShapeRun, with_baseline: bool) -> str:
    name, scope = run_.shape.name, run_.shape.scope
    if run_.skipped:
        cells = [name, scope, str(run_.instances), "—", "—", "—", "—", "—", f"skipped: {run_.skipped[:80]}"]
    else:
        n = len(run_.latencies_ns)
        check = "ok" if not run_.tally.mismatches and not run_.errors else (
            f"{sum(run_.tally.mismatches.values()) + sum(run_.errors.values())} off")
        cells = [name, scope, str(run_.instances), f"{n:,}", f"{run_.percentile_ms(50):.3f}",
                 f"{run_.percentile_ms(95):.3f}", f"{run_.percentile_ms(99):.3f}",
                 f"{run_.tally.results / n:.1f}" if n else "—", check]
    if with_baseline:
        growth = run_.growth
        cells.append("—" if growth is None else f"{growth:.2f}" + (" ✗" if growth > TARGET_GROWTH else ""))
    return "| " + " | ".join(cells) + " |"


def notes_of(run_: ShapeRun) -> list[str]:
    found = [f"- {run_.shape.name}: {n:,}x {error}" for error, n in run_.errors.most_common(2)]
    return found + run_.tally.notes(run_.shape.name, len(run_.latencies_ns))


def summary(runs: list[ShapeRun]) -> list[str]:
    ran = [r for r in runs if r.latencies_ns]
    skipped = sorted(r.shape.name for r in runs if r.skipped)
    lines = [f"shapes run: {len(ran)}, skipped: {len(skipped)}" + (f" ({', '.join(skipped)})" if skipped else "")]
    return lines + growth_summary([(r.growth, r.shape.name) for r in ran if r.growth is not None])


def reproduce_command(args: argparse.Namespace) -> str:
    argv = ["python", sys.argv[0], "--store", str(args.store), "--data", str(args.data), "--page", str(args.page),
            "--samples", str(args.samples), "--instances", str(args.instances), "--rounds", str(args.rounds),
            "--min-requests", str(args.min_requests), *selection_flags(args)]
    if args.baseline is not None:
        argv += ["--baseline", str(args.baseline)]
    return shlex.join(argv)


def load_baseline(path: Path | None) -> dict[str, float]:
    if path is None:
        return {}
    figures = orjson.loads(path.read_bytes())
    return {f["shape"]: f["p50_ms"] for f in figures.get("rows", []) if f.get("p50_ms")}


async def main_async(args: argparse.Namespace) -> int:
    manifest = orjson.loads((args.data / MANIFEST).read_bytes())
    baseline = load_baseline(args.baseline)
    facts = machine_facts(args.cpu)
    if "client pinned to" in facts:  # loadclient's wording; here the one process is both client and server
        facts["process pinned to"] = facts.pop("client pinned to")
    command = reproduce_command(args)
    data_line = (f"data: {args.data} ({manifest['patients']:,} patients, {manifest['total']:,} resources, seed "
                 f"{manifest['key']['seed']}), store: {args.store}")
    print(f"command: {command}\n{data_line}")
    print("\n".join(f"{key}: {value}" for key, value in facts.items()), end="\n\n", flush=True)
    logging.getLogger("aegis").setLevel(logging.ERROR)  # the authorization-off warning is expected here
    app = AegisApp(Settings(**{"data_dir": args.store, "auth_disabled": True}))
    await app.startup()
    runs: list[ShapeRun] = []
    try:
        target = Target("127.0.0.1", 80, HOST, "/fhir", "/healthz")
        client = AsgiClient(app, target)
        samples, setup_notes = await resolve_samples(client, target, manifest, args.samples)
        if not samples:
            print("error: no sample patient of the manifest is in this store: is it the store of that data set?",
                  file=sys.stderr)
            return 1
        print(f"{len(samples)} sample patients resolved\n", flush=True)
        # Set-up allocations are long-lived: freezing them keeps the collector's passes short and rare.
        gc.collect()
        gc.freeze()
        print(table_head(bool(baseline)), flush=True)
        for shape in (s for s in SHAPES if s.name in args.shapes):
            result = await measure(client, shape, samples, manifest, target, args)
            result.baseline_p50 = baseline.get(shape.name)
            runs.append(result)
            print(table_row(result, bool(baseline)), flush=True)
    finally:
        await app.shutdown()
    notes = [f"- {note}" for note in setup_notes] + [line for r in runs for line in notes_of(r)]
    lines = summary(runs)
    print("\n" + "\n".join(lines) + ("\n\nNotes:\n" + "\n".join(notes) if notes else ""))
    if args.json is not None:
        write_figures(args.json, {"command": command, "store": str(args.store), "patients": manifest["patients"],
                                  "facts": facts, "rows": [r.figures() for r in runs]})
    if args.record is not None:
        append_record(args.record, [
            *report_head(f"Aegis search in process, {manifest['patients']:,} patients", args.label, command, facts,
                         data_line),
            "", table_head(bool(baseline)), *(table_row(r, bool(baseline)) for r in runs), "",
            *lines, "",
            *(["Notes:", "", *notes, ""] if notes else []),
        ])  # fmt: skip
    return 1 if any(r.skipped or r.errors for r in runs) else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Time the search shapes of search_load.py in process (ASGI app on a store, no HTTP).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--store", type=Path, required=True, help="the SQLite store's data directory (AEGIS_DATA_DIR)")
    parser.add_argument("--data", type=Path, required=True, help="the bench/datagen.py directory loaded into it")
    parser.add_argument("--shapes", type=shape_list, default=list(SHAPE_NAMES),
                        help="comma-separated shape names, 'prefix*' allowed")
    parser.add_argument("--page", type=bounded(int, 1, 1000), default=50, help="_count sent with each search")
    parser.add_argument("--samples", type=bounded(int, 1, 10_000), default=200, help="sample patients to use")
    parser.add_argument("--instances", type=bounded(int, 1, 10_000), default=100, help="distinct queries per shape")
    parser.add_argument("--rounds", type=bounded(int, 1, 1000), default=5,
                        help="timed passes over the instances (after one untimed pass)")
    parser.add_argument("--min-requests", type=bounded(int, 1, 100_000), default=200,
                        help="timed requests per shape at least (more passes when a shape has few instances)")
    parser.add_argument("--lenient", action="store_true", help="do not send Prefer: handling=strict")
    parser.add_argument("--cpu", type=int, default=None, help="pin this process (and so the store) to one CPU")
    add_report_arguments(parser, figures=True)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not (args.data / MANIFEST).exists():
        print(f"error: {args.data} has no {MANIFEST}; generate it with bench/datagen.py", file=sys.stderr)
        return 2
    if not (args.store / "aegis.db").exists():
        print(f"error: {args.store} holds no aegis.db", file=sys.stderr)
        return 2
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    return run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
