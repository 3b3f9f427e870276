"""Shared fixtures: every behavioural test runs against a real server process on each storage backend.

Backends declare what they can do (``CAPABILITIES``); tests that need a capability skip by capability, never by
backend name.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.server import ServerProcess

BACKENDS = ["sqlite"]
CAPABILITIES: dict[str, set[str]] = {"sqlite": {"transactions", "durable-kill9"}}


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def server(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp(f"aegis-{backend}"))
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture()
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base, timeout=30,
                      headers={"Accept": "application/fhir+json"}) as c:
        yield c


def requires(backend: str, capability: str) -> None:
    if capability not in CAPABILITIES.get(backend, set()):
        pytest.skip(f"backend lacks capability {capability!r}")


@pytest.fixture()
def tmp_data(tmp_path: Path) -> Path:
    return tmp_path
