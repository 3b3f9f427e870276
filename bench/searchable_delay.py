"""Write → searchable delay of an Aegis server whose searches Elasticsearch answers (``--search``).

Each sample: ``POST /Patient`` with a fresh identifier; the clock starts when the 201 arrives (the write is
acknowledged) and stops when ``GET /Patient?identifier=…`` returns a Bundle holding it. With read-your-writes
(see ``fhir_server/storage/elastic/visibility.py``) the first search after the write must already find it; the
script counts every search that did not (``misses``: must be 0) and retries until it does, so the delay is real
either way. A baseline run times the same search for an identifier written long before (no indexing to wait for),
so ``delay − baseline`` is what indexing and the refresh cost. Optional background writers (``--writers``) keep
creating resources meanwhile, to show the delay under write load.

By default the script starts its own server (``aegis serve --store MONGODB_URL --search ES_URL`` with a fresh
database and index prefix, authorization off, pinned with ``--server-cpu``); ``--base`` measures a running one.
The first line printed is the command that reproduces the run; ``--record FILE`` appends the report as Markdown.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx

ROOT = Path(__file__).resolve().parents[1]
FHIR_JSON = "application/fhir+json"


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * p
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _loopback(url: str) -> None:
    host = urlparse(url).hostname or ""
    if socket.gethostbyname(host) not in ("127.0.0.1",) and not host.startswith("127."):
        sys.exit(f"only loopback targets are accepted: {url}")


class Server:
    """``aegis serve`` on the MongoDB store with Elasticsearch search, on fresh data."""

    def __init__(self, mongodb: str, elasticsearch: str, cpu: int | None) -> None:
        from tests.support.server import fresh_mongodb_url

        os.environ.setdefault("AEGIS_TEST_MONGODB_URL", mongodb)
        self.port = _free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="aegis-delay-"))
        cmd = [sys.executable, "-m", "fhir_server.cli", "serve", "--port", str(self.port), "--data-dir",
               str(self.dir), "--log-level", "warning", "--store", fresh_mongodb_url("bench"), "--search",
               elasticsearch, "--search-index-prefix", f"aegis-bench-{uuid.uuid4().hex[:10]}", "--insecure-no-auth"]
        if cpu is not None:
            cmd = ["taskset", "-c", str(cpu), *cmd]
        self.log = open(self.dir / "server.log", "ab")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, cwd=ROOT)
        self.base = f"http://127.0.0.1:{self.port}/fhir"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                sys.exit(f"server exited: {(self.dir / 'server.log').read_text()[-2000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        sys.exit("server did not start in 60 s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


def _patient(ident: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "identifier": [{"system": "urn:delay", "value": ident}],
            "name": [{"family": "Delay", "given": [ident[:8]]}], "gender": "unknown"}


async def _search(client: httpx.AsyncClient, ident: str) -> list[str]:
    r = await client.get("/Patient", params={"identifier": f"urn:delay|{ident}"})
    r.raise_for_status()
    return [e["resource"]["id"] for e in r.json().get("entry", []) if e.get("search", {}).get("mode") == "match"]


async def _create(client: httpx.AsyncClient, ident: str) -> str:
    r = await client.post("/Patient", json=_patient(ident), headers={"Content-Type": FHIR_JSON})
    if r.status_code != 201:
        raise RuntimeError(f"create answered {r.status_code}: {r.text[:300]}")
    return str(r.headers["Location"]).split("/Patient/")[1].split("/")[0]


async def _writer(base: str, stop: asyncio.Event, counter: list[int]) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=30, headers={"Accept": FHIR_JSON}) as client:
        while not stop.is_set():
            await _create(client, f"bg-{uuid.uuid4().hex}")
            counter[0] += 1


async def measure(base: str, samples: int, writers: int) -> dict[str, Any]:
    stop = asyncio.Event()
    background = [0]
    tasks = [asyncio.create_task(_writer(base, stop, background)) for _ in range(writers)]
    delays: list[float] = []
    baseline: list[float] = []
    misses = 0
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=base, timeout=30, headers={"Accept": FHIR_JSON}) as client:
        old = uuid.uuid4().hex
        old_id = await _create(client, old)
        await asyncio.sleep(1.5)  # long indexed and refreshed
        for _ in range(samples):
            t = time.perf_counter()
            assert await _search(client, old) == [old_id]
            baseline.append((time.perf_counter() - t) * 1000)
            ident = uuid.uuid4().hex
            rid = await _create(client, ident)
            acked = time.perf_counter()
            first = True
            while True:
                found = await _search(client, ident)
                if found == [rid]:
                    break
                if first:
                    misses += 1
                    first = False
                if time.perf_counter() - acked > 30:
                    raise RuntimeError(f"Patient/{rid} not searchable 30 s after its write was acknowledged")
            delays.append((time.perf_counter() - acked) * 1000)
    elapsed = time.monotonic() - started
    stop.set()
    await asyncio.gather(*tasks)
    return {"writers": writers, "samples": samples, "misses": misses, "delay": delays, "baseline": baseline,
            "background_writes_per_s": background[0] / elapsed}


def _facts() -> list[str]:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout
    mem = next((line.split()[1] for line in open("/proc/meminfo") if line.startswith("MemTotal")), "?")
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    return [f"date: {datetime.now(timezone.utc).isoformat(timespec='seconds')}",
            f"machine: {os.cpu_count()} cores, {int(mem) // 1024 // 1024} GiB, {cpu}, {platform.platform()}",
            f"python: {platform.python_version()}; git: {commit.strip()}; load average: "
            f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}"]


def _row(name: str, values: list[float]) -> str:
    return (f"| {name} | {len(values)} | {percentile(values, 0.5):.1f} | {percentile(values, 0.95):.1f} | "
            f"{percentile(values, 0.99):.1f} | {max(values):.1f} |")


def report(command: str, facts: list[str], results: list[dict[str, Any]], label: str) -> str:
    lines = [f"## Write → searchable delay (MongoDB + Elasticsearch){' — ' + label if label else ''}", "",
             f"command: {command}", "", *[f"- {f}" for f in facts], "",
             "| measure | samples | p50 ms | p95 ms | p99 ms | max ms |", "|---|---:|---:|---:|---:|---:|"]
    for r in results:
        w = f"{r['writers']} background writers ({r['background_writes_per_s']:.0f} writes/s)" if r["writers"] else \
            "idle server"
        lines.append(_row(f"write ack → found by search, {w}", r["delay"]))
        lines.append(_row(f"baseline: search of an old write, {w}", r["baseline"]))
        lines.append(f"| searches that missed the acknowledged write, {w} | {r['misses']} | | | | |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", help="a running server's FHIR base (loopback); default: start one")
    ap.add_argument("--mongodb", default=os.environ.get("AEGIS_TEST_MONGODB_URL", ""))
    ap.add_argument("--elasticsearch", default=os.environ.get("AEGIS_TEST_ELASTICSEARCH_URL", ""))
    ap.add_argument("--samples", type=int, default=300)
    ap.add_argument("--writers", default="0,4", help="comma-separated background writer counts, one run each")
    ap.add_argument("--server-cpu", type=int, default=None, help="pin the started server to this CPU")
    ap.add_argument("--record", help="append the report (Markdown) to this file")
    ap.add_argument("--label", default="")
    args = ap.parse_args()
    if not 1 <= args.samples <= 100_000:
        sys.exit("--samples: 1..100000")
    writer_counts = [int(w) for w in args.writers.split(",")]
    if any(not 0 <= w <= 64 for w in writer_counts):
        sys.exit("--writers: 0..64 each")
    command = "python bench/searchable_delay.py " + " ".join(
        shlex.quote(a) for a in [*(["--base", args.base] if args.base else ["--mongodb", args.mongodb,
                                                                           "--elasticsearch", args.elasticsearch]),
                                 "--samples", str(args.samples), "--writers", args.writers,
                                 *(["--server-cpu", str(args.server_cpu)] if args.server_cpu is not None else [])])
    print(command, flush=True)
    server = None
    if args.base:
        _loopback(args.base)
        base = args.base
    else:
        if not args.mongodb or not args.elasticsearch:
            sys.exit("give --base, or --mongodb and --elasticsearch (or AEGIS_TEST_*_URL from services/start)")
        _loopback(args.elasticsearch)
        sys.path.insert(0, str(ROOT))
        server = Server(args.mongodb, args.elasticsearch, args.server_cpu)
        base = server.base
    try:
        results = [asyncio.run(measure(base, args.samples, w)) for w in writer_counts]
    finally:
        if server is not None:
            server.stop()
    text = report(command, _facts(), results, args.label)
    print(text)
    for r in results:
        print(f"writers={r['writers']}: delay mean {statistics.mean(r['delay']):.1f} ms, misses {r['misses']}")
    if args.record:
        with open(args.record, "a") as f:
            f.write("\n" + text)
    if any(r["misses"] for r in results):
        sys.exit(1)


if __name__ == "__main__":
    main()
