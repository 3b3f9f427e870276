"""The grant of an access token, as the FHIR side sees it: typed scopes plus launch context and user."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from smart_auth.scopes import ClinicalScope, parse_clinical, split


@dataclass(frozen=True, slots=True)
class Grant:
    scopes: tuple[ClinicalScope, ...]
    patient: str | None = None  # launch context: the patient id
    fhir_user: str | None = None  # e.g. "Practitioner/123" or "Patient/9"
    client_id: str = ""
    subject: str = ""  # username, or the client id for backend services

    @classmethod
    def from_scope_text(cls, scope: str, *, patient: str | None = None, fhir_user: str | None = None,
                        client_id: str = "", subject: str = "") -> Grant:
        return cls(_clinical(scope), patient, fhir_user, client_id, subject)

    def allows_any(self, rtype: str | None, actions: str) -> bool:
        """Whether some scope grants one of ``actions`` on ``rtype`` (None: on some type)."""
        if rtype is None:
            return any(any(a in s.actions for a in actions) for s in self.scopes)
        return any(s.allows(rtype, actions) for s in self.scopes)


@lru_cache(maxsize=4096)
def _clinical(scope: str) -> tuple[ClinicalScope, ...]:
    # every request parses its token's scope text: tokens share a handful of scope strings
    return tuple(s for s in (parse_clinical(t) for t in split(scope)) if s is not None)
