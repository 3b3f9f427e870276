"""HTTP load generator for a running Aegis server (loopback only).

This module owns the benchmark client: it drives ``create``, ``read``, ``update``, ``transaction`` and ``ping``
(``GET /healthz``, no database) with N concurrent keep-alive connections for a bounded time and/or request count,
checks every response for the shape the server promises, and prints per operation the throughput (requests/s and
resources/s), latency percentiles (p50/p95/p99/max), the client's and optionally the server's CPU use, the exact
command line that reproduces the run, and the machine facts. ``--record FILE`` appends the same as Markdown.

Client design, and why
----------------------
The client described here lives in ``bench/loadclient.py``, shared with ``ingest.py`` and ``search_load.py`` so all
their figures come from the same measuring instrument; this file keeps the CRUD operations and their checks.

The target machine has 2 cores and the server uses about one of them, so the client must run on the other core and
must cost far less per request than the server does, or the figures measure the client. Measured on that machine
(AMD EPYC, 2 vCPU, CPython 3.11; server = the bare ASGI stand-in ``bench/_standin.py`` on uvicorn+httptools pinned to
core 1, client pinned to core 0, 16 connections, ``GET /healthz``):

=====================================================  ===========  ======================
client                                                 req/s        client CPU per request
=====================================================  ===========  ======================
``httpx.AsyncClient`` (uvloop)                          ~600         ~1600 µs
asyncio streams, hand-written HTTP/1.1 (uvloop)         ~39 000      ~16 µs
asyncio ``Protocol``, hand-written HTTP/1.1 (uvloop)    ~37 000      ~15 µs  (server-bound)
asyncio ``Protocol``, stock asyncio loop                ~36 000      ~27 µs
this file (Protocol + uvloop, checks every response)    ~33 000      ~20 µs  (server-bound)
=====================================================  ===========  ======================

httpx is two orders of magnitude too expensive. The streams and Protocol clients are both server-bound there, but
the Protocol one does the least work per response (it parses in ``data_received`` without extra buffering layers),
so this file uses an ``asyncio.Protocol`` HTTP/1.1 keep-alive client on uvloop: one process, one event loop, one
connection per simulated client, no pipelining. (The first four rows are minimal throw-away clients doing nothing
but the exchange; the last is this tool with its latency recording and response checks.) Several client processes
would only help if one process saturated its core; at ~15-20 µs per request that is a ceiling of ~50 000 req/s, far
above what the server can do on its one core, and extra processes would steal CPU from the server on a 2-core
machine. The client reports its own CPU use per operation, and its CPU per request, so a client-bound run is visible
(warned about above 85 % of a core). The garbage collector is frozen before each measured phase so a full collection
over the id pool cannot stall all clients at once.

Deliberate limits of the HTTP client: HTTP/1.1 over plain TCP only, responses must carry ``Content-Length`` (what
Aegis sends; chunked responses are reported as errors), no redirects, no TLS.

Measurement model: closed loop. Each client sends its next request as soon as the previous answer arrived, so
latency percentiles are those of a saturated server at that concurrency (no coordinated-omission correction; use
fewer clients to see unloaded latency). Latency is wall time from writing the request to having the whole response
body, on ``time.perf_counter_ns``. Connection set-up, a warm-up period and the untimed pool set-up (resources that
``read``/``update`` need) are excluded. A request counts as an error when the status or the promised shape (Location,
ETag, transaction-response locations) is wrong; errors are counted, listed, and excluded from latency figures.

Example::

    python bench/http_load.py --base http://127.0.0.1:8080/fhir --clients 16 --seconds 10 \\
        --ops create,read,update,transaction,ping --record bench/RESULTS.md
"""

from __future__ import annotations

import argparse
import math
import os
import random
import re
import shlex
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

# Run as a script (python bench/http_load.py): bench/ is then sys.path[0], where the sibling modules are.
from loadclient import (  # noqa: I001  (grouped by role, not alphabetically)
    MAX_COUNT, HttpError, Operation, OpResult, OpWorker, Response, SetupError, Target, bounded,
    add_report_arguments, append_record, machine_facts, parse_target, run, run_operation, server_facts,
)

OPS = ("create", "read", "update", "transaction", "ping")
MAX_CLIENTS = 1024
MAX_SECONDS = 600.0
MAX_POOL = 50_000
# Cap on ids remembered from the create phase: enough to spread reads/updates, bounded memory on long runs.
MAX_REMEMBERED = 200_000
UCUM = "http://unitsofmeasure.org"


# --------------------------------------------------------------------------------------------------------------------
# Payloads
# --------------------------------------------------------------------------------------------------------------------


def _decimal(rng: random.Random, low: float, high: float, places: int) -> orjson.Fragment:
    # A pre-serialised number keeps the exact digits (72.50 stays 72.50), like the server must.
    return orjson.Fragment(f"{rng.uniform(low, high):.{places}f}".encode())


def _instant(rng: random.Random) -> str:
    day = rng.randrange(1, 29)
    return f"2024-{rng.randrange(1, 13):02d}-{day:02d}T{rng.randrange(7, 19):02d}:{rng.randrange(60):02d}:00+02:00"


def observation(rng: random.Random, subject: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "vital-signs",
                        "display": "Vital Signs",
                    }
                ]
            }
        ],
        "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7", "display": "Body weight"}]},
        "subject": {"reference": subject},
        "effectiveDateTime": _instant(rng),
        "valueQuantity": {"value": _decimal(rng, 45, 120, 2), "unit": "kg", "system": UCUM, "code": "kg"},
    }


def patient(rng: random.Random) -> dict[str, Any]:
    family = rng.choice(("Bench", "Load", "Perf", "Müller", "García"))
    return {
        "resourceType": "Patient",
        "identifier": [{"system": "https://aegis-fhir.org/bench/mrn", "value": f"B-{rng.randrange(10**9):09d}"}],
        "name": [{"family": family, "given": [rng.choice(("Ada", "Alan", "Grace", "Zoë"))]}],
        "gender": rng.choice(("female", "male")),
        "birthDate": f"{rng.randrange(1930, 2010)}-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}",
    }


def transaction_bundle(rng: random.Random, size: int) -> dict[str, Any]:
    """A Patient and ``size - 1`` Observations that refer to it by its ``urn:uuid:``."""
    patient_urn = f"urn:uuid:{uuid.UUID(int=rng.getrandbits(128), version=4)}"
    entries = [{"fullUrl": patient_urn, "resource": patient(rng), "request": {"method": "POST", "url": "Patient"}}]
    for _ in range(size - 1):
        entries.append(
            {
                "fullUrl": f"urn:uuid:{uuid.UUID(int=rng.getrandbits(128), version=4)}",
                "resource": observation(rng, patient_urn),
                "request": {"method": "POST", "url": "Observation"},
            }
        )
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


# --------------------------------------------------------------------------------------------------------------------
# Operations
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class Context:
    """State shared between operations of one run."""

    target: Target
    resource_type: str
    rng: random.Random
    if_match: bool
    tx_size: int
    subject: str = ""  # "Patient/<id>" that created Observations refer to
    pool: list[list[str]] = field(default_factory=list)  # [id, version] of resources read/update can use


def resource_body(ctx: Context) -> dict[str, Any]:
    """A fresh body of the run's resource type; Observations refer to the run's Patient."""
    if ctx.resource_type == "Observation":
        return observation(ctx.rng, ctx.subject)
    return patient(ctx.rng)


_ID = rb"[A-Za-z0-9\-.]{1,64}"  # FHIR id syntax, also used for version ids


def _location_pattern(kind: str) -> re.Pattern[bytes]:
    return re.compile(rb"/" + re.escape(kind.encode()) + rb"/(" + _ID + rb")/_history/(" + _ID + rb")$")


_TX_LOCATION = re.compile(rb"^(Patient|Observation)/" + _ID + rb"/_history/" + _ID + rb"$")


def _etag_version(response: Response) -> bytes | None:
    etag = response.headers.get(b"etag")
    if etag is None or not etag.startswith(b'W/"') or not etag.endswith(b'"'):
        return None
    return etag[3:-1]


class PingOp(Operation):
    name = "ping"
    resources_per_request = 0

    def __init__(self, ctx: Context) -> None:
        self.raw = ctx.target.request("GET", ctx.target.ping_path)

    def worker(self, index: int, clients: int) -> OpWorker:
        return _PingWorker(self)


class _PingWorker(OpWorker):
    def __init__(self, op: PingOp) -> None:
        self.raw = op.raw

    def build(self) -> bytes:
        return self.raw

    def check(self, response: Response) -> str | None:
        return None if response.status == 200 else f"ping: status {response.status}"


class CreateOp(Operation):
    name = "create"

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        path = f"{ctx.target.base_path}/{ctx.resource_type}"
        # Varied bodies prepared up front so building a request costs nothing during the run.
        self.raws = [ctx.target.request("POST", path, orjson.dumps(resource_body(ctx))) for _ in range(64)]
        self.location = _location_pattern(ctx.resource_type)

    def worker(self, index: int, clients: int) -> OpWorker:
        return _CreateWorker(self, index)


class _CreateWorker(OpWorker):
    def __init__(self, op: CreateOp, index: int) -> None:
        self.op = op
        self.n = index

    def build(self) -> bytes:
        self.n += 1
        return self.op.raws[self.n % len(self.op.raws)]

    def check(self, response: Response) -> str | None:
        if response.status != 201:
            return f"create: status {response.status} {response.body[:120]!r}"
        location = response.headers.get(b"location", b"")
        match = self.op.location.search(location)
        if match is None:
            return f"create: bad Location {location!r}"
        version = _etag_version(response)
        if version is None or version != match.group(2):
            return f"create: ETag {response.headers.get(b'etag')!r} disagrees with Location {location!r}"
        pool = self.op.ctx.pool
        if len(pool) < MAX_REMEMBERED:
            pool.append([match.group(1).decode(), version.decode()])
        return None


class ReadOp(Operation):
    name = "read"

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.prefix = f"{ctx.target.base_path}/{ctx.resource_type}/"

    def worker(self, index: int, clients: int) -> OpWorker:
        return _ReadWorker(self, index, clients)


class _ReadWorker(OpWorker):
    def __init__(self, op: ReadOp, index: int, clients: int) -> None:
        self.op = op
        self.pool = op.ctx.pool
        # Each client walks the pool from its own offset so concurrent reads hit different rows.
        self.n = index * max(1, len(self.pool) // clients)
        self.expected = ""

    def build(self) -> bytes:
        self.n += 1
        self.expected = self.pool[self.n % len(self.pool)][0]
        return self.op.ctx.target.request("GET", self.op.prefix + self.expected)

    def check(self, response: Response) -> str | None:
        if response.status != 200:
            return f"read: status {response.status} {response.body[:120]!r}"
        try:
            got = orjson.loads(response.body)
        except orjson.JSONDecodeError:
            return "read: body is not JSON"
        if got.get("id") != self.expected or got.get("resourceType") != self.op.ctx.resource_type:
            return f"read: asked for {self.expected}, got {got.get('resourceType')}/{got.get('id')}"
        return None


class UpdateOp(Operation):
    name = "update"

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.prefix = f"{ctx.target.base_path}/{ctx.resource_type}/"
        self.templates = [resource_body(ctx) for _ in range(32)]

    def worker(self, index: int, clients: int) -> OpWorker:
        # Disjoint ids per client: with If-Match, two clients updating one resource would fail each other with 412.
        return _UpdateWorker(self, self.ctx.pool[index::clients])


class _UpdateWorker(OpWorker):
    def __init__(self, op: UpdateOp, owned: list[list[str]]) -> None:
        if not owned:
            raise SetupError("update needs at least one pooled resource per client")
        self.op = op
        self.owned = owned
        self.current = owned[0]
        self.n = 0

    def build(self) -> bytes:
        op = self.op
        self.n += 1
        self.current = self.owned[self.n % len(self.owned)]
        # The full resource, as a PUT must carry; a different template each time so the content really changes.
        body = dict(op.templates[self.n % len(op.templates)])
        body["id"] = self.current[0]
        headers = [("If-Match", f'W/"{self.current[1]}"')] if op.ctx.if_match else []
        return op.ctx.target.request("PUT", op.prefix + self.current[0], orjson.dumps(body), headers)

    def check(self, response: Response) -> str | None:
        if response.status not in (200, 201):
            return f"update: status {response.status} {response.body[:120]!r}"
        version = _etag_version(response)
        if version is None:
            return "update: no W/ ETag in the response" if self.op.ctx.if_match else None
        self.current[1] = version.decode()
        return None


class TransactionOp(Operation):
    name = "transaction"

    def __init__(self, ctx: Context) -> None:
        self.size = self.resources_per_request = ctx.tx_size
        bundles = [orjson.dumps(transaction_bundle(ctx.rng, ctx.tx_size)) for _ in range(32)]
        self.raws = [ctx.target.request("POST", ctx.target.base_path or "/", body) for body in bundles]

    def worker(self, index: int, clients: int) -> OpWorker:
        return _TransactionWorker(self, index)


class _TransactionWorker(OpWorker):
    def __init__(self, op: TransactionOp, index: int) -> None:
        self.op = op
        self.n = index

    def build(self) -> bytes:
        self.n += 1
        return self.op.raws[self.n % len(self.op.raws)]

    def check(self, response: Response) -> str | None:
        if response.status != 200:
            return f"transaction: status {response.status} {response.body[:120]!r}"
        try:
            bundle = orjson.loads(response.body)
        except orjson.JSONDecodeError:
            return "transaction: body is not JSON"
        if bundle.get("resourceType") != "Bundle" or bundle.get("type") != "transaction-response":
            return "transaction: not a transaction-response Bundle"
        entries = bundle.get("entry") or []
        if len(entries) != self.op.size:
            return f"transaction: {len(entries)} response entries for {self.op.size} requests"
        for entry in entries:
            answer = entry.get("response") or {}
            status, location = str(answer.get("status", "")), str(answer.get("location", ""))
            if not status.startswith("201") or not _TX_LOCATION.match(location.encode()):
                return f"transaction: bad entry response {answer!r:.120}"
        return None


async def _create_patient(ctx: Context) -> str:
    conn = await ctx.target.connect()
    try:
        raw = ctx.target.request("POST", f"{ctx.target.base_path}/Patient", orjson.dumps(patient(ctx.rng)))
        response = await conn.exchange(raw)
    finally:
        conn.close()
    match = _location_pattern("Patient").search(response.headers.get(b"location", b""))
    if response.status != 201 or match is None:
        raise SetupError(f"POST Patient answered {response.status} {response.body[:200]!r}")
    return f"Patient/{match.group(1).decode()}"


async def _fill_pool(ctx: Context, size: int, clients: int, timeout: float) -> None:
    """Create (untimed) the resources read/update work on when no create phase has provided enough of them."""
    missing = size - len(ctx.pool)
    if missing <= 0:
        return
    op = CreateOp(ctx)
    result = await run_operation(op, ctx.target, min(clients, missing), timeout, missing, 0.0, timeout, ())
    if len(ctx.pool) < size:
        problems = "; ".join(f"{n}x {text}" for text, n in result.errors.most_common(3))
        raise SetupError(f"could only create {len(ctx.pool)} of {size} {ctx.resource_type}s ({problems})")


# --------------------------------------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------------------------------------


def reproduce_command(args: argparse.Namespace) -> str:
    """Every option spelled out, so the line still reproduces the run if a default changes later."""
    argv = [
        "python", sys.argv[0],
        "--base", args.base,
        "--clients", str(args.clients),
        "--seconds", f"{args.seconds:g}",
        "--ops", ",".join(args.ops),
        "--type", args.type,
        "--warmup", f"{args.warmup:g}",
        "--pool", str(args.pool),
        "--tx-size", str(args.tx_size),
        "--ping-path", args.ping_path,
        "--seed", str(args.seed),
        "--timeout", f"{args.timeout:g}",
    ]  # fmt: skip
    if args.count is not None:
        argv += ["--count", str(args.count)]
    if args.if_match:
        argv.append("--if-match")
    if args.cpu is not None:
        argv += ["--cpu", str(args.cpu)]
    for pid in args.server_pid:
        argv += ["--server-pid", str(pid)]
    return shlex.join(argv)


TABLE_HEAD = (
    "| op | clients | ok | errors | req/s | resources/s | p50 ms | p95 ms | p99 ms | max ms "
    "| client CPU | client µs/req | server CPU |\n"
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
)


def table_row(r: OpResult) -> str:
    wall = r.wall or math.nan
    resources = f"{r.ok * r.resources_per_request / wall:,.0f}" if r.resources_per_request else "—"
    server = f"{r.server_cpu / wall:.0%}" if r.server_cpu is not None else "—"
    # The client's own CPU cost per request: its ceiling on one core is about 1e6 / this figure.
    requests = r.ok + r.error_count
    per_request = f"{r.client_cpu / requests * 1e6:.0f}" if requests else "—"
    cells = [
        r.name, str(r.clients), f"{r.ok:,}", f"{r.error_count:,}", f"{r.ok / wall:,.0f}", resources,
        f"{r.percentile_ms(50):.2f}", f"{r.percentile_ms(95):.2f}", f"{r.percentile_ms(99):.2f}",
        f"{r.percentile_ms(100):.2f}", f"{r.client_cpu / wall:.0%}", per_request, server,
    ]  # fmt: skip
    return "| " + " | ".join(cells) + " |"


def report(
    args: argparse.Namespace, facts: dict[str, str], server: str, results: list[OpResult], aborted: str = ""
) -> str:
    lines = [
        f"## Aegis HTTP load, {facts['date']}",
        "",
        *([args.label, ""] if args.label else []),
        "```",
        reproduce_command(args),
        "```",
        "",
        f"- target: `{args.base}`, server: {server}",
        *(f"- {key}: {value}" for key, value in facts.items() if key != "date"),
        "",
        TABLE_HEAD,
        *(table_row(r) for r in results),
        "",
    ]
    found = notes(results, aborted)
    if found:
        lines += ["Notes:", "", *found, ""]
    return "\n".join(lines)


def notes(results: list[OpResult], aborted: str = "") -> list[str]:
    found = [f"- {aborted}"] if aborted else []
    for r in results:
        for text, n in r.errors.most_common(5):
            found.append(f"- {r.name}: {n}x {text}")
        if r.wall and r.client_cpu / r.wall > 0.85:
            share = f"{r.client_cpu / r.wall:.0%}"
            found.append(f"- {r.name}: the client used {share} of a core; figures may be client-bound")
    return found


# --------------------------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------------------------


def _ops(text: str) -> list[str]:
    ops = [op.strip() for op in text.split(",") if op.strip()]
    unknown = [op for op in ops if op not in OPS]
    if unknown or not ops:
        raise argparse.ArgumentTypeError(f"unknown op(s) {unknown}; choose from {','.join(OPS)}")
    return ops


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Drive a running Aegis server on loopback and report throughput and latency per operation.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--base", default="http://127.0.0.1:8080/fhir", help="FHIR base URL (loopback only)")
    parser.add_argument("--clients", type=bounded(int, 1, MAX_CLIENTS), default=16, help="concurrent connections")
    parser.add_argument(
        "--seconds", type=bounded(float, 0.1, MAX_SECONDS), default=10.0, help="measured time per op (upper bound)"
    )
    parser.add_argument(
        "--count", type=bounded(int, 1, MAX_COUNT), default=None, help="measured requests per op (upper bound)"
    )
    parser.add_argument("--ops", type=_ops, default=list(OPS), help=f"comma-separated, run in order: {','.join(OPS)}")
    parser.add_argument(
        "--type", choices=("Observation", "Patient"), default="Observation", help="for create/read/update"
    )
    parser.add_argument("--if-match", action="store_true", help="send If-Match with the last ETag on update")
    parser.add_argument("--warmup", type=bounded(float, 0, 60), default=1.0, help="unmeasured seconds before each op")
    parser.add_argument(
        "--pool", type=bounded(int, 1, MAX_POOL), default=256,
        help="resources read/update cycle over, created untimed if the create op has not made enough",
    )  # fmt: skip
    parser.add_argument("--tx-size", type=bounded(int, 2, 100), default=5, help="entries per transaction Bundle")
    parser.add_argument("--ping-path", default="/healthz", help="path on the same host:port for the ping op")
    parser.add_argument("--seed", type=int, default=1, help="seed for generated payloads")
    parser.add_argument("--timeout", type=bounded(float, 1, 300), default=30.0, help="seconds to wait for stragglers")
    parser.add_argument("--cpu", type=int, default=None, help="pin this client to one CPU (e.g. 0; server on 1)")
    parser.add_argument(
        "--server-pid", type=int, action="append", default=[], help="server process id(s) whose CPU use to report"
    )
    add_report_arguments(parser)
    return parser


async def main_async(args: argparse.Namespace) -> tuple[list[OpResult], str]:
    target = parse_target(args.base, args.ping_path)
    ctx = Context(target, args.type, random.Random(args.seed), args.if_match, args.tx_size)
    server = await server_facts(target)
    facts = machine_facts(args.cpu)
    print(f"command: {reproduce_command(args)}")
    print(f"target: {args.base}, server: {server}")
    print("\n".join(f"{key}: {value}" for key, value in facts.items()), end="\n\n")
    print(TABLE_HEAD, flush=True)

    results: list[OpResult] = []
    aborted = ""
    try:
        if args.type == "Observation" and any(op in args.ops for op in ("create", "read", "update")):
            ctx.subject = await _create_patient(ctx)
        for name in args.ops:
            if name in ("read", "update"):
                await _fill_pool(ctx, max(args.pool, args.clients), args.clients, args.timeout)
            result = await run_operation(
                _make_op(name, ctx), ctx.target, args.clients, args.seconds, args.count, args.warmup, args.timeout,
                args.server_pid,
            )  # fmt: skip
            results.append(result)
            print(table_row(result), flush=True)
    except (OSError, HttpError, SetupError) as exc:
        # Typically the server went away between operations; report what was measured rather than a traceback.
        aborted = f"run aborted: {type(exc).__name__}: {exc}"

    found = notes(results, aborted)
    if found:
        print("\nNotes:\n" + "\n".join(found))
    if args.record is not None:
        append_record(args.record, [report(args, facts, server, results, aborted)])
    return results, aborted


def _make_op(name: str, ctx: Context) -> Operation:
    if name == "ping":
        return PingOp(ctx)
    if name == "create":
        return CreateOp(ctx)
    if name == "read":
        return ReadOp(ctx)
    if name == "update":
        return UpdateOp(ctx)
    return TransactionOp(ctx)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    try:
        parse_target(args.base, args.ping_path)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        results, aborted = run(main_async(args))
    except SetupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 1 if aborted or any(r.error_count for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
