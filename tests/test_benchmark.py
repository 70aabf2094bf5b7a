"""`geotag benchmark`: test sets as data, the folder check before any model, the run and its table."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from rich.console import Console

from geotag.config import PredictConfig
from geotag.engine.benchmark import check_folder, run_benchmark
from geotag.errors import InputError
from geotag.eval.benchmark_report import best_published, gaps, render_benchmark
from geotag.eval.benchmarks import TEST_SETS, THRESHOLDS_KM, get_test_set
from geotag.io.truth import file_stem, ids_sha256, load_truth
from geotag.models.clip_convert import ClipVisionConfig
from geotag.models.registry import build_geoclip

from conftest import fixture_dir

TINY = ClipVisionConfig(width=32, layers=1, heads=2, mlp_dim=64, patch_size=16, image_size=64)


def run_cli(args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    """`geotag ...` in-process through its real entry point: (exit code, stdout, stderr)."""
    from geotag.cli import main

    monkeypatch.setattr(sys, "argv", ["geotag", *args])
    with pytest.raises(SystemExit) as info:
        main()
    captured = capsys.readouterr()
    return info.value.code, captured.out, captured.err


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory):
    gallery = tmp_path_factory.mktemp("gallery") / "gallery.csv"
    gen = torch.Generator().manual_seed(0)
    lat = (torch.rand(200, generator=gen) * 160 - 80).tolist()
    lon = (torch.rand(200, generator=gen) * 360 - 180).tolist()
    with open(gallery, "w", newline="") as fh:
        csv.writer(fh).writerows([["lat", "lon"], *zip(lat, lon, strict=True)])
    torch.manual_seed(0)
    return build_geoclip(vit=TINY, allow_untrained=True, gallery=gallery)


@pytest.fixture
def no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to build a model fails the test: the check must come first."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a model was built before the folder check passed")

    monkeypatch.setattr("geotag.engine.predict.build_model", refuse)


def broken_copy(tmp_path: Path) -> Path:
    """osv5m-71 with 3 images gone, 1 stranger, and 1 image of the set truncated to garbage."""
    src = fixture_dir("osv5m-71") / "select"
    folder = tmp_path / "select"
    shutil.copytree(src, folder)
    names = sorted(p.name for p in folder.iterdir())
    for name in names[:3]:
        (folder / name).unlink()
    shutil.copy(folder / names[3], folder / "stranger.jpg")
    (folder / names[4]).write_bytes(b"not a jpeg")
    return folder


# --- the descriptions ---------------------------------------------------------------------------------


def test_descriptions_are_complete() -> None:
    for name, ts in TEST_SETS.items():
        assert ts.name == name and ts.n_images > 0 and ts.count_source and ts.manifest_names
        assert ts.manifest_format in ("places365", "osv5m", "plain")
        assert ts.ids_sha256 is None or re.fullmatch(r"[0-9a-f]{64}", ts.ids_sha256)
        for p in ts.published:
            assert len(p.acc) == len(THRESHOLDS_KM) and p.source and p.checked
            values = [a for a in p.acc if a is not None]
            assert values == sorted(values) and all(0 <= a <= 100 for a in values)  # monotone in distance
    assert TEST_SETS["im2gps"].n_images == 237 and TEST_SETS["im2gps3k"].n_images == 2997
    with pytest.raises(InputError, match="known: im2gps"):
        get_test_set("im2gps5k")


def test_fixture_description_matches_its_manifest() -> None:
    truth = load_truth(fixture_dir("osv5m-71") / "gt.csv")
    assert ids_sha256(truth.stems()) == TEST_SETS["osv5m-71"].ids_sha256


# --- the check ----------------------------------------------------------------------------------------


def test_matching_folder_passes_and_finds_its_manifest(no_model: None) -> None:
    check = check_folder("osv5m-71", fixture_dir("osv5m-71") / "select", workers=1)
    assert check.ok, check.report_lines()
    assert check.truth.name == "gt.csv" and check.folder_images == 71 and len(check.files) == 71
    assert check.folder_sha256 == TEST_SETS["osv5m-71"].ids_sha256


def test_mismatch_lists_missing_extra_and_unreadable(tmp_path: Path, no_model: None) -> None:
    folder = broken_copy(tmp_path)
    check = check_folder("osv5m-71", folder, fixture_dir("osv5m-71") / "gt.csv", workers=1)
    assert not check.ok
    names = sorted(p.name for p in (fixture_dir("osv5m-71") / "select").iterdir())
    assert check.missing == sorted(file_stem(n) for n in names[:3])
    assert check.extra == ["stranger.jpg"]
    assert len(check.unreadable) == 1 and check.unreadable[0].startswith(names[4])
    assert len(check.files) == 71 - 3 - 1
    text = "\n".join(check.report_lines())
    assert "missing (in the manifest, no file) 3:" in text and "extra (file not in the manifest) 1:" in text
    assert "3 missing, 1 extra, 1 unreadable" in check.summary()


def test_wrong_manifest_is_a_problem(tmp_path: Path, no_model: None) -> None:
    rows = list(csv.reader((fixture_dir("osv5m-71") / "gt.csv").read_text().splitlines()))
    short = tmp_path / "gt.csv"
    with open(short, "w", newline="") as fh:
        csv.writer(fh).writerows(rows[:-1])  # one image short: a different id list
    check = check_folder("osv5m-71", fixture_dir("osv5m-71") / "select", short, workers=1)
    assert not check.ok
    assert any("lists 70 images; osv5m-71 has 71" in p for p in check.problems)
    assert any("differs from the pinned one" in p for p in check.problems)
    assert len(check.extra) == 1


def test_no_manifest_is_an_input_error(tmp_path: Path) -> None:
    (tmp_path / "imgs").mkdir()
    with pytest.raises(InputError, match="no manifest for im2gps3k: pass --truth FILE"):
        check_folder("im2gps3k", tmp_path / "imgs")


def test_cli_mismatch_is_reported_before_any_model(
    tmp_path: Path, no_model: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = broken_copy(tmp_path)
    truth = str(fixture_dir("osv5m-71") / "gt.csv")
    out = tmp_path / "b.parquet"
    args = ["benchmark", "osv5m-71", str(folder), "--truth", truth, "--out", str(out)]
    code, stdout, err = run_cli(args, monkeypatch, capsys)
    assert code == 2 and stdout == ""
    assert "missing (in the manifest, no file) 3:" in err and "unreadable 1:" in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: ") and "does not match the osv5m-71 description" in last
    assert "no model was run" in last and "Traceback" not in err
    assert not out.exists()


# --- the run ------------------------------------------------------------------------------------------


def test_cli_benchmark_runs_and_prints_the_table(
    tmp_path: Path, tiny_model, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("geotag.engine.predict.build_model", lambda *a, **k: tiny_model)
    out = tmp_path / "b.parquet"
    args = ["benchmark", "osv5m-71", str(fixture_dir("osv5m-71") / "select"), "--out", str(out)]
    code, stdout, err = run_cli(
        [*args, "--workers", "0", "--batch-size", "16", "-f", "json"], monkeypatch, capsys
    )
    assert code == 0, err
    doc = json.loads(stdout)
    assert doc["check"]["ok"] and doc["run"]["n"] == 71 and len(doc["run"]["accuracy"]) == 5
    assert doc["published"] == [] and any("UNTRAINED" in n for n in doc["run"]["notes"])
    code, stdout, err = run_cli([*args, "--workers", "0", "--batch-size", "16"], monkeypatch, capsys)
    assert code == 0, err
    assert "this run: geoclip" in stdout and "≤2500 km" in stdout and "no published results" in stdout


def test_allow_mismatch_runs_the_sets_readable_images_only(tmp_path: Path, tiny_model) -> None:
    folder = broken_copy(tmp_path)
    check = check_folder("osv5m-71", folder, fixture_dir("osv5m-71") / "gt.csv", workers=1)
    cfg = PredictConfig(paths=[], out=tmp_path / "b.parquet", batch_size=16, workers=0)
    result = run_benchmark(check, cfg, model=tiny_model)
    assert result.predict.total == 67 and result.scores["n_scored"] == 67
    assert result.predict.truth is not None and result.predict.truth.unmatched_rows == 4


def test_table_sets_the_run_beside_the_papers(tmp_path: Path, tiny_model) -> None:
    check = check_folder("osv5m-71", fixture_dir("osv5m-71") / "select", workers=1)
    cfg = PredictConfig(paths=[], out=tmp_path / "b.parquet", batch_size=16, workers=0)
    result = run_benchmark(check, cfg, model=tiny_model)
    im2gps3k = dataclasses.replace(result, check=dataclasses.replace(check, test_set=TEST_SETS["im2gps3k"]))
    assert best_published(TEST_SETS["im2gps3k"].published) == [14.11, 36.7, 53.8, 72.4, 85.3]
    run = [100.0 * float(result.scores[k]) for k in ("acc_1km", "acc_2500km")]  # type: ignore[arg-type]
    assert gaps(im2gps3k)[0] == pytest.approx(run[0] - 14.11)
    assert gaps(im2gps3k)[4] == pytest.approx(run[1] - 85.3)
    buf = io.StringIO()
    render_benchmark(im2gps3k, "markdown", Console(file=buf, width=200))
    text = buf.getvalue()
    for system in ("GeoCLIP", "PIGEOTTO", "TransLocator", "GeoDecoder", "this run − best published"):
        assert f"| {system} |" in text
    assert "| GeoCLIP | 14.1 | 34.5 | 50.6 | 69.7 | 83.8 |" in text
    assert "[5] GeoCLIP: Vivanco Cepeda et al., GeoCLIP, NeurIPS 2023, Table 1" in text
    with pytest.raises(InputError, match="unknown format"):
        render_benchmark(im2gps3k, "xml", Console(file=io.StringIO()))


def test_knn_loo_gets_a_caveat_and_no_gap(tmp_path: Path, tiny_model) -> None:
    check = check_folder("osv5m-71", fixture_dir("osv5m-71") / "select", workers=1)
    cfg = PredictConfig(paths=[], out=tmp_path / "b.parquet", batch_size=16, workers=0)
    result = run_benchmark(check, cfg, model=tiny_model)
    loo = dataclasses.replace(
        result, model="knn-loo", check=dataclasses.replace(check, test_set=TEST_SETS["im2gps3k"])
    )
    buf = io.StringIO()
    render_benchmark(loo, "markdown", Console(file=buf, width=200))
    text = buf.getvalue()
    assert "caveat: knn-loo's gallery is the test set itself; this run was leave-one-out (" in text
    assert "its photographer's other photos included" in text  # no author column: said as it is
    assert "this run − best published" not in text
    assert "| [L]kNN, sigma=4 | 7.2 | 19.4 | 26.9 | 38.9 | 55.9 |" in text
    by_author = dataclasses.replace(loo, exclude_same="AUTHOR")
    buf = io.StringIO()
    render_benchmark(by_author, "markdown", Console(file=buf, width=200))
    text = buf.getvalue()
    assert (
        "this run was leave-one-AUTHOR-out (each photo placed by the others, with every photo of its " in text
    )
    assert "photographer's other photos included" not in text
    assert "self-matches left out" in text


def test_benchmark_exclude_same_option(tmp_path: Path) -> None:
    """`benchmark --exclude-same` exists (knn-loo's leave-one-group-out, documented in benchmarks.md)."""
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "COLUMNS": "200"}
    done = subprocess.run(
        [sys.executable, "-m", "geotag.cli", "benchmark", "--help"],
        capture_output=True,
        text=True,
        cwd=repo,
        env=env,
    )
    assert done.returncode == 0 and "--exclude-same" in done.stdout


def test_known_extra_files_pass_with_a_warning(
    tmp_path: Path, no_model: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "select"
    shutil.copytree(fixture_dir("osv5m-71") / "select", folder)
    first = sorted(folder.iterdir())[0]
    shutil.copy(first, folder / "stranger.jpg")
    gt = fixture_dir("osv5m-71") / "gt.csv"
    assert not check_folder("osv5m-71", folder, gt, workers=1).ok  # the set expects no extra file
    relaxed = dataclasses.replace(TEST_SETS["osv5m-71"], known_extra=1)
    monkeypatch.setitem(TEST_SETS, "osv5m-71", relaxed)
    check = check_folder("osv5m-71", folder, gt, workers=1)
    assert check.ok and check.extra == ["stranger.jpg"]
    assert any("1 file(s) not in the manifest" in n for n in check.notes)
    shutil.copy(first, folder / "second-stranger.jpg")
    assert not check_folder("osv5m-71", folder, gt, workers=1).ok  # more than the known extras
