"""Read GPS, capture time, camera and orientation from a photo's EXIF.

The result is ground truth for evaluating geolocation models, so the rule is: a wrong position is
worse than no position. Anything odd in the metadata becomes nulls plus a short reason in `gt_note`;
nothing here raises for bad metadata. Only a file that cannot be opened or read raises `OSError`.

Backends:

- `exifread` for JPEG, TIFF, WebP, PNG (and anything else that is not an ISO-BMFF container). It runs
  with `details=False` (no MakerNotes, no thumbnails) behind a read budget, because some malformed
  files make it loop forever (a 60-byte HEIC box with a zero 64-bit size does).
- `pillow-heif` for HEIC/HEIF (exifread raises on some libheif-written files), then Pillow's own
  AVIF plugin; exifread never sees ISO-BMFF files for the hang above.

Both backends are turned into one mapping keyed by the EXIF tag names (`GPSLatitude`, `Make`, ...),
which `info_from_tags` interprets; that function is pure and is what the unit tests exercise.

Time evidence (issue 25) is read too: SubSecTimeOriginal, OffsetTimeOriginal (EXIF 2.31; OffsetTime
with the DateTime fallback), GPSDateStamp + GPSTimeStamp (UTC) and the body serial (BodySerialNumber,
EXIF 0xA431). Makers' own SerialNumber tags sit in MakerNotes, which the readers here skip for speed,
so they are not read.
"""

from __future__ import annotations

import io
import logging
import math
import os
import re
import struct
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import IO, Literal

import exifread

__all__ = [
    "ExifInfo",
    "altitude_to_metres",
    "dms_to_degrees",
    "gps_from_tags",
    "gps_time_from_tags",
    "info_from_tags",
    "parse_exif_datetime",
    "parse_exif_offset",
    "rational_to_float",
    "read_exif",
]

# exifread logs a warning for every file without EXIF and debug lines for every tag; a library must
# stay quiet (GUIDE section 2), and a disabled level also skips the formatting work.
logging.getLogger("exifread").setLevel(logging.CRITICAL)

MAX_ALTITUDE_M = 1_000_000.0
"""|altitude| above this (1,000 km: past the ISS) is garbage such as 0xFFFFFFFF written for 'unknown'."""

MAX_ISOBMFF_BYTES = 512 << 20
"""libheif parses from memory, so a HEIF is read whole; a file this big is a video, not a photo."""

SEXAGESIMAL_TOLERANCE = 1e-6
"""Minutes or seconds may reach 60 by this much: writers round 59.9999 up to 60.00."""

# exifread's work on a real file: at most ~1,500 reads and seeks and ~15 KB (all the fixtures). A
# garbage entry count makes it walk up to 65,535 entries each pointing nowhere; these caps end that in
# milliseconds instead of seconds or never (1.25 us per operation).
_READ_OPS_BUDGET = 200_000
_READ_BYTES_BUDGET = 64 << 20
_SHORT_READS_BUDGET = 256  # reads that hit the end of the file: a truncated file needs a few
# exifread parses the EXIF IFD up to DateTimeOriginal (0x9003). The time-evidence tags past it
# (OffsetTime* 0x9010/0x9011, SubSecTimeOriginal 0x9291, BodySerialNumber 0xA431) are picked from
# that IFD's entry table by `_exif_ifd_text`: letting exifread parse the ~30 tags in between (flash,
# exposure, interop, ...) cost +50 % CPU per file on the 176 fixture JPEGs (265 -> 400 us), the pick
# about +5 % (265 -> 279 us).
_STOP_TAG = "DateTimeOriginal"
_TEXT_TAGS_AFTER_STOP = {
    0x9010: "OffsetTime",
    0x9011: "OffsetTimeOriginal",
    0x9291: "SubSecTimeOriginal",
    0xA431: "BodySerialNumber",
}
_MAX_IFD_ENTRIES = 1024

_HEIF_BRANDS = frozenset(
    {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs", b"mif1", b"msf1", b"mif2"}
)
_AVIF_BRANDS = frozenset({b"avif", b"avis"})
_AXES = {
    "lat": ("GPSLatitude", 90.0, ("N", "NORTH"), ("S", "SOUTH")),
    "lon": ("GPSLongitude", 180.0, ("E", "EAST"), ("W", "WEST")),
}
_PARTS = ("degrees", "minutes", "seconds")
_DATETIME_RE = re.compile(
    r"\s*(\d{4})[:\-/.](\d{1,2})[:\-/.](\d{1,2})(?:\s+|T)(\d{1,2})[:.](\d{1,2})(?:[:.](\d{1,2}))?"
)
_NUMBER_SPLIT_RE = re.compile(r"[\s,;]+")
_OFFSET_RE = re.compile(r"\s*([+-])(\d{1,2}):?(\d{2})\s*$")
_SUBSEC_RE = re.compile(r"\s*(\d+)")
MAX_ZONE_OFFSET_MIN = 14 * 60
"""UTC offsets on Earth lie within -12:00 and +14:00; anything past +-14:00 is garbage."""


@dataclass(frozen=True)
class ExifInfo:
    """What one photo's EXIF says; every field is None when absent or not trustworthy."""

    gt_lat: float | None = None  # decimal degrees, south negative
    gt_lon: float | None = None  # decimal degrees, west negative
    gt_alt: float | None = None  # metres, below sea level negative
    gt_note: str | None = None  # why GPS is null or was rejected/repaired; None when clean
    taken_at: datetime | None = None  # naive, from DateTimeOriginal (fallback DateTime)
    camera_make: str | None = None
    camera_model: str | None = None
    orientation: int | None = None  # 1..8
    subsec: float | None = None  # SubSecTimeOriginal as a fraction of a second (DateTimeOriginal only)
    offset_min: int | None = None  # OffsetTimeOriginal (OffsetTime with DateTime) in minutes east of UTC
    gps_time: datetime | None = None  # GPSDateStamp + GPSTimeStamp, aware UTC
    camera_serial: str | None = None  # BodySerialNumber

    @property
    def time_zone(self) -> str | None:
        """The photo's own zone as '+HH:MM', where it gives one."""
        return format_offset(self.offset_min) if self.offset_min is not None else None

    @property
    def taken_at_utc(self) -> datetime | None:
        """taken_at with its sub-seconds, made UTC by the photo's own offset (no clock correction)."""
        if self.taken_at is None or self.offset_min is None:
            return None
        local = self.taken_at + timedelta(seconds=self.subsec or 0.0)
        return (local - timedelta(minutes=self.offset_min)).replace(tzinfo=UTC)

    def as_row(self) -> dict[str, object]:
        """The predictions-file columns this module owns (GUIDE section 4). The UTC time and zone are
        filled only where the photo itself gives its zone (OffsetTimeOriginal); `--tz`, a camera's GPS
        time and clock offsets are the predict engine's (geotag.engine.timeplace)."""
        has_position = self.gt_lat is not None and self.gt_lon is not None
        utc = self.taken_at_utc
        return {
            "gt_lat": self.gt_lat,
            "gt_lon": self.gt_lon,
            "gt_alt": self.gt_alt,
            "gt_source": "exif" if has_position else None,
            "gt_note": self.gt_note,
            "taken_at": self.taken_at,
            "camera_make": self.camera_make,
            "camera_model": self.camera_model,
            "orientation": self.orientation,
            "camera_serial": self.camera_serial,
            "gps_time": self.gps_time,
            "taken_at_utc": utc,
            "time_zone": self.time_zone if utc is not None else None,
            "time_zone_source": "exif" if utc is not None else None,
        }


# --------------------------------------------------------------------------------------------------
# Value helpers (pure; both backends' value types go through them)
# --------------------------------------------------------------------------------------------------


def _fraction_parts(value: object) -> tuple[float | int, float | int] | None:
    """(numerator, denominator) of a rational-like value: exifread Ratio, Pillow IFDRational, Fraction,
    int, or a (num, den) pair. Read from the attributes, not float(), because both libraries keep the
    raw parts of an x/0 rational while their float conversion raises (exifread) or gives nan (Pillow)."""
    if isinstance(value, tuple | list) and len(value) == 2:
        num, den = value
    else:
        num = getattr(value, "numerator", None)
        den = getattr(value, "denominator", None)
    if isinstance(num, int | float) and isinstance(den, int | float):
        return num, den
    return None


def _text(value: object) -> str | None:
    """A tag value as text without NULs and outer blanks (exifread may hand back undecodable bytes)."""
    if isinstance(value, bytes | bytearray):
        value = bytes(value).decode("latin-1")
    if not isinstance(value, str):
        return None
    return value.replace("\x00", " ").strip()


def rational_to_float(value: object) -> float | None:
    """A finite float from an EXIF number, or None (zero denominator, nan, inf, not a number).

    Accepts rationals of either backend, ints, floats, exifread's 1-tuples for FLOAT fields, (num, den)
    pairs and numeric text. Never returns nan or inf: those must not reach the Parquet columns.
    """
    if isinstance(value, tuple | list) and len(value) == 1:
        value = value[0]
    try:
        parts = _fraction_parts(value)
        if parts is not None:
            num, den = parts
            if den == 0:
                return None
            result = num / den
        elif isinstance(value, int | float):
            result = value
        else:
            text = _text(value)
            if not text:
                return None
            result = float(text)
        result = float(result)
    except (ArithmeticError, ValueError, TypeError):
        return None
    return result if math.isfinite(result) else None


def _is_zero_over_zero(value: object) -> bool:
    parts = _fraction_parts(value[0] if isinstance(value, tuple | list) and len(value) == 1 else value)
    return parts is not None and parts[0] == 0 and parts[1] == 0


def _has_zero_denominator(value: object) -> bool:
    parts = _fraction_parts(value[0] if isinstance(value, tuple | list) and len(value) == 1 else value)
    return parts is not None and parts[1] == 0


def _components(values: object) -> list[object] | None:
    """The degrees/minutes/seconds list of a coordinate tag, however the backend shaped it."""
    if isinstance(values, str | bytes | bytearray):
        text = _text(values)
        return [p for p in _NUMBER_SPLIT_RE.split(text) if p] if text is not None else None
    if isinstance(values, tuple | list):
        return list(values)
    if values is None:
        return None
    return [values]  # a single rational: decimal degrees


def _normalise_ref(ref: object) -> str | None:
    """'N', 'n', 'N\\x00', b'N ', ['N'] and 'North' all become 'N' / 'NORTH'; blank becomes None."""
    if isinstance(ref, tuple | list) and len(ref) == 1:
        ref = ref[0]
    text = _text(ref)
    if not text:
        return None
    return text.upper()


def _join(notes: list[str]) -> str | None:
    return "; ".join(notes) if notes else None


def dms_to_degrees(
    values: object, ref: object, *, axis: Literal["lat", "lon"] = "lat"
) -> tuple[float | None, str | None]:
    """Signed decimal degrees from an EXIF GPSLatitude/GPSLongitude value and its ref, plus a note.

    Forms read: degrees/minutes/seconds; degrees + decimal minutes with seconds 0, 0/0 or absent
    (Kodak, Apple iPhone 4, Fujifilm, Nikon D5000); a single decimal-degrees value; numeric text.

    Policy (a wrong hemisphere is worse than no position):
    - ref 'S'/'W' (any case, NUL/space padded, or the full word) makes the value negative;
    - missing or blank ref: a positive value is kept positive, as exiftool and Pillow read it, with the
      note "missing GPSLatitudeRef, assumed N"; a negative (signed rational) value keeps its sign;
    - negative value with ref S/W is read as south/west (noted); with ref N/E the two disagree: null;
    - a ref that is not N/S (or E/W for longitude): null;
    - a 0/0 minutes or seconds field is the usual 'unused' marker and is read as 0 (noted); any other
      zero denominator makes the coordinate null;
    - minutes or seconds beyond 60, or |lat| > 90, |lon| > 180: null;
    - a minus sign on any component applies to the whole value (writers put it on the degrees).
    The note is None only when the value was clean.
    """
    tag, limit, positive_refs, negative_refs = _AXES[axis]
    parts = _components(values)
    if parts is None:
        return None, f"{tag} unreadable"
    if not 1 <= len(parts) <= 3:
        return None, f"{tag} has {len(parts)} values"
    notes: list[str] = []
    numbers: list[float] = []
    for name, part in zip(_PARTS, parts, strict=False):
        number = rational_to_float(part)
        if number is None:
            if name != "degrees" and _is_zero_over_zero(part):
                notes.append(f"{tag} {name} 0/0 read as 0")
                number = 0.0
            elif _has_zero_denominator(part):
                return None, f"{tag} {name} has zero denominator"
            else:
                return None, f"{tag} {name} not a number"
        numbers.append(number)
    numbers += [0.0] * (3 - len(numbers))
    negative = any(n < 0 for n in numbers)
    degrees, minutes, seconds = (abs(n) for n in numbers)
    if minutes > 60 + SEXAGESIMAL_TOLERANCE or seconds > 60 + SEXAGESIMAL_TOLERANCE:
        return None, f"{tag} minutes or seconds out of range"
    magnitude = degrees + minutes / 60.0 + seconds / 3600.0
    if not magnitude <= limit:  # also false for nan
        return None, f"{tag} out of range"

    ref_text = _normalise_ref(ref)
    if ref_text is None:
        if negative:
            notes.append(f"missing {tag}Ref, sign taken from value")
        else:
            notes.append(f"missing {tag}Ref, assumed {positive_refs[0]}")
    elif ref_text in negative_refs:
        if negative:
            notes.append(f"negative {tag} with ref {negative_refs[0]}, read as {negative_refs[0]}")
        negative = True
    elif ref_text in positive_refs:
        if negative:
            return None, f"negative {tag} contradicts ref {positive_refs[0]}"
    else:
        return None, f"invalid {tag}Ref {ref_text[:8]!r}"
    result = -magnitude if negative and magnitude != 0 else magnitude
    return result, _join(notes)


def altitude_to_metres(value: object, ref: object) -> tuple[float | None, str | None]:
    """Metres above sea level from GPSAltitude and GPSAltitudeRef (1 = below sea level: negative).

    A missing ref means above sea level (the EXIF default, no note). Zero denominators, nan/inf and
    |altitude| > 1,000 km become None with a note; an unknown ref is read as above sea level (noted).
    """
    metres = rational_to_float(value)
    if metres is None:
        reason = "has zero denominator" if _has_zero_denominator(value) else "not a number"
        return None, f"GPSAltitude {reason}"
    if abs(metres) > MAX_ALTITUDE_M:
        return None, "GPSAltitude out of range"
    notes: list[str] = []
    below = _altitude_ref(ref)
    if below is None:
        notes.append(f"unknown GPSAltitudeRef {_describe(ref)}, read as above sea level")
        below = False
    if metres < 0:
        notes.append("negative GPSAltitude, read as below sea level")
        below = True
    metres = -abs(metres) if below else abs(metres)
    return (metres if metres != 0 else 0.0), _join(notes)


def _altitude_ref(ref: object) -> bool | None:
    """True for below sea level, False for above (or absent), None when unrecognised."""
    if isinstance(ref, tuple | list):
        if not ref:
            return False
        ref = ref[0]
    if ref is None:
        return False
    if isinstance(ref, bytes | bytearray):
        if not ref:
            return False
        ref = ref[0] if ref[:1] not in (b"0", b"1") else int(ref[:1])
    if isinstance(ref, str):
        text = ref.replace("\x00", "").strip()
        if not text:
            return False
        ref = int(text) if text in ("0", "1") else None
    if isinstance(ref, int) and ref in (0, 1):
        return ref == 1
    return None


def _describe(value: object) -> str:
    return repr(value)[:16]


def parse_exif_datetime(value: object) -> datetime | None:
    """Naive datetime from EXIF 'YYYY:MM:DD HH:MM:SS' (also '-' or '/' in the date, 'T', no seconds,
    trailing sub-seconds or zone, NUL padding). None for blanks, zeros ('0000:00:00 00:00:00') and
    impossible dates, which cameras with an unset clock write."""
    if isinstance(value, tuple | list) and len(value) == 1:
        value = value[0]
    text = _text(value)
    if not text:
        return None
    match = _DATETIME_RE.match(text)
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(g) if g else 0 for g in match.groups())
    try:
        return datetime(year, month, day, hour, minute, second)
    except ValueError:
        return None


def parse_exif_offset(value: object) -> int | None:
    """Minutes east of UTC from an EXIF OffsetTime* value ('+02:00', '-05:30', '+0100'); None for blanks
    ('   :  '), text that is no offset, and offsets past +-14:00."""
    if isinstance(value, tuple | list) and len(value) == 1:
        value = value[0]
    text = _text(value)
    if not text:
        return None
    match = _OFFSET_RE.match(text)
    if match is None:
        return None
    sign, hours, minutes = match.groups()
    if int(minutes) >= 60:
        return None
    total = int(hours) * 60 + int(minutes)
    if total > MAX_ZONE_OFFSET_MIN:
        return None
    return -total if sign == "-" else total


def format_offset(minutes: int) -> str:
    """'+02:00' / '-05:30' from minutes east of UTC."""
    sign = "-" if minutes < 0 else "+"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def _subsec(value: object) -> float | None:
    """SubSecTimeOriginal ('054', '91', 550) as a fraction of a second: the digits follow a decimal point."""
    if isinstance(value, tuple | list) and len(value) == 1:
        value = value[0]
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    text = _text(value)
    if not text:
        return None
    match = _SUBSEC_RE.match(text)
    return float("0." + match.group(1)) if match else None


def gps_time_from_tags(tags: Mapping[str, object]) -> datetime | None:
    """GPSDateStamp ('YYYY:MM:DD') + GPSTimeStamp (hours, minutes, seconds rationals) as an aware UTC
    datetime; None unless both are there and valid (seconds may carry fractions)."""
    date_text = _text(_single(tags.get("GPSDateStamp")))
    parts = _components(tags.get("GPSTimeStamp"))
    if not date_text or parts is None or len(parts) != 3:
        return None
    match = re.match(r"\s*(\d{4})[:\-/.](\d{1,2})[:\-/.](\d{1,2})", date_text)
    numbers = [rational_to_float(p) for p in parts]
    if match is None or any(n is None or n < 0 for n in numbers):
        return None
    hours, minutes, seconds = numbers  # type: ignore[misc]
    if hours >= 24 or minutes >= 60 or seconds >= 61:  # 60.x: a leap second
        return None
    try:
        day = datetime(*(int(g) for g in match.groups()), tzinfo=UTC)
    except ValueError:
        return None
    if day.year < 1980:  # GPS time starts in 1980; zeros mean 'unset'
        return None
    return day + timedelta(hours=hours, minutes=minutes, seconds=round(seconds, 6))


def _single(value: object) -> object:
    return value[0] if isinstance(value, tuple | list) and len(value) == 1 else value


def _clean_string(value: object) -> str | None:
    """Camera make/model: stripped text, None when empty."""
    if isinstance(value, tuple | list) and len(value) == 1:
        value = value[0]
    text = _text(value)
    return text or None


def _orientation(value: object) -> int | None:
    if isinstance(value, tuple | list) and len(value) == 1:
        value = value[0]
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 8:
        return value
    return None


# --------------------------------------------------------------------------------------------------
# Interpreting a tag mapping (pure)
# --------------------------------------------------------------------------------------------------


def gps_from_tags(tags: Mapping[str, object]) -> tuple[float | None, float | None, float | None, str | None]:
    """(lat, lon, alt, note) from tags keyed by EXIF name ('GPSLatitude', 'GPSLatitudeRef', ...).

    Both coordinates must be valid or both are null. Exactly (0, 0) is the placeholder that cameras
    without a fix write: null, noted. Altitude is kept only alongside a valid position. When there is
    no position the note says why ('no gps', 'no gps position', or the coordinate's problem).
    """
    lat_raw, lon_raw = tags.get("GPSLatitude"), tags.get("GPSLongitude")
    if lat_raw is None and lon_raw is None:
        has_gps = any(key.startswith("GPS") for key in tags)
        return None, None, None, "no gps position" if has_gps else "no gps"
    notes: list[str] = []
    coords: list[float | None] = []
    for axis, raw in (("lat", lat_raw), ("lon", lon_raw)):
        tag = _AXES[axis][0]
        if raw is None:
            coords.append(None)
            notes.append(f"missing {tag}")
            continue
        value, note = dms_to_degrees(raw, tags.get(f"{tag}Ref"), axis=axis)  # type: ignore[arg-type]
        coords.append(value)
        if note:
            notes.append(note)
    lat, lon = coords
    if lat is None or lon is None:
        return None, None, None, _join(notes)
    if lat == 0 and lon == 0:
        return None, None, None, _join([*notes, "0,0 placeholder"])
    alt = None
    if tags.get("GPSAltitude") is not None:
        alt, note = altitude_to_metres(tags["GPSAltitude"], tags.get("GPSAltitudeRef"))
        if note:
            notes.append(note)
    return lat, lon, alt, _join(notes)


def info_from_tags(tags: Mapping[str, object]) -> ExifInfo:
    """An ExifInfo from tags keyed by EXIF name (the shape both backends are reduced to)."""
    lat, lon, alt, gps_note = gps_from_tags(tags)
    taken_at = parse_exif_datetime(tags.get("DateTimeOriginal"))
    subsec = offset = None
    if taken_at is not None:
        subsec = _subsec(tags.get("SubSecTimeOriginal"))
        offset = parse_exif_offset(tags.get("OffsetTimeOriginal"))
    else:
        taken_at = parse_exif_datetime(tags.get("DateTime"))
        if taken_at is not None:
            offset = parse_exif_offset(tags.get("OffsetTime"))
    return ExifInfo(
        gt_lat=lat,
        gt_lon=lon,
        gt_alt=alt,
        gt_note=gps_note,
        taken_at=taken_at,
        camera_make=_clean_string(tags.get("Make")),
        camera_model=_clean_string(tags.get("Model")),
        orientation=_orientation(tags.get("Orientation")),
        subsec=subsec,
        offset_min=offset,
        gps_time=gps_time_from_tags(tags),
        camera_serial=_clean_string(tags.get("BodySerialNumber")),
    )


# --------------------------------------------------------------------------------------------------
# Backends
# --------------------------------------------------------------------------------------------------


class _BudgetExceeded(Exception):
    """exifread went round in circles or read far more than any EXIF block needs."""


class _CorruptOffset(Exception):
    """exifread asked to seek before the start of the file: an offset in the metadata is bad."""


class _Unsupported(Exception):
    """An ISO-BMFF file that is neither HEIF nor AVIF (a video, a Canon CR3): no EXIF reader here."""


class _ReadFailure(Exception):
    """The disk, not the metadata, failed; carries the OSError that read_exif re-raises."""

    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error


class _GuardedReader:
    """The file as exifread sees it: counts reads and seeks so a malformed file cannot hang or balloon
    the scan, turns negative seeks (bad offsets) into a metadata error, and marks genuine I/O errors
    so they are not mistaken for bad metadata."""

    def __init__(self, fh: io.BufferedReader) -> None:
        self._fh = fh
        self._ops = 0
        self._bytes = 0
        self._short_reads = 0

    def _tick(self) -> None:
        self._ops += 1
        if self._ops > _READ_OPS_BUDGET:
            raise _BudgetExceeded

    def read(self, size: int | None = -1) -> bytes:
        self._tick()
        try:
            data = self._fh.read(size)
        except OSError as exc:
            raise _ReadFailure(exc) from exc
        self._bytes += len(data)
        if self._bytes > _READ_BYTES_BUDGET:
            raise _BudgetExceeded
        if size is not None and 0 <= len(data) < size:
            self._short_reads += 1
            if self._short_reads > _SHORT_READS_BUDGET:
                raise _BudgetExceeded
        return data

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._tick()
        try:
            if whence == io.SEEK_CUR:
                offset, whence = self._fh.tell() + offset, io.SEEK_SET
            if whence == io.SEEK_SET and offset < 0:
                raise _CorruptOffset
            return self._fh.seek(offset, whence)
        except OSError as exc:
            raise _ReadFailure(exc) from exc
        except (OverflowError, ValueError) as exc:  # offsets past what the OS can seek to
            raise _CorruptOffset from exc

    def tell(self) -> int:
        self._tick()
        try:
            return self._fh.tell()
        except OSError as exc:
            raise _ReadFailure(exc) from exc


_EXIFREAD_KEYS = {
    "Image Make": "Make",
    "Image Model": "Model",
    "Image Orientation": "Orientation",
    "Image DateTime": "DateTime",
    "EXIF DateTimeOriginal": "DateTimeOriginal",
    "EXIF SubSecTimeOriginal": "SubSecTimeOriginal",
    "EXIF OffsetTimeOriginal": "OffsetTimeOriginal",
    "EXIF OffsetTime": "OffsetTime",
    "EXIF BodySerialNumber": "BodySerialNumber",
    "GPS GPSDate": "GPSDateStamp",  # exifread's name for 0x001D
}


def _tags_from_exifread(fh: IO[bytes]) -> dict[str, object]:
    """exifread's 'IFD Name' -> IfdTag dict, reduced to {EXIF name: raw values}."""
    raw = exifread.process_file(
        _GuardedReader(fh),  # type: ignore[arg-type]
        stop_tag=_STOP_TAG,
        details=False,
        extract_thumbnail=False,
    )
    tags: dict[str, object] = {}
    for key, tag in raw.items():
        values = getattr(tag, "values", None)
        if key in _EXIFREAD_KEYS:
            tags[_EXIFREAD_KEYS[key]] = values
        elif key.startswith("GPS "):
            tags[key[4:]] = values
    exif_ifd = raw.get("Image ExifOffset")
    if exif_ifd is not None and getattr(exif_ifd, "values", None):
        tags.update(_exif_ifd_text(fh, exif_ifd.values[0]))
    return tags


def _exif_ifd_text(fh: IO[bytes], ifd: object) -> dict[str, str]:
    """The text tags of `_TEXT_TAGS_AFTER_STOP` from the EXIF IFD at `ifd` (relative to the TIFF
    header exifread located): one read of the entry table, one per wanted value. Bad offsets or
    types give nothing (the rest of the EXIF stands); only a disk error propagates."""
    from exifread.core.find_exif import determine_type, get_endian_str

    found: dict[str, str] = {}
    try:
        fh.seek(0)
        base, endian_bytes, _ = determine_type(fh)
        order = "<" if get_endian_str(endian_bytes)[0] == "I" else ">"
        fh.seek(base + int(ifd))  # type: ignore[call-overload]
        (count,) = struct.unpack(order + "H", fh.read(2))
        table = fh.read(12 * min(count, _MAX_IFD_ENTRIES))
        for i in range(len(table) // 12):
            tag, kind, n, value = struct.unpack(order + "HHI4s", table[12 * i : 12 * i + 12])
            name = _TEXT_TAGS_AFTER_STOP.get(tag)
            if name is None or kind not in (2, 7) or not 0 < n <= 256:  # ASCII (or UNDEFINED) text
                continue
            if n > 4:
                fh.seek(base + struct.unpack(order + "I", value)[0])
                value = fh.read(n)
            text = value[:n].split(b"\0", 1)[0].decode("latin-1").strip()
            if text:
                found[name] = text
    except _ReadFailure:
        raise
    except Exception:  # noqa: BLE001 - a malformed table loses only these tags
        return found
    return found


_GPS_IFD = 0x8825
_EXIF_IFD = 0x8769
_PIL_GPS_KEYS = {
    1: "GPSLatitudeRef",
    2: "GPSLatitude",
    3: "GPSLongitudeRef",
    4: "GPSLongitude",
    5: "GPSAltitudeRef",
    6: "GPSAltitude",
    7: "GPSTimeStamp",
    0x1D: "GPSDateStamp",
}
_PIL_BASE_KEYS = {0x010F: "Make", 0x0110: "Model", 0x0112: "Orientation", 0x0132: "DateTime"}
_PIL_EXIF_KEYS = {
    0x9003: "DateTimeOriginal",
    0x9010: "OffsetTime",
    0x9011: "OffsetTimeOriginal",
    0x9291: "SubSecTimeOriginal",
    0xA431: "BodySerialNumber",
}


def _tags_from_pillow_exif(exif_bytes: bytes) -> dict[str, object]:
    """Pillow's parser on a raw EXIF block (HEIF/AVIF), reduced to {EXIF name: raw value}."""
    from PIL import Image

    exif = Image.Exif()
    exif.load(exif_bytes)
    tags: dict[str, object] = {name: exif[key] for key, name in _PIL_BASE_KEYS.items() if key in exif}
    gps = exif.get_ifd(_GPS_IFD)
    for key, value in gps.items():
        tags[_PIL_GPS_KEYS.get(key, f"GPSTag{key:#06x}")] = value
    exif_ifd = exif.get_ifd(_EXIF_IFD)
    for key, name in _PIL_EXIF_KEYS.items():
        if exif_ifd.get(key) is not None:
            tags[name] = exif_ifd[key]
    return tags


def _heif_exif_bytes(data: bytes) -> bytes | None:
    """The EXIF block of a HEIF/AVIF file: pillow-heif first, then Pillow's AVIF plugin.

    Neither decodes pixels. Pillow is asked for AVIF only, so no other plugin guesses at the bytes."""
    import pillow_heif
    from PIL import Image

    brand = data[8:12]
    is_avif = brand in _AVIF_BRANDS or _has_compatible_brand(data, _AVIF_BRANDS)
    if not is_avif and not (brand in _HEIF_BRANDS or _has_compatible_brand(data, _HEIF_BRANDS)):
        raise _Unsupported(brand.decode("latin-1"))
    if brand not in _AVIF_BRANDS:
        try:
            exif = pillow_heif.open_heif(io.BytesIO(data), convert_hdr_to_8bit=False).info.get("exif")
            return bytes(exif) if exif else None
        except Exception:
            if not is_avif:
                raise
    with Image.open(io.BytesIO(data), formats=["AVIF"]) as im:
        exif = im.info.get("exif")
    return bytes(exif) if exif else None


def _tags_from_isobmff(data: bytes) -> dict[str, object]:
    """Tags of a HEIF/AVIF file. Pillow reports corrupt EXIF with warnings.warn; the reason goes to
    gt_note instead, so they are silenced here (not thread-safe before Python 3.14, which only matters
    if another thread changes warning filters at the same moment; the scan engine uses processes)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exif_bytes = _heif_exif_bytes(data)
        return _tags_from_pillow_exif(exif_bytes) if exif_bytes else {}


def _has_compatible_brand(data: bytes, brands: frozenset[bytes]) -> bool:
    """Whether the ftyp box lists one of `brands` among its compatible brands."""
    size = int.from_bytes(data[0:4], "big")
    end = min(max(size, 16), len(data), 256)
    return any(data[i : i + 4] in brands for i in range(16, end - 3, 4))


def read_exif(path: str | os.PathLike[str] | bytes) -> ExifInfo:
    """GPS, capture time, camera and orientation of one photo (a file, or the bytes of a shard member).

    Never raises for bad metadata: parse problems give nulls and a reason in `gt_note` ('no exif',
    'no gps', 'exif unreadable (KeyError)', '0,0 placeholder', ...; see dms_to_degrees for the GPS
    policy). Raises OSError only when the file itself cannot be opened or read.
    """
    with io.BytesIO(path) if isinstance(path, bytes) else open(path, "rb") as fh:
        head = fh.read(16)
        fh.seek(0)
        data = None
        raw = _raw_container(head, path)
        if head[4:8] == b"ftyp" and raw is None:  # ISO-BMFF: HEIC, HEIF, AVIF (and videos)
            size = len(path) if isinstance(path, bytes) else os.fstat(fh.fileno()).st_size
            if size > MAX_ISOBMFF_BYTES:
                return ExifInfo(gt_note="exif unreadable (file too large for the heif reader)")
            data = fh.read()  # disk errors propagate from here; after it, failures are the metadata's
        try:
            if raw is not None:
                tags = _tags_from_raw(fh, raw)
            else:
                tags = _tags_from_isobmff(data) if data is not None else _tags_from_exifread(fh)
        except _ReadFailure as exc:
            raise exc.error from None
        except _Unsupported as exc:
            return ExifInfo(gt_note=f"unsupported format (ftyp {exc})")
        except _BudgetExceeded:
            return ExifInfo(gt_note="exif unreadable (malformed structure)")
        except _CorruptOffset:
            return ExifInfo(gt_note="exif unreadable (bad offset)")
        except Exception as exc:  # any parser failure is a metadata problem, reported, never raised
            return ExifInfo(gt_note=f"exif unreadable ({type(exc).__name__})")
    if not tags and (
        head[0:4] == b"RIFF" and head[8:12] == b"WEBP" or _pillow_may_find_jpeg_exif(head, path)
    ):
        tags = _tags_from_pillow(io.BytesIO(path) if isinstance(path, bytes) else path)
    if not tags:
        return ExifInfo(gt_note="no exif")
    return info_from_tags(tags)


def _pillow_may_find_jpeg_exif(head: bytes, path: str | os.PathLike[str] | bytes) -> bool:
    """A JPEG where Pillow could find EXIF that exifread missed: Pillow takes it only from an APP1
    segment starting 'Exif\\0\\0', so a JPEG read into memory without those six bytes anywhere has none,
    and is not parsed a second time (a quarter of scan_file's time on a photo without EXIF)."""
    if head[0:2] != b"\xff\xd8":
        return False
    return not isinstance(path, bytes) or b"Exif\x00\x00" in path


def _tags_from_pillow(path: str | os.PathLike[str] | IO[bytes]) -> dict[str, object]:
    """Second chance when exifread finds nothing in a WebP or JPEG. exifread expects an 'Exif\\0\\0'
    prefix in WebP's EXIF chunk that the spec does not have (Pillow and libwebp write none), and it
    misses a JPEG's EXIF segment that follows a large XMP segment; Pillow's readers find both.
    No pixels are decoded."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path, formats=["WEBP", "JPEG"]) as im:
                exif_bytes = im.info.get("exif")
            return _tags_from_pillow_exif(bytes(exif_bytes)) if exif_bytes else {}
    except Exception:  # a broken WebP is a metadata problem here; decode reports the pixels
        return {}


def _raw_container(head: bytes, path: str | os.PathLike[str] | bytes) -> str | None:
    """Which RAW reader a file needs beyond exifread's TIFF parser: "cr3", "raf", "other" (a RAW
    extension whose bytes are no TIFF), or None (exifread reads it, RAW or not)."""
    from geotag.io.raw import is_cr3, is_raf

    if is_cr3(head):
        return "cr3"
    if is_raf(head):
        return "raf"
    if isinstance(path, bytes) or head[:4] in (b"II*\x00", b"MM\x00*"):
        return None
    from geotag.io.scan import is_raw_name

    return "other" if is_raw_name(path) and head[:4] not in (b"IIRO", b"IIRS", b"IIU\x00") else None


def _tags_from_raw(fh: IO[bytes], kind: str) -> dict[str, object]:
    """Tags of a CR3 (its CMT boxes), a RAF (its embedded JPEG) or another RAW container (the first
    embedded JPEG with EXIF); see geotag.io.raw."""
    from geotag.io.raw import cr3_metadata, embedded_exif_jpeg, raf_jpeg

    if kind == "cr3":
        return _tags_from_cr3(cr3_metadata(fh, os.fstat(fh.fileno()).st_size))
    jpeg = raf_jpeg(fh) if kind == "raf" else embedded_exif_jpeg(fh)
    return _tags_from_exifread(io.BytesIO(jpeg)) if jpeg else {}  # type: ignore[arg-type]


def _tags_from_cr3(blocks: dict[str, bytes]) -> dict[str, object]:
    """A CR3's CMT1 (IFD0), CMT2 (EXIF IFD) and CMT4 (GPS IFD) TIFF blocks through Pillow's parser.
    Corrupt EXIF makes Pillow warn; the reason goes to gt_note instead, so warnings are silenced."""
    from PIL import Image

    tags: dict[str, object] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for kind, data in blocks.items():
            exif = Image.Exif()
            exif.load(data)
            if kind == "CMT1":
                tags.update({name: exif[key] for key, name in _PIL_BASE_KEYS.items() if key in exif})
            elif kind == "CMT2" and 0x9003 in exif:
                tags["DateTimeOriginal"] = exif[0x9003]
            elif kind == "CMT4":
                tags.update({_PIL_GPS_KEYS.get(k, f"GPSTag{k:#06x}"): v for k, v in exif.items()})
    return tags
