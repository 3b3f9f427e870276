"""The prepare processes (``fhir_server/prepare/pool.py``) end with the server, however it ends: stopped, or killed
with -9 (when it cannot stop them)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.support.processes import children, gone_within
from tests.support.server import ServerProcess

TRANSACTION = {"resourceType": "Bundle", "type": "transaction",
               "entry": [{"resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Patient"}}]}


@pytest.mark.parametrize("ending", ["stop", "kill -9"])
def test_prepare_processes_end_with_the_server(tmp_path: Path, ending: str) -> None:
    server = ServerProcess(tmp_path, args=["--prepare-min-bytes", "0"])
    server.start()
    try:
        resp = httpx.post(server.base, json=TRANSACTION, headers={"Content-Type": "application/fhir+json"}, timeout=30)
        assert resp.status_code == 200, resp.text
        assert server.proc is not None
        spawned = children(server.proc.pid)
        assert spawned, "the transaction did not start a prepare process"
    finally:
        if ending == "stop":
            server.stop()
        else:
            server.kill()
    assert gone_within(spawned, 10), f"prepare processes {spawned} outlived the server ({ending})"
