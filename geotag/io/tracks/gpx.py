"""GPX 1.0 / 1.1: track points (each <trkseg> a segment), route points (each <rte> a segment) and
waypoints (no segment) that carry a time; elevation, hdop, pdop and satellites kept.

Why not gpxpy at run time: it reads GPX correctly, but through plain ElementTree (no entity protection),
it turns a time it cannot parse into "no time" silently, its errors name no point, and it builds a full
object model: fed a defusedxml tree through its internal field reader it took 3.6 s of CPU for 100,000
points here, against 1.8 s for this walk (bench/track_read.py times both). The fields a fix needs are
few and fixed by the schema (lat / lon attributes; ele, time, sat, hdop, pdop children), so we walk the
defusedxml tree for them, and tests/test_tracks.py holds this reader to gpxpy's reading of the same
files. A time that does not parse is an error naming the point ("trkpt 14"); a point without a time is
merely not used.
"""

from __future__ import annotations

from pathlib import Path
from xml.etree.ElementTree import Element

from geotag.io.tracks._base import NAN, Builder, fail, parse_time, read_bounded
from geotag.io.tracks.xmlsafe import local, parse_xml

_KINDS = ("trkpt", "rtept", "wpt")
_FIELDS = ("ele", "time", "hdop", "pdop", "sat")


def read_gpx(path: Path, name: str) -> Builder:
    root = parse_xml(read_bounded(path), name)
    if local(root.tag) != "gpx":
        raise fail(name, None, f"not a GPX file (root element <{local(root.tag)}>)")
    ns = root.tag[: -len("gpx")]  # "{http://www.topografix.com/GPX/1/1}" or ""
    tags = {ns + field: field for field in _FIELDS}
    b = Builder(name, _KINDS)
    counts = [0, 0, 0]
    segment = 0

    def add(el: Element, kind: int, seg: int) -> None:
        counts[kind] += 1
        n = counts[kind]
        values: dict[str, str] = {}
        for child in el:
            field = tags.get(child.tag)
            if field is not None and child.text:
                values[field] = child.text
        try:
            lat, lon = float(el.get("lat")), float(el.get("lon"))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise _bad_coordinate(el, name, kind, n) from None
        text = values.pop("time", None)
        if text is None or not text.strip():
            b.untimed += 1
            return
        t = parse_time(text)
        if t is None:
            raise fail(name, f"{_KINDS[kind]} {n}", f"time {text.strip()[:40]!r} does not parse")
        number = {"ele": NAN, "hdop": NAN, "pdop": NAN, "sat": NAN}
        for field, text in values.items():
            try:
                number[field] = float(text)
            except ValueError:
                if text.strip():
                    raise fail(
                        name, f"{_KINDS[kind]} {n}", f"<{field}> {text.strip()[:40]!r} is no number"
                    ) from None
        b.add(t, lat, lon, number["ele"], number["hdop"], number["pdop"], number["sat"], NAN, seg, n, kind)

    trk, trkseg, trkpt = ns + "trk", ns + "trkseg", ns + "trkpt"
    rte, rtept, wpt = ns + "rte", ns + "rtept", ns + "wpt"
    for item in root:
        if item.tag == trk:
            for seg in item:
                if seg.tag == trkseg:
                    for point in seg:
                        if point.tag == trkpt:
                            add(point, 0, segment)
                    segment += 1
        elif item.tag == rte:
            for point in item:
                if point.tag == rtept:
                    add(point, 1, segment)
            segment += 1
        elif item.tag == wpt:
            add(item, 2, -1)
    return b


def _bad_coordinate(el: Element, name: str, kind: int, n: int) -> Exception:
    for attribute in ("lat", "lon"):
        text = el.get(attribute)
        if text is None:
            return fail(name, f"{_KINDS[kind]} {n}", f"no {attribute} attribute")
        try:
            float(text)
        except ValueError:
            return fail(name, f"{_KINDS[kind]} {n}", f"{attribute} {text[:40]!r} is no number")
    return fail(name, f"{_KINDS[kind]} {n}", "bad coordinates")
