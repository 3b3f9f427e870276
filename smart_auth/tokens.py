"""Issuing, looking up and revoking tokens; the token response of every grant type; the FHIR side's grant lookup.

Access and refresh tokens are opaque random strings stored by hash (so revocation and introspection are a lookup,
and a stolen database copy holds no live token). Every token issued from one authorization shares a ``family``:
replaying a code or revoking a refresh token ends the whole family.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from fhir_server.authz.grant import Grant
from smart_auth import keys
from smart_auth.db import AuthDB, TokenRow, now
from smart_auth.passwords import token_hash
from smart_auth.scopes import split


@dataclass(frozen=True, slots=True)
class Lifetimes:
    access: int = 3600
    refresh: int = 30 * 24 * 3600
    online_refresh: int = 24 * 3600


def new_token() -> str:
    return secrets.token_urlsafe(32)


def issue(db: AuthDB, *, client_id: str, scope: str, context: dict[str, Any], family: str | None,
          lifetimes: Lifetimes, issuer: str, nonce: str | None = None) -> dict[str, Any]:
    """The token response for a grant of ``scope`` with launch ``context`` (patient, encounter, user…)."""
    t = now()
    family = family or secrets.token_hex(16)
    access = new_token()
    data = {"scope": scope, **context}
    db.put_token(token_hash(access), TokenRow("access", family, client_id, data, t, t + lifetimes.access))
    body: dict[str, Any] = {"access_token": access, "token_type": "Bearer", "expires_in": lifetimes.access,
                            "scope": scope}
    for key in ("patient", "encounter"):
        if context.get(key):
            body[key] = context[key]
    if context.get("patient") or context.get("encounter"):
        body["need_patient_banner"] = bool(context.get("need_patient_banner", True))
        body["smart_style_url"] = f"{issuer.rsplit('/fhir', 1)[0]}/auth/smart-style.json"
    tokens = split(scope)
    if "offline_access" in tokens or "online_access" in tokens:
        refresh = new_token()
        life = lifetimes.refresh if "offline_access" in tokens else lifetimes.online_refresh
        db.put_token(token_hash(refresh), TokenRow("refresh", family, client_id, data, t, t + life))
        body["refresh_token"] = refresh
    if "openid" in tokens and context.get("username") and ("fhirUser" in tokens or "profile" in tokens):
        claims: dict[str, Any] = {"iss": issuer, "sub": context["username"], "aud": client_id, "iat": t,
                                  "exp": t + lifetimes.access}
        if context.get("fhir_user"):
            claims["fhirUser"] = f"{issuer}/{context['fhir_user']}"
        if nonce:
            claims["nonce"] = nonce
        body["id_token"] = keys.sign(db, claims)
    return body


def active(db: AuthDB, token: str, kind: str = "access") -> TokenRow | None:
    row = db.token(token_hash(token))
    if row is None or row.kind != kind or row.revoked or row.expires < now():
        return None
    return row


def grant_of(row: TokenRow) -> Grant:
    data = row.data
    return Grant.from_scope_text(data.get("scope", ""), patient=data.get("patient"), fhir_user=data.get("fhir_user"),
                                 client_id=row.client_id, subject=data.get("username") or row.client_id)


def introspection(row: TokenRow | None, issuer: str) -> dict[str, Any]:
    if row is None:
        return {"active": False}
    data = row.data
    out: dict[str, Any] = {"active": True, "scope": data.get("scope", ""), "client_id": row.client_id,
                           "token_type": "Bearer" if row.kind == "access" else "refresh_token",
                           "exp": row.expires, "iat": row.issued, "iss": issuer,
                           "sub": data.get("username") or row.client_id}
    if data.get("username"):
        out["username"] = data["username"]
    for key, name in (("patient", "patient"), ("encounter", "encounter")):
        if data.get(key):
            out[name] = data[key]
    if data.get("fhir_user"):
        out["fhirUser"] = f"{issuer}/{data['fhir_user']}"
    return out
