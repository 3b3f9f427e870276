"""``bench/search_inprocess.py`` on a real store: a small generated data set loaded over HTTP by ``bench/ingest.py``,
then every search shape of ``bench/search_load.py`` timed in process, each answer checked against the counts the
generator wrote down. It tests the tool and, through it, that the SQLite engine answers every benchmark shape as the
data calls for."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

from tests.support.server import ServerProcess

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"


def _run(*args: str | Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT, check=False)


def test_every_shape_runs_in_process_with_the_counts_the_data_calls_for(tmp_path: Path) -> None:
    data, store = tmp_path / "data", tmp_path / "store"
    generated = _run(BENCH / "datagen.py", "--patients", "8", "--seed", "3", "--samples", "8", "--out", data)
    assert generated.returncode == 0, generated.stderr
    store.mkdir()
    server = ServerProcess(store)
    server.start()
    try:
        loaded = _run(BENCH / "ingest.py", "--base", server.base, "--data", data, "--clients", "2",
                      "--record", tmp_path / "ingest.md")
        assert loaded.returncode == 0, loaded.stdout + loaded.stderr
        assert (tmp_path / "ingest.md").read_text().startswith("## Aegis ingest, ")
    finally:
        server.stop()

    figures = tmp_path / "figures.json"
    timed = _run(BENCH / "search_inprocess.py", "--store", store, "--data", data, "--rounds", "1",
                 "--min-requests", "1", "--json", figures, "--record", tmp_path / "record.md")
    assert timed.returncode == 0, timed.stdout + timed.stderr
    rows = orjson.loads(figures.read_bytes())["rows"]
    names = [row["shape"] for row in rows]
    listed = _run(BENCH / "search_load.py", "--list-shapes")
    assert names == [line.split()[0] for line in listed.stdout.splitlines()]
    for row in rows:
        assert row["skipped"] is None, row
        assert row["requests"] > 0 and row["errors"] == 0 and row["mismatches"] == 0, row
        assert 0 < row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"], row
    assert sum(row["results"] for row in rows) > 0
    assert "| obs-chain-name | cohort |" in (tmp_path / "record.md").read_text()

    # a baseline adds each shape's growth against it: the same store against itself stays near 1
    again = _run(BENCH / "search_inprocess.py", "--store", store, "--data", data, "--rounds", "1",
                 "--min-requests", "1", "--shapes", "obs-patient,patient-name", "--baseline", figures)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "p50 growth against the baseline ≤ 1.5×:" in again.stdout
