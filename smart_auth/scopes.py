"""SMART scopes as text → typed scopes: clinical scopes v1 and v2 (with granular queries), launch/identity scopes.

``patient/Observation.read`` (v1) and ``patient/Observation.rs`` (v2) mean the same; v1 ``write`` is v2 ``cud``
and ``*`` is ``cruds``. A v2 scope may carry a query (``patient/Observation.rs?category=laboratory``) that narrows
it; the query is kept as search pairs and bound by :mod:`fhir_server.authz.constraints`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl

from resources.model import is_resource_type

__all__ = ["ClinicalScope", "ALL_ACTIONS", "parse_clinical", "split", "is_known_scope", "narrower_or_equal"]

ALL_ACTIONS = "cruds"
CONTEXTS = ("patient", "user", "system")
IDENTITY_SCOPES = frozenset({"openid", "fhirUser", "profile", "launch", "launch/patient", "launch/encounter",
                             "offline_access", "online_access"})
_CLINICAL = re.compile(r"^(patient|user|system)/(\*|[A-Z][A-Za-z]+)\.([a-z*]+)(\?.*)?$")
_V1 = {"read": "rs", "write": "cud", "*": "cruds"}


@dataclass(frozen=True, slots=True)
class ClinicalScope:
    """One clinical scope: context, resource type (``*`` for all), actions (a subset of ``cruds``) and query."""

    context: str  # patient | user | system
    rtype: str  # a resource type or "*"
    actions: str  # letters of c r u d s, in that order
    query: tuple[tuple[str, str], ...] = ()
    text: str = ""

    def covers(self, rtype: str) -> bool:
        return self.rtype == "*" or self.rtype == rtype

    def allows(self, rtype: str, actions: str) -> bool:
        """Whether this scope grants any of ``actions`` on ``rtype``."""
        return self.covers(rtype) and any(a in self.actions for a in actions)


def split(text: str | None) -> list[str]:
    """The scope tokens of a space-separated scope string, order kept, duplicates dropped."""
    seen: list[str] = []
    for token in (text or "").split():
        if token not in seen:
            seen.append(token)
    return seen


def _v2_actions(perm: str) -> str | None:
    # v2 permissions must be a non-empty subsequence of "cruds", each letter at most once and in that order
    at = 0
    for letter in perm:
        found = ALL_ACTIONS.find(letter, at)
        if found < 0:
            return None
        at = found + 1
    return perm or None


def parse_clinical(token: str) -> ClinicalScope | None:
    """A clinical scope, or None when ``token`` is not one (identity scopes, unknown text)."""
    m = _CLINICAL.match(token)
    if m is None:
        return None
    context, rtype, perm, query = m.groups()
    if rtype != "*" and not is_resource_type(rtype):
        return None
    if perm in _V1:
        if query:
            return None  # queries are a v2 feature
        actions: str | None = _V1[perm]
    else:
        actions = _v2_actions(perm)
    if actions is None:
        return None
    pairs = tuple(parse_qsl(query[1:], keep_blank_values=True)) if query else ()
    if query and not pairs:
        return None
    return ClinicalScope(context, rtype, actions, pairs, token)


def is_known_scope(token: str) -> bool:
    return token in IDENTITY_SCOPES or parse_clinical(token) is not None


def narrower_or_equal(requested: list[str], granted: list[str]) -> bool:
    """Whether every requested scope token was granted (a refresh may narrow a grant, never widen it)."""
    return set(requested) <= set(granted)
