"""Garmin formats: FIT through fitdecode; TCX and the older Garmin XML logbook (exiftool's Geotag.xml).

FIT: every `record` message with a timestamp and a position (semicircles -> degrees), its altitude
(enhanced_altitude, else altitude) and `gps_accuracy` (metres) when given; fitdecode checks the CRC.

TCX / Garmin XML: each <Trackpoint> with <Time> and <Position> (TCX LatitudeDegrees / LongitudeDegrees /
AltitudeMeters; Garmin XML Latitude / Longitude / Altitude); each <Track> a segment. A Trackpoint without
a position (heart rate only) is no fix. The two schemas share a handful of fields, so one small walk of a
defusedxml tree reads both; a TCX library (python-tcxparser, tcxreader) would bring its own XML parser
and still not read the older logbook.
"""

from __future__ import annotations

import struct
import warnings
from pathlib import Path

from geotag.io.tracks._base import (
    NAN,
    Builder,
    datetime_seconds,
    fail,
    open_bounded,
    parse_time,
    read_bounded,
)
from geotag.io.tracks.xmlsafe import local, parse_xml

_SEMICIRCLE = 180.0 / 2**31


def read_fit(path: Path, name: str) -> Builder:
    import fitdecode

    b = Builder(name, ("record",))
    n = 0
    with open_bounded(path) as f, warnings.catch_warnings():
        # fitdecode warns (to stderr) about odd definitions in a corrupt file; the CRC check decides
        warnings.simplefilter("ignore", UserWarning)
        try:
            with fitdecode.FitReader(f, check_crc=fitdecode.CrcCheck.RAISE) as reader:
                for frame in reader:
                    if not isinstance(frame, fitdecode.FitDataMessage) or frame.name != "record":
                        continue
                    n += 1
                    values = {field.name: field.value for field in frame.fields}
                    lat, lon = values.get("position_lat"), values.get("position_long")
                    if lat is None or lon is None:
                        continue  # a record without a fix (indoors, before the first fix)
                    stamp = values.get("timestamp")
                    if stamp is None:
                        b.untimed += 1
                        continue
                    try:
                        t = datetime_seconds(stamp)
                        la, lo = float(lat) * _SEMICIRCLE, float(lon) * _SEMICIRCLE
                    except (TypeError, ValueError, AttributeError):
                        raise fail(name, f"record {n}", "timestamp or position is not a number") from None
                    alt = values.get("enhanced_altitude")
                    if alt is None:
                        alt = values.get("altitude")
                    acc = values.get("gps_accuracy")
                    b.add(t, la, lo, alt=_num(alt), accuracy=_num(acc), record=n)
        except (fitdecode.FitError, ValueError, TypeError, KeyError, IndexError, struct.error) as e:
            # fitdecode raises its own errors for a bad header, CRC or a cut file, and plain ones when
            # corrupt bytes decode to nonsense: either way the file is unreadable from that record on
            where = f"record {n + 1}" if n else None
            raise fail(name, where, f"not a readable FIT file ({type(e).__name__}: {e})") from None
    return b


def _num(value: object) -> float:
    try:
        return NAN if value is None else float(value)
    except (TypeError, ValueError):
        return NAN


_LAT = ("LatitudeDegrees", "Latitude")
_LON = ("LongitudeDegrees", "Longitude")
_ALT = ("AltitudeMeters", "Altitude")


def read_garmin_xml(path: Path, name: str) -> Builder:
    root = parse_xml(read_bounded(path), name)
    if local(root.tag) not in ("TrainingCenterDatabase", "History"):
        raise fail(name, None, f"not a TCX or Garmin XML file (root element <{local(root.tag)}>)")
    b = Builder(name, ("Trackpoint",))
    n = 0
    segment = -1
    for el in root.iter():
        tag = local(el.tag)
        if tag == "Track":
            segment += 1
            continue
        if tag != "Trackpoint":
            continue
        n += 1
        where = f"Trackpoint {n}"
        values: dict[str, str] = {}
        for child in el.iter():
            if child is not el and len(child) == 0 and child.text and child.text.strip():
                values.setdefault(local(child.tag), child.text.strip())
        lat_text = next((values[k] for k in _LAT if k in values), None)
        lon_text = next((values[k] for k in _LON if k in values), None)
        if lat_text is None or lon_text is None:
            continue
        time_text = values.get("Time")
        if time_text is None:
            b.untimed += 1
            continue
        t = parse_time(time_text)
        if t is None:
            raise fail(name, where, f"time {time_text[:40]!r} does not parse")
        try:
            lat, lon = float(lat_text), float(lon_text)
            alt_text = next((values[k] for k in _ALT if k in values), None)
            alt = float(alt_text) if alt_text else NAN
        except ValueError:
            raise fail(name, where, "position or altitude is not a number") from None
        b.add(t, lat, lon, alt=alt, segment=max(segment, 0), record=n)
    return b
