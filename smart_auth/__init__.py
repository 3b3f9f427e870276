"""Aegis's SMART App Launch 2.x authorization server: discovery, OAuth endpoints, clients, users, keys and tokens.

The FHIR side only sees :class:`fhir_server.authz.grant.Grant`, built from a token by :mod:`smart_auth.tokens`;
how scopes become search-tree constraints lives in :mod:`fhir_server.authz`. Clients, users, keys, codes and tokens
are kept by :mod:`smart_auth.db` next to the configured FHIR store (``DATA_DIR/auth.db``, or ``auth_*`` collections
of the MongoDB database, shared by every server process on it).

FHIR-side message ids (range AEGIS-500..549): AEGIS-500 no access token (401), AEGIS-501 invalid, expired or revoked
token (401), AEGIS-520 the token does not grant the interaction or the resource (403). The OAuth endpoints answer
RFC 6749 errors (``{"error", "error_description"}``), not OperationOutcomes.
"""
