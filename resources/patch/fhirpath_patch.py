"""FHIRPath Patch (http://hl7.org/fhir/R4/fhirpatch.html): a ``Parameters`` resource of ``operation`` parameters.

Owns reading the Parameters document, applying add / insert / delete / replace / move to a copy of a resource dict,
and reporting every failure as :class:`~resources.outcome.InvalidInput` whose ``expression`` names the failing
parameter (``Parameters.parameter[1]``). Paths are evaluated to locations by :mod:`resources.patch.fhirpath_locate`.

Rules implemented (spec text in quotes):

* replace, insert, move and add need their path to match exactly one element (insert/move: one *list*, found
  through the element that holds it, so an absent list can be inserted into at index 0); delete "of the element to
  delete (if found)" accepts zero matches as a no-op but not several.
* add "can be used for non-repeating elements as long as they do not already exist"; on a repeating element it
  appends.
* ``value[x]`` gives the JSON form of the element unchanged (valueDate → string, valueDecimal → Decimal,
  valueHumanName → object); a value built from ``part``s gives an object whose members are the parts, repeated
  part names becoming arrays. A ``_valueX`` companion on the parameter becomes the element's ``_name`` companion.
* Choice elements take their JSON name from the value's type: replacing ``Observation.value`` (now
  ``valueString``) with a valueQuantity removes ``valueString`` and writes ``valueQuantity``; the type must be one
  the element allows.
* Primitive arrays and their ``_name`` companions stay aligned through delete, insert, move and add, and empty
  arrays / objects left behind are removed, because FHIR JSON forbids them.
* Replacing a primitive replaces it as an element, so its old id/extensions (``_birthDate``) go with it; to keep
  them, patch the value's extension separately.
* A new element (and each member of a value built from parts) is written as an array or a single value as its
  definition in :mod:`resources.model` says; repeating a part of a non-repeating element is an error.
* "The type of the value must be correct for the place at which it will be added/inserted. Servers SHALL return an
  error if the type is wrong": after each write, the written subtree is validated with fhirkit, the R4 validator
  Aegis uses everywhere (:mod:`resources.validate`), and its errors are reported for that parameter.

Whole-resource validity after the patch ("SHALL return an error if the outcome ... is not a valid resource") is left
to the caller, which validates every write the same way whatever interaction produced it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import fhirkit

from resources import jsonio, model
from resources.outcome import InvalidInput
from resources.patch import messages
from resources.patch.fhirpath_locate import (
    MODEL,
    Ast,
    Located,
    Locator,
    PathError,
    parse_path,
    split_last_member,
)

_OPERATION_TYPES = ("add", "insert", "delete", "replace", "move")
_PART_NAMES = ("type", "path", "name", "value", "index", "source", "destination")
_REQUIRED_PARTS = {
    "add": ("path", "name", "value"),
    "insert": ("path", "value", "index"),
    "delete": ("path",),
    "replace": ("path", "value"),
    "move": ("path", "source", "destination"),
}


class _Problem(Exception):
    """A failure of one operation; turned into InvalidInput with the parameter's expression by the caller."""

    def __init__(self, message: str, message_id: str) -> None:
        super().__init__(message)
        self.message = message
        self.message_id = message_id


def apply_fhirpath_patch(resource: dict[str, Any], parameters: dict[str, Any]) -> dict[str, Any]:
    """Returns a patched copy of ``resource``; ``resource`` and ``parameters`` are left unchanged.

    Operations apply in order and all-or-nothing: the first failure raises InvalidInput naming
    ``Parameters.parameter[i]`` and nothing of the patch is kept.
    """
    try:
        operations = _read_parameters(parameters)
    except RecursionError:
        raise InvalidInput("the Parameters resource is nested too deeply", expression="Parameters",
                           message_id=messages.PATCH_DOCUMENT_INVALID) from None  # fmt: skip
    patched: dict[str, Any] = copy.deepcopy(resource)
    for index, operation in operations:
        where = f"Parameters.parameter[{index}]"
        try:
            try:
                _apply(patched, operation)
            except RecursionError:
                raise _Problem("the value is nested too deeply", messages.PATCH_DOCUMENT_INVALID) from None
        except _Problem as problem:
            raise InvalidInput(
                f"{operation.type} at {_clip(operation.path)!r}: {problem.message}",
                expression=where,
                message_id=problem.message_id,
            ) from None
    return patched


def _clip(text: str, limit: int = 200) -> str:
    """Echoed client input is cut short: a diagnostic should point at the problem, not repeat a huge document."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------------------------------------------------
# Reading the Parameters resource
# --------------------------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Operation:
    type: str
    parts: dict[str, dict[str, Any]]
    path: str


def _read_parameters(parameters: Any) -> list[tuple[int, _Operation]]:
    if not isinstance(parameters, dict) or parameters.get("resourceType") != "Parameters":
        raise InvalidInput(
            "A FHIRPath Patch body must be a Parameters resource",
            expression="Parameters",
            message_id=messages.PATCH_DOCUMENT_INVALID,
        )
    entries = parameters.get("parameter", [])
    if not isinstance(entries, list):
        raise InvalidInput(
            "Parameters.parameter must be an array",
            expression="Parameters.parameter",
            message_id=messages.PATCH_DOCUMENT_INVALID,
        )
    out: list[tuple[int, _Operation]] = []
    for index, entry in enumerate(entries):
        where = f"Parameters.parameter[{index}]"
        try:
            out.append((index, _read_operation(entry)))
        except _Problem as problem:
            raise InvalidInput(problem.message, expression=where, message_id=problem.message_id) from None
    return out


def _read_operation(entry: Any) -> _Operation:
    def bad(message: str) -> _Problem:
        return _Problem(message, messages.PATCH_DOCUMENT_INVALID)

    if not isinstance(entry, dict):
        raise bad("each parameter must be an object")
    if entry.get("name") != "operation":
        raise bad(f"parameter name is {entry.get('name')!r}; a FHIRPath Patch has only 'operation' parameters")
    raw_parts = entry.get("part")
    if not isinstance(raw_parts, list) or not raw_parts:
        raise bad("an operation needs its parts (type, path, ...)")
    parts: dict[str, dict[str, Any]] = {}
    for j, part in enumerate(raw_parts):
        name = part.get("name") if isinstance(part, dict) else None
        if name not in _PART_NAMES:
            raise bad(f"part[{j}] has name {name!r}; expected one of {', '.join(_PART_NAMES)}")
        if name in parts:
            raise bad(f"part {name!r} is given more than once")
        parts[name] = part
    if "type" not in parts:
        raise bad("the 'type' part is missing")
    op_type = _scalar(parts["type"], str)
    if op_type not in _OPERATION_TYPES:
        raise bad(f"type {op_type!r} is not one of {', '.join(_OPERATION_TYPES)}")
    missing = [name for name in _REQUIRED_PARTS[op_type] if name not in parts]
    if missing:
        raise bad(f"{op_type} needs the part{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
    # Parts that the operation type does not use are ignored, as some clients always send every part.
    path = _scalar(parts["path"], str)
    return _Operation(op_type, parts, path)


def _value_key(part: dict[str, Any]) -> str | None:
    keys = [k for k in part if k.startswith("value") and k[5:6].isupper()]
    if len(keys) > 1:
        raise _Problem(f"part {part.get('name')!r} has more than one value[x]: {', '.join(keys)}",
                       messages.PATCH_DOCUMENT_INVALID)  # fmt: skip
    return keys[0] if keys else None


def _scalar(part: dict[str, Any], kind: type) -> Any:
    key = _value_key(part)
    value = part.get(key) if key else None
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise _Problem(
                f"part {part['name']!r} must be a non-negative valueInteger", messages.PATCH_DOCUMENT_INVALID
            )
    elif not isinstance(value, kind) or not value:
        raise _Problem(f"part {part['name']!r} must have a non-empty string value", messages.PATCH_DOCUMENT_INVALID)
    return value


@dataclass(slots=True)
class _Value:
    json: Any
    companion: dict[str, Any] | None
    type_suffix: str | None  # "Quantity", "DateTime"...; None when built from parts (type given by the target)


def _value(part: dict[str, Any], type_path: str | None) -> _Value:
    """The JSON to write for a ``value`` part (or a nested part of a built value); ``type_path`` is the type of
    the element it is written to, needed to name choice members inside a value built from parts."""
    key = _value_key(part)
    given = [k for k in (key, "resource", "part") if k and k in part]
    if len(given) != 1:
        raise _Problem(
            f"part {part.get('name')!r} must have exactly one of value[x], resource or part",
            messages.PATCH_DOCUMENT_INVALID,
        )
    if key:
        if part[key] is None or isinstance(part[key], list):
            # Parameters.parameter.value[x] is one value; an array would be written into the resource as a list.
            raise _Problem(f"{key} must be a single value, not {'null' if part[key] is None else 'an array'}",
                           messages.PATCH_DOCUMENT_INVALID)  # fmt: skip
        companion = part.get(f"_{key}")
        if companion is not None and not isinstance(companion, dict):
            raise _Problem(f"_{key} must be an object", messages.PATCH_DOCUMENT_INVALID)
        return _Value(copy.deepcopy(part[key]), copy.deepcopy(companion), key[5:])
    if "resource" in part:
        resource = part["resource"]
        if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
            raise _Problem("part resource must be a resource", messages.PATCH_DOCUMENT_INVALID)
        return _Value(copy.deepcopy(resource), None, None)
    return _Value(_build(part["part"], type_path), None, None)


def _build(parts: Any, type_path: str | None) -> dict[str, Any]:
    """An anonymous (backbone) or complex value given as parts: each part is one member of the object."""
    if not isinstance(parts, list) or not parts:
        raise _Problem("a value given as parts needs at least one part", messages.PATCH_DOCUMENT_INVALID)
    built: dict[str, Any] = {}
    for part in parts:
        name = part.get("name") if isinstance(part, dict) else None
        if not isinstance(name, str) or not name:
            raise _Problem("every part of a value needs a name", messages.PATCH_DOCUMENT_INVALID)
        key, member_type = _member_key(type_path, name, part)
        _put_member(built, key, _value(part, member_type), _is_array(type_path, key), building=True)
    return built


def _is_array(type_path: str | None, key: str) -> bool | None:
    """Whether member ``key`` of ``type_path`` is an array in FHIR JSON; None when the model does not know it."""
    if type_path is None:
        return None
    try:
        info = model.element(type_path, key)
    except KeyError:
        return None
    return None if info is None else info.is_array


def _member_key(type_path: str | None, name: str, part: dict[str, Any]) -> tuple[str, str | None]:
    """JSON member name for element ``name`` of ``type_path`` holding the value of ``part``, and the member's type.

    A choice element is named by its base (``value``, ``value[x]``) and gets its type suffix from the value's
    value[x]; it may also be named in full (``valueQuantity``), and then the value's type must agree."""
    name = name.removesuffix("[x]")
    if type_path is None:
        return name, None
    value_key = _value_key(part)
    found = MODEL.element_path(type_path, name)
    if found and found[1]:
        element, allowed = found
        if value_key is None:
            raise _Problem(
                f"{name}[x] is a choice element; its value must be a value[x] that names the type",
                messages.FHIRPATH_VALUE_INVALID,
            )
        suffix = value_key[5:]
        if suffix not in allowed:
            raise _Problem(
                f"{name}[x] cannot be of type {suffix}; allowed: {', '.join(allowed)}", messages.FHIRPATH_VALUE_INVALID
            )
        return name + suffix, MODEL.variant_type(element, suffix)
    split = MODEL.choice_split(type_path, name)
    if split:
        element, _, suffix = split
        if value_key is not None and value_key[5:] != suffix:
            raise _Problem(f"{name} cannot take a {value_key}", messages.FHIRPATH_VALUE_INVALID)
        return name, MODEL.variant_type(element, suffix)
    if found:
        return name, MODEL.path_to_type.get(found[0], found[0])
    return name, None


def _other_variants(obj: dict[str, Any], type_path: str, key: str) -> list[str]:
    """Members of ``obj`` that are other types of the same choice element as ``key`` (valueString vs valueQuantity)."""
    split = MODEL.choice_split(type_path, key)
    if split is None:
        return []
    others: list[str] = []
    for member in obj:
        name = member.removeprefix("_")
        other = MODEL.choice_split(type_path, name)
        if name != key and other is not None and other[1] == split[1] and name not in others:
            others.append(name)
    return others


# --------------------------------------------------------------------------------------------------------------------
# JSON surgery that keeps ``_name`` companions aligned
# --------------------------------------------------------------------------------------------------------------------


def _tidy_companion(obj: dict[str, Any], key: str) -> None:
    """Drops ``_key`` when it no longer carries anything (all slots null)."""
    companion = obj.get(f"_{key}")
    if isinstance(companion, list) and all(item is None for item in companion):
        del obj[f"_{key}"]
    elif isinstance(companion, dict) and not companion:
        del obj[f"_{key}"]


def _aligned_companions(obj: dict[str, Any], key: str, length: int) -> list[Any]:
    """``obj['_key']`` as an array of ``length`` slots, created or padded with nulls as needed."""
    companion = obj.get(f"_{key}")
    if not isinstance(companion, list):
        companion = []
        obj[f"_{key}"] = companion
    companion.extend([None] * (length - len(companion)))
    return companion


def _put_member(obj: dict[str, Any], key: str, value: _Value, is_array: bool | None, *, building: bool) -> int | None:
    """Writes ``value`` as member ``key`` of ``obj``: a new member (an array of one if the element repeats) or one more
    item of an existing array. Returns the array index written, None for a single value.

    An existing single value is an error for add; while ``building`` a value from parts, a second part of the same
    name makes the member an array unless the model says the element does not repeat."""
    present = key in obj or f"_{key}" in obj
    if not present:
        obj[key] = [value.json] if is_array else value.json
        if value.companion is not None:
            obj[f"_{key}"] = [value.companion] if is_array else value.companion
        return 0 if is_array else None
    existing = obj.get(key)
    if not isinstance(existing, list):
        if not building:
            raise _Problem(
                f"{key} already has a value and is not a list; use replace to change it",
                messages.FHIRPATH_VALUE_INVALID,
            )
        if is_array is False:
            raise _Problem(f"{key} is not a repeating element but is given more than once",
                           messages.FHIRPATH_VALUE_INVALID)  # fmt: skip
        existing = [existing]
        obj[key] = existing
        old_companion = obj.get(f"_{key}")
        if old_companion is not None:
            obj[f"_{key}"] = [old_companion]
    existing.append(value.json)
    if value.companion is not None or isinstance(obj.get(f"_{key}"), list):
        _aligned_companions(obj, key, len(existing) - 1).append(value.companion)
        _tidy_companion(obj, key)
    return len(existing) - 1


def _remove(node: Located) -> None:
    """Removes an element (and its companion slot), then anything left empty above it."""
    holder = node.holder
    if holder is None:
        raise _Problem("the resource itself cannot be deleted or moved", messages.FHIRPATH_PATH_MATCH)
    key = node.key
    if node.index is None:
        holder.pop(key, None)
        holder.pop(f"_{key}", None)
    else:
        for member in (key, f"_{key}"):
            items = holder.get(member)
            if isinstance(items, list) and node.index < len(items):
                del items[node.index]
        if not holder.get(key):
            holder.pop(key, None)
        _tidy_companion(holder, key)
    _prune(node)


def _prune(node: Located) -> None:
    """FHIR JSON has no empty objects or arrays: an element emptied by a removal goes too, up to the resource."""
    holder, parent = node.holder, node.parent
    if holder is None or parent is None or holder:
        return
    if holder is parent.value:
        if parent.holder is not None:
            _remove(parent)
        return
    # ``holder`` was the parent primitive's companion (its id/extensions); drop the now empty slot.
    grand = parent.holder
    if grand is None:
        return
    companion_key = f"_{parent.key}"
    if parent.index is None:
        grand.pop(companion_key, None)
    elif isinstance(grand.get(companion_key), list) and parent.index < len(grand[companion_key]):
        grand[companion_key][parent.index] = None
    _tidy_companion(grand, parent.key)
    if parent.value is None:
        _remove(parent)  # a primitive that was only its extensions is gone with them


def _set_companion(holder: dict[str, Any], key: str, index: int | None, companion: dict[str, Any] | None) -> None:
    if index is None:
        if companion is None:
            holder.pop(f"_{key}", None)
        else:
            holder[f"_{key}"] = companion
        return
    if companion is None and not isinstance(holder.get(f"_{key}"), list):
        return
    slots = _aligned_companions(holder, key, len(holder[key]))
    slots[index] = companion
    _tidy_companion(holder, key)


def _rename_in_place(obj: dict[str, Any], old: str, new: str, value: Any) -> None:
    """Swaps member ``old`` for ``new`` at the same position, keeping the object's identity (nodes refer to it)."""
    items = [(new, value) if k == old else (k, v) for k, v in obj.items() if k != f"_{old}"]
    obj.clear()
    obj.update(items)


# --------------------------------------------------------------------------------------------------------------------
# Operations
# --------------------------------------------------------------------------------------------------------------------


def _apply(resource: dict[str, Any], operation: _Operation) -> None:
    try:
        ast = parse_path(operation.path)
    except PathError as exc:
        raise _Problem(str(exc), messages.FHIRPATH_PATH_INVALID) from None
    locator = Locator(resource)
    handlers = {"add": _add, "insert": _insert, "delete": _delete, "replace": _replace, "move": _move}
    try:
        handlers[operation.type](resource, locator, ast, operation)
    except PathError as exc:
        raise _Problem(str(exc), messages.FHIRPATH_PATH_INVALID) from None


def _one(nodes: list[Located], what: str) -> Located:
    if not nodes:
        raise _Problem("the path matched no element", messages.FHIRPATH_PATH_MATCH)
    if len(nodes) > 1:
        shown = ", ".join(n.location for n in nodes[:5]) + (", ..." if len(nodes) > 5 else "")
        raise _Problem(
            f"the path matched {len(nodes)} elements ({shown}); {what} needs exactly one",
            messages.FHIRPATH_PATH_MATCH,
        )
    return nodes[0]


def _delete(resource: dict[str, Any], locator: Locator, ast: Ast, operation: _Operation) -> None:
    nodes = locator.locate(ast)
    if not nodes:
        return  # "Path of the element to delete (if found)"
    node = _one(nodes, "delete")
    if node.is_resource_root:
        raise _Problem("the resource itself cannot be deleted", messages.FHIRPATH_PATH_MATCH)
    _remove(node)


def _replace(resource: dict[str, Any], locator: Locator, ast: Ast, operation: _Operation) -> None:
    node = _one(locator.locate(ast), "replace")
    holder = node.holder
    if holder is None:
        raise _Problem("the resource itself cannot be replaced; use update (PUT)", messages.FHIRPATH_PATH_MATCH)
    value = _value(operation.parts["value"], node.type_path)
    key = node.key
    if node.choice_of is not None and value.type_suffix is not None:
        found = MODEL.element_path(node.holder_type, node.choice_of)
        allowed = found[1] if found and found[1] else []
        if value.type_suffix not in allowed:
            raise _Problem(
                f"{node.choice_of}[x] cannot be of type {value.type_suffix}; allowed: {', '.join(allowed)}",
                messages.FHIRPATH_VALUE_INVALID,
            )
        new_key = node.choice_of + value.type_suffix
        if new_key != key:
            # Another type of the same choice element: the old member (and its companion) go, the new one takes
            # its place, so the resource never holds two types of value[x].
            _rename_in_place(holder, key, new_key, value.json)
            if value.companion is not None:
                holder[f"_{new_key}"] = value.companion
            written = [f"{node.holder_location}.{new_key}", f"{node.holder_location}._{new_key}"]
            _check_written(resource, exact=[], within=written)
            return
    if node.index is None:
        holder[key] = value.json
    else:
        holder[key][node.index] = value.json
    _set_companion(holder, key, node.index, value.companion)
    _check_written(resource, exact=[], within=[node.location, node.companion_location])


def _add(resource: dict[str, Any], locator: Locator, ast: Ast, operation: _Operation) -> None:
    node = _one(locator.locate(ast), "add")
    name = _scalar(operation.parts["name"], str).removesuffix("[x]")
    if not name[:1].isalpha() or not name.isalnum() or name == "resourceType":
        raise _Problem(f"{name!r} is not an element name", messages.PATCH_DOCUMENT_INVALID)
    if not isinstance(node.value, dict) and name not in ("id", "extension"):
        raise _Problem(
            f"{node.location} is a primitive; only id and extension can be added to it",
            messages.FHIRPATH_VALUE_INVALID,
        )
    obj, obj_location, obj_type = node.element_object()
    key, member_type = _member_key(obj_type, name, operation.parts["value"])
    value = _value(operation.parts["value"], member_type)
    if obj is None:
        obj = _create_companion(node)
    taken = _other_variants(obj, obj_type, key)
    if taken:
        raise _Problem(
            f"cannot add {key}: the choice element already has a value ({taken[0]}); use replace to change it",
            messages.FHIRPATH_VALUE_INVALID,
        )
    index = _put_member(obj, key, value, _is_array(obj_type, key), building=False)
    member_location = f"{obj_location}.{key}"
    if index is None:
        _check_written(resource, exact=[member_location], within=[member_location, f"{obj_location}._{key}"])
    else:
        _check_written(resource, exact=[member_location],
                       within=[f"{member_location}[{index}]", f"{obj_location}._{key}[{index}]"])  # fmt: skip


def _create_companion(node: Located) -> dict[str, Any]:
    """A primitive without id/extensions gets its ``_name`` object, so one can be added to it."""
    holder = node.holder
    assert holder is not None  # the resource root is a dict, so it never needs a companion
    companion: dict[str, Any] = {}
    _set_companion(holder, node.key, node.index, companion)
    return companion


def _list_target(locator: Locator, ast: Ast, operation: _Operation) -> tuple[Located, str]:
    """The single element that holds the list ``path`` names, and the list's member name."""
    split = split_last_member(ast)
    if split is None:
        raise _Problem(
            f"{operation.type} needs the path of a list, ending in the list's element name (e.g. Patient.identifier)",
            messages.FHIRPATH_PATH_INVALID,
        )
    container_ast, name = split
    holders = locator.locate(container_ast) if container_ast is not None else [locator.root()]
    holder = _one(holders, operation.type)
    if name == "resourceType":
        raise _Problem("resourceType is not a list", messages.FHIRPATH_VALUE_INVALID)
    return holder, name


def _insert(resource: dict[str, Any], locator: Locator, ast: Ast, operation: _Operation) -> None:
    holder, name = _list_target(locator, ast, operation)
    index = _scalar(operation.parts["index"], int)
    obj, obj_location, obj_type = holder.element_object()
    key, member_type = _member_key(obj_type, name, operation.parts["value"])
    if key != name:
        raise _Problem(f"{name}[x] is a choice element, not a list", messages.FHIRPATH_VALUE_INVALID)
    value = _value(operation.parts["value"], member_type)
    items = obj.get(key) if obj is not None else None
    if items is None and not (obj is not None and f"_{key}" in obj):
        if _is_array(obj_type, key) is False:
            raise _Problem(f"{obj_location}.{key} is not a repeating element", messages.FHIRPATH_VALUE_INVALID)
        if index != 0:
            raise _Problem(f"index {index} is beyond the end of {obj_location}.{key} (0 items)",
                           messages.FHIRPATH_INDEX_INVALID)  # fmt: skip
        if obj is None:
            obj = _create_companion(holder)
        obj[key] = [value.json]
        if value.companion is not None:
            obj[f"_{key}"] = [value.companion]
        first = [f"{obj_location}.{key}[0]", f"{obj_location}._{key}[0]"]
        _check_written(resource, exact=[f"{obj_location}.{key}"], within=first)
        return
    if obj is None or not isinstance(items, list):
        raise _Problem(f"{obj_location}.{key} is not a list", messages.FHIRPATH_VALUE_INVALID)
    if index > len(items):
        raise _Problem(
            f"index {index} is beyond the end of {obj_location}.{key} ({len(items)} items)",
            messages.FHIRPATH_INDEX_INVALID,
        )
    items.insert(index, value.json)
    if value.companion is not None or isinstance(obj.get(f"_{key}"), list):
        _aligned_companions(obj, key, len(items) - 1).insert(index, value.companion)
        _tidy_companion(obj, key)
    _check_written(resource, exact=[], within=[f"{obj_location}.{key}[{index}]", f"{obj_location}._{key}[{index}]"])


def _move(resource: dict[str, Any], locator: Locator, ast: Ast, operation: _Operation) -> None:
    holder, name = _list_target(locator, ast, operation)
    source = _scalar(operation.parts["source"], int)
    destination = _scalar(operation.parts["destination"], int)
    obj, obj_location, _ = holder.element_object()
    items = obj.get(name) if obj is not None else None
    if obj is None or not isinstance(items, list):
        raise _Problem(f"{obj_location}.{name} is not a list", messages.FHIRPATH_VALUE_INVALID)
    for label, position in (("source", source), ("destination", destination)):
        if position >= len(items):
            raise _Problem(
                f"{label} {position} is outside {obj_location}.{name} ({len(items)} items)",
                messages.FHIRPATH_INDEX_INVALID,
            )
    items.insert(destination, items.pop(source))
    companion = obj.get(f"_{name}")
    if isinstance(companion, list):
        slots = _aligned_companions(obj, name, len(items))
        slots.insert(destination, slots.pop(source))


# --------------------------------------------------------------------------------------------------------------------
# Type and cardinality check of what was written
# --------------------------------------------------------------------------------------------------------------------


def _under(path: str, prefixes: list[str]) -> bool:
    return any(path == p or path.startswith(p + ".") or path.startswith(p + "[") for p in prefixes)


def _check_written(resource: dict[str, Any], *, exact: list[str], within: list[str]) -> None:
    """Reports fhirkit's errors at the locations ``exact`` and inside the written subtrees ``within``; errors
    elsewhere were in the resource before the patch and are the caller's (whole-resource validation) to judge."""
    issues = [
        issue
        for issue in fhirkit.validate(jsonio.dumps(resource))
        if issue.severity == "error" and (issue.path in exact or _under(issue.path, within))
    ]
    if issues:
        detail = "; ".join(
            f"{issue.path} is not a repeating element"
            if issue.message.startswith("expected a single value")
            else f"{issue.path}: {issue.message}"
            for issue in issues[:5]
        )
        raise _Problem(f"the value does not fit the element: {detail}", messages.FHIRPATH_VALUE_INVALID)
