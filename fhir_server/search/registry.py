"""The SearchParameter registry: every SearchParameter of the official R4 4.0.1 package, per resource type.

Parameters defined on ``Resource`` and ``DomainResource`` apply to every (domain) resource type. A parameter shared
by many types (``clinical-patient``) carries one FHIRPath expression for all of them; :func:`expression_for` keeps
the alternatives rooted at the type asked about, so extraction evaluates only what applies.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources as importlib_resources

from resources.model import is_resource_type, resource_types

# parameters that are not index lookups: handled by the engine itself, or not supported
RESULT_PARAMETERS = frozenset({
    "_sort", "_count", "_include", "_revinclude", "_summary", "_total", "_elements", "_contained",
    "_containedType", "_format", "_pretty", "_cursor", "_type",
})
UNSUPPORTED_COMMON = frozenset({"_query", "_filter"})


@dataclass(frozen=True, slots=True)
class Component:
    definition: str  # URL of the component's own SearchParameter
    expression: str  # relative to the composite's expression


@dataclass(frozen=True, slots=True)
class SearchParamDef:
    url: str
    code: str
    base: tuple[str, ...]
    type: str
    expression: str | None
    targets: tuple[str, ...]
    modifiers: tuple[str, ...]
    comparators: tuple[str, ...]
    components: tuple[Component, ...]


def _load() -> list[SearchParamDef]:
    text = importlib_resources.files("resources").joinpath("definitions/search-parameters.json").read_text()
    out = []
    for raw in json.loads(text):
        out.append(SearchParamDef(
            url=raw["url"],
            code=raw["code"],
            base=tuple(raw.get("base") or ()),
            type=raw["type"],
            expression=raw.get("expression"),
            targets=tuple(raw.get("target") or ()),
            modifiers=tuple(raw.get("modifier") or ()),
            comparators=tuple(raw.get("comparator") or ()),
            components=tuple(Component(c["definition"], c["expression"]) for c in raw.get("component") or ()),
        ))
    return out


@lru_cache(maxsize=1)
def all_params() -> tuple[SearchParamDef, ...]:
    return tuple(_load())


@lru_cache(maxsize=1)
def _by_url() -> dict[str, SearchParamDef]:
    return {p.url: p for p in all_params()}


def by_url(url: str) -> SearchParamDef | None:
    return _by_url().get(url)


@lru_cache(maxsize=1)
def _by_type() -> dict[str, dict[str, SearchParamDef]]:
    from resources.model import type_info

    table: dict[str, dict[str, SearchParamDef]] = {t: {} for t in resource_types()}
    for p in all_params():
        if p.code in UNSUPPORTED_COMMON or p.expression is None:
            continue
        for base in p.base:
            if base == "Resource":
                targets = list(table)
            elif base == "DomainResource":
                targets = [t for t in table if _is_domain_resource(t, type_info)]
            else:
                targets = [base] if base in table else []
            for t in targets:
                # a parameter whose expression has nothing for the type never matches there: not offered
                # (R4's example ``part-agree`` is based on Patient but reads DocumentReference)
                if expression_for(t, p) is not None:
                    table[t].setdefault(p.code, p)
    return table


def _is_domain_resource(rtype: str, type_info: object) -> bool:
    return rtype not in ("Bundle", "Binary", "Parameters")


def params_for(rtype: str) -> dict[str, SearchParamDef]:
    """Every searchable parameter of a resource type, by code."""
    return _by_type().get(rtype, {})


def param(rtype: str, code: str) -> SearchParamDef | None:
    return params_for(rtype).get(code)


def _split_top_level(expression: str) -> list[str]:
    """Split on ``|`` outside parentheses and string literals."""
    parts: list[str] = []
    depth = 0
    quoted = False
    start = 0
    for i, ch in enumerate(expression):
        if ch == "'" and (i == 0 or expression[i - 1] != "\\"):
            quoted = not quoted
        elif not quoted and ch == "(":
            depth += 1
        elif not quoted and ch == ")":
            depth -= 1
        elif not quoted and depth == 0 and ch == "|":
            parts.append(expression[start:i].strip())
            start = i + 1
    parts.append(expression[start:].strip())
    return [p for p in parts if p]


def _root(alternative: str) -> str:
    text = alternative.lstrip("(")
    end = 0
    while end < len(text) and (text[end].isalnum() or text[end] == "_"):
        end += 1
    return text[:end]


@lru_cache(maxsize=8192)
def expression_for(rtype: str, p: SearchParamDef) -> str | None:
    """The part of ``p``'s expression that applies to ``rtype`` (None if nothing does)."""
    if p.expression is None:
        return None
    keep = []
    for alt in _split_top_level(p.expression):
        root = _root(alt)
        if root in (rtype, "Resource", "DomainResource"):
            keep.append(alt)
        elif rtype in p.base and not is_resource_type(root):
            # an unrooted path is relative to the base (R4's InsurancePlan ``name`` is "name | alias")
            keep.append(f"{rtype}.{alt}")
    return " | ".join(keep) if keep else None
