"""Index extraction: a resource → its typed search values, one list of ``(parameter code, Value)`` pairs.

For the resource's type, every SearchParameter of :func:`registry.params_for` (except ``_id``, which the store
indexes itself, and ``special`` parameters, which have no value semantics) is evaluated with its FHIRPath
expression, and each result node becomes typed values by the node's FHIR datatype and the parameter's type.

Evaluation: expressions are compiled once per resource type. Nearly all of them are plain navigation and run as
direct accessors over the dict (:mod:`fhir_server.search.fastpath`); the few others go through fhirpathpy with the
R4 model, ``resolve()`` registered for ``where(resolve() is T)`` and the same ``as``→``ofType`` reading (a test
checks that both engines give the same values for every parameter that has a fast path).

How datatypes become values (the decisions the query side relies on):

string     string/markdown/… primitives; HumanName → family, given, prefix, suffix, text; Address → line, city,
           district, state, postalCode, country, text; an Extension → its value.
token      code/string/id/uri primitives → (no system, value); boolean → ``true``/``false``; Coding →
           (system, code, display); CodeableConcept → each coding, plus its text as (None, None, text);
           Identifier → (system, value, type.text); and, under the code ``<code>:of-type``, one
           CompositeV((type coding, (system, value))) per ``type.coding`` (:func:`of_type_values`);
           ContactPoint → (None, value) and (ContactPoint.system, value). Texts are normalised.
reference  Reference.reference parsed by :func:`fastpath.parse_reference` (``Patient/1`` → type/id; an absolute
           URL → type/id when it ends in one, plus the URL; ``urn:…`` → URL; ``#id`` → URL with the contained
           resource's type), Reference.identifier → ident_system/ident_value, Reference.type as the type when there
           is no literal reference; canonical/uri/url primitives → URL without ``|version``; Attachment → url.
date       date/dateTime/instant → their precision range; Period → [start lo, end hi) with open ends at
           DATE_MIN/DATE_MAX; Timing → one range over its outer limits (every ``event`` and
           ``repeat.boundsPeriod``; the schedule in between is ignored, as search.html#date says); a string that
           parses as a date counts as one; Age/Range (ages, not dates) give nothing.
number     integer/decimal with their implicit precision; a Range gives one value per bound.
quantity   Quantity/Age/Duration/Count/Distance/SimpleQuantity → value with its precision, system, code, unit,
           and the UCUM-canonical form when the system is UCUM and the unit converts; Money → system
           ``urn:iso:std:iso:4217``, code = currency; a Range → one quantity per bound (so ``gt``/``lt`` ask whether
           the range reaches above/below); ``comparator`` is ignored; SampledData gives nothing.
uri        uri/url/canonical/oid/uuid → the text; a versioned canonical also without its ``|version``.
composite  the composite's expression gives nodes; each component's expression is evaluated on each node and
           typed by the component's own SearchParameter; one CompositeV per combination (cartesian product).
           Token parts keep only values with a code (a CodeableConcept's text alone cannot be asked for in a
           composite, and would multiply rows).

Values are de-duplicated per parameter, in first-seen order.
"""

from __future__ import annotations

import html
import logging
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from itertools import product
from typing import Any

from fhir_server.search import registry
from fhir_server.search.fastpath import (
    Evaluator,
    Node,
    compile_path,
    element_variants,
    is_a,
    normalise_expression,
    parent_type,
    parse_reference,
    reference_type,
    root_keys,
    split_union,
    type_matches,
    type_name,
)
from fhir_server.search.fastpath import items as _items
from fhir_server.search.ranges import date_range, number_range_of
from fhir_server.search.ucum import UCUM_SYSTEM, canonicalize
from fhir_server.search.values import (
    DATE_MAX,
    DATE_MIN,
    CompositeV,
    DateV,
    NumberV,
    QuantityV,
    ReferenceV,
    StringV,
    TokenV,
    UriV,
    Value,
    normalize,
)
from resources.canonical import SERVER_META
from resources.jsonio import FhirDecimal
from resources.model import is_resource_type

__all__ = ["extract", "text_content", "of_type_values", "plan_for", "fast_path_coverage", "CURRENCY_SYSTEM",
           "OF_TYPE_SUFFIX"]

CURRENCY_SYSTEM = "urn:iso:std:iso:4217"
OF_TYPE_SUFFIX = ":of-type"  # identifier parameters also index "<code>:of-type" composites (see of_type_values)

_log = logging.getLogger(__name__)

_SKIPPED_CODES = frozenset({"_id"})  # the store indexes ids itself


# ---- small cached helpers (values repeat across resources: displays, units, dates) -----------------------------


def fast_normalize(text: str) -> str:
    """:func:`values.normalize`, with a shortcut for ASCII text (most of it), where NFKD changes nothing and
    casefolding is lowercasing."""
    if text.isascii():
        return " ".join(text.lower().split())
    return normalize(text)


@lru_cache(maxsize=65536)
def _norm_cached(text: str) -> str:
    return fast_normalize(text)


def _norm(text: str) -> str:
    # displays, names and codes repeat across resources; long free text (descriptions) does not, and would only
    # fill the cache
    return _norm_cached(text) if len(text) <= 128 else fast_normalize(text)


@lru_cache(maxsize=65536)
def _date(text: str) -> tuple[int, int] | None:
    return date_range(text)


def _text_norm(value: Any) -> str | None:
    return _norm(value) if isinstance(value, str) and value else None


def of_type_values(identifier: Any) -> list[CompositeV]:
    """The ``<code>:of-type`` values of one Identifier: ``CompositeV((TokenV(type system, type code),
    TokenV(system, value)))`` per ``type.coding`` (the binder's contract for ``identifier:of-type=tsys|tcode|v``:
    type and value must come from the same Identifier, which one composite value guarantees)."""
    if identifier.__class__ is not dict:
        return []
    value = identifier.get("value")
    id_type = identifier.get("type")
    if not isinstance(value, str) or not value or id_type.__class__ is not dict:
        return []
    system = identifier.get("system")
    ident = TokenV(system if isinstance(system, str) and system else None, value)
    out = []
    for coding in _items(id_type.get("coding")):
        if coding.__class__ is dict and isinstance(coding.get("code"), str) and coding["code"]:
            tsys = coding.get("system")
            out.append(CompositeV((TokenV(tsys if isinstance(tsys, str) and tsys else None, coding["code"]), ident)))
    return out


# ---- datatype → values ----------------------------------------------------------------------------------------------

Converter = Callable[[Any, str, dict[str, Any]], list[Value]]


def _extension_value(data: Any) -> Node | None:
    """The ``value[x]`` of an Extension as a node, typed through the model."""
    if data.__class__ is not dict:
        return None
    for key, child in element_variants("Extension", "value", None):
        value = data.get(key)
        if value is not None:
            return value, child
    return None


def _unwrap_extension(ptype: str) -> Converter:
    def convert(data: Any, tk: str, root: dict[str, Any]) -> list[Value]:
        node = _extension_value(data)
        if node is None:
            return []
        return _convert(ptype, node[0], node[1], root)

    return convert


def _nothing(data: Any, tk: str, root: dict[str, Any]) -> list[Value]:
    return []


# string ------------------------------------------------------------------------------------------------------------


def _string_of(value: Any) -> StringV | None:
    if isinstance(value, str) and value:
        return StringV(_norm(value), value)
    return None


def _string_primitive(data: Any, tk: str, root: dict[str, Any]) -> list[Value]:
    v = _string_of(data)
    return [v] if v is not None else []


def _string_fields(singles: tuple[str, ...], lists: tuple[str, ...]) -> Converter:
    def convert(data: Any, tk: str, root: dict[str, Any]) -> list[Value]:
        if data.__class__ is not dict:
            return []
        out: list[Value] = []
        for key in lists:
            items = data.get(key)
            if isinstance(items, list):
                for item in items:
                    v = _string_of(item)
                    if v is not None:
                        out.append(v)
        for key in singles:
            v = _string_of(data.get(key))
            if v is not None:
                out.append(v)
        return out

    return convert


# token -------------------------------------------------------------------------------------------------------------


def _token_primitive(data: Any, tk: str, root: dict[str, Any]) -> list[Value]:
    if isinstance(data, bool):
        return [TokenV(None, "true" if data else "false")]
    if isinstance(data, str):
        return [TokenV(None, data)] if data else []
    if isinstance(data, FhirDecimal):
        return [TokenV(None, data.text)]
    if isinstance(data, (int, Decimal)):
        return [TokenV(None, str(data))]
    return []


def _coding_token(coding: Any) -> TokenV | None:
    if coding.__class__ is not dict:
        return None
    system = coding.get("system")
    code = coding.get("code")
    display = _text_norm(coding.get("display"))
    system = system if isinstance(system, str) and system else None
    code = code if isinstance(code, str) and code else None
    if system is None and code is None and display is None:
        return None
    return TokenV(system, code, display)


def _token_coding(data: Any, tk: str, root: dict[str, Any]) -> list[Value]:
    t = _coding_token(data)
    return [t] if t is not None else []


def _token_concept(data: Any, tk: str, root: dict[str, Any]) -> list[Value]:
    if data.__class__ is not dict:
        return []
    out: list[Value] = []
    for coding in _items(data.get("coding")):
        t = _coding_token(coding)
        if t is not None:
            out.append(t)
    text = _text_norm(data.get("text"))
    if text is not None:
        out.append(TokenV(None, None, text))
    return out


def _token_identifier(data: Any, tk: str, root: dict[str, Any]) -> list[Value]:
    if data.__class__ is not dict:
        return []
    system = data.get("system")
    value = data.get("value")
    system = system if isinstance(system, str) and system else None
    value = value if isinstance(value, str) and value else None
    if system is None and value is None:
        return []
    id_type = data.get("type")
    # :text on an identifier parameter searches Identifier.type.text (search.html#token)
    type_text = _text_norm(id_type.get("text")) if id_type.__class__ is dict else None
    return [TokenV(system, value, type_text)]


def _token_contact(data: Any, tk: str, root: dict[str, Any]) -> list[Value]:
    if data.__class__ is not dict:
        return []
    value = data.get("value")
    if not isinstance(value, str) or not value:
        return []
    out: list[Value] = [TokenV(None, value)]
    system = data.get("system")
    if isinstance(system, str) and system:
        out.append(TokenV(system, value))
    return out


# reference ---------------------------------------------------------------------------------------------------------


def _ref_reference(data: Any, tk: str, root: dict[str, Any]) -> list[Value]:
    if data.__class__ is not dict:
        return []
    literal = data.get("reference")
    rtype = rid = url = None
    if isinstance(literal, str) and literal:
        rtype, rid, url = parse_reference(literal)
        if literal.startswith("#"):
            rtype = reference_type(data, root)
    elif data.get("type") is not None:
        rtype = reference_type(data, root)
    isys = ival = None
    ident = data.get("identifier")
    if ident.__class__ is dict:
        s, v = ident.get("system"), ident.get("value")
        isys = s if isinstance(s, str) and s else None
        ival = v if isinstance(v, str) and v else None
    if rid is None and url is None and ival is None:
        return []
    return [ReferenceV(rtype, rid, url, isys, ival)]


def _ref_canonical(data: Any, tk: str, root: dict[str, Any]) -> list[Value]:
    if not isinstance(data, str) or not data:
        return []
    if "://" in data or data.startswith("urn:"):
        return [ReferenceV(None, None, data.split("|", 1)[0])]
    rtype, rid, url = parse_reference(data.split("|", 1)[0])
    return [ReferenceV(rtype, rid, url)]


def _ref_attachment(data: Any, tk: str, root: dict[str, Any]) -> list[Value]:
    if data.__class__ is not dict:
        return []
    return _ref_canonical(data.get("url"), "url", root)


def _ref_resource(data: Any, tk: str, root: dict[str, Any]) -> list[Value]:
    # a resource inside the resource (Bundle.entry.resource for Bundle's composition/message)
    if data.__class__ is not dict or not is_resource_type(tk) or not isinstance(data.get("id"), str):
        return []
    return [ReferenceV(tk, data["id"])]


# date --------------------------------------------------------------------------------------------------------------


def _date_primitive(data: Any, tk: str, root: dict[str, Any]) -> list[Value]:
    if isinstance(data, str):
        r = _date(data)
        if r is not None:
            return [DateV(r[0], r[1])]
    return []


def _period_range(data: Any) -> tuple[int, int] | None:
    if data.__class__ is not dict:
        return None
    start, end = data.get("start"), data.get("end")
    s = _date(start) if isinstance(start, str) else None
    e = _date(end) if isinstance(end, str) else None
    if s is None and e is None:
        return None
    return (s[0] if s is not None else DATE_MIN), (e[1] if e is not None else DATE_MAX)


def _date_period(data: Any, tk: str, root: dict[str, Any]) -> list[Value]:
    r = _period_range(data)
    return [DateV(r[0], r[1])] if r is not None else []


def _date_timing(data: Any, tk: str, root: dict[str, Any]) -> list[Value]:
    if data.__class__ is not dict:
        return []
    ranges = []
    for event in _items(data.get("event")):
        if isinstance(event, str):
            r = _date(event)
            if r is not None:
                ranges.append(r)
    repeat = data.get("repeat")
    if repeat.__class__ is dict:
        r = _period_range(repeat.get("boundsPeriod"))
        if r is not None:
            ranges.append(r)
    if not ranges:
        return []
    return [DateV(min(r[0] for r in ranges), max(r[1] for r in ranges))]


# number and quantity -----------------------------------------------------------------------------------------------


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, Decimal)) and not isinstance(value, bool) and (
        not isinstance(value, Decimal) or value.is_finite())


def _number_primitive(data: Any, tk: str, root: dict[str, Any]) -> list[Value]:
    if _is_number(data):
        return [NumberV(*number_range_of(data))]
    return []


def _number_quantity(data: Any, tk: str, root: dict[str, Any]) -> list[Value]:
    if data.__class__ is dict and _is_number(data.get("value")):
        return [NumberV(*number_range_of(data["value"]))]
    return []


def _range_bounds(data: Any) -> list[Any]:
    if data.__class__ is not dict:
        return []
    return [b for b in (data.get("low"), data.get("high")) if b is not None]


def _number_range(data: Any, tk: str, root: dict[str, Any]) -> list[Value]:
    out: list[Value] = []
    for bound in _range_bounds(data):
        out.extend(_number_quantity(bound, "Quantity", root))
    return out


def _quantity_of(value: Any, system: Any, code: Any, unit: Any) -> QuantityV | None:
    if not _is_number(value):
        return None
    v, lo, hi = number_range_of(value)
    system = system if isinstance(system, str) and system else None
    code = code if isinstance(code, str) and code else None
    unit = unit if isinstance(unit, str) and unit else None
    if system == UCUM_SYSTEM and code is not None:
        canon = canonicalize(v, lo, hi, code)
        if canon is not None:
            return QuantityV(v, lo, hi, system, code, unit, *canon)
    return QuantityV(v, lo, hi, system, code, unit)


def _quantity_quantity(data: Any, tk: str, root: dict[str, Any]) -> list[Value]:
    if data.__class__ is not dict:
        return []
    q = _quantity_of(data.get("value"), data.get("system"), data.get("code"), data.get("unit"))
    return [q] if q is not None else []


def _quantity_money(data: Any, tk: str, root: dict[str, Any]) -> list[Value]:
    if data.__class__ is not dict:
        return []
    q = _quantity_of(data.get("value"), CURRENCY_SYSTEM, data.get("currency"), None)
    return [q] if q is not None else []


def _quantity_range(data: Any, tk: str, root: dict[str, Any]) -> list[Value]:
    out: list[Value] = []
    for bound in _range_bounds(data):
        out.extend(_quantity_quantity(bound, "Quantity", root))
    return out


def _quantity_primitive(data: Any, tk: str, root: dict[str, Any]) -> list[Value]:
    q = _quantity_of(data, None, None, None)
    return [q] if q is not None else []


# uri ---------------------------------------------------------------------------------------------------------------


def _uri_primitive(data: Any, tk: str, root: dict[str, Any]) -> list[Value]:
    if not isinstance(data, str) or not data:
        return []
    if "|" in data and is_a(tk, "canonical"):
        return [UriV(data.split("|", 1)[0]), UriV(data)]
    return [UriV(data)]


# dispatch ----------------------------------------------------------------------------------------------------------
# (parameter type, FHIR type) → converter; a type without an entry uses its nearest ancestor's (markdown → string,
# Age → Quantity, positiveInt → integer, canonical → uri, a resource → Resource) or gives nothing.

_CONVERTERS: dict[tuple[str, str], Converter] = {
    ("string", "string"): _string_primitive,
    ("string", "uri"): _string_primitive,
    ("string", "HumanName"): _string_fields(("family", "text"), ("given", "prefix", "suffix")),
    ("string", "Address"): _string_fields(("city", "district", "state", "postalCode", "country", "text"), ("line",)),
    ("token", "string"): _token_primitive,
    ("token", "uri"): _token_primitive,
    ("token", "boolean"): _token_primitive,
    ("token", "integer"): _token_primitive,
    ("token", "decimal"): _token_primitive,
    ("token", "Coding"): _token_coding,
    ("token", "CodeableConcept"): _token_concept,
    ("token", "Identifier"): _token_identifier,
    ("token", "ContactPoint"): _token_contact,
    ("reference", "Reference"): _ref_reference,
    ("reference", "uri"): _ref_canonical,
    ("reference", "Attachment"): _ref_attachment,
    ("reference", "Resource"): _ref_resource,
    ("date", "date"): _date_primitive,
    ("date", "dateTime"): _date_primitive,
    ("date", "instant"): _date_primitive,
    ("date", "string"): _date_primitive,
    ("date", "Period"): _date_period,
    ("date", "Timing"): _date_timing,
    ("number", "integer"): _number_primitive,
    ("number", "decimal"): _number_primitive,
    ("number", "Quantity"): _number_quantity,
    ("number", "Range"): _number_range,
    ("quantity", "Quantity"): _quantity_quantity,
    ("quantity", "Money"): _quantity_money,
    ("quantity", "Range"): _quantity_range,
    ("quantity", "integer"): _quantity_primitive,
    ("quantity", "decimal"): _quantity_primitive,
    ("uri", "uri"): _uri_primitive,
    ("uri", "string"): _uri_primitive,
}
for _ptype in ("string", "token", "reference", "date", "number", "quantity", "uri"):
    _CONVERTERS[(_ptype, "Extension")] = _unwrap_extension(_ptype)


@lru_cache(maxsize=None)
def _converter(ptype: str, type_key: str) -> Converter:
    name: str | None = type_name(type_key)
    while name:
        conv = _CONVERTERS.get((ptype, name))
        if conv is not None:
            return conv
        name = parent_type(name)
    return _nothing


def _convert(ptype: str, data: Any, tk: str, root: dict[str, Any]) -> list[Value]:
    return _converter(ptype, tk)(data, tk, root)


# ---- fhirpathpy, for what the fast path does not cover ----------------------------------------------------------
# fhirpathpy runs with its R4 model and a context of our own (its public entry point wraps user functions so they
# only see plain data, and they need the nodes' types): ``resolve``, ``extension`` and ``ofType`` are ours, with
# the same semantics as the fast path. Its ``ofType`` otherwise depends on module state left by earlier ``is``
# calls, and its ``extension`` returns only the first match. Union alternatives are evaluated one by one because
# its ``|`` drops the nodes' types. fhirpathpy is pinned (2.2.4), so relying on ``do_eval`` is a known contract.

_fp_lock = threading.RLock()  # fhirpathpy keeps module-level state (constants, TypeInfo.model)
_fp_root: dict[str, Any] = {}  # the resource under evaluation, for resolve() of "#contained" (under _fp_lock)

_SYSTEM_TYPES = {"String": "string", "Boolean": "boolean", "Integer": "integer", "Decimal": "decimal",
                 "DateTime": "dateTime", "Date": "date", "Time": "time", "Quantity": "Quantity"}


def _fp_node_type(item: Any) -> str:
    from fhirpathpy.engine.nodes import ResourceNode

    if isinstance(item, ResourceNode):
        return _fp_type_key(item.path, item.data)
    return _python_type(item)


def _fp_data(item: Any) -> Any:
    from fhirpathpy.engine.nodes import ResourceNode

    return item.data if isinstance(item, ResourceNode) else item


def _fp_resolve(ctx: dict[str, Any], inputs: list[Any]) -> list[Any]:
    from fhirpathpy.engine.nodes import ResourceNode

    out = []
    for ref in inputs:
        target = reference_type(_fp_data(ref), _fp_root)
        if target is not None:
            # the type is all `resolve() is T` needs; a stub resource carries it
            out.append(ResourceNode.create_node({"resourceType": target}, target))
    return out


def _fp_extension(ctx: dict[str, Any], inputs: list[Any], url: str) -> list[Any]:
    from fhirpathpy.engine.nodes import ResourceNode

    out = []
    for element in inputs:
        data = _fp_data(element)
        if isinstance(data, dict):
            for ext in _items(data.get("extension")):
                if isinstance(ext, dict) and ext.get("url") == url:
                    out.append(ResourceNode.create_node(ext, "Extension"))
    return out


def _fp_of_type(ctx: dict[str, Any], inputs: list[Any], type_spec: Any) -> list[Any]:
    wanted = getattr(type_spec, "name", None)
    if not isinstance(wanted, str):
        return []
    return [item for item in inputs if type_matches(_fp_node_type(item), wanted)]


def _fp_has_extension(ctx: dict[str, Any], inputs: list[Any], url: str) -> list[bool]:
    # FHIR's FHIRPath extension (fhirpath.html#functions), missing from fhirpathpy
    return [bool(_fp_extension(ctx, inputs, url))] if inputs else []


_FP_FUNCTIONS = {
    "resolve": {"fn": _fp_resolve},
    "hasExtension": {"fn": _fp_has_extension, "arity": {1: ["String"]}},
    "extension": {"fn": _fp_extension, "arity": {1: ["String"]}},
    "ofType": {"fn": _fp_of_type, "arity": {1: ["TypeSpecifier"]}},
}


def _fp_type_key(path: str | None, data: Any) -> str:
    if isinstance(data, dict) and isinstance(data.get("resourceType"), str):
        return data["resourceType"]
    if path is None:
        return _python_type(data)
    if path.startswith("System."):
        return _SYSTEM_TYPES.get(path[7:], path[7:])
    return path


def _python_type(data: Any) -> str:
    if isinstance(data, bool):
        return "boolean"
    if isinstance(data, int):
        return "integer"
    if isinstance(data, Decimal):
        return "decimal"
    if isinstance(data, str):
        return "string"
    return "Element"


def _fp_nodes(result: list[Any]) -> list[Node]:
    out: list[Node] = []
    for item in result:
        data = _fp_data(item)
        if data is None:
            continue
        if isinstance(data, dict) and set(data) <= {"id", "extension"} and _fp_node_type(item) in _primitives():
            continue  # a primitive that only carries extensions ("_birthDate"), not a value
        out.append((data, _fp_node_type(item)))
    return out


@lru_cache(maxsize=1)
def _primitives() -> frozenset[str]:
    from resources.model import primitive_types

    return primitive_types()


def fhirpathpy_evaluator(expression: str, rtype: str | None) -> Evaluator:
    """A slow-path evaluator with the fast path's calling convention: rooted at the resource when ``rtype`` is
    given, else relative to each input node (typed, so choice elements resolve)."""
    from fhirpathpy.engine import do_eval
    from fhirpathpy.engine.invocations.constants import constants
    from fhirpathpy.engine.nodes import ResourceNode
    from fhirpathpy.models import models
    from fhirpathpy.parser import parse

    model = models["r4"]
    alternatives = split_union(expression) or [expression]
    parsed = [parse(alt) for alt in alternatives]

    def evaluate(start: Any, root: dict[str, Any]) -> list[Node]:
        out: list[Node] = []
        for tree in parsed:
            constants.reset()
            data_root = [start]
            ctx = {
                "dataRoot": data_root,
                "vars": {"context": start, "resource": root, "ucum": UCUM_SYSTEM},
                "model": model,
                "userInvocationTable": _FP_FUNCTIONS,
            }
            result = do_eval(ctx, data_root, tree["children"][0])
            out.extend(_fp_nodes(result if isinstance(result, list) else [result]))
        return out

    def run(nodes: list[Node], root: dict[str, Any]) -> list[Node]:
        global _fp_root
        with _fp_lock:
            saved = _fp_root
            _fp_root = root
            try:
                if rtype is not None:
                    return evaluate(root, root)
                out: list[Node] = []
                for data, tk in nodes:
                    out.extend(evaluate(ResourceNode.create_node(data, tk), root))
                return out
            except Exception:  # noqa: BLE001 - an engine failure must not fail the write; the value is unindexed
                _log.warning("fhirpathpy failed on %r", expression, exc_info=True)
                return []
            finally:
                _fp_root = saved

    return run


# ---- special shapes -------------------------------------------------------------------------------------------------

_EXISTS_NOT_FALSE = re.compile(r"(\w+)\.(\w+)\.exists\(\) and \1\.\2 != false")


def _special_evaluator(expression: str, rtype: str) -> Evaluator | None:
    """Hand-compiled forms of the one non-navigation expression every Patient (and Person…) write meets:
    ``Patient.deceased.exists() and Patient.deceased != false`` — a boolean, false when absent."""
    m = _EXISTS_NOT_FALSE.fullmatch(expression)
    if m is None or m.group(1) != rtype:
        return None
    variants = element_variants(rtype, m.group(2), None)

    def run(nodes: list[Node], root: dict[str, Any]) -> list[Node]:
        for key, _child in variants:
            value = root.get(key)
            if value is not None:
                return [(value is not False, "boolean")]
        return [(False, "boolean")]

    return run


# ---- plans ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ComponentPlan:
    type: str
    expression: str
    evaluate: Evaluator
    fast: bool


@dataclass(frozen=True, slots=True)
class ParamPlan:
    code: str
    type: str
    expression: str  # normalised
    evaluate: Evaluator
    fast: bool
    components: tuple[ComponentPlan, ...] = ()
    # top-level JSON keys the expression starts from (see fastpath.root_keys); () means "always evaluate"
    keys: tuple[str, ...] = ()


def _evaluator(expression: str, rtype: str | None) -> tuple[Evaluator, bool]:
    fast = compile_path(expression, rtype)
    if fast is not None:
        return fast, True
    if rtype is not None:
        special = _special_evaluator(expression, rtype)
        if special is not None:
            return special, True
    return fhirpathpy_evaluator(expression, rtype), False


def _keys(expression: str, rtype: str) -> tuple[str, ...]:
    if compile_path(expression, rtype) is None:
        return ()  # only plain navigation is empty when its first element is absent
    keys = root_keys(expression, rtype)
    return tuple(sorted(keys)) if keys else ()


def _composite_keys(expression: str, rtype: str, components: list[ComponentPlan]) -> tuple[str, ...]:
    """Root keys of a composite. An alternative that is the root itself (``Observation`` in ``Observation |
    Observation.component``) yields a value only when every component does on the resource, so the keys of its
    last component, read as a path from the root, stand for it; other alternatives are navigation as usual."""
    alternatives = split_union(expression)
    if not alternatives or not components or compile_path(expression, rtype) is None:
        return ()
    keys: set[str] = set()
    for alt in alternatives:
        if alt == rtype:
            parts = split_union(components[-1].expression)
            if not parts:
                return ()
            alt = " | ".join(f"{rtype}.{part}" for part in parts)
        if compile_path(alt, rtype) is None:
            return ()
        found = root_keys(alt, rtype)
        if not found:
            return ()
        keys.update(found)
    return tuple(sorted(keys))


@lru_cache(maxsize=None)
def plan_for(rtype: str) -> tuple[ParamPlan, ...]:
    """Compiled extraction plan of a resource type (every indexed parameter, in registry order)."""
    plans: list[ParamPlan] = []
    for code, p in registry.params_for(rtype).items():
        if code in _SKIPPED_CODES or p.type == "special":
            continue
        raw = registry.expression_for(rtype, p)
        if raw is None:
            continue
        expression = normalise_expression(raw, rtype)
        evaluate, fast = _evaluator(expression, rtype)
        components: list[ComponentPlan] = []
        if p.type == "composite":
            for comp in p.components:
                definition = registry.by_url(comp.definition)
                if definition is None:
                    break
                cexpr = normalise_expression(comp.expression, None)
                cevaluate, cfast = _evaluator(cexpr, None)
                components.append(ComponentPlan(definition.type, cexpr, cevaluate, cfast))
            else:
                plans.append(ParamPlan(code, p.type, expression, evaluate, fast, tuple(components),
                                       _composite_keys(expression, rtype, components)))
            continue
        plans.append(ParamPlan(code, p.type, expression, evaluate, fast, (), _keys(expression, rtype)))
    return tuple(plans)


# ---- extraction -----------------------------------------------------------------------------------------------------


def extract(resource: dict[str, Any], *, reference_engine: bool = False) -> list[tuple[str, Value]]:
    """Every index value of ``resource``: ``(parameter code, value)`` pairs, de-duplicated per parameter.

    ``reference_engine=True`` evaluates every expression with fhirpathpy instead of the fast path (slow; for
    tests that check the two agree)."""
    rtype = resource.get("resourceType")
    if not isinstance(rtype, str) or not is_resource_type(rtype):
        return []
    out: list[tuple[str, Value]] = []
    root_nodes: list[Node] = [(resource, rtype)]
    # the same node is often indexed by several parameters (code, combo-code, the composites): convert it once.
    # Keyed by id(); each entry keeps its object alive, so an id cannot be reused by another object meanwhile.
    memo: dict[tuple[int, str, str], tuple[Any, list[Value]]] = {}
    # composite components repeat too (``code`` is the first component of four composites)
    component_memo: dict[tuple[int, str], tuple[Any, list[Value]]] = {}

    def convert(ptype: str, data: Any, tk: str) -> list[Value]:
        key = (id(data), tk, ptype)
        hit = memo.get(key)
        if hit is not None:
            return hit[1]
        got = _converter(ptype, tk)(data, tk, resource)
        memo[key] = (data, got)
        return got

    def values_of(ptype: str, nodes: list[Node]) -> list[Value]:
        if len(nodes) == 1:
            return convert(ptype, *nodes[0])
        vals: list[Value] = []
        for data, tk in nodes:
            vals.extend(convert(ptype, data, tk))
        return vals

    def component_values(comp: ComponentPlan, node: Node) -> list[Value]:
        key = (id(node[0]), comp.expression)
        hit = component_memo.get(key)
        if hit is not None:
            return hit[1]
        got = values_of(comp.type, comp.evaluate([node], resource))
        if comp.type == "token":
            # a composite asks for codes; a CodeableConcept's text-only token would only multiply rows
            got = [v for v in got if v.__class__ is not TokenV or v.code is not None]  # type: ignore[union-attr]
        component_memo[key] = (node[0], got)
        return got

    memo_get = memo.get
    meta = resource.get("meta")
    meta_keys = tuple(meta) if meta.__class__ is dict else None
    for code, ptype, evaluate, components in _selected_plan(rtype, reference_engine, tuple(resource), meta_keys):
        nodes = evaluate(root_nodes, resource)
        if not nodes:
            continue
        if components:
            vals = _composite_values(components, nodes, component_values)
        else:
            if len(nodes) == 1:
                # convert() inlined for the common single node: ~25 parameters per resource take this path
                data, tk = nodes[0]
                key = (id(data), tk, ptype)
                hit = memo_get(key)
                if hit is None:
                    vals = _converter(ptype, tk)(data, tk, resource)
                    memo[key] = (data, vals)
                else:
                    vals = hit[1]
            else:
                vals = values_of(ptype, nodes)
            if ptype == "token":
                for node in nodes:
                    if node[1] == "Identifier":
                        _add_of_type(code, nodes, out)
                        break
        if not vals:
            continue
        if len(vals) == 1:
            out.append((code, vals[0]))
            continue
        seen: set[Value] = set()
        for v in vals:
            if v not in seen:
                seen.add(v)
                out.append((code, v))
    return out


def _add_of_type(code: str, nodes: list[Node], out: list[tuple[str, Value]]) -> None:
    seen: set[Value] = set()
    for data, tk in nodes:
        if tk == "Identifier":
            for v in of_type_values(data):
                if v not in seen:
                    seen.add(v)
                    out.append((code + OF_TYPE_SUFFIX, v))


_HotPlan = tuple[str, str, Evaluator, tuple[ComponentPlan, ...], tuple[str, ...], tuple[str, ...]]


@lru_cache(maxsize=None)
def _hot_plan(rtype: str, reference_engine: bool = False) -> tuple[_HotPlan, ...]:
    # plain tuples: unpacking them in the loop is cheaper than attribute access on ~50 plans per resource
    if not reference_engine:
        return tuple((p.code, p.type, p.evaluate, p.components, p.keys, _meta_keys(p, rtype))
                     for p in plan_for(rtype))
    return tuple(
        (p.code, p.type, fhirpathpy_evaluator(p.expression, rtype),
         tuple(ComponentPlan(c.type, c.expression, fhirpathpy_evaluator(c.expression, None), False)
               for c in p.components), (), ())
        for p in plan_for(rtype)
    )


_META_STEP = re.compile(r"\(*(\w+)\.meta\.(\w+)(?![\w(])")


def _meta_keys(plan: ParamPlan, rtype: str) -> tuple[str, ...]:
    """For ``_lastUpdated``, ``_profile``, ``_tag``… (``X.meta.profile``): the keys of ``meta`` the expression reads
    first, so that a resource whose meta holds only versionId and lastUpdated skips four of the five; () when the
    expression is not of that shape (no restriction)."""
    if plan.keys != ("meta",) or plan.components or not plan.fast:
        return ()
    keys: set[str] = set()
    for alt in split_union(plan.expression) or ():
        m = _META_STEP.match(alt)
        if m is None or m.group(1) != rtype:
            return ()
        variants = element_variants("Meta", m.group(2), None)
        if not variants:
            return ()
        keys.update(key for key, _child in variants)
    return tuple(sorted(keys))


_SelectedPlan = tuple[str, str, Evaluator, tuple[ComponentPlan, ...]]
# (type, reference engine) → the resource's top-level keys → the plans that can yield anything for them, in plan
# order. Resources of a type come in few shapes (14 key tuples over 10,000 generated resources), so this replaces
# ~45 per-parameter key tests of an Observation by one dict look-up. Bounded: a pathological stream of shapes
# only stops being cached.
_SelectionKey = tuple[tuple[str, ...], tuple[str, ...] | None]  # (top-level keys, keys of meta)
_selections: dict[tuple[str, bool], dict[_SelectionKey, tuple[_SelectedPlan, ...]]] = {}
_SELECTIONS_PER_TYPE = 512


def _selected_plan(rtype: str, reference_engine: bool, keys: tuple[str, ...],
                   meta: tuple[str, ...] | None = None) -> tuple[_SelectedPlan, ...]:
    """``keys``: the resource's top-level keys; ``meta``: the keys of its ``meta`` (None: no ``meta`` object, so no
    restriction by them)."""
    per_type = _selections.get((rtype, reference_engine))
    if per_type is None:
        per_type = _selections.setdefault((rtype, reference_engine), {})
    cache_key = (keys, meta)
    hit = per_type.get(cache_key)
    if hit is not None:
        return hit
    present = frozenset(keys)
    in_meta = frozenset(meta or ())
    selected = tuple(
        (code, ptype, evaluate, components)
        for code, ptype, evaluate, components, plan_keys, meta_keys in _hot_plan(rtype, reference_engine)
        if (not plan_keys or not present.isdisjoint(plan_keys))
        and (not meta_keys or meta is None or not in_meta.isdisjoint(meta_keys))
    )
    if len(per_type) < _SELECTIONS_PER_TYPE:
        per_type[cache_key] = selected
    return selected


def _composite_values(components: tuple[ComponentPlan, ...], nodes: list[Node],
                      component_values: Callable[[ComponentPlan, Node], list[Value]]) -> list[Value]:
    out: list[Value] = []
    last = len(components) - 1
    for node in nodes:
        # the last component (a value of some type) is the selective one: try it first
        tail = component_values(components[last], node)
        if not tail:
            continue
        per_component = []
        for comp in components[:last]:
            vals = component_values(comp, node)
            if not vals:
                break
            per_component.append(vals)
        else:
            per_component.append(tail)
            out.extend(CompositeV(tuple(parts)) for parts in product(*per_component))
    return out


# ---- _text and _content ---------------------------------------------------------------------------------------------

_TAG = re.compile(r"<[^>]*>")


def _narrative_text(div: str) -> str:
    return html.unescape(_TAG.sub(" ", div))


def text_content(resource: dict[str, Any]) -> tuple[str, str]:
    """``(narrative, content)`` for ``_text`` and ``_content``: the narrative's text without markup, and every
    string value of the resource (the narrative as text, not markup; not ``meta.versionId``/``lastUpdated``), each
    normalised like string search."""
    narrative = ""
    text = resource.get("text")
    if isinstance(text, dict) and isinstance(text.get("div"), str):
        narrative = _narrative_text(text["div"])
    meta = resource.get("meta")
    if meta.__class__ is dict and ("versionId" in meta or "lastUpdated" in meta):
        # the version's own stamp is not content: every write would add its number and instant as words
        resource = {**resource, "meta": {k: v for k, v in meta.items() if k not in SERVER_META}}
    parts: list[str] = []
    _collect_strings(resource, parts, top=True)
    joined = " ".join(parts)
    if joined.isascii():
        # all ASCII (nearly always): one lowercase-and-split over the whole text gives the same words, in the same
        # order, as normalising part by part
        return fast_normalize(narrative), " ".join(joined.lower().split())
    # part by part, so the ASCII shortcut applies to most parts (same result: normalising splits on whitespace)
    normalised = (fast_normalize(p) for p in parts)
    return fast_normalize(narrative), " ".join(p for p in normalised if p)


def _collect_strings(value: Any, parts: list[str], top: bool = False) -> None:
    if isinstance(value, str):
        parts.append(value)
    elif isinstance(value, dict):
        append = parts.append
        for key, item in value.items():
            cls = item.__class__
            if cls is str:
                if key == "div":
                    append(_narrative_text(item))
                elif key != "resourceType" or not top:
                    append(item)
            elif key == "resourceType" and top:
                continue
            elif cls is dict or cls is list:
                _collect_strings(item, parts)
            elif cls is bool or cls is int or cls is FhirDecimal or cls is float or item is None:
                continue  # holds no string
            elif key == "div" and isinstance(item, str):  # anything else (a str or dict subclass): as always
                append(_narrative_text(item))
            else:
                _collect_strings(item, parts)
    elif isinstance(value, list):
        for item in value:
            cls = item.__class__
            if cls is str:
                parts.append(item)
            elif cls is dict or cls is list:
                _collect_strings(item, parts)
            elif cls is not bool and cls is not int and cls is not FhirDecimal and cls is not float \
                    and item is not None:
                _collect_strings(item, parts)


def fast_path_coverage(rtypes: Iterable[str]) -> dict[str, tuple[int, int]]:
    """``{type: (parameters on the fast path, parameters indexed)}``, counting a composite as fast only when its
    expression and all its components are."""
    out = {}
    for rtype in rtypes:
        plans = plan_for(rtype)
        fast = sum(1 for p in plans if p.fast and all(c.fast for c in p.components))
        out[rtype] = (fast, len(plans))
    return out
