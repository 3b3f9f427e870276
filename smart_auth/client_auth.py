"""Client authentication at the token, introspection and revocation endpoints.

* public clients: ``client_id`` only (their security is PKCE);
* confidential symmetric clients: ``client_secret_basic`` or ``client_secret_post``;
* confidential asymmetric clients: ``private_key_jwt`` (SMART Backend Services) — a JWT signed RS384 or ES384 by a
  key from the client's registered JWKS (inline, or fetched from its JWKS URL), with ``iss`` = ``sub`` = client id,
  ``aud`` = the token endpoint, an ``exp`` at most five minutes ahead, and a ``jti`` never seen before.
"""

from __future__ import annotations

import base64
import hmac
import json
import time
from typing import Any
from urllib.parse import unquote

import httpx
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from smart_auth.db import AuthDB, Client, now
from smart_auth.errors import OAuthError
from smart_auth.passwords import hash_secret

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_ALGORITHMS = ["RS384", "ES384"]
MAX_ASSERTION_LIFETIME = 300
_JWKS_CACHE: dict[str, tuple[float, dict[str, Any]]] = {}


def _invalid(message: str, basic: bool = False) -> OAuthError:
    # RFC 6749 §5.2: 401 (with WWW-Authenticate) when the client authenticated through the Authorization header,
    # 400 otherwise (form credentials, client assertions) — which is also what Inferno's backend services tests expect
    if basic:
        return OAuthError("invalid_client", message, status=401, headers={"WWW-Authenticate": 'Basic realm="aegis"'})
    return OAuthError("invalid_client", message, status=400)


async def _client_keys(client: Client) -> KeySet:
    if client.jwks:
        return KeySet.import_key_set(client.jwks)  # type: ignore[arg-type]
    if not client.jwks_url:
        raise _invalid("the client has no registered keys")
    cached = _JWKS_CACHE.get(client.jwks_url)
    if cached is None or cached[0] < time.monotonic():
        try:
            async with httpx.AsyncClient(timeout=5) as http:
                response = await http.get(client.jwks_url)
                response.raise_for_status()
                cached = (time.monotonic() + 300, response.json())
        except (httpx.HTTPError, ValueError) as exc:
            raise _invalid(f"the client's JWKS could not be fetched: {exc}") from None
        _JWKS_CACHE[client.jwks_url] = cached
    return KeySet.import_key_set(cached[1])  # type: ignore[arg-type]


async def _assertion(db: AuthDB, assertion: str, token_url: str) -> Client:
    # the client is named by the unverified iss; its keys then verify the signature
    try:
        payload = assertion.split(".")[1]
        claims_raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        iss = json.loads(claims_raw).get("iss")
    except (IndexError, ValueError, AttributeError):
        raise _invalid("client_assertion is not a JWT") from None
    client = db.client(iss) if isinstance(iss, str) else None
    if client is None or client.kind != "asymmetric":
        raise _invalid("client_assertion: unknown client or not an asymmetric client")
    keys = await _client_keys(client)
    try:
        token = jwt.decode(assertion, keys, algorithms=ASSERTION_ALGORITHMS)
    except JoseError as exc:
        raise _invalid(f"client_assertion signature does not verify ({exc.error}); RS384 or ES384 with a "
                       "registered key is required") from None
    claims = token.claims
    t = now()
    if claims.get("sub") != client.client_id:
        raise _invalid("client_assertion: sub must equal iss (the client id)")
    aud = claims.get("aud")
    if aud != token_url and not (isinstance(aud, list) and token_url in aud):
        raise _invalid(f"client_assertion: aud must be the token endpoint {token_url}")
    exp = claims.get("exp")
    if not isinstance(exp, int) or exp < t:
        raise _invalid("client_assertion has expired (or has no exp)")
    if exp > t + MAX_ASSERTION_LIFETIME + 30:
        raise _invalid(f"client_assertion: exp may be at most {MAX_ASSERTION_LIFETIME} seconds ahead")
    jti = claims.get("jti")
    if not isinstance(jti, str) or not jti:
        raise _invalid("client_assertion needs a jti")
    if not db.use_jti(client.client_id, jti, exp):
        raise _invalid("client_assertion: this jti was used before (replay)")
    return client


async def authenticate(db: AuthDB, form: dict[str, str], headers: dict[str, str], token_url: str,
                       *, allow_public: bool = True) -> Client:
    """The calling client, authenticated by whichever method it used; 401 ``invalid_client`` otherwise."""
    if form.get("client_assertion_type") or form.get("client_assertion"):
        if form.get("client_assertion_type") != ASSERTION_TYPE:
            raise _invalid(f"client_assertion_type must be {ASSERTION_TYPE}")
        client = await _assertion(db, form.get("client_assertion", ""), token_url)
        if form.get("client_id") and form["client_id"] != client.client_id:
            raise _invalid("client_id differs from the client assertion's issuer")
        return client
    auth = headers.get("authorization", "")
    if auth.lower().startswith("basic "):
        try:
            raw = base64.b64decode(auth[6:].strip(), validate=True).decode()
            client_id, _, secret = raw.partition(":")
            client_id, secret = unquote(client_id), unquote(secret)
        except (ValueError, UnicodeDecodeError):
            raise _invalid("malformed Basic credentials", basic=True) from None
        return _symmetric(db, client_id, secret, basic=True)
    if form.get("client_secret"):
        return _symmetric(db, form.get("client_id", ""), form["client_secret"])
    named = db.client(form.get("client_id", ""))
    if named is None:
        raise _invalid("unknown client_id, or no client authentication given")
    if named.kind != "public" or not allow_public:
        raise _invalid(f"client {named.client_id} must authenticate "
                       f"({'private_key_jwt' if named.kind == 'asymmetric' else 'client secret'})")
    return named


def _symmetric(db: AuthDB, client_id: str, secret: str, basic: bool = False) -> Client:
    client = db.client(client_id)
    if client is None or client.kind != "symmetric" or not client.secret_hash or \
            not hmac.compare_digest(client.secret_hash, hash_secret(secret)):
        raise _invalid("wrong client id or secret", basic=basic)
    return client
