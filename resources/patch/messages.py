"""Stable message codes (``AEGIS-27x``) of the PATCH interaction, one per kind of failure a client can fix.

Owns only the codes, so both patch formats report the same kind of problem with the same code and a client (or a
test) can tell the kinds apart without parsing diagnostics. (AEGIS-24x belongs to the HTTP side of PATCH in
fhir_server.interactions.patch, AEGIS-25x to bundles.)
"""

from __future__ import annotations

from typing import Final

#: The patch document itself is malformed: not an array / not a Parameters resource, unknown operation, missing or
#: mistyped member or part.
PATCH_DOCUMENT_INVALID: Final = "AEGIS-270"
#: A JSON Patch pointer does not lead to an existing location (or to a place where one can be added).
PATCH_TARGET_MISSING: Final = "AEGIS-271"
#: A JSON Patch ``test`` operation found a different value.
PATCH_TEST_FAILED: Final = "AEGIS-272"
#: Applying the patch would leave something that is not a resource of the same type.
PATCH_RESULT_INVALID: Final = "AEGIS-273"
#: A FHIRPath Patch ``path`` is not valid FHIRPath, or uses a construct that cannot address elements.
FHIRPATH_PATH_INVALID: Final = "AEGIS-274"
#: A FHIRPath Patch ``path`` matched no element, or more than the operation allows.
FHIRPATH_PATH_MATCH: Final = "AEGIS-275"
#: A FHIRPath Patch ``value`` does not fit the element it is written to (type, cardinality, existing content).
FHIRPATH_VALUE_INVALID: Final = "AEGIS-276"
#: A FHIRPath Patch ``index``, ``source`` or ``destination`` is outside the list.
FHIRPATH_INDEX_INVALID: Final = "AEGIS-277"
