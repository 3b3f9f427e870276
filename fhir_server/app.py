"""The ASGI application: HTTP in, :func:`fhir_server.routing.dispatch`, HTTP out.

A thin hand-written ASGI layer rather than a framework router keeps the per-request overhead of the hot paths
(read, create) to a few microseconds and gives the FHIR rules for 404/405/406/413/415 one place. Every error leaves
as an OperationOutcome; an unexpected exception is logged and answered 500 without internals.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl, unquote

from fhir_server.http.media import Format, response_format
from fhir_server.http.render import content_type, render_body
from fhir_server.http.request import FhirRequest, FhirResponse
from fhir_server.interactions.common import Services
from fhir_server.prepare.pool import PreparePool
from fhir_server.routing import dispatch
from fhir_server.settings import Settings
from fhir_server.storage import open_store_from_url
from fhir_server.storage.base import Store
from fhir_server.storage.sqlite.writer import StorageUnavailable
from resources import jsonio
from resources.outcome import FhirError, NotFound, PayloadTooLarge

log = logging.getLogger("aegis")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

FHIR_PREFIX = "/fhir"


class BodyTooLarge(Exception):
    pass


class AegisApp:
    def __init__(self, settings: Settings, store: Store | None = None) -> None:
        self.settings = settings
        self.store = store or open_store_from_url(
            settings.store_url(), synchronous=settings.sqlite_synchronous, search=settings.search,
            search_index_prefix=settings.search_index_prefix, search_fallback=settings.search_fallback)
        self.prepare = PreparePool(settings.prepare_workers, settings.prepare_min_bytes)
        self.services = Services(self.store, settings, prepare=self.prepare)
        self.on_startup: list[Callable[[AegisApp], Awaitable[None]]] = []
        # the SMART authorization server; None only with the development switch AEGIS_AUTH_DISABLED
        self.auth: Any = None
        if settings.auth_disabled:
            log.warning("AUTHORIZATION IS DISABLED (AEGIS_AUTH_DISABLED / --insecure-no-auth): anyone who can reach "
                        "this server can read and change every resource; for development only")
        else:
            from smart_auth.server import AuthServer

            self.auth = AuthServer(settings, self.store,
                                   lambda s: self._base(s, {k.decode("latin-1").lower(): v.decode("latin-1")
                                                            for k, v in s["headers"]}))

    async def startup(self) -> None:
        await self.store.open()
        self.prepare.attach(self.store.index_preparer())
        for hook in self.on_startup:
            await hook(self)

    async def shutdown(self) -> None:
        self.prepare.close()
        await self.store.close()
        if self.auth is not None:
            self.auth.close()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            if self.auth is None:
                await self._http(scope, receive, send)
            else:
                from smart_auth.gate import gate

                await gate(self.auth, scope, receive, send, self._http)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    log.exception("start-up failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        if path == "/healthz":
            await _send(send, 200, [(b"content-type", b"application/json")], b'{"status":"ok"}')
            return
        if path != FHIR_PREFIX and not path.startswith(FHIR_PREFIX + "/"):
            await self._error(send, NotFound(f"nothing at {path}; the FHIR base is {FHIR_PREFIX}",
                                             message_id="AEGIS-204"), "json", scope["method"])
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        fmt: Format = "json"
        query_string = scope["query_string"].decode("latin-1")
        try:
            query = parse_qsl(query_string, keep_blank_values=True)
            fmt = response_format(_last(query, "_format"), headers.get("accept"))
            body = await self._read_body(receive, headers)
            if "aegis.auth_error" in scope:  # no valid token: answered here so the outcome's format is negotiated
                raise scope["aegis.auth_error"]
            req = FhirRequest(
                method=scope["method"],
                segments=[unquote(s) for s in path[len(FHIR_PREFIX):].split("/") if s],
                query=query,
                headers=headers,
                body=body,
                base=self._base(scope, headers),
                query_string=query_string,
            )
            grant = scope.get("aegis.grant")
            resp = await dispatch(self.services if grant is None else replace(self.services, grant=grant), req)
            payload = render_body(resp, req, fmt)
        except FhirError as exc:
            await self._error(send, exc, fmt, scope["method"])
            return
        except StorageUnavailable as exc:
            log.error("storage unavailable: %s", exc)
            await self._error(send, _Unavailable(str(exc)), fmt, scope["method"])
            return
        except Exception:
            log.exception("unexpected error in %s %s", scope["method"], path)
            await self._error(send, _Internal("internal error; the request was not completed"), fmt,
                              scope["method"])
            return
        await _send(send, resp.status, _headers(resp, fmt, payload), payload, head=scope["method"] == "HEAD")

    async def _read_body(self, receive: Receive, headers: dict[str, str]) -> bytes:
        limit = self.settings.max_body_bytes
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise PayloadTooLarge(f"the body is larger than the limit of {limit} bytes", message_id="AEGIS-154")
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"the body is larger than the limit of {limit} bytes", message_id="AEGIS-154")
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    def _base(self, scope: Scope, headers: dict[str, str]) -> str:
        if self.settings.base_url:
            return self.settings.base_url.rstrip("/")
        host = headers.get("host")
        if not host:
            server = scope.get("server") or ("localhost", self.settings.port)
            host = f"{server[0]}:{server[1]}"
        return f"{scope.get('scheme', 'http')}://{host}{scope.get('root_path', '')}{FHIR_PREFIX}"

    async def _error(self, send: Send, exc: FhirError, fmt: Format, method: str) -> None:
        outcome = exc.outcome()
        if fmt == "xml":
            from resources.xml import resource_to_xml

            body = resource_to_xml(outcome)
        else:
            body = jsonio.dumps(outcome)
        headers = [(b"content-type", content_type(fmt).encode())]
        headers += [(k.lower().encode(), v.encode()) for k, v in exc.headers.items()]
        await _send(send, exc.status, headers, body, head=method == "HEAD")


class _Internal(FhirError):
    status = 500
    issue_code = "exception"


class _Unavailable(FhirError):
    status = 503
    issue_code = "transient"


def _last(query: list[tuple[str, str]], name: str) -> str | None:
    value = None
    for k, v in query:
        if k == name:
            value = v
    return value


def _headers(resp: FhirResponse, fmt: Format, payload: bytes) -> list[tuple[bytes, bytes]]:
    out = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in resp.headers.items()]
    if payload:
        out.append((b"content-type", content_type(fmt).encode()))
    return out


async def _send(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes, *,
                head: bool = False) -> None:
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else body})


def create_app(settings: Settings | None = None) -> AegisApp:
    return AegisApp(settings or Settings())

