"""A SMART app's side of the flows, driven with authlib's standard httpx OAuth 2.0 client over real HTTP.

The browser part (login form, patient picker, consent page) is driven with plain form posts, as a user would
submit them; everything OAuth (authorization URL with PKCE, code exchange, refresh, client assertions, revocation)
goes through authlib.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
# authlib's httpx integration runs on httpx2 (a test dependency); on plain httpx it warns that that is deprecated
from authlib.common.security import generate_token
from authlib.integrations.httpx_client import OAuth2Client
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

os.environ.setdefault("AUTHLIB_INSECURE_TRANSPORT", "1")  # the test server speaks plain http on loopback

REDIRECT = "http://app.example/callback"
APP_ORIGIN = "http://app.example"
LAUNCH_URL = "http://app.example/launch"


@dataclass
class Endpoints:
    base: str

    @property
    def root(self) -> str:
        return self.base.rsplit("/fhir", 1)[0]

    @property
    def authorize(self) -> str:
        return f"{self.root}/auth/authorize"

    @property
    def token(self) -> str:
        return f"{self.root}/auth/token"

    @property
    def introspect(self) -> str:
        return f"{self.root}/auth/introspect"

    @property
    def revoke(self) -> str:
        return f"{self.root}/auth/revoke"


def pending_of(html: str) -> str:
    m = re.search(r'name=pending value="([^"]+)"', html)
    assert m, html
    return m.group(1)


def authorization_url(ep: Endpoints, client_id: str, scope: str, **extra: Any) -> tuple[OAuth2Client, str, str]:
    app = OAuth2Client(client_id, redirect_uri=REDIRECT, scope=scope, code_challenge_method="S256")
    verifier = generate_token(64)
    params = {"aud": ep.base, **extra}
    url, _state = app.create_authorization_url(ep.authorize, code_verifier=verifier, **params)
    return app, url, verifier


def browser_consent(ep: Endpoints, url: str, username: str | None, password: str, *, patient: str | None = None,
                    keep: list[str] | None = None, decision: str = "allow") -> str:
    """Sign in, pick the patient if asked, consent; the redirect URL the browser is sent to."""
    with httpx.Client(timeout=30) as browser:
        page = browser.get(url)
        assert page.status_code == 200, page.text
        html = page.text
        if username is not None:
            assert "Sign in" in html, html
            page = browser.post(f"{ep.root}/auth/login", data={"pending": pending_of(html), "username": username,
                                                               "password": password})
            assert page.status_code == 200, page.text
            html = page.text
        if "Choose a patient" in html:
            assert patient is not None, "the server asked for a patient"
            html = browser.post(f"{ep.root}/auth/patient", data={"pending": pending_of(html),
                                                                 "patient": patient}).text
        assert "Allow access?" in html, html
        offered = re.findall(r'name=scope value="([^"]+)"', html)
        chosen = offered if keep is None else [s for s in offered if s in keep]
        done = browser.post(f"{ep.root}/auth/consent", data={"pending": pending_of(html), "scope": chosen,
                                                             "decision": decision})
        assert done.status_code == 303, done.text
        return done.headers["location"]


def standalone(ep: Endpoints, client_id: str, scope: str, username: str, password: str, *,
               patient: str | None = None, keep: list[str] | None = None) -> tuple[OAuth2Client, dict[str, Any]]:
    app, url, verifier = authorization_url(ep, client_id, scope)
    location = browser_consent(ep, url, username, password, patient=patient, keep=keep)
    token = app.fetch_token(ep.token, authorization_response=location, code_verifier=verifier)
    return app, dict(token)


def standalone_token(ep: Endpoints, client_id: str, scope: str, username: str, password: str, *,
                     patient: str | None = None, keep: list[str] | None = None) -> dict[str, Any]:
    app, token = standalone(ep, client_id, scope, username, password, patient=patient, keep=keep)
    app.close()
    return token


def code_of(location: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


# ---- backend services -----------------------------------------------------------------------------------------


def new_key(alg: str) -> RSAKey | ECKey:
    kid = uuid.uuid4().hex[:8]
    if alg == "ES384":
        return ECKey.generate_key("P-384", parameters={"kid": kid, "alg": alg, "use": "sig"})
    return RSAKey.generate_key(2048, parameters={"kid": kid, "alg": alg, "use": "sig"})


def public_jwks(*keys: RSAKey | ECKey) -> dict[str, Any]:
    return {"keys": [k.as_dict(private=False) for k in keys]}


def client_assertion(key: RSAKey | ECKey, alg: str, client_id: str, aud: str, *, exp_in: int = 240,
                     jti: str | None = None, iss: str | None = None) -> str:
    now = int(time.time())
    claims = {"iss": iss or client_id, "sub": client_id, "aud": aud, "exp": now + exp_in, "iat": now,
              "jti": jti or uuid.uuid4().hex}
    return jwt.encode({"alg": alg, "kid": key.kid or "", "typ": "JWT"}, claims, key, algorithms=[alg])


def backend_token(ep: Endpoints, key: RSAKey | ECKey, alg: str, client_id: str, scope: str, **kw: Any
                  ) -> httpx.Response:
    form = {"grant_type": "client_credentials", "scope": scope,
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": client_assertion(key, alg, client_id, ep.token, **kw)}
    return httpx.post(ep.token, data=form, timeout=30)
