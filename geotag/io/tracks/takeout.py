"""Google location history, streamed with ijson (a history can be hundreds of MB; memory stays at the
fixes' own arrays).

- Takeout `Records.json`: `locations[]` with latitudeE7 / longitudeE7, accuracy (m), altitude and
  `timestamp` (ISO 8601) or `timestampMs`. Old exports hold some E7 values that overflowed a signed 32-bit
  integer; those are wrapped back, as the community's readers do.
- The on-device Timeline export (Android `Timeline.json`): `semanticSegments[]` with `timelinePath`
  points (`{"point": "48.85°, 2.29°", "time": ...}`, each path a segment), visits (the place's
  `latLng` at the segment's start and end time) and activities (start / end `latLng`), and
  `rawSignals[]` position records (`LatLng`, `accuracyMeters`, `altitudeMeters`, `timestamp`).
  The iOS export (a top-level list; `geo:lat,lon` strings; path points as minutes after `startTime`)
  is read too.
The older monthly "Semantic Location History" files (timelineObjects) are not read.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import BinaryIO

from geotag.io.tracks._base import NAN, Builder, fail, open_bounded, parse_time

_E7 = 1e-7
_LATLNG = re.compile(r"^\s*(?:geo:)?\s*([-+]?\d+(?:\.\d+)?)\s*°?\s*,\s*([-+]?\d+(?:\.\d+)?)\s*°?\s*$")


def read_takeout(path: Path, name: str) -> Builder:
    import ijson

    from geotag.io.tracks.detect import detect_format

    kind = detect_format(path)
    with open_bounded(path) as f:
        try:
            if kind == "takeout-records":
                return _records(f, name)
            return _timeline(f, name)
        except ijson.JSONError as e:
            raise fail(name, None, f"not valid JSON ({str(e).splitlines()[0][:120]})") from None


def _records(f: BinaryIO, name: str) -> Builder:
    import ijson

    b = Builder(name, ("location",))
    for n, loc in enumerate(ijson.items(f, "locations.item", use_float=True), start=1):
        if not isinstance(loc, dict):
            raise fail(name, f"location {n}", "not an object")
        lat_e7, lon_e7 = loc.get("latitudeE7"), loc.get("longitudeE7")
        if lat_e7 is None or lon_e7 is None:
            continue
        stamp = loc.get("timestamp")
        if stamp is not None:
            t = parse_time(stamp) if isinstance(stamp, str) else None
        elif loc.get("timestampMs") is not None:
            t = _ms(loc["timestampMs"])
        else:
            b.untimed += 1
            continue
        if t is None:
            shown = stamp if stamp is not None else loc.get("timestampMs")
            raise fail(name, f"location {n}", f"time {str(shown)[:40]!r} does not parse")
        try:
            lat, lon = _wrap_e7(float(lat_e7), 900_000_000), _wrap_e7(float(lon_e7), 1_800_000_000)
        except (TypeError, ValueError):
            raise fail(name, f"location {n}", "latitudeE7 / longitudeE7 are not numbers") from None
        b.add(
            t,
            lat * _E7,
            lon * _E7,
            alt=_num(loc.get("altitude")),
            accuracy=_num(loc.get("accuracy")),
            record=n,
        )
    return b


def _wrap_e7(value: float, limit: int) -> float:
    return value - 2**32 if value > limit else value


def _ms(value: object) -> float | None:
    try:
        return float(value) / 1000.0
    except (TypeError, ValueError):
        return None


def _num(value: object) -> float:
    try:
        return NAN if value is None else float(value)
    except (TypeError, ValueError):
        return NAN


def _latlng(text: object, name: str, where: str) -> tuple[float, float]:
    m = _LATLNG.match(text) if isinstance(text, str) else None
    if not m:
        raise fail(name, where, f"position {str(text)[:40]!r} is not 'lat°, lon°'")
    return float(m[1]), float(m[2])


def _time(text: object, name: str, where: str) -> float:
    t = parse_time(text) if isinstance(text, str) else None
    if t is None:
        raise fail(name, where, f"time {str(text)[:40]!r} does not parse")
    return t


class _Timeline:
    """Adds the fixes of one semantic segment (Android or iOS shape) to a builder."""

    def __init__(self, b: Builder, name: str) -> None:
        self.b, self.name, self.segment = b, name, 0

    def add_segment(self, seg: dict, n: int) -> None:
        where = f"semanticSegment {n}"
        b, name = self.b, self.name
        start = seg.get("startTime")
        end = seg.get("endTime")
        path = seg.get("timelinePath")
        if isinstance(path, list) and path:
            t0 = _time(start, name, where) if start is not None else None
            for k, p in enumerate(path, start=1):
                at = f"{where} point {k}"
                if not isinstance(p, dict):
                    raise fail(name, at, "not an object")
                lat, lon = _latlng(p.get("point"), name, at)
                if p.get("time") is not None:
                    t = _time(p["time"], name, at)
                elif p.get("durationMinutesOffsetFromStartTime") is not None and t0 is not None:
                    try:
                        t = t0 + 60.0 * float(p["durationMinutesOffsetFromStartTime"])
                    except (TypeError, ValueError):
                        raise fail(name, at, "durationMinutesOffsetFromStartTime is not a number") from None
                else:
                    b.untimed += 1
                    continue
                b.add(t, lat, lon, segment=self.segment, record=n)
            self.segment += 1
        visit = seg.get("visit")
        if isinstance(visit, dict):
            candidate = visit.get("topCandidate")
            place = candidate.get("placeLocation") if isinstance(candidate, dict) else None
            latlng = place.get("latLng") if isinstance(place, dict) else place
            if latlng is not None:
                lat, lon = _latlng(latlng, name, where)
                for stamp in (start, end):
                    if stamp is not None:
                        b.add(_time(stamp, name, where), lat, lon, record=n)
        activity = seg.get("activity")
        if isinstance(activity, dict):
            for key, stamp in (("start", start), ("end", end)):
                spot = activity.get(key)
                latlng = spot.get("latLng") if isinstance(spot, dict) else spot
                if latlng is not None and stamp is not None:
                    lat, lon = _latlng(latlng, name, where)
                    b.add(_time(stamp, name, where), lat, lon, record=n)

    def add_signal(self, signal: dict, n: int) -> None:
        position = signal.get("position") if isinstance(signal, dict) else None
        if not isinstance(position, dict):
            return  # wifi scans, activity records: no position
        where = f"rawSignal {n}"
        latlng = position.get("LatLng", position.get("latLng"))
        if latlng is None:
            return
        lat, lon = _latlng(latlng, self.name, where)
        stamp = position.get("timestamp")
        if stamp is None:
            self.b.untimed += 1
            return
        self.b.add(
            _time(stamp, self.name, where),
            lat,
            lon,
            alt=_num(position.get("altitudeMeters")),
            accuracy=_num(position.get("accuracyMeters")),
            record=n,
            kind=1,
        )


def _timeline(f: BinaryIO, name: str) -> Builder:
    import ijson

    b = Builder(name, ("semanticSegment", "rawSignal"))
    timeline = _Timeline(b, name)
    first = f.read(4096).lstrip(b"\xef\xbb\xbf").lstrip()
    f.seek(0)
    if first.startswith(b"["):  # iOS: a list of segments
        for n, seg in enumerate(ijson.items(f, "item", use_float=True), start=1):
            if isinstance(seg, dict):
                timeline.add_segment(seg, n)
        return b
    for n, seg in enumerate(ijson.items(f, "semanticSegments.item", use_float=True), start=1):
        if isinstance(seg, dict):
            timeline.add_segment(seg, n)
    f.seek(0)
    for n, signal in enumerate(ijson.items(f, "rawSignals.item", use_float=True), start=1):
        timeline.add_signal(signal, n)
    return b
