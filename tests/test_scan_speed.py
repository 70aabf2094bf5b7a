"""What makes `geotag scan` fast keeps its rows the same: files read once, work sent in batches."""

from __future__ import annotations

from pathlib import Path

import pytest

from geotag.engine import scan as scan_engine
from geotag.engine.scan import ordered_map, scan_file
from geotag.io.scan import image_id, iter_records

from conftest import fixture_dir

VOLATILE = ("created_at",)


def _square(x: int) -> int:
    return x * x


@pytest.mark.parametrize("batch", [1, 3, 16])
def test_ordered_map_keeps_order_in_batches(batch: int) -> None:
    items = list(range(41))
    assert list(ordered_map(_square, items, workers=2, window=8, batch=batch)) == [x * x for x in items]
    assert list(ordered_map(_square, [], workers=2, batch=batch)) == []


def test_read_once_gives_the_rows_of_streaming(monkeypatch: pytest.MonkeyPatch) -> None:
    records = [r for r in iter_records([fixture_dir("exif-samples")]) if r.size > 0][:12]
    from_memory = [scan_file(r) for r in records]
    monkeypatch.setattr(scan_engine, "WHOLE_FILE_BYTES", -1)  # every file streamed, as before
    streamed = [scan_file(r) for r in records]
    for a, b in zip(from_memory, streamed, strict=True):
        for key in VOLATILE:
            a.pop(key), b.pop(key)
        assert a == b
        assert a["image_id"] == image_id(Path(a["path"]))


def test_a_jpeg_without_exif_is_not_parsed_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pillow's second look for EXIF exifread missed (tests of the XMP-first JPEG) is skipped where it
    cannot find any: a JPEG in memory without the 'Exif\\0\\0' of an APP1 segment."""
    from geotag.io import exif

    calls: list[object] = []
    monkeypatch.setattr(exif, "_tags_from_pillow", lambda source: calls.append(source) or {})
    photo = next(p for p in sorted(fixture_dir("osv5m-71").rglob("*.jpg")))
    data = photo.read_bytes()
    assert b"Exif\x00\x00" not in data
    assert exif.read_exif(data).gt_note == "no exif" and calls == []
    assert exif.read_exif(photo).gt_note == "no exif" and len(calls) == 1  # streamed: Pillow still looks
    with_app1 = data[:2] + b"\xff\xe1\x00\x08Exif\x00\x00" + data[2:]  # an empty EXIF segment
    exif.read_exif(with_app1)
    assert len(calls) == 2
