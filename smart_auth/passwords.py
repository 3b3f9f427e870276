"""User passwords: scrypt (memory-hard; Python's standard library), in a self-describing string."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

# 2^15 × 8 × 128 B = 32 MiB of memory per hash: OWASP's recommended scrypt floor is N=2^17 with r=8 (128 MiB); we
# take a quarter so that logins stay fast on a 2-core box, and record the parameters so they can be raised later.
N, R, P = 2**15, 8, 1
MAXMEM = 64 * 1024 * 1024


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def hash_password(password: str) -> str:
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=N, r=R, p=P, maxmem=MAXMEM, dklen=32)
    return f"scrypt${N}${R}${P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        got = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                             maxmem=MAXMEM, dklen=32)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, base64.b64decode(digest))


def hash_secret(secret: str) -> str:
    """Client secrets are long random strings: a keyed fast hash is enough (no dictionary to guess from)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def token_hash(token: str) -> str:
    """Tokens and codes are stored by hash: a copy of the database does not hand out live tokens."""
    return hashlib.sha256(token.encode()).hexdigest()
