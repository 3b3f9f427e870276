"""The CapabilityStatement, generated from the routing table and the criteria the store supports.

Nothing here is a hand-written claim: interactions come from :mod:`fhir_server.routing`, search parameters from
:mod:`fhir_server.search.criteria`, resource types from the packaged R4 definitions.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from fhir_server import __version__
from fhir_server.routing import CONDITIONAL, SYSTEM_INTERACTIONS, TYPE_INTERACTIONS
from fhir_server.search.criteria import SUPPORTED
from resources import jsonio
from resources.model import element, resource_types

_SEARCH_PARAM_DOCS = {
    "_id": ("token", "http://hl7.org/fhir/SearchParameter/Resource-id", "Logical id of the resource"),
    "identifier": ("token", "", "Business identifier ([system|]value)"),
}


def _search_params(rtype: str) -> list[dict[str, Any]]:
    out = []
    for code in SUPPORTED:
        if code == "identifier" and element(rtype, "identifier") is None:
            continue
        kind, definition, doc = _SEARCH_PARAM_DOCS[code]
        param: dict[str, Any] = {"name": code, "type": kind, "documentation": doc}
        if definition:
            param["definition"] = definition
        elif code == "identifier":
            param["definition"] = f"http://hl7.org/fhir/SearchParameter/{rtype}-identifier"
        out.append(param)
    return out


@lru_cache(maxsize=8)
def _statement_bytes(base: str) -> bytes:
    resources = []
    for rtype in sorted(resource_types()):
        resources.append({
            "type": rtype,
            "profile": f"http://hl7.org/fhir/StructureDefinition/{rtype}",
            "interaction": [{"code": code} for code in TYPE_INTERACTIONS],
            "versioning": "versioned-update",
            "readHistory": True,
            "updateCreate": True,
            **CONDITIONAL,
            "referencePolicy": ["literal", "local"],
            "searchParam": _search_params(rtype),
        })
    statement = {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-25",
        "publisher": "Aegis",
        "kind": "instance",
        "software": {"name": "Aegis", "version": __version__},
        "implementation": {"description": "Aegis FHIR R4 server", "url": base},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "application/fhir+xml"],
        "patchFormat": ["application/json-patch+json", "application/fhir+json", "application/fhir+xml"],
        "rest": [{
            "mode": "server",
            "resource": resources,
            "interaction": [{"code": code} for code in SYSTEM_INTERACTIONS],
        }],
    }
    return jsonio.dumps(statement)


def capability_statement(base: str) -> bytes:
    return _statement_bytes(base)
