"""SMART App Launch end to end over real HTTP, driven like a SMART app drives it (authlib's OAuth 2.0 client):
discovery, standalone and EHR launch, refresh, backend services, introspection, revocation, and the negative cases
the (g)(10) kit checks."""

from __future__ import annotations

import base64
import time

import httpx
import pytest
from authlib.integrations.httpx_client import OAuth2Client
from authlib.oauth2.rfc7523 import PrivateKeyJWT
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey

from smart_auth.passwords import token_hash
from tests.smart.conftest import PASSWORD, Smart
from tests.smart.oauth import (
    APP_ORIGIN,
    LAUNCH_URL,
    REDIRECT,
    authorization_url,
    backend_token,
    browser_consent,
    client_assertion,
    code_of,
    new_key,
    pending_of,
    standalone,
    standalone_token,
)
from tests.smart.stores import expire_token


# ---- discovery ------------------------------------------------------------------------------------------------


def test_smart_configuration_lists_absolute_endpoints_and_s256_only(smart: Smart) -> None:
    r = httpx.get(f"{smart.base}/.well-known/smart-configuration")
    assert r.status_code == 200
    conf = r.json()
    for key in ("issuer", "jwks_uri", "authorization_endpoint", "token_endpoint", "introspection_endpoint",
                "revocation_endpoint"):
        assert conf[key].startswith("http://127.0.0.1:"), key
    assert conf["authorization_endpoint"] == smart.ep.authorize
    assert conf["token_endpoint"] == smart.ep.token
    assert conf["code_challenge_methods_supported"] == ["S256"]
    assert {"launch-ehr", "launch-standalone", "client-public", "client-confidential-symmetric",
            "client-confidential-asymmetric", "permission-v1", "permission-v2", "sso-openid-connect",
            "context-standalone-patient", "context-ehr-patient", "permission-offline"} <= set(conf["capabilities"])
    assert "private_key_jwt" in conf["token_endpoint_auth_methods_supported"]
    assert set(conf["token_endpoint_auth_signing_alg_values_supported"]) == {"RS384", "ES384"}
    assert set(conf["grant_types_supported"]) == {"authorization_code", "refresh_token", "client_credentials"}
    oidc = httpx.get(f"{smart.base}/.well-known/openid-configuration").json()
    assert oidc["issuer"] == smart.base and oidc["jwks_uri"] == conf["jwks_uri"]
    assert oidc["id_token_signing_alg_values_supported"] == ["RS256"]


def test_capability_statement_names_the_same_endpoints_without_a_token(smart: Smart) -> None:
    r = httpx.get(f"{smart.base}/metadata")
    assert r.status_code == 200
    security = r.json()["rest"][0]["security"]
    assert security["service"][0]["coding"][0]["code"] == "SMART-on-FHIR"
    uris = {e["url"]: e["valueUri"] for e in security["extension"][0]["extension"]}
    conf = httpx.get(f"{smart.base}/.well-known/smart-configuration").json()
    assert uris["authorize"] == conf["authorization_endpoint"]
    assert uris["token"] == conf["token_endpoint"]
    assert uris["revoke"] == conf["revocation_endpoint"]


def test_cors_for_browser_apps(smart: Smart) -> None:
    pre = httpx.options(f"{smart.base}/Observation", headers={
        "Origin": APP_ORIGIN, "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization"})
    assert pre.status_code == 204
    assert pre.headers["access-control-allow-origin"] == APP_ORIGIN
    assert "Authorization" in pre.headers["access-control-allow-headers"]
    for url in (f"{smart.base}/.well-known/smart-configuration", f"{smart.base}/metadata"):
        r = httpx.get(url, headers={"Origin": APP_ORIGIN})
        assert r.headers["access-control-allow-origin"] == APP_ORIGIN
    r = httpx.post(smart.ep.token, data={"grant_type": "nope"}, headers={"Origin": APP_ORIGIN})
    assert r.headers["access-control-allow-origin"] == APP_ORIGIN
    # discovery is open to any origin (SMART 2.2); the token endpoint and the FHIR API are not
    for url in (f"{smart.base}/.well-known/smart-configuration", f"{smart.base}/metadata",
                f"{smart.ep.root}/auth/jwks"):
        r = httpx.get(url, headers={"Origin": "http://other.example"})
        assert r.headers["access-control-allow-origin"] == "http://other.example", url
    r = httpx.post(smart.ep.token, data={"grant_type": "nope"}, headers={"Origin": "http://other.example"})
    assert "access-control-allow-origin" not in r.headers
    pre = httpx.options(f"{smart.base}/Observation", headers={
        "Origin": "http://other.example", "Access-Control-Request-Method": "GET"})
    assert "access-control-allow-origin" not in pre.headers


def test_jwks_publishes_the_id_token_key(smart: Smart) -> None:
    keys = httpx.get(f"{smart.ep.root}/auth/jwks").json()["keys"]
    assert keys and all(k["kty"] == "RSA" and "d" not in k and k["alg"] == "RS256" for k in keys)


# ---- standalone launch --------------------------------------------------------------------------------------------


def test_standalone_launch_public_client_with_openid(smart: Smart) -> None:
    scope = "launch/patient openid fhirUser offline_access patient/*.rs"
    app, token = standalone(smart.ep, smart.public_id, scope, "alice", PASSWORD)
    app.close()
    assert token["token_type"] == "Bearer"
    assert isinstance(token["expires_in"], int) and token["expires_in"] > 0
    assert token["patient"] == "pa"
    assert set(token["scope"].split()) == set(scope.split())
    assert token["refresh_token"] and token["need_patient_banner"] is True
    assert token["smart_style_url"].startswith("http")
    # id_token: RS256, signed by a key in the JWKS, with fhirUser naming a resource the token can read
    keys = KeySet.import_key_set(httpx.get(f"{smart.ep.root}/auth/jwks").json())
    id_token = jwt.decode(token["id_token"], keys, algorithms=["RS256"])
    assert id_token.header["alg"] == "RS256"
    claims = id_token.claims
    assert claims["iss"] == smart.base and claims["aud"] == smart.public_id and claims["sub"] == "alice"
    assert claims["fhirUser"] == f"{smart.base}/Patient/pa"
    me = httpx.get(claims["fhirUser"], headers={"Authorization": f"Bearer {token['access_token']}"})
    assert me.status_code == 200 and me.json()["id"] == "pa"


def test_token_response_headers_forbid_caching(smart: Smart) -> None:
    app, url, verifier = authorization_url(smart.ep, smart.public_id, "launch/patient patient/*.rs")
    app.close()
    location = browser_consent(smart.ep, url, "alice", PASSWORD)
    r = httpx.post(smart.ep.token, data={"grant_type": "authorization_code", "code": code_of(location)["code"],
                                         "redirect_uri": REDIRECT, "code_verifier": verifier,
                                         "client_id": smart.public_id})
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store" and r.headers["pragma"] == "no-cache"


def test_patient_picker_and_consent_deselection(smart: Smart) -> None:
    token = standalone_token(smart.ep, smart.public_id, "launch/patient patient/Observation.rs patient/Condition.rs",
                             "drwho", PASSWORD, patient="pb", keep=["launch/patient", "patient/Observation.rs"])
    assert token["patient"] == "pb"
    assert token["scope"].split() == ["launch/patient", "patient/Observation.rs"]
    with smart.fhir(token["access_token"]) as fhir:
        assert fhir.get("/Observation").json()["entry"][0]["resource"]["id"] == "ob-lab"
        assert fhir.get("/Condition").status_code == 403  # unticked on the consent page


def test_denied_consent_redirects_with_access_denied(smart: Smart) -> None:
    app, url, _ = authorization_url(smart.ep, smart.public_id, "launch/patient patient/*.rs")
    app.close()
    location = browser_consent(smart.ep, url, "alice", PASSWORD, decision="deny")
    params = code_of(location)
    assert params["error"] == "access_denied" and "code" not in params and params["state"]


def test_confidential_symmetric_client_authenticates_with_basic(smart: Smart) -> None:
    app = OAuth2Client(smart.confidential_id, smart.confidential_secret, redirect_uri=REDIRECT,
                       scope="launch/patient patient/*.rs", code_challenge_method="S256")
    from authlib.common.security import generate_token

    verifier = generate_token(64)
    url, _ = app.create_authorization_url(smart.ep.authorize, code_verifier=verifier, aud=smart.base)
    location = browser_consent(smart.ep, url, "alice", PASSWORD)
    token = app.fetch_token(smart.ep.token, authorization_response=location, code_verifier=verifier)
    app.close()
    assert token["patient"] == "pa"
    # without the secret the same kind of request is refused
    app2, url2, verifier2 = authorization_url(smart.ep, smart.confidential_id, "launch/patient patient/*.rs")
    app2.close()
    code = code_of(browser_consent(smart.ep, url2, "alice", PASSWORD))["code"]
    r = httpx.post(smart.ep.token, data={"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
                                         "code_verifier": verifier2, "client_id": smart.confidential_id})
    assert r.status_code == 400 and r.json()["error"] == "invalid_client"


# ---- EHR launch ---------------------------------------------------------------------------------------------------


def test_ehr_launch_from_the_built_in_launcher(smart: Smart) -> None:
    page = httpx.get(f"{smart.ep.root}/auth/launcher")
    assert page.status_code == 200 and smart.public_id in page.text
    r = httpx.post(f"{smart.ep.root}/auth/launcher", data={
        "username": "drwho", "password": PASSWORD, "client_id": smart.public_id, "patient": "pc",
        "encounter": "ea"})
    assert r.status_code == 303
    launch_params = code_of(r.headers["location"])
    assert r.headers["location"].startswith(LAUNCH_URL)
    assert launch_params["iss"] == smart.base
    # the app, launched, discovers the server from iss and asks for authorization with the launch id
    conf = httpx.get(f"{launch_params['iss']}/.well-known/smart-configuration").json()
    app, url, verifier = authorization_url(smart.ep, smart.public_id, "launch openid fhirUser patient/*.rs",
                                           launch=launch_params["launch"])
    assert url.startswith(conf["authorization_endpoint"])
    location = browser_consent(smart.ep, url, None, "")  # the EHR session has signed the user in already
    token = app.fetch_token(conf["token_endpoint"], authorization_response=location, code_verifier=verifier)
    app.close()
    assert token["patient"] == "pc" and token["encounter"] == "ea"
    assert token["need_patient_banner"] is False  # the EHR shows its own banner
    with smart.fhir(token["access_token"]) as fhir:
        ids = {e["resource"]["id"] for e in fhir.get("/Observation").json().get("entry", [])}
        assert ids == {"oc-vital"}


def test_unknown_launch_is_refused(smart: Smart) -> None:
    app, url, _ = authorization_url(smart.ep, smart.public_id, "launch patient/*.rs", launch="not-a-launch")
    app.close()
    r = httpx.get(url)
    assert r.status_code == 302
    assert code_of(r.headers["location"])["error"] == "invalid_request"


# ---- refresh ------------------------------------------------------------------------------------------------------


def test_refresh_rotates_and_may_narrow_but_not_widen(smart: Smart) -> None:
    scope = "launch/patient offline_access patient/Observation.rs patient/Condition.rs"
    app, token = standalone(smart.ep, smart.public_id, scope, "alice", PASSWORD)
    first_refresh = token["refresh_token"]
    refreshed = app.refresh_token(smart.ep.token, refresh_token=first_refresh)
    assert refreshed["access_token"] != token["access_token"]
    assert refreshed["refresh_token"] != first_refresh and refreshed["patient"] == "pa"
    assert isinstance(refreshed["expires_in"], int) and refreshed["token_type"] == "Bearer"
    narrower = app.refresh_token(smart.ep.token, refresh_token=refreshed["refresh_token"],
                                 scope="offline_access patient/Observation.rs")
    assert narrower["scope"] == "offline_access patient/Observation.rs"
    with smart.fhir(narrower["access_token"]) as fhir:
        assert fhir.get("/Observation").status_code == 200
        assert fhir.get("/Condition").status_code == 403
    r = httpx.post(smart.ep.token, data={"grant_type": "refresh_token", "refresh_token": narrower["refresh_token"],
                                         "client_id": smart.public_id,
                                         "scope": "offline_access patient/Observation.rs patient/*.cruds"})
    assert r.status_code == 400 and r.json()["error"] == "invalid_scope"
    # the first refresh token was spent by the rotation; using it again ends the whole grant (a copy is around)
    r = httpx.post(smart.ep.token, data={"grant_type": "refresh_token", "refresh_token": first_refresh,
                                         "client_id": smart.public_id})
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    r = httpx.post(smart.ep.token, data={"grant_type": "refresh_token", "refresh_token": narrower["refresh_token"],
                                         "client_id": smart.public_id})
    assert r.status_code == 400
    assert httpx.get(f"{smart.base}/Observation",
                     headers={"Authorization": f"Bearer {narrower['access_token']}"}).status_code == 401
    app.close()


# ---- backend services -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["RS384", "ES384"])
def test_backend_services_with_authlib_private_key_jwt(smart: Smart, alg: str) -> None:
    key = smart.backend_keys[alg]
    # SMART requires the assertion's header to name the key (kid) and its exp to be at most 5 minutes ahead
    # (authlib's default is an hour)
    auth = PrivateKeyJWT(smart.ep.token, alg=alg, headers={"kid": key.kid}, claims={"exp": int(time.time()) + 240})
    app = OAuth2Client(smart.backend_id, key, scope="system/Observation.rs", token_endpoint_auth_method=auth)
    token = app.fetch_token(smart.ep.token, grant_type="client_credentials")
    app.close()
    assert token["token_type"] == "Bearer" and token["scope"] == "system/Observation.rs"
    assert "refresh_token" not in token
    with smart.fhir(token["access_token"]) as fhir:
        assert len(fhir.get("/Observation").json()["entry"]) >= 4
        assert fhir.get("/Patient").status_code == 403


def test_backend_services_refusals(smart: Smart) -> None:
    rs = smart.backend_keys["RS384"]
    assertion = client_assertion(rs, "RS384", smart.backend_id, smart.ep.token, jti="fixed-jti-1")
    form = {"grant_type": "client_credentials", "scope": "system/Observation.rs",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": assertion}
    assert httpx.post(smart.ep.token, data=form).status_code == 200
    replay = httpx.post(smart.ep.token, data=form)
    assert replay.status_code == 400 and "replay" in replay.json()["error_description"]
    assert replay.json()["error"] == "invalid_client"
    # exp too far ahead, wrong aud, unregistered key, RS256, and scopes beyond the registration
    assert backend_token(smart.ep, rs, "RS384", smart.backend_id, "system/Observation.rs",
                         exp_in=3600).status_code == 400
    r = httpx.post(smart.ep.token, data={**form, "client_assertion": client_assertion(
        rs, "RS384", smart.backend_id, "http://elsewhere/token")})
    assert r.status_code == 400
    stranger = new_key("RS384")
    assert backend_token(smart.ep, stranger, "RS384", smart.backend_id, "system/Observation.rs").status_code == 400
    same_key_any_alg = RSAKey.import_key({k: v for k, v in rs.as_dict(private=True).items() if k != "alg"})
    rs256 = client_assertion(same_key_any_alg, "RS256", smart.backend_id, smart.ep.token)
    assert httpx.post(smart.ep.token, data={**form, "client_assertion": rs256}).status_code == 400
    r = httpx.post(smart.ep.token, data={**form, "client_assertion_type": "not_an_assertion_type"})
    assert r.status_code == 400 and r.json()["error"] == "invalid_client"
    r = httpx.post(smart.ep.token, data={**form, "grant_type": "not_a_grant_type"})
    assert r.status_code == 400 and r.json()["error"] == "unsupported_grant_type"
    # a wrong secret sent by Basic is 401 with WWW-Authenticate (RFC 6749 §5.2)
    r = httpx.post(smart.ep.token, data={"grant_type": "client_credentials", "scope": "system/*.rs"},
                   auth=(smart.confidential_id, "wrong"))
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Basic")
    r = backend_token(smart.ep, rs, "RS384", smart.backend_id, "patient/Observation.rs")
    assert r.status_code == 400 and r.json()["error"] == "invalid_scope"
    r = httpx.post(smart.ep.token, data={"grant_type": "client_credentials", "scope": "system/*.rs",
                                         "client_id": smart.public_id})
    assert r.status_code == 400 and r.json()["error"] == "unauthorized_client"


# ---- introspection and revocation --------------------------------------------------------------------------------


def _basic(smart: Smart) -> dict[str, str]:
    raw = f"{smart.confidential_id}:{smart.confidential_secret}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


def test_introspection(smart: Smart) -> None:
    token = standalone_token(smart.ep, smart.public_id, "launch/patient openid fhirUser patient/*.rs", "alice",
                             PASSWORD)
    r = httpx.post(smart.ep.introspect, data={"token": token["access_token"]}, headers=_basic(smart))
    assert r.status_code == 200
    info = r.json()
    assert info["active"] is True and info["client_id"] == smart.public_id
    assert set(info["scope"].split()) == set(token["scope"].split())
    assert info["patient"] == "pa" and info["fhirUser"] == f"{smart.base}/Patient/pa"
    assert info["exp"] > time.time() and info["username"] == "alice"
    r = httpx.post(smart.ep.introspect, data={"token": "not-a-token"}, headers=_basic(smart))
    assert r.json() == {"active": False}
    # a bearer token authorizes introspection too; nothing at all does not
    r = httpx.post(smart.ep.introspect, data={"token": token["access_token"]},
                   headers={"Authorization": f"Bearer {smart.system_token}"})
    assert r.json()["active"] is True
    assert httpx.post(smart.ep.introspect, data={"token": token["access_token"]}).status_code == 401


def test_revocation_of_access_and_refresh_tokens(smart: Smart) -> None:
    app, token = standalone(smart.ep, smart.public_id, "launch/patient offline_access patient/*.rs", "alice",
                            PASSWORD)
    with smart.fhir(token["access_token"]) as fhir:
        assert fhir.get("/Patient/pa").status_code == 200
        app.revoke_token(smart.ep.revoke, token=token["access_token"], token_type_hint="access_token")
        r = fhir.get("/Patient/pa")
        assert r.status_code == 401 and "invalid_token" in r.headers["www-authenticate"]
    introspected = httpx.post(smart.ep.introspect, data={"token": token["access_token"]}, headers=_basic(smart))
    assert introspected.json() == {"active": False}
    # revoking the refresh token ends the grant: the refresh token and every access token issued from it
    refreshed = app.refresh_token(smart.ep.token, refresh_token=token["refresh_token"])
    app.revoke_token(smart.ep.revoke, token=refreshed["refresh_token"], token_type_hint="refresh_token")
    r = httpx.post(smart.ep.token, data={"grant_type": "refresh_token", "refresh_token": refreshed["refresh_token"],
                                         "client_id": smart.public_id})
    assert r.status_code == 400
    assert httpx.get(f"{smart.base}/Patient/pa",
                     headers={"Authorization": f"Bearer {refreshed['access_token']}"}).status_code == 401
    app.close()


# ---- negative cases -------------------------------------------------------------------------------------------------


def test_no_token_bad_token_and_wrong_scheme_are_401(smart: Smart) -> None:
    r = httpx.get(f"{smart.base}/Patient")
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer realm=")
    assert r.json()["issue"][0]["code"] == "login"
    for header in ("Bearer nonsense", "Basic Zm9vOmJhcg==", "Bearer"):
        r = httpx.get(f"{smart.base}/Patient", headers={"Authorization": header})
        assert r.status_code == 401, header
        assert r.json()["resourceType"] == "OperationOutcome"


def test_expired_token_is_401(smart: Smart) -> None:
    token = standalone_token(smart.ep, smart.public_id, "launch/patient patient/*.rs", "alice", PASSWORD)
    expire_token(smart.db, token_hash(token["access_token"]))
    r = httpx.get(f"{smart.base}/Patient/pa", headers={"Authorization": f"Bearer {token['access_token']}"})
    assert r.status_code == 401 and 'error="invalid_token"' in r.headers["www-authenticate"]


def _authorize_error(smart: Smart, **params: str) -> httpx.Response:
    base = {"response_type": "code", "client_id": smart.public_id, "redirect_uri": REDIRECT,
            "scope": "launch/patient patient/*.rs", "state": "s123", "aud": smart.base,
            "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM", "code_challenge_method": "S256"}
    base.update(params)
    return httpx.get(smart.ep.authorize, params={k: v for k, v in base.items() if v != "-"})


def test_authorize_refusals(smart: Smart) -> None:
    for params, error in (({"code_challenge": "-", "code_challenge_method": "-"}, "invalid_request"),
                          ({"code_challenge_method": "plain"}, "invalid_request"),
                          ({"response_type": "token"}, "unsupported_response_type"),
                          ({"scope": "system/*.rs"}, "invalid_scope")):
        r = _authorize_error(smart, **params)
        assert r.status_code == 302, params
        got = code_of(r.headers["location"])
        assert got["error"] == error and got["state"] == "s123", params
    # shown to the user, never redirected: wrong aud, unknown client, unregistered redirect URI
    for params in ({"aud": "http://elsewhere.example/fhir"}, {"client_id": "nobody"},
                   {"redirect_uri": "http://evil.example/cb"}):
        r = _authorize_error(smart, **params)
        assert r.status_code == 400 and "location" not in r.headers, params


def test_token_refusals(smart: Smart) -> None:
    def code_and_verifier() -> tuple[str, str]:
        app, url, verifier = authorization_url(smart.ep, smart.public_id, "launch/patient patient/*.rs")
        app.close()
        return code_of(browser_consent(smart.ep, url, "alice", PASSWORD))["code"], verifier

    def exchange(code: str, verifier: str | None, **extra: str) -> httpx.Response:
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
                "client_id": smart.public_id, **extra}
        if verifier is not None:
            form["code_verifier"] = verifier
        return httpx.post(smart.ep.token, data=form)

    code, verifier = code_and_verifier()
    r = exchange(code, None)
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"  # missing verifier
    code, verifier = code_and_verifier()
    r = exchange(code, verifier[:-1] + ("A" if verifier[-1] != "A" else "B"))
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"  # wrong verifier
    code, verifier = code_and_verifier()
    assert exchange(code, verifier, redirect_uri="http://app.example/other").status_code == 400
    code, verifier = code_and_verifier()
    first = exchange(code, verifier)
    assert first.status_code == 200
    replay = exchange(code, verifier)
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    # a replayed code revokes what it was exchanged for
    assert httpx.get(f"{smart.base}/Patient/pa",
                     headers={"Authorization": f"Bearer {first.json()['access_token']}"}).status_code == 401
    assert exchange("made-up-code", verifier).status_code == 400
    r = httpx.post(smart.ep.token, data={"grant_type": "password", "username": "alice", "password": PASSWORD,
                                         "client_id": smart.public_id})
    assert r.status_code == 400 and r.json()["error"] == "unsupported_grant_type"


def test_wrong_password_shows_the_login_page_again(smart: Smart) -> None:
    app, url, _ = authorization_url(smart.ep, smart.public_id, "launch/patient patient/*.rs")
    app.close()
    with httpx.Client() as browser:
        html = browser.get(url).text
        r = browser.post(f"{smart.ep.root}/auth/login", data={"pending": pending_of(html), "username": "alice",
                                                              "password": "wrong"})
        assert r.status_code == 401 and "wrong user name or password" in r.text


def test_backend_client_keys_from_a_jwks_url(smart: Smart) -> None:
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from smart_auth.cli import register_client

    key = new_key("ES384")
    body = json.dumps({"keys": [key.as_dict(private=False)]}).encode()

    class Jwks(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Jwks)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        client, _ = register_client(smart.db, "JWKS URL backend", kind="asymmetric", redirect_uris=[],
                                    scope="system/Patient.rs",
                                    jwks_url=f"http://127.0.0.1:{httpd.server_address[1]}/jwks.json")
        got = backend_token(smart.ep, key, "ES384", client.client_id, "system/Patient.rs")
        assert got.status_code == 200, got.text
        with smart.fhir(got.json()["access_token"]) as fhir:
            assert {e["resource"]["id"] for e in fhir.get("/Patient").json()["entry"]} >= {"pa", "pb", "pc"}
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_authorize_by_post(smart: Smart) -> None:
    r = httpx.post(smart.ep.authorize, data={
        "response_type": "code", "client_id": smart.public_id, "redirect_uri": REDIRECT, "state": "p1",
        "scope": "launch/patient patient/*.rs", "aud": smart.base, "code_challenge_method": "S256",
        "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"})
    assert r.status_code == 200 and "Sign in" in r.text


def test_asymmetric_client_in_the_authorization_code_flow(smart: Smart) -> None:
    from smart_auth.cli import register_client
    from tests.smart.oauth import public_jwks

    key = new_key("RS384")
    client, _ = register_client(smart.db, "Asymmetric web app", kind="asymmetric", redirect_uris=[REDIRECT],
                                scope="launch/patient patient/*.rs", jwks=public_jwks(key))
    from authlib.common.security import generate_token

    auth = PrivateKeyJWT(smart.ep.token, alg="RS384", headers={"kid": key.kid},
                         claims={"exp": int(time.time()) + 240})
    app = OAuth2Client(client.client_id, key, redirect_uri=REDIRECT, scope="launch/patient patient/*.rs",
                       code_challenge_method="S256", token_endpoint_auth_method=auth)
    verifier = generate_token(64)
    url, _ = app.create_authorization_url(smart.ep.authorize, code_verifier=verifier, aud=smart.base)
    location = browser_consent(smart.ep, url, "alice", PASSWORD)
    token = app.fetch_token(smart.ep.token, authorization_response=location, code_verifier=verifier)
    app.close()
    assert token["patient"] == "pa"


def test_a_patient_user_cannot_pick_or_launch_another_patient(smart: Smart) -> None:
    r = httpx.post(f"{smart.ep.root}/auth/launcher", data={
        "username": "alice", "password": PASSWORD, "client_id": smart.public_id, "patient": "pb"})
    assert r.status_code == 403 and "location" not in r.headers
    app, url, _ = authorization_url(smart.ep, smart.public_id, "launch/patient patient/*.rs")
    app.close()
    with httpx.Client() as browser:
        html = browser.get(url).text
        consent = browser.post(f"{smart.ep.root}/auth/login", data={"pending": pending_of(html), "username": "alice",
                                                                    "password": PASSWORD}).text
        assert "Allow access?" in consent and "Patient/pa" in consent  # her own record, no picker
        r = browser.post(f"{smart.ep.root}/auth/patient", data={"pending": pending_of(consent), "patient": "pb"})
        assert r.status_code == 403


def test_an_ehr_launch_cannot_be_taken_over_by_a_patient_user(smart: Smart) -> None:
    r = httpx.post(f"{smart.ep.root}/auth/launcher", data={
        "username": "drwho", "password": PASSWORD, "client_id": smart.public_id, "patient": "pb"})
    launch = code_of(r.headers["location"])["launch"]
    app, url, _ = authorization_url(smart.ep, smart.public_id, "launch patient/*.rs", launch=launch)
    app.close()
    with httpx.Client() as browser:
        consent = browser.get(url).text
        pending = pending_of(consent)
        # alice signs in over the clinician's pending authorization: the consent is refused
        browser.post(f"{smart.ep.root}/auth/login", data={"pending": pending, "username": "alice",
                                                          "password": PASSWORD})
        r = browser.post(f"{smart.ep.root}/auth/consent", data={"pending": pending, "scope": ["launch", "patient/*.rs"],
                                                                "decision": "allow"})
        assert r.status_code == 403 and "location" not in r.headers


def test_401_follows_the_requested_format(smart: Smart) -> None:
    r = httpx.get(f"{smart.base}/Patient", headers={"Accept": "application/fhir+xml"})
    assert r.status_code == 401
    assert r.headers["content-type"].startswith("application/fhir+xml")
    assert "<OperationOutcome" in r.text
    assert httpx.head(f"{smart.base}/Patient/pa").status_code == 401
    assert httpx.head(f"{smart.base}/metadata").status_code == 200
