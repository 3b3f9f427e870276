"""FHIR XML ↔ the FHIR JSON dict form, driven by the R4 model (http://hl7.org/fhir/R4/xml.html and json.html).

This module owns the XML wire format and nothing else: it maps element names, repetition, primitive ``value``
attributes, the ``_name`` sibling form of primitive ``id``/``extension``, the XHTML narrative and nested resources
between the two representations. It does not validate content beyond what the mapping itself needs (codes, dates,
cardinalities other than "repeats or not" are the validator's job).

Reading is hardened: lxml with no entity substitution, no DTD loading, no network, no huge trees; documents that
carry a DOCTYPE are refused, as are non-UTF-8 documents. Numbers are accepted with the same grammar as FHIR JSON, so
both formats accept the same values, and decimals keep their exact text as :class:`decimal.Decimal`.

Writing builds the text directly (no intermediate tree): elements are ordered by the model's definition order,
which XML requires and JSON does not, and narrative ``div`` strings are checked and then inserted verbatim.
"""

from __future__ import annotations

import copy
import re
import threading
from decimal import Decimal
from operator import attrgetter
from typing import Any

from lxml import etree

from resources.jsonio import FhirDecimal, decimal_text, parse_int
from resources.model import ElementInfo, TypeInfo, is_resource_type, type_info
from resources.outcome import InvalidInput

__all__ = ["FHIR_NS", "XHTML_NS", "resource_to_xml", "xml_to_resource"]

FHIR_NS = "http://hl7.org/fhir"
XHTML_NS = "http://www.w3.org/1999/xhtml"
_F = "{" + FHIR_NS + "}"
_F_LEN = len(_F)
_XHTML_DIV = "{" + XHTML_NS + "}div"
_XML_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>'

# Stable message codes of this module (AEGIS-130..AEGIS-142).
MSG_MALFORMED = "AEGIS-130"
MSG_ENCODING = "AEGIS-131"
MSG_DOCTYPE = "AEGIS-132"
MSG_NAMESPACE = "AEGIS-133"
MSG_RESOURCE_TYPE = "AEGIS-134"
MSG_UNKNOWN_ELEMENT = "AEGIS-135"
MSG_ATTRIBUTE = "AEGIS-136"
MSG_PRIMITIVE = "AEGIS-137"
MSG_REPEATS = "AEGIS-138"
MSG_CONTENT = "AEGIS-139"
MSG_NARRATIVE = "AEGIS-140"
MSG_SHAPE = "AEGIS-141"
MSG_UNREPRESENTABLE = "AEGIS-142"

# the JSON number grammar, so an XML value is accepted exactly when the same text would be in JSON
_INTEGER = re.compile(r"-?(?:0|[1-9][0-9]*)")
_DECIMAL = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_ENCODING_DECL = re.compile(rb"\A(?:\xef\xbb\xbf)?<\?xml[^>]*?\bencoding\s*=\s*[\"']([A-Za-z0-9._-]+)[\"']")
_LINE_COL_SUFFIX = re.compile(r", line \d+, column \d+$")

_order = attrgetter("order")

# --------------------------------------------------------------------------------------------------------- parsing

_parsers = threading.local()


def _parser() -> etree.XMLParser:
    # lxml parsers keep per-parse state, so each thread gets its own
    parser: etree.XMLParser | None = getattr(_parsers, "parser", None)
    if parser is None:
        parser = etree.XMLParser(
            resolve_entities=False,
            no_network=True,
            load_dtd=False,
            dtd_validation=False,
            huge_tree=False,
            remove_comments=True,
            remove_pis=True,
            collect_ids=False,
            encoding="utf-8",
        )
        _parsers.parser = parser
    return parser


def _check_encoding(data: bytes) -> None:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(
            f"XML must be encoded in UTF-8 (invalid byte at offset {exc.start})", message_id=MSG_ENCODING
        ) from None
    match = _ENCODING_DECL.match(data)
    if match and match.group(1).lower() not in (b"utf-8", b"utf8"):
        declared = match.group(1).decode("ascii")
        raise InvalidInput(f"XML must be encoded in UTF-8, not {declared}", message_id=MSG_ENCODING)


def _has_doctype(data: bytes) -> bool:
    """Whether the prolog holds a DOCTYPE; scanned by hand so hostile prologs cost linear time."""
    pos = 3 if data.startswith(b"\xef\xbb\xbf") else 0
    end = len(data)
    while pos < end:
        ch = data[pos]
        if ch in b" \t\r\n":
            pos += 1
        elif data.startswith(b"<?", pos):
            close = data.find(b"?>", pos + 2)
            if close < 0:
                return False
            pos = close + 2
        elif data.startswith(b"<!--", pos):
            close = data.find(b"-->", pos + 4)
            if close < 0:
                return False
            pos = close + 3
        else:
            return data.startswith(b"<!DOCTYPE", pos)
    return False


def _parse(data: bytes) -> Any:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError("xml_to_resource expects bytes")
    data = bytes(data)
    _check_encoding(data)
    if _has_doctype(data):
        raise InvalidInput("XML documents must not contain a DOCTYPE declaration", message_id=MSG_DOCTYPE)
    try:
        root = etree.fromstring(data, _parser())
    except etree.XMLSyntaxError as exc:
        line, column = exc.position
        reason = _LINE_COL_SUFFIX.sub("", str(exc.msg or exc))
        raise InvalidInput(f"Malformed XML at line {line}, column {column}: {reason}", message_id=MSG_MALFORMED) from None
    if root is None:
        raise InvalidInput("The XML document is empty", message_id=MSG_MALFORMED)
    if root.getroottree().docinfo.doctype:
        raise InvalidInput("XML documents must not contain a DOCTYPE declaration", message_id=MSG_DOCTYPE)
    return root


def xml_to_resource(data: bytes) -> dict[str, Any]:
    """Parse one FHIR resource in XML into its JSON dict form. Raises :class:`InvalidInput` on any problem."""
    root = _parse(data)
    try:
        return _read_resource(root, "")
    except RecursionError:
        raise InvalidInput("The resource is nested too deeply", message_id=MSG_CONTENT) from None


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _check_text(text: str | None, path: str) -> None:
    if text and not text.isspace():
        raise InvalidInput(
            f"Text content is not allowed here: {text.strip()[:40]!r}", expression=path, message_id=MSG_CONTENT
        )


def _read_resource(el: Any, container_path: str) -> dict[str, Any]:
    tag = el.tag
    if not isinstance(tag, str):
        raise InvalidInput("Expected a resource element", expression=container_path or (), message_id=MSG_CONTENT)
    if not tag.startswith(_F):
        ns = tag[1:].partition("}")[0] if tag.startswith("{") else ""
        raise InvalidInput(
            f"Element <{_local(tag)}> must be in the FHIR namespace {FHIR_NS}, not {ns or 'no namespace'}",
            expression=container_path or _local(tag),
            message_id=MSG_NAMESPACE,
        )
    rtype = tag[_F_LEN:]
    if not is_resource_type(rtype):
        raise InvalidInput(
            f"<{rtype}> is not a FHIR R4 resource type", expression=container_path or rtype, message_id=MSG_RESOURCE_TYPE
        )
    path = container_path or rtype
    _reject_attributes(el, path)
    ti = type_info(rtype)
    assert ti is not None  # every resource type is in the model
    out: dict[str, Any] = {"resourceType": rtype}
    _read_children(el, ti, out, path)
    return out


def _reject_attributes(el: Any, path: str) -> None:
    for name in el.attrib:
        # attributes in other namespaces (xsi:schemaLocation, xml:lang) have no JSON form and are ignored
        if not name.startswith("{"):
            raise InvalidInput(f"Unexpected attribute '{name}'", expression=path, message_id=MSG_ATTRIBUTE)


def _read_attributes(el: Any, ti: TypeInfo, out: dict[str, Any], path: str) -> None:
    for name, value in el.attrib.items():
        if name.startswith("{"):
            continue
        info = ti.by_json_name.get(name)
        if info is None or not info.xml_attr:
            raise InvalidInput(f"Unexpected attribute '{name}'", expression=path, message_id=MSG_ATTRIBUTE)
        out[name] = _convert(value, info, f"{path}.{name}")


def _read_children(el: Any, ti: TypeInfo, out: dict[str, Any], path: str) -> None:
    _check_text(el.text, path)
    by_name = ti.by_json_name
    counts: dict[str, int] = {}
    padded: list[str] | None = None
    for child in el:
        tag = child.tag
        if not isinstance(tag, str):
            # comments and processing instructions are dropped by the parser, so this is an entity reference
            raise InvalidInput("Entity references are not allowed", expression=path, message_id=MSG_DOCTYPE)
        _check_text(child.tail, path)
        if tag.startswith(_F):
            name = tag[_F_LEN:]
        elif tag == _XHTML_DIV and "div" in by_name:
            name = "div"
        else:
            local = _local(tag)
            ns = tag[1:].partition("}")[0] if tag.startswith("{") else ""
            raise InvalidInput(
                f"Element <{local}> must be in the FHIR namespace {FHIR_NS}, not {ns or 'no namespace'}",
                expression=f"{path}.{local}",
                message_id=MSG_NAMESPACE,
            )
        info = by_name.get(name)
        if info is None or info.xml_attr:
            raise InvalidInput(
                f"Unknown element '{name}' in {ti.key}", expression=f"{path}.{name}", message_id=MSG_UNKNOWN_ELEMENT
            )
        # non-repeating choices share one slot: valueString after valueQuantity is a repeat too
        slot = name if info.is_array else info.name
        index = counts.get(slot, 0)
        counts[slot] = index + 1
        if info.is_array:
            child_path = f"{path}.{name}[{index}]"
        else:
            child_path = f"{path}.{name}"
            if index:
                raise InvalidInput(
                    f"Element '{info.name}' occurs more than once but may appear at most once",
                    expression=child_path,
                    message_id=MSG_REPEATS,
                )

        if info.is_primitive:
            if info.type_code == "xhtml":
                out[name] = _read_div(child, child_path)
                continue
            value, extra = _read_primitive(child, info, child_path)
            if info.is_array:
                if index == 0:
                    # both lists are created up front (keeping key order) and dropped at the end if all null
                    out[name] = []
                    out["_" + name] = []
                    padded = padded or []
                    padded.append(name)
                out[name].append(value)
                out["_" + name].append(extra)
            else:
                if value is not None:
                    out[name] = value
                if extra is not None:
                    out["_" + name] = extra
        elif info.child_type_key == "Resource":
            resource = _read_contained(child, child_path)
            if info.is_array:
                out.setdefault(name, []).append(resource)
            else:
                out[name] = resource
        else:
            child_ti = type_info(info.child_type_key or info.type_code)
            assert child_ti is not None  # the generator checks every reference
            obj = _read_complex(child, child_ti, child_path)
            if info.is_array:
                out.setdefault(name, []).append(obj)
            else:
                out[name] = obj
    if padded:
        for name in padded:
            if all(v is None for v in out[name]):
                del out[name]
            if all(v is None for v in out["_" + name]):
                del out["_" + name]


def _read_complex(el: Any, ti: TypeInfo, path: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if el.attrib:
        _read_attributes(el, ti, out, path)
    _read_children(el, ti, out, path)
    if not out:
        raise InvalidInput("Element has no attributes or children", expression=path, message_id=MSG_CONTENT)
    return out


def _read_primitive(el: Any, info: ElementInfo, path: str) -> tuple[Any, dict[str, Any] | None]:
    value: Any = None
    extra: dict[str, Any] | None = None
    for name, text in el.attrib.items():
        if name == "value":
            value = _convert(text, info, path)
        elif name == "id":
            if not text:
                raise InvalidInput("Attribute 'id' must not be empty", expression=path, message_id=MSG_PRIMITIVE)
            extra = {"id": text}
        elif not name.startswith("{"):
            raise InvalidInput(f"Unexpected attribute '{name}'", expression=path, message_id=MSG_ATTRIBUTE)
    _check_text(el.text, path)
    if len(el):
        extensions = []
        ext_ti = type_info("Extension")
        assert ext_ti is not None
        for index, child in enumerate(el):
            if child.tag != _F + "extension":
                local = _local(child.tag) if isinstance(child.tag, str) else "?"
                raise InvalidInput(
                    f"Element '{local}' is not allowed in a primitive element (only extension)",
                    expression=f"{path}.{local}",
                    message_id=MSG_UNKNOWN_ELEMENT,
                )
            _check_text(child.tail, path)
            extensions.append(_read_complex(child, ext_ti, f"{path}.extension[{index}]"))
        extra = extra or {}
        extra["extension"] = extensions
    if value is None and extra is None:
        raise InvalidInput(
            "Element has neither a value attribute nor extensions", expression=path, message_id=MSG_CONTENT
        )
    return value, extra


def _convert(text: str, info: ElementInfo, path: str) -> Any:
    if not text:
        raise InvalidInput("Attribute values must not be empty", expression=path, message_id=MSG_PRIMITIVE)
    kind = info.json_kind
    if kind == "string" or kind is None:
        return text
    if kind == "boolean":
        if text == "true":
            return True
        if text == "false":
            return False
        raise InvalidInput(
            f"'{text[:40]}' is not a boolean (expected true or false)", expression=path, message_id=MSG_PRIMITIVE
        )
    if kind == "integer":
        if _INTEGER.fullmatch(text):
            return int(text)
        raise InvalidInput(f"'{text[:40]}' is not an integer", expression=path, message_id=MSG_PRIMITIVE)
    if _DECIMAL.fullmatch(text):
        # mirror jsonio: a number without fraction or exponent is read as jsonio reads it, so the two formats agree
        if _INTEGER.fullmatch(text):
            return parse_int(text)
        return FhirDecimal(text)
    raise InvalidInput(f"'{text[:40]}' is not a decimal number", expression=path, message_id=MSG_PRIMITIVE)


def _read_contained(el: Any, path: str) -> dict[str, Any]:
    _reject_attributes(el, path)
    _check_text(el.text, path)
    children = list(el)
    if len(children) != 1:
        raise InvalidInput(
            f"Expected exactly one resource inside, found {len(children)} elements",
            expression=path,
            message_id=MSG_CONTENT,
        )
    _check_text(children[0].tail, path)
    return _read_resource(children[0], path)


def _read_div(el: Any, path: str) -> str:
    if el.tag != _XHTML_DIV:
        raise InvalidInput(
            f"The narrative must be a <div> in the XHTML namespace {XHTML_NS}", expression=path, message_id=MSG_NARRATIVE
        )
    # a detached copy drops namespace declarations inherited from the FHIR document that the div does not use
    div = copy.deepcopy(el)
    div.tail = None
    etree.cleanup_namespaces(div)
    return str(etree.tostring(div, encoding="unicode"))


# --------------------------------------------------------------------------------------------------------- writing

# characters that need escaping in attribute values, plus those XML 1.0 cannot carry at all
_ATTR_SPECIAL = re.compile('[&<>"\n\r\t\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]')
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_ATTR_ESCAPES = str.maketrans(
    {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "\n": "&#10;", "\r": "&#13;", "\t": "&#9;"}
)
_attr_names_cache: dict[str, tuple[str, ...]] = {}


def _xml_attr_names(ti: TypeInfo) -> tuple[str, ...]:
    names = _attr_names_cache.get(ti.key)
    if names is None:
        names = tuple(e.json_name for e in ti.elements if e.xml_attr)
        _attr_names_cache[ti.key] = names
    return names


def _escape(text: str, path: str) -> str:
    if _ATTR_SPECIAL.search(text) is None:
        return text
    if _NOT_XML.search(text) is not None:
        raise InvalidInput(
            "The value contains characters that XML cannot represent", expression=path, message_id=MSG_UNREPRESENTABLE
        )
    return text.translate(_ATTR_ESCAPES)


def _shape_error(message: str, path: str) -> InvalidInput:
    return InvalidInput(message, expression=path, message_id=MSG_SHAPE)


def resource_to_xml(resource: dict[str, Any], *, pretty: bool = False, declaration: bool = False) -> bytes:
    """Serialise a resource in JSON dict form as FHIR XML (UTF-8).

    Raises :class:`InvalidInput` (with the element's location) when the dict does not fit the R4 model.
    """
    parts: list[str] = []
    nl = "\n" if pretty else ""
    if declaration:
        parts.append(_XML_DECLARATION + nl)
    try:
        _write_resource(parts, resource, "", "", "  " if pretty else "", nl, root=True)
    except RecursionError:
        raise _shape_error("The resource is nested too deeply", "resource") from None
    return "".join(parts).encode("utf-8")


def _write_resource(
    parts: list[str], res: Any, path: str, pre: str, step: str, nl: str, *, root: bool = False
) -> None:
    if not isinstance(res, dict):
        raise _shape_error("Expected a resource (a JSON object)", path or "resource")
    rtype = res.get("resourceType")
    if not isinstance(rtype, str) or not is_resource_type(rtype):
        raise InvalidInput(
            f"{rtype!r} is not a FHIR R4 resource type", expression=path or "resourceType", message_id=MSG_RESOURCE_TYPE
        )
    ti = type_info(rtype)
    assert ti is not None
    path = path or rtype
    open_tag = f'<{rtype} xmlns="{FHIR_NS}"' if root else f"<{rtype}"
    if len(res) == 1:
        parts.append(f"{pre}{open_tag}/>{nl}")
        return
    parts.append(f"{pre}{open_tag}>{nl}")
    _write_members(parts, res, ti, path, pre + step, step, nl, resource=True)
    parts.append(f"{pre}</{rtype}>{nl}")


def _write_members(
    parts: list[str],
    obj: dict[str, Any],
    ti: TypeInfo,
    path: str,
    pre: str,
    step: str,
    nl: str,
    *,
    resource: bool = False,
) -> None:
    by_name = ti.by_json_name
    present: dict[str, ElementInfo] = {}
    for key in obj:
        base = key[1:] if key[:1] == "_" else key
        info = by_name.get(base)
        if info is None:
            if resource and key == "resourceType":
                continue
            raise InvalidInput(f"Unknown element '{key}' in {ti.key}", expression=f"{path}.{key}", message_id=MSG_UNKNOWN_ELEMENT)
        if info.xml_attr:
            if base != key:
                raise _shape_error(f"'{key}' is not allowed: '{base}' cannot have extensions", f"{path}.{key}")
            continue
        if base != key and not info.is_primitive:
            raise _shape_error(f"'{key}' is only allowed for primitive elements", f"{path}.{key}")
        present[base] = info
    infos = sorted(present.values(), key=_order) if len(present) > 1 else list(present.values())
    for info in infos:
        name = info.json_name
        value = obj.get(name)
        child_path = f"{path}.{name}"
        if info.is_primitive:
            extra = obj.get("_" + name)
            if info.type_code == "xhtml":
                if extra is not None:
                    raise _shape_error("The narrative div cannot have extensions", child_path)
                parts.append(f"{pre}{_checked_div(value, child_path)}{nl}")
            elif info.is_array:
                values = _as_list(value, child_path)
                extras = _as_list(extra, f"{path}._{name}")
                count = max(len(values), len(extras))
                if count == 0:
                    raise _shape_error("Arrays must not be empty", child_path)
                for i in range(count):
                    _write_primitive(
                        parts,
                        name,
                        values[i] if i < len(values) else None,
                        extras[i] if i < len(extras) else None,
                        info,
                        f"{child_path}[{i}]",
                        pre,
                        step,
                        nl,
                    )
            else:
                _write_primitive(parts, name, value, extra, info, child_path, pre, step, nl)
            continue
        items = _items(value, info, child_path)
        if info.child_type_key == "Resource":
            for i, item in enumerate(items):
                item_path = f"{child_path}[{i}]" if info.is_array else child_path
                parts.append(f"{pre}<{name}>{nl}")
                _write_resource(parts, item, item_path, pre + step, step, nl)
                parts.append(f"{pre}</{name}>{nl}")
        else:
            child_ti = type_info(info.child_type_key or info.type_code)
            assert child_ti is not None
            child_attrs = _xml_attr_names(child_ti)
            for i, item in enumerate(items):
                item_path = f"{child_path}[{i}]" if info.is_array else child_path
                _write_complex(parts, name, item, child_ti, child_attrs, item_path, pre, step, nl)


def _as_list(value: Any, path: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _shape_error("Expected an array", path)
    return value


def _items(value: Any, info: ElementInfo, path: str) -> list[Any]:
    if info.is_array:
        if not isinstance(value, list):
            raise _shape_error("Expected an array", path)
        if not value:
            raise _shape_error("Arrays must not be empty", path)
        return value
    if isinstance(value, list):
        raise _shape_error("Expected a single value, not an array", path)
    return [value]


def _write_complex(
    parts: list[str],
    name: str,
    obj: Any,
    ti: TypeInfo,
    attr_names: tuple[str, ...],
    path: str,
    pre: str,
    step: str,
    nl: str,
) -> None:
    if not isinstance(obj, dict):
        raise _shape_error("Expected an object", path)
    attrs = ""
    n_attrs = 0
    for attr in attr_names:
        value = obj.get(attr)
        if value is not None:
            info = ti.by_json_name[attr]
            attrs += f' {attr}="{_format(value, info, f"{path}.{attr}")}"'
            n_attrs += 1
    if len(obj) == n_attrs:
        if not n_attrs:
            raise _shape_error("Elements must not be empty", path)
        parts.append(f"{pre}<{name}{attrs}/>{nl}")
        return
    parts.append(f"{pre}<{name}{attrs}>{nl}")
    _write_members(parts, obj, ti, path, pre + step, step, nl)
    parts.append(f"{pre}</{name}>{nl}")


def _write_primitive(
    parts: list[str],
    name: str,
    value: Any,
    extra: Any,
    info: ElementInfo,
    path: str,
    pre: str,
    step: str,
    nl: str,
) -> None:
    attrs = ""
    extensions: Any = None
    if extra is not None:
        if not isinstance(extra, dict):
            raise _shape_error("Expected an object with id and/or extension", path)
        for key, item in extra.items():
            if key == "id":
                if not isinstance(item, str):
                    raise _shape_error("Expected a string", f"{path}.id")
                attrs = f' id="{_escape(item, f"{path}.id")}"'
            elif key == "extension":
                extensions = item
            else:
                raise InvalidInput(
                    f"Unknown element '{key}' on a primitive (only id and extension)",
                    expression=f"{path}.{key}",
                    message_id=MSG_UNKNOWN_ELEMENT,
                )
    if value is not None:
        attrs += f' value="{_format(value, info, path)}"'
    elif extra is None:
        raise _shape_error("A primitive needs a value or extensions (null is only allowed as array padding)", path)
    if not extensions:
        if not attrs:
            raise _shape_error("A primitive needs a value or extensions", path)
        parts.append(f"{pre}<{name}{attrs}/>{nl}")
        return
    if not isinstance(extensions, list):
        raise _shape_error("Expected an array", f"{path}.extension")
    ext_ti = type_info("Extension")
    assert ext_ti is not None
    ext_attrs = _xml_attr_names(ext_ti)
    inner = pre + step
    parts.append(f"{pre}<{name}{attrs}>{nl}")
    for i, ext in enumerate(extensions):
        _write_complex(parts, "extension", ext, ext_ti, ext_attrs, f"{path}.extension[{i}]", inner, step, nl)
    parts.append(f"{pre}</{name}>{nl}")


def _format(value: Any, info: ElementInfo, path: str) -> str:
    """Canonical XML text of a primitive, after checking the JSON value has the type the model expects."""
    kind = info.json_kind
    cls = type(value)
    if kind == "string":
        if cls is str:
            if not value:
                raise _shape_error("Strings must not be empty", path)
            return _escape(value, path)
    elif kind == "boolean":
        if cls is bool:
            return "true" if value else "false"
    elif kind == "integer":
        if cls is int:
            return str(value)
    elif kind == "decimal":
        if cls is FhirDecimal:
            return value.text  # the exact text it was read with
        if cls is Decimal and value.is_finite():
            return decimal_text(value)
        if cls is int:
            return str(value)
        if cls is float and value == value and value not in (float("inf"), float("-inf")):
            return repr(value)
    raise _shape_error(f"Expected a {kind} value for {info.type_code}, got {cls.__name__}", path)


def _checked_div(div: Any, path: str) -> str:
    """The narrative as XHTML text that can be inserted into the document as it is."""
    if not isinstance(div, str) or not div:
        raise _shape_error("The narrative div must be a non-empty string", path)
    if _NOT_XML.search(div) is not None:
        raise InvalidInput(
            "The narrative contains characters that XML cannot represent", expression=path, message_id=MSG_UNREPRESENTABLE
        )
    try:
        root = etree.fromstring(div.encode("utf-8"), _parser())
    except etree.XMLSyntaxError as exc:
        reason = _LINE_COL_SUFFIX.sub("", str(exc.msg or exc))
        raise InvalidInput(f"The narrative div is not well-formed XHTML: {reason}", expression=path, message_id=MSG_NARRATIVE) from None
    if root.getroottree().docinfo.doctype or any(not isinstance(e.tag, str) for e in root.iter()):
        raise InvalidInput("The narrative div must not use a DOCTYPE or entities", expression=path, message_id=MSG_NARRATIVE)
    if root.tag == _XHTML_DIV and div.startswith("<div") and div.endswith(">"):
        # a lone, well-formed <div xmlns="...xhtml"> carries its own namespace: insert it untouched
        return div
    if root.tag == "div":
        return _to_xhtml_namespace(root)
    if root.tag == _XHTML_DIV:
        # prefixed or surrounded by a prolog: re-serialise the element alone
        root.tail = None
        etree.cleanup_namespaces(root)
        return str(etree.tostring(root, encoding="unicode"))
    raise InvalidInput("The narrative must be a single <div> element", expression=path, message_id=MSG_NARRATIVE)


def _to_xhtml_namespace(root: Any) -> str:
    """Lenient fix-up for narratives written without the XHTML namespace declaration."""
    fixed = etree.Element(_XHTML_DIV, nsmap={None: XHTML_NS})
    fixed.text = root.text
    for key, value in root.attrib.items():
        fixed.set(key, value)
    for child in list(root):
        fixed.append(child)
    for el in fixed.iter():
        if isinstance(el.tag, str) and not el.tag.startswith("{"):
            el.tag = "{" + XHTML_NS + "}" + el.tag
    return str(etree.tostring(fixed, encoding="unicode"))
