"""Aegis FHIR server: ASGI app, REST interactions, storage and search engines."""

__version__ = "0.1.0"
