"""The CapabilityStatement, generated from the routing table and the criteria the store supports.

Nothing here is a hand-written claim: interactions come from :mod:`fhir_server.routing`, search parameters from
:mod:`fhir_server.search.criteria`, resource types from the packaged R4 definitions.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from fhir_server import __version__
from fhir_server.routing import CONDITIONAL, OPERATIONS, SYSTEM_INTERACTIONS, TYPE_INTERACTIONS
from fhir_server.search.registry import params_for
from resources import jsonio
from resources.model import resource_types

_BUILTIN_PARAMS = (
    ("_id", "token", "http://hl7.org/fhir/SearchParameter/Resource-id", "Logical id of the resource"),
    ("_list", "special", "", "Resources listed in the List with this id"),
    ("_content", "string", "", "Words anywhere in the resource's text"),
)


def _search_params(rtype: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for code, kind, definition, doc in _BUILTIN_PARAMS:
        param: dict[str, Any] = {"name": code, "type": kind, "documentation": doc}
        if definition:
            param["definition"] = definition
        out.append(param)
    if rtype not in ("Bundle", "Binary", "Parameters"):
        out.append({"name": "_text", "type": "string", "documentation": "Words in the narrative"})
    for code, p in sorted(params_for(rtype).items()):
        if code == "_id":
            continue
        out.append({"name": code, "definition": p.url, "type": p.type})
    return out


def _reference_codes(rtype: str) -> list[str]:
    return [code for code, p in sorted(params_for(rtype).items()) if p.type == "reference"]


def _rev_includes(rtype: str) -> dict[str, list[str]]:
    found = sorted(f"{source}:{code}" for source in resource_types() for code, p in params_for(source).items()
                   if p.type == "reference" and rtype in p.targets)
    return {"searchRevInclude": found} if found else {}


def _security(base: str) -> dict[str, Any]:
    """SMART on FHIR: the oauth-uris extension names the same endpoints as .well-known/smart-configuration."""
    from smart_auth.discovery import endpoints

    e = endpoints(base.rsplit("/fhir", 1)[0])
    return {
        "cors": True,
        "service": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                                 "code": "SMART-on-FHIR"}], "text": "OAuth2 using SMART-on-FHIR profile"}],
        "extension": [{
            "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
            "extension": [{"url": name, "valueUri": e[key]} for name, key in
                          (("authorize", "authorize"), ("token", "token"), ("introspect", "introspect"),
                           ("revoke", "revoke"))],
        }],
        "description": "SMART App Launch 2.x; see .well-known/smart-configuration",
    }


@lru_cache(maxsize=8)
def _statement_bytes(base: str, secured: bool = False) -> bytes:
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
            "searchInclude": ["*"] + [f"{rtype}:{code}" for code in _reference_codes(rtype)],
            **_rev_includes(rtype),
            "searchParam": _search_params(rtype),
            **({"operation": [{"name": name, "definition": f"http://hl7.org/fhir/OperationDefinition/{rtype}-{name}"}
                              for name, types in OPERATIONS.items() if rtype in types]}
               if any(rtype in types for types in OPERATIONS.values()) else {}),
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
            **({"security": _security(base)} if secured else {}),
            "resource": resources,
            "interaction": [{"code": code} for code in SYSTEM_INTERACTIONS],
        }],
    }
    return jsonio.dumps(statement)


def capability_statement(base: str, secured: bool = False) -> bytes:
    return _statement_bytes(base, secured)
