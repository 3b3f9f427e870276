"""FHIR XML ↔ JSON dict conversion: round trips over real and hand-made resources, and what must be refused."""

from __future__ import annotations

import random
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from resources import jsonio
from resources.outcome import InvalidInput
from resources.xml import FHIR_NS, XHTML_NS, resource_to_xml, xml_to_resource

EXAMPLES = Path(__file__).resolve().parents[2] / "data" / "examples"
EXAMPLE_FILES = sorted(EXAMPLES.glob("*.json"))


def load(name: str) -> dict[str, Any]:
    result: dict[str, Any] = jsonio.loads((EXAMPLES / name).read_bytes())
    return result


def fhir(body: str, root: str = "Patient") -> bytes:
    return f'<{root} xmlns="{FHIR_NS}">{body}</{root}>'.encode()


def exact(value: Any) -> Any:
    """A comparable form that, unlike ==, tells 72.5 from 72.50 and True from 1."""
    if isinstance(value, dict):
        return {k: exact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [exact(v) for v in value]
    if isinstance(value, (bool, int, Decimal)):
        return (type(value).__name__, str(value))
    return value


def invalid(data: bytes) -> InvalidInput:
    with pytest.raises(InvalidInput) as info:
        xml_to_resource(data)
    return info.value


# ------------------------------------------------------------------------------------------------------ round trips


def test_examples_are_present() -> None:
    assert len(EXAMPLE_FILES) >= 30
    assert sum(p.stat().st_size for p in EXAMPLE_FILES) < 1_000_000


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.stem)
@pytest.mark.parametrize("pretty", [False, True], ids=["compact", "pretty"])
def test_json_xml_json_round_trip(path: Path, pretty: bool) -> None:
    original = jsonio.loads(path.read_bytes())
    xml = resource_to_xml(original, pretty=pretty)
    back = xml_to_resource(xml)
    assert exact(back) == exact(original)


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.stem)
def test_xml_is_stable_after_one_round(path: Path) -> None:
    xml = resource_to_xml(jsonio.loads(path.read_bytes()), pretty=True)
    assert resource_to_xml(xml_to_resource(xml), pretty=True) == xml


def test_output_is_well_formed_fhir_xml() -> None:
    xml = resource_to_xml(load("aegis-patient-primitive-extensions.json"), declaration=True)
    assert xml.startswith(b'<?xml version="1.0" encoding="UTF-8"?><Patient xmlns="http://hl7.org/fhir">')
    root = etree.fromstring(xml)
    assert root.tag == f"{{{FHIR_NS}}}Patient"
    div = root.find(f"{{{FHIR_NS}}}text/{{{XHTML_NS}}}div")
    assert div is not None and div.find(f"{{{XHTML_NS}}}p") is not None


def test_decimal_precision_is_kept_both_ways() -> None:
    obs = load("aegis-observation-vitals.json")
    xml = resource_to_xml(obs)
    assert b'<value value="72.50"/>' in xml
    back = xml_to_resource(xml)
    value = back["valueQuantity"]["value"]
    assert isinstance(value, Decimal) and str(value) == "72.50"
    assert b'"value":72.50' in jsonio.dumps(back)
    sampled = back["component"][3]["valueSampledData"]
    assert str(sampled["origin"]["value"]) == "0.000"
    assert str(sampled["factor"]) == "1.0000001"
    assert sampled["dimensions"] == 1 and type(sampled["dimensions"]) is int


def test_primitive_kinds_from_value_attributes() -> None:
    res = xml_to_resource(
        fhir(
            '<active value="true"/><multipleBirthInteger value="-2"/>'
            '<photo><size value="0"/></photo><birthDate value="2000-01-01"/>'
        )
    )
    assert res["active"] is True
    assert res["multipleBirthInteger"] == -2 and type(res["multipleBirthInteger"]) is int
    assert res["photo"] == [{"size": 0}]
    assert res["birthDate"] == "2000-01-01"


def test_primitive_extensions_become_underscore_siblings_with_null_padding() -> None:
    xml = fhir(
        "<name>"
        '<given value="Peter"/>'
        '<given id="g2"><extension url="http://example.org/x"><valueCode value="masked"/></extension></given>'
        '<given value="James"/>'
        "</name>"
        '<birthDate value="1974-12-25"><extension url="http://example.org/t"><valueTime value="14:35:45"/></extension></birthDate>'
    )
    res = xml_to_resource(xml)
    assert res["name"][0]["given"] == ["Peter", None, "James"]
    assert res["name"][0]["_given"] == [
        None,
        {"id": "g2", "extension": [{"url": "http://example.org/x", "valueCode": "masked"}]},
        None,
    ]
    assert res["birthDate"] == "1974-12-25"
    assert res["_birthDate"] == {"extension": [{"url": "http://example.org/t", "valueTime": "14:35:45"}]}
    assert xml_to_resource(resource_to_xml(res)) == res


def test_primitive_array_without_any_extension_has_no_underscore_key() -> None:
    res = xml_to_resource(fhir('<name><given value="a"/><given value="b"/></name>'))
    assert res == {"resourceType": "Patient", "name": [{"given": ["a", "b"]}]}


def test_primitive_array_of_only_extensions_has_no_value_key() -> None:
    res = xml_to_resource(fhir('<name><given><extension url="u"><valueBoolean value="true"/></extension></given></name>'))
    assert res["name"][0] == {"_given": [{"extension": [{"url": "u", "valueBoolean": True}]}]}
    assert resource_to_xml(res) == fhir('<name><given><extension url="u"><valueBoolean value="true"/></extension></given></name>')


def test_elements_are_written_in_definition_order_whatever_the_dict_order() -> None:
    obs = load("aegis-observation-vitals.json")
    expected = resource_to_xml(obs)
    rng = random.Random(7)

    def shuffled(value: Any) -> Any:
        if isinstance(value, dict):
            items = list(value.items())
            rng.shuffle(items)
            return {k: shuffled(v) for k, v in items}
        if isinstance(value, list):
            return [shuffled(v) for v in value]
        return value

    for _ in range(5):
        assert resource_to_xml(shuffled(obs)) == expected


def test_attributes_id_and_url_and_resource_id_element() -> None:
    res = {
        "resourceType": "Patient",
        "id": "p",
        "name": [{"id": "n1", "family": "X"}],
        "extension": [{"url": "http://e", "valueString": "v"}],
    }
    assert resource_to_xml(res) == fhir(
        '<id value="p"/><extension url="http://e"><valueString value="v"/></extension>'
        '<name id="n1"><family value="X"/></name>'
    )


def test_contained_and_bundle_resources_use_the_type_as_element_name() -> None:
    bundle = load("aegis-bundle-searchset.json")
    xml = resource_to_xml(bundle)
    assert b'<entry><fullUrl value="http://example.org/fhir/Observation/hr1"/><resource><Observation>' in xml
    assert b"<contained><Organization><id value=\"org\"/>" in xml
    assert xml.count(b"xmlns=\"http://hl7.org/fhir\"") == 1
    back = xml_to_resource(xml)
    assert back["entry"][1]["resource"]["contained"][0] == {"resourceType": "Organization", "id": "org", "name": "Inline Org"}


def test_narrative_div_keeps_only_its_own_namespace_declaration() -> None:
    xml = (
        f'<Patient xmlns="{FHIR_NS}" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
        'xsi:schemaLocation="http://hl7.org/fhir ../../schema/fhir-single.xsd">'
        '<text><status value="generated"/>'
        '<div xmlns="http://www.w3.org/1999/xhtml"><p>Hi &amp; <b>bye</b></p></div></text>'
        "</Patient>"
    ).encode()
    res = xml_to_resource(xml)
    assert res["text"]["div"] == '<div xmlns="http://www.w3.org/1999/xhtml"><p>Hi &amp; <b>bye</b></p></div>'


def test_narrative_without_namespace_gets_the_xhtml_namespace_on_output() -> None:
    res = {"resourceType": "Patient", "text": {"status": "generated", "div": "<div><p>plain</p></div>"}}
    xml = resource_to_xml(res)
    back = xml_to_resource(xml)
    assert back["text"]["div"] == '<div xmlns="http://www.w3.org/1999/xhtml"><p>plain</p></div>'


def test_comments_and_whitespace_are_ignored() -> None:
    xml = (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<!-- a comment -->\n<Patient xmlns="{FHIR_NS}">\n'
        '  <!-- inside -->\n  <active value="false"/>\n</Patient>\n'
    ).encode()
    assert xml_to_resource(xml) == {"resourceType": "Patient", "active": False}


def test_utf8_bom_is_accepted() -> None:
    assert xml_to_resource(b"\xef\xbb\xbf" + fhir('<gender value="other"/>')) == {
        "resourceType": "Patient",
        "gender": "other",
    }


def test_attribute_escaping_round_trips_whitespace_and_markup() -> None:
    text = 'a & b < c > d " e \' f\tg\nh\ri  j'
    res = {"resourceType": "Patient", "name": [{"family": text}]}
    assert xml_to_resource(resource_to_xml(res))["name"][0]["family"] == text


_XML_CHARS = st.characters(
    codec="utf-8",
    exclude_categories=("Cs",),
    exclude_characters=[chr(c) for c in range(0x20) if c not in (0x9, 0xA, 0xD)] + ["\ufffe", "\uffff"],
)


@settings(max_examples=200, deadline=None)
@given(text=st.text(_XML_CHARS, min_size=1, max_size=40), number=st.decimals(allow_nan=False, allow_infinity=False))
def test_any_string_and_decimal_survive_a_round_trip(text: str, number: Decimal) -> None:
    res = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": text},
        "valueQuantity": {"value": number},
    }
    back = xml_to_resource(resource_to_xml(res))
    assert back["code"]["text"] == text
    # XML reads a number exactly as JSON reads the same text (so -0 becomes int 0 in both)
    assert exact(back["valueQuantity"]["value"]) == exact(jsonio.loads(str(number)))


# ------------------------------------------------------------------------------------------------- refused input


def test_unknown_element_names_its_location() -> None:
    err = invalid(fhir('<name><given value="a"/></name><name><foo value="x"/></name>'))
    assert err.issues[0].expression == ("Patient.name[1].foo",)
    assert "Unknown element 'foo'" in err.issues[0].diagnostics
    assert err.issues[0].message_id == "AEGIS-135"


def test_unknown_element_in_contained_resource() -> None:
    err = invalid(fhir("<contained><Organization><bogus value=\"1\"/></Organization></contained>"))
    assert err.issues[0].expression == ("Patient.contained[0].bogus",)


def test_wrong_or_missing_namespace() -> None:
    assert invalid(b"<Patient/>").issues[0].message_id == "AEGIS-133"
    assert invalid(b'<Patient xmlns="http://hl7.org/fhir/other"/>').issues[0].message_id == "AEGIS-133"
    err = invalid(fhir('<x:active xmlns:x="urn:other" value="true"/>'))
    assert err.issues[0].expression == ("Patient.active",)


def test_unknown_resource_type() -> None:
    err = invalid(fhir("", root="Patient2"))
    assert err.issues[0].message_id == "AEGIS-134"
    assert invalid(fhir("", root="DomainResource")).issues[0].message_id == "AEGIS-134"


def test_malformed_xml_names_line_and_column() -> None:
    err = invalid(b'<Patient xmlns="http://hl7.org/fhir">\n  <active value="true">\n</Patient>')
    text = err.issues[0].diagnostics
    assert "line 3" in text and "column" in text
    assert err.issues[0].message_id == "AEGIS-130"
    assert invalid(b"").issues[0].message_id == "AEGIS-130"
    assert invalid(b"not xml").issues[0].message_id == "AEGIS-130"


def test_doctype_and_entities_are_refused() -> None:
    xxe = (
        b'<?xml version="1.0"?><!DOCTYPE Patient [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        b'<Patient xmlns="http://hl7.org/fhir"><name><family value="&x;"/></name></Patient>'
    )
    assert invalid(xxe).issues[0].message_id == "AEGIS-132"
    laughs = (
        b'<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>'
        b'<Patient xmlns="http://hl7.org/fhir"><name><family value="&lol2;"/></name></Patient>'
    )
    assert invalid(laughs).issues[0].message_id == "AEGIS-132"
    # a DOCTYPE hidden behind comments and processing instructions in the prolog
    hidden = b"<!-- c --><?pi x?>\n<!DOCTYPE Patient><Patient xmlns=\"http://hl7.org/fhir\"/>"
    assert invalid(hidden).issues[0].message_id == "AEGIS-132"


def test_undefined_entity_is_malformed() -> None:
    assert invalid(fhir('<name><family value="&nbsp;"/></name>')).issues[0].message_id == "AEGIS-130"


def test_non_utf8_is_refused() -> None:
    latin1 = '<Patient xmlns="http://hl7.org/fhir"><name><family value="Müller"/></name></Patient>'.encode("latin-1")
    assert invalid(latin1).issues[0].message_id == "AEGIS-131"
    declared = b'<?xml version="1.0" encoding="ISO-8859-1"?><Patient xmlns="http://hl7.org/fhir"/>'
    assert invalid(declared).issues[0].message_id == "AEGIS-131"
    utf16 = '<?xml version="1.0" encoding="UTF-16"?><Patient xmlns="http://hl7.org/fhir"/>'.encode("utf-16")
    assert invalid(utf16).issues[0].message_id == "AEGIS-131"


@pytest.mark.parametrize(
    ("body", "location"),
    [
        ('<active value="True"/>', "Patient.active"),
        ('<active value="1"/>', "Patient.active"),
        ('<active value=""/>', "Patient.active"),
        ('<multipleBirthInteger value="1.0"/>', "Patient.multipleBirthInteger"),
        ('<multipleBirthInteger value="01"/>', "Patient.multipleBirthInteger"),
        ('<multipleBirthInteger value=" 1"/>', "Patient.multipleBirthInteger"),
        ('<photo><size value="+3"/></photo>', "Patient.photo[0].size"),
    ],
)
def test_bad_primitive_values(body: str, location: str) -> None:
    err = invalid(fhir(body))
    assert err.issues[0].expression == (location,)
    assert err.issues[0].message_id == "AEGIS-137"


@pytest.mark.parametrize("text", ["NaN", "Infinity", "1.", ".5", "1,5", "0x10", "1e", "--1", "72.50 "])
def test_bad_decimals(text: str) -> None:
    xml = fhir(f'<valueQuantity><value value="{text}"/></valueQuantity><status value="final"/>', root="Observation")
    assert invalid(xml).issues[0].expression == ("Observation.valueQuantity.value",)


def test_single_element_repeated() -> None:
    err = invalid(fhir('<active value="true"/><active value="false"/>'))
    assert err.issues[0].message_id == "AEGIS-138"
    err = invalid(fhir('<deceasedBoolean value="true"/><deceasedDateTime value="2020"/>'))
    assert err.issues[0].expression == ("Patient.deceasedDateTime",)


def test_text_content_and_empty_elements() -> None:
    assert invalid(fhir("<active>true</active>")).issues[0].message_id == "AEGIS-139"
    assert invalid(fhir("stray")).issues[0].message_id == "AEGIS-139"
    assert invalid(fhir("<active/>")).issues[0].message_id == "AEGIS-139"
    assert invalid(fhir("<name/>")).issues[0].expression == ("Patient.name[0]",)
    assert invalid(fhir("<contained/>")).issues[0].message_id == "AEGIS-139"


def test_unexpected_attributes() -> None:
    assert invalid(fhir('<active value="true" foo="bar"/>')).issues[0].message_id == "AEGIS-136"
    assert invalid(fhir('<name url="x"><family value="a"/></name>')).issues[0].message_id == "AEGIS-136"
    assert invalid(b'<Patient xmlns="http://hl7.org/fhir" id="x"/>').issues[0].message_id == "AEGIS-136"
    # an id element inside a datatype must be an attribute
    assert invalid(fhir('<name><id value="x"/></name>')).issues[0].expression == ("Patient.name[0].id",)


def test_narrative_must_be_xhtml_div() -> None:
    err = invalid(fhir('<text><status value="generated"/><div><p>x</p></div></text>'))
    assert err.issues[0].expression == ("Patient.text.div",)
    err = invalid(fhir(f'<text><status value="generated"/><p xmlns="{XHTML_NS}">x</p></text>'))
    assert err.issues[0].message_id == "AEGIS-133"


def test_contained_must_hold_exactly_one_resource() -> None:
    two = "<contained><Organization><name value=\"a\"/></Organization><Organization><name value=\"b\"/></Organization></contained>"
    assert invalid(fhir(two)).issues[0].expression == ("Patient.contained[0]",)


# ------------------------------------------------------------------------------------------- refused dict shapes


def write_error(resource: dict[str, Any]) -> InvalidInput:
    with pytest.raises(InvalidInput) as info:
        resource_to_xml(resource)
    return info.value


def test_writer_refuses_what_does_not_fit_the_model() -> None:
    assert write_error({"resourceType": "Nope"}).issues[0].message_id == "AEGIS-134"
    assert write_error({"resourceType": "Patient", "foo": 1}).issues[0].expression == ("Patient.foo",)
    assert write_error({"resourceType": "Patient", "active": "yes"}).issues[0].expression == ("Patient.active",)
    assert write_error({"resourceType": "Patient", "name": {"family": "x"}}).issues[0].expression == ("Patient.name",)
    assert write_error({"resourceType": "Patient", "gender": ["male"]}).issues[0].expression == ("Patient.gender",)
    assert write_error({"resourceType": "Patient", "_name": [{}]}).issues[0].expression == ("Patient._name",)
    assert write_error({"resourceType": "Patient", "name": [{"given": [None]}]}).issues[0].expression == (
        "Patient.name[0].given[0]",
    )
    assert write_error({"resourceType": "Patient", "name": [{}]}).issues[0].expression == ("Patient.name[0]",)
    assert write_error({"resourceType": "Patient", "multipleBirthInteger": True}).issues[0].message_id == "AEGIS-141"


def test_writer_refuses_characters_xml_cannot_carry() -> None:
    err = write_error({"resourceType": "Patient", "name": [{"family": "bell\x07"}]})
    assert err.issues[0].message_id == "AEGIS-142"
    assert err.issues[0].expression == ("Patient.name[0].family",)


def test_writer_refuses_malformed_narrative() -> None:
    err = write_error({"resourceType": "Patient", "text": {"status": "generated", "div": "<div><p>unclosed</div>"}})
    assert err.issues[0].expression == ("Patient.text.div",)
    assert err.issues[0].message_id == "AEGIS-140"
