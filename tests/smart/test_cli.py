"""``aegis clients …``, ``aegis users …`` and ``aegis keys rotate`` as an operator runs them, then the registered
app and user used against a server started on the same store (``--data-dir``, and ``--store`` for MongoDB)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx

from smart_auth.db import open_auth_db
from smart_auth.passwords import verify_password
from tests.smart.oauth import REDIRECT, Endpoints, backend_token, new_key, public_jwks, standalone_token
from tests.smart.stores import auth_db, store_option
from tests.support.server import ServerProcess, store_args


def aegis(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fhir_server.cli", *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "COLUMNS": "200"})


def test_register_apps_and_users_then_use_them(tmp_path: Path, backend: str) -> None:
    d = str(tmp_path)
    serve_args = store_args(backend)
    args = store_option(serve_args)  # the commands work on the store the server will serve (--store mongodb://…)
    out = aegis("clients", "add", "CLI app", "--redirect-uri", REDIRECT, "--data-dir", d, *args)
    assert out.returncode == 0, out.stderr
    client_id = out.stdout.split("client_id:")[1].split()[0]
    secret_out = aegis("clients", "add", "CLI confidential", "--kind", "symmetric", "--redirect-uri", REDIRECT,
                       "--data-dir", d, *args)
    assert "client_secret:" in secret_out.stdout
    key = new_key("RS384")
    jwks_file = tmp_path / "jwks.json"
    jwks_file.write_text(json.dumps(public_jwks(key)))
    backend_out = aegis("clients", "add", "CLI backend", "--kind", "asymmetric", "--jwks-file", str(jwks_file),
                        "--scope", "system/*.rs", "--data-dir", d, *args)
    assert backend_out.returncode == 0, backend_out.stderr
    backend_id = backend_out.stdout.split("client_id:")[1].split()[0]
    bad = aegis("clients", "add", "No keys", "--kind", "asymmetric", "--data-dir", d, *args)
    assert bad.returncode == 2
    assert aegis("users", "add", "jane", "--fhir-user", "Patient/p1", "--password", "pw-jane", "--data-dir",
                 d, *args).returncode == 0
    assert aegis("users", "add", "x", "--fhir-user", "Observation/1", "--password", "p", "--data-dir",
                 d, *args).returncode == 2
    listed = aegis("clients", "list", "--data-dir", d, *args).stdout
    assert client_id in listed and "CLI confidential" in listed and "asymmetric" in listed
    assert "jane\tPatient/p1" in aegis("users", "list", "--data-dir", d, *args).stdout
    # the password is stored as a memory-hard hash, never in clear
    db = auth_db(tmp_path, args)
    user = db.user("jane")
    db.close()
    assert user is not None and user.password_hash.startswith("scrypt$") and "pw-jane" not in user.password_hash
    assert verify_password("pw-jane", user.password_hash) and not verify_password("pw-jan", user.password_hash)

    server = ServerProcess(tmp_path, args=serve_args, auth=True)
    server.start()
    try:
        ep = Endpoints(server.base)
        got = backend_token(ep, key, "RS384", backend_id, "system/*.rs")
        assert got.status_code == 200, got.text
        admin = {"Authorization": f"Bearer {got.json()['access_token']}", "Content-Type": "application/fhir+json"}
        # a system/*.rs token cannot write
        r = httpx.put(f"{server.base}/Patient/p1", headers=admin,
                      json={"resourceType": "Patient", "id": "p1", "name": [{"family": "Doe"}]})
        assert r.status_code == 403
        assert aegis("clients", "add", "CLI writer", "--kind", "asymmetric", "--jwks-file", str(jwks_file),
                     "--scope", "system/*.cruds", "--client-id", "writer", "--data-dir", d, *args).returncode == 0
        got = backend_token(ep, key, "RS384", "writer", "system/Patient.cu")
        assert got.status_code == 200, got.text
        r = httpx.put(f"{server.base}/Patient/p1", json={"resourceType": "Patient", "id": "p1"},
                      headers={"Authorization": f"Bearer {got.json()['access_token']}",
                               "Content-Type": "application/fhir+json"})
        assert r.status_code == 201, r.text
        token = standalone_token(ep, client_id, "launch/patient openid fhirUser patient/*.rs", "jane", "pw-jane")
        assert token["patient"] == "p1"
        keys_before = httpx.get(f"{ep.root}/auth/jwks").json()["keys"]
        assert aegis("keys", "rotate", "--data-dir", d, *args).returncode == 0
        keys_after = httpx.get(f"{ep.root}/auth/jwks").json()["keys"]
        assert len(keys_after) == len(keys_before) + 1  # the retired key is still published
        assert aegis("clients", "remove", client_id, "--data-dir", d, *args).returncode == 0
        r = httpx.get(f"{server.base}/Patient/p1", headers={"Authorization": f"Bearer {token['access_token']}"})
        assert r.status_code == 401  # removing an app revokes its tokens
        assert aegis("users", "remove", "jane", "--data-dir", d, *args).returncode == 0
        assert aegis("users", "remove", "jane", "--data-dir", d, *args).returncode == 1
    finally:
        server.stop()


def test_serve_warns_when_authorization_is_disabled(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path, args=["--insecure-no-auth"], auth=True)
    server.start()
    try:
        assert httpx.get(f"{server.base}/Patient").status_code == 200
        assert httpx.get(f"{server.base}/.well-known/smart-configuration").status_code == 404
    finally:
        server.stop()
    assert "authorization is disabled" in server.log().lower()


def test_signing_key_rotates_at_start_when_old_and_old_tokens_still_verify(tmp_path: Path) -> None:
    from joserfc import jwt
    from joserfc.jwk import KeySet

    from smart_auth.cli import add_user, register_client

    db = open_auth_db(f"sqlite:///{tmp_path / 'aegis.db'}", tmp_path)
    client, _ = register_client(db, "App", kind="public", redirect_uris=[REDIRECT],
                                scope="openid fhirUser launch/patient patient/*.rs")
    add_user(db, "doc", "pw", "Practitioner/d1")
    server = ServerProcess(tmp_path, env={"AEGIS_SIGNING_KEY_MAX_AGE_DAYS": "0"}, auth=True)
    server.start()
    try:
        ep = Endpoints(server.base)
        token = standalone_token(ep, client.client_id, "openid fhirUser", "doc", "pw")
        first = httpx.get(f"{ep.root}/auth/jwks").json()["keys"]
    finally:
        server.stop()
    server.start()  # a key older than 0 days: rotated at start
    try:
        keys = httpx.get(f"{ep.root}/auth/jwks").json()["keys"]
        assert len(keys) == len(first) + 1
        verified = jwt.decode(token["id_token"], KeySet.import_key_set({"keys": keys}), algorithms=["RS256"])
        assert verified.claims["fhirUser"] == f"{server.base}/Practitioner/d1"
        assert verified.header["kid"] != keys[-1]["kid"]  # signed by the retired key, still published
    finally:
        server.stop()


def test_readme_quick_start_token_with_curl_like_requests(tmp_path: Path) -> None:
    """The README's few commands: a symmetric client gets a system token with client_credentials and Basic auth."""
    out = aegis("clients", "add", "Script", "--kind", "symmetric", "--scope", "system/*.rs", "--data-dir",
                str(tmp_path))
    client_id = out.stdout.split("client_id:")[1].split()[0]
    secret = out.stdout.split("client_secret:")[1].split()[0]
    server = ServerProcess(tmp_path, auth=True)
    server.start()
    try:
        root = server.base.rsplit("/fhir", 1)[0]
        r = httpx.post(f"{root}/auth/token", auth=(client_id, secret),
                       data={"grant_type": "client_credentials", "scope": "system/*.rs"})
        assert r.status_code == 200, r.text
        got = httpx.get(f"{server.base}/Patient", headers={"Authorization": f"Bearer {r.json()['access_token']}"})
        assert got.status_code == 200 and got.json()["type"] == "searchset"
    finally:
        server.stop()
