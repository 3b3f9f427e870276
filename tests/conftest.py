"""Shared fixtures: every behavioural test runs against a real server process on each storage backend.

Backends declare what they can do (``CAPABILITIES``); tests that need a capability skip by capability, never by
backend name.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.server import (
    ELASTICSEARCH_URL_ENV,
    MONGODB_URL_ENV,
    ServerProcess,
    mongodb_reports_plans,
    store_args,
)

BACKENDS = ["sqlite"]
# "shared-store": several server processes may serve one store (SQLite: through its cross-process write lock)
CAPABILITIES: dict[str, set[str]] = {"sqlite": {"transactions", "durable-kill9", "shared-store"}}
if os.environ.get(MONGODB_URL_ENV):
    # a MongoDB-protocol server (FerretDB in scripts/test); every store and server gets a database of its own.
    # Transactions are all-or-nothing through the commit protocol, which recovers after kill -9 at start-up;
    # several server processes may share one database ("shared-store": conditional matches claim their criteria).
    BACKENDS.append("mongodb")
    # "shared-auth": the authorization server's clients, users, keys, codes and tokens live in that database too
    # "commit-protocol": the MongoDB store's own multi-writer protocol (writer slots, outbox tickets)
    CAPABILITIES["mongodb"] = {"transactions", "durable-kill9", "shared-store", "shared-auth", "commit-protocol"}
    if mongodb_reports_plans():  # MongoDB itself, not FerretDB: the plans can be checked for collection scans
        CAPABILITIES["mongodb"].add("query-plans")
    if os.environ.get(ELASTICSEARCH_URL_ENV):
        # the MongoDB store with Elasticsearch answering searches (fed from the outbox); fresh indices per server
        # and store, and no fallback to the store, so every search of the suite is answered by Elasticsearch
        BACKENDS.append("mongodb+elasticsearch")
        CAPABILITIES["mongodb+elasticsearch"] = {"transactions", "shared-auth"}


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def server(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp(f"aegis-{backend}"), args=store_args(backend))
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
