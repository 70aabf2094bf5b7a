"""GeoJSON tracks (the json module: GeoJSON is plain JSON, and no GeoJSON library reads per-point times).

A LineString / MultiLineString Feature with one time per coordinate in its properties: `coordTimes`
(togeojson, Strava exports; a list of lists for a MultiLineString), `times`, or
`coordinateProperties.times` (newer togeojson). Each line is a segment. A Point Feature with a `time`,
`timestamp` or `datetime` property (ISO 8601, or Unix seconds / milliseconds). Coordinates are
[lon, lat, alt?]. Features without times are not used (counted as untimed).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from geotag.io.tracks._base import NAN, Builder, decode_text, fail, parse_time, read_bounded

_POINT_TIME_KEYS = ("time", "timestamp", "datetime", "dateTime", "when")


def read_geojson(path: Path, name: str) -> Builder:
    text = decode_text(read_bounded(path), name)
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise fail(name, f"line {e.lineno}", f"not valid JSON ({e.msg})") from None
    if not isinstance(doc, dict):
        raise fail(name, None, "not a GeoJSON object")
    if doc.get("type") == "FeatureCollection":
        features = doc.get("features")
        if not isinstance(features, list):
            raise fail(name, None, "FeatureCollection without a features list")
    elif doc.get("type") == "Feature":
        features = [doc]
    else:
        features = [{"type": "Feature", "geometry": doc, "properties": {}}]
    b = Builder(name, ("feature",))
    segment = 0
    for number, feature in enumerate(features, start=1):
        where = f"feature {number}"
        if not isinstance(feature, dict):
            raise fail(name, where, "not a GeoJSON Feature object")
        geometry = feature.get("geometry") or {}
        props = feature.get("properties") or {}
        if not isinstance(geometry, dict) or not isinstance(props, dict):
            raise fail(name, where, "geometry and properties must be objects")
        kind = geometry.get("type")
        coords = geometry.get("coordinates")
        if kind == "Point":
            stamp = next((props[k] for k in _POINT_TIME_KEYS if props.get(k) not in (None, "")), None)
            if stamp is None:
                b.untimed += 1
                continue
            lon, lat, alt = _position(coords, name, where)
            b.add(_time(stamp, name, where), lat, lon, alt=alt, record=number)
        elif kind in ("LineString", "MultiLineString"):
            lines = [coords] if kind == "LineString" else coords
            if not isinstance(lines, list) or not all(isinstance(line, list) for line in lines):
                raise fail(name, where, f"{kind} coordinates must be lists of positions")
            times = _line_times(props)
            if times is None:
                b.untimed += sum(len(line) for line in lines)
                continue
            if kind == "LineString" or (times and not isinstance(times[0], list)):
                times = [times] if kind == "LineString" else _split(times, lines)
            if len(times) != len(lines):
                raise fail(name, where, "coordTimes do not match the lines")
            for line, line_times in zip(lines, times, strict=True):
                if (
                    not isinstance(line, list)
                    or not isinstance(line_times, list)
                    or len(line) != len(line_times)
                ):
                    n = len(line) if isinstance(line, list) else 0
                    m = len(line_times) if isinstance(line_times, list) else 0
                    raise fail(name, where, f"{n} coordinates but {m} times")
                for k, (position, stamp) in enumerate(zip(line, line_times, strict=True), start=1):
                    at = f"{where} point {k}"
                    lon, lat, alt = _position(position, name, at)
                    if not (abs(lat) <= 90 and abs(lon) <= 180):
                        raise fail(name, at, f"position {lat:g}, {lon:g} out of range")
                    b.add(_time(stamp, name, at), lat, lon, alt=alt, segment=segment, record=number)
                segment += 1
    return b


def _line_times(props: dict) -> list | None:
    for value in (
        props.get("coordTimes"),
        props.get("times"),
        (props.get("coordinateProperties") or {}).get("times"),
    ):
        if isinstance(value, list) and value:
            return value
    return None


def _split(times: list, lines: list) -> list:
    """A flat time list for a MultiLineString: cut it by the lines' lengths."""
    out, start = [], 0
    for line in lines:
        n = len(line) if isinstance(line, list) else 0
        out.append(times[start : start + n])
        start += n
    return out if start == len(times) else [times]


def _position(coords: object, name: str, where: str) -> tuple[float, float, float]:
    if not isinstance(coords, list) or len(coords) < 2:
        raise fail(name, where, "coordinates must be [longitude, latitude, altitude?]")
    try:
        lon, lat = float(coords[0]), float(coords[1])
        alt = float(coords[2]) if len(coords) > 2 and coords[2] is not None else NAN
    except (TypeError, ValueError):
        raise fail(name, where, f"coordinates {str(coords)[:60]} are not numbers") from None
    return lon, lat, alt


def _time(stamp: object, name: str, where: str) -> float:
    if isinstance(stamp, bool):
        t = None
    elif isinstance(stamp, int | float):
        t = float(stamp) / 1000.0 if stamp > 1e11 else float(stamp)
    elif isinstance(stamp, str):
        t = parse_time(stamp)
    else:
        t = None
    if t is None or not math.isfinite(t):
        raise fail(name, where, f"time {str(stamp)[:40]!r} does not parse")
    return t
