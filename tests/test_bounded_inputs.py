"""Hostile inputs stay bounded (issue 29, groups 2, 3, 6 and 7): inputs are regular images of bounded
size, small crafted files never take gigabytes, and data never causes an internal error (exit 3)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from geotag.io.bounded import MAX_PHOTO_BYTES, NotAPhotoFile, open_regular, read_zip_member

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "geotag.cli", *args], capture_output=True, text=True, timeout=timeout, env=env
    )


def jpeg_bytes(colour: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (48, 32), colour).save(buf, "JPEG")
    return buf.getvalue()


def zip_bomb(path: Path, size: int = MAX_PHOTO_BYTES + 2**20) -> Path:
    """A zip whose member inflates to `size` bytes of zeros (a few hundred KB on disk)."""
    chunk = bytes(2**20)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z, z.open("big.jpg", "w") as fh:
        for _ in range(size // len(chunk)):
            fh.write(chunk)
    return path


@pytest.fixture
def hostile_manifest(tmp_path: Path) -> Path:
    """A manifest whose rows name one photo and, beside it, everything that is not a photo."""
    (tmp_path / "good.jpg").write_bytes(jpeg_bytes())
    (tmp_path / "secret.txt").write_text("password=hunter2\n")
    os.mkfifo(tmp_path / "pipe.jpg")
    (tmp_path / "folder.jpg").mkdir()
    zip_bomb(tmp_path / "bomb.zip")
    rows = ["good.jpg", "secret.txt", "pipe.jpg", "folder.jpg", "/dev/zero", f"{tmp_path}/bomb.zip::big.jpg"]
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,lat,lon\n" + "".join(f"{r},48.85,2.35\n" for r in rows))
    return manifest


# --- group 2: inputs are regular images, and bounded ------------------------------------------------


def test_open_regular_refuses_fifo_device_folder_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "p")
    for path, word in ((tmp_path / "p", "FIFO"), ("/dev/zero", "device"), (tmp_path, "folder")):
        with pytest.raises(NotAPhotoFile, match=word):
            open_regular(path)
    big = tmp_path / "big.jpg"
    with open(big, "wb") as fh:
        fh.truncate(2000)
    with pytest.raises(NotAPhotoFile, match="limit") as info:
        open_regular(big, limit=1000)
    assert info.value.reason == "too large"


def test_zip_member_over_the_limit_is_refused_before_inflating(tmp_path: Path) -> None:
    archive = zipfile.ZipFile(zip_bomb(tmp_path / "b.zip", size=8 * 2**20))
    with pytest.raises(NotAPhotoFile, match="limit"):
        read_zip_member(archive, "big.jpg", limit=2**20)


def test_shards_packs_only_regular_images(hostile_manifest: Path, tmp_path: Path) -> None:
    """Today: the text file is packed as 000000001.jpg, the FIFO blocks and /dev/zero fills memory."""
    out = tmp_path / "shards"
    r = run_cli("shards", str(hostile_manifest), "--out", str(out), timeout=90)
    assert r.returncode == 1, r.stderr
    assert "not packed: 1 not a regular file" not in r.stderr  # FIFO, /dev/zero and the folder are 3
    assert "3 not a regular file" in r.stderr and "1 not an image" in r.stderr, r.stderr
    assert "1 too large" in r.stderr, r.stderr
    with tarfile.open(out / "00000.tar") as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}  # type: ignore[union-attr]
    images = [data for name, data in members.items() if name.endswith(".jpg")]
    assert images == [jpeg_bytes()]
    assert not any(b"hunter2" in data for data in members.values())


def test_shards_of_nothing_readable_is_an_input_error(tmp_path: Path) -> None:
    from geotag.engine.shards import pack
    from geotag.errors import InputError

    (tmp_path / "a.txt").write_text("not a photo")
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,lat,lon\na.txt,1,2\n")
    with pytest.raises(InputError, match="no photo could be packed"):
        pack([manifest], tmp_path / "s", 10)


def test_training_reader_never_blocks_or_inflates(hostile_manifest: Path) -> None:
    """Each hostile row is an unreadable item (counted by train), read in bounded time and memory: the
    FIFO is never opened blocking, /dev/zero and the zip bomb are refused before any read."""
    import resource

    from geotag.engine.train_data import TrainDataset, read_manifest
    from geotag.models.base import Preprocess

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    s = read_manifest(hostile_manifest)
    ds = TrainDataset(s, Preprocess(32, (0.5,) * 3, (0.5,) * 3), augment=False, seed=0)
    items = [ds[i] for i in range(len(ds))]
    assert items[0]["pixels"] is not None
    assert all(it["pixels"] is None for it in items[1:])
    errors = [it["error"] for it in items[1:]]
    assert "FIFO" in errors[1] and "folder" in errors[2] and "device" in errors[3] and "limit" in errors[4]
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200 * 1024  # KiB


def test_tar_member_with_hash_in_its_name_is_read(tmp_path: Path) -> None:
    """`SHARD#KEY` uses '#' as its separator: a member `a#b.jpg` must still be found (it was an error row
    "No such file or directory")."""
    shard = tmp_path / "s.tar"
    with tarfile.open(shard, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in (("a#b.jpg", jpeg_bytes()), ("a#b.json", b'{"latitude": 1.5, "longitude": 2.5}')):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    out = tmp_path / "scan.parquet"
    r = run_cli("scan", str(shard), "--out", str(out))
    assert r.returncode == 0, r.stderr
    row = pq.read_table(out, columns=["path", "status", "gt_lat"]).to_pylist()[0]
    assert row == {"path": f"{shard}#a#b", "status": "ok", "gt_lat": 1.5}


# --- group 3: small files never blow up -------------------------------------------------------------


def _preds(out: Path, n: int = 2, **columns: object) -> Path:
    """A small predictions file: rows 0.. with truth (1, 2) and a prediction 0.5 degree east."""
    base: dict[str, object] = {
        "path": [f"p{i}.jpg" for i in range(n)],
        "status": ["ok"] * n,
        "gt_lat": [1.0] * n,
        "gt_lon": [2.0] * n,
        "pred_lat": [1.0] * n,
        "pred_lon": [2.5] * n,
    }
    base.update(columns)
    pq.write_table(pa.table(base), out)
    return out


def test_bounded_median_is_exact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The narrowing-window median (used beyond EXACT_MEDIAN_ROWS scored rows) equals DuckDB's median,
    per group too, with ties, even and odd counts."""
    import numpy as np

    from geotag.eval import metrics

    rng = np.random.default_rng(1)
    n = 3001
    lat, lon = rng.uniform(-60, 60, n), rng.uniform(-170, 170, n)
    plat, plon = lat + rng.normal(0, 3, n), lon + rng.normal(0, 3, n)
    plat[:40], plon[:40] = lat[:40], lon[:40]  # 40 ties at 0 km
    plat[40:80], plon[40:80] = lat[40:80] + 1.0, lon[40:80]  # and 40 at about 111 km
    scene = rng.choice(["a", "b", "c", "d"], n).tolist()
    p = _preds(tmp_path / "p.parquet", n, gt_lat=lat, gt_lon=lon, pred_lat=plat, pred_lon=plon, scene=scene)
    want = [r["median_km"] for r in metrics.evaluate([p], by=["scene"]).rows]
    want.append(metrics.evaluate([p]).rows[0]["median_km"])
    monkeypatch.setattr(metrics, "EXACT_MEDIAN_ROWS", 0)
    got = [r["median_km"] for r in metrics.evaluate([p], by=["scene"]).rows]
    got.append(metrics.evaluate([p]).rows[0]["median_km"])
    assert got == pytest.approx(want, rel=1e-12, abs=1e-9)


def test_eval_duckdb_memory_is_limited() -> None:
    from geotag.eval.metrics import connect

    con = connect()
    number, unit = con.sql("SELECT current_setting('memory_limit')").fetchall()[0][0].split()
    scale = {"KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "KB": 1e3, "MB": 1e6, "GB": 1e9}[unit]
    assert float(number) * scale <= 2**31  # DuckDB's default is 80% of the machine's memory


@pytest.mark.slow
def test_report_of_huge_labels_and_topk_stays_small(tmp_path: Path) -> None:
    """A 3 MB scene name, a 300-character file name and 500,000 top-k candidates in one row of a tiny file:
    today exit 3 (the font renderer; the file name) and gigabytes; now labels are cut, top-k sliced."""
    import resource

    struct = pa.struct([("lat", pa.float64()), ("lon", pa.float64()), ("score", pa.float64())])
    cands = [{"lat": 1.0, "lon": 2.0, "score": 0.1}] * 500_000
    p = _preds(
        tmp_path / "p.parquet",
        path=["x" * 300 + ".jpg", "b.jpg"],
        scene=["s" * 3_000_000, "urban"],
        topk=pa.array([cands, cands[:2]], pa.list_(struct)),
    )
    assert p.stat().st_size < 1_000_000
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    r = run_cli("report", str(p), "--out", str(tmp_path / "r"), timeout=180)
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024
    assert r.returncode == 0, r.stderr
    assert before // 1024 > 2000 or peak_mb < 2000
    page = (tmp_path / "r" / "index.html").read_text()
    assert "s" * 199 + "…" in page and "s" * 201 not in page
    assert len(page) < 2_000_000


def test_query_grid_has_a_minimum_step() -> None:
    from geotag.engine.query import MAX_GRID_CELLS, grid_points
    from geotag.errors import InputError

    with pytest.raises(InputError, match="between 0.25 and 30"):
        grid_points(0.05)
    with pytest.raises(InputError):
        grid_points(float("nan"))
    assert len(grid_points(0.25)) == MAX_GRID_CELLS


# --- group 6: no internal error from data -------------------------------------------------------------


@pytest.mark.parametrize(
    ("column", "values", "word"),
    [
        ("weights", [1, 2], "weights is int64, not text"),
        ("gt_country", [["FR"], ["DE"]], "gt_country is list"),
    ],
)
def test_wrongly_typed_columns_are_one_line(tmp_path: Path, column: str, values: list, word: str) -> None:
    from geotag.errors import InputError
    from geotag.eval.html_report import build_report
    from geotag.eval.metrics import evaluate

    p = _preds(tmp_path / "p.parquet", **{column: values})
    with pytest.raises(InputError, match=word):
        evaluate([p])
    with pytest.raises(InputError, match=word):
        build_report([p], tmp_path / "r")


def test_long_file_name_is_a_photo_not_found() -> None:
    from geotag.eval.report_data import resolve_photo

    assert resolve_photo("x" * 300 + ".jpg", Path("/tmp")) is None


def _ray_folder(tmp_path: Path) -> Path:
    """A Ray output folder whose parts differ (one has `confidence`, one not) and a FIFO named as a part."""
    folder = tmp_path / "ray"
    folder.mkdir()
    _preds(folder / "part-00000.parquet", confidence=[0.5, 0.25])
    _preds(folder / "part-00001.parquet")
    os.mkfifo(folder / "part-00002.parquet")
    return folder


def test_ray_parts_with_and_without_a_column_and_a_fifo(tmp_path: Path) -> None:
    """Today: export exits 3 (KeyError on the part without `confidence`) or hangs on the FIFO; eval says
    nothing of the skipped part."""
    from geotag.eval.metrics import evaluate
    from geotag.io.export import export_points

    folder = _ray_folder(tmp_path)
    result = evaluate([folder])
    assert result.rows[0]["n_rows"] == 4
    assert any("1 part file(s) that are not regular files skipped" in n for n in result.notes)
    s = export_points(folder, tmp_path / "x.csv")
    assert (s.written, s.odd_parts) == (4, 1)


def test_export_of_list_status_is_one_line(tmp_path: Path) -> None:
    from geotag.errors import InputError
    from geotag.io.export import export_points

    p = _preds(tmp_path / "p.parquet", status=[["ok"], ["ok"]])
    with pytest.raises(InputError, match="status is list"):
        export_points(p, tmp_path / "x.csv")


def test_truth_parquet_with_list_keys_is_one_line(tmp_path: Path) -> None:
    from geotag.errors import InputError
    from geotag.io.truth import load_truth

    pq.write_table(pa.table({"path": [["a.jpg"]], "lat": [1.0], "lon": [2.0]}), tmp_path / "t.parquet")
    pq.write_table(pa.table({"path": [{"k": "a"}], "lat": [1.0], "lon": [2.0]}), tmp_path / "s.parquet")
    for name in ("t.parquet", "s.parquet"):
        with pytest.raises(InputError, match="column path is"):
            load_truth(tmp_path / name)


@pytest.mark.parametrize(
    ("row", "word"),
    [
        ("0,5,1e26,10,20", "not numeric|not a count"),
        ("0,5,100000000000000000000000,10,20", "not a count"),
        ("0,5,-3,10,20", "not a count"),
        ("0,5,3,10,1e308", "not a valid coordinate"),
    ],
)
def test_cells_import_refuses_absurd_rows(tmp_path: Path, row: str, word: str) -> None:
    from geotag.errors import InputError
    from geotag.geo.cells_import import read_partition_csv

    f = tmp_path / "cells_50_5000.csv"
    f.write_text("class_label,hex_id,imgs_per_cell,latitude_mean,longitude_mean\n" + row + "\n")
    with pytest.raises(InputError, match=f"cell row 1.*({word})"):
        read_partition_csv(f, "coarse")


# --- group 7: out-of-range coordinates are missing, counted ---------------------------------------


def test_eval_counts_infinite_and_out_of_range_coordinates_as_missing(tmp_path: Path) -> None:
    """Today an infinite latitude scores 20,015 km; now it is a row without ground truth, said in a note."""
    from geotag.eval.metrics import evaluate

    inf = float("inf")
    p = _preds(tmp_path / "p.parquet", 4, gt_lat=[1.0, inf, 95.0, 1.0], pred_lon=[2.5, 2.5, 2.5, 1e308])
    result = evaluate([p])
    row = result.rows[0]
    assert (row["n_scored"], row["n_no_gt"], row["n_no_pred"]) == (1, 2, 1)
    assert row["mean_km"] == pytest.approx(55.6, abs=0.1)
    assert any("3 row(s) with an infinite or out-of-range coordinate" in n for n in result.notes)
