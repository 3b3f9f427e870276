"""The request and response objects interactions work with, independent of the ASGI server."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fhir_server.storage.base import Version


@dataclass(slots=True)
class FhirRequest:
    method: str
    segments: list[str]  # path below the FHIR base, e.g. ["Patient", "1", "_history"]
    query: list[tuple[str, str]]
    headers: dict[str, str]  # lower-cased names
    body: bytes
    base: str  # absolute FHIR base URL without trailing slash
    query_string: str = ""
    assigned_id: str | None = None  # set by a transaction Bundle, which assigns create ids before processing
    resource: dict[str, Any] | None = None  # a Bundle entry's resource, already parsed and validated with the Bundle
    prepared: object | None = None  # the store's index data of that resource, computed ahead (fhir_server.prepare)

    def param(self, name: str) -> str | None:
        for key, value in self.query:
            if key == name:
                return value
        return None

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    def prefer(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for item in (self.headers.get("prefer") or "").split(","):
            key, _, value = item.strip().partition("=")
            if key:
                out[key.strip().lower()] = value.strip().strip('"')
        return out


@dataclass(slots=True)
class FhirResponse:
    status: int
    body: bytes | dict[str, Any] | None = None  # bytes: a stored canonical JSON resource
    headers: dict[str, str] = field(default_factory=dict)
    subsettable: bool = False  # _summary / _elements apply (reads)
    version: Version | None = None  # the version written or read, for Bundle entry responses
