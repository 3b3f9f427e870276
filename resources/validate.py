"""Validation of incoming resources against the R4 4.0.1 structure definitions.

Structure (element names, cardinality, primitive formats, choice types, required elements, resource types) is
checked by fhirkit-rs, a Rust implementation of every R4 4.0.1 resource and datatype that reports each problem with
its FHIRPath location, at a few microseconds per resource. What it leaves out is checked here in one walk: the id
syntax of every resource (top level, contained, Bundle entries), elements without content (ele-1), and narrative
XHTML (well-formed, in the XHTML namespace, no scripts or event handlers: txt-1/txt-2).
"""

from __future__ import annotations

from typing import Any

import fhirkit
from lxml import etree

from resources import jsonio
from resources.ids import is_valid_id
from resources.outcome import InvalidInput, Issue

XHTML_NS = "http://www.w3.org/1999/xhtml"
_xhtml_parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)


def _invalid(issues: list[Issue]) -> InvalidInput:
    return InvalidInput(issues=issues)


def _kit_issues(found: list[Any]) -> list[Issue]:
    return [
        Issue("error", "structure" if "unknown element" in i.message else "value", i.message, (i.path,), "AEGIS-110")
        for i in found
        if i.severity == "error"
    ]


def parse_json_resource(body: bytes) -> dict[str, Any]:
    """Parse and validate a JSON resource body; raise :class:`InvalidInput` listing every problem found."""
    try:
        found = fhirkit.validate(body)
    except fhirkit.ParseError as exc:
        raise InvalidInput(f"the body is not valid JSON: {exc}", message_id="AEGIS-100") from None
    issues = _kit_issues(found)
    if issues:
        raise _invalid(issues)
    resource = jsonio.loads(body)
    check_extra(resource)
    return resource  # type: ignore[no-any-return]


def validate_resource(resource: Any) -> None:
    """Validate a resource already in dict form (from XML, a patch, a Bundle entry)."""
    if not isinstance(resource, dict):
        raise InvalidInput("a resource must be a JSON object", message_id="AEGIS-101")
    try:
        found = fhirkit.validate(jsonio.dumps(resource))
    except fhirkit.ParseError as exc:
        raise InvalidInput(f"the resource is not valid: {exc}", message_id="AEGIS-100") from None
    issues = _kit_issues(found)
    if issues:
        raise _invalid(issues)
    check_extra(resource)


def check_extra(resource: dict[str, Any]) -> None:
    issues: list[Issue] = []
    _walk(resource, str(resource.get("resourceType", "Resource")), issues, is_resource=True)
    if issues:
        raise _invalid(issues)


def _walk(node: Any, path: str, issues: list[Issue], *, is_resource: bool = False) -> None:
    if isinstance(node, dict):
        if not node:
            issues.append(Issue("error", "value", "an element must have a value or children (ele-1)", (path,),
                                "AEGIS-111"))
            return
        if is_resource and "id" in node:
            rid = node["id"]
            if isinstance(rid, str) and not is_valid_id(rid):
                issues.append(Issue("error", "value", f"{rid!r} is not a valid id ([A-Za-z0-9-.]{{1,64}})",
                                    (f"{path}.id",), "AEGIS-112"))
        for key, value in node.items():
            child = f"{path}.{key}"
            if key == "div" and isinstance(value, str) and path.endswith("text"):
                _check_div(value, child, issues)
            elif isinstance(value, list):
                for i, item in enumerate(value):
                    _walk(item, f"{child}[{i}]", issues, is_resource=isinstance(item, dict) and "resourceType" in item)
            elif isinstance(value, dict):
                _walk(value, child, issues, is_resource="resourceType" in value)


def _check_div(div: str, path: str, issues: list[Issue]) -> None:
    try:
        root = etree.fromstring(div.encode("utf-8"), _xhtml_parser)
    except etree.XMLSyntaxError as exc:
        issues.append(Issue("error", "value", f"the narrative is not well-formed XHTML: {exc}", (path,), "AEGIS-113"))
        return
    if root.tag != f"{{{XHTML_NS}}}div":
        issues.append(Issue("error", "value", "the narrative must be a <div> in the XHTML namespace", (path,),
                            "AEGIS-113"))
        return
    for el in root.iter():
        if not isinstance(el.tag, str):
            continue
        local = etree.QName(el).localname
        if local in ("script", "form", "object", "embed", "iframe", "base", "link", "style", "head", "body"):
            issues.append(Issue("error", "value", f"the narrative may not contain <{local}> (txt-1)", (path,),
                                "AEGIS-114"))
        if any(str(a).lower().startswith("on") for a in el.attrib):
            issues.append(Issue("error", "value", "the narrative may not contain event handler attributes (txt-2)",
                                (path,), "AEGIS-114"))
