"""The PATCH interaction's two body formats, applied to a resource dict (http://hl7.org/fhir/R4/http.html#patch).

Owns nothing itself; it names the public API:

* :func:`apply_json_patch` for ``application/json-patch+json`` (RFC 6902),
* :func:`apply_fhirpath_patch` for a FHIRPath Patch ``Parameters`` resource (``application/fhir+json``).

Both return a patched copy and never change their arguments; both raise :class:`resources.outcome.FhirError`
subclasses whose ``expression`` points into the patch document. Message codes are in :mod:`resources.patch.messages`.
"""

from resources.patch.fhirpath_patch import apply_fhirpath_patch
from resources.patch.json_patch import apply_json_patch

__all__ = ["apply_fhirpath_patch", "apply_json_patch"]
