from __future__ import annotations

import pytest

from fhir_server.http.media import body_media_type, response_format
from resources.outcome import NotAcceptable, UnsupportedMediaType


@pytest.mark.parametrize(("fmt", "accept", "expected"), [
    (None, None, "json"),
    (None, "application/fhir+xml", "xml"),
    (None, "application/fhir+json;q=0.5, application/fhir+xml", "xml"),
    (None, "application/fhir+xml;q=0.2, application/fhir+json;q=0.9", "json"),
    (None, "text/html,application/xhtml+xml,*/*;q=0.8", "json"),
    ("xml", "application/fhir+json", "xml"),
    ("application/fhir+json", "application/fhir+xml", "json"),
    ("text/xml", None, "xml"),
])
def test_response_format(fmt: str | None, accept: str | None, expected: str) -> None:
    assert response_format(fmt, accept) == expected


def test_unacceptable() -> None:
    with pytest.raises(NotAcceptable):
        response_format(None, "image/png")
    with pytest.raises(NotAcceptable):
        response_format("turtle", None)


@pytest.mark.parametrize(("ctype", "expected"), [
    (None, "json"),
    ("application/fhir+json; charset=UTF-8", "json"),
    ("application/json", "json"),
    ("application/fhir+xml", "xml"),
    ("text/xml;charset=utf-8", "xml"),
])
def test_body_media_type(ctype: str | None, expected: str) -> None:
    assert body_media_type(ctype) == expected


@pytest.mark.parametrize("ctype", ["text/plain", "application/x-www-form-urlencoded",
                                   "application/fhir+json; charset=latin-1", "application/json-patch+json"])
def test_unsupported_body(ctype: str) -> None:
    with pytest.raises(UnsupportedMediaType):
        body_media_type(ctype)


def test_json_patch_only_where_allowed() -> None:
    assert body_media_type("application/json-patch+json", allow_patch=True) == "json-patch"
