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
