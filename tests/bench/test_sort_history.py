"""``bench/sort_history.py``: a patient's date-sorted searches, walked and sorted, on histories small enough for a
test. The tool fails when the walk and the sort answer differently, or either differs from what the generated
history calls for, so this also checks the date walk against a known answer."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_walk_and_the_sort_give_the_history_s_answers(tmp_path: Path) -> None:
    record = tmp_path / "record.md"
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "sort_history.py"), "--histories", "45,400",
                           "--requests", "2", "--record", str(record)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(rows) == 1 + 6 * 2, rows  # the head, then six shapes at two sizes
    assert "| latest-10 | 400 |" in done.stdout
    assert record.read_text().startswith("## Aegis: a patient's date-sorted searches as the history grows, ")
