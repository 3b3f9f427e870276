"""Grant → search-tree constraint for one resource type and a set of actions.

The constraint is built only from nodes every backend already renders: ``CompartmentQ`` (expanded by the rewrite
passes into reference conditions and ``IdIn``), ``TypeIn``, ``And``/``Or``, ``MatchAll``/``MatchNone``, and the bound
tree of a granular scope's query (``patient/Observation.rs?category=laboratory``), bound by the same binder as a
search. A resource is inside the grant iff it matches the constraint; a query is constrained by AND-ing it in.

Context rules (where SMART leaves the choice to the server):

* ``system/`` scopes: no context restriction.
* ``patient/`` scopes: the launch patient's compartment (the official Patient CompartmentDefinition, the Patient
  itself included). Types outside that compartment are reachable only when they are shared reference data
  (:data:`SHARED_TYPES`: practitioners, organisations, locations, medications, terminology…); any other type
  (a stored Bundle, a Group of patients, …) could carry other patients' data and is refused.
* ``user/`` scopes: a user whose ``fhirUser`` is a Patient is held to that patient's compartment like a patient
  scope; a RelatedPerson user gets nothing (no model yet of whom they act for); any other user (practitioners,
  staff, users without ``fhirUser``) is not restricted by context — Aegis has no care-team model yet.
"""

from __future__ import annotations

from functools import lru_cache

from fhir_server.authz.grant import Grant
from fhir_server.search.compartments import members
from fhir_server.search.tree import And, CompartmentQ, MatchAll, MatchNone, Node, Or, TypeIn
from resources.model import resource_types
from smart_auth.scopes import ClinicalScope

__all__ = ["SHARED_TYPES", "constraint", "system_constraint", "is_all", "is_none"]

SHARED_TYPES = frozenset({
    "Practitioner", "PractitionerRole", "Organization", "Location", "HealthcareService", "Endpoint", "Medication",
    "Substance", "CodeSystem", "ValueSet", "ConceptMap", "StructureDefinition", "SearchParameter", "Questionnaire",
    "OperationDefinition", "CapabilityStatement", "NamingSystem", "Library", "PlanDefinition", "ActivityDefinition",
})


@lru_cache(maxsize=1)
def _patient_compartment_types() -> frozenset[str]:
    return frozenset(members("Patient")) | {"Patient"}


def is_all(node: Node) -> bool:
    return isinstance(node, MatchAll)


def is_none(node: Node) -> bool:
    return isinstance(node, MatchNone)


def _any(nodes: list[Node]) -> Node:
    kept = [n for n in nodes if not is_none(n)]
    if not kept:
        return MatchNone()
    if any(is_all(n) for n in kept):
        return MatchAll()
    return kept[0] if len(kept) == 1 else Or(tuple(kept))


def _all(nodes: list[Node]) -> Node:
    kept = [n for n in nodes if not is_all(n)]
    if any(is_none(n) for n in kept):
        return MatchNone()
    if not kept:
        return MatchAll()
    return kept[0] if len(kept) == 1 else And(tuple(kept))


def _patient_context(pid: str | None, rtype: str) -> Node:
    if not pid:
        return MatchNone()
    if rtype in _patient_compartment_types():
        return CompartmentQ("Patient", pid, rtype)
    return MatchAll() if rtype in SHARED_TYPES else MatchNone()


def _context(grant: Grant, scope: ClinicalScope, rtype: str) -> Node:
    if scope.context == "system":
        return MatchAll()
    if scope.context == "patient":
        return _patient_context(grant.patient, rtype)
    # user/: a patient user sees their own compartment; other users are not restricted by context
    user = grant.fhir_user or ""
    if user.startswith("Patient/"):
        return _patient_context(user.split("/", 1)[1], rtype)
    if user.startswith("RelatedPerson/"):
        return MatchNone()  # no model yet of whom a related person may act for: fail closed
    return MatchAll()


@lru_cache(maxsize=1024)
def _granular(rtype: str, query: tuple[tuple[str, str], ...]) -> Node:
    """The bound tree of a granular scope's query on ``rtype``; a query that does not bind grants nothing."""
    if not query:
        return MatchAll()
    from fhir_server.search.bind import bind
    from fhir_server.search.request import parse_request
    from resources.outcome import FhirError

    try:
        bound = bind(rtype, parse_request(list(query)), strict=True)
    except FhirError:
        return MatchNone()
    return bound.tree


def constraint(grant: Grant, rtype: str, actions: str) -> Node:
    """What a ``rtype`` resource must match for one of ``actions`` to be allowed (unprepared tree)."""
    return _any([_all([_context(grant, s, rtype), _granular(rtype, s.query)])
                 for s in grant.scopes if s.allows(rtype, actions)])


def system_constraint(grant: Grant, actions: str, types: tuple[str, ...] | None = None) -> Node:
    """The constraint of a search over several types (system level): per type, ``TypeIn`` AND its constraint."""
    named = {s.rtype for s in grant.scopes if s.rtype != "*" and any(a in s.actions for a in actions)}
    wildcard = any(s.rtype == "*" and any(a in s.actions for a in actions) for s in grant.scopes)
    candidates = sorted(resource_types()) if wildcard else sorted(named)
    if types:
        candidates = [t for t in candidates if t in types]
    free: list[str] = []
    parts: list[Node] = []
    for rtype in candidates:
        c = constraint(grant, rtype, actions)
        if is_all(c):
            free.append(rtype)
        elif not is_none(c):
            parts.append(And((TypeIn((rtype,)), c)))
    if free and not parts and (types is not None and set(free) >= set(types) or
                               types is None and len(free) == len(resource_types())):
        return MatchAll()
    if free:
        parts.insert(0, TypeIn(tuple(free)))
    return _any(parts)
