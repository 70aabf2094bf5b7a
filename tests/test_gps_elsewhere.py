"""Item 5: a measured position outside EXIF GPS (DJI XMP, FLIR records, ...) means 'already has GPS',
for both writers; --overwrite-gps never leaves two positions that disagree."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from datetime import datetime
from pathlib import Path

import pytest
from write_exif_util import write_predictions

from geotag.engine.write_exif import SKIP_HAS_GPS, WriteOptions, run_undo, run_write_exif
from geotag.sample_data import UNTAGGED, make_exif, render

DJI_XMP = (
    b"http://ns.adobe.com/xap/1.0/\x00"
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    b'<rdf:Description rdf:about="" xmlns:drone-dji="http://www.dji.com/drone-dji/1.0/"'
    b' drone-dji:GpsLatitude="+22.5401" drone-dji:GpsLongitude="+113.9536"/>'
    b"</rdf:RDF></x:xmpmeta>"
)


def _jpeg_with_segment(path: Path, payload: bytes) -> Path:
    render(UNTAGGED[0], (64, 48)).save(
        path, "JPEG", quality=85, exif=make_exif(UNTAGGED[0], datetime(2024, 1, 2, 3, 4, 5)).tobytes()
    )
    data = path.read_bytes()
    segment = b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload
    path.write_bytes(data[:2] + segment + data[2:])  # right after SOI
    return path


WRITERS = [
    "python",
    pytest.param(
        "exiftool",
        marks=pytest.mark.skipif(shutil.which("exiftool") is None, reason="exiftool not installed"),
    ),
]


@pytest.mark.parametrize("writer", WRITERS)
def test_dji_xmp_position_counts_as_measured_gps(tmp_path: Path, writer: str) -> None:
    photo = _jpeg_with_segment(tmp_path / "dji.jpg", DJI_XMP)
    before = photo.read_bytes()
    preds = write_predictions(tmp_path / "p.parquet", [{"path": photo, "pred_lat": -1.5, "pred_lon": -2.5}])
    summary = run_write_exif(WriteOptions(preds, journal=tmp_path / "j.jsonl", writer=writer))
    assert summary.written == 0 and summary.skipped == {SKIP_HAS_GPS: 1}
    assert photo.read_bytes() == before


XMP_EXIF_GPS = (
    b"http://ns.adobe.com/xap/1.0/\x00"
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    b'<rdf:Description rdf:about="" xmlns:exif="http://ns.adobe.com/exif/1.0/"'
    b' exif:GPSLatitude="22,32.406N" exif:GPSLongitude="113,57.216E"/>'
    b"</rdf:RDF></x:xmpmeta>"
)
needs_exiftool = pytest.mark.skipif(shutil.which("exiftool") is None, reason="exiftool not installed")


def _positions(path: Path) -> dict[str, float]:  # NaN: a tag without a number
    """Every latitude/longitude exiftool shows (-n -a -gps:all -xmp:all -composite:GPS*), signed."""
    out = subprocess.run(
        ["exiftool", "-j", "-n", "-a", "-G1", "-gps:all", "-xmp:all", "-composite:GPS*", str(path)],
        capture_output=True,
        check=True,
        text=True,
    ).stdout
    info = json.loads(out)[0]
    found = {}
    for key, value in info.items():
        name = key.partition(":")[2]
        if name.endswith(("Latitude", "Longitude")) and "Dest" not in name:
            ref = info.get(f"{key}Ref", "")  # EXIF GPS is unsigned, with a ref
            number = float(value) if value != "" else math.nan  # an empty EXIF GPS tag (Nikon D5000)
            found[key] = -abs(number) if ref in ("S", "W") else number
    return found


def _agree(positions: dict[str, float], lat: float, lon: float) -> bool:
    return all(abs(v - (lat if k.endswith("Latitude") else lon)) < 1e-7 for k, v in positions.items()) and {
        "GPS:GPSLatitude",
        "GPS:GPSLongitude",
    } <= set(positions)


@needs_exiftool
@pytest.mark.parametrize(
    ("payload", "copies"),
    [
        (DJI_XMP, {"XMP-drone-dji:GPSLatitude", "XMP-drone-dji:GPSLongitude"}),
        (XMP_EXIF_GPS, {"XMP-exif:GPSLatitude", "XMP-exif:GPSLongitude"}),
    ],
    ids=["dji-xmp", "xmp-exif"],
)
def test_overwrite_gps_makes_every_copy_agree(tmp_path: Path, payload: bytes, copies: set[str]) -> None:
    """--overwrite-gps writes EXIF GPS and gives every other copy a reader shows the same position;
    undo gives the old bytes back."""
    photo = _jpeg_with_segment(tmp_path / "photo.jpg", payload)
    before = photo.read_bytes()
    assert copies <= set(_positions(photo)) and not _agree(_positions(photo), -1.5, -2.5)
    preds = write_predictions(tmp_path / "p.parquet", [{"path": photo, "pred_lat": -1.5, "pred_lon": -2.5}])
    journal = tmp_path / "j.jsonl"
    opts = WriteOptions(preds, journal=journal, writer="exiftool", overwrite_gps=True)
    summary = run_write_exif(opts)
    assert summary.failed == [] and summary.written == 1
    after = _positions(photo)
    assert copies <= set(after) and _agree(after, -1.5, -2.5), after
    assert run_undo(journal).restored == 1 and photo.read_bytes() == before


@needs_exiftool
def test_overwrite_gps_refuses_a_position_exiftool_cannot_rewrite(tmp_path: Path) -> None:
    """A position in a place exiftool reads but cannot write (here PNG text; a FLIR record is the
    same): the file fails with the reason, unchanged, rather than keep two positions."""
    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("GPSLatitude", "22.5401")
    info.add_text("GPSLongitude", "113.9536")
    photo = tmp_path / "text.png"
    render(UNTAGGED[0], (32, 24)).save(photo, pnginfo=info)
    assert isinstance(Image.open(photo).info.get("GPSLatitude"), str)
    before = photo.read_bytes()
    preds = write_predictions(tmp_path / "p.parquet", [{"path": photo, "pred_lat": -1.5, "pred_lon": -2.5}])
    plain = run_write_exif(WriteOptions(preds, journal=tmp_path / "j0.jsonl", writer="exiftool"))
    assert plain.skipped == {SKIP_HAS_GPS: 1}
    opts = WriteOptions(preds, journal=tmp_path / "j.jsonl", writer="exiftool", overwrite_gps=True)
    summary = run_write_exif(opts)
    assert summary.written == 0
    assert "PNG:GPSLatitude" in summary.failed[0][1] and "cannot rewrite" in summary.failed[0][1]
    assert photo.read_bytes() == before


def test_python_writer_refuses_overwriting_gps_kept_in_xmp(tmp_path: Path) -> None:
    photo = _jpeg_with_segment(tmp_path / "xmp.jpg", XMP_EXIF_GPS)
    before = photo.read_bytes()
    preds = write_predictions(tmp_path / "p.parquet", [{"path": photo, "pred_lat": -1.5, "pred_lon": -2.5}])
    opts = WriteOptions(preds, journal=tmp_path / "j.jsonl", writer="python", overwrite_gps=True)
    summary = run_write_exif(opts)
    assert summary.written == 0 and "XMP" in summary.failed[0][1] and photo.read_bytes() == before


def test_python_writer_refuses_a_flir_record_it_cannot_read(tmp_path: Path) -> None:
    photo = _jpeg_with_segment(tmp_path / "flir.jpg", b"FLIR\x00\x01\x01\x00" + b"\x00" * 64)
    before = photo.read_bytes()
    preds = write_predictions(tmp_path / "p.parquet", [{"path": photo, "pred_lat": -1.5, "pred_lon": -2.5}])
    summary = run_write_exif(WriteOptions(preds, journal=tmp_path / "j.jsonl", writer="python"))
    assert summary.written == 0 and "FLIR record" in summary.failed[0][1]
    assert photo.read_bytes() == before


def test_python_writer_refuses_a_minolta_preview_stored_past_the_exif_block(tmp_path: Path) -> None:
    """Item 8, a real camera file: the DiMAGE Z3 keeps its preview (MakerNote PreviewImageStart)
    beyond the APP1 segment; appending to the block would shift it, so the Python writer refuses."""
    from conftest import fixture_dir

    photo = tmp_path / "minolta.jpg"
    shutil.copyfile(fixture_dir("exif-samples") / "jpg" / "Konica_Minolta_DiMAGE_Z3.jpg", photo)
    before = photo.read_bytes()
    preds = write_predictions(tmp_path / "p.parquet", [{"path": photo, "pred_lat": -1.5, "pred_lon": -2.5}])
    summary = run_write_exif(WriteOptions(preds, journal=tmp_path / "j.jsonl", writer="python"))
    assert summary.written == 0 and "0x0088" in summary.failed[0][1] and "exiftool" in summary.failed[0][1]
    assert photo.read_bytes() == before


SIDECAR_GPS = (
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    b'<rdf:Description rdf:about="" xmlns:exif="http://ns.adobe.com/exif/1.0/"'
    b' xmlns:darktable="http://darktable.sf.net/" darktable:history_end="3"'
    b' exif:GPSLatitude="22,32.406N" exif:GPSLongitude="113,57.216E"/>'
    b"</rdf:RDF></x:xmpmeta>\n"
)


@pytest.mark.parametrize("writer", WRITERS)
@pytest.mark.parametrize("style", ["photo.jpg.xmp", "photo.xmp"])
def test_a_sidecar_position_counts_and_is_updated_with_overwrite_gps(
    tmp_path: Path, writer: str, style: str
) -> None:
    """Photo managers show a sidecar's exif:GPSLatitude: it is GPS the photo has, and with
    --overwrite-gps the sidecar gets the new position too (journaled, undone byte for byte)."""
    from geotag.io.exif import read_exif
    from geotag.io.exif_write import read_sidecar_gps, sidecar_path

    photo = tmp_path / "photo.jpg"
    render(UNTAGGED[0], (64, 48)).save(photo, "JPEG", quality=85)
    side = sidecar_path(photo, style)
    side.write_bytes(SIDECAR_GPS)
    before = photo.read_bytes()
    preds = write_predictions(tmp_path / "p.parquet", [{"path": photo, "pred_lat": -1.5, "pred_lon": -2.5}])
    plain = run_write_exif(WriteOptions(preds, journal=tmp_path / "j0.jsonl", writer=writer))
    assert plain.skipped == {SKIP_HAS_GPS: 1} and photo.read_bytes() == before

    journal = tmp_path / "j.jsonl"
    summary = run_write_exif(WriteOptions(preds, journal=journal, writer=writer, overwrite_gps=True))
    assert summary.failed == [] and summary.written == 1
    info = read_exif(photo)
    assert (info.gt_lat, info.gt_lon) == (pytest.approx(-1.5, abs=1e-7), pytest.approx(-2.5, abs=1e-7))
    lat, lon, _ = read_sidecar_gps(side.read_bytes())
    assert (lat, lon) == (pytest.approx(-1.5, abs=1e-7), pytest.approx(-2.5, abs=1e-7))
    assert b"darktable:history_end" in side.read_bytes()  # the rest of the sidecar is kept
    if writer == "exiftool":
        assert _agree(_positions(photo), -1.5, -2.5)
    assert run_undo(journal).restored == 2
    assert photo.read_bytes() == before and side.read_bytes() == SIDECAR_GPS


@needs_exiftool
@pytest.mark.parametrize(
    ("name", "copies"),
    [
        ("tif/Issue 555 (1).tif", {"XMP-drone-dji:GPSLatitude", "XMP-drone-dji:GPSLongitude"}),  # a DJI drone
        ("jpg/Nikon D5000.jpg", {"XMP-exif:GPSLatitude", "XMP-exif:GPSLongitude"}),
        ("jpg/Olympus FE230-X790.jpg", {"XMP-exif:GPSLatitude", "XMP-exif:GPSLongitude"}),
    ],
)
def test_overwrite_gps_on_real_files_with_a_second_copy(tmp_path: Path, name: str, copies: set[str]) -> None:
    """Real camera and drone files of metadata-extractor-gps whose position is in EXIF GPS and XMP."""
    from conftest import fixture_dir

    photo = tmp_path / Path(name).name
    shutil.copyfile(fixture_dir("metadata-extractor-gps") / name, photo)
    photo.chmod(0o644)
    before = photo.read_bytes()
    assert copies <= set(_positions(photo))
    preds = write_predictions(tmp_path / "p.parquet", [{"path": photo, "pred_lat": -1.5, "pred_lon": -2.5}])
    plain = run_write_exif(WriteOptions(preds, journal=tmp_path / "j0.jsonl", writer="exiftool"))
    assert plain.skipped == {SKIP_HAS_GPS: 1}
    journal = tmp_path / "j.jsonl"
    summary = run_write_exif(WriteOptions(preds, journal=journal, writer="exiftool", overwrite_gps=True))
    assert summary.failed == [] and summary.written == 1
    after = _positions(photo)
    assert copies <= set(after) and _agree(after, -1.5, -2.5), after
    assert run_undo(journal).restored == 1 and photo.read_bytes() == before


def _photo_with_sidecar(tmp_path: Path, style: str, payload: bytes | None = None) -> tuple[Path, Path]:
    from geotag.io.exif_write import sidecar_path

    photo = tmp_path / "photo.jpg"
    if payload is None:
        render(UNTAGGED[0], (64, 48)).save(photo, "JPEG", quality=85)
    else:
        _jpeg_with_segment(photo, payload)
    side = sidecar_path(photo, style)
    side.write_bytes(SIDECAR_GPS)
    return photo, side


@pytest.mark.parametrize("writer", WRITERS)
@pytest.mark.parametrize("style", ["photo.jpg.xmp", "photo.xmp"])
def test_dry_run_lists_the_sidecar_overwrite_gps_would_update(
    tmp_path: Path, writer: str, style: str
) -> None:
    """--dry-run --overwrite-gps names the GPS sidecar it would update (its own line, counted in the
    summary) and changes nothing; the real run then writes exactly what was listed."""
    photo, side = _photo_with_sidecar(tmp_path, style)
    before = photo.read_bytes()
    preds = write_predictions(tmp_path / "p.parquet", [{"path": photo, "pred_lat": -1.5, "pred_lon": -2.5}])
    journal = tmp_path / "j.jsonl"
    seen = []
    opts = WriteOptions(preds, journal=journal, writer=writer, overwrite_gps=True, dry_run=True)
    summary = run_write_exif(opts, seen.append)
    assert summary.would_write == 1 and summary.sidecars == 1 and summary.failed == []
    assert "would write 1 file(s)" in summary.describe(True) and "1 GPS sidecar(s)" in summary.describe(True)
    lines = seen[0].describe().splitlines()
    assert lines[0].startswith(f"would write {photo}\t-1.500000, -2.500000\t(confidence 0.500")
    assert lines[1] == f"would write {side}\t-1.500000, -2.500000\t(sidecar GPS updated to agree)"
    assert photo.read_bytes() == before and side.read_bytes() == SIDECAR_GPS and not journal.exists()

    real = run_write_exif(WriteOptions(preds, journal=journal, writer=writer, overwrite_gps=True))
    assert real.written == 1 and real.sidecars == 1 and "1 GPS sidecar(s)" in real.describe()
    assert side.read_bytes() != SIDECAR_GPS


@pytest.mark.parametrize("writer", WRITERS)
def test_dry_run_lists_a_sidecar_that_cannot_be_updated_as_failing(tmp_path: Path, writer: str) -> None:
    """A read-only GPS sidecar would make the real run fail the photo's row: the dry run says so."""
    photo, side = _photo_with_sidecar(tmp_path, "photo.jpg.xmp")
    side.chmod(0o444)
    before = photo.read_bytes()
    preds = write_predictions(tmp_path / "p.parquet", [{"path": photo, "pred_lat": -1.5, "pred_lon": -2.5}])
    opts = WriteOptions(preds, writer=writer, overwrite_gps=True, dry_run=True)
    summary = run_write_exif(opts)
    assert summary.would_write == 0 and summary.sidecars == 0
    assert (
        "photo.jpg.xmp is read-only" in summary.failed[0][1]
        and "would keep the old GPS" in summary.failed[0][1]
    )
    assert photo.read_bytes() == before and side.read_bytes() == SIDECAR_GPS


@needs_exiftool
def test_dry_run_cli_names_the_xmp_copies_and_the_sidecar(tmp_path: Path) -> None:
    """The CLI listing: the photo's line names the XMP groups given the same position, the sidecar
    has its own line; photo and sidecar keep their bytes."""
    import sys

    photo, side = _photo_with_sidecar(tmp_path, "photo.xmp", DJI_XMP)
    before = photo.read_bytes()
    preds = write_predictions(tmp_path / "p.parquet", [{"path": photo, "pred_lat": -1.5, "pred_lon": -2.5}])
    proc = subprocess.run(
        [sys.executable, "-m", "geotag.cli", "write-exif", str(preds), "--dry-run", "--overwrite-gps"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 2 and "XMP-drone-dji GPS updated to agree" in lines[0] and str(photo) in lines[0]
    # tab-separated columns (what, where, why), as the listing writes them: `cut -f1` gives the files
    assert lines[1].split("\t")[0] == f"would write {side}" and "sidecar GPS updated to agree" in lines[1]
    assert "(and 1 GPS sidecar(s) to agree); skipped 0; failed 0; dry run, nothing changed" in proc.stderr
    assert photo.read_bytes() == before and side.read_bytes() == SIDECAR_GPS


@needs_exiftool
def test_dry_run_names_xmp_exif_copy(tmp_path: Path) -> None:
    photo = _jpeg_with_segment(tmp_path / "photo.jpg", XMP_EXIF_GPS)
    preds = write_predictions(tmp_path / "p.parquet", [{"path": photo, "pred_lat": -1.5, "pred_lon": -2.5}])
    seen = []
    run_write_exif(WriteOptions(preds, writer="exiftool", overwrite_gps=True, dry_run=True), seen.append)
    assert seen[0].copies == ("XMP-exif",) and "XMP-exif GPS updated to agree" in seen[0].describe()


def test_dry_run_lists_what_the_python_writer_would_refuse(tmp_path: Path) -> None:
    """GPS in the photo's XMP: the python writer refuses it, and the dry run already says so."""
    photo = _jpeg_with_segment(tmp_path / "xmp.jpg", XMP_EXIF_GPS)
    before = photo.read_bytes()
    preds = write_predictions(tmp_path / "p.parquet", [{"path": photo, "pred_lat": -1.5, "pred_lon": -2.5}])
    seen = []
    opts = WriteOptions(preds, writer="python", overwrite_gps=True, dry_run=True)
    summary = run_write_exif(opts, seen.append)
    assert summary.would_write == 0 and "only exiftool updates both" in summary.failed[0][1]
    assert seen[0].describe(dry_run=True).startswith(f"would fail: {photo}: the photo keeps GPS in XMP")
    assert photo.read_bytes() == before


@needs_exiftool
def test_dry_run_lists_a_position_exiftool_cannot_rewrite_as_failing(tmp_path: Path) -> None:
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("GPSLatitude", "22.5401")
    photo = tmp_path / "text.png"
    render(UNTAGGED[0], (32, 24)).save(photo, pnginfo=info)
    before = photo.read_bytes()
    preds = write_predictions(tmp_path / "p.parquet", [{"path": photo, "pred_lat": -1.5, "pred_lon": -2.5}])
    summary = run_write_exif(WriteOptions(preds, writer="exiftool", overwrite_gps=True, dry_run=True))
    assert summary.would_write == 0 and "cannot rewrite" in summary.failed[0][1]
    assert photo.read_bytes() == before
