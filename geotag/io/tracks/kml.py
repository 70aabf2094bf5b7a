"""KML and KMZ: `gx:Track` / `gx:MultiTrack` (`when` + `gx:coord` pairs, as Google Location History
and many loggers write; each track a segment) and Placemarks whose Point has a `TimeStamp`. A Placemark
with a TimeSpan, or a time that is a date alone, is not a moment: not used (counted in a warning).

Why not fastkml at run time: it reads these elements correctly (tests/test_tracks.py holds this reader to
fastkml's reading of the same files), but in lenient mode it drops a malformed time or coordinate
silently, in strict mode its errors name no element, it logs each problem to stderr, and it read about
5,000 fixes a second here. The elements a fix needs are few (Placemark, TimeStamp/when, Point/coordinates,
Track/when/coord), so we walk the defusedxml tree (entities refused, errors with a line number) for them
and name the bad record ("gx:Track point 2", "Placemark 3").

A KMZ is a zip holding a .kml: `doc.kml` if present, else the first .kml member; a member that inflates
past MAX_ZIP_MEMBER_BYTES (512 MiB) is refused while inflating rather than read.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path
from xml.etree.ElementTree import Element

from geotag.io.tracks._base import (
    MAX_ZIP_MEMBER_BYTES,
    NAN,
    Builder,
    fail,
    open_bounded,
    parse_time,
    read_bounded,
)
from geotag.io.tracks.xmlsafe import local, parse_xml

_KINDS = ("gx:Track point", "Placemark")


def read_kml(path: Path, name: str) -> Builder:
    return _read_kml_bytes(read_bounded(path), name)


def read_kmz(path: Path, name: str) -> Builder:
    with open_bounded(path) as f:
        try:
            with zipfile.ZipFile(f) as zf:
                members = [i for i in zf.infolist() if i.filename.lower().endswith(".kml") and not i.is_dir()]
                if not members:
                    raise fail(
                        name,
                        None,
                        "a zip with no .kml inside (a KMZ was expected; unzip other archives first)",
                    )
                member = next((i for i in members if i.filename.lower() == "doc.kml"), members[0])
                inner = f"{name}!{member.filename}"
                if member.file_size > MAX_ZIP_MEMBER_BYTES:
                    raise fail(
                        inner,
                        None,
                        f"{member.file_size:,} bytes inflated; over the {MAX_ZIP_MEMBER_BYTES:,} limit",
                    )
                with zf.open(member) as m:
                    data = m.read(MAX_ZIP_MEMBER_BYTES + 1)
                if len(data) > MAX_ZIP_MEMBER_BYTES:
                    raise fail(inner, None, f"inflates past the {MAX_ZIP_MEMBER_BYTES:,}-byte limit")
        except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError, OSError) as e:
            raise fail(name, None, f"not a readable KMZ (zip) file ({e})") from None
    return _read_kml_bytes(data, inner)


def _read_kml_bytes(data: bytes, name: str) -> Builder:
    root = parse_xml(data, name)
    if local(root.tag) != "kml":
        raise fail(name, None, f"not a KML file (root element <{local(root.tag)}>)")
    b = Builder(name, _KINDS)
    counts = [0, 0]  # track points, placemarks
    segment = 0
    for el in root.iter():
        tag = local(el.tag)
        if tag == "Track":
            _add_track(b, el, counts, segment)
            segment += 1
        elif tag == "Placemark":
            counts[1] += 1
            if not any(local(e.tag) == "Track" for e in el.iter()):
                _add_placemark(b, el, counts[1])
    return b


def _add_track(b: Builder, track: Element, counts: list[int], segment: int) -> None:
    whens = [c.text or "" for c in track if local(c.tag) == "when"]
    coords = [c.text or "" for c in track if local(c.tag) == "coord"]
    if len(whens) != len(coords):
        where = f"{_KINDS[0]} {counts[0] + 1}"
        raise fail(b.name, where, f"a gx:Track with {len(whens)} <when> but {len(coords)} <gx:coord>")
    for when, coord in zip(whens, coords, strict=True):
        counts[0] += 1
        where = f"{_KINDS[0]} {counts[0]}"
        t = _moment(when, b.name, where)
        if t is None:
            b.untimed += 1
            continue
        lon, lat, alt = _coordinates(coord.split(), b.name, where)
        b.add(t, lat, lon, alt=alt, segment=segment, record=counts[0], kind=0)


def _add_placemark(b: Builder, placemark: Element, n: int) -> None:
    where = f"{_KINDS[1]} {n}"
    point = next((e for e in placemark.iter() if local(e.tag) == "Point"), None)
    if point is None:
        return  # a line or polygon without times: no fix
    text = next((e.text or "" for e in point.iter() if local(e.tag) == "coordinates"), None)
    if text is None:
        raise fail(b.name, where, "a Point without coordinates")
    stamp = next((e for e in placemark.iter() if local(e.tag) == "TimeStamp"), None)
    when = next((e.text or "" for e in stamp if local(e.tag) == "when"), None) if stamp is not None else None
    t = _moment(when, b.name, where) if when is not None else None
    if t is None:
        b.untimed += 1
        return
    lon, lat, alt = _coordinates(text.strip().split(","), b.name, where)
    b.add(t, lat, lon, alt=alt, record=n, kind=1)


_DATE_ONLY = re.compile(r"^\d{4}(-\d{2}(-\d{2})?)?$")


def _moment(text: str, name: str, where: str) -> float | None:
    """UTC seconds of a KML dateTime; None for a date alone (no moment); an error when it does not parse."""
    text = text.strip()
    if _DATE_ONLY.match(text):
        return None
    t = parse_time(text)
    if t is None:
        raise fail(name, where, f"time {text[:40]!r} does not parse")
    return t


def _coordinates(parts: list[str], name: str, where: str) -> tuple[float, float, float]:
    """lon, lat[, alt] from the parts of a `gx:coord` (spaces) or `coordinates` (commas)."""
    parts = [p.strip() for p in parts]
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise fail(name, where, "coordinates need longitude and latitude")
    try:
        return float(parts[0]), float(parts[1]), float(parts[2]) if len(parts) > 2 and parts[2] else NAN
    except ValueError:
        raise fail(name, where, f"coordinates {' '.join(parts)[:40]!r} are not numbers") from None
