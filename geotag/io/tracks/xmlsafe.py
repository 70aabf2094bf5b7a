"""XML through defusedxml: no entity expansion, no external entities, errors with their line number."""

from __future__ import annotations

from xml.etree.ElementTree import Element, ParseError

from geotag.io.tracks._base import fail


def parse_xml(data: bytes, name: str) -> Element:
    """The root element of `data`; a malformed document is a TrackError naming its line."""
    import defusedxml
    import defusedxml.ElementTree as DET

    try:
        return DET.fromstring(data)
    except ParseError as e:
        line = e.position[0] if getattr(e, "position", None) else None
        reason = str(e).split(":")[0] or "not well-formed"
        return _raise(name, f"line {line}" if line else None, f"not well-formed XML ({reason})")
    except LookupError as e:  # an encoding declaration Python does not know
        return _raise(name, "line 1", f"not readable XML ({e})")
    except defusedxml.DefusedXmlException as e:
        return _raise(name, None, f"XML with entity declarations or external references is not read ({e})")


def _raise(name: str, where: str | None, what: str) -> Element:
    raise fail(name, where, what)


def local(tag: str) -> str:
    """An element's name without its namespace: `{http://...}Trackpoint` -> `Trackpoint`."""
    return tag.rpartition("}")[2]
