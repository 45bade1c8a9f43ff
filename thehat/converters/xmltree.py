"""Parse untrusted XML into an ElementTree, safely and with the line of every element.

The parser is the standard library's expat, feeding `xml.etree.ElementTree.TreeBuilder`.
Documents with a DOCTYPE are rejected before any declaration in it is read, so entity
expansion ("billion laughs") and external entities cannot occur. Character data is not kept:
callers read attributes and elements only.
"""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from xml.parsers import expat

from thehat.converters.conversion import ConversionError


@dataclass
class XmlDocument:
    """A parsed document: its root element and the line on which each element starts."""

    root: ElementTree.Element
    _lines: dict[int, int]

    def line(self, element: ElementTree.Element) -> int:
        """Return the line on which `element`'s start tag begins (1 is the first line)."""
        return self._lines[id(element)]


class _DoctypeFound(Exception):
    def __init__(self, line: int) -> None:
        super().__init__(line)
        self.line = line


def parse_xml(data: bytes, source: str, encoding: str | None = None) -> XmlDocument:
    """Parse `data`, which may start with an XML declaration naming its encoding.

    An `encoding` given here overrides the declaration's. Raises ConversionError naming `source` and the line for malformed XML and for any DOCTYPE.
    """
    parser = expat.ParserCreate(encoding)
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    builder = ElementTree.TreeBuilder()
    # Keyed by id(): Element defines no hash of its own. The tree keeps every element alive,
    # so no id is reused while the document exists.
    lines: dict[int, int] = {}

    def start(tag: str, attributes: dict[str, str]) -> None:
        element = builder.start(tag, attributes)
        lines[id(element)] = parser.CurrentLineNumber

    def reject_doctype(*_: object) -> None:
        raise _DoctypeFound(parser.CurrentLineNumber)

    parser.StartElementHandler = start
    parser.EndElementHandler = builder.end
    parser.StartDoctypeDeclHandler = reject_doctype
    try:
        parser.Parse(data, True)
    except _DoctypeFound as exc:
        raise ConversionError(
            f"{source}:{exc.line}: the file has a DOCTYPE declaration, which is not accepted "
            "because its entities can expand without limit or read other files; remove it "
            "(GNOME Planner does not write one)") from None
    except expat.ExpatError as exc:
        raise ConversionError(f"{source}:{exc.lineno}: invalid XML at column {exc.offset + 1}: "
                              f"{expat.ErrorString(exc.code)}") from exc
    return XmlDocument(builder.close(), lines)
