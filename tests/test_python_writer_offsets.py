"""Issue 15, item 8: the pure-Python writer appends to the EXIF block, so it must refuse a block whose
offsets point past its own end (what they point at would shift). Real Sanyo and Kodak files of
exif-samples: their maker notes (a header before the IFD, offsets from the TIFF header), InteropIFD
and thumbnails all lie inside the block and come through unchanged; the same Sanyo maker note made
to point past the block (as a model that keeps its thumbnail in a later segment does) is refused."""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import pytest
from write_exif_util import EXIFTOOL, exiftool_dump, tag_differences, write_predictions

from geotag.engine.write_exif import WriteOptions, run_write_exif
from geotag.io.exif import read_exif

REAL = ["exif-org/sanyo-vpcsx550.jpg", "exif-org/sanyo-vpcg250.jpg", "Kodak_CX7530.jpg"]


def _copy(name: str, tmp_path: Path) -> Path:
    from conftest import fixture_dir

    photo = tmp_path / Path(name).name
    shutil.copyfile(fixture_dir("exif-samples") / "jpg" / name, photo)
    return photo


def _tiff_block(data: bytes) -> tuple[int, bytes]:
    """(file offset, bytes) of the TIFF block in the first Exif APP1 segment."""
    at = data.index(b"Exif\x00\x00") + 6
    length = int.from_bytes(data[at - 8 : at - 6], "big")
    return at, data[at : at - 8 + length]


@pytest.mark.skipif(EXIFTOOL is None, reason="exiftool not installed (it checks the result)")
@pytest.mark.parametrize("name", REAL)
def test_real_sanyo_and_kodak_files_are_written_without_damage(tmp_path: Path, name: str) -> None:
    photo = _copy(name, tmp_path)
    before = exiftool_dump([photo])[str(photo)]
    preds = write_predictions(tmp_path / "p.parquet", [{"path": photo, "pred_lat": -1.5, "pred_lon": -2.5}])
    opts = WriteOptions(preds, journal=tmp_path / "j.jsonl", writer="python", overwrite_gps=True)
    summary = run_write_exif(opts)
    assert summary.failed == [] and summary.written == 1
    after = exiftool_dump([photo])[str(photo)]
    assert tag_differences(before, after) == {}  # thumbnails (-b), InteropIFD, maker notes: the same
    info = read_exif(photo)
    assert (info.gt_lat, info.gt_lon) == (pytest.approx(-1.5, abs=1e-6), pytest.approx(-2.5, abs=1e-6))


def test_a_sanyo_maker_note_pointing_past_the_block_is_refused(tmp_path: Path) -> None:
    """The old check did not see a Sanyo maker note as an IFD (it starts with 'SANYO\\0\\1\\0'), so
    whatever it pointed at went unchecked and the file was written."""
    photo = _copy("exif-org/sanyo-vpcsx550.jpg", tmp_path)
    data = bytearray(photo.read_bytes())
    at, block = _tiff_block(bytes(data))
    note = block.index(b"SANYO\x00\x01\x00") + 8  # the maker-note IFD, little-endian like the block
    (count,) = struct.unpack_from("<H", block, note)
    entries = [note + 2 + 12 * i for i in range(count)]
    dump = next(e for e in entries if struct.unpack_from("<H", block, e)[0] == 0x0F00)  # DataDump, 72 bytes
    struct.pack_into("<I", data, at + dump + 8, len(block) + 64)  # now into the segments after the block
    photo.write_bytes(bytes(data))
    before = photo.read_bytes()
    preds = write_predictions(tmp_path / "p.parquet", [{"path": photo, "pred_lat": -1.5, "pred_lon": -2.5}])
    summary = run_write_exif(WriteOptions(preds, journal=tmp_path / "j.jsonl", writer="python"))
    assert summary.written == 0
    assert "MakerNote tag 0x0f00 points past the EXIF block" in summary.failed[0][1]
    assert "exiftool" in summary.failed[0][1] and photo.read_bytes() == before
