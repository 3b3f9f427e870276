"""``aegis serve --demo``: a demo app and demo users, so the SMART flows can be tried at once.

Registered on every start (idempotent): the public client ``aegis-demo-app`` and the users ``clinician``
(``Practitioner/aegis-demo-practitioner``) and ``patient`` (the first demo Patient), both with password ``demo``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fhir_server.search.tree import MatchAll
from smart_auth.cli import add_user, register_client

if TYPE_CHECKING:
    from fhir_server.app import AegisApp

DEMO_CLIENT = "aegis-demo-app"
DEMO_REDIRECT = "http://localhost:9000/callback"
DEMO_PASSWORD = "demo"


def register_demo_access(aegis: AegisApp, console: Any) -> None:
    async def hook(app: AegisApp) -> None:
        db = app.auth.db
        register_client(db, "Aegis demo app", kind="public", redirect_uris=[DEMO_REDIRECT],
                        scope="openid fhirUser launch launch/patient offline_access online_access patient/*.cruds "
                              "user/*.cruds", launch_url="http://localhost:9000/launch", client_id=DEMO_CLIENT)
        first = (await app.store.find("Patient", MatchAll(), limit=1)).versions
        if db.user("clinician") is None:
            add_user(db, "clinician", DEMO_PASSWORD, "Practitioner/aegis-demo-practitioner", "Demo Clinician")
        if first and db.user("patient") is None:
            add_user(db, "patient", DEMO_PASSWORD, f"Patient/{first[0].rid}", "Demo Patient")
        base = f"http://{app.settings.host}:{app.settings.port}"
        console.print(
            f"SMART demo: client_id [bold]{DEMO_CLIENT}[/bold] (public, PKCE S256, redirect_uri {DEMO_REDIRECT}); "
            f"users [bold]clinician[/bold] and [bold]patient[/bold], password [bold]{DEMO_PASSWORD}[/bold]; "
            f"discovery {base}/fhir/.well-known/smart-configuration; EHR launcher {base}/auth/launcher")

    aegis.on_startup.append(hook)
