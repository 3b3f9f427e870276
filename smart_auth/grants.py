"""The token endpoint's grants: ``authorization_code`` (PKCE S256), ``refresh_token`` (rotating; narrower scope
honoured, wider refused) and ``client_credentials`` (system scopes within the client's registration).

Each takes the already authenticated client and the form, and returns the token response or raises
:class:`~smart_auth.errors.OAuthError`.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Any

from authlib.oauth2.rfc7636 import create_s256_code_challenge

from smart_auth.db import AuthDB, Client
from smart_auth.errors import OAuthError
from smart_auth.passwords import token_hash
from smart_auth.scopes import IDENTITY_SCOPES, parse_clinical, split
from smart_auth.tokens import Lifetimes, active, issue

_VERIFIER_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def allowed_scopes(client: Client, requested: list[str]) -> list[str]:
    """The requested scopes this client may have: identity scopes, and clinical scopes within its registration."""
    registered = [s for s in (parse_clinical(t) for t in split(client.scope)) if s is not None]
    out: list[str] = []
    for token in requested:
        if token in IDENTITY_SCOPES or token in split(client.scope):
            out.append(token)
            continue
        s = parse_clinical(token)
        if s is not None and any(r.context == s.context and r.rtype in ("*", s.rtype) and not r.query
                                 and set(s.actions) <= set(r.actions) for r in registered):
            out.append(token)
    return out


def code_grant(db: AuthDB, lifetimes: Lifetimes, client: Client, form: dict[str, str], issuer: str
               ) -> dict[str, Any]:
    data, replayed = db.take_code(token_hash(form.get("code", "")))
    if data is None:
        raise OAuthError("invalid_grant", "the code is unknown or expired")
    if replayed:
        # RFC 6749 §4.1.2: a code used twice revokes what it was exchanged for
        if data.get("family"):
            db.revoke_family(data["family"])
        raise OAuthError("invalid_grant", "the code was already used")
    if data["client_id"] != client.client_id:
        raise OAuthError("invalid_grant", "the code was issued to another client")
    if form.get("redirect_uri") != data["redirect_uri"]:
        raise OAuthError("invalid_grant", "redirect_uri differs from the authorization request's")
    verifier = form.get("code_verifier", "")
    if not verifier:
        raise OAuthError("invalid_grant", "code_verifier is required (PKCE)")
    if not 43 <= len(verifier) <= 128 or not set(verifier) <= _VERIFIER_CHARS or \
            not hmac.compare_digest(create_s256_code_challenge(verifier), data["code_challenge"]):
        raise OAuthError("invalid_grant", "code_verifier does not match the code_challenge (S256)")
    family = secrets.token_hex(16)
    # so that a replay of this (now used) code can revoke the tokens it produced
    db.set_code_family(token_hash(form.get("code", "")), {**data, "family": family})
    context: dict[str, Any] = {k: data.get(k) for k in ("patient", "encounter", "username", "fhir_user")
                               if data.get(k)}
    # an EHR shows its own patient banner; a standalone app must show one
    context["need_patient_banner"] = not data.get("ehr")
    scope = " ".join(data["scope"])
    return issue(db, client_id=client.client_id, scope=scope, context=context, family=family,
                 lifetimes=lifetimes, issuer=issuer, nonce=data.get("nonce"))


def refresh_grant(db: AuthDB, lifetimes: Lifetimes, client: Client, form: dict[str, str], issuer: str
                  ) -> dict[str, Any]:
    row = active(db, form.get("refresh_token", ""), "refresh")
    if row is None or row.client_id != client.client_id:
        spent = db.token(token_hash(form.get("refresh_token", "")))
        if spent is not None and spent.kind == "refresh" and spent.client_id == client.client_id and spent.revoked:
            # a rotated refresh token used again: someone holds a copy (RFC 9700 §4.14.2); end the whole grant
            db.revoke_family(spent.family)
        raise OAuthError("invalid_grant", "the refresh token is unknown, expired, revoked or another client's")
    granted = split(row.data.get("scope"))
    scope = granted
    if form.get("scope"):
        scope = split(form["scope"])
        if not set(scope) <= set(granted):
            raise OAuthError("invalid_scope", "a refresh may narrow the granted scope, never widen it")
    if not db.spend_token(token_hash(form.get("refresh_token", ""))):  # rotation: the old one is spent, once
        raise OAuthError("invalid_grant", "the refresh token was already used")
    context = {k: v for k, v in row.data.items() if k != "scope"}
    return issue(db, client_id=client.client_id, scope=" ".join(scope), context=context, family=row.family,
                 lifetimes=lifetimes, issuer=issuer)

def client_credentials(db: AuthDB, lifetimes: Lifetimes, client: Client, form: dict[str, str],
                       issuer: str) -> dict[str, Any]:
    if client.kind == "public":
        raise OAuthError("unauthorized_client", "public clients cannot use client_credentials", status=400)
    requested = split(form.get("scope"))
    parsed = [(s, parse_clinical(s)) for s in requested]
    bad = [s for s, c in parsed if c is None or c.context != "system"]
    if not requested or bad:
        raise OAuthError("invalid_scope", "client_credentials takes system/ scopes only"
                         + (f" (not {' '.join(bad)})" if bad else ""))
    scopes = allowed_scopes(client, requested)
    if scopes != requested:
        raise OAuthError("invalid_scope", "scopes beyond the client's registration: "
                         + " ".join(s for s in requested if s not in scopes))
    return issue(db, client_id=client.client_id, scope=" ".join(scopes), context={}, family=None,
                 lifetimes=Lifetimes(lifetimes.access, 0, 0), issuer=issuer)
