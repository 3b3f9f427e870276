"""The one exception hierarchy of Aegis and its mapping to OperationOutcome.

    FhirError                      any error a client may see; carries HTTP status and issues
      ├── InvalidInput (400)       malformed body, bad parameter, failed validation (issue code: invalid/structure/value…)
      ├── Unauthorized (401), Forbidden (403)
      ├── NotFound (404), Gone (410)
      ├── MethodNotAllowed (405)
      ├── Conflict (409), PreconditionFailed (412)
      ├── PayloadTooLarge (413), UnsupportedMediaType (415), NotAcceptable (406)
      └── Unprocessable (422)      well-formed but semantically refused (e.g. business rules)

Every issue carries a stable message code (``AEGIS-NNN``) and, where it points into a resource, the FHIRPath
location as ``expression`` so a client knows exactly what to fix.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Issue:
    severity: str  # fatal | error | warning | information
    code: str  # IssueType value set: invalid, structure, value, required, not-found, ...
    diagnostics: str
    expression: tuple[str, ...] = ()
    message_id: str = ""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"severity": self.severity, "code": self.code}
        if self.message_id:
            out["details"] = {
                "coding": [{"system": "https://aegis-fhir.org/message-id", "code": self.message_id}],
                "text": self.diagnostics,
            }
        out["diagnostics"] = self.diagnostics
        if self.expression:
            out["expression"] = list(self.expression)
        return out


def operation_outcome(issues: list[Issue] | tuple[Issue, ...]) -> dict[str, Any]:
    return {"resourceType": "OperationOutcome", "issue": [i.to_json() for i in issues]}


def info_outcome(text: str, message_id: str = "") -> dict[str, Any]:
    return operation_outcome([Issue("information", "informational", text, message_id=message_id)])


class FhirError(Exception):
    status: int = 500
    issue_code: str = "exception"

    def __init__(
        self,
        diagnostics: str | None = None,
        *,
        expression: str | tuple[str, ...] | list[str] | None = None,
        message_id: str = "",
        issues: list[Issue] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        if issues is None:
            expr: tuple[str, ...]
            if expression is None:
                expr = ()
            elif isinstance(expression, str):
                expr = (expression,)
            else:
                expr = tuple(expression)
            issues = [Issue("error", self.issue_code, diagnostics or type(self).__name__, expr, message_id)]
        self.issues = issues
        self.headers = headers or {}
        super().__init__("; ".join(
            f"{', '.join(i.expression)}: {i.diagnostics}" if i.expression else i.diagnostics for i in issues
        ))

    def outcome(self) -> dict[str, Any]:
        return operation_outcome(self.issues)


class InvalidInput(FhirError):
    status = 400
    issue_code = "invalid"


class Unauthorized(FhirError):
    status = 401
    issue_code = "login"


class Forbidden(FhirError):
    status = 403
    issue_code = "forbidden"


class NotFound(FhirError):
    status = 404
    issue_code = "not-found"


class MethodNotAllowed(FhirError):
    status = 405
    issue_code = "not-supported"


class NotAcceptable(FhirError):
    status = 406
    issue_code = "not-supported"


class Conflict(FhirError):
    status = 409
    issue_code = "conflict"


class Gone(FhirError):
    status = 410
    issue_code = "deleted"


class PreconditionFailed(FhirError):
    status = 412
    issue_code = "conflict"


class PayloadTooLarge(FhirError):
    status = 413
    issue_code = "too-costly"


class UnsupportedMediaType(FhirError):
    status = 415
    issue_code = "not-supported"


class Unprocessable(FhirError):
    status = 422
    issue_code = "processing"


class NotImplementedYet(FhirError):
    """A valid FHIR request for a feature Aegis does not provide (yet); 501 would hide it from clients that retry."""

    status = 400
    issue_code = "not-supported"
