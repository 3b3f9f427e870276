"""The gate in front of the FHIR API: CORS for browser apps, the authorization server's own paths, and the bearer
token check that turns a request's token into the grant the FHIR interactions are held to.

Public without a token: ``/healthz``, ``GET /fhir/metadata`` (clients discover the OAuth endpoints there) and the
authorization server's endpoints. Everything else under ``/fhir`` needs a valid access token.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fhir_server.storage.group_commit import StorageUnavailable
from resources.outcome import FhirError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

ALLOW_HEADERS = "Authorization, Content-Type, Accept, Prefer, If-Match, If-None-Match, If-None-Exist, " \
                "If-Modified-Since, X-Requested-With"
EXPOSE_HEADERS = "Location, ETag, Last-Modified, Content-Location, WWW-Authenticate"
CORS_PATHS = ("/fhir", "/auth/token", "/auth/introspect", "/auth/revoke", "/auth/jwks", "/.well-known/",
              "/auth/smart-style.json")
# SMART 2.2: the public discovery documents are open to every origin; the token endpoint and the FHIR API only to
# the origins of registered apps (and AEGIS_CORS_ORIGINS)
PUBLIC_PATHS = ("/.well-known/", "/fhir/.well-known/", "/fhir/metadata", "/auth/jwks", "/auth/smart-style.json")


def _cors_path(path: str) -> bool:
    return any(path == p or path.startswith(p if p.endswith("/") else p + "/") for p in CORS_PATHS)


async def gate(auth: Any, scope: Scope, receive: Receive, send: Send, fhir: App) -> None:
    path: str = scope["path"]
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
    origin = headers.get("origin")
    cors = origin is not None and _cors_path(path) and (path.startswith(PUBLIC_PATHS) or auth.origin_allowed(origin))
    if scope["method"] == "OPTIONS" and origin is not None and "access-control-request-method" in headers:
        # a CORS preflight: answered here, before any authorization (browsers send it without credentials)
        out = [(b"vary", b"Origin"), (b"content-length", b"0")]
        if cors:
            out += [(b"access-control-allow-origin", origin.encode("latin-1")),
                    (b"access-control-allow-methods", b"GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS"),
                    (b"access-control-allow-headers", ALLOW_HEADERS.encode()),
                    (b"access-control-max-age", b"600")]
        await send({"type": "http.response.start", "status": 204 if cors else 403, "headers": out})
        await send({"type": "http.response.body", "body": b""})
        return
    if cors:
        inner_send = send

        async def send(message: Message) -> None:  # noqa: F811 - the CORS-decorated send
            if message["type"] == "http.response.start":
                message = dict(message)
                message["headers"] = list(message.get("headers", [])) + [
                    (b"access-control-allow-origin", origin.encode("latin-1")),  # type: ignore[union-attr]
                    (b"access-control-expose-headers", EXPOSE_HEADERS.encode()),
                    (b"vary", b"Origin")]
            await inner_send(message)

    if auth.owns(path):
        await auth.app(scope, receive, send)
        return
    if (path == "/fhir" or path.startswith("/fhir/")) and not _public(scope["method"], path):
        try:
            scope["aegis.grant"] = await auth.bearer_async(headers.get("authorization"), "aegis")
        except (FhirError, StorageUnavailable) as exc:  # answered by the FHIR app: 401, or 503 when unreachable
            scope["aegis.auth_error"] = exc
    await fhir(scope, receive, send)


def _public(method: str, path: str) -> bool:
    return path.rstrip("/") == "/fhir/metadata" and method in ("GET", "HEAD")
