"""The server's signing keys (RS256, for id_tokens): creation, rotation and the published JWKS.

One key is active; rotation adds a new active key and retires the old one, whose public half stays in the JWKS for
a grace period so that id_tokens signed before the rotation still verify. Start-up rotates a key older than
``signing_key_max_age_days``; ``aegis keys rotate`` rotates on demand.
"""

from __future__ import annotations

import secrets
from typing import Any

from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey

from smart_auth.db import AuthDB, now

GRACE_SECONDS = 7 * 24 * 3600  # how long a retired key stays published


def _current(db: AuthDB) -> str | None:
    active = [k for k in db.keys() if k[3] is None]
    return active[-1][0] if active else None


def rotate(db: AuthDB) -> str:
    """Replace the active key by a new one (``aegis keys rotate``); the active key's kid afterwards."""
    return rotate_from(db, _current(db))


def rotate_from(db: AuthDB, replacing: str | None) -> str:
    """Replace ``replacing`` by a new key if it is still the active one; the active key's kid afterwards. Servers
    sharing a database that find the same old key at once make one new key between them, not one each."""
    kid = secrets.token_hex(8)
    key = RSAKey.generate_key(2048, parameters={"kid": kid, "use": "sig", "alg": "RS256"})
    if not db.add_key(kid, key.as_dict(private=True), replacing):
        current = _current(db)  # another process rotated first: its key is the new one
        return current if current is not None else rotate_from(db, None)
    db.drop_keys_retired_before(now() - GRACE_SECONDS)
    return kid


def ensure_current(db: AuthDB, max_age_days: int) -> None:
    active = [k for k in db.keys() if k[3] is None]
    if not active or active[-1][2] <= now() - max_age_days * 86400:
        rotate_from(db, active[-1][0] if active else None)


def _active(db: AuthDB) -> RSAKey:
    active = [k for k in db.keys() if k[3] is None]
    if not active:
        rotate_from(db, None)
        active = [k for k in db.keys() if k[3] is None]
    return RSAKey.import_key(active[-1][1])


def public_jwks(db: AuthDB) -> dict[str, Any]:
    keys = []
    for kid, jwk, _, _ in db.keys():
        public = RSAKey.import_key(jwk).as_dict(private=False)
        public.update({"kid": kid, "use": "sig", "alg": "RS256"})
        keys.append(public)
    return {"keys": keys}


def sign(db: AuthDB, claims: dict[str, Any]) -> str:
    key = _active(db)
    return jwt.encode({"alg": "RS256", "kid": key.kid or "", "typ": "JWT"}, claims, key)


def key_set(db: AuthDB) -> KeySet:
    return KeySet([RSAKey.import_key(jwk) for _, jwk, _, _ in db.keys()])
