"""Aegis's SMART App Launch 2.x authorization server: discovery, OAuth endpoints, clients, users, keys and tokens.

The FHIR side only sees :class:`fhir_server.authz.grant.Grant`, built from a token by :mod:`smart_auth.tokens`;
how scopes become search-tree constraints lives in :mod:`fhir_server.authz`.
"""
