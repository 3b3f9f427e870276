"""Subsetting a resource for ``_summary`` and ``_elements`` (http://hl7.org/fhir/R4/search.html#summary).

This module owns which parts of a resource survive each subsetting mode, and the ``SUBSETTED`` tag that marks a
resource as incomplete. Inputs are never mutated; to stay cheap on read paths the result shares every untouched
nested object with the input, so treat both as read-only afterwards.

What ``_summary=true`` keeps is computed from the model, per type, once:

* in resources and their backbone elements: elements marked ``isSummary``, plus modifiers (dropping one would change
  the meaning of what is left) and mandatory elements (so the result stays valid);
* in datatypes, following ElementDefinition.isSummary ("other than Attachment.data, all data type properties are
  included"): everything except the non-summary payload elements the model names (Attachment.data,
  SampledData.data, Signature.data …); inherited ``id``/``extension`` and the whole content of an Extension stay;
* nested resources (Bundle.entry.resource, Parameters.parameter.resource) are summarised by their own type's rules;
  ``contained`` is not a summary element and goes.
"""

from __future__ import annotations

from typing import Any

from resources.model import TypeInfo, is_resource_type, type_info
from resources.outcome import InvalidInput

__all__ = ["SUBSETTED", "SUMMARY_MODES", "is_subsetted", "select_elements", "summarize"]

SUBSETTED_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ObservationValue"
SUBSETTED: dict[str, str] = {"system": SUBSETTED_SYSTEM, "code": "SUBSETTED", "display": "subsetted"}
SUMMARY_MODES = frozenset({"true", "text", "data", "false"})

MSG_SUMMARY_MODE = "AEGIS-150"
MSG_NOT_A_RESOURCE = "AEGIS-151"

# top-level elements that every subset keeps, whatever was asked for
_ALWAYS = frozenset({"resourceType", "id", "meta"})

# per type key: JSON name → child type key to recurse into (None: keep the value as it is)
_summary_plans: dict[str, dict[str, str | None]] = {}
_mandatory: dict[str, frozenset[str]] = {}


def summarize(resource: dict[str, Any], mode: str) -> dict[str, Any]:
    """Apply ``_summary=mode`` (true | text | data | false). ``false`` returns the input object itself."""
    if mode == "false":
        return resource
    ti = _resource_type_info(resource)
    if mode == "true":
        out, removed = _summary_fields(resource, ti)
    elif mode == "text":
        keep = _mandatory_names(ti) | {"text"}
        out, removed = _keep_top_level(resource, keep)
    elif mode == "data":
        out, removed = _keep_top_level(resource, None, drop="text")
    else:
        raise InvalidInput(
            f"Unknown _summary mode '{mode}' (expected one of true, text, data, false)",
            expression="_summary",
            message_id=MSG_SUMMARY_MODE,
        )
    return _tag_subsetted(out) if removed else out


def select_elements(resource: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """Apply ``_elements``: keep the named top-level elements, plus resourceType, id, meta and mandatory elements.

    A choice element's name (``value``) selects whichever type is present (``valueQuantity``); a name the type does
    not define is ignored.
    """
    ti = _resource_type_info(resource)
    keep = set(_mandatory_names(ti))
    wanted = {n.strip() for n in names}
    for info in ti.elements:
        if info.name in wanted or info.json_name in wanted:
            keep.add(info.json_name)
    out, removed = _keep_top_level(resource, keep)
    return _tag_subsetted(out) if removed else out


def is_subsetted(resource: dict[str, Any]) -> bool:
    """Whether the resource carries the SUBSETTED tag."""
    meta = resource.get("meta")
    tags = meta.get("tag") if isinstance(meta, dict) else None
    if not isinstance(tags, list):
        return False
    return any(
        isinstance(t, dict) and t.get("system") == SUBSETTED_SYSTEM and t.get("code") == "SUBSETTED" for t in tags
    )


# ---------------------------------------------------------------------------------------------------- internals


def _resource_type_info(resource: Any) -> TypeInfo:
    rtype = resource.get("resourceType") if isinstance(resource, dict) else None
    ti = type_info(rtype) if isinstance(rtype, str) and is_resource_type(rtype) else None
    if ti is None:
        raise InvalidInput(f"{rtype!r} is not a FHIR resource type", message_id=MSG_NOT_A_RESOURCE)
    return ti


def _mandatory_names(ti: TypeInfo) -> frozenset[str]:
    names = _mandatory.get(ti.key)
    if names is None:
        names = _ALWAYS | {e.json_name for e in ti.elements if e.min > 0}
        _mandatory[ti.key] = names
    return names


def _keep_top_level(
    resource: dict[str, Any], keep: set[str] | frozenset[str] | None, drop: str | None = None
) -> tuple[dict[str, Any], bool]:
    out: dict[str, Any] = {}
    removed = False
    for key, value in resource.items():
        base = key[1:] if key[:1] == "_" else key
        if (keep is None or base in keep or key == "resourceType") and base != drop:
            out[key] = value
        else:
            removed = True
    return out, removed


def _is_datatype(ti: TypeInfo) -> bool:
    if ti.kind == "complex":
        return True
    if ti.kind == "backbone":
        # backbone keys are paths; their root says whether they belong to a datatype (Timing.repeat) or a resource
        root = type_info(ti.key.partition(".")[0])
        return root is not None and root.kind == "complex"
    return False


def _summary_plan(ti: TypeInfo) -> dict[str, str | None]:
    plan = _summary_plans.get(ti.key)
    if plan is not None:
        return plan
    plan = {}
    datatype = _is_datatype(ti)
    for info in ti.elements:
        if datatype:
            keep = info.is_summary or info.name in ("id", "extension") or ti.key == "Extension"
        else:
            keep = info.is_summary or info.is_modifier or info.min > 0
        if keep:
            plan[info.json_name] = None if info.is_primitive else info.child_type_key
    _summary_plans[ti.key] = plan
    return plan


def _summary_fields(obj: dict[str, Any], ti: TypeInfo) -> tuple[dict[str, Any], bool]:
    """A new dict with the summary form of ``obj`` and whether anything was left out."""
    plan = _summary_plan(ti)
    out: dict[str, Any] = {}
    changed = False
    for key, value in obj.items():
        base = key[1:] if key[:1] == "_" else key
        if base not in plan:
            if key == "resourceType":
                out[key] = value
            else:
                changed = True
            continue
        child_key = plan[base]
        if child_key is None or base != key:
            out[key] = value
            continue
        new_value, child_changed = _summary_value(value, child_key)
        changed = changed or child_changed
        out[key] = new_value
    return out, changed


def _summary_value(value: Any, child_key: str) -> tuple[Any, bool]:
    if isinstance(value, list):
        items: list[Any] = []
        changed = False
        for item in value:
            new_item, item_changed = _summary_single(item, child_key)
            changed = changed or item_changed
            items.append(new_item)
        return (items, True) if changed else (value, False)
    return _summary_single(value, child_key)


def _summary_single(value: Any, child_key: str) -> tuple[Any, bool]:
    if not isinstance(value, dict):
        return value, False
    if child_key == "Resource":
        rtype = value.get("resourceType")
        ti = type_info(rtype) if isinstance(rtype, str) else None
    else:
        ti = type_info(child_key)
    if ti is None:
        return value, False
    out, changed = _summary_fields(value, ti)
    # unchanged subtrees are shared rather than copied
    return (out, True) if changed else (value, False)


def _tag_subsetted(out: dict[str, Any]) -> dict[str, Any]:
    if is_subsetted(out):
        return out
    meta = out.get("meta")
    # copies, never edits: meta and its tag list may still be shared with the input
    new_meta: dict[str, Any] = dict(meta) if isinstance(meta, dict) else {}
    tags = new_meta.get("tag")
    new_meta["tag"] = [*tags, dict(SUBSETTED)] if isinstance(tags, list) else [dict(SUBSETTED)]
    out["meta"] = new_meta
    return out
