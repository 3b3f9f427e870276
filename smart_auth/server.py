"""The authorization server's HTTP endpoints (a small Starlette app mounted by :class:`fhir_server.app.AegisApp`).

``/auth/authorize`` (GET and POST) → login page → patient picker (``launch/patient`` without a patient) → consent
page (scopes may be unticked) → redirect with a one-time code. ``/auth/token`` authenticates the client
(:mod:`.client_auth`) and runs the grant (:mod:`.grants`). Then introspection (RFC 7662), revocation (RFC 7009),
the JWKS, the discovery documents and the EHR launcher page. :meth:`AuthServer.bearer` is the FHIR side's token check.

Errors before the client and redirect URI are known, and a wrong ``aud``, are shown to the user (HTML, 400) rather
than redirected: redirecting to an unverified URI would make the server an open redirector.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable, MutableMapping
from typing import Any
from urllib.parse import urlencode, urlsplit

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from fhir_server.authz.grant import Grant
from fhir_server.settings import Settings
from fhir_server.search.tree import MatchAll
from fhir_server.storage.base import SearchQuery, Store
from fhir_server.storage.group_commit import StorageUnavailable
from resources import jsonio
from resources.outcome import Unauthorized
from smart_auth import keys, pages
from smart_auth.client_auth import authenticate
from smart_auth.db import Client, now, open_auth_db
from smart_auth.discovery import openid_configuration, smart_configuration
from smart_auth.errors import OAuthError
from smart_auth.forms import read_form
from smart_auth.grants import allowed_scopes, client_credentials, code_grant, refresh_grant
from smart_auth.passwords import token_hash, verify_password
from smart_auth.scopes import parse_clinical, split
from smart_auth.tokens import Lifetimes, active, grant_of, introspection

log = logging.getLogger("aegis.auth")

PENDING_TTL = 600  # seconds a user has to sign in and consent
CODE_TTL = 60
LAUNCH_TTL = 300
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}

Scope = MutableMapping[str, Any]


def _json(body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers={**NO_STORE, **(headers or {})})


def _oauth_error(exc: OAuthError) -> JSONResponse:
    return _json(exc.body(), exc.status, exc.headers)


def _with_query(url: str, params: dict[str, str]) -> str:
    return url + ("&" if urlsplit(url).query else "?") + urlencode(params)


def _may_choose_patients(fhir_user: str | None) -> bool:
    """Patients and their relatives act for one patient only; staff (practitioners, no fhirUser) may pick any."""
    return not (fhir_user or "").startswith(("Patient/", "RelatedPerson/"))


class AuthServer:
    def __init__(self, settings: Settings, store: Store, base_of: Callable[[Scope], str]) -> None:
        self.settings = settings
        self.store = store
        self.base_of = base_of
        self.db = open_auth_db(settings.store_url(), settings.data_dir)
        keys.ensure_current(self.db, settings.signing_key_max_age_days)
        self.lifetimes = Lifetimes(settings.access_token_lifetime, settings.refresh_token_lifetime)
        self._origins: tuple[float, frozenset[str]] | None = None
        routes = [
            Route("/.well-known/smart-configuration", self.smart_config, methods=["GET"]),
            Route("/fhir/.well-known/smart-configuration", self.smart_config, methods=["GET"]),
            Route("/.well-known/openid-configuration", self.openid_config, methods=["GET"]),
            Route("/fhir/.well-known/openid-configuration", self.openid_config, methods=["GET"]),
            Route("/auth/jwks", self.jwks, methods=["GET"]),
            Route("/auth/smart-style.json", self.style, methods=["GET"]),
            Route("/auth/authorize", self.authorize, methods=["GET", "POST"]),
            Route("/auth/login", self.login, methods=["POST"]),
            Route("/auth/patient", self.pick_patient, methods=["POST"]),
            Route("/auth/consent", self.consent, methods=["POST"]),
            Route("/auth/token", self.token, methods=["POST"]),
            Route("/auth/introspect", self.introspect, methods=["POST"]),
            Route("/auth/revoke", self.revoke, methods=["POST"]),
            Route("/auth/launcher", self.launcher, methods=["GET", "POST"]),
        ]
        self.app = Starlette(routes=routes, exception_handlers={StorageUnavailable: self._unavailable})

    async def _unavailable(self, request: Request, exc: Exception) -> Response:
        log.error("authorization server storage unavailable: %s", exc)
        return _json({"error": "temporarily_unavailable", "error_description": "the authorization server's "
                      "database is unreachable; try again"}, 503, {"Retry-After": "5"})

    @staticmethod
    def owns(path: str) -> bool:
        return path.startswith("/auth/") or path.startswith("/.well-known/") or path.startswith("/fhir/.well-known/")

    def close(self) -> None:
        self.db.close()

    # ---- URLs -------------------------------------------------------------------------------------------------

    def base(self, request: Request) -> str:
        return self.base_of(request.scope)

    def root(self, request: Request) -> str:
        return self.base(request).rsplit("/fhir", 1)[0]

    # ---- the FHIR side ----------------------------------------------------------------------------------------

    async def bearer_async(self, authorization: str | None, realm: str) -> Grant:
        """:meth:`bearer` for the gate: in a worker thread when the lookup is a network round trip (MongoDB), so that
        every FHIR request does not hold the event loop for it; inline for the local SQLite file, where the thread hop
        would cost more than the lookup."""
        if self.db.remote:
            return await asyncio.to_thread(self.bearer, authorization, realm)
        return self.bearer(authorization, realm)

    def bearer(self, authorization: str | None, realm: str) -> Grant:
        """The grant of the request's access token; 401 with ``WWW-Authenticate`` when there is none."""
        if not authorization:
            raise Unauthorized("an access token is required (Authorization: Bearer …); see "
                               "/.well-known/smart-configuration", message_id="AEGIS-500",
                               headers={"WWW-Authenticate": f'Bearer realm="{realm}"'})
        scheme, _, token = authorization.partition(" ")
        row = active(self.db, token.strip()) if scheme.lower() == "bearer" and token.strip() else None
        if row is None:
            raise Unauthorized("the access token is invalid, expired or revoked", message_id="AEGIS-501",
                               headers={"WWW-Authenticate": f'Bearer realm="{realm}", error="invalid_token", '
                                                            'error_description="invalid, expired or revoked"'})
        return grant_of(row)

    def origin_allowed(self, origin: str) -> bool:
        if self._origins is None or self._origins[0] < time.monotonic():
            found = {o.strip().rstrip("/") for o in self.settings.cors_origins.split(",") if o.strip()}
            for client in self.db.clients():
                for uri in client.redirect_uris + ([client.launch_url] if client.launch_url else []):
                    parts = urlsplit(uri)
                    if parts.scheme and parts.netloc:
                        found.add(f"{parts.scheme}://{parts.netloc}")
            self._origins = (time.monotonic() + 5, frozenset(found))
        return origin.rstrip("/") in self._origins[1]

    # ---- discovery ----------------------------------------------------------------------------------------------

    async def smart_config(self, request: Request) -> Response:
        return JSONResponse(smart_configuration(self.base(request), self.root(request)))

    async def openid_config(self, request: Request) -> Response:
        return JSONResponse(openid_configuration(self.base(request), self.root(request)))

    async def jwks(self, request: Request) -> Response:
        return JSONResponse(keys.public_jwks(self.db), headers={"Cache-Control": "max-age=300"})

    async def style(self, request: Request) -> Response:
        return JSONResponse({"color_background": "#f6f7f9", "color_highlight": "#1f5fa8", "color_text": "#222222",
                             "font_family_base": "system-ui, sans-serif", "dim_border_radius": "4px",
                             "dim_font_size": "16px", "dim_spacing_size": "16px"})

    # ---- authorization ------------------------------------------------------------------------------------------

    async def _params(self, request: Request) -> dict[str, str]:
        params = dict(request.query_params)
        if request.method == "POST":
            params.update({k: str(v) for k, v in (await read_form(request)).items()})
        return params

    async def authorize(self, request: Request) -> Response:
        p = await self._params(request)
        client = self.db.client(p.get("client_id", ""))
        if client is None:
            return HTMLResponse(pages.error_page("unknown client_id"), 400)
        redirect_uri = p.get("redirect_uri") or (client.redirect_uris[0] if len(client.redirect_uris) == 1 else "")
        if redirect_uri not in client.redirect_uris:
            return HTMLResponse(pages.error_page("redirect_uri is not registered for this client"), 400)
        if p.get("aud", "").rstrip("/") != self.base(request):
            return HTMLResponse(pages.error_page(f"aud must be this server's FHIR base URL {self.base(request)}"), 400)
        state = p.get("state", "")

        def fail(error: str, description: str) -> Response:
            params = {"error": error, "error_description": description}
            if state:
                params["state"] = state
            return RedirectResponse(_with_query(redirect_uri, params), 302)

        if p.get("response_type") != "code":
            return fail("unsupported_response_type", "response_type must be code")
        challenge, method = p.get("code_challenge", ""), p.get("code_challenge_method", "")
        if not challenge or method != "S256":
            return fail("invalid_request", "PKCE is required: code_challenge with code_challenge_method=S256")
        requested = split(p.get("scope"))
        scopes = allowed_scopes(client, requested)
        if not any(parse_clinical(s) for s in scopes) and "openid" not in scopes:
            return fail("invalid_scope", "no requested scope can be granted to this client")
        context: dict[str, Any] = {}
        if p.get("launch"):
            launch = self.db.item("launches", p["launch"])
            if launch is None or launch.get("client_id") != client.client_id:
                return fail("invalid_request", "launch is unknown, expired or for another client")
            context = launch
        pending = secrets.token_urlsafe(24)
        data = {"client_id": client.client_id, "redirect_uri": redirect_uri, "scope": scopes, "state": state,
                "code_challenge": challenge, "nonce": p.get("nonce"), "patient": context.get("patient"),
                "encounter": context.get("encounter"), "username": context.get("username"),
                "fhir_user": context.get("fhir_user"), "ehr": bool(context)}
        self.db.put_item("pending", pending, data, PENDING_TTL)
        return await self._next(pending, data, client)

    async def _next(self, pending: str, data: dict[str, Any], client: Client) -> Response:
        if not data.get("username"):
            return HTMLResponse(pages.login_page(pending, client))
        if "launch/patient" in data["scope"] and not data.get("patient"):
            user = data.get("fhir_user") or ""
            if user.startswith("Patient/"):
                data["patient"] = user.split("/", 1)[1]
                self.db.put_item("pending", pending, data, PENDING_TTL)
            else:
                return HTMLResponse(pages.patient_page(pending, await self._patients()))
        return HTMLResponse(pages.consent_page(pending, client, data["scope"], data.get("patient")))

    async def _patients(self) -> list[tuple[str, str]]:
        page = await self.store.search(SearchQuery("Patient", MatchAll(), count=50))
        out = []
        for v in page.versions:
            resource = jsonio.loads(v.body)
            name = (resource.get("name") or [{}])[0]
            label = " ".join([*name.get("given", []), name.get("family", "")]).strip() or v.rid
            out.append((v.rid, label))
        return out

    async def _pending(self, request: Request) -> tuple[str, dict[str, Any], Client, dict[str, Any]] | Response:
        form = dict((await read_form(request)).items())
        pending = str(form.get("pending", ""))
        data = self.db.item("pending", pending)
        client = self.db.client(data["client_id"]) if data else None
        if data is None or client is None:
            return HTMLResponse(pages.error_page("this sign-in has expired; start again from the app"), 400)
        return pending, data, client, form

    async def login(self, request: Request) -> Response:
        got = await self._pending(request)
        if isinstance(got, Response):
            return got
        pending, data, client, form = got
        user = self.db.user(str(form.get("username", "")))
        if user is None or not verify_password(str(form.get("password", "")), user.password_hash):
            return HTMLResponse(pages.login_page(pending, client, "wrong user name or password"), 401)
        data["username"], data["fhir_user"] = user.username, user.fhir_user
        self.db.put_item("pending", pending, data, PENDING_TTL)
        return await self._next(pending, data, client)

    async def pick_patient(self, request: Request) -> Response:
        got = await self._pending(request)
        if isinstance(got, Response):
            return got
        pending, data, client, form = got
        if not data.get("username"):
            return HTMLResponse(pages.login_page(pending, client))
        pid = str(form.get("patient_id") or form.get("patient") or "").strip()
        if not _may_choose_patients(data.get("fhir_user")):
            return HTMLResponse(pages.error_page("a patient user cannot choose another patient"), 403)
        found = await self.store.read("Patient", pid) if pid else None
        if found is None or found.deleted:
            return HTMLResponse(pages.patient_page(pending, await self._patients()), 400)
        data["patient"] = pid
        self.db.put_item("pending", pending, data, PENDING_TTL)
        return await self._next(pending, data, client)

    async def consent(self, request: Request) -> Response:
        got = await self._pending(request)
        if isinstance(got, Response):
            return got
        pending, data, client, _ = got
        if not data.get("username"):
            return HTMLResponse(pages.login_page(pending, client))
        user = data.get("fhir_user") or ""
        if data.get("patient") and not _may_choose_patients(user) and user.split("/", 1)[1] != data["patient"]:
            # whatever the path here (an EHR launch opened by someone else), a patient acts for herself only
            return HTMLResponse(pages.error_page("this sign-in is for another patient"), 403)
        form = await read_form(request)
        self.db.drop_item("pending", pending)
        params: dict[str, str] = {}
        if form.get("decision") != "allow":
            params = {"error": "access_denied", "error_description": "the user denied access"}
        else:
            chosen = [s for s in data["scope"] if s in form.getlist("scope")]
            code = secrets.token_urlsafe(32)
            self.db.put_code(token_hash(code), {**data, "scope": chosen}, CODE_TTL)
            params = {"code": code}
        if data.get("state"):
            params["state"] = data["state"]
        return RedirectResponse(_with_query(data["redirect_uri"], params), 303)

    # ---- token --------------------------------------------------------------------------------------------------

    async def token(self, request: Request) -> Response:
        try:
            form = {k: str(v) for k, v in (await read_form(request)).items()}
            headers = {k.lower(): v for k, v in request.headers.items()}
            token_url = f"{self.root(request)}/auth/token"
            grant_type = form.get("grant_type", "")
            if grant_type not in ("authorization_code", "refresh_token", "client_credentials"):
                raise OAuthError("unsupported_grant_type", f"grant_type {grant_type!r} is not supported")
            client = await authenticate(self.db, form, headers, token_url)
            grant = {"authorization_code": code_grant, "refresh_token": refresh_grant,
                     "client_credentials": client_credentials}[grant_type]
            # in a worker thread: a grant makes several store calls and may sign an id_token (RSA, CPU-bound), which
            # should not hold the event loop; both AuthDB implementations are thread-safe
            body = await asyncio.to_thread(grant, self.db, self.lifetimes, client, form, self.base(request))
            return _json(body)
        except OAuthError as exc:
            return _oauth_error(exc)

    # ---- introspection and revocation ------------------------------------------------------------------------------

    async def introspect(self, request: Request) -> Response:
        form = {k: str(v) for k, v in (await read_form(request)).items()}
        headers = {k.lower(): v for k, v in request.headers.items()}
        auth = headers.get("authorization", "")
        try:
            if auth.lower().startswith("bearer "):
                if active(self.db, auth[7:].strip()) is None:
                    raise OAuthError("invalid_client", "the bearer token is not active", status=401,
                                     headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
            else:
                await authenticate(self.db, form, headers, f"{self.root(request)}/auth/token", allow_public=False)
        except OAuthError as exc:
            # RFC 7662 §2.3: a caller that is not authorized to introspect gets 401
            return _json(exc.body(), 401, {"WWW-Authenticate": 'Bearer realm="aegis"', **exc.headers})
        token = form.get("token", "")
        row = active(self.db, token, "access") or active(self.db, token, "refresh")
        return _json(introspection(row, self.base(request)))

    async def revoke(self, request: Request) -> Response:
        form = {k: str(v) for k, v in (await read_form(request)).items()}
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            client = await authenticate(self.db, form, headers, f"{self.root(request)}/auth/token")
        except OAuthError as exc:
            return _oauth_error(exc)
        if "token" not in form:
            return _oauth_error(OAuthError("invalid_request", "token is required"))
        row = self.db.token(token_hash(form["token"]))
        if row is not None and row.client_id == client.client_id:
            if row.kind == "refresh":
                self.db.revoke_family(row.family)  # RFC 7009 §2.1: revoking a refresh token ends its grant
            else:
                self.db.revoke_token(token_hash(form["token"]))
        return Response(status_code=200, headers=NO_STORE)

    # ---- EHR launcher ------------------------------------------------------------------------------------------------

    async def launcher(self, request: Request) -> Response:
        clients = self.db.clients()
        if request.method == "GET":
            return HTMLResponse(pages.launcher_page(clients))
        form = {k: str(v) for k, v in (await read_form(request)).items()}
        user = self.db.user(form.get("username", ""))
        if user is None or not verify_password(form.get("password", ""), user.password_hash):
            return HTMLResponse(pages.launcher_page(clients, "wrong user name or password"), 401)
        if not _may_choose_patients(user.fhir_user):
            return HTMLResponse(pages.launcher_page(clients, "only clinical staff may launch apps for a patient"), 403)
        client = self.db.client(form.get("client_id", ""))
        if client is None or not client.launch_url:
            return HTMLResponse(pages.launcher_page(clients, "choose a registered app with a launch URL"), 400)
        pid = form.get("patient", "").strip()
        found = await self.store.read("Patient", pid) if pid else None
        if found is None or found.deleted:
            return HTMLResponse(pages.launcher_page(clients, f"there is no Patient/{pid}"), 400)
        launch = secrets.token_urlsafe(24)
        self.db.put_item("launches", launch, {"client_id": client.client_id, "patient": pid,
                                              "encounter": form.get("encounter", "").strip() or None,
                                              "username": user.username, "fhir_user": user.fhir_user,
                                              "created": now()}, LAUNCH_TTL)
        return RedirectResponse(_with_query(client.launch_url, {"iss": self.base(request), "launch": launch}), 303)
