"""The R4 CompartmentDefinitions: which parameters of which types put a resource in a compartment."""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources as importlib_resources


@lru_cache(maxsize=1)
def _definitions() -> dict[str, dict[str, tuple[str, ...]]]:
    raw = json.loads(importlib_resources.files("resources").joinpath("definitions/compartments.json").read_text())
    return {code: {rtype: tuple(params) for rtype, params in d["resources"].items()} for code, d in raw.items()}


def compartment_types() -> frozenset[str]:
    return frozenset(_definitions())


def members(compartment: str) -> dict[str, tuple[str, ...]]:
    """Resource type → the reference parameters that link it to the compartment (types with none left out)."""
    return {t: p for t, p in _definitions().get(compartment, {}).items() if p}


def params_in(compartment: str, rtype: str) -> tuple[str, ...]:
    return _definitions().get(compartment, {}).get(rtype, ())
