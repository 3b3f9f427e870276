"""Load a directory written by ``bench/datagen.py`` into a running Aegis server with transaction Bundles.

It posts ``shared.ndjson`` first (Organizations and Practitioners, PUT with fixed ids, one client), then every patient
Bundle once, in file order, over ``--clients`` concurrent keep-alive connections (the client of
``bench/loadclient.py``), and reports resources per second, Bundles per second and latency per Bundle. Every answer
must be a ``200`` ``transaction-response`` with one ``201`` (``200``/``201`` for PUT) entry per request; anything else
is counted as an error, listed, and makes the exit status non-zero. ``--server-data-dir`` adds the store's size on
disk after the load, ``--server-pid`` the server's CPU use, ``--record FILE`` appends the report as Markdown.

A transaction is all-or-nothing, so a failed Bundle leaves nothing behind; but the tool does not retry and does not
resume: load into a fresh data directory (``bench/run_search_bench.sh`` does) or ids and counts will double.

Example::

    python bench/ingest.py --base http://127.0.0.1:8080/fhir --data /tmp/aegis-bench-data/p1000-s42 --clients 4
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import shlex
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import orjson

# Run as a script (python bench/ingest.py): bench/ is then sys.path[0], where the sibling modules are.
from datagen import MANIFEST, SHARED_FILE
from loadclient import (  # noqa: I001
    HttpError, Operation, OpResult, OpWorker, Response, SetupError, Target, bounded, machine_facts,
    add_report_arguments, append_record, parse_target, report_head, run, run_operation, server_facts,
)

MAX_HOURS = 6.0
# Transaction responses are small with return=minimal, but a 300-entry Bundle still takes the server a while.
DEFAULT_TIMEOUT = 300.0


class BundleSource:
    """Patient Bundles of a generated directory in order, read lazily so memory stays flat on the 10k data set."""

    def __init__(self, directory: Path, limit: int | None) -> None:
        manifest = orjson.loads((directory / MANIFEST).read_bytes())
        self.files = [directory / name for name in manifest["files"] if name != SHARED_FILE]
        self.total = manifest["patients"] if limit is None else min(limit, manifest["patients"])
        self._lines = self._iterate()

    def _iterate(self) -> Iterator[bytes]:
        produced = 0
        for path in self.files:
            with path.open("rb") as handle:
                for line in handle:
                    if produced >= self.total:
                        return
                    if line.strip():
                        produced += 1
                        yield line.rstrip(b"\n")

    def next(self) -> bytes | None:
        return next(self._lines, None)


class IngestOp(Operation):
    """POST each Bundle once; the Bundles are shared by all clients through one source."""

    name = "ingest"
    resources_per_request = 0  # varies per Bundle: counted from the answers instead

    def __init__(self, target: Target, source: BundleSource | list[bytes], label: str = "ingest") -> None:
        self.name = label
        self.target = target
        self.source = source
        self.resources = 0
        self.bundles = 0
        self.started = time.perf_counter()

    def next_body(self) -> bytes | None:
        if isinstance(self.source, list):
            return self.source.pop(0) if self.source else None
        return self.source.next()

    def worker(self, index: int, clients: int) -> OpWorker:
        return _IngestWorker(self)


class _IngestWorker(OpWorker):
    def __init__(self, op: IngestOp) -> None:
        self.op = op
        self.expected = 0
        self.methods: list[str] = []

    def build(self) -> bytes:
        body = self.op.next_body()
        if body is None:
            # Only reachable if the count bound and the source disagree; an empty transaction is harmless.
            body = b'{"resourceType":"Bundle","type":"transaction"}'
        # The Bundle is parsed once here (a few ms for 300 entries, far below what the server spends on it) to know
        # how many answers to expect and whether each was a POST or a PUT.
        entries = orjson.loads(body).get("entry") or []
        self.methods = [str((entry.get("request") or {}).get("method", "")) for entry in entries]
        # return=minimal: the client only needs statuses and locations, not ~300 resources echoed back.
        return self.op.target.request("POST", self.op.target.base_path or "/", body, [("Prefer", "return=minimal")])

    def check(self, response: Response) -> str | None:
        if response.status != 200:
            return f"status {response.status} {response.body[:200]!r}"
        try:
            bundle = orjson.loads(response.body)
        except orjson.JSONDecodeError:
            return "body is not JSON"
        if bundle.get("resourceType") != "Bundle" or bundle.get("type") != "transaction-response":
            return "not a transaction-response Bundle"
        entries = bundle.get("entry") or []
        if len(entries) != len(self.methods):
            return f"{len(entries)} response entries for {len(self.methods)} requests"
        for method, entry in zip(self.methods, entries, strict=True):
            status = str((entry.get("response") or {}).get("status", ""))
            allowed = ("201",) if method == "POST" else ("200", "201")
            if not status.startswith(allowed):
                return f"{method} entry answered {status!r}"
        self.op.resources += len(entries)
        self.op.bundles += 1
        return None


async def _progress(op: IngestOp, total: int, every: float) -> None:
    """A line every ``every`` seconds: a 10k-patient load takes many minutes and should not look hung."""
    while True:
        await asyncio.sleep(every)
        elapsed = time.perf_counter() - op.started
        rate = op.resources / elapsed if elapsed else 0.0
        print(f"  … {op.bundles:,}/{total:,} bundles, {op.resources:,} resources, {rate:,.0f} resources/s, "
              f"{elapsed:,.0f} s", flush=True)


def disk_usage(directory: Path) -> tuple[int, list[tuple[str, int]]]:
    """Bytes actually allocated (like ``du``) under a directory, and the largest files."""
    total = 0
    files: list[tuple[str, int]] = []
    for root, _, names in os.walk(directory):
        for name in names:
            path = Path(root) / name
            try:
                stat = path.stat()
            except OSError:
                continue  # a WAL or journal may vanish between listing and stat
            used = stat.st_blocks * 512
            total += used
            files.append((str(path.relative_to(directory)), used))
    files.sort(key=lambda item: -item[1])
    return total, files[:6]


def reproduce_command(args: argparse.Namespace) -> str:
    argv = [
        "python", sys.argv[0],
        "--base", args.base,
        "--data", str(args.data),
        "--clients", str(args.clients),
        "--timeout", f"{args.timeout:g}",
        "--max-seconds", f"{args.max_seconds:g}",
    ]  # fmt: skip
    if args.limit is not None:
        argv += ["--limit", str(args.limit)]
    if args.cpu is not None:
        argv += ["--cpu", str(args.cpu)]
    for pid in args.server_pid:
        argv += ["--server-pid", str(pid)]
    if args.server_data_dir is not None:
        argv += ["--server-data-dir", str(args.server_data_dir)]
    return shlex.join(argv)


TABLE_HEAD = (
    "| phase | clients | bundles | errors | resources | seconds | resources/s | bundles/s | p50 ms | p95 ms | p99 ms "
    "| max ms | client CPU | server CPU |\n"
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
)


def table_row(result: OpResult, op: IngestOp) -> str:
    wall = result.wall or math.nan
    server = f"{result.server_cpu / wall:.0%}" if result.server_cpu is not None else "—"
    cells = [
        result.name, str(result.clients), f"{op.bundles:,}", f"{result.error_count:,}", f"{op.resources:,}",
        f"{wall:,.1f}", f"{op.resources / wall:,.0f}", f"{op.bundles / wall:,.1f}",
        f"{result.percentile_ms(50):.0f}", f"{result.percentile_ms(95):.0f}", f"{result.percentile_ms(99):.0f}",
        f"{result.percentile_ms(100):.0f}", f"{result.client_cpu / wall:.0%}", server,
    ]  # fmt: skip
    return "| " + " | ".join(cells) + " |"


async def main_async(args: argparse.Namespace) -> int:
    target = parse_target(args.base, "/healthz")
    manifest = orjson.loads((args.data / MANIFEST).read_bytes())
    server = await server_facts(target)
    facts = machine_facts(args.cpu)
    command = reproduce_command(args)
    source = BundleSource(args.data, args.limit)
    data_line = (f"data: {args.data} ({manifest['patients']:,} patients, {manifest['total']:,} resources, "
                 f"seed {manifest['key']['seed']}; generated by `{manifest['command']}`)")
    print(f"command: {command}")
    print(f"target: {args.base}, server: {server}")
    print(data_line)
    print("\n".join(f"{key}: {value}" for key, value in facts.items()), end="\n\n", flush=True)

    rows: list[str] = []
    notes: list[str] = []
    failed = False
    phases: list[tuple[IngestOp, int, int]] = []
    shared_path = args.data / SHARED_FILE
    if shared_path.exists() and not args.skip_shared:
        shared = [line for line in shared_path.read_bytes().splitlines() if line.strip()]
        phases.append((IngestOp(target, shared, "shared"), 1, len(shared)))
    phases.append((IngestOp(target, source, "patients"), args.clients, source.total))
    print(TABLE_HEAD, flush=True)
    for op, clients, count in phases:
        op.started = time.perf_counter()
        ticker = asyncio.ensure_future(_progress(op, count, args.progress)) if op.name == "patients" else None
        try:
            result = await run_operation(
                op, target, min(clients, max(1, count)), args.max_seconds, count, 0.0, args.timeout, args.server_pid
            )
        except (OSError, HttpError) as exc:
            notes.append(f"- {op.name}: aborted: {type(exc).__name__}: {exc}")
            failed = True
            break
        finally:
            if ticker is not None:
                ticker.cancel()
        row = table_row(result, op)
        rows.append(row)
        print(row, flush=True)
        for text, n in result.errors.most_common(5):
            notes.append(f"- {op.name}: {n}x {text}")
        if result.error_count:
            failed = True
        if op.bundles < count and not result.error_count:
            notes.append(f"- {op.name}: only {op.bundles} of {count} Bundles sent before --max-seconds")
            failed = True
        if result.wall and result.client_cpu / result.wall > 0.85:
            notes.append(f"- {op.name}: the client used {result.client_cpu / result.wall:.0%} of a core")

    disk = ""
    if args.server_data_dir is not None and args.server_data_dir.exists():
        total, largest = disk_usage(args.server_data_dir)
        parts = ", ".join(f"{name} {size / 2**20:,.1f} MiB" for name, size in largest)
        disk = f"store on disk after the load: {total / 2**20:,.1f} MiB in {args.server_data_dir} ({parts})"
        print(f"\n{disk}")
    if notes:
        print("\nNotes:\n" + "\n".join(notes))

    if args.record is not None:
        lines = [
            *report_head("Aegis ingest", args.label, command, facts, f"target: `{args.base}`, server: {server}",
                         data_line),
            *([f"- {disk}"] if disk else []),
            "", TABLE_HEAD, *rows, "",
            *(["Notes:", "", *notes, ""] if notes else []),
        ]  # fmt: skip
        append_record(args.record, lines)
    return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Load a bench/datagen.py directory into a running Aegis server with transaction Bundles.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--base", default="http://127.0.0.1:8080/fhir", help="FHIR base URL (loopback only)")
    parser.add_argument("--data", type=Path, required=True, help="directory written by bench/datagen.py")
    parser.add_argument("--clients", type=bounded(int, 1, 64), default=4, help="concurrent connections")
    parser.add_argument("--limit", type=bounded(int, 1, 10_000_000), default=None,
                        help="load only the first N patients")
    parser.add_argument("--skip-shared", action="store_true", help="do not load shared.ndjson first")
    parser.add_argument("--timeout", type=bounded(float, 1, 3600), default=DEFAULT_TIMEOUT,
                        help="seconds to wait for the last answers")
    parser.add_argument("--max-seconds", type=bounded(float, 1, MAX_HOURS * 3600), default=3 * 3600.0,
                        help="stop sending after this long (upper bound)")
    parser.add_argument("--progress", type=bounded(float, 1, 3600), default=15.0, help="seconds between progress lines")
    parser.add_argument("--cpu", type=int, default=None, help="pin this client to one CPU (e.g. 0; server on 1)")
    parser.add_argument("--server-pid", type=int, action="append", default=[], help="server process id(s)")
    parser.add_argument("--server-data-dir", type=Path, default=None, help="the server's --data-dir, for disk usage")
    add_report_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    try:
        parse_target(args.base, "/healthz")
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not (args.data / MANIFEST).exists():
        print(f"error: {args.data} has no {MANIFEST}; generate it with bench/datagen.py", file=sys.stderr)
        return 2
    try:
        return run(main_async(args))
    except SetupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
