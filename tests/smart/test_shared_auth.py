"""Two ``aegis serve`` processes on one database share one authorization server, as behind a load balancer.

Both serve the same public base URL (``AEGIS_BASE_URL``, as a load balancer's name), so an audience or a token URL
means the same at either. A client and users registered once with ``aegis clients|users add --store URL`` work at
both; a token issued by one is accepted by the other; a refresh token rotated at one is refused at the other; a
revocation at one is seen by the other (introspection and the FHIR API); a code or a client assertion ``jti`` is
accepted once across both, even when both are sent at once; a key rotation is one rotation, published by both.

Runs on backends with the "shared-auth" capability (the authorization server's data lives in the shared store).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet, RSAKey

from tests.conftest import requires
from tests.smart.oauth import (
    REDIRECT,
    Endpoints,
    authorization_url,
    browser_consent,
    client_assertion,
    code_of,
    new_key,
    public_jwks,
)
from tests.smart.stores import store_option
from tests.smart.test_cli import aegis
from tests.support.server import ServerProcess, store_args

PUBLIC_BASE = "http://aegis.test/fhir"  # the load balancer's name, which both servers answer for
PUBLIC_TOKEN_URL = "http://aegis.test/auth/token"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
PASSWORD = "pw-shared"


@dataclass
class Pair:
    a: Endpoints
    b: Endpoints
    cli: list[str]  # the aegis clients|users|keys options that reach the shared database
    public_id: str
    backend_id: str
    backend_key: RSAKey | ECKey


@pytest.fixture(scope="module")
def pair(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    requires(backend, "shared-auth")
    args = store_args(backend)  # one database for both processes
    root: Path = tmp_path_factory.mktemp("shared-auth")
    servers = [ServerProcess(root / name, args=args, auth=True, env={"AEGIS_BASE_URL": PUBLIC_BASE})
               for name in ("a", "b")]
    try:
        for server in servers:
            server.data_dir.mkdir()
            server.start()
        # registered once, through the CLI on the shared database, from a data directory neither server uses
        cli = ["--data-dir", str(root / "cli"), *store_option(args)]
        out = aegis("clients", "add", "Shared app", "--redirect-uri", REDIRECT, "--scope",
                    "openid fhirUser launch/patient offline_access patient/*.rs", *cli)
        assert out.returncode == 0, out.stderr
        public_id = out.stdout.split("client_id:")[1].split()[0]
        key = new_key("RS384")
        jwks_file = root / "jwks.json"
        jwks_file.write_text(json.dumps(public_jwks(key)))
        out = aegis("clients", "add", "Shared backend", "--kind", "asymmetric", "--jwks-file", str(jwks_file),
                    "--scope", "system/*.cruds", *cli)
        assert out.returncode == 0, out.stderr
        backend_id = out.stdout.split("client_id:")[1].split()[0]
        assert aegis("users", "add", "jane", "--fhir-user", "Patient/pj", "--password", PASSWORD,
                     *cli).returncode == 0
        pair = Pair(Endpoints(servers[0].base), Endpoints(servers[1].base), cli, public_id, backend_id, key)
        r = httpx.put(f"{pair.a.base}/Patient/pj", json={"resourceType": "Patient", "id": "pj"}, timeout=30,
                      headers={"Authorization": f"Bearer {_system_token(pair, pair.a)}",
                               "Content-Type": "application/fhir+json"})
        assert r.status_code == 201, r.text
        yield pair
    finally:
        for server in servers:
            server.stop()


def _assertion_form(pair: Pair, scope: str = "system/*.cruds", jti: str | None = None) -> dict[str, str]:
    return {"grant_type": "client_credentials", "scope": scope, "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": client_assertion(pair.backend_key, "RS384", pair.backend_id, PUBLIC_TOKEN_URL,
                                                 jti=jti)}


def _system_token(pair: Pair, ep: Endpoints) -> str:
    r = httpx.post(ep.token, data=_assertion_form(pair), timeout=30)
    assert r.status_code == 200, r.text
    return str(r.json()["access_token"])


def _code(pair: Pair, authorize_at: Endpoints, sign_in_at: Endpoints, scope: str) -> tuple[str, str]:
    """A code for ``jane`` (authorization request to one server, sign-in and consent pages through the other, as a
    load balancer may send them) and its PKCE verifier."""
    app, url, verifier = authorization_url(authorize_at, pair.public_id, scope, aud=PUBLIC_BASE)
    app.close()
    location = browser_consent(sign_in_at, url, "jane", PASSWORD)
    return code_of(location)["code"], verifier


def _exchange(pair: Pair, ep: Endpoints, code: str, verifier: str) -> httpx.Response:
    return httpx.post(ep.token, timeout=30, data={"grant_type": "authorization_code", "code": code,
                                                  "redirect_uri": REDIRECT, "client_id": pair.public_id,
                                                  "code_verifier": verifier})


def _refresh(pair: Pair, ep: Endpoints, refresh_token: str) -> httpx.Response:
    return httpx.post(ep.token, timeout=30, data={"grant_type": "refresh_token", "refresh_token": refresh_token,
                                                  "client_id": pair.public_id})


def _introspect(ep: Endpoints, token: str, caller: str) -> dict[str, Any]:
    r = httpx.post(ep.introspect, data={"token": token}, headers={"Authorization": f"Bearer {caller}"}, timeout=30)
    assert r.status_code == 200, r.text
    return dict(r.json())


def _read(ep: Endpoints, token: str, path: str = "/Patient/pj") -> httpx.Response:
    return httpx.get(f"{ep.base}{path}", headers={"Authorization": f"Bearer {token}"}, timeout=30)


def test_clients_registered_once_work_at_both_and_tokens_cross(pair: Pair) -> None:
    token_a = _system_token(pair, pair.a)
    token_b = _system_token(pair, pair.b)
    # a token from A writes at B, and one from B reads it back at A
    r = httpx.put(f"{pair.b.base}/Patient/pj", json={"resourceType": "Patient", "id": "pj", "active": True},
                  timeout=30, headers={"Authorization": f"Bearer {token_a}", "Content-Type": "application/fhir+json"})
    assert r.status_code == 200, r.text
    assert _read(pair.a, token_b).json()["active"] is True
    assert _introspect(pair.b, token_a, token_b)["client_id"] == pair.backend_id
    # the public client and the user, through the code flow started at one server and finished at the other
    for first, second in ((pair.a, pair.b), (pair.b, pair.a)):
        code, verifier = _code(pair, first, second, "launch/patient patient/*.rs")
        got = _exchange(pair, second, code, verifier)
        assert got.status_code == 200, got.text
        assert got.json()["patient"] == "pj"
        assert _read(first, got.json()["access_token"]).status_code == 200


def test_refresh_token_rotated_at_a_is_refused_at_b(pair: Pair) -> None:
    code, verifier = _code(pair, pair.a, pair.a, "launch/patient offline_access patient/*.rs")
    first = _exchange(pair, pair.a, code, verifier).json()
    rotated = _refresh(pair, pair.a, first["refresh_token"])
    assert rotated.status_code == 200, rotated.text
    again = _refresh(pair, pair.b, first["refresh_token"])
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    # the spent token's reuse ended the grant everywhere (RFC 9700 §4.14.2): the rotated one is dead at A too
    assert _refresh(pair, pair.a, rotated.json()["refresh_token"]).status_code == 400
    assert _read(pair.a, rotated.json()["access_token"]).status_code == 401


def test_refresh_racing_at_both_servers_rotates_once(pair: Pair) -> None:
    code, verifier = _code(pair, pair.b, pair.a, "launch/patient offline_access patient/*.rs")
    refresh_token = _exchange(pair, pair.b, code, verifier).json()["refresh_token"]
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda ep: _refresh(pair, ep, refresh_token), [pair.a, pair.b] * 2))
    assert sorted(r.status_code for r in answers) == [200, 400, 400, 400], [r.text for r in answers]


def test_token_revoked_at_b_is_inactive_and_refused_at_a(pair: Pair) -> None:
    caller = _system_token(pair, pair.a)
    code, verifier = _code(pair, pair.a, pair.a, "launch/patient patient/*.rs")
    token = _exchange(pair, pair.a, code, verifier).json()["access_token"]
    assert _introspect(pair.a, token, caller)["active"] is True
    assert _read(pair.a, token).status_code == 200
    r = httpx.post(pair.b.revoke, data={"token": token, "client_id": pair.public_id}, timeout=30)
    assert r.status_code == 200, r.text
    assert _introspect(pair.a, token, caller) == {"active": False}
    refused = _read(pair.a, token)
    assert refused.status_code == 401 and "invalid_token" in refused.headers["www-authenticate"]


def test_code_redeemed_at_a_cannot_be_redeemed_at_b(pair: Pair) -> None:
    code, verifier = _code(pair, pair.a, pair.b, "launch/patient patient/*.rs")
    first = _exchange(pair, pair.a, code, verifier)
    assert first.status_code == 200, first.text
    replay = _exchange(pair, pair.b, code, verifier)
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    # the replay at B revoked what A had exchanged the code for
    assert _read(pair.a, first.json()["access_token"]).status_code == 401


def test_code_sent_to_both_servers_at_once_is_redeemed_once(pair: Pair) -> None:
    for _ in range(3):
        code, verifier = _code(pair, pair.a, pair.b, "launch/patient patient/*.rs")
        with ThreadPoolExecutor(2) as pool:
            answers = list(pool.map(lambda ep: _exchange(pair, ep, code, verifier), [pair.a, pair.b]))
        assert sorted(r.status_code for r in answers) == [200, 400], [r.text for r in answers]


def test_client_assertion_jti_is_accepted_once_across_servers(pair: Pair) -> None:
    form = _assertion_form(pair, jti=uuid.uuid4().hex)
    assert httpx.post(pair.a.token, data=form, timeout=30).status_code == 200
    replay = httpx.post(pair.b.token, data=form, timeout=30)
    assert replay.status_code == 400 and "replay" in replay.json()["error_description"]
    form = _assertion_form(pair, jti=uuid.uuid4().hex)
    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda ep: httpx.post(ep.token, data=form, timeout=30), [pair.a, pair.b]))
    assert sorted(r.status_code for r in answers) == [200, 400], [r.text for r in answers]


def test_key_rotated_once_is_published_and_used_by_both(pair: Pair) -> None:
    before = httpx.get(f"{pair.a.root}/auth/jwks", timeout=30).json()["keys"]
    assert httpx.get(f"{pair.b.root}/auth/jwks", timeout=30).json()["keys"] == before  # one key, from the start
    out = aegis("keys", "rotate", *pair.cli)
    assert out.returncode == 0, out.stderr
    kid = out.stdout.split("new signing key")[1].split()[0]
    jwks = [httpx.get(f"{ep.root}/auth/jwks", timeout=30).json() for ep in (pair.a, pair.b)]
    assert jwks[0] == jwks[1]
    assert [k["kid"] for k in jwks[0]["keys"]] == [k["kid"] for k in before] + [kid]  # the old one stays
    # each server now signs id_tokens with the new key, which the other's JWKS verifies
    for signer, verifier in ((pair.a, pair.b), (pair.b, pair.a)):
        code, pkce = _code(pair, signer, signer, "openid fhirUser launch/patient patient/*.rs")
        id_token = _exchange(pair, signer, code, pkce).json()["id_token"]
        keys = KeySet.import_key_set(httpx.get(f"{verifier.root}/auth/jwks", timeout=30).json())
        decoded = jwt.decode(id_token, keys, algorithms=["RS256"])
        assert decoded.header["kid"] == kid
        assert decoded.claims["fhirUser"] == f"{PUBLIC_BASE}/Patient/pj"


def test_auth_records_are_not_reachable_through_the_fhir_api(pair: Pair) -> None:
    token = _system_token(pair, pair.a)
    headers = {"Authorization": f"Bearer {token}"}
    # the whole database's history holds FHIR resources only (the test wrote Patient/pj alone)
    history = httpx.get(f"{pair.a.base}/_history", params={"_count": 1000}, headers=headers, timeout=30).json()
    assert {e["resource"]["resourceType"] for e in history.get("entry", []) if "resource" in e} == {"Patient"}
    assert pair.public_id not in json.dumps(history)
    for path in ("/auth_clients", "/auth_tokens", f"/auth_clients/{pair.public_id}"):
        assert httpx.get(f"{pair.a.base}{path}", headers=headers, timeout=30).status_code in (400, 404), path
