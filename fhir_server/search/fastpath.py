"""Direct accessors over resource dicts for the FHIRPath shapes that SearchParameter expressions actually use.

Extraction runs on every write, and fhirpathpy evaluates an expression in 25–200 µs, so interpreting ~40
expressions per Observation would cost milliseconds. Yet 1,728 of the 1,733 distinct alternatives in the R4
SearchParameters are plain navigation. This module compiles those into closures over the JSON dicts:

    alternative := step-path | "(" step-path " as " Type ")" steps
    step-path   := Root steps          (Root: the resource type, Resource or DomainResource)
    steps       := ( "." name | ".as(T)" | ".ofType(T)" | ".where(resolve() is T)" | ".where(name='v')"
                   | ".extension('url')" )*

joined with top-level ``|``. Relative expressions (composite components such as ``value.as(Quantity)``) compile
the same way without the root. Anything else (``Bundle.entry[0].resource``, ``%resource``, ``exists()``) is left
to fhirpathpy: :func:`compile_path` answers None for it.

A result node is ``(json value, type key)``; type keys are those of :mod:`resources.model` (``CodeableConcept``,
``code``, ``Observation.component``), and nodes of type ``Resource`` take their ``resourceType``. Choice elements
are resolved through the model (``value`` finds ``valueQuantity``), and a type filter right after a choice only
looks up the matching JSON names.

Semantics follow the FHIRPath that search needs, deliberately the same as the fhirpathpy setup in
:mod:`fhir_server.search.extract` (tests compare the two on every parameter):

* ``as`` behaves as ``ofType`` (the R4 expressions apply ``as`` to collections, which strict FHIRPath rejects),
  and a primitive type matches only itself (:func:`type_matches`);
* ``extension(url)`` returns every matching extension, not just the first;
* ``resolve() is T`` needs only the target's type: from the reference string (``Patient/1``, an absolute URL
  ending in ``Patient/1``, ``#id`` of a contained resource), else from ``Reference.type``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from fhirpathpy.models import models

from resources.model import is_resource_type, primitive_types, type_info

__all__ = ["Node", "Evaluator", "items", "compile_path", "root_keys", "element_variants", "split_union", "is_a",
           "parent_type", "type_matches", "reference_type", "parse_reference", "type_name", "normalise_expression"]

Node = tuple[Any, str]  # (JSON value, type key)
Evaluator = Callable[[list[Node], dict[str, Any]], list[Node]]  # (input nodes, root resource) -> result nodes
_Step = Callable[[list[Node], dict[str, Any]], list[Node]]

_TYPE2PARENT: dict[str, str] = models["r4"]["type2Parent"]


def items(value: Any) -> list[Any] | tuple[()]:
    """An array element's items, or nothing when the JSON holds something else there (stored resources are
    validated, but extraction must not be the place that fails on a malformed one)."""
    return value if value.__class__ is list else ()


def type_name(type_key: str) -> str:
    """The FHIR type of a node's type key: backbone paths (``Observation.component``) are BackboneElements."""
    return "BackboneElement" if "." in type_key else type_key


def parent_type(name: str) -> str | None:
    """The FHIR type ``name`` derives from (``Age`` → ``Quantity``, ``code`` → ``string``), in fhirpathpy's model."""
    return _TYPE2PARENT.get(name)


@lru_cache(maxsize=4096)
def is_a(type_key: str, wanted: str) -> bool:
    """FHIRPath ``is``: the same type hierarchy fhirpathpy uses (``Age`` is a ``Quantity``, ``code`` a
    ``string``, ``canonical`` a ``uri``, every resource a ``Resource``)."""
    name: str | None = type_name(type_key)
    while name:
        if name == wanted:
            return True
        name = _TYPE2PARENT.get(name)
    return False


@lru_cache(maxsize=4096)
def type_matches(type_key: str, wanted: str) -> bool:
    """``ofType``/``as`` as search extraction reads them: a complex type matches its ancestors (an ``Age`` is a
    ``Quantity``), a primitive only itself. Choice variants of primitive types are different search parameters
    (``ConceptMap.source as uri`` is ``source-uri``; ``sourceCanonical`` belongs to ``source``), although FHIR
    derives ``canonical`` from ``uri`` and ``code`` from ``string``."""
    if type_key in _primitive_names():
        return type_key == wanted
    return is_a(type_key, wanted)


@lru_cache(maxsize=1)
def _primitive_names() -> frozenset[str]:
    return primitive_types()


# ---- references ---------------------------------------------------------------------------------------------------

_ID = r"[A-Za-z0-9\-.]{1,64}"
_RELATIVE = re.compile(rf"([A-Z][A-Za-z]+)/({_ID})(?:/_history/{_ID})?")
_ABSOLUTE_TAIL = re.compile(rf".*/([A-Z][A-Za-z]+)/({_ID})(?:/_history/{_ID})?")


def parse_reference(ref: str) -> tuple[str | None, str | None, str | None]:
    """``(type, id, url)`` of a literal reference.

    ``Patient/1`` (and ``Patient/1/_history/2``) → ("Patient", "1", None); an absolute URL that ends in a typed id
    → type and id plus the URL as written; ``urn:uuid:…``/``urn:oid:…`` and other URLs → URL only; a canonical
    ``http://x|1.0`` → its URL without the version. A bare id (``123``) keeps the id with no type. ``#x`` (a
    contained resource) is the URL ``#x``; its type is found by :func:`reference_type`.
    """
    if not ref:
        return None, None, None
    m = _RELATIVE.fullmatch(ref)
    if m is not None and is_resource_type(m.group(1)):
        return m.group(1), m.group(2), None
    if ref.startswith("#") or ref.startswith("urn:"):
        return None, None, ref
    if "://" in ref:
        url = ref.split("|", 1)[0]
        m = _ABSOLUTE_TAIL.fullmatch(url)
        if m is not None and is_resource_type(m.group(1)):
            return m.group(1), m.group(2), url
        return None, None, url
    if re.fullmatch(_ID, ref):
        return None, ref, None
    return None, None, ref


def reference_type(ref: Any, root: dict[str, Any]) -> str | None:
    """The type of what a Reference points at, as far as the reference itself tells (no store look-up)."""
    if not isinstance(ref, dict):
        return None
    literal = ref.get("reference")
    if isinstance(literal, str):
        if literal.startswith("#"):
            for contained in items(root.get("contained")):
                if isinstance(contained, dict) and contained.get("id") == literal[1:]:
                    rtype = contained.get("resourceType")
                    return rtype if isinstance(rtype, str) else None
            return None
        rtype = parse_reference(literal)[0]
        if rtype is not None:
            return rtype
    declared = ref.get("type")
    if isinstance(declared, str) and declared:
        # Reference.type is a type name or a StructureDefinition URL ending in one
        name = declared.rsplit("/", 1)[-1]
        return name if is_resource_type(name) else None
    return None


# ---- expression text ----------------------------------------------------------------------------------------------

_AS_FUNCTION = re.compile(r"\.as\((\w+)\)")
_AS_OPERATOR = re.compile(r"\(([A-Za-z_%][\w.]*(?:\([^()]*\))?(?:\.[\w]+(?:\([^()]*\))?)*) as (\w+)\)")


def normalise_expression(expression: str, rtype: str | None) -> str:
    """The expression as both engines evaluate it: ``as`` → ``ofType`` (see module docstring), the R4 typo
    ``as(DateTime)`` → ``dateTime``, and ``Resource.``/``DomainResource.`` roots → the concrete type (fhirpathpy
    roots a path at the resource only by its own type name)."""
    text = _AS_FUNCTION.sub(r".ofType(\1)", expression)
    text = _AS_OPERATOR.sub(r"(\1.ofType(\2))", text)
    text = text.replace("ofType(DateTime)", "ofType(dateTime)")
    if rtype is not None:
        text = re.sub(r"(?<![\w.%'/])(?:DomainResource|Resource)\.", rtype + ".", text)
    return text


# ---- compiler -----------------------------------------------------------------------------------------------------

_STEP = re.compile(
    r"\.(?:ofType\((?P<type>\w+)\)"
    r"|where\(resolve\(\) is (?P<resolved>\w+)\)"
    r"|where\((?P<field>\w+)\s*=\s*'(?P<literal>[^'\\]*)'\)"
    r"|extension\('(?P<url>[^'\\]*)'\)"
    r"|(?P<name>[A-Za-z_]\w*))"
)
_HEAD = re.compile(r"[A-Za-z_]\w*")


def split_union(expression: str) -> list[str] | None:
    parts: list[str] = []
    depth = 0
    quoted = False
    start = 0
    for i, ch in enumerate(expression):
        if ch == "'":
            quoted = not quoted
        elif quoted:
            continue
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "|" and depth == 0:
            parts.append(expression[start:i].strip())
            start = i + 1
    if quoted or depth:
        return None
    parts.append(expression[start:].strip())
    return parts


@lru_cache(maxsize=None)
def element_variants(type_key: str, name: str, only: str | None) -> tuple[tuple[str, str], ...]:
    """JSON names and child type keys of element ``name`` of ``type_key`` (several for a choice element),
    restricted to types that are ``only`` when a type filter follows the step."""
    info = type_info(type_key)
    if info is None:
        return ()
    out = []
    for el in info.elements:
        if el.name != name:
            continue
        child = el.child_type_key or el.type_code
        if only is not None and child != "Resource" and not type_matches(child, only):
            continue
        out.append((el.json_name, child))
    return tuple(out)


def _child_step(name: str, only: str | None) -> _Step:
    cache: dict[str, tuple[tuple[str, str], ...]] = {}

    def run(nodes: list[Node], root: dict[str, Any]) -> list[Node]:
        if len(nodes) == 1:
            # one input node and an element that is not a choice nor a resource: most steps of most expressions
            data, tk = nodes[0]
            if data.__class__ is not dict:
                return []
            variants = cache.get(tk)
            if variants is None:
                variants = cache[tk] = element_variants(tk, name, only)
            if len(variants) == 1 and variants[0][1] != "Resource":
                key, child = variants[0]
                value = data.get(key)
                if value is None:
                    return []
                if value.__class__ is list:
                    return [(item, child) for item in value if item is not None]
                return [(value, child)]
        out: list[Node] = []
        append = out.append
        dynamic = False  # a Resource-typed child whose type only its data tells
        for data, tk in nodes:
            if data.__class__ is not dict:
                continue
            variants = cache.get(tk)
            if variants is None:
                variants = cache[tk] = element_variants(tk, name, only)
            for key, child in variants:
                value = data.get(key)
                if value is None:
                    continue
                if child == "Resource":
                    dynamic = True
                    if value.__class__ is list:
                        out.extend(_resource_node(item) for item in value if item is not None)
                    else:
                        append(_resource_node(value))
                elif value.__class__ is list:
                    for item in value:
                        if item is not None:
                            append((item, child))
                else:
                    append((value, child))
        if dynamic and only is not None:
            out = [n for n in out if type_matches(n[1], only)]
        return out

    return run


def _resource_node(value: Any) -> Node:
    rtype = value.get("resourceType") if isinstance(value, dict) else None
    return value, rtype if isinstance(rtype, str) and is_resource_type(rtype) else "Resource"


def _type_step(wanted: str) -> _Step:
    def run(nodes: list[Node], root: dict[str, Any]) -> list[Node]:
        return [n for n in nodes if type_matches(n[1], wanted)]

    return run


def _resolve_step(wanted: str) -> _Step:
    def run(nodes: list[Node], root: dict[str, Any]) -> list[Node]:
        out = []
        for node in nodes:
            target = reference_type(node[0], root)
            if target is not None and is_a(target, wanted):
                out.append(node)
        return out

    return run


def _where_step(field: str, literal: str) -> _Step:
    def run(nodes: list[Node], root: dict[str, Any]) -> list[Node]:
        return [n for n in nodes if n[0].__class__ is dict and n[0].get(field) == literal]

    return run


def _extension_step(url: str) -> _Step:
    def run(nodes: list[Node], root: dict[str, Any]) -> list[Node]:
        out: list[Node] = []
        for data, _tk in nodes:
            if data.__class__ is not dict:
                continue
            for ext in items(data.get("extension")):
                if ext.__class__ is dict and ext.get("url") == url:
                    out.append((ext, "Extension"))
        return out

    return run


def _compile_steps(text: str, pos: int) -> list[tuple[str, str | tuple[str, str]]] | None:
    """Tokenise ``.step.step…`` from ``pos`` to the end into (kind, argument) pairs; None if anything is left."""
    steps: list[tuple[str, str | tuple[str, str]]] = []
    while pos < len(text):
        m = _STEP.match(text, pos)
        if m is None:
            return None
        if m.group("type") is not None:
            steps.append(("type", m.group("type")))
        elif m.group("resolved") is not None:
            steps.append(("resolve", m.group("resolved")))
        elif m.group("field") is not None:
            steps.append(("where", (m.group("field"), m.group("literal"))))
        elif m.group("url") is not None:
            steps.append(("extension", m.group("url")))
        else:
            steps.append(("child", m.group("name")))
        pos = m.end()
    return steps


def _build(steps: list[tuple[str, Any]]) -> list[_Step]:
    built: list[_Step] = []
    i = 0
    while i < len(steps):
        kind, arg = steps[i]
        if kind == "child":
            # fuse "name.ofType(T)" so a choice element looks up only the JSON names of type T
            if i + 1 < len(steps) and steps[i + 1][0] == "type":
                built.append(_child_step(arg, steps[i + 1][1]))
                i += 2
                continue
            built.append(_child_step(arg, None))
        elif kind == "type":
            built.append(_type_step(arg))
        elif kind == "resolve":
            built.append(_resolve_step(arg))
        elif kind == "where":
            built.append(_where_step(*arg))
        else:
            built.append(_extension_step(arg))
        i += 1
    return built


def _compile_alternative(alt: str, rtype: str | None) -> list[_Step] | None:
    """Steps of one alternative. With ``rtype``, the alternative must start at the root; it then evaluates
    nothing (an empty step list is the root itself) if the root names another type."""
    text = alt.strip()
    if text.startswith("("):
        # "(path.ofType(T))rest" was "(path as T)rest" before normalisation; "(path)rest" is just grouping
        depth = 0
        close = -1
        for i, ch in enumerate(text):
            if ch == "(":
                depth += 1
            elif ch == ")":
                depth -= 1
                if depth == 0:
                    close = i
                    break
        if close < 0:
            return None
        inner = _compile_alternative(text[1:close], rtype)
        if inner is None:
            return None
        rest = _compile_steps(text, close + 1)
        if rest is None:
            return None
        return inner + _build(rest)
    if rtype is not None:
        m = _HEAD.match(text)
        if m is None:
            return None
        head = m.group(0)
        steps = _compile_steps(text, m.end())
        if steps is None:
            return None
        if head not in (rtype, "Resource", "DomainResource"):
            return [_nothing]
        return _build(steps)
    steps = _compile_steps("." + text, 0)
    if steps is None:
        return None
    return _build(steps)


def _nothing(nodes: list[Node], root: dict[str, Any]) -> list[Node]:
    return []


def compile_path(expression: str, rtype: str | None) -> Evaluator | None:
    """An evaluator for a normalised expression (see :func:`normalise_expression`), or None when it uses
    anything beyond the shapes above. ``rtype`` roots the expression at a resource of that type; None compiles
    a relative expression, evaluated on whatever nodes it is given."""
    alternatives = split_union(expression)
    if alternatives is None or not all(alternatives):
        return None
    compiled = []
    for alt in alternatives:
        steps = _compile_alternative(alt, rtype)
        if steps is None:
            return None
        compiled.append(tuple(steps))

    if len(compiled) == 1:
        only = compiled[0]
        if len(only) == 1:
            return only[0]

        def run_one(nodes: list[Node], root: dict[str, Any]) -> list[Node]:
            for step in only:
                if not nodes:
                    return nodes
                nodes = step(nodes, root)
            return nodes

        return run_one

    def run_union(nodes: list[Node], root: dict[str, Any]) -> list[Node]:
        out: list[Node] = []
        for steps in compiled:
            current = nodes
            for step in steps:
                if not current:
                    break
                current = step(current, root)
            out.extend(current)
        return out

    return run_union


def root_keys(expression: str, rtype: str) -> frozenset[str] | None:
    """The JSON keys of the resource that a rooted expression can start from: when the resource has none of
    them, the expression is empty and need not run (most parameters of a type are absent from any one resource).
    None when some alternative does not start with an element of the root (it may yield without any key)."""
    alternatives = split_union(expression)
    if alternatives is None:
        return None
    keys: set[str] = set()
    for alt in alternatives:
        text = alt.lstrip("(").strip()
        m = _HEAD.match(text)
        if m is None:
            return None
        if m.group(0) not in (rtype, "Resource", "DomainResource"):
            continue  # evaluates to nothing for this type
        step = _STEP.match(text, m.end())
        if step is not None and step.group("url") is not None:
            keys.add("extension")  # .extension('url') reads the root's "extension" array only
            continue
        if step is None or step.group("name") is None:
            return None
        variants = element_variants(rtype, step.group("name"), None)
        if not variants:
            return None
        after = _STEP.match(text, step.end())
        if after is not None and after.group("type") is not None:
            # "value.ofType(Quantity)" is one fused step (see _build) that reads only the variants of that type
            variants = element_variants(rtype, step.group("name"), after.group("type"))
        keys.update(key for key, _child in variants)
    return frozenset(keys)
