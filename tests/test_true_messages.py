"""Messages that are true (issue 28 item 6): scan and predict count a broken file alike, the default
model's offline error names the offline route, exiftool's [minor] refusals point at --sidecar, and no
note carries a second "warning:" prefix."""

from __future__ import annotations

import re
from pathlib import Path

from PIL import Image

from geotag.engine.predict import read_item
from geotag.engine.scan import scan_file
from geotag.io.decode import jpeg_is_truncated
from geotag.io.exif_write import refusal_text
from geotag.io.scan import iter_records
from geotag.models.base import Preprocess
from geotag.models.hub import GEOCLIP_BACKBONE, missing_weights_message

from conftest import REPO


def test_scan_and_predict_give_a_truncated_jpeg_the_same_error(sample_data: Path) -> None:
    (record,) = iter_records([sample_data / "untagged" / "truncated.jpg"])
    scanned = scan_file(record)
    item = read_item(record, Preprocess(32, (0.5,) * 3, (0.5,) * 3), True, set())
    assert scanned["status"] == item["row"]["status"] == "error"
    assert (
        scanned["error"]
        == item["row"]["error"]
        == "not a readable image: truncated JPEG (no end-of-image marker)"
    )
    assert scanned["gt_lat"] is not None  # its EXIF is still read


def test_truncation_check_reads_only_the_image_data(tmp_path: Path) -> None:
    photo = tmp_path / "p.jpg"
    Image.new("RGB", (64, 48), (200, 10, 10)).save(photo, quality=90, progressive=True)
    data = photo.read_bytes()
    assert not jpeg_is_truncated(photo)
    photo.write_bytes(data + b"SEFH" + b"\x00\x11" * 500)  # a phone's trailer after the end marker
    assert not jpeg_is_truncated(photo)
    photo.write_bytes(data[: len(data) - 40])
    assert jpeg_is_truncated(photo)
    photo.write_bytes(b"not a jpeg at all")
    assert not jpeg_is_truncated(photo)  # not a JPEG: the header reader reports it


def test_offline_error_of_the_default_model_names_the_offline_route() -> None:
    text = missing_weights_message(GEOCLIP_BACKBONE)
    assert "--model knn --gallery" in text and "geoclip-lite" in text and "gallery build" in text
    assert "\n" not in text


def test_exiftool_minor_refusal_points_at_sidecars() -> None:
    said = refusal_text("[minor] Bad format (0) for MakerNotes entry 5")
    assert said.startswith("exiftool: [minor] Bad format") and "--sidecar" in said
    assert "--sidecar" not in refusal_text("Not a valid JPEG")


def test_no_note_has_a_second_prefix() -> None:
    """Notes are printed behind "note: " or "warning: "; none may carry its own prefix."""
    pattern = re.compile(r"notes\.append\(\s*f?[\"'](?:warning|note|error):", re.IGNORECASE)
    offenders = [
        str(p.relative_to(REPO)) for p in (REPO / "geotag").rglob("*.py") if pattern.search(p.read_text())
    ]
    assert offenders == []
