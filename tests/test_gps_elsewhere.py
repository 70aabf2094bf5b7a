"""Item 5: a measured position outside EXIF GPS (DJI XMP, FLIR records, ...) means 'already has GPS',
for both writers; --overwrite-gps never leaves two positions that disagree."""

from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path

import pytest
from write_exif_util import write_predictions

from geotag.engine.write_exif import SKIP_HAS_GPS, WriteOptions, run_write_exif
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


@pytest.mark.skipif(shutil.which("exiftool") is None, reason="exiftool not installed")
def test_overwrite_gps_never_leaves_a_contradicting_maker_position(tmp_path: Path) -> None:
    photo = _jpeg_with_segment(tmp_path / "dji.jpg", DJI_XMP)
    before = photo.read_bytes()
    preds = write_predictions(tmp_path / "p.parquet", [{"path": photo, "pred_lat": -1.5, "pred_lon": -2.5}])
    opts = WriteOptions(preds, journal=tmp_path / "j.jsonl", writer="exiftool", overwrite_gps=True)
    summary = run_write_exif(opts)
    assert summary.written == 0 and "XMP-drone-dji:GPSLatitude" in summary.failed[0][1]
    assert photo.read_bytes() == before


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
