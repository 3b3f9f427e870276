"""JSON Patch (RFC 6902, ``application/json-patch+json``) for the FHIR ``patch`` interaction.

Owns turning a client's JSON Patch document into a patched copy of a resource dict, and every way that can fail into
an error whose ``expression`` names the operation (``Patch[2]``) and whose text names its JSON Pointer.

Applying is done by ``jsonpatch``. This module adds what the library leaves to its caller:

* Operations are checked and applied one at a time to one private deep copy, so each error is attributed to its
  index, the caller's resource is never touched, and a failure leaves nothing half-applied (the copy is dropped;
  ``atomic=True`` also undoes a half-done ``move`` so the error can describe the document the operation saw).
* Problems are described by this module: the library's messages are generic ("Invalid 'path'"), and pointer errors
  can embed the whole document (``member 'x' not found in {...}``), which does not belong in an OperationOutcome.
* A patch may not turn the resource into a non-object or change its ``resourceType``; whether it may change ``id``
  or ``meta`` is the caller's rule, as for update.

Error mapping (RFC 5789 §2.2 leaves the choice to the server):

* malformed document, unknown op, missing/mistyped member, invalid pointer syntax → 400 InvalidInput (AEGIS-270);
* a pointer that does not lead to an existing location → 400 InvalidInput (AEGIS-271);
* a ``test`` that finds a different value → 422 Unprocessable (AEGIS-272): the document is well-formed and the
  resource exists, it is just not in the state the client required, the case RFC 5789 assigns 422 to, and the status
  HAPI FHIR answers with; a client can tell "my patch is wrong" from "the resource changed under me".

Numbers: both documents come from :func:`resources.jsonio.loads`, so decimals are ``Decimal``. jsonpatch deep-copies
values, which keeps ``Decimal("72.50")`` exactly, and ``test`` compares numbers by value as RFC 6902 §4.6 requires
(``72.5`` tests equal to ``72.50``; ``1`` never equals ``true``).
"""

from __future__ import annotations

import copy
from decimal import Decimal
from typing import Any

import jsonpatch
import jsonpointer

from resources.outcome import InvalidInput, Unprocessable
from resources.patch import messages

_OPS_WITH_VALUE = ("add", "replace", "test")
_OPS_WITH_FROM = ("move", "copy")
_KNOWN_OPS = ("add", "remove", "replace", "move", "copy", "test")


def apply_json_patch(resource: dict[str, Any], patch_body: Any) -> dict[str, Any]:
    """Returns ``resource`` patched by the RFC 6902 document ``patch_body``; neither argument is changed.

    Raises InvalidInput (400) for a malformed document or a pointer that leads nowhere, and Unprocessable (422) for a
    failed ``test``, each with ``expression`` ``Patch[i]`` for the failing operation.
    """
    if not isinstance(patch_body, list):
        raise InvalidInput(
            f"A JSON Patch document must be a JSON array of operations, not {_kind(patch_body)}",
            expression="Patch",
            message_id=messages.PATCH_DOCUMENT_INVALID,
        )
    resource_type = resource.get("resourceType")
    document: Any = copy.deepcopy(resource)
    for index, operation in enumerate(patch_body):
        where = f"Patch[{index}]"
        _check_operation(operation, where)
        document = _apply_one(document, operation, where)
        if not isinstance(document, dict) or document.get("resourceType") != resource_type:
            raise InvalidInput(
                f"{operation['op']} {_clip(operation['path'])!r}: the result must stay a {resource_type} resource; "
                "a patch cannot replace the whole resource with something else or change its resourceType",
                expression=where,
                message_id=messages.PATCH_RESULT_INVALID,
            )
    return document


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float, Decimal)):
        return "a number"
    return "an array" if isinstance(value, list) else type(value).__name__


def _clip(text: str, limit: int = 200) -> str:
    """Echoed client input is cut short: a diagnostic should point at the problem, not repeat a huge document."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _malformed(where: str, detail: str) -> InvalidInput:
    return InvalidInput(detail, expression=where, message_id=messages.PATCH_DOCUMENT_INVALID)


def _check_operation(operation: Any, where: str) -> None:
    """Structural checks before the library sees the operation, so each problem gets a precise message."""
    if not isinstance(operation, dict):
        raise _malformed(where, f"each operation must be a JSON object, not {_kind(operation)}")
    op = operation.get("op")
    if op is None:
        raise _malformed(where, "the operation has no 'op' member")
    if op not in _KNOWN_OPS:
        raise _malformed(where, f"unknown op {op!r}; expected one of {', '.join(_KNOWN_OPS)}")
    for member in ("path", "from") if op in _OPS_WITH_FROM else ("path",):
        pointer = operation.get(member)
        if pointer is None:
            raise _malformed(where, f"{op} needs a '{member}' member")
        if not isinstance(pointer, str):
            raise _malformed(where, f"'{member}' must be a JSON Pointer string, not {_kind(pointer)}")
        try:
            jsonpointer.JsonPointer(pointer)
        except jsonpointer.JsonPointerException as exc:
            raise _malformed(where, f"'{member}' {_clip(pointer)!r} is not a valid JSON Pointer: {exc}") from None
    if op in _OPS_WITH_VALUE and "value" not in operation:
        raise _malformed(where, f"{op} needs a 'value' member")


def _apply_one(document: Any, operation: dict[str, Any], where: str) -> Any:
    op, path = operation["op"], operation["path"]
    label = f"{op} {_clip(path)!r}"
    try:
        return jsonpatch.JsonPatch([operation]).apply(document, in_place=True, atomic=True)
    except jsonpatch.JsonPatchTestFailed:
        problem = _pointer_problem(document, path, must_exist=True)
        raise Unprocessable(
            f"{label}: test failed: {problem}" if problem else f"{label}: test failed: the value at {path!r} differs",
            expression=where,
            message_id=messages.PATCH_TEST_FAILED,
        ) from None
    except jsonpatch.InvalidJsonPatch as exc:
        raise _malformed(where, f"{label}: {exc}") from None
    except (jsonpatch.JsonPatchConflict, jsonpointer.JsonPointerException) as exc:
        problem = _explain(document, operation)
        if problem is None:
            # Not a missing location (e.g. moving a value into its own child): the library's message is short.
            problem = str(exc) if isinstance(exc, jsonpatch.JsonPatchConflict) else "the path cannot be applied"
        raise InvalidInput(f"{label}: {problem}", expression=where, message_id=messages.PATCH_TARGET_MISSING) from None


def _explain(document: Any, operation: dict[str, Any]) -> str | None:
    op = operation["op"]
    if op in _OPS_WITH_FROM:
        problem = _pointer_problem(document, operation["from"], must_exist=True)
        if problem:
            return f"'from' {problem}"
    return _pointer_problem(document, operation["path"], must_exist=op not in ("add", "move", "copy"))


def _pointer_problem(document: Any, pointer: str, *, must_exist: bool) -> str | None:
    """Walks ``pointer`` and says where it stops leading anywhere; None if it resolves (or, for a target that need
    not exist yet, if its parent does and the last step is a valid place to add)."""
    problem = _first_problem(document, jsonpointer.JsonPointer(pointer).parts, must_exist=must_exist)
    return None if problem is None else _clip(problem, 400)


def _first_problem(document: Any, parts: list[str], *, must_exist: bool) -> str | None:
    if not parts:
        return None
    current = document
    walked = ""
    for position, part in enumerate(parts):
        last = position == len(parts) - 1
        here = f"{walked}/{jsonpointer.escape(part)}"
        if isinstance(current, dict):
            if part not in current:
                if last and not must_exist:
                    return None
                return f"{here} does not exist"
            current = current[part]
        elif isinstance(current, list):
            if last and not must_exist and part == "-":
                return None
            # RFC 6901 array index: "0" or digits without a leading zero (ASCII only: "²".isdigit() is true)
            if not (part == "0" or (part.isascii() and part.isdigit() and not part.startswith("0"))):
                return f"{part!r} in {here} is not an array index (the value at {walked or '/'} is an array)"
            limit = len(current) if last and not must_exist else len(current) - 1
            if int(part) > limit:
                return f"{here} does not exist: the array at {walked or '/'} has {len(current)} items"
            if last and not must_exist:
                return None
            current = current[int(part)]
        else:
            return f"{here} does not exist: the value at {walked or '/'} is {_kind(current)}, not an object or array"
        walked = here
    return None
