"""Validation of incoming resources against the R4 4.0.1 structure definitions.

Structure (element names, cardinality, primitive formats, choice types, required elements, resource types) is
checked by fhirkit-rs, a Rust implementation of every R4 4.0.1 resource and datatype that reports each problem with
its FHIRPath location, at a few microseconds per resource. What it leaves out is checked here, in one walk of the
resource guided by the structure model (``resources.model``), every contained and Bundle entry resource by its own
type:

* the id syntax of every resource (top level, contained, Bundle entries);
* elements without content (ele-1);
* narrative XHTML (well-formed, in the XHTML namespace, no scripts or event handlers: txt-1/txt-2);
* codes of elements with a *required* binding (``resources.bindings``): a ``code`` must be in the value set; a
  Coding (alone or in a CodeableConcept) whose system is one of the value set's must carry one of its codes;
* calendar validity of date, dateTime and instant values (fhirkit checks their shape only: 2001-02-30 passes it);
* control characters: FHIR strings may hold none below U+0020 but tab, CR and LF.

What to do for each property of a type is worked out once per type key (:func:`_plan`), so the walk costs one dict
lookup per property and skips primitives that need no check.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Final

import fhirkit
from lxml import etree

from resources import jsonio, model
from resources.bindings import RequiredBinding, bound_elements
from resources.ids import is_valid_id
from resources.outcome import InvalidInput, Issue

XHTML_NS = "http://www.w3.org/1999/xhtml"
UTF8_BOM = b"\xef\xbb\xbf"
_xhtml_parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)

# Control characters FHIR strings may not contain (R4 datatypes.html#string: none below U+0020 except tab, LF, CR).
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f]")
# JSON may only carry such a character escaped, and this matches every escape that can spell one; text without
# one (the common case) cannot hold such a character, so the search through every string is skipped.
_CONTROL_ESCAPE = re.compile(rb"\\(?:u00[01][0-9A-Fa-f]|[bf])")

_DATE_TYPES: Final = frozenset({"date", "dateTime", "instant"})
# the primitives a binding can constrain (ElementDefinition eld-11); for a bound choice element, its other variants
# (valueBoolean, valueDate, …) are not judged against the value set
_BINDABLE_PRIMITIVES: Final = frozenset({"code", "string", "uri"})
_DAYS_IN_MONTH: Final = (0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)

_KIT_DUPLICATE = "more than once"
_KIT_UNKNOWN = "unknown element"

# What the walk does with one property (first item of a plan entry).
_COMPLEX: Final = 0  # recurse into the child type (data: its type key)
_RESOURCE: Final = 1  # recurse into a resource by its own resourceType (contained, Bundle.entry.resource, …)
_CODE: Final = 2  # primitive with a required binding (data: RequiredBinding)
_CODING: Final = 3  # Coding with a required binding: recurse, then check it (data: (type key, RequiredBinding))
_CONCEPT: Final = 4  # CodeableConcept with a required binding: recurse, then check its codings (same data)
_DATE: Final = 5  # date, dateTime or instant (data: the type name)
_DIV: Final = 6  # narrative XHTML

_Plan = dict[str, tuple[int, Any]]
_plans: dict[str, _Plan | None] = {}


def _invalid(issues: list[Issue]) -> InvalidInput:
    return InvalidInput(issues=issues)


def _kit_issues(found: list[Any]) -> list[Issue]:
    # fhirkit reports a repeated key both as repeated and as "unknown element" (once per extra occurrence); only the
    # first issue at such a path is kept, the rest would send the client after an element that is in fact known
    duplicated = {i.path for i in found if i.severity == "error" and _KIT_DUPLICATE in i.message}
    reported: set[str] = set()
    issues: list[Issue] = []
    for i in found:
        if i.severity != "error":
            continue
        if i.path in duplicated:
            if i.path in reported:
                continue
            reported.add(i.path)
        code = "structure" if _KIT_UNKNOWN in i.message else "value"
        issues.append(Issue("error", code, i.message, (i.path,), "AEGIS-110"))
    return issues


def parse_json_resource(body: bytes) -> dict[str, Any]:
    """Parse and validate a JSON resource body; raise :class:`InvalidInput` listing every problem found.

    A leading UTF-8 byte order mark is ignored, as RFC 8259 §8.1 allows."""
    body = body.removeprefix(UTF8_BOM)
    try:
        found = fhirkit.validate(body)
    except fhirkit.ParseError as exc:
        raise InvalidInput(f"the body is not valid JSON: {exc}", message_id="AEGIS-100") from None
    issues = _kit_issues(found)
    if issues:
        raise _invalid(issues)
    try:
        resource = jsonio.loads(body)
    except ValueError as exc:  # fhirkit's parser accepted it, so this is not expected; still a client's problem
        raise InvalidInput(f"the body is not valid JSON: {exc}", message_id="AEGIS-100") from None
    check_extra(resource, json_text=body)
    return resource  # type: ignore[no-any-return]


def validate_resource(resource: Any) -> None:
    """Validate a resource already in dict form (from XML, a patch, a Bundle entry)."""
    if not isinstance(resource, dict):
        raise InvalidInput("a resource must be a JSON object", message_id="AEGIS-101")
    try:
        text = jsonio.dumps(resource)
    except TypeError as exc:  # e.g. an integer beyond 64 bits, which no FHIR integer type allows anyway
        raise InvalidInput(f"the resource holds a value FHIR cannot represent: {exc}", message_id="AEGIS-100") from None
    try:
        found = fhirkit.validate(text)
    except fhirkit.ParseError as exc:
        raise InvalidInput(f"the resource is not valid: {exc}", message_id="AEGIS-100") from None
    issues = _kit_issues(found)
    if issues:
        raise _invalid(issues)
    check_extra(resource, json_text=text)


def check_extra(resource: dict[str, Any], *, json_text: bytes | None = None) -> None:
    """The checks fhirkit does not make (module docstring); ``resource`` must already be structurally valid.

    ``json_text``, the resource's JSON, lets the control character search be skipped when the text shows there can
    be none; without it every string is searched."""
    issues: list[Issue] = []
    path = str(resource.get("resourceType", "Resource"))
    _visit_resource(resource, path, issues)
    if json_text is None or _may_hold_controls(json_text):
        _find_controls(resource, path, issues)
    if issues:
        raise _invalid(issues)


def _may_hold_controls(json_text: bytes) -> bool:
    # a one-byte search runs at memchr speed, a regex or multi-byte search does not: most bodies have no backslash
    return b"\\" in json_text and _CONTROL_ESCAPE.search(json_text) is not None


# ---------------------------------------------------------------------------------------------------- the walk


def _plan(type_key: str) -> _Plan | None:
    """What to do with each JSON property of a type; None when the model does not know the type."""
    try:
        return _plans[type_key]
    except KeyError:
        pass
    info = model.type_info(type_key)
    plan: _Plan | None = None
    if info is not None:
        bound = bound_elements(info.key)
        plan = {}
        for el in info.elements:
            binding = bound.get(el.name)
            if el.is_primitive:
                if binding is not None and el.type_code in _BINDABLE_PRIMITIVES:
                    plan[el.json_name] = (_CODE, binding)
                elif el.type_code in _DATE_TYPES:
                    plan[el.json_name] = (_DATE, el.type_code)
                elif el.type_code == "xhtml":
                    plan[el.json_name] = (_DIV, None)
                # the primitive's id and extensions, written beside it as "_name"
                plan["_" + el.json_name] = (_COMPLEX, "Element")
            elif el.child_type_key == "Resource":
                plan[el.json_name] = (_RESOURCE, None)
            elif el.child_type_key is not None:
                if binding is not None and el.type_code == "Coding":
                    plan[el.json_name] = (_CODING, (el.child_type_key, binding))
                elif binding is not None and el.type_code == "CodeableConcept":
                    plan[el.json_name] = (_CONCEPT, (el.child_type_key, binding))
                else:
                    plan[el.json_name] = (_COMPLEX, el.child_type_key)
    # benign race: two threads may build equal plans
    _plans[type_key] = plan
    return plan


def _visit_resource(node: dict[str, Any], path: str, issues: list[Issue]) -> None:
    if "id" in node:
        rid = node["id"]
        if isinstance(rid, str) and not is_valid_id(rid):
            issues.append(Issue("error", "value", f"{rid!r} is not a valid id ([A-Za-z0-9-.]{{1,64}})",
                                (f"{path}.id",), "AEGIS-112"))
    rtype = node.get("resourceType")
    if isinstance(rtype, str) and model.is_resource_type(rtype):
        _visit(node, rtype, path, issues)
    else:
        _walk_untyped(node, path, issues)


def _visit(node: dict[str, Any], type_key: str, path: str, issues: list[Issue]) -> None:
    if not node:
        issues.append(Issue("error", "value", "an element must have a value or children (ele-1)", (path,),
                            "AEGIS-111"))
        return
    plan = _plans.get(type_key) or _plan(type_key)
    if plan is None:
        _walk_untyped(node, path, issues)
        return
    for name, value in node.items():
        action = plan.get(name)
        if action is None:
            continue  # a primitive with nothing to check, or resourceType (fhirkit has refused unknown names)
        kind, data = action
        if kind == _COMPLEX:  # most properties: recursed into directly, saving a call per element
            if isinstance(value, list):
                for i, item in enumerate(value):
                    if isinstance(item, dict):
                        _visit(item, data, f"{path}.{name}[{i}]", issues)
            elif isinstance(value, dict):
                _visit(value, data, f"{path}.{name}", issues)
        elif kind == _RESOURCE or kind == _CODING or kind == _CONCEPT:
            if isinstance(value, list):
                for i, item in enumerate(value):
                    if isinstance(item, dict):
                        _visit_child(kind, data, item, f"{path}.{name}[{i}]", issues)
            elif isinstance(value, dict):
                _visit_child(kind, data, value, f"{path}.{name}", issues)
        elif kind == _CODE or kind == _DATE:
            _check_primitives(value, path, name, kind, data, issues)
        elif kind == _DIV and isinstance(value, str):
            _check_div(value, f"{path}.{name}", issues)


def _visit_child(kind: int, data: Any, node: dict[str, Any], path: str, issues: list[Issue]) -> None:
    if kind == _RESOURCE:
        _visit_resource(node, path, issues)
    elif kind == _CODING:
        _visit(node, data[0], path, issues)
        _check_coding(node, path, data[1], issues)
    else:
        _visit(node, data[0], path, issues)
        codings = node.get("coding")
        if isinstance(codings, list):
            for i, coding in enumerate(codings):
                if isinstance(coding, dict):
                    _check_coding(coding, f"{path}.coding[{i}]", data[1], issues)


def _check_primitives(value: Any, path: str, name: str, kind: int, data: Any, issues: list[Issue]) -> None:
    """Check a primitive value, or each value of a primitive array (which may hold nulls)."""
    problem, code, message_id = _PRIMITIVE_CHECKS[kind]
    if isinstance(value, str):
        message = problem(value, data)
        if message is not None:
            issues.append(Issue("error", code, message, (f"{path}.{name}",), message_id))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            if isinstance(item, str):
                message = problem(item, data)
                if message is not None:
                    issues.append(Issue("error", code, message, (f"{path}.{name}[{i}]",), message_id))


def _walk_untyped(node: Any, path: str, issues: list[Issue]) -> None:
    """For what the model cannot type (not expected after fhirkit): the checks that need no type."""
    if isinstance(node, dict):
        if not node:
            issues.append(Issue("error", "value", "an element must have a value or children (ele-1)", (path,),
                                "AEGIS-111"))
            return
        for key, value in node.items():
            child = f"{path}.{key}"
            if isinstance(value, list):
                for i, item in enumerate(value):
                    if isinstance(item, dict):
                        _walk_untyped(item, f"{child}[{i}]", issues)
            elif isinstance(value, dict):
                if "resourceType" in value:
                    _visit_resource(value, child, issues)
                else:
                    _walk_untyped(value, child, issues)


# ---------------------------------------------------------------------------------------------------- the checks


def _code_problem(code: str, binding: RequiredBinding) -> str | None:
    if code in binding.codes:
        return None
    return f"{code!r} is not a code of the required value set {binding.describe()}"


def _check_coding(coding: dict[str, Any], path: str, binding: RequiredBinding, issues: list[Issue]) -> None:
    # only a Coding that claims one of the value set's systems can be judged: others may be translations, and a
    # CodeableConcept is conformant when one of its codings is from the value set
    allowed = binding.by_system.get(coding.get("system"))  # type: ignore[arg-type]
    code = coding.get("code")
    if allowed is not None and isinstance(code, str) and code not in allowed:
        issues.append(Issue("error", "code-invalid",
                            f"{code!r} is not a code of {coding['system']} in the required value set "
                            f"{binding.describe()}", (f"{path}.code",), "AEGIS-115"))


def is_impossible_date(text: str) -> bool:
    """True for a date, dateTime or instant of the right shape that names a day the calendar does not have."""
    if len(text) < 10 or text[8:10] < "29":
        return False  # no day, or a day every month has
    try:
        year, month, day = int(text[0:4]), int(text[5:7]), int(text[8:10])
    except ValueError:
        return False  # not the shape fhirkit checks for; it reports that itself
    if not 1 <= month <= 12 or day > _DAYS_IN_MONTH[month]:
        return True
    if month == 2 and day == 29:
        return not (year % 4 == 0 and (year % 100 != 0 or year % 400 == 0))
    return False


def _date_problem(text: str, type_name: str) -> str | None:
    if not is_impossible_date(text):
        return None
    return f"{text!r} is not a valid {type_name}: the calendar has no such day"


# per primitive check: the test (value, plan data → message or None), the issue code and the message id
_PRIMITIVE_CHECKS: Final[dict[int, tuple[Callable[[str, Any], str | None], str, str]]] = {
    _CODE: (_code_problem, "code-invalid", "AEGIS-115"),
    _DATE: (_date_problem, "value", "AEGIS-116"),
}


def _find_controls(node: Any, path: str, issues: list[Issue]) -> None:
    """Every string (values of any type, anywhere) holding a control character FHIR does not allow."""
    if isinstance(node, dict):
        for key, value in node.items():
            _find_controls(value, f"{path}.{key}", issues)
    elif isinstance(node, list):
        for i, item in enumerate(node):
            _find_controls(item, f"{path}[{i}]", issues)
    elif isinstance(node, str):
        found = _CONTROL.search(node)
        if found is not None:
            issues.append(Issue("error", "value",
                                f"the string contains the control character U+{ord(found.group()):04X}; FHIR strings "
                                "may hold none below U+0020 but tab, CR and LF", (path,), "AEGIS-117"))


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
