"""Evaluates a FHIRPath Patch ``path`` to *locations* inside a resource dict, not just to values.

Owns the question "which JSON member (and array slot) does this FHIRPath expression select?", which FHIRPath Patch
needs in order to write, and which fhirpathpy cannot answer: it returns values, and primitive values (``"Peter"``,
``True``, ``Decimal("72.50")``) carry no identity that could be traced back to the dict tree.

How it works:

* The expression is parsed with fhirpathpy's own ANTLR grammar, but with an error listener that raises, because
  ``fhirpathpy.parser.parse`` silently "recovers" from syntax errors (``Patient..name`` parses).
* The navigation steps are evaluated here, over :class:`Located` nodes that remember their holder object, member
  name and array index: member access (with choice types resolved through fhirpathpy's R4 model, so
  ``Observation.value`` finds ``valueQuantity``), ``[n]``, ``first()``, ``last()``, ``tail()``, ``skip()``,
  ``take()``, ``single()``, ``ofType()``, ``as``, ``extension(url)``, ``select()``, ``resolve()`` of contained
  references, ``|``, ``$this`` and ``%resource``.
* ``where()`` criteria, index arguments and other constants are evaluated by fhirpathpy, one candidate at a time, on
  a copy with the right base type, so the whole FHIRPath function library is available inside the criteria.
* A primitive and its ``_name`` companion (id/extensions) form one node, as in the FHIR data model. fhirpathpy
  instead appends the companion entries as extra items, which shifts ``last()`` and ``[n]`` past the real values and
  makes ``given = 'Jim'`` false when ``_given`` exists; criteria are therefore evaluated on copies without the
  companions.

Anything else (operators, literals, ``exists()``...) computes a value rather than selecting elements and is rejected
with a :class:`PathError` that names the construct.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from antlr4 import CommonTokenStream, InputStream, Token
from antlr4.error.ErrorListener import ErrorListener
from antlr4.tree.Tree import ParseTreeWalker
from fhirpathpy import apply_parsed_path
from fhirpathpy.engine.nodes import ResourceNode
from fhirpathpy.models import models
from fhirpathpy.parser.ASTPathListener import ASTPathListener
from fhirpathpy.parser.generated.FHIRPathLexer import FHIRPathLexer
from fhirpathpy.parser.generated.FHIRPathParser import FHIRPathParser

Ast = dict[str, Any]

_R4: dict[str, Any] = models["r4"]

# FHIR primitive type names; a choice suffix such as "DateTime" names the primitive "dateTime".
PRIMITIVE_TYPES = frozenset(
    {
        "base64Binary", "boolean", "canonical", "code", "date", "dateTime", "decimal", "id", "instant", "integer",
        "markdown", "oid", "positiveInt", "string", "time", "unsignedInt", "uri", "url", "uuid", "xhtml",
    }
)  # fmt: skip


class PathError(Exception):
    """The path cannot be evaluated to element locations; the message says why, for a client to read."""


# --------------------------------------------------------------------------------------------------------------------
# The R4 type model (from fhirpathpy's generated tables)
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Member:
    """How an element name maps to JSON in one particular object."""

    key: str  # the JSON member actually present or to be used, e.g. "valueQuantity"
    type_path: str  # "HumanName", "string", or a backbone path such as "Patient.contact"
    choice_of: str | None  # "value" when ``key`` is one type of the choice element ``value[x]``


class TypeModel:
    """Element paths, types and choice types of FHIR R4, as fhirpathpy's model tables describe them."""

    def __init__(self, model: dict[str, Any]) -> None:
        self.path_to_type: dict[str, str] = model["path2Type"]
        self.choices: dict[str, list[str]] = model["choiceTypePaths"]
        self.defined_elsewhere: dict[str, str] = model["pathsDefinedElsewhere"]
        self.parent_type: dict[str, str] = model["type2Parent"]
        # Backbone elements (Patient.contact) have no entry of their own, only their children do.
        known: set[str] = set(self.path_to_type) | set(self.choices)
        for path in list(known):
            parts = path.split(".")
            known.update(".".join(parts[:n]) for n in range(2, len(parts)))
        self.known_paths = frozenset(known)

    def ancestors(self, type_path: str) -> list[str]:
        if "." in type_path and not type_path.startswith("System."):
            return ["BackboneElement", "Element"]
        out: list[str] = []
        current = self.parent_type.get(type_path)
        while current and current not in out:
            out.append(current)
            current = self.parent_type.get(current)
        return out

    def element_path(self, type_path: str, name: str) -> tuple[str, list[str] | None] | None:
        """The canonical path of element ``name`` of ``type_path`` and its choice types, or None if unknown."""
        for base in [type_path, *self.ancestors(type_path)]:
            path = f"{base}.{name}"
            path = self.defined_elsewhere.get(path, path)
            if path in self.choices:
                return path, self.choices[path]
            if path in self.known_paths:
                return path, None
        return None

    def variant_type(self, element_path: str, suffix: str) -> str:
        found = self.path_to_type.get(element_path + suffix)
        if found:
            return found
        return suffix_to_type(suffix)

    def choice_split(self, type_path: str, key: str) -> tuple[str, str, str] | None:
        """``valueQuantity`` of a type with ``value[x]`` → (element path, "value", "Quantity")."""
        for cut in range(1, len(key)):
            if not key[cut].isupper():
                continue
            found = self.element_path(type_path, key[:cut])
            if found and found[1] and key[cut:] in found[1]:
                return found[0], key[:cut], key[cut:]
        return None

    def member(self, obj: dict[str, Any], type_path: str, name: str) -> Member | None:
        """Resolves ``name`` within ``obj`` (whose type is ``type_path``); None when a choice element is absent."""
        found = self.element_path(type_path, name)
        if found and found[1]:
            element, suffixes = found
            for suffix in suffixes:
                if name + suffix in obj or f"_{name}{suffix}" in obj:
                    return Member(name + suffix, self.variant_type(element, suffix), name)
            return None
        split = self.choice_split(type_path, name)
        if split:
            element, base, suffix = split
            return Member(name, self.variant_type(element, suffix), base)
        if found:
            path = found[0]
            return Member(name, self.path_to_type.get(path, path), None)
        # Unknown to the model: still navigable, so paths into unusual content work; validation judges it later.
        return Member(name, f"{type_path}.{name}", None)

    def type_name(self, type_path: str) -> str:
        if "." in type_path and not type_path.startswith("System."):
            return "BackboneElement"
        return type_path

    def is_a(self, type_path: str, wanted: str) -> bool:
        name = self.type_name(type_path)
        wanted = wanted.strip("`")
        if wanted.startswith("FHIR."):
            wanted = wanted[5:]
        if name == wanted:
            return True
        if name.startswith("System.") and wanted == name[7:]:
            return True
        return wanted in self.ancestors(name)


def suffix_to_type(suffix: str) -> str:
    """``DateTime`` → ``dateTime``; complex type names (``Quantity``) stay as they are."""
    lowered = suffix[:1].lower() + suffix[1:]
    return lowered if lowered in PRIMITIVE_TYPES else suffix


MODEL = TypeModel(_R4)


# --------------------------------------------------------------------------------------------------------------------
# Located nodes
# --------------------------------------------------------------------------------------------------------------------


@dataclass(eq=False, slots=True)
class Located:
    """One element of the resource together with where it lives, so it can be replaced or removed in place."""

    value: Any  # the element's JSON value; None for a primitive that has only an id/extensions
    parent: Located | None  # the element this one belongs to; None for the resource being patched
    holder: dict[str, Any] | None  # the JSON object that has ``key``: the parent's object or its ``_name`` companion
    holder_location: str  # JSON-shaped location of ``holder``, e.g. "Patient.name[0]" or "Patient._birthDate"
    holder_type: str  # type of ``holder``: the parent's type, or "Element" for a primitive's companion
    key: str
    index: int | None  # slot in ``holder[key]`` when that member is an array
    type_path: str
    choice_of: str | None = None
    children_cache: dict[str, list[Located]] = field(default_factory=dict)

    @property
    def location(self) -> str:
        """Where the element is, in the shape fhirkit reports issues: ``Patient.name[0].given[1]``."""
        if self.holder is None:
            return self.type_path
        return self.member_location(self.key)

    def member_location(self, key: str) -> str:
        suffix = "" if self.index is None else f"[{self.index}]"
        return f"{self.holder_location}.{key}{suffix}"

    @property
    def companion_location(self) -> str:
        return self.member_location(f"_{self.key}")

    @property
    def is_resource_root(self) -> bool:
        return self.holder is None

    def companion(self) -> dict[str, Any] | None:
        """The ``_name`` object holding this primitive's id and extensions, if it has one."""
        if self.holder is None:
            return None
        found = self.holder.get(f"_{self.key}")
        if self.index is not None:
            found = found[self.index] if isinstance(found, list) and self.index < len(found) else None
        return found if isinstance(found, dict) else None

    def element_object(self) -> tuple[dict[str, Any] | None, str, str]:
        """The object that holds this element's children, its location and its type: for a complex element its
        own value; for a primitive its companion (children of primitives are only ``id`` and ``extension``)."""
        if isinstance(self.value, dict):
            return self.value, self.location, self.type_path
        return self.companion(), self.companion_location, "Element"


def _same_place(a: Located, b: Located) -> bool:
    return a.holder is b.holder and a.key == b.key and a.index == b.index


def _unique(nodes: list[Located]) -> list[Located]:
    out: list[Located] = []
    for node in nodes:
        if not any(_same_place(node, seen) for seen in out):
            out.append(node)
    return out


def children(node: Located, name: str) -> list[Located]:
    """The elements called ``name`` under ``node``, one per array slot, primitives paired with their companions."""
    if name == "resourceType":
        return []  # not an element: a patch must not be able to turn a Patient into something else
    obj, obj_location, obj_type = node.element_object()
    if obj is None:
        return []
    member = MODEL.member(obj, obj_type, name)
    if member is None:
        return []
    key = member.key
    value = obj.get(key)
    extras = obj.get(f"_{key}")
    found: list[Located] = []

    def make(item: Any, index: int | None) -> Located:
        type_path = item["resourceType"] if isinstance(item, dict) and "resourceType" in item else member.type_path
        return Located(item, node, obj, obj_location, obj_type, key, index, type_path, member.choice_of)

    if isinstance(value, list):
        # A slot is an element if it has a value or id/extensions; companion slots past the end of the value array
        # (malformed JSON) are not elements, so every located slot can be written through holder[key][index].
        companions = extras if isinstance(extras, list) else []
        for index, item in enumerate(value):
            if item is not None or (index < len(companions) and companions[index] is not None):
                found.append(make(item, index))
    elif value is not None or isinstance(extras, dict):
        found.append(make(value, None))
    return found


# --------------------------------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------------------------------


class _RaiseOnSyntaxError(ErrorListener):  # type: ignore[misc]
    def syntaxError(self, recognizer: Any, offendingSymbol: Any, line: int, column: int, msg: str, e: Any) -> None:
        raise PathError(f"FHIRPath syntax error at column {column + 1}: {msg}")


def _quote_keyword_members(expression: str) -> str:
    """``Patient.text.div`` → ``Patient.text.`div```: ``div``/``mod`` are operators in the FHIRPath grammar, yet
    Narrative.div is a real element and the specification's own patch test cases address it unquoted. A member
    access can never be an operator, so quoting it after a '.' (outside string literals) changes no meaning."""
    out: list[str] = []
    i = 0
    quote: str | None = None
    while i < len(expression):
        ch = expression[i]
        if quote:
            out.append(ch)
            if ch == "\\" and i + 1 < len(expression):
                out.append(expression[i + 1])
                i += 2
                continue
            if ch == quote:
                quote = None
            i += 1
            continue
        if ch in "'`":
            quote = ch
        if ch == ".":
            for word in ("div", "mod"):
                end = i + 1 + len(word)
                if expression[i + 1 : end] == word and (end == len(expression) or not _ident_char(expression[end])):
                    out.append(f".`{word}`")
                    i = end
                    break
            else:
                out.append(ch)
                i += 1
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def _ident_char(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


def parse_path(expression: str) -> Ast:
    """Parses a FHIRPath expression to fhirpathpy's AST, rejecting anything the grammar does not accept."""
    if not isinstance(expression, str) or not expression.strip():
        raise PathError("the path is empty")
    lexer = FHIRPathLexer(InputStream(_quote_keyword_members(expression)))
    lexer.removeErrorListeners()
    lexer.addErrorListener(_RaiseOnSyntaxError())
    parser = FHIRPathParser(CommonTokenStream(lexer))
    parser.removeErrorListeners()
    parser.addErrorListener(_RaiseOnSyntaxError())
    try:
        tree = parser.expression()
    except RecursionError:
        raise PathError("the path is nested too deeply") from None
    trailing = parser.getCurrentToken()
    if trailing.type != Token.EOF:
        raise PathError(f"FHIRPath syntax error at column {trailing.column + 1}: unexpected {trailing.text!r}")
    listener = ASTPathListener()
    ParseTreeWalker().walk(listener, tree)
    root: Ast = listener.parentStack[0]
    return root["children"][0]


def split_last_member(ast: Ast) -> tuple[Ast | None, str] | None:
    """``Patient.name[0].given`` → (AST of ``Patient.name[0]``, "given"); None if the path does not end in a name.

    insert and move address a *list*, which may be empty or absent, so they find its holder and name instead of
    its items."""
    if ast["type"] == "InvocationExpression" and ast["children"][1]["type"] == "MemberInvocation":
        return ast["children"][0], _identifier(ast["children"][1])
    if ast["type"] == "TermExpression":
        term = ast["children"][0]
        if term["type"] == "InvocationTerm" and term["children"][0]["type"] == "MemberInvocation":
            return None, _identifier(term["children"][0])
    return None


def _identifier(node: Ast) -> str:
    """The name in a MemberInvocation / Identifier node, without the backticks of a delimited identifier."""
    while node["type"] != "Identifier":
        node = node["children"][0]
    text: str = node["terminalNodeText"][0]
    if text.startswith("`") and text.endswith("`"):
        text = text[1:-1]
    return text


def _describe(ast: Ast) -> str:
    return str(ast.get("text") or ast["type"])


# --------------------------------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------------------------------


def _without_companions(value: Any) -> Any:
    """A copy with the ``_name`` primitive companions left out (see module docstring for why)."""
    if isinstance(value, dict):
        return {k: _without_companions(v) for k, v in value.items() if not k.startswith("_")}
    if isinstance(value, list):
        return [_without_companions(v) for v in value]
    return value


class Locator:
    """Evaluates paths against one resource; the resource may be changed between calls (each call re-reads it)."""

    def __init__(self, resource: dict[str, Any]) -> None:
        self.resource = resource
        self._view: dict[str, Any] | None = None

    def root(self) -> Located:
        resource_type = str(self.resource.get("resourceType", "Resource"))
        return Located(self.resource, None, None, "", "", "", None, resource_type)

    def locate(self, ast: Ast, focus: list[Located] | None = None) -> list[Located]:
        self._view = None  # the resource may have changed since the last call
        try:
            return _unique(self._eval(ast, [self.root()] if focus is None else focus, top=focus is None))
        except RecursionError:
            raise PathError("the path is nested too deeply") from None

    # -- fhirpathpy for values ---------------------------------------------------------------------------------------

    def _fhirpathpy(self, subject: Any, type_path: str | None, ast: Ast) -> list[Any]:
        if self._view is None:
            self._view = _without_companions(self.resource)
        subject_node = subject if type_path is None else ResourceNode.create_node(subject, type_path)
        variables = {"resource": self._view, "rootResource": self._view}
        try:
            result: list[Any] = apply_parsed_path(subject_node, {"children": [ast]}, variables, _R4)
        except Exception as exc:  # fhirpathpy raises bare Exception/ValueError/KeyError for bad expressions
            raise PathError(f"cannot evaluate {_describe(ast)!r}: {exc or type(exc).__name__}") from None
        return result

    def constant(self, ast: Ast) -> Any:
        """A single value computed by fhirpathpy (an index, a URL...), relative to the resource."""
        if self._view is None:
            self._view = _without_companions(self.resource)
        values = self._fhirpathpy(self._view, None, ast)
        if len(values) != 1:
            raise PathError(f"{_describe(ast)!r} must give exactly one value, got {len(values)}")
        return values[0]

    def _integer(self, ast: Ast) -> int:
        value = self.constant(ast)
        if isinstance(value, bool) or not isinstance(value, int):
            raise PathError(f"{_describe(ast)!r} must be an integer")
        return value

    def _matches(self, function: Ast, node: Located) -> bool:
        if node.value is None:
            return False
        # ``where(...)`` itself is handed to fhirpathpy with the single candidate as its input, so $this, $index and
        # every function inside the criteria behave exactly as fhirpathpy defines them.
        call = {
            "type": "TermExpression",
            "terminalNodeText": [],
            "children": [{"type": "InvocationTerm", "terminalNodeText": [], "children": [function]}],
        }
        return bool(self._fhirpathpy(_without_companions(node.value), node.type_path, call))

    # -- navigation --------------------------------------------------------------------------------------------------

    def _eval(self, ast: Ast, focus: list[Located], top: bool = False) -> list[Located]:
        kind = ast["type"]
        if kind == "TermExpression":
            return self._eval(ast["children"][0], focus, top)
        if kind == "InvocationTerm":
            return self._invoke(ast["children"][0], focus, top)
        if kind == "ParenthesizedTerm":
            return self._eval(ast["children"][0], focus, top)
        if kind == "ExternalConstantTerm":
            name = _identifier(ast["children"][0]) if ast["children"][0].get("children") else ""
            if name in ("resource", "rootResource", "context"):
                return [self.root()]
            raise PathError(f"%{name} is not available in a patch path (only %resource)")
        if kind == "InvocationExpression":
            left = self._eval(ast["children"][0], focus, top)
            return self._invoke(ast["children"][1], left, False)
        if kind == "IndexerExpression":
            items = self._eval(ast["children"][0], focus, top)
            index = self._integer(ast["children"][1])
            return [items[index]] if 0 <= index < len(items) else []
        if kind == "TypeExpression" and ast["terminalNodeText"][:1] == ["as"]:
            items = self._eval(ast["children"][0], focus, top)
            wanted = _describe(ast["children"][1])
            return [n for n in items if MODEL.is_a(n.type_path, wanted)]
        if kind == "UnionExpression":
            return _unique(self._eval(ast["children"][0], focus, top) + self._eval(ast["children"][1], focus, top))
        if kind == "LiteralTerm":
            raise PathError(f"the literal {_describe(ast)} is a value, not an element of the resource")
        raise PathError(
            f"{kind.removesuffix('Expression').lower() or kind} expressions compute values and cannot select "
            "elements to patch; use navigation, [index], where(), first(), last(), ofType() or extension()"
        )

    def _invoke(self, ast: Ast, focus: list[Located], top: bool) -> list[Located]:
        kind = ast["type"]
        if kind == "MemberInvocation":
            name = _identifier(ast)
            delimited = ast["children"][0]["terminalNodeText"][0].startswith("`")
            if name[:1].isupper() and not delimited:
                # A type name filters resources, as in FHIRPath: "Patient.name" only applies to a Patient.
                matched = [n for n in focus if isinstance(n.value, dict) and n.value.get("resourceType") == name]
                if top and not matched and focus and focus[0].is_resource_root:
                    raise PathError(f"the path starts with {name!r} but the resource is a {focus[0].type_path}")
                return matched
            return [child for node in focus for child in _children_cached(node, name)]
        if kind == "ThisInvocation":
            return focus
        if kind == "FunctionInvocation":
            return self._function(ast, focus)
        raise PathError(f"{_describe(ast)!r} cannot be used in a patch path")

    def _function(self, ast: Ast, focus: list[Located]) -> list[Located]:
        functn = ast["children"][0]
        name = _identifier(functn["children"][0])
        params: list[Ast] = functn["children"][1]["children"] if len(functn["children"]) > 1 else []

        def arity(count: int) -> None:
            if len(params) != count:
                raise PathError(f"{name}() takes {count} argument{'s' if count != 1 else ''}, got {len(params)}")

        simple: dict[str, Callable[[], list[Located]]] = {
            "first": lambda: focus[:1],
            "last": lambda: focus[-1:],
            "tail": lambda: focus[1:],
        }
        if name in simple:
            arity(0)
            return simple[name]()
        if name == "single":
            arity(0)
            if len(focus) > 1:
                raise PathError(f"single() was given {len(focus)} elements")
            return focus
        if name in ("skip", "take"):
            arity(1)
            count = max(self._integer(params[0]), 0)
            return focus[count:] if name == "skip" else focus[:count]
        if name == "where":
            arity(1)
            return [node for node in focus if self._matches(ast, node)]
        if name == "ofType":
            arity(1)
            wanted = _describe(params[0])
            return [n for n in focus if MODEL.is_a(n.type_path, wanted)]
        if name == "extension":
            arity(1)
            url = self.constant(params[0])
            return [
                ext
                for node in focus
                for ext in _children_cached(node, "extension")
                if isinstance(ext.value, dict) and ext.value.get("url") == url
            ]
        if name == "select":
            arity(1)
            return _unique([found for node in focus for found in self._eval(params[0], [node], False)])
        if name == "resolve":
            arity(0)
            return [self._resolve_contained(node) for node in focus]
        raise PathError(
            f"{name}() is not supported in a patch path; it does not select elements (supported: where, first, last, "
            "tail, skip, take, single, ofType, extension, select, resolve)"
        )

    def _resolve_contained(self, node: Located) -> Located:
        reference = node.value.get("reference") if isinstance(node.value, dict) else None
        if not isinstance(reference, str) or not reference.startswith("#"):
            raise PathError("resolve() can only follow references to contained resources ('#id') in a patch path")
        for candidate in children(self.root(), "contained"):
            if isinstance(candidate.value, dict) and candidate.value.get("id") == reference[1:]:
                return candidate
        raise PathError(f"resolve(): no contained resource has id {reference[1:]!r}")


def _children_cached(node: Located, name: str) -> list[Located]:
    # select() and where() can visit a node many times within one evaluation; its children do not change meanwhile.
    if name not in node.children_cache:
        node.children_cache[name] = children(node, name)
    return node.children_cache[name]
