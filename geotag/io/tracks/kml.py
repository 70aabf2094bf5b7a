"""KML and KMZ through fastkml: `gx:Track` / `gx:MultiTrack` (`when` + `gx:coord` pairs, as Google
Location History and many loggers write; each track a segment) and Placemarks whose Point has a
`TimeStamp`. A Placemark with a TimeSpan, or a time that is a date alone, is not a moment: not used.

The XML is parsed by defusedxml (entities refused, errors with a line number) and the tree handed to
fastkml. A KMZ is a zip holding a .kml: `doc.kml` if present, else the first .kml member; a member that
inflates past MAX_ZIP_MEMBER_BYTES (512 MiB) is refused rather than read.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from geotag.io.tracks._base import (
    MAX_ZIP_MEMBER_BYTES,
    NAN,
    Builder,
    datetime_seconds,
    fail,
    open_bounded,
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
                    raise fail(name, None, "KMZ holds no .kml file")
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
    from fastkml import config, kml

    root = parse_xml(data, name)
    if local(root.tag) != "kml":
        raise fail(name, None, f"not a KML file (root element <{local(root.tag)}>)")
    ns = root.tag[: -len("kml")]
    try:
        doc = kml.KML.class_from_element(
            ns=ns, name_spaces={**config.NAME_SPACES, "kml": ns}, strict=False, element=root
        )
    except Exception as e:  # fastkml raises a variety of types on malformed content
        raise fail(name, None, f"not a readable KML document ({type(e).__name__}: {e})") from None

    b = Builder(name, _KINDS)
    counts = [0, 0]
    segment = 0
    for placemark in _placemarks(doc):
        geometry = getattr(placemark, "kml_geometry", None)
        tracks = _tracks(geometry)
        if tracks:
            for track in tracks:
                for item in track.track_items:
                    counts[0] += 1
                    t = _moment(item.when, name, f"{_KINDS[0]} {counts[0]}")
                    if t is None:
                        b.untimed += 1
                        continue
                    lon, lat, alt = _coords(item.coord, name, f"{_KINDS[0]} {counts[0]}")
                    b.add(t, lat, lon, alt=alt, segment=segment, record=counts[0], kind=0)
                segment += 1
            continue
        counts[1] += 1
        point = _point(geometry)
        if point is None:
            continue
        times = getattr(placemark, "times", None)
        stamp = getattr(times, "timestamp", None)
        t = _moment(stamp, name, f"{_KINDS[1]} {counts[1]}") if stamp is not None else None
        if t is None:
            b.untimed += 1
            continue
        lon, lat, alt = _coords(point, name, f"{_KINDS[1]} {counts[1]}")
        b.add(t, lat, lon, alt=alt, record=counts[1], kind=1)
    return b


def _placemarks(container) -> Iterator:
    for feature in getattr(container, "features", None) or []:
        if type(feature).__name__ == "Placemark":
            yield feature
        else:
            yield from _placemarks(feature)


def _tracks(geometry) -> list:
    kind = type(geometry).__name__
    if kind == "Track":
        return [geometry]
    if kind == "MultiTrack":
        return list(geometry.tracks)
    if kind == "MultiGeometry":
        return [g for g in geometry.kml_geometries if type(g).__name__ == "Track"]
    return []


def _point(geometry):
    if type(geometry).__name__ == "Point" and geometry.geometry is not None:
        return geometry.geometry
    return None


def _moment(when, name: str, where: str) -> float | None:
    """UTC seconds of a KmlDateTime; None for none or a date alone."""
    dt = getattr(when, "dt", None)
    if when is not None and dt is None:
        raise fail(name, where, "time does not parse")
    if not isinstance(dt, datetime):
        return None
    return datetime_seconds(dt)


def _coords(point, name: str, where: str) -> tuple[float, float, float]:
    coords = getattr(point, "coords", None)
    if not coords:
        raise fail(name, where, "no coordinates")
    c = coords[0]
    if len(c) < 2:
        raise fail(name, where, "coordinates need longitude and latitude")
    return float(c[0]), float(c[1]), float(c[2]) if len(c) > 2 else NAN
