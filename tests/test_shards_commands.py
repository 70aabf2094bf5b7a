"""`predict`, `scan` and `gallery build` read WebDataset shards (those `geotag shards` packs and those
img2dataset writes: NNNNN.jpg + NNNNN.json with latitude / longitude): one row per sample named
`SHARD#KEY`, the JSON coordinates as ground truth, an error row for an undecodable sample, resume."""

from __future__ import annotations

import io
import json
import sys
import tarfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from geotag.config import GalleryConfig, PredictConfig
from geotag.engine.gallery import run_gallery_build
from geotag.engine.predict import run_predict
from geotag.engine.scan import run_scan
from geotag.engine.shards import pack
from geotag.io.scan import iter_records
from geotag.models.registry import build_geoclip
from geotag.sample_data import Place, render

from conftest import REPO, write_tagged_photos

sys.path.insert(0, str(Path(__file__).parent))
from test_predict import TINY  # noqa: E402
from test_predict import small_gallery as small_gallery  # noqa: E402 (a fixture)

IMG2DATASET = [(35.68, 139.69), (-33.87, 151.21)]  # the two readable samples' JSON coordinates


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """6 tagged photos, the same packed into 2 shards, and an img2dataset-style shard: two images
    without EXIF whose coordinates are in the JSON, one sample that is no image, one JSON alone."""
    root = tmp_path_factory.mktemp("shards")
    (root / "photos").mkdir()
    photos = write_tagged_photos(root / "photos", n=6)
    packed = pack([photos], root / "packed", shard_size=4).shards
    assert [p.name for p in packed] == ["00000.tar", "00001.tar"]
    img2 = root / "img2" / "00000.tar"
    img2.parent.mkdir()
    with tarfile.open(img2, "w") as tar:
        for i, (lat, lon) in enumerate(IMG2DATASET):
            buf = io.BytesIO()
            render(Place(f"X{i}", lat, lon, "x.jpg", tagged=False), size=(40, 30)).save(buf, "JPEG")
            _add(tar, f"{i:09d}.jpg", buf.getvalue())
            _add(tar, f"{i:09d}.json", json.dumps({"latitude": lat, "longitude": lon}).encode())
        _add(tar, "000000002.jpg", b"not a jpeg at all")
        _add(tar, "000000002.json", json.dumps({"latitude": 1.0, "longitude": 2.0}).encode())
        _add(tar, "000000003.json", b"{}")  # no image: no sample
    return {"photos": photos, "packed": root / "packed", "img2": img2}


def pattern(data: dict[str, Path]) -> Path:
    return data["packed"] / "{00000..00001}.tar"


def test_records_name_each_sample(data: dict[str, Path]) -> None:
    records = list(iter_records([pattern(data), data["img2"]]))
    assert len(records) == 6 + 3
    assert str(records[0].path) == f"{(data['packed'] / '00000.tar').absolute()}#000000000"
    assert str(records[-1].path).endswith("img2/00000.tar#000000002")


def test_scan_reads_json_truth_and_reports_bad_samples(data: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "scan.parquet"
    summary = run_scan([pattern(data), data["img2"]], out)
    assert (summary.total, summary.failed, summary.with_gps) == (9, 1, 9)  # the JSON, as a manifest
    rows = {
        f"{Path(r['path']).parent.name}/{Path(r['path']).name}": r for r in pq.read_table(out).to_pylist()
    }
    tagged = run_scan([data["photos"]], tmp_path / "files.parquet")
    assert tagged.total == 6
    files = {r["image_id"]: r for r in pq.read_table(tmp_path / "files.parquet").to_pylist()}
    for key, row in rows.items():
        if key.startswith("packed/"):  # the packed photos: same bytes, same id, their coordinates
            src = files[row["image_id"]]
            assert row["gt_source"] == "json"
            assert row["gt_lat"] == pytest.approx(src["gt_lat"]) and row["gt_lon"] == pytest.approx(
                src["gt_lon"]
            )
            assert row["camera_make"] == src["camera_make"]  # the EXIF inside the member is read too
    assert rows["img2/00000.tar#000000001"]["gt_lat"] == pytest.approx(-33.87)
    bad = rows["img2/00000.tar#000000002"]
    assert bad["status"] == "error" and "not a readable image" in bad["error"]


def test_predict_on_shards_equals_predict_on_files(
    data: dict[str, Path], tmp_path: Path, small_gallery: Path
) -> None:
    torch.manual_seed(0)
    model = build_geoclip(vit=TINY, allow_untrained=True, gallery=small_gallery)
    cfg = {"batch_size": 4, "workers": 0}
    run_predict(PredictConfig(paths=[data["photos"]], out=tmp_path / "files.parquet", **cfg), model=model)
    out = tmp_path / "shards.parquet"
    first = run_predict(PredictConfig(paths=[pattern(data), data["img2"]], out=out, **cfg), model=model)
    assert (first.total, first.failed, first.new) == (9, 1, 9)
    files = {r["image_id"]: r for r in pq.read_table(tmp_path / "files.parquet").to_pylist()}
    rows = pq.read_table(out).to_pylist()
    for row in rows:
        if row["image_id"] in files:
            assert row["pred_lat"] == pytest.approx(files[row["image_id"]]["pred_lat"], abs=1e-4)
            assert row["pred_lon"] == pytest.approx(files[row["image_id"]]["pred_lon"], abs=1e-4)
    assert sum(r["image_id"] in files for r in rows) == 6
    assert [r["status"] for r in rows].count("error") == 1
    # resume is keyed by shard + key (+ size, mtime): nothing is predicted again
    again = run_predict(
        PredictConfig(paths=[pattern(data), data["img2"]], out=out, resume=True, **cfg), model=model
    )
    assert (again.new, again.skipped, again.total) == (0, 9, 9)


def test_gallery_build_on_shards(data: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "gallery.parquet"
    s = run_gallery_build(
        GalleryConfig(paths=[pattern(data), data["img2"]], out=out, workers=0, batch_size=4)
    )
    assert (s.embedded, s.failed) == (8, 1)
    table = pq.read_table(out, columns=["path", "lat", "lon"]).to_pylist()
    assert {round(r["lat"], 2) for r in table} >= {35.68, -33.87}
    assert all("#" in r["path"] for r in table)


def test_scan_cli_on_a_shard_pattern(data: dict[str, Path], tmp_path: Path) -> None:
    import subprocess

    out = tmp_path / "cli.parquet"
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [sys.executable, "-m", "geotag", "scan", str(pattern(data)), "--out", str(out), "--no-progress"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "scanned 6 file(s): 6 with GPS" in proc.stderr
