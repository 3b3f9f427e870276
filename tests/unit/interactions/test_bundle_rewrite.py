"""The one-walk reference rewrite of transaction Bundles (``bundle._rewrite``) against the two walks it replaced:
collect the conditional references, resolve them, then copy the resource rewriting ``mapping`` first, the resolved
conditional references next."""

from __future__ import annotations

import copy
import re
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from fhir_server.interactions.bundle import _fill_conditional, _rewrite

_CONDITIONAL_REF = re.compile(r"[A-Z][A-Za-z]+\?.+")


def _old_conditional_refs(node: Any, found: set[str]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str) and _CONDITIONAL_REF.fullmatch(value):
                found.add(value)
            else:
                _old_conditional_refs(value, found)
    elif isinstance(node, list):
        for v in node:
            _old_conditional_refs(v, found)


def _old_rewrite(node: Any, mapping: dict[str, str], conditional: dict[str, str]) -> Any:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "reference" and isinstance(value, str):
                out[key] = mapping.get(value) or conditional.get(value) or value
            else:
                out[key] = _old_rewrite(value, mapping, conditional)
        return out
    if isinstance(node, list):
        return [_old_rewrite(v, mapping, conditional) for v in node]
    return node


REFS = ["urn:uuid:1", "urn:uuid:2", "Patient/9", "Patient?identifier=a|1", "Patient?name=x\ny", "Encounter?x=1",
        "Patient?", "#c1", ""]
MAPPING = {"urn:uuid:1": "Patient/p1", "Encounter?x=1": "Encounter/e1"}  # a fullUrl that looks conditional, too
RESOLVED = {"Patient?identifier=a|1": "Patient/r1", "Encounter?x=1": "Encounter/r2"}

scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.sampled_from(REFS),
                    st.text(max_size=5))
keys = st.sampled_from(["reference", "subject", "value", "a", "b"])
trees = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
                     max_leaves=30)


def _check(resources: list[Any]) -> None:
    originals = copy.deepcopy(resources)
    old_found: set[str] = set()
    for r in resources:
        _old_conditional_refs(r, old_found)
    conditional = {ref: RESOLVED.get(ref, ref.split("?")[0] + "/z") for ref in old_found}
    expected = [_old_rewrite(r, MAPPING, conditional) for r in resources]

    found: set[str] = set()
    sites: list[tuple[dict[str, Any], str]] = []
    got = [_rewrite(r, MAPPING, found, sites) for r in resources]
    assert found == old_found
    _fill_conditional(sites, {ref: conditional[ref] for ref in found})
    assert got == expected
    assert resources == originals  # the input is never modified


@settings(max_examples=400, deadline=None)
@given(st.lists(trees, min_size=1, max_size=3))
def test_one_walk_equals_two_walks(resources: list[Any]) -> None:
    _check(resources)


def test_bundle_shaped_resources() -> None:
    obs = {"resourceType": "Observation", "subject": {"reference": "urn:uuid:1"},
           "performer": [{"reference": "Patient?identifier=a|1"}, {"reference": "Encounter?x=1"}],
           "hasMember": [{"reference": "urn:uuid:2", "display": "x"}], "valueQuantity": {"value": 1}}
    _check([obs, {"resourceType": "Patient", "link": [{"other": {"reference": "Patient?identifier=a|1"}}]}])
