"""`geotag eval`: DuckDB metrics against a numpy reference, breakdowns, bad inputs, every output format."""

from __future__ import annotations

import csv
import io
import json
import math
import subprocess
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from rich.console import Console

from geotag.errors import InputError, SchemaError
from geotag.eval.metrics import (
    EvalResult,
    evaluate,
    file_labels,
    json_safe,
    parse_thresholds,
    threshold_key,
)
from geotag.eval.report import render
from geotag.geo.distance import EARTH_RADIUS_KM, geoscore, haversine_np
from geotag.io.parquet import PredictionWriter

THRESHOLDS = [1.0, 25.0, 200.0, 750.0, 2500.0]
GEOTAG = Path(sys.executable).with_name("geotag")


def write_preds(path: Path, rows: Sequence[Mapping[str, Any]]) -> Path:
    with PredictionWriter(path) as writer:
        writer.write_rows(rows)
    return path


def random_rows(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """Scored rows at spread-out distances, plus an identical pair (0 km) and an antipodal pair."""
    rng = np.random.default_rng(seed)
    gt_lat, pred_lat = rng.uniform(-89, 89, (2, n))
    gt_lon, pred_lon = rng.uniform(-180, 180, (2, n))
    near = rng.random(n) < 0.5  # half of them close by, to populate the small thresholds
    pred_lat = np.where(near, gt_lat + rng.normal(0, 0.3, n), pred_lat)
    pred_lon = np.where(near, gt_lon + rng.normal(0, 0.3, n), pred_lon)
    scenes = ["urban", "natural", "indoor"]
    rows = [
        {
            "path": f"/photos/{'ab'[i % 2]}/img{i}.jpg",
            "status": "ok",
            "gt_lat": float(gt_lat[i]),
            "gt_lon": float(gt_lon[i]),
            "pred_lat": float(pred_lat[i]),
            "pred_lon": float(pred_lon[i]),
            "scene": scenes[i % 3],
        }
        for i in range(n)
    ]
    rows.append(rec("/photos/a/same.jpg", gt=(5.0, 5.0), pred=(5.0, 5.0), scene="urban"))
    rows.append(rec("/photos/b/anti.jpg", gt=(10.0, 20.0), pred=(-10.0, -160.0), scene="natural"))
    return rows


def rec(path: str, status: str = "ok", gt: tuple = (None, None), pred: tuple = (None, None), **extra: Any):
    """One predictions row: `gt` and `pred` are (lat, lon) pairs, None where missing."""
    coords = {"gt_lat": gt[0], "gt_lon": gt[1], "pred_lat": pred[0], "pred_lon": pred[1]}
    return {"path": path, "status": status, **coords, **extra}


SKIPPED_ROWS: list[dict[str, Any]] = [
    # errors: even with coordinates, an error row is never scored
    rec("/photos/a/bad1.jpg", "error", error="truncated"),
    rec("/photos/b/bad2.jpg", "error", gt=(1.0, 1.0), pred=(1.0, 1.0)),
    # no ground truth: missing, half missing, NaN
    rec("/photos/a/nogt1.jpg", pred=(1.0, 1.0), scene="urban"),
    rec("/photos/a/nogt2.jpg", gt=(3.0, None), pred=(1.0, 1.0)),
    rec("/photos/b/nogt3.jpg", gt=(math.nan, 3.0), pred=(1.0, 1.0)),
    # ground truth but no prediction
    rec("/photos/a/nopred1.jpg", gt=(3.0, 3.0), scene="indoor"),
    rec("/photos/b/nopred2.jpg", gt=(3.0, 3.0), pred=(4.0, None)),
]


def reference(rows: Sequence[Mapping[str, Any]], thresholds: Sequence[float]) -> dict[str, Any]:
    """The metrics computed row by row in Python with haversine_np."""

    def present(row: Mapping[str, Any], key: str) -> bool:
        return row.get(key) is not None and not math.isnan(row[key])

    errors = [r for r in rows if r.get("status") == "error"]
    ok = [r for r in rows if r.get("status") != "error"]
    with_gt = [r for r in ok if present(r, "gt_lat") and present(r, "gt_lon")]
    scored = [r for r in with_gt if present(r, "pred_lat") and present(r, "pred_lon")]
    out: dict[str, Any] = {
        "n_rows": len(rows),
        "n_error": len(errors),
        "n_no_gt": len(ok) - len(with_gt),
        "n_no_pred": len(with_gt) - len(scored),
        "n_scored": len(scored),
    }
    if not scored:
        return (
            out
            | {threshold_key(t): None for t in thresholds}
            | dict.fromkeys(("median_km", "mean_km", "geoscore"))
        )
    cols = {k: np.array([r[k] for r in scored]) for k in ("gt_lat", "gt_lon", "pred_lat", "pred_lon")}
    d = haversine_np(cols["gt_lat"], cols["gt_lon"], cols["pred_lat"], cols["pred_lon"])
    out |= {threshold_key(t): float(np.mean(d <= t)) for t in thresholds}
    out |= {
        "median_km": float(np.median(d)),
        "mean_km": float(np.mean(d)),
        "geoscore": float(geoscore(d).mean()),
    }
    return out


def counts(row: Mapping[str, Any]) -> tuple[Any, ...]:
    return tuple(row[k] for k in ("n_rows", "n_error", "n_no_gt", "n_no_pred", "n_scored"))


def assert_matches(row: Mapping[str, Any], ref: Mapping[str, Any]) -> None:
    for key, expected in ref.items():
        if expected is None or isinstance(expected, int):
            assert row[key] == expected, key
        elif key == "geoscore":
            assert row[key] == pytest.approx(expected, abs=1e-6), key
        elif key.startswith("acc_"):
            assert row[key] == pytest.approx(expected, abs=1e-12), key
        else:
            assert row[key] == pytest.approx(expected, abs=1e-6), key


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    rows = random_rows(300) + SKIPPED_ROWS
    path = write_preds(tmp_path_factory.mktemp("mixed") / "preds.parquet", rows)
    return path, rows


# --- thresholds -------------------------------------------------------------------------------------


def test_parse_thresholds() -> None:
    assert parse_thresholds("1,25,200") == [1.0, 25.0, 200.0]
    assert parse_thresholds(" 200, 1 ,1,0.5km,") == [0.5, 1.0, 200.0]


@pytest.mark.parametrize("text", ["", " , ", "a", "1,x", "0", "-5", "nan", "inf", "1,,-2"])
def test_parse_thresholds_rejects(text: str) -> None:
    with pytest.raises(InputError) as info:
        parse_thresholds(text)
    assert "\n" not in str(info.value)


def test_threshold_keys() -> None:
    keys = [threshold_key(t) for t in (1.0, 25, 2500.0, 0.5)]
    assert keys == ["acc_1km", "acc_25km", "acc_2500km", "acc_0.5km"]


# --- metrics against numpy --------------------------------------------------------------------------


def test_overall_matches_numpy(mixed: tuple[Path, list[dict[str, Any]]]) -> None:
    path, rows = mixed
    result = evaluate([path], thresholds=THRESHOLDS)
    assert result.thresholds == THRESHOLDS and result.by == []
    assert len(result.rows) == 1
    row = result.rows[0]
    assert row["file"] == "preds"
    assert_matches(row, reference(rows, THRESHOLDS))
    assert counts(row) == (len(rows), 2, 3, 2, 302)
    assert row["n_rows"] == row["n_error"] + row["n_no_gt"] + row["n_no_pred"] + row["n_scored"]


def test_thresholds_at_exact_distances_count_as_hits(tmp_path: Path) -> None:
    pairs = [(0.0, 0.0, 0.0, 1.0), (48.8566, 2.3522, 51.5074, -0.1278), (10.0, 20.0, -10.0, -160.0)]
    rows = [rec(f"p{i}.jpg", gt=(a, b), pred=(c, d)) for i, (a, b, c, d) in enumerate(pairs)]
    path = write_preds(tmp_path / "exact.parquet", rows)
    # the distances exactly as the SQL computes them (one-row files: median == the distance)
    sql_d = []
    for i, row in enumerate(rows):
        one = write_preds(tmp_path / f"one{i}.parquet", [row])
        sql_d.append(evaluate([one], thresholds=[1.0]).rows[0]["median_km"])
    assert np.allclose(sql_d, haversine_np(*np.array(pairs).T), rtol=0, atol=1e-6)
    assert sql_d[0] == pytest.approx(EARTH_RADIUS_KM * math.pi / 180, abs=1e-9)
    assert sql_d[2] == pytest.approx(math.pi * EARTH_RADIUS_KM, abs=1e-3)  # asin is ill-conditioned there
    row = evaluate([path], thresholds=sql_d).rows[0]
    assert [row[threshold_key(t)] for t in sorted(sql_d)] == pytest.approx([1 / 3, 2 / 3, 1.0])
    below = [math.nextafter(t, 0.0) for t in sql_d]
    row = evaluate([path], thresholds=below).rows[0]
    assert [row[threshold_key(t)] for t in sorted(below)] == pytest.approx([0.0, 1 / 3, 2 / 3])


def test_by_scene(mixed: tuple[Path, list[dict[str, Any]]]) -> None:
    path, rows = mixed
    result = evaluate([path], thresholds=THRESHOLDS, by=["scene"])
    assert result.by == ["scene"]
    got = {row["scene"]: row for row in result.rows}
    assert set(got) == {"urban", "natural", "indoor", None}
    sizes = [row["n_rows"] for row in result.rows]
    assert sizes == sorted(sizes, reverse=True)  # the largest group first
    for scene, row in got.items():
        assert_matches(row, reference([r for r in rows if r.get("scene") == scene], THRESHOLDS))
    assert sum(row["n_rows"] for row in result.rows) == len(rows)


def test_by_folder_and_scene(mixed: tuple[Path, list[dict[str, Any]]]) -> None:
    path, rows = mixed
    result = evaluate([path], thresholds=[25.0], by=["folder", "scene", "folder"])
    assert result.by == ["folder", "scene"]
    for row in result.rows:
        subset = [
            r
            for r in rows
            if r["path"].rsplit("/", 1)[0] == f"/photos/{row['folder']}" and r.get("scene") == row["scene"]
        ]
        assert_matches(row, reference(subset, [25.0]))
    assert {row["folder"] for row in result.rows} == {"a", "b"}  # relative to their common root
    assert "preds: folders are shown relative to /photos" in result.notes


def test_folder_of_relative_and_bare_paths(tmp_path: Path) -> None:
    rows = [{"path": p, "status": "ok"} for p in ("x.jpg", "sub/y.jpg", "/z.jpg", "C:\\pics\\w.jpg")]
    path = write_preds(tmp_path / "paths.parquet", rows)
    folders = [row["folder"] for row in evaluate([path], by=["folder"]).rows]
    assert sorted(folders) == sorted([".", "sub", "/", "C:\\pics"])


def test_by_category_columns_of_any_type(tmp_path: Path) -> None:
    rows = [rec("a.jpg", gt=(0.0, 0.0), pred=(0.0, 1.0), size=3, orientation=6, camera_make="Canon")]
    path = write_preds(tmp_path / "typed.parquet", rows)
    result = evaluate([path], by=["size", "orientation", "camera_make"])
    record = result.to_records()[0]
    assert record["size"] == 3 and record["orientation"] == 6 and record["camera_make"] == "Canon"
    json.dumps(result.to_records(), allow_nan=False)


@pytest.mark.parametrize("column", ["topk", "confidence", "created_at", "geometry", "bbox"])
def test_by_refuses_columns_that_are_not_categories(tmp_path: Path, column: str) -> None:
    when = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    topk = [{"lat": 1.0, "lon": 2.0, "score": 0.5}]
    extra = {"created_at": when, "topk": topk, "confidence": 0.5}
    path = write_preds(tmp_path / "typed.parquet", [rec("a.jpg", gt=(0.0, 0.0), pred=(0.0, 1.0), **extra)])
    with pytest.raises(SchemaError) as info:
        evaluate([path], by=[column])
    message = str(info.value)
    assert "\n" not in message and f"--by {column}: a " in message and "not a category" in message
    assert "folder" in message and "camera_make" in message and "confidence," not in message


def test_by_groups_largest_first_and_folders_relative(tmp_path: Path) -> None:
    rows = [
        rec(f"/data/trip/{d}/{i}.jpg", gt=(0.0, 0.0), pred=(0.0, 1.0))
        for d, n in (("a", 1), ("b", 3), ("c/d", 2))
        for i in range(n)
    ]
    path = write_preds(tmp_path / "p.parquet", rows)
    result = evaluate([path], by=["folder"])
    assert [(r["folder"], r["n_rows"]) for r in result.rows] == [("b", 3), ("c/d", 2), ("a", 1)]
    assert result.notes == ["p: folders are shown relative to /data/trip"]


def test_unknown_by_column(mixed: tuple[Path, list[dict[str, Any]]]) -> None:
    path, _ = mixed
    with pytest.raises(SchemaError) as info:
        evaluate([path], by=["sceen"])
    message = str(info.value)
    assert "\n" not in message
    assert "sceen" in message and "folder" in message and "scene" in message


# --- several files ----------------------------------------------------------------------------------


def test_two_files_side_by_side(tmp_path: Path, mixed: tuple[Path, list[dict[str, Any]]]) -> None:
    path, rows = mixed
    other_rows = random_rows(50, seed=7)
    other = write_preds(tmp_path / "other.parquet", other_rows)
    result = evaluate([path, other], thresholds=THRESHOLDS, by=["scene"])
    assert [r["file"] for r in result.rows][:1] == ["preds"]
    by_file: dict[str, list[dict[str, object]]] = {}
    for row in result.rows:
        by_file.setdefault(str(row["file"]), []).append(row)
    assert set(by_file) == {"preds", "other"}
    for row in by_file["other"]:
        assert_matches(row, reference([r for r in other_rows if r.get("scene") == row["scene"]], THRESHOLDS))


def test_file_labels_disambiguate() -> None:
    assert file_labels([Path("/r/a.parquet"), Path("/r/b.parquet")]) == ["a", "b"]
    assert file_labels([Path("/x/run1/preds.parquet"), Path("/x/run2/preds.parquet")]) == [
        "run1/preds",
        "run2/preds",
    ]
    assert file_labels([Path("/x/a/p.parquet"), Path("/y/a/p.parquet")]) == ["x/a/p", "y/a/p"]
    assert file_labels([Path("/x/p.parquet"), Path("/x/p.parquet"), Path("/y/p.parquet")]) == [
        "x/p",
        "x/p#2",
        "y/p",
    ]


# --- scan-like and foreign files --------------------------------------------------------------------


def test_scan_file_without_predictions(tmp_path: Path) -> None:
    rows = [
        {"path": "/a/1.jpg", "status": "ok", "gt_lat": 1.0, "gt_lon": 2.0, "gt_source": "exif"},
        {"path": "/a/2.jpg", "status": "ok"},
        {"path": "/a/3.jpg", "status": "error", "error": "cannot read"},
    ]
    path = write_preds(tmp_path / "scan.parquet", rows)
    result = evaluate([path], by=["folder"])
    row = result.rows[0]
    assert counts(row) == (3, 1, 1, 1, 0)
    for key in [*result.accuracy_keys, "median_km", "mean_km", "geoscore"]:
        assert row[key] is None
    json.dumps(result.to_records(), allow_nan=False)


def test_empty_file(tmp_path: Path) -> None:
    path = write_preds(tmp_path / "empty.parquet", [])
    rows = evaluate([path]).rows
    assert rows[0]["n_rows"] == 0 and rows[0]["median_km"] is None
    assert evaluate([path], by=["scene"]).rows == []


def test_foreign_file_with_only_the_needed_columns(tmp_path: Path) -> None:
    table = pa.table(
        {
            "path": ["a.jpg", "b.jpg"],
            "status": ["ok", None],  # a null status is not an error
            "gt_lat": pa.array([0.0, 0.0], pa.float32()),
            "gt_lon": [0.0, 0.0],
            "pred_lat": [0.0, 0.0],
            "pred_lon": [1.0, 2.0],
        }
    )
    path = tmp_path / "foreign.parquet"
    pq.write_table(table, path)
    row = evaluate([path], thresholds=[150.0]).rows[0]
    assert row["n_scored"] == 2 and row["acc_150km"] == 0.5
    assert row["mean_km"] == pytest.approx(1.5 * EARTH_RADIUS_KM * math.pi / 180, abs=1e-6)


# --- bad inputs -------------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        evaluate([tmp_path / "nope.parquet"])


def test_not_parquet(tmp_path: Path) -> None:
    path = tmp_path / "notes.parquet"
    path.write_text("hello\n")
    with pytest.raises(InputError, match="not a readable Parquet"):
        evaluate([path])


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="directory"):
        evaluate([tmp_path])


def test_missing_columns(tmp_path: Path) -> None:
    path = tmp_path / "bare.parquet"
    pq.write_table(pa.table({"path": ["a.jpg"], "gt_lat": [1.0]}), path)
    with pytest.raises(SchemaError, match="pred_lat"):
        evaluate([path])


def test_no_files_and_bad_thresholds(mixed: tuple[Path, list[dict[str, Any]]]) -> None:
    with pytest.raises(InputError):
        evaluate([])
    with pytest.raises(InputError):
        evaluate([mixed[0]], thresholds=[0.0])


def test_json_safe() -> None:
    assert json_safe(math.nan) is None and json_safe(math.inf) is None
    assert json_safe([1, math.nan, "x"]) == [1, None, "x"]
    assert json_safe(b"\x01") == "01"


# --- rendering ----------------------------------------------------------------------------------------


def rendered(result: EvalResult, fmt: str, capsys: pytest.CaptureFixture[str]) -> str:
    from rich.console import Console

    render(result, fmt=fmt, console=Console())
    return capsys.readouterr().out


def test_render_formats(mixed: tuple[Path, list[dict[str, Any]]], capsys: pytest.CaptureFixture[str]) -> None:
    result = evaluate([mixed[0]], by=["scene"])
    doc = json.loads(rendered(result, "json", capsys))
    assert doc["earth_radius_km"] == EARTH_RADIUS_KM and doc["rows"] == result.to_records()
    table = list(csv.DictReader(io.StringIO(rendered(result, "csv", capsys))))
    assert len(table) == len(result.rows) and float(table[0]["acc_2500km"]) <= 1.0
    assert table[-1]["scene"] == "" and table[-1]["median_km"] == ""
    md = rendered(result, "markdown", capsys).splitlines()
    assert md[0].startswith("| scene | N |") and md[1].startswith("|:---|---:|")
    text = rendered(result, "table", capsys)
    assert "R = 6371.0088 km" in text and "d <= t" in text and "…" not in text
    with pytest.raises(InputError):
        rendered(result, "xml", capsys)


# --- the CLI ------------------------------------------------------------------------------------------


def run_cli(args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    """Run `geotag ...` in-process through its real entry point; returns (exit code, stdout, stderr)."""
    from geotag.cli import main

    monkeypatch.setattr(sys, "argv", ["geotag", *args])
    with pytest.raises(SystemExit) as info:
        main()
    captured = capsys.readouterr()
    return info.value.code, captured.out, captured.err


@pytest.mark.parametrize("fmt", ["table", "json", "csv", "markdown"])
def test_cli_formats(
    fmt: str, mixed: tuple[Path, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    path, rows = mixed
    code, out, err = run_cli(["eval", str(path), str(path), "--by", "scene", "-f", fmt], monkeypatch, capsys)
    assert code == 0, err
    if fmt == "json":
        doc = json.loads(out)
        assert {r["file"] for r in doc["rows"]} == {"preds", "preds#2"}
        first = doc["rows"][0]  # the largest group
        assert_matches(first, reference([r for r in rows if r.get("scene") == first["scene"]], THRESHOLDS))
    elif fmt == "csv":
        assert out.splitlines()[0].startswith("file,scene,n_rows,")
    elif fmt == "markdown":
        assert out.startswith("| file | scene |")
    else:
        assert "geotag eval" in out and "≤2500 km" in out


def test_cli_thresholds_option(mixed: tuple[Path, list[dict[str, Any]]], monkeypatch, capsys) -> None:
    code, out, _ = run_cli(["eval", str(mixed[0]), "--thresholds", "5,50", "-f", "json"], monkeypatch, capsys)
    assert code == 0
    assert json.loads(out)["thresholds_km"] == [5.0, 50.0]


def bad_files(tmp_path: Path) -> dict[str, Path]:
    text = tmp_path / "text.parquet"
    text.write_text("not parquet")
    bare = tmp_path / "bare.parquet"
    pq.write_table(pa.table({"x": [1]}), bare)
    return {"missing": tmp_path / "missing.parquet", "not-parquet": text, "columns": bare}


@pytest.mark.parametrize("case", ["missing", "not-parquet", "columns", "by", "thresholds", "format"])
def test_cli_input_errors(case: str, tmp_path: Path, mixed, monkeypatch, capsys) -> None:
    good = str(mixed[0])
    args = {
        "by": [good, "--by", "nope"],
        "thresholds": [good, "--thresholds", "1,abc"],
        "format": [good, "-f", "xml"],
    }.get(case) or [str(bad_files(tmp_path)[case])]
    code, out, err = run_cli(["eval", *args], monkeypatch, capsys)
    assert code == 2
    assert out == ""
    assert err.startswith("error: ") and err.count("\n") == 1
    assert "Traceback" not in err


@pytest.mark.skipif(not GEOTAG.exists(), reason="the geotag script is not installed next to this python")
def test_cli_subprocess(tmp_path: Path, mixed) -> None:
    ok = subprocess.run([GEOTAG, "eval", mixed[0], "-f", "csv"], capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("file,n_rows,")
    bad = subprocess.run(
        [GEOTAG, "eval", bad_files(tmp_path)["not-parquet"]], capture_output=True, text=True, check=False
    )
    assert bad.returncode == 2
    assert bad.stdout == "" and bad.stderr.startswith("error: ") and bad.stderr.count("\n") == 1
    assert "Traceback" not in bad.stderr


def test_untrained_weights_are_flagged(tmp_path: Path) -> None:
    """An offline demo runs with a random backbone: eval must say so next to its figures."""
    untrained = "UNTRAINED backbone (random init) + geoclip 1.3.0 heads"
    demo = write_preds(tmp_path / "demo.parquet", [rec("/a.jpg", gt=(1, 1), pred=(2, 2), weights=untrained)])
    real = write_preds(tmp_path / "real.parquet", [rec("/a.jpg", gt=(1, 1), pred=(2, 2), weights="ckpt")])
    result = evaluate([demo, real])
    assert len(result.notes) == 1 and result.notes[0].startswith("demo: ") and "UNTRAINED" in result.notes[0]
    buf = io.StringIO()
    render(result, "json", Console(file=buf, width=200))
    assert json.loads(buf.getvalue())["notes"] == result.notes


def test_by_a_manifest_column(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    rows = [rec(f"/p/{i}.jpg", gt=(0.0, 0.0), pred=(0.0, 0.0)) for i in range(5)]
    path = write_preds(tmp_path / "p.parquet", rows)
    manifest = tmp_path / "truth.csv"
    manifest.write_text("path,lat,lon,author\n" + "".join(f"{i}.jpg,0,{i},{'ab'[i % 2]}\n" for i in range(5)))
    result = evaluate([path], thresholds=[250.0], by=["author"], truth=manifest)
    got = {r["author"]: (r["n_rows"], r["acc_250km"]) for r in result.rows}
    assert got == {"a": (3, pytest.approx(2 / 3)), "b": (2, 0.5)}  # truth i degrees east: 111 km * i off
    assert [r["author"] for r in result.rows] == ["a", "b"]
    code, _, err = run_cli(
        ["eval", str(path), "--by", "photographer", "--truth", str(manifest)], monkeypatch, capsys
    )
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--by photographer" in err


def test_cli_by_a_float_column_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    path = write_preds(
        tmp_path / "p.parquet", [rec("/p/a.jpg", gt=(0.0, 0.0), pred=(0.0, 1.0), confidence=0.3)]
    )
    code, out, err = run_cli(["eval", str(path), "--by", "confidence"], monkeypatch, capsys)
    assert code == 2 and out == ""
    assert err.strip().splitlines() == [err.strip()] and "not a category" in err and "Traceback" not in err
