"""The ``aegis`` command line: help, ``load`` and ``serve --demo``, as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx

from fhir_server.settings import Settings
from tests.support.server import ServerProcess


def aegis(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run([sys.executable, "-m", "fhir_server.cli", *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "COLUMNS": "200", **(env or {})})


def test_help_explains_every_option() -> None:
    out = aegis("serve", "--help")
    assert out.returncode == 0
    for name in Settings.model_fields:
        if name == "demo":
            assert "--demo" in out.stdout
        else:
            assert f"--{name.replace('_', '-')}" in out.stdout, name
        assert f"AEGIS_{name.upper()}" in out.stdout, name
    top = aegis("--help")
    assert "serve" in top.stdout and "load" in top.stdout


def test_load_then_serve(tmp_path: Path) -> None:
    data = tmp_path / "in"
    data.mkdir()
    patients = [{"resourceType": "Patient", "id": f"load-{i}", "gender": "female"} for i in range(5)]
    (data / "patients.ndjson").write_text("\n".join(json.dumps(p) for p in patients))
    (data / "tx.json").write_text(json.dumps({
        "resourceType": "Bundle", "type": "transaction",
        "entry": [
            {"fullUrl": "urn:uuid:9b4c5d2e-0000-4000-8000-000000000001",
             "resource": {"resourceType": "Patient", "identifier": [{"system": "urn:load", "value": "tx"}]},
             "request": {"method": "POST", "url": "Patient"}},
            {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                          "subject": {"reference": "urn:uuid:9b4c5d2e-0000-4000-8000-000000000001"}},
             "request": {"method": "POST", "url": "Observation"}},
        ]}))
    (data / "bad.json").write_text('{"resourceType": "Patient", "birthDate": "not a date"}')
    store_dir = tmp_path / "store"
    out = aegis("load", str(data), "--data-dir", str(store_dir))
    assert out.returncode == 1, out.stderr  # one bad file: reported, and the exit status says so
    assert "loaded 7 resources" in out.stderr
    assert "bad.json" in out.stderr and "birthDate" in out.stderr

    # reloading is idempotent for resources with ids: a new version, not a new resource
    assert "loaded 5 resources" in aegis("load", str(data / "patients.ndjson"), "--data-dir", str(store_dir)).stderr

    server = ServerProcess(store_dir)
    server.start()
    try:
        with httpx.Client(base_url=server.base) as client:
            for i in range(5):
                r = client.get(f"/Patient/load-{i}")
                assert r.status_code == 200 and r.json()["meta"]["versionId"] == "2"
            found = client.get("/Patient", params={"identifier": "urn:load|tx"}).json()
            assert found["total"] == 1
            pid = found["entry"][0]["resource"]["id"]
            history = client.get("/Observation/_history").json()
            assert history["entry"][0]["resource"]["subject"]["reference"] == f"Patient/{pid}"
    finally:
        server.stop()


def test_serve_demo_loads_demo_data_once(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path, args=["--demo"])
    server.start(timeout=120)
    try:
        with httpx.Client(base_url=server.base) as client:
            patients = client.get("/Patient", params={"_count": "1000"}).json()
            assert patients["total"] >= 10
            for rtype in ("Observation", "Appointment", "MedicationRequest", "ChargeItem"):
                assert client.get(f"/{rtype}", params={"_count": "1"}).json()["entry"], rtype
            before = patients["total"]
    finally:
        server.stop()
    server.start(timeout=120)  # a restart must not load the demo data again
    try:
        with httpx.Client(base_url=server.base) as client:
            assert client.get("/Patient", params={"_count": "1000"}).json()["total"] == before
    finally:
        server.stop()
