"""Binding: a parsed :class:`SearchRequest` + the SearchParameter registry → the typed expression tree.

Every clause becomes one node (its comma OR-list an ``Or``) and the clauses are ANDed. Binding is where a
parameter's *type* gives its values a meaning (search.html#ptypes): prefixes and precision ranges for dates,
numbers and quantities, ``system|code`` for tokens, ``Type/id`` for references, ``a$b`` for composites. It is also
where the request is judged:

* a parameter the type does not have, or a valid feature Aegis does not support, is *unknown*: dropped and
  reported in ``BindResult.unknown`` (lenient, the default) or refused with 400 (``Prefer: handling=strict``);
* a malformed value — bad date, bad prefix, a modifier that does not exist for the parameter's type, an empty
  value — is always a 400 naming the parameter, since guessing what the client meant could return wrong data.

Representation choices the rest of the engine relies on (also in the docstrings where they are made):

* ``identifier:of-type=tsys|tcode|value`` → ``CompositeQ(Param(T, "identifier:of-type", "composite"),
  (TokenQ(Param(T, "identifier:of-type#0", "token"), tsys, tcode), TokenQ(Param(T, "identifier:of-type#1",
  "token"), None, value)))``: the type and the value must come from the *same* Identifier, which is what a
  composite row expresses. Extraction emits, under the code ``"<code>:of-type"``, one
  ``CompositeV((TokenV(coding.system, coding.code), TokenV(identifier.system, identifier.value)))`` per
  (Identifier, Identifier.type.coding) pair of every identifier-typed token parameter.
* A chain without a type modifier through a reference that may point at several types binds to an ``Or`` of one
  ``Chain`` per target type (sorted by name) that has the next parameter; targets lacking it are skipped, and a
  reference with no declared targets needs the type modifier (400).
* System-level search (``rtype`` None): only common parameters (``Resource``/``DomainResource``), bound on the
  pseudo type ``"Resource"`` (``Param("Resource", "_lastUpdated", "date")``) meaning "whatever the resource's type".
  With ``_type=A,B``: ``And(TypeIn((A, B)), …)`` when every clause is common; otherwise each clause is bound on
  each listed type (a parameter missing from one of them is unknown) and the tree is
  ``Or(And(TypeIn((A,)), …A-bound…), And(TypeIn((B,)), …B-bound…))``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from functools import lru_cache

from fhir_server.search import registry
from fhir_server.search.ranges import date_range, number_range
from fhir_server.search.registry import SearchParamDef
from fhir_server.search.request import (
    Clause,
    Include,
    SearchRequest,
    SortKey,
    split_unescaped,
    unescape,
)
from fhir_server.search.tree import (
    And,
    Chain,
    CompositeQ,
    DateQ,
    Has,
    IdIn,
    ListQ,
    MatchAll,
    MatchNone,
    Missing,
    Node,
    Not,
    NumberQ,
    Or,
    Param,
    QuantityQ,
    RefIdentifierQ,
    RefQ,
    StringQ,
    TextSearch,
    TokenQ,
    TokenTextQ,
    TypeIn,
    UriQ,
    ValueSetQ,
)
from fhir_server.search.ucum import canonicalize
from fhir_server.search.values import normalize
from resources.model import element, is_resource_type
from resources.outcome import InvalidInput

__all__ = ["BindResult", "MAX_DEPTH", "PREFIXES", "SYSTEM_RTYPE", "UCUM", "bind"]

UCUM = "http://unitsofmeasure.org"
PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
SYSTEM_RTYPE = "Resource"  # the Param.rtype of common parameters in a system-level search
MAX_DEPTH = 4  # chain links + _has steps in one clause; each is a join, and untyped chains fan out

# modifiers each parameter type accepts besides :missing (reference also takes a resource type)
_TYPE_MODIFIERS: dict[str, frozenset[str]] = {
    "string": frozenset({"exact", "contains"}),
    "token": frozenset({"text", "not", "above", "below", "in", "not-in", "of-type"}),
    "reference": frozenset({"identifier"}),
    "date": frozenset(),
    "number": frozenset(),
    "quantity": frozenset(),
    "uri": frozenset({"above", "below"}),
    "composite": frozenset(),
    "special": frozenset(),
}
# R4's modifiers (plus R5's new names): a known modifier on the wrong type gets "not valid for", not "unknown"
_FHIR_MODIFIERS = frozenset({
    "missing", "exact", "contains", "not", "text", "in", "not-in", "below", "above", "identifier", "of-type",
    "type", "iterate", "code-text", "text-advanced",
})
# resource types that are not DomainResources, so have no narrative for _text
_NOT_DOMAIN = frozenset({"Bundle", "Binary", "Parameters"})
# parameters the engine implements itself: no index rows, no registry expression
_BUILTIN = frozenset({"_id", "_text", "_content", "_list"})

_ABSOLUTE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:")
_TYPED_ID = re.compile(r"([A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?")
_LIST_ID = re.compile(r"(?:List/)?([A-Za-z0-9\-.]{1,64})")
_PATH = re.compile(r"\(?\s*([A-Za-z][A-Za-z0-9_]*(?:\.[A-Za-z][A-Za-z0-9_]*)*)")


@dataclass(frozen=True, slots=True)
class BindResult:
    """The bound search.

    ``unknown`` lists what was dropped in lenient mode, in request order: clause names as given, and for result
    parameters ``"_sort=<key>"``, ``"_include=<value>"`` (``_revinclude``, ``:iterate`` alike) and ``_contained``.
    ``request`` is the request without what was dropped: self links print it, so they show what was searched.
    ``sort`` is ``_sort`` bound to parameters (``descending`` flag second).
    """

    tree: Node
    unknown: tuple[str, ...] = ()
    sort: tuple[tuple[Param, bool], ...] = ()
    request: SearchRequest = field(default_factory=SearchRequest)


class _Unsupported(Exception):
    """A parameter, or a feature of one, that this server does not have: lenient drops it, strict refuses it."""

    def __init__(self, message: str, message_id: str = "AEGIS-310") -> None:
        super().__init__(message)
        self.message = message
        self.message_id = message_id


@dataclass(frozen=True, slots=True)
class _Ctx:
    name: str  # the clause's parameter name as given: what every error points at
    base_url: str | None


def _bad(ctx: _Ctx, message: str, message_id: str) -> InvalidInput:
    return InvalidInput(f"{ctx.name}: {message}", expression=ctx.name, message_id=message_id)


def _any(nodes: list[Node]) -> Node:
    return nodes[0] if len(nodes) == 1 else Or(tuple(nodes))


# ---- the registry, as binding sees it ------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _common() -> dict[str, SearchParamDef]:
    """Parameters every resource type has (base Resource/DomainResource), by code."""
    out: dict[str, SearchParamDef] = {}
    for p in registry.all_params():
        if p.expression is None or p.code in registry.UNSUPPORTED_COMMON:
            continue
        if "Resource" in p.base or "DomainResource" in p.base:
            out.setdefault(p.code, p)
    return out


def _lookup(scope: str | None, code: str) -> SearchParamDef | None:
    return _common().get(code) if scope is None else registry.param(scope, code)


def _knows(scope: str, code: str) -> bool:
    """Whether ``scope`` has the parameter ``code`` (registry or built-in): a chain's candidate targets."""
    if code in _BUILTIN:
        return code != "_text" or scope not in _NOT_DOMAIN
    return registry.param(scope, code) is not None


def _is_identifier_param(scope: str | None, p: SearchParamDef) -> bool:
    """Whether a token parameter indexes Identifiers (``:of-type`` applies): some alternative of its expression
    is a path ending on an element of type Identifier, or casts to Identifier."""
    expr = registry.expression_for(scope, p) if scope is not None else p.expression
    if not expr:
        return False
    for alt in expr.split("|"):
        alt = alt.strip()
        if re.search(r"\bas\s+Identifier\b|ofType\(Identifier\)", alt):
            return True
        m = _PATH.match(alt)
        if m is None:
            continue
        segments = m.group(1).split(".")
        type_key = segments[0]
        for seg in segments[1:]:
            el = element(type_key, seg)
            if el is None:
                type_key = ""
                break
            type_key = el.child_type_key or el.type_code
        if type_key == "Identifier":
            return True
    return False


# ---- values ----------------------------------------------------------------------------------------------------


def _prefix(ctx: _Ctx, raw: str) -> tuple[str, str]:
    if len(raw) >= 2 and raw[:2].isalpha():
        if raw[:2] in PREFIXES:
            return raw[:2], raw[2:]
        raise _bad(ctx, f"{raw!r} starts with {raw[:2]!r}, which is not a prefix ({' '.join(PREFIXES)})",
                   "AEGIS-316")
    return "eq", raw


def _missing(ctx: _Ctx, raw: str) -> bool:
    text = unescape(raw)
    if text not in ("true", "false"):
        raise _bad(ctx, f":missing takes true or false, not {text!r}", "AEGIS-321")
    return text == "true"


def _string(ctx: _Ctx, param: Param, modifier: str | None, raw: str) -> Node:
    text = unescape(raw)
    if modifier == "exact":
        return StringQ(param, text, "exact")
    norm = normalize(text)
    if not norm:
        raise _bad(ctx, "the value is blank", "AEGIS-313")
    return StringQ(param, norm, "contains" if modifier == "contains" else "start")


def _token(ctx: _Ctx, param: Param, raw: str) -> TokenQ:
    """``code``, ``system|code``, ``|code`` (no system) or ``system|`` (any code of the system)."""
    pieces = split_unescaped(raw, "|")
    if len(pieces) == 1:
        return TokenQ(param, None, unescape(pieces[0]))
    if len(pieces) == 2:
        system, code = unescape(pieces[0]), unescape(pieces[1])
        if not system and not code:
            raise _bad(ctx, "'|' alone is not a token; use [system]|[code]", "AEGIS-314")
        if not system:
            return TokenQ(param, None, code, no_system=True)
        return TokenQ(param, system, code or None)
    raise _bad(ctx, f"{unescape(raw)!r} is not a token ([system|]code); escape a literal '|' as '\\|'",
               "AEGIS-314")


def _system_code(ctx: _Ctx, raw: str, modifier: str) -> tuple[str, str]:
    pieces = split_unescaped(raw, "|")
    if len(pieces) != 2 or not pieces[0] or not pieces[1]:
        raise _bad(ctx, f":{modifier} takes system|code (the CodeSystem and the code), not {unescape(raw)!r}",
                   "AEGIS-335")
    return unescape(pieces[0]), unescape(pieces[1])


def _of_type(ctx: _Ctx, scope: str, code: str, raw: str) -> Node:
    """``:of-type=tsys|tcode|value``; see the module docstring for the composite this becomes."""
    pieces = split_unescaped(raw, "|")
    if len(pieces) != 3 or not pieces[1] or not pieces[2]:
        raise _bad(ctx, f":of-type takes type-system|type-code|value, not {unescape(raw)!r}", "AEGIS-336")
    tsys, tcode, value = (unescape(p) for p in pieces)
    pseudo = f"{code}:of-type"
    return CompositeQ(Param(scope, pseudo, "composite"), (
        TokenQ(Param(scope, f"{pseudo}#0", "token"), tsys or None, tcode),
        TokenQ(Param(scope, f"{pseudo}#1", "token"), None, value),
    ))


def _reference(ctx: _Ctx, param: Param, p: SearchParamDef, modifier: str | None, raw: str) -> Node:
    if modifier == "identifier":
        pieces = split_unescaped(raw, "|")
        if len(pieces) > 2 or not pieces[-1]:
            raise _bad(ctx, f":identifier takes [system|]value, not {unescape(raw)!r}", "AEGIS-319")
        system = unescape(pieces[0]) if len(pieces) == 2 else None
        # ``|value`` (explicitly no system) cannot be told apart from "any system" by RefIdentifierQ: any system
        return RefIdentifierQ(param, system or None, unescape(pieces[-1]))
    type_mod = modifier  # a resource type, checked by the caller
    pieces = split_unescaped(raw, "|")
    text = unescape(pieces[0])
    if len(pieces) > 2 or (len(pieces) == 2 and not _ABSOLUTE.match(text)):
        raise _bad(ctx, f"{unescape(raw)!r} is not an id, Type/id, URL or canonical URL|version", "AEGIS-319")
    # a canonical's ``|version`` is dropped: the index keeps canonical URLs without their version
    if ctx.base_url:
        base = ctx.base_url.rstrip("/") + "/"
        if text.startswith(base):
            text = text[len(base):]
    typed = _TYPED_ID.fullmatch(text)
    if typed is not None:
        rtype, rid = typed.group(1), typed.group(2)
        if not is_resource_type(rtype):
            raise _bad(ctx, f"{rtype!r} is not a resource type", "AEGIS-319")
        if type_mod is not None and type_mod != rtype:
            raise _bad(ctx, f"the modifier :{type_mod} contradicts the value {text!r}", "AEGIS-319")
        if p.targets and rtype not in p.targets:
            raise _bad(ctx, f"{p.code} never refers to {rtype} (targets: {', '.join(p.targets)})", "AEGIS-319")
        return RefQ(param, rtype, rid)
    if _ABSOLUTE.match(text):
        return RefQ(param, None, None, url=text)
    if "/" in text or not text:
        raise _bad(ctx, f"{text!r} is not an id, Type/id or absolute URL", "AEGIS-319")
    # a bare id: the type is known if the modifier names it or the parameter can only point at one type
    target = type_mod or (p.targets[0] if len(p.targets) == 1 else None)
    return RefQ(param, target, text)


def _date(ctx: _Ctx, param: Param, raw: str) -> Node:
    prefix, rest = _prefix(ctx, raw)
    rng = date_range(unescape(rest))
    if rng is None:
        raise _bad(ctx, f"{unescape(rest)!r} is not a FHIR date, dateTime or instant", "AEGIS-315")
    return DateQ(param, prefix, rng[0], rng[1])


def _number(ctx: _Ctx, param: Param, raw: str) -> Node:
    prefix, rest = _prefix(ctx, raw)
    rng = number_range(unescape(rest))
    if rng is None:
        raise _bad(ctx, f"{unescape(rest)!r} is not a number", "AEGIS-317")
    return NumberQ(param, prefix, *rng)


def _quantity(ctx: _Ctx, param: Param, raw: str) -> Node:
    """``[prefix]value[|system|code]``; ``value||code`` leaves the system open. The UCUM-canonical form is filled
    when the system is UCUM or absent and the code converts, so ``mg`` finds ``g``."""
    prefix, rest = _prefix(ctx, raw)
    pieces = split_unescaped(rest, "|")
    if len(pieces) not in (1, 3):
        raise _bad(ctx, f"{unescape(raw)!r} is not [prefix]number[|system|code]", "AEGIS-318")
    number = unescape(pieces[0])
    rng = number_range(number)
    if rng is None:
        raise _bad(ctx, f"{number!r} is not a number", "AEGIS-318")
    system = (unescape(pieces[1]) or None) if len(pieces) == 3 else None
    code = (unescape(pieces[2]) or None) if len(pieces) == 3 else None
    value, lo, hi = rng
    canon = canonicalize(value, lo, hi, code) if code is not None and system in (None, UCUM) else None
    if canon is None:
        return QuantityQ(param, prefix, value, lo, hi, system, code)
    return QuantityQ(param, prefix, value, lo, hi, system, code, *canon)


def _uri(ctx: _Ctx, param: Param, modifier: str | None, raw: str) -> Node:
    return UriQ(param, unescape(raw), modifier or "eq")


def _value(ctx: _Ctx, scope: str | None, param: Param, p: SearchParamDef, modifier: str | None, raw: str) -> Node:
    """One value of a parameter whose modifier has been checked (token modifiers are handled by the caller)."""
    if not raw:
        raise _bad(ctx, "empty value", "AEGIS-313")
    kind = p.type
    if kind == "string":
        return _string(ctx, param, modifier, raw)
    if kind == "token":
        return _token(ctx, param, raw)
    if kind == "reference":
        return _reference(ctx, param, p, modifier, raw)
    if kind == "date":
        return _date(ctx, param, raw)
    if kind == "number":
        return _number(ctx, param, raw)
    if kind == "quantity":
        return _quantity(ctx, param, raw)
    if kind == "uri":
        return _uri(ctx, param, modifier, raw)
    if kind == "composite":
        return _composite(ctx, scope, param, p, raw)
    raise _Unsupported(f"{p.code} is a {kind} parameter, which this server does not search", "AEGIS-311")


def _composite(ctx: _Ctx, scope: str | None, param: Param, p: SearchParamDef, raw: str) -> Node:
    """``a$b``: one part per component, each bound by the component's own SearchParameter on ``<code>#<i>``."""
    pieces = split_unescaped(raw, "$")
    if len(pieces) != len(p.components):
        raise _bad(ctx, f"{p.code} takes {len(p.components)} values joined by '$', got {len(pieces)}",
                   "AEGIS-320")
    parts: list[Node] = []
    for i, (comp, piece) in enumerate(zip(p.components, pieces)):
        cdef = registry.by_url(comp.definition)
        if cdef is None or cdef.type in ("composite", "special"):
            raise _Unsupported(f"{p.code}: component {i} ({comp.definition}) is not searchable", "AEGIS-311")
        part_param = Param(param.rtype, f"{p.code}#{i}", cdef.type)
        parts.append(_value(ctx, scope, part_param, cdef, None, piece))
    return CompositeQ(param, tuple(parts))


# ---- clauses -----------------------------------------------------------------------------------------------------


def _check_modifier(ctx: _Ctx, scope: str | None, p: SearchParamDef, modifier: str) -> None:
    if p.type == "reference" and modifier not in _FHIR_MODIFIERS:
        if not is_resource_type(modifier):
            raise _bad(ctx, f":{modifier} is neither a modifier nor a resource type", "AEGIS-312")
        if p.targets and modifier not in p.targets:
            raise _bad(ctx, f"{p.code} never refers to {modifier} (targets: {', '.join(p.targets)})", "AEGIS-312")
        return
    allowed = _TYPE_MODIFIERS.get(p.type, frozenset())
    if modifier not in allowed:
        what = "is not valid for" if modifier in _FHIR_MODIFIERS else "is not a modifier of"
        listed = ", ".join(":" + m for m in ("missing", *sorted(allowed)))
        if p.type == "reference":
            listed += ", :<resource type>"
        raise _bad(ctx, f":{modifier} {what} {p.type} parameters (allowed: {listed})", "AEGIS-312")
    if modifier == "of-type" and not _is_identifier_param(scope, p):
        raise _bad(ctx, f":of-type applies to identifier parameters; {p.code} is not one", "AEGIS-312")


def _builtin(ctx: _Ctx, scope: str | None, code: str, modifier: str | None, values: tuple[str, ...]) -> Node:
    if any(not v for v in values):
        raise _bad(ctx, "empty value", "AEGIS-313")
    if code == "_id":
        ids = tuple(unescape(v) for v in values)
        if modifier is None:
            return IdIn(ids)
        if modifier == "not":
            return Not(IdIn(ids))
        if modifier == "missing":
            # every resource has an id
            return _any([MatchNone() if _missing(ctx, v) else MatchAll() for v in values])
        raise _bad(ctx, f":{modifier} is not valid for _id (allowed: :not, :missing)", "AEGIS-312")
    if modifier is not None:
        raise _bad(ctx, f"{code} takes no modifier", "AEGIS-312")
    if code in ("_text", "_content"):
        if code == "_text" and scope in _NOT_DOMAIN:
            raise _Unsupported(f"{scope} has no narrative to search with _text")
        nodes: list[Node] = []
        for v in values:
            words = normalize(unescape(v))
            if not words:
                raise _bad(ctx, "the value is blank", "AEGIS-313")
            nodes.append(TextSearch(code, words))
        return _any(nodes)
    # _list
    lists: list[Node] = []
    for v in values:
        text = unescape(v)
        if text.startswith("$"):
            raise _Unsupported(f"functional lists such as {text!r} are not supported", "AEGIS-311")
        m = _LIST_ID.fullmatch(text)
        if m is None:
            raise _bad(ctx, f"{text!r} is not a List id", "AEGIS-337")
        lists.append(ListQ(m.group(1)))
    return _any(lists)


def _param(ctx: _Ctx, scope: str | None, code: str, modifier: str | None, values: tuple[str, ...]) -> Node:
    """The node of a parameter of ``scope`` (None: common parameters) and its OR-list of values."""
    if code in _BUILTIN:
        return _builtin(ctx, scope, code, modifier, values)
    if code in registry.UNSUPPORTED_COMMON:
        raise _Unsupported(f"{code} is not supported", "AEGIS-311")
    p = _lookup(scope, code)
    if p is None:
        where = scope or "every resource type (system-level search takes common parameters only)"
        raise _Unsupported(f"unknown search parameter {code!r} for {where}")
    if p.type == "special":
        raise _Unsupported(f"{code} is a special parameter, which this server does not search", "AEGIS-311")
    param = Param(scope or SYSTEM_RTYPE, code, p.type)
    if modifier == "missing":
        return _any([Missing(param, _missing(ctx, v)) for v in values])
    if modifier is not None:
        _check_modifier(ctx, scope, p, modifier)
    if any(not v for v in values):
        raise _bad(ctx, "empty value", "AEGIS-313")
    if p.type == "token" and modifier is not None:
        return _token_modified(ctx, scope or SYSTEM_RTYPE, param, modifier, values)
    return _any([_value(ctx, scope, param, p, modifier, v) for v in values])


def _token_modified(ctx: _Ctx, scope: str, param: Param, modifier: str, values: tuple[str, ...]) -> Node:
    if modifier == "text":
        nodes: list[Node] = []
        for v in values:
            text = normalize(unescape(v))
            if not text:
                raise _bad(ctx, "the value is blank", "AEGIS-313")
            nodes.append(TokenTextQ(param, text))
        return _any(nodes)
    if modifier == "not":
        # "none of these codes": a resource with no value, or with no matching coding, qualifies
        return Not(_any([_token(ctx, param, v) for v in values]))
    if modifier == "in":
        return _any([ValueSetQ(param, "in", unescape(v)) for v in values])
    if modifier == "not-in":
        # like :not, an OR-list of value sets means "in none of them"
        sets: list[Node] = [ValueSetQ(param, "not-in", unescape(v)) for v in values]
        return sets[0] if len(sets) == 1 else And(tuple(sets))
    if modifier in ("above", "below"):
        return _any([ValueSetQ(param, modifier, *_system_code(ctx, v, modifier)) for v in values])
    # of-type
    return _any([_of_type(ctx, scope, param.code, v) for v in values])


def _chain(ctx: _Ctx, scope: str | None, clause: Clause, at: int) -> Node:
    """The chain links ``clause.chain[at:]`` followed by the clause's own parameter, evaluated on ``scope``."""
    if at == len(clause.chain):
        return _param(ctx, scope, clause.code, clause.modifier, clause.values)
    link = clause.chain[at]
    p = _lookup(scope, link.code)
    if p is None:
        raise _Unsupported(f"unknown search parameter {link.code!r} for {scope or 'every resource type'}")
    if p.type != "reference":
        raise _bad(ctx, f"cannot chain through {link.code}: it is a {p.type} parameter, not a reference",
                   "AEGIS-322")
    next_code = clause.chain[at + 1].code if at + 1 < len(clause.chain) else clause.code
    if link.target_type is not None:
        if not is_resource_type(link.target_type):
            raise _bad(ctx, f"{link.target_type!r} is not a resource type", "AEGIS-322")
        if p.targets and link.target_type not in p.targets:
            raise _bad(ctx, f"{link.code} never refers to {link.target_type} (targets: {', '.join(p.targets)})",
                       "AEGIS-322")
        if not _knows(link.target_type, next_code):
            raise _Unsupported(f"unknown search parameter {next_code!r} for {link.target_type}")
        targets = [link.target_type]
    else:
        if not p.targets:
            raise _bad(ctx, f"{link.code} may refer to any type: name one, as in {link.code}:Patient.{next_code}",
                       "AEGIS-322")
        targets = sorted(t for t in p.targets if _knows(t, next_code))
        if not targets:
            raise _Unsupported(f"no type {link.code} refers to ({', '.join(p.targets)}) has a parameter "
                               f"{next_code!r}")
    ref = Param(scope or SYSTEM_RTYPE, link.code, "reference")
    return _any([Chain(ref, t, _chain(ctx, t, clause, at + 1)) for t in targets])


def _has(ctx: _Ctx, scope: str | None, clause: Clause, at: int) -> Node:
    """``_has`` steps ``clause.has[at:]``, then the clause's chain and parameter on the last source type."""
    if at == len(clause.has):
        return _chain(ctx, scope, clause, 0)
    link = clause.has[at]
    if not is_resource_type(link.source_type):
        raise _bad(ctx, f"{link.source_type!r} is not a resource type", "AEGIS-323")
    ref = registry.param(link.source_type, link.ref_code)
    if ref is None:
        raise _Unsupported(f"unknown search parameter {link.ref_code!r} for {link.source_type}")
    if ref.type != "reference":
        raise _bad(ctx, f"{link.source_type}.{link.ref_code} is a {ref.type} parameter, not a reference",
                   "AEGIS-323")
    if scope is not None and ref.targets and scope not in ref.targets:
        raise _bad(ctx, f"{link.source_type}.{link.ref_code} never refers to {scope}", "AEGIS-323")
    inner = _has(ctx, link.source_type, clause, at + 1)
    return Has(link.source_type, Param(link.source_type, link.ref_code, "reference"), inner)


def _clause(scope: str | None, clause: Clause, base_url: str | None) -> Node:
    ctx = _Ctx(clause.name, base_url)
    if len(clause.chain) + len(clause.has) > MAX_DEPTH:
        raise _bad(ctx, f"chains and _has nest at most {MAX_DEPTH} deep", "AEGIS-338")
    return _has(ctx, scope, clause, 0)


# ---- result parameters ------------------------------------------------------------------------------------------


def _sort_param(scope: str | None, key: SortKey) -> Param:
    p = _lookup(scope, key.code)
    if p is None:
        where = scope or "all the types searched (sorting a multi-type search takes common parameters only)"
        raise _Unsupported(f"cannot sort by {key.code!r}: no such parameter for {where}", "AEGIS-333")
    if p.type in ("composite", "special"):
        raise _Unsupported(f"cannot sort by the {p.type} parameter {key.code!r}", "AEGIS-333")
    return Param(scope or SYSTEM_RTYPE, key.code, p.type)


def _check_include(inc: Include, reverse: bool = False) -> None:
    if inc.source_type == "*":
        if reverse:  # "everything that refers to a match, through any parameter of any type": not offered
            raise _Unsupported("_revinclude needs a source type, as in _revinclude=Observation:subject", "AEGIS-339")
        return
    if not is_resource_type(inc.source_type):
        raise _Unsupported(f"{inc.source_type!r} is not a resource type", "AEGIS-339")
    if inc.code == "*":
        return
    p = registry.param(inc.source_type, inc.code)
    if p is None or p.type != "reference":
        raise _Unsupported(f"{inc.source_type} has no reference parameter {inc.code!r}", "AEGIS-339")
    if inc.target_type is not None:
        if not is_resource_type(inc.target_type) or (p.targets and inc.target_type not in p.targets):
            raise _Unsupported(f"{inc.source_type}.{inc.code} never refers to {inc.target_type}", "AEGIS-339")


# ---- entry point -------------------------------------------------------------------------------------------------


def bind(rtype: str | None, request: SearchRequest, *, strict: bool, base_url: str | None = None) -> BindResult:
    """Bind ``request`` for a search of ``rtype`` (None: system level).

    ``strict`` (``Prefer: handling=strict``) turns every unknown or unsupported parameter into a 400; otherwise
    they are dropped and listed in ``unknown``. ``base_url`` is this server's base: absolute references to it
    (``<base>/Patient/1``) are searched as local ``Patient/1``.
    """
    if rtype is not None and not is_resource_type(rtype):
        raise InvalidInput(f"{rtype!r} is not a resource type", message_id="AEGIS-330")
    if rtype is not None and request.types and set(request.types) != {rtype}:
        raise InvalidInput(f"_type: a search of {rtype} cannot ask for other types (_type is for system-level "
                           "search)", expression="_type", message_id="AEGIS-334")
    unknown: list[str] = []

    def drop(name: str, exc: _Unsupported) -> None:
        if strict:
            raise InvalidInput(f"{name}: {exc.message}", expression=name.split("=")[0],
                               message_id=exc.message_id) from None
        if name not in unknown:
            unknown.append(name)

    types = request.types if rtype is None else ()
    kept: list[Clause] = []
    nodes: list[Node] = []
    per_type: list[list[Node]] | None = None
    if types:
        # common parameters bind once for all listed types; one type-specific clause makes every clause per-type
        needs_per_type = False
        for c in request.clauses:
            try:
                node = _clause(None, c, base_url)
                if not c.has and not c.chain and not all(_knows(t, c.code) for t in types):
                    raise _Unsupported("common, but not to every listed type")  # _text and the non-domain types
                nodes.append(node)
            except _Unsupported:
                try:
                    for t in types:
                        _clause(t, c, base_url)
                except _Unsupported as exc:
                    drop(c.name, exc)
                    continue
                needs_per_type = True
            kept.append(c)
        if needs_per_type:
            nodes, per_type, common_kept, kept = [], [[] for _ in types], kept, []
            for c in common_kept:
                try:
                    bound = [_clause(t, c, base_url) for t in types]
                except _Unsupported as exc:  # common, yet not on every listed type (``_text`` on Bundle)
                    drop(c.name, exc)
                    continue
                kept.append(c)
                for items, node in zip(per_type, bound):
                    items.append(node)
    else:
        for c in request.clauses:
            try:
                nodes.append(_clause(rtype, c, base_url))
            except _Unsupported as exc:
                drop(c.name, exc)
                continue
            kept.append(c)

    tree: Node
    if per_type is not None:
        branches: list[Node] = [And((TypeIn((t,)), *items)) for t, items in zip(types, per_type)]
        tree = _any(branches)
    elif types:
        tree = And((TypeIn(tuple(types)), *nodes))
    else:
        tree = And(tuple(nodes)) if nodes else MatchAll()

    sort: list[tuple[Param, bool]] = []
    kept_sort: list[SortKey] = []
    for key in request.sort:
        try:
            sort.append((_sort_param(rtype, key), key.descending))
        except _Unsupported as exc:
            drop(f"_sort={'-' if key.descending else ''}{key.code}", exc)
            continue
        kept_sort.append(key)

    kept_inc: dict[str, list[Include]] = {"_include": [], "_revinclude": []}
    for name, incs in (("_include", request.include), ("_revinclude", request.revinclude)):
        for inc in incs:
            try:
                _check_include(inc, reverse=name == "_revinclude")
            except _Unsupported as exc:
                drop(f"{name}{':iterate' if inc.iterate else ''}={inc.text()}", exc)
                continue
            kept_inc[name].append(inc)

    for name, value in request.ignored:
        if name == "_contained" and value != "false":
            drop(name, _Unsupported("searching contained resources is not supported", "AEGIS-311"))

    effective = replace(
        request,
        clauses=tuple(kept),
        sort=tuple(kept_sort),
        include=tuple(kept_inc["_include"]),
        revinclude=tuple(kept_inc["_revinclude"]),
        ignored=(),
    )
    return BindResult(tree=tree, unknown=tuple(unknown), sort=tuple(sort), request=effective)
