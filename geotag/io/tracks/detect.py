"""Which track format a file holds: by its first 64 KiB first (a .log can be NMEA, a .json GeoJSON or
Google Takeout, a .xml TCX or Garmin XML), by its extension second (so a broken .gpx still goes to the
GPX reader and is reported as malformed GPX rather than as an unknown format)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from geotag.io.bounded import open_regular

FORMAT_NAMES = (
    "GPX",
    "NMEA 0183",
    "KML",
    "KMZ",
    "GeoJSON",
    "CSV",
    "Garmin FIT",
    "TCX",
    "Garmin XML",
    "IGC",
    "Google Takeout Records.json",
    "Google Timeline export",
)
# Extensions a folder walk picks up (content decides the format; a file that is none is skipped).
TRACK_EXTENSIONS = frozenset(
    {
        ".gpx",
        ".nmea",
        ".log",
        ".txt",
        ".kml",
        ".kmz",
        ".geojson",
        ".json",
        ".csv",
        ".fit",
        ".tcx",
        ".xml",
        ".igc",
    }
)
_BY_EXTENSION = {
    ".gpx": "gpx",
    ".nmea": "nmea",
    ".kml": "kml",
    ".kmz": "kmz",
    ".geojson": "geojson",
    ".csv": "csv",
    ".fit": "fit",
    ".tcx": "tcx",
    ".igc": "igc",
}
_HEAD = 64 * 1024
_XML_ROOT = re.compile(rb"<([A-Za-z_][\w.\-]*:)?([A-Za-z_][\w.\-]*)[\s/>]")
_NMEA = re.compile(rb"\$(?:[A-Z]{2}(?:RMC|GGA|GLL|ZDA)|PMGNTRK),")
_IGC = re.compile(rb"^(?:A[A-Z0-9]{3}|HFDTE)", re.M)
_IGC_B = re.compile(rb"^B\d{6}\d{7}[NS]\d{8}[EW]", re.M)
_XML_ROOTS = {b"gpx": "gpx", b"kml": "kml", b"TrainingCenterDatabase": "tcx", b"History": "garmin-xml"}


def detect_format(path: Path, by_extension: bool = True) -> str | None:
    """The reader name for `path` ('gpx', 'nmea', 'kml', 'kmz', 'geojson', 'csv', 'fit', 'tcx',
    'garmin-xml', 'igc', 'takeout-records', 'takeout-timeline'), or None when it is none of them."""
    try:
        with open_regular(path, limit=sys.maxsize) as f:  # non-blocking: a FIFO never hangs the sniff
            head = f.read(_HEAD)
    except OSError:  # no regular file (the reader says so in one line), or unreadable
        head = b""
    found = sniff(head)
    if found is None and by_extension:
        found = _BY_EXTENSION.get(path.suffix.lower())
    return found


def sniff(head: bytes) -> str | None:
    """The format the first bytes of a file show, or None."""
    if len(head) >= 12 and head[8:12] == b".FIT":
        return "fit"
    if head.startswith(b"PK\x03\x04"):
        return "kmz"
    text = head.lstrip(b"\xef\xbb\xbf").lstrip()
    if text.startswith(b"<"):
        return _xml_root(text)
    if text.startswith((b"{", b"[")):
        return _json_kind(text)
    if _NMEA.search(head):
        return "nmea"
    if _IGC_B.search(head) and _IGC.search(head):
        return "igc"
    if _csv_header(text):
        return "csv"
    return None


def _xml_root(text: bytes) -> str | None:
    pos = 0
    while True:
        start = text.find(b"<", pos)
        if start < 0:
            return None
        if text.startswith((b"<?", b"<!"), start):
            end = (
                text.find(b"-->", start) + 3
                if text.startswith(b"<!--", start)
                else text.find(b">", start) + 1
            )
            if end <= 0:
                return None
            pos = end
            continue
        m = _XML_ROOT.match(text, start)
        return _XML_ROOTS.get(m[2]) if m else None


def _json_kind(text: bytes) -> str | None:
    if b'"semanticSegments"' in text or b'"rawSignals"' in text:
        return "takeout-timeline"
    if re.search(rb'"(?:timelinePath|durationMinutesOffsetFromStartTime|topCandidate)"', text):
        return "takeout-timeline"
    if b'"locations"' in text and re.search(rb'"(?:latitudeE7|timestampMs|timestamp)"', text):
        return "takeout-records"
    if re.search(rb'"type"\s*:\s*"(?:FeatureCollection|Feature|LineString|MultiLineString|Point)"', text):
        return "geojson"
    return None


def _csv_header(text: bytes) -> bool:
    from geotag.io.tracks.csvlog import header_columns

    line = text.split(b"\n", 1)[0].decode("utf-8", "replace")
    return header_columns(line) is not None
