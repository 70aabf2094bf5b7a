"""geotag.io.exif: real camera files (../shared/fixtures), hand-built EXIF for the odd forms, helpers."""

from __future__ import annotations

import errno
import logging
import math
import os
import struct
import time
from datetime import datetime
from fractions import Fraction
from pathlib import Path

import pytest
from exifread.utils import Ratio
from PIL import Image
from PIL.TiffImagePlugin import IFDRational

import geotag.io.exif as exif_module
from geotag.io.exif import (
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
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".tif", ".tiff", ".png", ".webp", ".heic", ".heif"}
ROW_KEYS = [
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
]


def fixture(relative: str) -> Path:
    """A file under ../shared/fixtures, or skip with the reason when the shared folder is absent."""
    if not FIXTURES.is_dir():
        pytest.skip(f"shared fixtures not found at {FIXTURES}")
    path = FIXTURES / relative
    if not path.exists():
        pytest.skip(f"fixture {relative} not found under {FIXTURES}")
    return path


def dms(d: float, m: float, s: float) -> float:
    return d + m / 60 + s / 3600


# ------------------------------------------------------------------------------------------------
# Real files: every GPS fixture listed in the READMEs
# ------------------------------------------------------------------------------------------------

# metadata-extractor-gps/README.md gives six decimals: match to 1e-4 degree (both hemispheres).
METADATA_EXTRACTOR = [
    ("heic/Issue 263 dotnet.heic", 38.699539, -9.207747),
    ("heic/exif-at-eof.heic", 47.207124, 106.243105),
    ("tif/Issue 555 (1).tif", -20.440584, 57.318854),
    ("webp/Issue 473 (Java).webp", 37.392678, -122.040969),
    ("jpg/Apple iPhone 4.jpg", 41.853000, 12.488833),
    ("jpg/FujiFilm FinePixS1Pro (1).jpg", 54.989667, -1.914167),
    ("jpg/FujiFilm FinePixS1Pro (2).jpg", 51.846667, -3.337833),
    ("jpg/FujiFilm FinePixS2Pro.jpg", 48.857833, 2.297000),
    ("jpg/HTC Desire.jpg", 45.500667, 9.110333),
    ("jpg/Issue 173 (dotnet).jpg", 43.687394, -85.483519),
    ("jpg/Nikon D5000.jpg", 48.888726, 21.043251),
    ("jpg/Olympus FE230-X790.jpg", 50.956917, -118.107275),
    ("jpg/Sony DSC-HX5V (2).jpg", 51.778615, 8.365638),
]

# geotagged/README.md and exif-samples/README.md give two decimals: match within 0.01 degree.
ROUNDED = [
    ("geotagged/exif-parser-sylt.jpg", 55.04, 8.45),
    ("geotagged/exifr-IMG_20180725_163423.jpg", 50.30, 14.82),
    ("geotagged/goexif-beijing.jpg", 39.92, 116.39),
    ("geotagged/mapillary-portland-3840x2160.jpg", 45.52, -122.58),
    ("geotagged/opensfm-berlin-01.jpg", 52.52, 13.40),
    *[
        (f"exif-samples/jpg/gps/DSCN00{n}.jpg", 43.47, 11.88)
        for n in ("10", "12", "21", "25", "27", "29", "38", "40", "42")
    ],
    ("exif-samples/jpg/hdr/iphone_hdr_NO.jpg", 40.44, -3.72),
    ("exif-samples/jpg/hdr/iphone_hdr_YES.jpg", 40.44, -3.72),
    ("exif-samples/jpg/mobile/HMD_Nokia_8.3_5G.jpg", 60.15, 24.91),
    ("exif-samples/jpg/Kodak_CX7530.jpg", -0.37, 36.06),
    ("exif-samples/jpg/tests/67-0_length_string.jpg", 51.03, 7.59),
]

# Files the READMEs describe without usable figures: the exact value of the raw EXIF rationals.
# IMG_5195.HEIC: the README's "39.06 N, 94.30 W" is off by 0.011 degree in longitude; the file holds
# 39 deg 3' 4.84" N, 94 deg 17' 19.58" W (exifread and pillow-heif agree), i.e. 39.0513, -94.2888.
EXACT = [
    ("exif-samples/heic/IMG_5195.HEIC", dms(39, 3, 4.84), -dms(94, 17, 19.58)),
    ("exif-samples/heic/mobile/HMD_Nokia_8.3_5G.heif", dms(40, 47, 19.266792), -dms(4, 0, 18.50706)),
    ("exif-samples/heic/mobile/HMD_Nokia_8.3_5G_hdr.heif", dms(40, 39, 46.7766), -dms(3, 45, 49.465836)),
    # degrees + decimal minutes, seconds 0
    ("exif-samples/jpg/tests/87_OSError.jpg", 43 + 47.135666 / 60, 11 + 14.077166 / 60),
]


def _assert_position(info: ExifInfo, lat: float, lon: float, tol: float) -> None:
    assert info.gt_lat is not None and info.gt_lon is not None, info.gt_note
    assert info.gt_lat == pytest.approx(lat, abs=tol)
    assert info.gt_lon == pytest.approx(lon, abs=tol)
    assert info.as_row()["gt_source"] == "exif"


@pytest.mark.parametrize(
    ("relative", "lat", "lon"), METADATA_EXTRACTOR, ids=[r[0] for r in METADATA_EXTRACTOR]
)
def test_metadata_extractor_positions_to_1e4(relative: str, lat: float, lon: float) -> None:
    _assert_position(read_exif(fixture(f"metadata-extractor-gps/{relative}")), lat, lon, 1e-4)


@pytest.mark.parametrize(("relative", "lat", "lon"), ROUNDED, ids=[r[0] for r in ROUNDED])
def test_readme_positions_within_001(relative: str, lat: float, lon: float) -> None:
    _assert_position(read_exif(fixture(relative)), lat, lon, 0.01)


@pytest.mark.parametrize(("relative", "lat", "lon"), EXACT, ids=[r[0] for r in EXACT])
def test_positions_exact(relative: str, lat: float, lon: float) -> None:
    _assert_position(read_exif(fixture(relative)), lat, lon, 1e-6)


def test_heif_near_madrid() -> None:
    for name in ("HMD_Nokia_8.3_5G.heif", "HMD_Nokia_8.3_5G_hdr.heif"):
        info = read_exif(fixture(f"exif-samples/heic/mobile/{name}"))
        assert abs(info.gt_lat - 40.42) < 0.5 and abs(info.gt_lon + 3.70) < 0.5, name


def test_kodak_degrees_decimal_minutes() -> None:
    info = read_exif(fixture("exif-samples/jpg/Kodak_CX7530.jpg"))
    # raw: S [0, 11139/500, 0], E [36, 677/200, 0]
    assert info.gt_lat == pytest.approx(-(11139 / 500) / 60, abs=1e-9)
    assert info.gt_lon == pytest.approx(36 + (677 / 200) / 60, abs=1e-9)
    assert info.gt_note is None
    assert info.taken_at == datetime(2005, 8, 13, 9, 47, 23)
    assert info.camera_make == "EASTMAN KODAK COMPANY"
    assert info.camera_model == "KODAK CX7530 ZOOM DIGITAL CAMERA"


def test_nikon_d5000_zero_over_zero_seconds_read_as_zero() -> None:
    info = read_exif(fixture("metadata-extractor-gps/jpg/Nikon D5000.jpg"))
    assert info.gt_lat == pytest.approx(48.888726, abs=1e-6)
    assert info.gt_note == "GPSLatitude seconds 0/0 read as 0; GPSLongitude seconds 0/0 read as 0"
    assert info.gt_alt == pytest.approx(324.145)


def test_altitude_ref_below_sea_level_from_file() -> None:
    # GPSAltitudeRef 1, GPSAltitude 848
    assert read_exif(fixture("metadata-extractor-gps/jpg/Issue 173 (dotnet).jpg")).gt_alt == -848.0


def test_southern_tiff_and_altitude() -> None:
    info = read_exif(fixture("metadata-extractor-gps/tif/Issue 555 (1).tif"))
    assert info.gt_lat < 0 < info.gt_lon
    assert info.gt_alt == pytest.approx(14637 / 125)
    assert (info.camera_make, info.camera_model) == ("DJI", "FC6360")


@pytest.mark.parametrize(
    "name", [f"{kind}_{n}.jpg" for kind in ("landscape", "portrait") for n in range(1, 9)]
)
def test_orientation_from_file_name(name: str) -> None:
    info = read_exif(fixture(f"exif-samples/jpg/orientation/{name}"))
    assert info.orientation == int(name[-5])
    assert info.gt_note == "no gps"


def test_camera_and_time_on_known_camera() -> None:
    info = read_exif(fixture("exif-samples/jpg/Canon_40D.jpg"))
    assert info.camera_make == "Canon"
    assert info.camera_model == "Canon EOS 40D"
    assert info.taken_at == datetime(2008, 5, 30, 15, 56, 1)  # DateTimeOriginal, not DateTime (2008-07-31)
    assert info.orientation == 1
    assert info.gt_note == "no gps position"  # a GPS IFD holding only GPSVersionID


def test_make_model_are_stripped() -> None:
    info = read_exif(fixture("exif-samples/jpg/Pentax_K10D.jpg"))
    assert (info.camera_make, info.camera_model) == ("PENTAX Corporation", "PENTAX K10D")


def test_taken_at_falls_back_to_datetime() -> None:
    info = read_exif(fixture("exif-samples/jpg/tests/30-type_error.jpg"))  # only Image DateTime
    assert info.taken_at == datetime(2013, 7, 7, 17, 20, 59)


def test_exif_behind_a_large_xmp_segment_is_found() -> None:
    """exifread misses an EXIF segment that follows 26 KB of XMP (despite the file's name, it has one);
    the Pillow fallback reads it, so a GPS written there later is seen by scan."""
    info = read_exif(fixture("exif-samples/jpg/xmp/no_exif.jpg"))
    assert info.taken_at == datetime(2014, 9, 22, 10, 56, 35)
    assert info.gt_note == "no gps"


def test_heic_camera_fields_through_pillow_heif() -> None:
    info = read_exif(fixture("exif-samples/heic/mobile/iphone_13_pro_max.HEIC"))
    assert (info.camera_make, info.camera_model, info.orientation) == ("Apple", "iPhone 13 Pro Max", 6)
    assert info.taken_at == datetime(2022, 2, 16, 12, 55, 41)
    assert info.gt_note == "no gps"


@pytest.mark.parametrize(
    ("relative", "note"),
    [
        ("exif-samples/jpg/invalid/image00971.jpg", "no exif"),
        ("exif-samples/jpg/mobile/jolla.jpg", "no gps"),
        ("exif-samples/jpg/hdr/canon_hdr_NO.jpg", "no gps position"),
    ],
)
def test_notes_on_files_without_position(relative: str, note: str) -> None:
    info = read_exif(fixture(relative))
    assert (info.gt_lat, info.gt_lon, info.gt_alt, info.gt_note) == (None, None, None, note)
    assert info.as_row()["gt_source"] is None


def _all_exif_samples() -> list[Path]:
    root = FIXTURES / "exif-samples"
    if not root.is_dir():
        return []
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


@pytest.mark.skipif(
    not (FIXTURES / "exif-samples").is_dir(), reason=f"shared fixtures not found at {FIXTURES}"
)
@pytest.mark.parametrize("path", _all_exif_samples(), ids=lambda p: str(p.relative_to(FIXTURES)))
def test_every_exif_sample_reads_without_raising(path: Path) -> None:
    info = read_exif(path)
    row = info.as_row()
    assert list(row) == ROW_KEYS
    for key in ("gt_lat", "gt_lon", "gt_alt"):
        assert row[key] is None or math.isfinite(row[key])
    assert (info.gt_lat is None) == (info.gt_lon is None)
    assert info.gt_lat is not None or info.gt_note  # a null position always has its reason
    assert info.orientation is None or 1 <= info.orientation <= 8


def test_twelve_megapixel_file_is_fast() -> None:
    path = fixture("geotagged/exifr-IMG_20180725_163423.jpg")  # 4048 x 3036
    read_exif(path)
    start = time.perf_counter()
    for _ in range(20):
        read_exif(path)
    assert (time.perf_counter() - start) / 20 < 0.05  # metadata only: about 1 ms; a decode is 100x


def test_exifread_stays_quiet(caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]) -> None:
    with caplog.at_level(logging.DEBUG):
        read_exif(fixture("exif-samples/jpg/xmp/no_exif.jpg"))
        read_exif(fixture("exif-samples/jpg/invalid/image01088.jpg"))
    assert not [r for r in caplog.records if r.name.startswith("exifread")]
    assert capfd.readouterr() == ("", "")


# ------------------------------------------------------------------------------------------------
# Files that cannot be opened raise OSError; malformed ones never hang
# ------------------------------------------------------------------------------------------------


def test_missing_file_raises_oserror(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_exif(tmp_path / "nope.jpg")


def test_directory_raises_oserror(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        read_exif(tmp_path)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file_raises_oserror(tmp_path: Path) -> None:
    path = tmp_path / "locked.jpg"
    path.write_bytes(b"\xff\xd8\xff\xd9")
    path.chmod(0)
    with pytest.raises(PermissionError):
        read_exif(path)


class _FailingFile:
    """A real file whose reads fail with EIO after the first `good_reads`: a disk, not the metadata."""

    def __init__(self, path: Path, good_reads: int) -> None:
        self._fh = open(path, "rb")  # noqa: SIM115 - closed by __exit__
        self._left = good_reads

    def __enter__(self) -> _FailingFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self._fh.close()

    def read(self, size: int = -1) -> bytes:
        if self._left <= 0:
            raise OSError(errno.EIO, "Input/output error")
        self._left -= 1
        return self._fh.read(size)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._fh.seek(offset, whence)

    def tell(self) -> int:
        return self._fh.tell()

    def fileno(self) -> int:
        return self._fh.fileno()


@pytest.mark.parametrize(
    ("relative", "good_reads"),
    [
        ("exif-samples/jpg/gps/DSCN0010.jpg", 1),  # fails at exifread's first read
        ("exif-samples/jpg/gps/DSCN0010.jpg", 10),  # fails inside the IFD walk
        ("metadata-extractor-gps/heic/exif-at-eof.heic", 1),  # fails reading the HEIF for libheif
    ],
)
def test_disk_errors_propagate_as_oserror(
    monkeypatch: pytest.MonkeyPatch, relative: str, good_reads: int
) -> None:
    """A read failing mid-parse is the file's fault: OSError, not a gt_note (exifread and HEIF paths)."""
    path = fixture(relative)
    monkeypatch.setattr(exif_module, "open", lambda p, mode: _FailingFile(p, good_reads), raising=False)
    with pytest.raises(OSError) as caught:
        read_exif(path)
    assert caught.value.errno == errno.EIO


def _box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", 8 + len(payload)) + kind + payload


ZERO_LARGESIZE_BOX = struct.pack(">I", 1) + b"free" + struct.pack(">Q", 0) + bytes(32)


@pytest.mark.parametrize(
    ("data", "note"),
    [
        # JPEG XL container whose second box has a 64-bit size of 0: exifread alone loops forever.
        (
            b"\0\0\0\x0cJXL \r\n\x87\n" + _box(b"ftyp", b"jxl \0\0\0\0jxl ") + ZERO_LARGESIZE_BOX,
            "exif unreadable (malformed structure)",
        ),
        # The same trap in a HEIC (exifread would hang; pillow-heif rejects it).
        (_box(b"ftyp", b"heic\0\0\0\0") + ZERO_LARGESIZE_BOX, "exif unreadable"),
        (_box(b"ftyp", b"crx \0\0\0\x01crx isom"), "no exif"),  # a CR3 without its moov box
        (b"", "no exif"),
        (b"\xff\xd8", "exif unreadable"),
        (b"not an image at all", "no exif"),
    ],
    ids=["jxl-loop", "heic-loop", "cr3", "empty", "soi-only", "text"],
)
def test_malformed_files_give_a_note_quickly(tmp_path: Path, data: bytes, note: str) -> None:
    path = tmp_path / "bad.bin"
    path.write_bytes(data)
    start = time.perf_counter()
    info = read_exif(path)
    assert time.perf_counter() - start < 2.0
    assert info.gt_note is not None and info.gt_note.startswith(note)
    assert info.gt_lat is None


# ------------------------------------------------------------------------------------------------
# Hand-built EXIF through both backends (exifread for JPEG, pillow-heif for HEIC)
# ------------------------------------------------------------------------------------------------

ASCII, BYTE, SHORT, RATIONAL, SRATIONAL = 2, 1, 3, 5, 10


def ascii_(text: bytes) -> tuple[int, int, bytes]:
    return ASCII, len(text), text


def rationals(*pairs: tuple[int, int], signed: bool = False) -> tuple[int, int, bytes]:
    fmt = "<ii" if signed else "<II"
    return (SRATIONAL if signed else RATIONAL), len(pairs), b"".join(struct.pack(fmt, *p) for p in pairs)


def byte_(value: int) -> tuple[int, int, bytes]:
    return BYTE, 1, bytes([value])


def tiff_with_gps(gps: dict[int, tuple[int, int, bytes]]) -> bytes:
    """A little-endian TIFF/EXIF block: IFD0 (Make, Orientation, GPS pointer) and a GPS IFD."""
    make = b"TestCam\0"
    ifd0_entries = 3
    ifd0_size = 2 + 12 * ifd0_entries + 4
    make_off = 8 + ifd0_size
    gps_off = make_off + len(make)
    data_off = gps_off + 2 + 12 * len(gps) + 4
    ifd0 = struct.pack("<H", ifd0_entries)
    ifd0 += struct.pack("<HHII", 0x010F, ASCII, len(make), make_off)
    ifd0 += struct.pack("<HHIHH", 0x0112, SHORT, 1, 3, 0)
    ifd0 += struct.pack("<HHII", 0x8825, 4, 1, gps_off) + struct.pack("<I", 0)
    body, data = struct.pack("<H", len(gps)), b""
    for tag in sorted(gps):
        kind, count, payload = gps[tag]
        if len(payload) <= 4:
            body += struct.pack("<HHI", tag, kind, count) + payload.ljust(4, b"\0")
        else:
            body += struct.pack("<HHII", tag, kind, count, data_off + len(data))
            data += payload + b"\0" * (len(payload) % 2)
    body += struct.pack("<I", 0)
    return b"II*\0" + struct.pack("<I", 8) + ifd0 + make + body + data


def write_photo(path: Path, gps: dict[int, tuple[int, int, bytes]], fmt: str) -> Path:
    exif = b"Exif\0\0" + tiff_with_gps(gps)
    im = Image.new("RGB", (16, 16), "gray")
    if fmt == "heic":
        import pillow_heif

        pillow_heif.from_pillow(im).save(path, exif=exif, quality=10)
    else:
        im.save(path, "JPEG", exif=exif)
    return path


SOUTH_WEST = {
    1: ascii_(b"s\0"),  # lowercase
    2: rationals((33, 1), (51, 1), (3144, 100)),
    3: ascii_(b"W \0"),  # trailing space
    4: rationals((151, 1), (12, 1), (3, 1)),
    5: byte_(1),
    6: rationals((25, 2)),
}


@pytest.fixture(params=["jpeg", "heic"])
def fmt(request: pytest.FixtureRequest) -> str:
    return request.param


def test_built_south_west_lowercase_refs(tmp_path: Path, fmt: str) -> None:
    info = read_exif(write_photo(tmp_path / f"p.{fmt}", SOUTH_WEST, fmt))
    assert info.gt_lat == pytest.approx(-dms(33, 51, 31.44))
    assert info.gt_lon == pytest.approx(-dms(151, 12, 3))
    assert info.gt_alt == -12.5
    assert info.gt_note is None
    assert (info.camera_make, info.orientation) == ("TestCam", 3)


@pytest.mark.parametrize(
    ("gps", "lat", "lon", "note"),
    [
        pytest.param(
            {
                1: ascii_(b"N\0"),
                2: rationals((0, 1), (0, 1), (0, 1)),
                3: ascii_(b"E\0"),
                4: rationals((0, 1)),
            },
            None,
            None,
            "0,0 placeholder",
            id="zero-zero",
        ),
        pytest.param(
            {
                1: ascii_(b"N\0"),
                2: rationals((48, 0), (1, 1), (0, 1)),
                3: ascii_(b"E\0"),
                4: rationals((2, 1)),
            },
            None,
            None,
            "GPSLatitude degrees has zero denominator",
            id="zero-denominator",
        ),
        pytest.param(
            {2: rationals((10, 1), (30, 1), (0, 1)), 4: rationals((20, 1), (15, 1), (0, 1))},
            10.5,
            20.25,
            "missing GPSLatitudeRef, assumed N; missing GPSLongitudeRef, assumed E",
            id="missing-refs",
        ),
        pytest.param(
            {2: rationals((-10, 1), (30, 1), (0, 1), signed=True), 4: rationals((20, 1), (15, 1), (0, 0))},
            -10.5,
            20.25,
            "missing GPSLatitudeRef, sign taken from value; GPSLongitude seconds 0/0 read as 0; "
            "missing GPSLongitudeRef, assumed E",
            id="signed-no-ref",
        ),
        pytest.param(
            {
                1: ascii_(b"N\0"),
                2: rationals((10, 1), (75, 1), (0, 1)),
                3: ascii_(b"E\0"),
                4: rationals((2, 1)),
            },
            None,
            None,
            "GPSLatitude minutes or seconds out of range",
            id="minutes-75",
        ),
        pytest.param(
            {1: ascii_(b"N\0"), 2: rationals((95, 1)), 3: ascii_(b"E\0"), 4: rationals((2, 1))},
            None,
            None,
            "GPSLatitude out of range",
            id="lat-95",
        ),
    ],
)
def test_built_odd_forms(
    tmp_path: Path, fmt: str, gps: dict, lat: float | None, lon: float | None, note: str
) -> None:
    info = read_exif(write_photo(tmp_path / f"p.{fmt}", gps, fmt))
    assert info.gt_lat == (pytest.approx(lat) if lat is not None else None)
    assert info.gt_lon == (pytest.approx(lon) if lon is not None else None)
    assert info.gt_note == note


# ------------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (Fraction(1, 2), 0.5),
        ((3, 4), 0.75),
        (Ratio(7, 2), 3.5),
        (IFDRational(9, 4), 2.25),
        (5, 5.0),
        ((2.5,), 2.5),  # exifread's FLOAT fields come as 1-tuples
        (" 12.5\0", 12.5),
        ((1, 0), None),
        ((0, 0), None),
        (Ratio(5, 0), None),
        (IFDRational(5, 0), None),  # Pillow would give nan
        (float("nan"), None),
        (float("inf"), None),
        ("inf", None),
        ("abc", None),
        ((10**400, 1), None),
        (None, None),
        (object(), None),
    ],
)
def test_rational_to_float(value: object, expected: float | None) -> None:
    assert rational_to_float(value) == expected


@pytest.mark.parametrize(
    ("ref", "sign"),
    [("N", 1), ("S", -1), ("s", -1), ("S\0", -1), (" S  ", -1), (b"S\0", -1), (["S"], -1), ("South", -1)],
)
def test_dms_latitude_refs(ref: object, sign: int) -> None:
    value, note = dms_to_degrees([Fraction(10), Fraction(30), Fraction(36)], ref, axis="lat")
    assert value == pytest.approx(sign * 10.51)
    assert note is None


@pytest.mark.parametrize(("ref", "sign"), [("E", 1), ("W", -1), ("w\0", -1), ("west", -1), ("e  ", 1)])
def test_dms_longitude_refs(ref: object, sign: int) -> None:
    value, note = dms_to_degrees([Fraction(100), Fraction(0), Fraction(0)], ref, axis="lon")
    assert (value, note) == (sign * 100.0, None)


def test_dms_forms() -> None:
    assert dms_to_degrees([(43, 1), (28, 1), (281, 100)], "N")[0] == pytest.approx(dms(43, 28, 2.81))
    assert dms_to_degrees([(0, 1), (11139, 500), (0, 1)], "S")[0] == pytest.approx(-0.3713)  # Kodak
    assert dms_to_degrees([(36, 1), (677, 200)], "E", axis="lon")[0] == pytest.approx(36.0564167)
    assert dms_to_degrees(Fraction(-3345, 100), None)[0] == pytest.approx(-33.45)  # one decimal value
    assert dms_to_degrees("43 28 2.81", "N")[0] == pytest.approx(dms(43, 28, 2.81))
    # exactly 60 minutes or seconds: a writer rounded 59.999 up; the value is still unambiguous
    assert dms_to_degrees([(1, 1), (59, 1), (60, 1)], "N") == (pytest.approx(2.0), None)
    assert dms_to_degrees([(10, 1), (60, 1), (0, 1)], "N") == (11.0, None)


def test_dms_missing_ref() -> None:
    assert dms_to_degrees([(10, 1), (0, 1), (0, 1)], None) == (10.0, "missing GPSLatitudeRef, assumed N")
    assert dms_to_degrees([(10, 1)], "", axis="lon") == (10.0, "missing GPSLongitudeRef, assumed E")
    assert dms_to_degrees([(-10, 1), (30, 1)], "\0") == (
        -10.5,
        "missing GPSLatitudeRef, sign taken from value",
    )


def test_dms_negative_value_and_ref() -> None:
    value, note = dms_to_degrees([(-10, 1), (30, 1)], "S")
    assert value == -10.5 and note == "negative GPSLatitude with ref S, read as S"
    assert dms_to_degrees([(-10, 1)], "N") == (None, "negative GPSLatitude contradicts ref N")
    assert dms_to_degrees([(10, 1)], "E") == (None, "invalid GPSLatitudeRef 'E'")
    assert dms_to_degrees([(10, 1)], "N", axis="lon") == (None, "invalid GPSLongitudeRef 'N'")


@pytest.mark.parametrize(
    ("values", "note"),
    [
        ([(10, 0), (1, 1), (0, 1)], "GPSLatitude degrees has zero denominator"),
        ([(0, 0), (1, 1), (0, 1)], "GPSLatitude degrees has zero denominator"),
        ([(10, 1), (1, 0), (0, 1)], "GPSLatitude minutes has zero denominator"),
        ([(10, 1), (1, 1), (7, 0)], "GPSLatitude seconds has zero denominator"),
        ([(10, 1), (121, 2), (0, 1)], "GPSLatitude minutes or seconds out of range"),
        ([(10, 1), (1, 1), (6001, 100)], "GPSLatitude minutes or seconds out of range"),
        ([(90, 1), (0, 1), (1, 1)], "GPSLatitude out of range"),
        ([], "GPSLatitude has 0 values"),
        ([(1, 1)] * 4, "GPSLatitude has 4 values"),
        (["x", (1, 1)], "GPSLatitude degrees not a number"),
        ([float("nan")], "GPSLatitude degrees not a number"),
        (None, "GPSLatitude unreadable"),
    ],
)
def test_dms_rejections(values: object, note: str) -> None:
    assert dms_to_degrees(values, "N") == (None, note)


def test_dms_limits_inclusive() -> None:
    assert dms_to_degrees([(90, 1)], "S") == (-90.0, None)
    assert dms_to_degrees([(180, 1)], "W", axis="lon") == (-180.0, None)
    assert dms_to_degrees([(180, 1), (0, 1), (1, 1)], "E", axis="lon")[0] is None


def test_dms_zero_over_zero_minutes_and_seconds_read_as_zero() -> None:
    value, note = dms_to_degrees([(48, 1), (0, 0), (0, 0)], "N")
    assert value == 48.0
    assert note == "GPSLatitude minutes 0/0 read as 0; GPSLatitude seconds 0/0 read as 0"


def test_no_negative_zero() -> None:
    value, _ = dms_to_degrees([(0, 1)], "S")
    assert value == 0.0 and math.copysign(1, value) == 1


@pytest.mark.parametrize(
    ("value", "ref", "expected"),
    [
        ((100, 1), 0, (100.0, None)),
        ((100, 1), 1, (-100.0, None)),
        ((100, 1), b"\x01", (-100.0, None)),
        ((100, 1), [1], (-100.0, None)),
        ((100, 1), "1", (-100.0, None)),
        ((100, 1), None, (100.0, None)),  # EXIF default: above sea level
        ((100, 1), 7, (100.0, "unknown GPSAltitudeRef 7, read as above sea level")),
        ((-5, 1), 0, (-5.0, "negative GPSAltitude, read as below sea level")),
        ((1, 0), 0, (None, "GPSAltitude has zero denominator")),
        ((4294967295, 1), 0, (None, "GPSAltitude out of range")),
        (float("inf"), 0, (None, "GPSAltitude not a number")),
    ],
)
def test_altitude_to_metres(value: object, ref: object, expected: tuple) -> None:
    assert altitude_to_metres(value, ref) == expected


def test_gps_from_tags_rules() -> None:
    north = {"GPSLatitudeRef": "N", "GPSLongitudeRef": "E"}
    assert gps_from_tags({}) == (None, None, None, "no gps")
    assert gps_from_tags({"GPSVersionID": [2, 2, 0, 0]}) == (None, None, None, "no gps position")
    assert gps_from_tags({**north, "GPSLatitude": [(0, 1), (0, 1), (0, 1)], "GPSLongitude": [(0, 1)]}) == (
        None,
        None,
        None,
        "0,0 placeholder",
    )
    assert gps_from_tags({**north, "GPSLatitude": [(1, 1)]}) == (None, None, None, "missing GPSLongitude")
    # one bad coordinate nulls the position and its altitude
    assert gps_from_tags(
        {**north, "GPSLatitude": [(1, 0)], "GPSLongitude": [(2, 1)], "GPSAltitude": (5, 1)}
    ) == (None, None, None, "GPSLatitude degrees has zero denominator")
    # a bad altitude does not cost the position
    assert gps_from_tags(
        {**north, "GPSLatitude": [(1, 1)], "GPSLongitude": [(2, 1)], "GPSAltitude": (5, 0)}
    ) == (1.0, 2.0, None, "GPSAltitude has zero denominator")
    # the equator or the prime meridian alone is a real place
    assert gps_from_tags({**north, "GPSLatitude": [(0, 1)], "GPSLongitude": [(2, 1)]})[:2] == (0.0, 2.0)


def test_info_from_tags_and_row() -> None:
    info = info_from_tags(
        {
            "GPSLatitude": [(1, 1)],
            "GPSLatitudeRef": "S",
            "GPSLongitude": [(2, 1)],
            "GPSLongitudeRef": "W",
            "DateTimeOriginal": "    :  :     :  :  ",
            "DateTime": "2020:01:02 03:04:05",
            "Make": "  \0",
            "Model": b"X100\0",
            "Orientation": [9],
        }
    )
    assert info.as_row() == {
        "gt_lat": -1.0,
        "gt_lon": -2.0,
        "gt_alt": None,
        "gt_source": "exif",
        "gt_note": None,
        "taken_at": datetime(2020, 1, 2, 3, 4, 5),
        "camera_make": None,
        "camera_model": "X100",
        "orientation": None,
        "camera_serial": None,
        "gps_time": None,
        "taken_at_utc": None,
        "time_zone": None,
        "time_zone_source": None,
    }
    assert list(ExifInfo().as_row()) == ROW_KEYS


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2008:05:30 15:56:01", datetime(2008, 5, 30, 15, 56, 1)),
        ("2008:05:30 15:56:01\0\0", datetime(2008, 5, 30, 15, 56, 1)),
        (b"2008:05:30 15:56:01", datetime(2008, 5, 30, 15, 56, 1)),
        ("2019-08-21T11:21:36+02:00", datetime(2019, 8, 21, 11, 21, 36)),
        ("2019:08:21 11:21", datetime(2019, 8, 21, 11, 21)),
        ("2019:08:21 11:21:36.123", datetime(2019, 8, 21, 11, 21, 36)),
        ("0000:00:00 00:00:00", None),
        ("    :  :     :  :  ", None),
        ("2019:02:30 10:00:00", None),
        ("2019:08:21 24:00:00", None),
        ("2019:08:21", None),
        ("", None),
        (None, None),
        (12345, None),
    ],
)
def test_parse_exif_datetime(text: object, expected: datetime | None) -> None:
    assert parse_exif_datetime(text) == expected


def test_str_and_pathlike_paths_agree(tmp_path: Path) -> None:
    path = write_photo(tmp_path / "p.jpg", SOUTH_WEST, "jpeg")
    assert read_exif(str(path)) == read_exif(path)
