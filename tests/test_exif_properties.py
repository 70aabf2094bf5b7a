"""Property tests for geotag.io.exif: no input makes it raise, hang or return nan/inf/out-of-range."""

from __future__ import annotations

import math
import struct
from datetime import datetime
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from geotag.io.exif import (
    MAX_ALTITUDE_M,
    ExifInfo,
    altitude_to_metres,
    dms_to_degrees,
    gps_from_tags,
    info_from_tags,
    parse_exif_datetime,
    rational_to_float,
    read_exif,
)

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"
SMALL_JPEG = FIXTURES / "exif-samples" / "jpg" / "gps" / "DSCN0010.jpg"  # 160 KB, GPS + EXIF
SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("exif-fuzz") / "photo.bin"


def check_info(info: ExifInfo) -> None:
    """The invariants every ExifInfo keeps, whatever the file held."""
    assert isinstance(info, ExifInfo)
    assert (info.gt_lat is None) == (info.gt_lon is None)
    if info.gt_lat is not None:
        assert math.isfinite(info.gt_lat) and -90 <= info.gt_lat <= 90
        assert math.isfinite(info.gt_lon) and -180 <= info.gt_lon <= 180
        assert (info.gt_lat, info.gt_lon) != (0.0, 0.0)
    else:
        assert info.gt_alt is None and info.gt_note  # a null position always says why
    if info.gt_alt is not None:
        assert math.isfinite(info.gt_alt) and abs(info.gt_alt) <= MAX_ALTITUDE_M
    assert info.gt_note is None or (isinstance(info.gt_note, str) and info.gt_note)
    assert info.taken_at is None or isinstance(info.taken_at, datetime)
    for text in (info.camera_make, info.camera_model):
        assert text is None or (isinstance(text, str) and text == text.strip() and text)
    assert info.orientation is None or 1 <= info.orientation <= 8
    assert info.offset_min is None or -14 * 60 <= info.offset_min <= 14 * 60
    assert info.subsec is None or 0 <= info.subsec < 1
    assert info.gps_time is None or info.gps_time.tzinfo is not None
    assert info.camera_serial is None or (
        info.camera_serial == info.camera_serial.strip() and info.camera_serial
    )
    assert set(info.as_row()) == {
        "gt_lat",
        "gt_lon",
        "gt_alt",
        "gt_source",
        "gt_note",
        "taken_at",
        "camera_make",
        "camera_model",
        "orientation",
        "camera_serial",
        "gps_time",
        "taken_at_utc",
        "time_zone",
        "time_zone_source",
    }


# ------------------------------------------------------------------------------------------------
# Whole files
# ------------------------------------------------------------------------------------------------


@SETTINGS
@given(data=st.binary(max_size=4096))
def test_arbitrary_bytes_never_raise(scratch: Path, data: bytes) -> None:
    scratch.write_bytes(data)
    check_info(read_exif(scratch))


def _app1_exif(tiff: bytes) -> bytes:
    payload = b"Exif\0\0" + tiff
    return b"\xff\xd8\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload


HEADERS = {
    "jpeg-soi": b"\xff\xd8",
    "jpeg-jfif": b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00",
    "jpeg-exif-le": _app1_exif(b"II*\x00\x08\x00\x00\x00"),
    "jpeg-exif-be": _app1_exif(b"MM\x00*\x00\x00\x00\x08"),
    "tiff-le": b"II*\x00\x08\x00\x00\x00",
    "tiff-be": b"MM\x00*\x00\x00\x00\x08",
    "png": b"\x89PNG\r\n\x1a\n",
    "webp": b"RIFF\x00\x10\x00\x00WEBPVP8X\x0a\x00\x00\x00\x08\x00\x00\x00",
    "heic": b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic",
    "avif": b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf",
    "jxl": b"\x00\x00\x00\x0cJXL \r\n\x87\n\x00\x00\x00\x14ftypjxl \x00\x00\x00\x00jxl ",
}


@SETTINGS
@given(header=st.sampled_from(sorted(HEADERS)), tail=st.binary(max_size=2048))
def test_valid_header_then_arbitrary_bytes_never_raise(scratch: Path, header: str, tail: bytes) -> None:
    scratch.write_bytes(HEADERS[header] + tail)
    check_info(read_exif(scratch))


@pytest.fixture(scope="module")
def small_jpeg() -> bytes:
    if not SMALL_JPEG.is_file():
        pytest.skip(f"shared fixtures not found at {FIXTURES}")
    return SMALL_JPEG.read_bytes()


@SETTINGS
@given(flips=st.lists(st.tuples(st.integers(0, 4095), st.integers(0, 255)), min_size=1, max_size=24))
def test_real_jpeg_with_flipped_bytes_never_raises(
    scratch: Path, small_jpeg: bytes, flips: list[tuple[int, int]]
) -> None:
    data = bytearray(small_jpeg)
    for offset, value in flips:
        data[offset] = value
    scratch.write_bytes(bytes(data))
    check_info(read_exif(scratch))


# ------------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------------

u32 = st.integers(0, 2**32 - 1)
s32 = st.integers(-(2**31), 2**31 - 1)
rational_like = st.one_of(
    st.tuples(u32, u32),
    st.tuples(s32, s32),
    st.tuples(st.integers(), st.integers()),  # unbounded: overflow must not escape
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(),
    st.fractions(),
    st.text(max_size=12),
    st.binary(max_size=6),
    st.none(),
    st.tuples(st.floats()),  # exifread FLOAT fields
)
refs = st.one_of(
    st.sampled_from(["N", "S", "E", "W", "n", "s", "e", "w", "S\0", " W ", "", "\0", "X", "North", "west"]),
    st.text(max_size=6),
    st.binary(max_size=4),
    st.none(),
    st.lists(st.sampled_from(["N", "S", "E", "W"]), max_size=2),
)


@SETTINGS
@given(value=rational_like)
def test_rational_to_float_is_finite_or_none(value: object) -> None:
    result = rational_to_float(value)
    assert result is None or (isinstance(result, float) and math.isfinite(result))


@SETTINGS
@given(
    values=st.one_of(st.lists(rational_like, max_size=4), rational_like),
    ref=refs,
    axis=st.sampled_from(["lat", "lon"]),
)
def test_dms_to_degrees_in_range_or_none(values: object, ref: object, axis: str) -> None:
    value, note = dms_to_degrees(values, ref, axis=axis)  # type: ignore[arg-type]
    limit = 90.0 if axis == "lat" else 180.0
    assert value is None or (isinstance(value, float) and math.isfinite(value) and abs(value) <= limit)
    assert note is None or (isinstance(note, str) and note)
    if value is None:
        assert note  # a rejection always says why


@SETTINGS
@given(
    coordinate=st.floats(-180, 180, allow_nan=False),
    axis=st.sampled_from(["lat", "lon"]),
    denominator=st.sampled_from([1, 100, 10_000, 1_000_000]),
)
def test_dms_round_trip(coordinate: float, axis: str, denominator: int) -> None:
    """What a careful writer stores (unsigned D, M, S rationals and an explicit ref) reads back."""
    limit = 90.0 if axis == "lat" else 180.0
    coordinate = max(-limit, min(limit, coordinate))
    magnitude = abs(coordinate)
    degrees = int(magnitude)
    minutes = int((magnitude - degrees) * 60)
    seconds = Fraction(round((magnitude - degrees - minutes / 60) * 3600 * denominator), denominator)
    ref = ("S" if coordinate < 0 else "N") if axis == "lat" else ("W" if coordinate < 0 else "E")
    value, note = dms_to_degrees([Fraction(degrees), Fraction(minutes), seconds], ref, axis=axis)  # type: ignore[arg-type]
    assert note is None
    assert value == pytest.approx(coordinate, abs=1 / denominator / 3600 + 1e-9)


@SETTINGS
@given(
    value=rational_like,
    ref=st.one_of(st.integers(-3, 300), st.binary(max_size=2), st.text(max_size=2), st.none()),
)
def test_altitude_is_finite_and_bounded(value: object, ref: object) -> None:
    metres, note = altitude_to_metres(value, ref)
    assert metres is None or (math.isfinite(metres) and abs(metres) <= MAX_ALTITUDE_M)
    assert metres is not None or note


@SETTINGS
@given(value=st.one_of(st.text(max_size=40), st.binary(max_size=40), st.integers(), st.none()))
def test_parse_exif_datetime_never_raises(value: object) -> None:
    assert parse_exif_datetime(value) is None or isinstance(parse_exif_datetime(value), datetime)


TAG_NAMES = [
    "GPSLatitude",
    "GPSLatitudeRef",
    "GPSLongitude",
    "GPSLongitudeRef",
    "GPSAltitude",
    "GPSAltitudeRef",
    "GPSVersionID",
    "Make",
    "Model",
    "Orientation",
    "DateTime",
    "DateTimeOriginal",
]
tag_values = st.one_of(st.lists(rational_like, max_size=4), rational_like, refs, st.integers(-5, 12))


@SETTINGS
@given(tags=st.dictionaries(st.sampled_from(TAG_NAMES), tag_values))
def test_tag_mappings_keep_invariants(tags: dict[str, object]) -> None:
    lat, lon, alt, note = gps_from_tags(tags)
    check_info(ExifInfo(gt_lat=lat, gt_lon=lon, gt_alt=alt, gt_note=note))
    info = info_from_tags(tags)
    check_info(info)
    assert (info.gt_lat, info.gt_lon, info.gt_alt, info.gt_note) == (lat, lon, alt, note)
