"""Time evidence in EXIF (issue 25): sub-seconds, the photo's own UTC offset, GPS time, body serial."""

from __future__ import annotations

from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path

import pytest
from exifread.utils import Ratio
from PIL import Image

from geotag.io.exif import gps_time_from_tags, info_from_tags, parse_exif_offset, read_exif

from conftest import fixture_dir

EXIF_IFD, GPS_IFD = 0x8769, 0x8825


@pytest.mark.parametrize(
    ("text", "minutes"),
    [
        ("+02:00", 120),
        ("-05:30", -330),
        ("+0100", 60),
        ("+05:45\x00", 345),
        (b"-03:00", -180),
        (["+14:00"], 840),
        ("   :  ", None),
        ("", None),
        ("+15:00", None),  # no zone on Earth
        ("+02:75", None),
        ("02:00", None),  # no sign: not an EXIF 2.31 offset
        ("Z", None),
    ],
)
def test_parse_exif_offset(text: object, minutes: int | None) -> None:
    assert parse_exif_offset(text) == minutes


def test_subsec_and_offset_make_utc() -> None:
    info = info_from_tags(
        {
            "DateTimeOriginal": "2024:03:31 01:59:58",
            "SubSecTimeOriginal": "054",
            "OffsetTimeOriginal": "+01:00",
        }
    )
    assert info.taken_at == datetime(2024, 3, 31, 1, 59, 58)  # the column stays whole seconds, as before
    assert info.subsec == pytest.approx(0.054)
    assert info.taken_at_utc == datetime(2024, 3, 31, 0, 59, 58, 54000, tzinfo=UTC)
    row = info.as_row()
    assert (row["time_zone"], row["time_zone_source"]) == ("+01:00", "exif")
    assert row["taken_at_utc"] == info.taken_at_utc


def test_offset_time_goes_with_datetime_only_when_original_is_absent() -> None:
    both = info_from_tags(
        {"DateTimeOriginal": "2020:01:01 12:00:00", "OffsetTime": "+05:00", "DateTime": "2021:01:01 00:00:00"}
    )
    assert both.time_zone is None  # OffsetTime belongs to DateTime (the edit time), not to the capture
    fallback = info_from_tags({"DateTime": "2021:01:01 00:00:00", "OffsetTime": "-03:00"})
    assert fallback.taken_at_utc == datetime(2021, 1, 1, 3, 0, tzinfo=UTC)


def test_no_zone_no_utc_time() -> None:
    row = info_from_tags({"DateTimeOriginal": "2020:01:01 12:00:00", "SubSecTimeOriginal": "5"}).as_row()
    assert row["taken_at_utc"] is None and row["time_zone"] is None and row["time_zone_source"] is None


@pytest.mark.parametrize(
    ("date", "stamp", "expected"),
    [
        (
            "2008:10:23",
            [Ratio(14, 1), Ratio(45, 1), Ratio(2091, 100)],
            datetime(2008, 10, 23, 14, 45, 20, 910000),
        ),
        (
            b"2015:04:10\x00",
            (Fraction(18), Fraction(12), Fraction(2306, 100)),
            datetime(2015, 4, 10, 18, 12, 23, 60000),
        ),
        ("2022:08:14", [11, 12, 32], datetime(2022, 8, 14, 11, 12, 32)),
    ],
)
def test_gps_time(date: object, stamp: object, expected: datetime) -> None:
    assert gps_time_from_tags({"GPSDateStamp": date, "GPSTimeStamp": stamp}) == expected.replace(tzinfo=UTC)


@pytest.mark.parametrize(
    "tags",
    [
        {"GPSDateStamp": "2008:10:23"},  # no time
        {"GPSTimeStamp": [Ratio(1, 1), Ratio(2, 1), Ratio(3, 1)]},  # no date
        {"GPSDateStamp": "0000:00:00", "GPSTimeStamp": [0, 0, 0]},  # unset
        {"GPSDateStamp": "2008:02:30", "GPSTimeStamp": [0, 0, 0]},  # no such day
        {"GPSDateStamp": "2008:10:23", "GPSTimeStamp": [Ratio(25, 1), 0, 0]},
        {"GPSDateStamp": "2008:10:23", "GPSTimeStamp": [Ratio(1, 0), 0, 0]},  # zero denominator
        {"GPSDateStamp": "2008:10:23", "GPSTimeStamp": [1, 2]},
    ],
)
def test_gps_time_rejects(tags: dict[str, object]) -> None:
    assert gps_time_from_tags(tags) is None


def test_serial_is_stripped() -> None:
    assert info_from_tags({"BodySerialNumber": " 613040000565\x00"}).camera_serial == "613040000565"
    assert info_from_tags({"BodySerialNumber": "   "}).camera_serial is None


def _photo(path: Path, fmt: str) -> Path:
    exif = Image.Exif()
    exif[0x010F] = "NIKON CORPORATION"
    exif[0x0110] = "NIKON D850"
    ifd = exif.get_ifd(EXIF_IFD)
    ifd[0x9003] = "2023:10:29 02:30:15"
    ifd[0x9011] = "+02:00"
    ifd[0x9291] = "25"
    ifd[0xA431] = "6012345"
    ifd[0x829A] = 0.004  # ExposureTime: a tag between the ones exifread parses and the ones picked after
    gps = exif.get_ifd(GPS_IFD)
    gps[7] = (Fraction(0), Fraction(30), Fraction(16))
    gps[0x1D] = "2023:10:29"
    im = Image.new("RGB", (16, 16), "gray")
    if fmt == "heic":
        import pillow_heif

        pillow_heif.from_pillow(im).save(path, exif=exif.tobytes(), quality=10)
    else:
        im.save(path, {"jpeg": "JPEG", "tiff": "TIFF", "webp": "WEBP"}[fmt], exif=exif.tobytes())
    return path


@pytest.mark.parametrize("fmt", ["jpeg", "heic", "webp"])
def test_written_photo_round_trip(tmp_path: Path, fmt: str) -> None:
    info = read_exif(_photo(tmp_path / f"a.{fmt}", fmt))
    assert info.camera_serial == "6012345"
    assert info.time_zone == "+02:00"
    assert info.taken_at_utc == datetime(2023, 10, 29, 0, 30, 15, 250000, tzinfo=UTC)
    assert info.gps_time == datetime(2023, 10, 29, 0, 30, 16, tzinfo=UTC)


def test_fixture_heic_offset_and_subsec() -> None:
    info = read_exif(fixture_dir("exif-samples") / "heic" / "IMG_5195.HEIC")
    assert (info.taken_at, info.time_zone) == (datetime(2021, 4, 11, 15, 47, 53), "-05:00")
    assert info.taken_at_utc == datetime(2021, 4, 11, 20, 47, 53, 54000, tzinfo=UTC)


def test_fixture_jpeg_offset_and_gps_time() -> None:
    info = read_exif(fixture_dir("geotagged") / "mapillary-portland-3840x2160.jpg")
    assert info.time_zone == "-07:00"  # exiftool: OffsetTimeOriginal -07:00
    assert info.taken_at_utc == datetime(2018, 6, 8, 20, 24, 10, tzinfo=UTC)
    assert info.gps_time == datetime(2018, 6, 8, 20, 24, 11, tzinfo=UTC)  # exiftool: 2018:06:08 20:24:11


def test_fixture_jpeg_gps_time_with_fractions() -> None:
    info = read_exif(fixture_dir("exif-samples") / "jpg" / "gps" / "DSCN0029.jpg")
    assert info.gps_time == datetime(2008, 10, 23, 14, 45, 20, 910000, tzinfo=UTC)  # exiftool: 14:45:20.91
    assert info.taken_at == datetime(2008, 10, 22, 16, 46, 53) and info.time_zone is None


def test_fixture_subsec_in_jpeg() -> None:
    info = read_exif(fixture_dir("exif-samples") / "jpg" / "hdr" / "iphone_hdr_YES.jpg")
    assert info.subsec == pytest.approx(0.55)  # exiftool: SubSecTimeOriginal 550


def test_fixture_body_serial_in_tiff() -> None:
    info = read_exif(fixture_dir("metadata-extractor-gps") / "tif" / "Issue 555 (1).tif")
    assert info.camera_serial == "cdd7347e50f5ebf9e7cd9a1f96a7dfbf"  # exiftool: ExifIFD SerialNumber
