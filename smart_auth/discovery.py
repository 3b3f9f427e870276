"""``.well-known/smart-configuration`` and ``.well-known/openid-configuration``: absolute URLs, real capabilities."""

from __future__ import annotations

from typing import Any

SCOPES = ["openid", "fhirUser", "profile", "launch", "launch/patient", "offline_access", "online_access",
          "patient/*.rs", "patient/*.cruds", "user/*.rs", "user/*.cruds", "system/*.rs", "system/*.cruds",
          "patient/*.read", "patient/*.write", "user/*.read", "user/*.write", "system/*.read", "system/*.write"]
CAPABILITIES = ["launch-ehr", "launch-standalone", "authorize-post", "client-public", "client-confidential-symmetric",
                "client-confidential-asymmetric", "context-passthrough-banner", "context-passthrough-style",
                "context-ehr-patient", "context-ehr-encounter", "context-standalone-patient", "permission-offline",
                "permission-online", "permission-patient", "permission-user", "permission-v1", "permission-v2",
                "sso-openid-connect"]


def endpoints(root: str) -> dict[str, str]:
    """The OAuth endpoint URLs under the server's ``root`` (the FHIR base without ``/fhir``)."""
    return {"authorize": f"{root}/auth/authorize", "token": f"{root}/auth/token",
            "introspect": f"{root}/auth/introspect", "revoke": f"{root}/auth/revoke", "jwks": f"{root}/auth/jwks",
            "launcher": f"{root}/auth/launcher"}


def smart_configuration(base: str, root: str) -> dict[str, Any]:
    e = endpoints(root)
    return {
        "issuer": base,
        "jwks_uri": e["jwks"],
        "authorization_endpoint": e["authorize"],
        "token_endpoint": e["token"],
        "introspection_endpoint": e["introspect"],
        "revocation_endpoint": e["revoke"],
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384"],
        "scopes_supported": SCOPES,
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
        "capabilities": CAPABILITIES,
    }


def openid_configuration(base: str, root: str) -> dict[str, Any]:
    e = endpoints(root)
    return {
        "issuer": base,
        "authorization_endpoint": e["authorize"],
        "token_endpoint": e["token"],
        "jwks_uri": e["jwks"],
        "introspection_endpoint": e["introspect"],
        "revocation_endpoint": e["revoke"],
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": SCOPES,
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt"],
        "code_challenge_methods_supported": ["S256"],
        "claims_supported": ["iss", "sub", "aud", "exp", "iat", "fhirUser", "nonce"],
    }
