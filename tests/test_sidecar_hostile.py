"""Existing XMP sidecars are data from elsewhere: empty, malformed, entity bombs and symlinks."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

import pytest
from write_exif_util import write_predictions

from geotag.engine.write_exif import WriteOptions, run_write_exif
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


def test_symlinked_sidecar_is_written_at_its_target(tmp_path: Path) -> None:
    photo, preds = _setup(tmp_path)
    real = tmp_path / "store" / "a.xmp"
    real.parent.mkdir()
    _run(tmp_path, preds)  # a fresh sidecar, then moved away and linked back
    (tmp_path / "a.jpg.xmp").rename(real)
    (tmp_path / "a.jpg.xmp").symlink_to(real)
    preds2 = write_predictions(
        tmp_path / "p2.parquet", [{"path": photo, "pred_lat": 33.25, "pred_lon": 44.5}]
    )
    opts = WriteOptions(
        preds2, sidecar=True, journal=tmp_path / "j2.jsonl", writer="python", overwrite_gps=True
    )
    assert run_write_exif(opts).written == 1
    assert (tmp_path / "a.jpg.xmp").is_symlink()
    lat, lon, _ = read_sidecar_gps(real.read_bytes())
    assert (lat, lon) == pytest.approx((33.25, 44.5))
