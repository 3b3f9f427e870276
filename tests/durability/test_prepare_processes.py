"""The prepare processes (``fhir_server/prepare/pool.py``) end with the server, however it ends: stopped, or killed
with -9 (when it cannot stop them)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from tests.support.server import ServerProcess

TRANSACTION = {"resourceType": "Bundle", "type": "transaction",
               "entry": [{"resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Patient"}}]}


def _children(pid: int) -> list[int]:
    return [int(c) for task in Path(f"/proc/{pid}/task").iterdir() for c in (task / "children").read_text().split()]


def _gone_within(pids: list[int], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not any(Path(f"/proc/{p}").exists() for p in pids):
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize("ending", ["stop", "kill -9"])
def test_prepare_processes_end_with_the_server(tmp_path: Path, ending: str) -> None:
    server = ServerProcess(tmp_path, args=["--prepare-min-bytes", "0"])
    server.start()
    try:
        resp = httpx.post(server.base, json=TRANSACTION, headers={"Content-Type": "application/fhir+json"}, timeout=30)
        assert resp.status_code == 200, resp.text
        assert server.proc is not None
        children = _children(server.proc.pid)
        assert children, "the transaction did not start a prepare process"
    finally:
        if ending == "stop":
            server.stop()
        else:
            server.kill()
    assert _gone_within(children, 10), f"prepare processes {children} outlived the server ({ending})"
