"""A tiny in-memory stand-in for the Aegis HTTP API, used to exercise ``bench/http_load.py``.

It owns nothing of the real server. It exists for two reasons: to test the load generator before (and independently
of) the real server, and to measure the load generator's own ceiling, which only means something against a server
that does as little as possible. So it is a bare ASGI callable (no framework, no validation, no persistence) that
answers just the shapes the real server promises:

* ``GET /healthz`` -> 200 ``{"status": "ok"}``
* ``POST /fhir/{type}`` -> 201, ``Location: http://host/fhir/{type}/{id}/_history/1``, ``ETag: W/"1"``, body = resource
* ``GET /fhir/{type}/{id}`` -> 200 (404 if unknown)
* ``PUT /fhir/{type}/{id}`` -> 200 (201 when it creates), ``If-Match`` honoured with 412 on a stale version
* ``POST /fhir`` with a transaction Bundle -> 200 transaction-response, ``entry[i].response.location`` =
  ``{type}/{id}/_history/{vid}``

Run it with ``python bench/_standin.py --port 8080`` (uvicorn with uvloop and httptools, access log, ``Date`` and
``Server`` headers off so the stand-in spends as little time per request as possible).
"""

from __future__ import annotations

import argparse
import itertools
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import datetime, timezone
from typing import Any

import orjson

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

FHIR_JSON = b"application/fhir+json"
_HEALTHZ = b'{"status":"ok"}'


class StandIn:
    """The ASGI app; all state is in memory and dies with the process."""

    def __init__(self) -> None:
        # (type, id) -> (version, serialised resource). Only the latest version is kept because nothing here reads
        # history, and it is kept as bytes: reads then cost no serialisation, and a big store of bytes (unlike dicts)
        # gives the garbage collector nothing to scan, so the stand-in does not stall as it fills up.
        self.store: dict[tuple[str, str], tuple[int, bytes]] = {}
        self._ids = itertools.count(1)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        method: str = scope["method"]
        parts = [p for p in scope["path"].split("/") if p]
        if method == "GET" and parts == ["healthz"]:
            await _respond(send, 200, _HEALTHZ, content_type=b"application/json")
            return
        if not parts or parts[0] != "fhir":
            await _respond(send, 404, _outcome("not-found", "no such route"))
            return
        body = await _read_body(receive) if method in ("POST", "PUT") else b""
        try:
            status, payload, headers = self._dispatch(method, parts[1:], body, scope)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            status, payload, headers = 400, _outcome("invalid", f"bad request: {exc}"), []
        await _respond(send, status, payload, headers)

    def _dispatch(
        self, method: str, parts: list[str], body: bytes, scope: Scope
    ) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        if method == "POST" and not parts:
            return self._transaction(body)
        if method == "POST" and len(parts) == 1:
            resource = orjson.loads(body)
            kind = parts[0]
            rid = self._new_id()
            stored = self._store(kind, rid, 1, resource)
            host = _header(scope, b"host") or b"localhost"
            location = b"http://" + host + f"/fhir/{kind}/{rid}/_history/1".encode()
            return 201, stored, [(b"location", location), (b"etag", b'W/"1"')]
        if len(parts) == 2 and method == "GET":
            found = self.store.get((parts[0], parts[1]))
            if found is None:
                return 404, _outcome("not-found", f"{parts[0]}/{parts[1]} is not known"), []
            version, stored = found
            return 200, stored, [(b"etag", f'W/"{version}"'.encode())]
        if len(parts) == 2 and method == "PUT":
            kind, rid = parts
            resource = orjson.loads(body)
            if resource.get("id") != rid:
                return 400, _outcome("invalid", "resource id does not match the URL"), []
            current = self.store.get((kind, rid))
            expected = _header(scope, b"if-match")
            if expected is not None and (current is None or expected != f'W/"{current[0]}"'.encode()):
                return 412, _outcome("conflict", "version mismatch"), []
            version = 1 if current is None else current[0] + 1
            stored = self._store(kind, rid, version, resource)
            return (201 if current is None else 200), stored, [(b"etag", f'W/"{version}"'.encode())]
        return 405, _outcome("not-supported", f"{method} {'/'.join(parts)} is not supported"), []

    def _transaction(self, body: bytes) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        bundle = orjson.loads(body)
        if bundle.get("resourceType") != "Bundle" or bundle.get("type") != "transaction":
            return 400, _outcome("invalid", "expected a transaction Bundle"), []
        entries = bundle.get("entry", [])
        # Assign every id first so urn:uuid references can be rewritten regardless of entry order.
        targets: list[tuple[str, str]] = []
        rewrite: dict[str, str] = {}
        for entry in entries:
            kind = entry["resource"]["resourceType"]
            rid = self._new_id() if entry["request"]["method"] == "POST" else entry["request"]["url"].split("/")[1]
            targets.append((kind, rid))
            if "fullUrl" in entry:
                rewrite[entry["fullUrl"]] = f"{kind}/{rid}"
        out: list[dict[str, Any]] = []
        for entry, (kind, rid) in zip(entries, targets):
            resource = _rewrite_references(entry["resource"], rewrite)
            current = self.store.get((kind, rid))
            version = 1 if current is None else current[0] + 1
            self._store(kind, rid, version, resource)
            out.append(
                {
                    "response": {
                        "status": "201 Created" if version == 1 else "200 OK",
                        "location": f"{kind}/{rid}/_history/{version}",
                        "etag": f'W/"{version}"',
                    }
                }
            )
        response = {"resourceType": "Bundle", "type": "transaction-response", "entry": out}
        return 200, orjson.dumps(response), []

    def _new_id(self) -> str:
        return str(next(self._ids))

    def _store(self, kind: str, rid: str, version: int, resource: dict[str, Any]) -> bytes:
        resource["id"] = rid
        resource["meta"] = {
            "versionId": str(version),
            "lastUpdated": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
        }
        stored = orjson.dumps(resource)
        self.store[(kind, rid)] = (version, stored)
        return stored


def _rewrite_references(node: Any, rewrite: dict[str, str]) -> Any:
    if isinstance(node, dict):
        out = {key: _rewrite_references(value, rewrite) for key, value in node.items()}
        reference = out.get("reference")
        if isinstance(reference, str) and reference in rewrite:
            out["reference"] = rewrite[reference]
        return out
    if isinstance(node, list):
        return [_rewrite_references(value, rewrite) for value in node]
    return node


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _respond(
    send: Send,
    status: int,
    body: bytes,
    headers: list[tuple[bytes, bytes]] | None = None,
    content_type: bytes = FHIR_JSON,
) -> None:
    raw = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    raw.extend(headers or ())
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def _outcome(code: str, text: str) -> bytes:
    return orjson.dumps(
        {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": code, "diagnostics": text}]}
    )


app = StandIn()


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description="Serve the in-memory Aegis stand-in on loopback.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        server_header=False,
        date_header=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
