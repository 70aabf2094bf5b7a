"""`geotag predict` end to end on CPU with a tiny GeoCLIP tower: rows, errors, determinism, resume, kill."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from cli_util import geotag
from tiny_weights import save_tiny_hf_clip

from geotag.config import PredictConfig
from geotag.engine.predict import run_predict
from geotag.io.parquet import COLUMNS
from geotag.models.clip_convert import ClipVisionConfig
from geotag.models.registry import build_geoclip
from geotag.sample_data import Place, make_exif, render

from conftest import REPO

GEOTAG = [sys.executable, "-m", "geotag.cli"]
TINY = ClipVisionConfig(width=32, layers=1, heads=2, mlp_dim=64, patch_size=16, image_size=64)
PRED_COLS = ["path", "status", "pred_lat", "pred_lon", "confidence", "topk"]


@pytest.fixture(scope="module")
def small_gallery(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """500 coordinates spread over the globe: the released 100K gallery is too slow for a CPU test."""
    path = tmp_path_factory.mktemp("gallery") / "gallery.csv"
    gen = torch.Generator().manual_seed(0)
    lat = torch.rand(500, generator=gen) * 160 - 80
    lon = torch.rand(500, generator=gen) * 360 - 180
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["lat", "lon"])
        writer.writerows(zip(lat.tolist(), lon.tolist(), strict=True))
    return path


@pytest.fixture(scope="module")
def tiny_model(small_gallery: Path):
    torch.manual_seed(0)
    return build_geoclip(vit=TINY, allow_untrained=True, gallery=small_gallery)


@pytest.fixture(scope="module")
def tiny_clip_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random HF CLIP vision checkpoint, as a user would pass with --backbone-weights."""
    return save_tiny_hf_clip(tmp_path_factory.mktemp("tinyclip"))


def _cfg(paths: list[Path], out: Path, **kw: object) -> PredictConfig:
    settings: dict[str, object] = {"batch_size": 4, "workers": 0, **kw}
    return PredictConfig(paths=paths, out=out, **settings)  # type: ignore[arg-type]


def test_predict_sample_data_rows(sample_data: Path, tmp_path: Path, tiny_model) -> None:
    out = tmp_path / "preds.parquet"
    summary = run_predict(_cfg([sample_data], out, top_k=3), model=tiny_model)
    table = pq.read_table(out)
    assert table.schema.names == list(COLUMNS)
    rows = {Path(r["path"]).name: r for r in table.to_pylist()}
    assert summary.total == len(rows) == 28  # 24 tagged, 2 untagged, 2 broken
    assert summary.failed == 2
    assert "truncated JPEG" in rows["truncated.jpg"]["error"]  # found by the scan step, as `geotag scan` does
    assert "not a readable image" in rows["not_a_photo.png"]["error"]
    assert rows["truncated.jpg"]["pred_lat"] is None
    ok = [r for r in rows.values() if r["status"] == "ok"]
    assert len(ok) == 26
    for r in ok:
        assert len(r["topk"]) == 3
        scores = [c["score"] for c in r["topk"]]
        assert scores == sorted(scores, reverse=True)
        assert (r["topk"][0]["lat"], r["topk"][0]["lon"]) == (r["pred_lat"], r["pred_lon"])
        assert 0.0 <= r["confidence"] <= 1.0
        assert r["error_km"] >= 0.0
        assert r["confidence"] >= scores[0] - 1e-9  # the top-1 point lies within its own 25 km
        assert r["model"] == "geoclip" and "UNTRAINED" in r["weights"]
    assert rows["sydney.jpg"]["gt_lat"] == pytest.approx(-33.856784, abs=1e-5)  # EXIF truth rides along
    assert not (tmp_path / "preds.parquet.parts").exists()


def test_same_input_gives_same_rows(sample_data: Path, tmp_path: Path, tiny_model) -> None:
    run_predict(_cfg([sample_data], tmp_path / "a.parquet"), model=tiny_model)
    run_predict(_cfg([sample_data], tmp_path / "b.parquet", batch_size=3), model=tiny_model)
    a = pq.read_table(tmp_path / "a.parquet", columns=PRED_COLS)
    b = pq.read_table(tmp_path / "b.parquet", columns=PRED_COLS)
    assert a.column("path").equals(b.column("path"))
    for col in ["pred_lat", "pred_lon"]:
        assert a.column(col).equals(b.column(col))
    conf_a = [c for c in a.column("confidence").to_pylist() if c is not None]
    conf_b = [c for c in b.column("confidence").to_pylist() if c is not None]
    assert conf_a == pytest.approx(conf_b, abs=1e-6)


def test_resume_adds_only_new_files(sample_data: Path, tmp_path: Path, tiny_model) -> None:
    out = tmp_path / "preds.parquet"
    run_predict(_cfg([sample_data / "europe"], out), model=tiny_model)
    first = pq.read_table(out).num_rows
    summary = run_predict(_cfg([sample_data], out, resume=True), model=tiny_model)
    assert summary.skipped == first
    paths = pq.read_table(out, columns=["path"]).column(0).to_pylist()
    assert len(paths) == len(set(paths)) == 28


def test_resume_gives_identical_copies_their_own_rows(sample_data: Path, tmp_path: Path, tiny_model) -> None:
    """Resume is keyed by the file on disk (path, size, mtime): copies with the same bytes elsewhere
    are files of their own and get their own rows (issue 15: they used to be skipped and lost)."""
    out = tmp_path / "preds.parquet"
    run_predict(_cfg([sample_data / "europe"], out), model=tiny_model)
    moved = tmp_path / "moved"
    moved.mkdir()
    for p in (sample_data / "europe").iterdir():
        (moved / p.name).write_bytes(p.read_bytes())
    summary = run_predict(_cfg([moved], out, resume=True), model=tiny_model)
    assert summary.new == 6 and summary.skipped == 0  # europe: three photos each of Paris and Rome
    paths = pq.read_table(out, columns=["path"]).column(0).to_pylist()
    assert len(paths) == len(set(paths)) == 12


def test_without_resume_a_rerun_starts_over(sample_data: Path, tmp_path: Path, tiny_model) -> None:
    out = tmp_path / "preds.parquet"
    run_predict(_cfg([sample_data / "europe"], out), model=tiny_model)
    run_predict(_cfg([sample_data / "europe"], out), model=tiny_model)
    assert pq.read_table(out).num_rows == 6


def test_worker_processes_give_the_same_rows(sample_data: Path, tmp_path: Path, tiny_model) -> None:
    run_predict(_cfg([sample_data], tmp_path / "a.parquet"), model=tiny_model)
    run_predict(_cfg([sample_data], tmp_path / "b.parquet", workers=2), model=tiny_model)
    cols = ["path", "status", "error", "pred_lat", "pred_lon", "image_id"]
    assert pq.read_table(tmp_path / "a.parquet", columns=cols).equals(
        pq.read_table(tmp_path / "b.parquet", columns=cols)
    )


def _many_photos(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        place = Place(f"Place {i}", -60 + (i * 7) % 120, -170 + (i * 37) % 340, f"p{i:03d}.jpg")
        path = folder / place.file
        render(place, size=(96, 72)).save(path, exif=make_exif(place, datetime(2024, 1, 1)).tobytes())
        paths.append(path)
    return paths


def test_kill_at_any_moment_then_resume(tmp_path: Path, tiny_clip_folder: Path, small_gallery: Path) -> None:
    photos = tmp_path / "photos"
    n = 60
    _many_photos(photos, n)
    out = tmp_path / "preds.parquet"
    args = [
        *GEOTAG,
        "predict",
        str(photos),
        "--out",
        str(out),
        "--backbone-weights",
        str(tiny_clip_folder),
        "--allow-mismatched-heads",
        "--gallery",
        str(small_gallery),
        "--batch-size",
        "2",
        "--workers",
        "0",
        "--checkpoint-rows",
        "4",
    ]
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    parts = out.with_name(out.name + ".parts")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(parts.glob("part-*.parquet"))) < 3:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists()  # nothing half-written where the user looks
    done = 0
    for part in sorted(parts.glob("part-*.parquet")):
        done += pq.read_table(part).num_rows  # every finished part reads
    assert 0 < done < n

    rerun = geotag(*args[len(GEOTAG) :], "--resume")  # the killed run was the process; this resumes it
    assert rerun.returncode == 0, rerun.stderr
    assert "already done" in rerun.stderr
    paths = pq.read_table(out, columns=["path"]).column(0).to_pylist()
    assert sorted(paths) == sorted(str(p.absolute()) for p in photos.iterdir())
    assert len(paths) == len(set(paths)) == n
    assert not parts.exists()


def test_cli_predict_exit_codes_and_weights_message(
    sample_data: Path, tmp_path: Path, tiny_clip_folder: Path, small_gallery: Path, monkeypatch
) -> None:
    """Exit codes 0, 1 (some photos failed) and 2 (a refusal, in one line) through the CLI's entry point
    in this process; the missing-weights refusal (exit 2, no traceback) in a process of its own, as a
    user starts it."""
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    monkeypatch.setenv("HF_HOME", env["HF_HOME"])
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    base = ["--gallery", str(small_gallery), "--workers", "0"]
    weights = ["--backbone-weights", str(tiny_clip_folder), "--allow-mismatched-heads"]
    ok = geotag("predict", sample_data / "europe", "--out", tmp_path / "a.parquet", *weights, *base)
    assert ok.returncode == 0, ok.stderr
    some_failed = geotag(
        "predict", sample_data / "untagged", "--out", tmp_path / "b.parquet", *weights, *base
    )
    assert some_failed.returncode == 1, some_failed.stderr
    no_weights = subprocess.run(
        [*GEOTAG, "predict", str(sample_data / "europe"), "--out", str(tmp_path / "c.parquet"), *base],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=env,
    )
    assert no_weights.returncode == 2
    assert "--backbone-weights" in no_weights.stderr and "Traceback" not in no_weights.stderr
    assert not (tmp_path / "c.parquet").exists()
    cuda = ["--device", "cuda", "--untrained-backbone"]
    bad_device = geotag("predict", sample_data, "--out", tmp_path / "d.parquet", *cuda, *base)
    if not torch.cuda.is_available():
        assert bad_device.returncode == 2 and "no CUDA device" in bad_device.stderr
        assert len(bad_device.stderr.strip().splitlines()) == 1


def test_predict_walks_with_include_exclude_ext(sample_data: Path, tmp_path: Path, tiny_model) -> None:
    out = tmp_path / "preds.parquet"
    cfg = _cfg([sample_data], out, include=("europe/*", "africa/*"), exclude=("rome.*",), ext="jpg,webp")
    summary = run_predict(cfg, model=tiny_model)
    names = sorted(Path(p).name for p in pq.read_table(out, columns=["path"]).column(0).to_pylist())
    assert names == [
        "nairobi.JPG",
        "nairobi_2.JPG",
        "nairobi_3.JPG",
        "paris.jpg",
        "paris_2.jpg",
        "paris_3.jpg",
        "rome_2.webp",  # "rome.*" leaves the other views
        "rome_3.webp",
    ]
    assert summary.total == 8


def test_resume_says_what_it_did(
    sample_data: Path, tmp_path: Path, tiny_clip_folder: Path, small_gallery: Path
) -> None:
    """`resumed: N already done, N new, N changed, N deleted`; the manifest line counts the files done
    earlier as matched, not as manifest rows that "matched no file"."""
    import shutil

    from typer.testing import CliRunner

    from geotag.cli import app

    photos = tmp_path / "photos"
    shutil.copytree(sample_data / "europe", photos / "europe")
    shutil.copytree(sample_data / "africa", photos / "africa")
    truth = tmp_path / "truth.csv"
    truth.write_text((sample_data / "truth.csv").read_text())
    out = tmp_path / "preds.parquet"
    cmd = ["predict", str(photos), "--out", str(out), "--truth", str(truth), "--gallery", str(small_gallery)]
    cmd += ["--workers", "0", "--backbone-weights", str(tiny_clip_folder), "--allow-mismatched-heads"]
    first = CliRunner().invoke(app, cmd)
    assert first.exit_code == 0, first.output
    assert "resumed" not in first.stderr

    (photos / "europe" / "rome.webp").unlink()  # deleted
    with open(photos / "europe" / "paris.jpg", "ab") as fh:  # changed: bytes appended after the image
        fh.write(b"\0" * 16)
    shutil.copy(sample_data / "oceania" / "sydney.jpg", photos / "sydney.jpg")  # new
    again = CliRunner().invoke(app, [*cmd, "--resume"])
    assert again.exit_code == 0, again.output
    said = again.stderr.splitlines()
    assert "resumed: 7 already done, 1 new, 1 changed, 1 deleted" in said, said
    (manifest_line,) = [ln for ln in said if ln.startswith("manifest ")]
    assert "2 file(s) matched (and 7 done by an earlier run)" in manifest_line, manifest_line
    assert "17 manifest row(s) matched no file" in manifest_line  # 26 rows - 9 photos of the run
    assert "predicted 2 file(s)" in said[-1] and "; 9 rows, 0 failed" in said[-1]
    paths = sorted(Path(p).name for p in pq.read_table(out, columns=["path"]).column(0).to_pylist())
    assert paths == [
        "nairobi.JPG",
        "nairobi_2.JPG",
        "nairobi_3.JPG",
        "paris.jpg",
        "paris_2.jpg",
        "paris_3.jpg",
        "rome_2.webp",
        "rome_3.webp",
        "sydney.jpg",
    ]


def test_predict_prints_progress_lines_off_a_terminal(
    sample_data: Path, tmp_path: Path, tiny_model, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    import re

    monkeypatch.setenv("GEOTAG_LOG_EVERY", "0.000001")
    run_predict(_cfg([sample_data], tmp_path / "p.parquet", progress=True), model=tiny_model)
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("predict: ")]
    assert lines and all(
        re.match(r"predict: \d+/28 files, [\d.]+ files/s, (eta|done in) ", ln) for ln in lines
    )
    assert lines[-1].startswith("predict: 28/28 files") and "done in" in lines[-1]
