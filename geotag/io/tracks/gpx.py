"""GPX 1.0 / 1.1 through gpxpy: track points (each <trkseg> a segment), route points (each <rte> a
segment) and waypoints (no segment) that carry a time; elevation, hdop, pdop and satellites kept.

gpxpy builds its object model from an ElementTree root. We parse the XML with defusedxml (entities
refused, errors with a line number) and hand that root to gpxpy's own field reader, so the GPX semantics
are gpxpy's and the XML safety is defusedxml's. gpxpy reads a time it cannot parse as "no time"; we look
such points up again and call the time an error, naming the point ("trkpt 14").
"""

from __future__ import annotations

import re
from pathlib import Path

from geotag.io.tracks._base import NAN, Builder, datetime_seconds, fail, read_bounded
from geotag.io.tracks.xmlsafe import local, parse_xml

_KINDS = ("trkpt", "rtept", "wpt")
_DEFAULT_NS = re.compile(rb"""\sxmlns=(['"])[^'"]+\1""")


def read_gpx(path: Path, name: str) -> Builder:
    import gpxpy.gpx
    from gpxpy import gpxfield

    data = read_bounded(path)
    # gpxpy drops the default namespace before parsing, so its field paths are plain names: do the same
    # (one attribute removed on its own line: line numbers are unchanged)
    root = parse_xml(_DEFAULT_NS.sub(b"", data, count=1), name)
    if local(root.tag) != "gpx":
        raise fail(name, None, f"not a GPX file (root element <{local(root.tag)}>)")
    version = root.get("version")
    gpx = gpxpy.gpx.GPX()
    try:
        gpxfield.gpx_fields_from_xml(gpx, root, version)
    except gpxpy.gpx.GPXException as e:
        raise _name_bad_point(root, version, name, e) from None

    b = Builder(name, _KINDS)
    untimed: dict[int, list[int]] = {0: [], 1: [], 2: []}
    segment = 0
    counts = [0, 0, 0]

    def add(point: gpxpy.gpx.GPXTrackPoint, kind: int, seg: int) -> None:
        counts[kind] += 1
        if point.time is None:
            untimed[kind].append(counts[kind])
            return
        b.add(
            datetime_seconds(point.time),
            _num(point.latitude),
            _num(point.longitude),
            alt=_num(point.elevation),
            hdop=_num(point.horizontal_dilution),
            pdop=_num(point.position_dilution),
            sats=_num(point.satellites),
            segment=seg,
            record=counts[kind],
            kind=kind,
        )

    for track in gpx.tracks:
        for seg in track.segments:
            for point in seg.points:
                add(point, 0, segment)
            segment += 1
    for route in gpx.routes:
        for point in route.points:
            add(point, 1, segment)
        segment += 1
    for point in gpx.waypoints:
        add(point, 2, -1)

    _check_untimed(root, untimed, name)
    b.untimed = sum(len(v) for v in untimed.values())
    return b


def _num(value: object) -> float:
    return NAN if value is None else float(value)


def _check_untimed(root, untimed: dict[int, list[int]], name: str) -> None:
    """A point whose <time> gpxpy could not read is an error; a point with no <time> is merely unused."""
    for kind, numbers in untimed.items():
        if not numbers:
            continue
        elements = [el for el in root.iter() if local(el.tag) == _KINDS[kind]]
        for n in numbers:
            el = elements[n - 1]
            text = next((c.text for c in el if local(c.tag) == "time"), None)
            if text and text.strip():
                raise fail(name, f"{_KINDS[kind]} {n}", f"time {text.strip()[:40]!r} does not parse")


def _name_bad_point(root, version: str | None, name: str, error: Exception) -> Exception:
    """gpxpy's error names no point: read the points one by one with gpxpy to find which."""
    import gpxpy.gpx
    from gpxpy import gpxfield

    counts = dict.fromkeys(_KINDS, 0)
    for el in root.iter():
        kind = local(el.tag)
        if kind not in counts:
            continue
        counts[kind] += 1
        try:
            gpxfield.gpx_fields_from_xml(gpxpy.gpx.GPXTrackPoint, el, version)
        except gpxpy.gpx.GPXException as e:
            return fail(name, f"{kind} {counts[kind]}", str(e))
    return fail(name, None, str(error))
