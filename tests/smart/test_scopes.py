"""Scope parsing (v1, v2, granular) and the grant → search-tree constraint, without a server."""

from __future__ import annotations

import pytest

from fhir_server.authz.constraints import constraint, system_constraint
from fhir_server.authz.grant import Grant
from fhir_server.authz.step import needed
from fhir_server.http.request import FhirRequest
from fhir_server.search.tree import And, CompartmentQ, MatchAll, MatchNone, Or, TypeIn
from smart_auth.scopes import parse_clinical


@pytest.mark.parametrize(("text", "context", "rtype", "actions"), [
    ("patient/Observation.read", "patient", "Observation", "rs"),
    ("user/*.*", "user", "*", "cruds"),
    ("system/*.write", "system", "*", "cud"),
    ("patient/Observation.rs", "patient", "Observation", "rs"),
    ("user/Patient.cruds", "user", "Patient", "cruds"),
    ("system/Encounter.s", "system", "Encounter", "s"),
])
def test_v1_and_v2_scopes(text: str, context: str, rtype: str, actions: str) -> None:
    s = parse_clinical(text)
    assert s is not None and (s.context, s.rtype, s.actions) == (context, rtype, actions)


@pytest.mark.parametrize("text", ["patient/Observation.sr", "patient/Observation.rr", "patient/Nope.rs",
                                  "patient/Observation.", "admin/Observation.rs", "openid",
                                  "patient/Observation.read?category=x", "patient/Observation.rsx"])
def test_malformed_scopes_grant_nothing(text: str) -> None:
    assert parse_clinical(text) is None


def test_granular_scope_keeps_its_query() -> None:
    s = parse_clinical("patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category"
                       "|laboratory")
    assert s is not None and s.query == (("category", "http://terminology.hl7.org/CodeSystem/observation-category|"
                                                       "laboratory"),)


def test_patient_context_is_the_compartment() -> None:
    grant = Grant.from_scope_text("patient/*.rs", patient="p1")
    assert constraint(grant, "Observation", "s") == CompartmentQ("Patient", "p1", "Observation")
    assert constraint(grant, "Practitioner", "s") == MatchAll()  # shared reference data
    assert constraint(grant, "Bundle", "s") == MatchNone()  # outside the compartment, could hold anyone's data
    assert constraint(grant, "Observation", "c") == MatchNone()  # no write permission
    assert constraint(Grant.from_scope_text("patient/*.rs"), "Observation", "s") == MatchNone()  # no patient


def test_user_context_depends_on_the_user() -> None:
    assert constraint(Grant.from_scope_text("user/*.rs", fhir_user="Practitioner/d"), "Observation", "s") == MatchAll()
    assert constraint(Grant.from_scope_text("user/*.rs", fhir_user="Patient/p2"), "Observation", "s") == \
        CompartmentQ("Patient", "p2", "Observation")
    assert constraint(Grant.from_scope_text("user/*.rs", fhir_user="RelatedPerson/r"), "Observation", "s") == \
        MatchNone()


def test_granular_scopes_are_or_ed_and_and_ed_with_the_context() -> None:
    grant = Grant.from_scope_text(
        "patient/Observation.rs?category=laboratory patient/Observation.rs?category=vital-signs", patient="p1")
    node = constraint(grant, "Observation", "s")
    assert isinstance(node, Or) and len(node.items) == 2
    assert all(isinstance(item, And) and item.items[0] == CompartmentQ("Patient", "p1", "Observation")
               for item in node.items)
    # a query that does not bind grants nothing
    assert constraint(Grant.from_scope_text("patient/Observation.rs?nonsense=1", patient="p1"), "Observation",
                      "s") == MatchNone()


def test_system_level_constraint_is_per_type() -> None:
    assert system_constraint(Grant.from_scope_text("system/*.rs"), "s") == MatchAll()
    node = system_constraint(Grant.from_scope_text("system/Observation.rs system/Patient.rs"), "s")
    assert node == TypeIn(("Observation", "Patient"))
    node = system_constraint(Grant.from_scope_text("patient/Observation.rs", patient="p1"), "s")
    assert node == And((TypeIn(("Observation",)), CompartmentQ("Patient", "p1", "Observation")))


@pytest.mark.parametrize(("method", "path", "need"), [
    ("GET", "Patient/1", ("Patient", "r")),
    ("HEAD", "Patient/1", ("Patient", "r")),
    ("GET", "Patient", ("Patient", "s")),
    ("POST", "Patient/_search", ("Patient", "s")),
    ("POST", "Patient", ("Patient", "c")),
    ("PUT", "Patient/1", ("Patient", "u")),
    ("PUT", "Patient", ("Patient", "u")),
    ("PATCH", "Patient/1", ("Patient", "u")),
    ("DELETE", "Patient/1", ("Patient", "d")),
    ("DELETE", "Patient", ("Patient", "d")),
    ("GET", "Patient/1/_history", ("Patient", "r")),
    ("GET", "Patient/1/_history/2", ("Patient", "r")),
    ("GET", "Patient/_history", ("Patient", "s")),
    ("GET", "_history", (None, "s")),
    ("GET", "", (None, "s")),
    ("POST", "_search", (None, "s")),
    ("GET", "Patient/1/$everything", ("Patient", "rs")),
    ("GET", "Patient/1/Observation", ("Observation", "s")),
    ("GET", "metadata", None),
    ("POST", "", None),
])
def test_the_permission_each_interaction_needs(method: str, path: str, need: tuple[str | None, str] | None) -> None:
    req = FhirRequest(method, [s for s in path.split("/") if s], [], {}, b"", "http://x/fhir")
    assert needed(req) == need
