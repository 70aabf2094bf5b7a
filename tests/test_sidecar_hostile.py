"""Existing XMP sidecars are data from elsewhere: empty, malformed, entity bombs and symlinks."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

import pytest
from write_exif_util import write_predictions

from geotag.engine.write_exif import WriteOptions, run_undo, run_write_exif
from geotag.io.exif_write import read_sidecar_gps
from geotag.sample_data import UNTAGGED, make_exif, render

BOMB = (
    b'<?xml version="1.0"?>\n<!DOCTYPE x [<!ENTITY a "aaaaaaaaaa">'
    + b"".join(
        f'<!ENTITY {c} "{("&" + p + ";") * 10}">'.encode() for p, c in zip("abcdef", "bcdefg", strict=True)
    )
    + b']>\n<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    + b'<rdf:Description rdf:about="">&g;</rdf:Description></rdf:RDF></x:xmpmeta>\n'
)


def _setup(tmp_path: Path) -> tuple[Path, Path]:
    photo = tmp_path / "a.jpg"
    render(UNTAGGED[0], (64, 48)).save(
        photo, "JPEG", quality=85, exif=make_exif(UNTAGGED[0], datetime(2024, 1, 2, 3, 4, 5)).tobytes()
    )
    preds = write_predictions(tmp_path / "p.parquet", [{"path": photo, "pred_lat": -12.5, "pred_lon": -77.0}])
    return photo, preds


def _run(tmp_path: Path, preds: Path):  # type: ignore[no-untyped-def]
    opts = WriteOptions(preds, sidecar=True, journal=tmp_path / "j.jsonl", writer="python")
    return run_write_exif(opts)


@pytest.mark.parametrize(
    ("content", "reason"),
    [(b"", "empty"), (b"   \n", "empty"), (b"<x:xmpmeta", "not valid XML"), (BOMB, "DTD or XML entities")],
)
def test_bad_existing_sidecar_is_an_error_row_and_never_clobbered(
    tmp_path: Path, content: bytes, reason: str
) -> None:
    photo, preds = _setup(tmp_path)
    sidecar = tmp_path / "a.jpg.xmp"
    sidecar.write_bytes(content)
    start = time.perf_counter()
    summary = _run(tmp_path, preds)
    assert time.perf_counter() - start < 10  # no entity expansion
    assert summary.written == 0 and len(summary.failed) == 1 and reason in summary.failed[0][1]
    assert sidecar.read_bytes() == content


def test_symlinked_sidecar_is_refused_and_the_run_goes_on(tmp_path: Path) -> None:
    """Issue 27 item 8: a sidecar planted as a symlink to a file outside the photo folder was written
    at its target. Now that photo fails with one line, the target is untouched, the next photo is written."""
    photo, _ = _setup(tmp_path)
    other = tmp_path / "b.jpg"
    other.write_bytes(photo.read_bytes())
    outside = tmp_path / "elsewhere" / "notes.xmp"
    outside.parent.mkdir()
    outside.write_bytes(
        b"<x:xmpmeta xmlns:x='adobe:ns:meta/'><rdf:RDF xmlns:rdf='http://www.w3.org/1999/02/22-rdf-syntax-ns#'>"
        b"<rdf:Description rdf:about=''/></rdf:RDF></x:xmpmeta>"
    )
    before = outside.read_bytes()
    (tmp_path / "a.jpg.xmp").symlink_to(outside)
    rows = [{"path": p, "pred_lat": 33.25, "pred_lon": 44.5} for p in (photo, other)]
    summary = _run(tmp_path, write_predictions(tmp_path / "p2.parquet", rows))
    assert summary.written == 1 and len(summary.failed) == 1
    assert summary.failed[0][0] == str(photo) and "symlink" in summary.failed[0][1]
    assert outside.read_bytes() == before and (tmp_path / "a.jpg.xmp").is_symlink()
    assert read_sidecar_gps((tmp_path / "b.jpg.xmp").read_bytes())[:2] == pytest.approx((33.25, 44.5))


@pytest.mark.parametrize(
    "comment", ["<!-- </x:xmpmeta> -->", "<!-- end of <x:xmpmeta> -->", "<!-- a > b -->"]
)
@pytest.mark.parametrize("where", ["after", "before"])
def test_sidecar_with_a_comment_around_the_root_stays_valid(tmp_path: Path, comment: str, where: str) -> None:
    """Issue 27 item 8: a valid sidecar with a comment after (or before) its root element was broken
    by geotag's own merge (a tag name in the comment was taken for the root's), then blamed as invalid.
    The merge keeps the comment byte for byte and the result parses; undo restores the original."""
    photo, preds = _setup(tmp_path)
    root = (
        "<x:xmpmeta xmlns:x='adobe:ns:meta/'><rdf:RDF xmlns:rdf='http://www.w3.org/1999/02/22-rdf-syntax-ns#'>"
        "<rdf:Description rdf:about=''/></rdf:RDF></x:xmpmeta>"
    )
    text = f"{root}\n{comment}\n" if where == "after" else f"{comment}\n{root}\n"
    sidecar = tmp_path / "a.jpg.xmp"
    sidecar.write_text(text)
    summary = _run(tmp_path, preds)
    assert summary.written == 1, summary.failed
    merged = sidecar.read_text()
    assert comment in merged
    assert read_sidecar_gps(merged.encode())[:2] == pytest.approx((-12.5, -77.0))
    assert run_undo(tmp_path / "j.jsonl").restored == 1 and sidecar.read_text() == text
