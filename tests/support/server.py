"""Start and stop a real ``aegis serve`` process for black-box tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from pathlib import Path

import httpx

MONGODB_URL_ENV = "AEGIS_TEST_MONGODB_URL"
ELASTICSEARCH_URL_ENV = "AEGIS_TEST_ELASTICSEARCH_URL"


def fresh_mongodb_url(purpose: str = "test") -> str:
    """``AEGIS_TEST_MONGODB_URL`` with a database of its own (a fresh name each call), so stores never share data."""
    from pymongo.uri_parser import parse_uri

    base = os.environ[MONGODB_URL_ENV]
    name = f"aegis_{purpose}_{uuid.uuid4().hex[:12]}"
    scheme, _, rest = base.partition("://")
    hosts, slash, tail = rest.partition("/")
    options = tail.partition("?")[2] if slash else ""
    if not slash and "?" in hosts:  # mongodb://host?opts (no slash before the options)
        hosts, _, options = hosts.partition("?")
    url = f"{scheme}://{hosts}/{name}" + (f"?{options}" if options else "")
    assert parse_uri(url)["database"] == name, url
    return url


def fresh_search_prefix(purpose: str = "test") -> str:
    """An Elasticsearch index prefix of its own (a fresh name each call), so servers and stores never share data."""
    return f"aegis-{purpose}-{uuid.uuid4().hex[:12]}"


def search_options(backend: str) -> dict[str, Any]:
    """The ``open_store_from_url`` options of ``backend``'s search engine: for ``mongodb+elasticsearch``, fresh
    indices dropped on close, and no fallback to the store (a search Elasticsearch cannot answer fails the test)."""
    if not backend.endswith("+elasticsearch"):
        return {}
    return {"search": os.environ[ELASTICSEARCH_URL_ENV], "search_index_prefix": fresh_search_prefix(),
            "search_fallback": False, "ephemeral": True}


def mongodb_reports_plans() -> bool:
    """Whether the server at ``AEGIS_TEST_MONGODB_URL`` explains queries with MongoDB's query planner (MongoDB does;
    FerretDB, which says so in ``buildInfo``, reports the plan of its SQLite backend instead)."""
    from pymongo import MongoClient
    from pymongo.errors import PyMongoError

    try:
        with MongoClient(os.environ[MONGODB_URL_ENV], serverSelectionTimeoutMS=5000) as client:
            return "ferretdbVersion" not in client.admin.command("buildInfo")
    except PyMongoError:
        return False  # unreachable: the backend's own tests fail loudly; this only declares a capability


def store_args(backend: str) -> list[str]:
    """The ``aegis serve`` arguments that select ``backend`` (sqlite is the default: none)."""
    if backend == "sqlite":
        return []
    if backend == "mongodb":
        return ["--store", fresh_mongodb_url("server")]
    if backend == "mongodb+elasticsearch":
        return ["--store", fresh_mongodb_url("server"), "--search", os.environ[ELASTICSEARCH_URL_ENV],
                "--search-index-prefix", fresh_search_prefix("server"), "--no-search-fallback"]
    raise ValueError(f"unknown backend {backend!r}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServerProcess:
    data_dir: Path
    port: int = field(default_factory=free_port)
    env: dict[str, str] = field(default_factory=dict)
    args: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    # the behavioural suites test FHIR, not authorization: they run with the development switch; tests/smart sets
    # ``auth=True`` and gets the secure default
    auth: bool = False

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}/fhir"

    def start(self, timeout: float = 30.0) -> None:
        self.log_path = self.data_dir / f"server-{self.port}.log"
        env = {**os.environ, **self.env}
        if not self.auth:
            env.setdefault("AEGIS_AUTH_DISABLED", "true")
        elif "--insecure-no-auth" not in self.args:
            env["AEGIS_AUTH_DISABLED"] = "false"  # authorization tests get it whatever the caller's environment says
        cmd = [sys.executable, "-m", "fhir_server.cli", "serve", "--port", str(self.port),
               "--data-dir", str(self.data_dir), "--log-level", "warning", *self.args]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"server did not start within {timeout}s:\n{self.log()}")

    def kill(self) -> None:
        """kill -9: no chance to flush or clean up."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""
