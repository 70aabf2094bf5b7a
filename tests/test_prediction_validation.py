"""Item 10 / 'predictions validated per row': what write-exif accepts from a predictions file."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from write_exif_util import write_predictions

from geotag.engine.write_exif import (
    SKIP_BAD_CONFIDENCE,
    SKIP_BAD_ERROR,
    SKIP_BAD_NUMBER,
    SKIP_BAD_PREDICTION,
    WriteOptions,
    run_write_exif,
    select_fix,
)
from geotag.io.scan import image_id
from geotag.sample_data import UNTAGGED, make_exif, render

OPTS = WriteOptions(Path("p.parquet"))
GOOD = {"status": "ok", "pred_lat": -33.5, "pred_lon": 151.25, "confidence": 0.5, "error_km": 10.0}


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"confidence": 1.5}, SKIP_BAD_CONFIDENCE),
        ({"confidence": -0.2}, SKIP_BAD_CONFIDENCE),
        ({"confidence": float("nan")}, SKIP_BAD_CONFIDENCE),
        ({"confidence": "0.5"}, SKIP_BAD_CONFIDENCE),
        ({"pred_lat": "12.5"}, SKIP_BAD_NUMBER),
        ({"pred_lon": "151.25"}, SKIP_BAD_NUMBER),
        ({"pred_lat": True}, SKIP_BAD_NUMBER),
        ({"pred_lat": float("inf")}, SKIP_BAD_NUMBER),
        ({"pred_lon": float("nan")}, SKIP_BAD_NUMBER),
        ({"pred_lat": 90.0001}, SKIP_BAD_PREDICTION),
        ({"pred_lon": -180.5}, SKIP_BAD_PREDICTION),
        ({"error_km": -1.0}, SKIP_BAD_ERROR),
        ({"error_km": "far"}, SKIP_BAD_ERROR),
    ],
)
def test_bad_values_are_skipped_with_a_reason(change: dict[str, object], reason: str) -> None:
    assert select_fix({**GOOD, **change}, OPTS) == (None, reason)


@pytest.mark.parametrize(
    "edge", [{"pred_lat": 90.0}, {"pred_lon": -180.0}, {"confidence": 0.0}, {"confidence": 1}]
)
def test_edges_are_accepted(edge: dict[str, object]) -> None:
    fix, reason = select_fix({**GOOD, **edge}, OPTS)
    assert reason is None and fix is not None


def _jpeg(path: Path) -> Path:
    render(UNTAGGED[0], (64, 48)).save(
        path, "JPEG", quality=85, exif=make_exif(UNTAGGED[0], datetime(2024, 1, 2, 3, 4, 5)).tobytes()
    )
    return path


def test_out_of_range_confidence_never_reaches_a_photo(tmp_path: Path) -> None:
    photo = _jpeg(tmp_path / "a.jpg")
    before = photo.read_bytes()
    preds = write_predictions(
        tmp_path / "p.parquet", [{"path": photo, "pred_lat": 1.0, "pred_lon": 2.0, "confidence": 1.5}]
    )
    summary = run_write_exif(WriteOptions(preds, journal=tmp_path / "j.jsonl", writer="python"))
    assert summary.written == 0 and summary.skipped == {SKIP_BAD_CONFIDENCE: 1}
    assert photo.read_bytes() == before


def test_string_coordinates_in_a_foreign_file_are_skipped(tmp_path: Path) -> None:
    photo = _jpeg(tmp_path / "a.jpg")
    table = pa.table(
        {
            "path": [str(photo)],
            "image_id": [image_id(photo)],
            "status": ["ok"],
            "pred_lat": ["12.5"],
            "pred_lon": ["13.5"],
        }
    )
    pq.write_table(table, tmp_path / "p.parquet")
    summary = run_write_exif(
        WriteOptions(tmp_path / "p.parquet", journal=tmp_path / "j.jsonl", writer="python")
    )
    assert summary.written == 0 and summary.skipped == {SKIP_BAD_NUMBER: 1}


def test_export_of_a_wrong_typed_file_is_an_input_error(tmp_path: Path) -> None:
    """Item 10: string coordinates in a Parquet file -> exit 2 with one line, not 'internal error' (3)."""
    import subprocess
    import sys

    table = pa.table(
        {"path": ["a.jpg"], "pred_lat": ["x"], "pred_lon": ["y"], "gt_lat": [1.0], "gt_lon": [2.0]}
    )
    pq.write_table(table, tmp_path / "bad.parquet")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "geotag.cli",
            "export",
            str(tmp_path / "bad.parquet"),
            "--out",
            str(tmp_path / "o.csv"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "pred_lat is string, not a number" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "o.csv").exists()
