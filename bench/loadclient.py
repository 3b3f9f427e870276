"""The benchmark client shared by every tool in ``bench/``: HTTP/1.1 keep-alive connections, the closed-loop runner
and the facts a report needs (machine, server, CPU use).

``http_load.py`` (CRUD load), ``ingest.py`` (transaction Bundles of generated data) and ``search_load.py`` (search
query shapes) all measure with this one client, so their figures are comparable and the client's own cost is known:
``http_load.py``'s module docstring explains the design (an ``asyncio.Protocol`` HTTP/1.1 client on uvloop, about
20 µs of client CPU per request) and the measurement model (closed loop, latency from writing the request to having
the whole body, warm-up and set-up excluded, errors counted and excluded from latency).

A tool plugs in by subclassing :class:`Operation` (makes one :class:`OpWorker` per simulated client) and calling
:func:`run_operation`. Only loopback targets are accepted (:func:`parse_target`).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import ipaddress
import math
import os
import platform
import re
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

import orjson

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is a project dependency; fall back rather than refuse to run
    uvloop = None  # type: ignore[assignment]

MAX_COUNT = 10_000_000
FHIR_JSON = "application/fhir+json"

# --------------------------------------------------------------------------------------------------------------------
# Minimal HTTP/1.1 keep-alive client
# --------------------------------------------------------------------------------------------------------------------


class HttpError(Exception):
    """The server's answer broke the small subset of HTTP/1.1 this client speaks."""


class SetupError(Exception):
    """The untimed preparation of a run (subject Patient, resource pool) failed; nothing can be measured."""


@dataclass(slots=True)
class Response:
    status: int
    headers: dict[bytes, bytes]  # names lower-cased; a repeated header keeps its last value
    body: bytes


class HttpConnection(asyncio.Protocol):
    """One keep-alive connection, one request in flight at a time; parses responses as the bytes arrive."""

    _MAX_HEAD = 64 * 1024

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._waiter: asyncio.Future[Response] | None = None
        # (status, headers, body start, body end) once the head of the current response has been parsed
        self._head: tuple[int, dict[bytes, bytes], int, int] | None = None
        self.closed = False
        self._close_after = False

    # asyncio.Protocol -------------------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, so this is a cast, not a check.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        try:
            self._parse()
        except (HttpError, ValueError) as exc:
            self._fail(HttpError(f"unparseable response: {exc}") if isinstance(exc, ValueError) else exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(exc or ConnectionResetError("server closed the connection"))

    # ------------------------------------------------------------------------------------------------------------------

    async def exchange(self, raw_request: bytes) -> Response:
        if self.closed or self._transport is None:
            raise ConnectionResetError("connection is closed")
        waiter: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self._waiter = waiter
        self._transport.write(raw_request)
        return await waiter

    def close(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.close()

    def _parse(self) -> None:
        buffer = self._buffer
        if self._head is None:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > self._MAX_HEAD:
                    raise HttpError("response head larger than 64 KiB")
                return
            lines = bytes(buffer[:end]).split(b"\r\n")
            status_line = lines[0]
            if not status_line.startswith(b"HTTP/1."):
                raise HttpError(f"not an HTTP/1.x status line: {status_line[:60]!r}")
            status = int(status_line[9:12])
            headers: dict[bytes, bytes] = {}
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                headers[name.strip().lower()] = value.strip()
            if b"transfer-encoding" in headers:
                raise HttpError("chunked/transfer-encoded responses are not supported (expected Content-Length)")
            length_text = headers.get(b"content-length")
            if length_text is None:
                if status >= 200 and status not in (204, 304):
                    raise HttpError(f"{status} response without Content-Length")
                length = 0
            else:
                length = int(length_text)
            if headers.get(b"connection", b"").lower() == b"close":
                self._close_after = True
            self._head = (status, headers, end + 4, end + 4 + length)
        status, headers, start, stop = self._head
        if len(buffer) < stop:
            return
        body = bytes(buffer[start:stop])
        del buffer[:stop]
        self._head = None
        waiter, self._waiter = self._waiter, None
        if waiter is None or waiter.done():
            raise HttpError("response without a request in flight")
        if status < 200:
            # 1xx interim answer (e.g. 100 Continue): keep waiting for the final one, which may already be here.
            self._waiter = waiter
            self._parse()
            return
        waiter.set_result(Response(status, headers, body))
        if buffer:
            raise HttpError("unexpected bytes after the response")
        if self._close_after:
            self.close()

    def _fail(self, exc: Exception) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        if not self.closed:
            self.close()


@dataclass(frozen=True, slots=True)
class Target:
    address: str  # the vetted loopback address; connections go here, never to a name resolved again later
    port: int
    host_header: str
    base_path: str  # "/fhir", no trailing slash
    ping_path: str

    async def connect(self) -> HttpConnection:
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_connection(HttpConnection, self.address, self.port)
        return protocol

    def request(self, method: str, path: str, body: bytes = b"", headers: Sequence[tuple[str, str]] = ()) -> bytes:
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host_header}", f"Accept: {FHIR_JSON}"]
        if body or method in ("POST", "PUT"):
            lines.append(f"Content-Type: {FHIR_JSON}")
            lines.append(f"Content-Length: {len(body)}")
        lines.extend(f"{name}: {value}" for name, value in headers)
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def parse_target(base: str, ping_path: str) -> Target:
    """Accept only ``http://<loopback>[:port]/path``: this tool must never load a machine other than this one."""
    parts = urlsplit(base)
    if parts.scheme != "http":
        raise ValueError(f"--base must be an http:// URL (no TLS support), got {base!r}")
    if not parts.hostname:
        raise ValueError(f"--base has no host: {base!r}")
    port = parts.port or 80
    addresses = [str(info[4][0]) for info in socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)]
    if not addresses or not all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses):
        raise ValueError(f"--base must point at a loopback address, {parts.hostname} resolves to {sorted(addresses)}")
    if not ping_path.startswith("/"):
        raise ValueError("--ping-path must start with /")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    # Prefer IPv4 for names like "localhost": uvicorn listens on 127.0.0.1 unless told otherwise.
    addresses.sort(key=lambda a: ":" in a)
    return Target(addresses[0], port, f"{host}:{port}", parts.path.rstrip("/"), ping_path)




class Client:
    """One connection for untimed set-up requests (probes, id look-ups), reopened when the server has closed it."""

    def __init__(self, target: Target, timeout: float = 60.0) -> None:
        self.target = target
        self.timeout = timeout
        self._conn: HttpConnection | None = None

    async def send(
        self, method: str, path: str, body: bytes = b"", headers: Sequence[tuple[str, str]] = ()
    ) -> Response:
        """``path`` is absolute on the server (it includes the base path, e.g. ``/fhir/Patient?...``)."""
        if self._conn is None or self._conn.closed:
            self._conn = await self.target.connect()
        try:
            return await asyncio.wait_for(
                self._conn.exchange(self.target.request(method, path, body, headers)), self.timeout
            )
        except (OSError, HttpError, asyncio.TimeoutError):
            self._conn.close()  # its state is unknown now; the next call opens a fresh one
            raise

    async def get_json(self, path: str, headers: Sequence[tuple[str, str]] = ()) -> tuple[int, Any]:
        """Status and parsed body (None when the body is not JSON)."""
        response = await self.send("GET", path, headers=headers)
        try:
            return response.status, orjson.loads(response.body)
        except orjson.JSONDecodeError:
            return response.status, None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


# --------------------------------------------------------------------------------------------------------------------
# Operations: what each simulated client sends and how its answers are judged
# --------------------------------------------------------------------------------------------------------------------

class OpWorker:
    """What one simulated client does for one operation: build the next request, then judge its response.

    ``check`` returns None when the response has the promised shape, else a short description of what was wrong.
    """

    def build(self) -> bytes:
        raise NotImplementedError

    def check(self, response: Response) -> str | None:
        raise NotImplementedError


class Operation:
    name = ""
    resources_per_request = 1

    def worker(self, index: int, clients: int) -> OpWorker:
        raise NotImplementedError

    def begin_measurement(self) -> None:
        """Called right before the measured phase: workers' ``check`` also runs during the warm-up, so an operation
        that keeps its own tallies resets them here."""


# --------------------------------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class OpResult:
    name: str
    clients: int
    resources_per_request: int
    wall: float = 0.0
    ok: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    latencies_ns: list[int] = field(default_factory=list)
    client_cpu: float = 0.0  # seconds of this process's CPU during the measured phase
    server_cpu: float | None = None

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def percentile_ms(self, p: float) -> float:
        return percentile_ms(self.latencies_ns, p)


def percentile_ms(sorted_ns: Sequence[int], p: float) -> float:
    """Nearest-rank on a sorted sample of nanoseconds: an actual observed latency, no interpolation."""
    if not sorted_ns:
        return math.nan
    return sorted_ns[max(1, math.ceil(p / 100.0 * len(sorted_ns))) - 1] / 1e6


class _Phase:
    """Bounds and book-keeping of one timed run of one operation over already open connections."""

    def __init__(self, seconds: float, count: int | None, record: OpResult | None) -> None:
        self.deadline = time.perf_counter() + seconds
        self.remaining = count if count is not None else MAX_COUNT
        self.record = record


async def _drive(conn: HttpConnection, worker: OpWorker, phase: _Phase, target: Target) -> HttpConnection:
    record = phase.record
    clock = time.perf_counter_ns
    while phase.remaining > 0 and time.perf_counter() < phase.deadline:
        phase.remaining -= 1
        raw = worker.build()
        started = clock()
        try:
            if conn.closed:
                conn = await target.connect()
            response = await conn.exchange(raw)
        except (OSError, HttpError) as exc:
            if record is not None:
                record.errors[f"{type(exc).__name__}: {exc}"[:160]] += 1
            conn.close()
            try:
                conn = await target.connect()
            except OSError:
                return conn  # server gone: this client stops, the error above says why
            continue
        elapsed = clock() - started
        problem = worker.check(response)
        if record is None:
            continue
        if problem is None:
            record.ok += 1
            record.latencies_ns.append(elapsed)
        else:
            record.errors[problem[:160]] += 1
    return conn


def _descendants(pid: int) -> list[int]:
    """The live child processes of ``pid`` and theirs (the server's prepare processes)."""
    out: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return out
    for task in tasks:
        try:
            children = [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue
        for child in children:
            out.append(child)
            out.extend(_descendants(child))
    return out


def proc_cpu_seconds(pids: Sequence[int]) -> float | None:
    """CPU seconds used so far by ``pids`` and their live descendants."""
    if not pids:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        for i, one in enumerate([pid, *_descendants(pid)]):
            try:
                stat = Path(f"/proc/{one}/stat").read_text()
            except OSError:
                if i == 0:
                    return None
                continue  # a child that ended meanwhile
            # Fields after the parenthesised command name; utime and stime are fields 14 and 15 of the whole line.
            fields = stat[stat.rindex(")") + 2 :].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
    return total


async def run_operation(
    op: Operation, target: Target, clients: int, seconds: float, count: int | None, warmup: float, timeout: float,
    server_pids: Sequence[int],
) -> OpResult:
    connections = await asyncio.gather(*(target.connect() for _ in range(clients)))
    workers = [op.worker(index, clients) for index in range(clients)]
    result = OpResult(op.name, clients, op.resources_per_request)

    async def phase_run(phase: _Phase) -> None:
        tasks = [
            asyncio.ensure_future(_drive(c, w, phase, target)) for c, w in zip(connections, workers, strict=True)
        ]
        # One watchdog for the whole phase instead of a timer per request (which would cost per-request CPU).
        _, pending = await asyncio.wait(tasks, timeout=max(0.0, phase.deadline - time.perf_counter()) + timeout)
        for task in pending:
            task.cancel()
            if phase.record is not None:
                phase.record.errors[f"timeout: no answer within {timeout:g} s"] += 1
        await asyncio.gather(*pending, return_exceptions=True)
        for index, task in enumerate(tasks):
            if task in pending:
                # The connection still has a request in flight; _drive reconnects a closed one when next used.
                connections[index].close()
            else:
                connections[index] = task.result()  # re-raises a bug in a worker instead of hiding it

    try:
        if warmup > 0:
            await phase_run(_Phase(warmup, None, None))
        # Everything allocated so far (payloads, the id pool) is long-lived: freezing it keeps the collector from
        # rescanning it during the measured phase, where a full collection would stall every client at once.
        gc.collect()
        gc.freeze()
        op.begin_measurement()
        server_before = proc_cpu_seconds(server_pids)
        cpu_before, wall_before = time.process_time(), time.perf_counter()
        await phase_run(_Phase(seconds, count, result))
        result.wall = time.perf_counter() - wall_before
        result.client_cpu = time.process_time() - cpu_before
        server_after = proc_cpu_seconds(server_pids)
        if server_before is not None and server_after is not None:
            result.server_cpu = server_after - server_before
    finally:
        for conn in connections:
            conn.close()
    result.latencies_ns.sort()
    return result


# --------------------------------------------------------------------------------------------------------------------
# Facts for reports
# --------------------------------------------------------------------------------------------------------------------


def report_head(title: str, label: str, command: str, facts: dict[str, str], *extra: str) -> list[str]:
    """The start of a recorded report: the title with the date, the label, the command that reproduces the run, then
    ``extra`` lines and the machine facts as a list."""
    return [f"## {title}, {facts['date']}", "", *([label, ""] if label else []), "```", command, "```", "",
            *(f"- {line}" for line in extra), *(f"- {key}: {value}" for key, value in facts.items() if key != "date")]


def add_report_arguments(parser: argparse.ArgumentParser, *, figures: bool = False) -> None:
    """``--record`` and ``--label``; with ``figures``, ``--json`` and ``--baseline`` too (p50 growth per shape)."""
    if figures:
        parser.add_argument("--json", type=Path, default=None, help="write the figures as JSON (for --baseline)")
        parser.add_argument("--baseline", type=Path, default=None,
                            help="an earlier --json: adds p50 growth per shape")
    parser.add_argument("--record", type=Path, default=None, help="append the report as Markdown to this file")
    parser.add_argument("--label", default="", help="free text added to the recorded report (e.g. what changed)")


def append_record(path: Path, lines: Sequence[str]) -> None:
    """Append a report to a Markdown file (bench/RESULTS.md) and say so."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as out:
        out.write("\n".join(lines) + "\n")
    print(f"\nrecorded in {path}")


def write_figures(path: Path, payload: dict[str, Any]) -> None:
    """A run's figures as JSON, for a later run's ``--baseline``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(payload, option=orjson.OPT_INDENT_2))
    print(f"\nfigures written to {path}")


def machine_facts(cpu: int | None = None) -> dict[str, str]:
    facts: dict[str, str] = {}
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    facts["cores"] = f"{os.cpu_count()} logical ({affinity} usable by this process)"
    try:
        meminfo = Path("/proc/meminfo").read_text()
        kib = int(re.search(r"MemTotal:\s+(\d+)", meminfo).group(1))  # type: ignore[union-attr]
        facts["memory"] = f"{kib / 1024 / 1024:.1f} GiB"
    except (OSError, AttributeError):
        facts["memory"] = "unknown"
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        model = re.search(r"model name\s*:\s*(.+)", cpuinfo)
        facts["cpu"] = model.group(1).strip() if model else platform.processor() or "unknown"
    except OSError:
        facts["cpu"] = platform.processor() or "unknown"
    facts["os"] = platform.platform()
    facts["python"] = f"{platform.python_implementation()} {platform.python_version()}"
    facts["event loop"] = f"uvloop {uvloop.__version__}" if uvloop is not None else "asyncio"
    facts["load average"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    if cpu is not None:
        facts["client pinned to"] = f"CPU {cpu}"
    facts["date"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    try:
        commit = subprocess.run(
            ["git", "describe", "--always", "--dirty"], capture_output=True, text=True, timeout=5, check=False,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip()
        facts["git"] = commit or "unknown"
    except (OSError, subprocess.SubprocessError):
        facts["git"] = "unknown"
    return facts


async def server_facts(target: Target) -> str:
    try:
        conn = await target.connect()
    except OSError as exc:
        raise SetupError(f"cannot connect to {target.host_header}: {exc}") from exc
    try:
        response = await asyncio.wait_for(conn.exchange(target.request("GET", f"{target.base_path}/metadata")), 10)
    except (OSError, HttpError, asyncio.TimeoutError) as exc:
        return f"unknown ({type(exc).__name__})"
    finally:
        conn.close()
    if response.status != 200:
        return f"unknown (GET metadata answered {response.status})"
    try:
        statement = orjson.loads(response.body)
        software = statement.get("software") or {}
        return f"{software.get('name', '?')} {software.get('version', '?')} (FHIR {statement.get('fhirVersion', '?')})"
    except (orjson.JSONDecodeError, AttributeError):
        return "unknown (metadata is not JSON)"


def bounded(kind: Callable[[str], Any], low: float, high: float) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        value = kind(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text} is outside [{low:g}, {high:g}]")
        return value

    return parse


_T = TypeVar("_T")


def run(main: Coroutine[Any, Any, _T]) -> _T:
    """Run the tool's coroutine on uvloop when it is installed (the client's per-request cost assumes it)."""
    runner = uvloop.run if uvloop is not None else asyncio.run
    return runner(main)
