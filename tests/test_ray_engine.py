"""`geotag predict --engine ray` on a local 2-CPU Ray cluster: the local engine's rows, resume, error rows,
fsspec URLs, a crashed actor retried without duplicates, and eval / DuckDB / geopandas on the folder.

One Ray instance serves the module (started once, ~4 s); the model is a tiny random HF CLIP tower saved as
a checkpoint folder, so the actors build it from the registry spec exactly as the local engine does.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tiny_weights import save_tiny_hf_clip, write_random_gallery

from geotag.config import PredictConfig
from geotag.engine.predict import PredictSummary, run_predict
from geotag.io.scan import iter_records

ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'geotag-photos[ray]')")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Ray Data's own, not ours

from geotag.engine import ray_predict  # noqa: E402 - only with ray installed
from geotag.engine.ray_predict import CRASH_ENV, run_ray_predict  # noqa: E402

SAME = ["image_id", "path", "size", "mtime", "status", "error", "format", "width", "height", "taken_at"]
SAME += ["camera_make", "camera_model", "orientation", "gt_lat", "gt_lon", "gt_source", "gt_note"]
SAME += ["pred_lat", "pred_lon", "cell", "scene", "country", "gt_country", "model", "weights", "geometry"]


@pytest.fixture(scope="module")
def crash_marker(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fault-injection marker: present (disarmed) by default; a test removes it to crash one actor."""
    marker = tmp_path_factory.mktemp("crash") / "crashed"
    marker.touch()
    return marker


@pytest.fixture(scope="module")
def cluster(crash_marker: Path) -> Iterator[None]:
    """One local Ray instance for the module: 2 CPUs, no dashboard; workers inherit the crash marker."""
    os.environ[CRASH_ENV] = str(crash_marker)
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()
    os.environ.pop(CRASH_ENV, None)


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny HF CLIP vision checkpoint and a 500-point gallery: what a user passes as weight paths."""
    folder = tmp_path_factory.mktemp("weights")
    return {
        "backbone_weights": save_tiny_hf_clip(folder / "clip"),
        "gallery": write_random_gallery(folder / "gallery.csv"),
    }


def _cfg(paths: list, out: Path, weights: dict[str, Path], **kw: object) -> PredictConfig:
    settings: dict[str, object] = {"batch_size": 4, "workers": 0, "top_k": 3, "checkpoint_rows": 4, **kw}
    settings.setdefault("allow_mismatched_heads", True)  # a tiny tower with the released heads
    return PredictConfig(paths=paths, out=out, **weights, **settings)  # type: ignore[arg-type]


def _rows(table: pa.Table) -> dict[str, dict]:
    return {r["path"]: r for r in table.to_pylist()}


def _assert_same_rows(local: dict[str, dict], other: dict[str, dict]) -> None:
    assert sorted(local) == sorted(other)
    for path, a in local.items():
        b = other[path]
        for col in SAME:
            assert a[col] == b[col], (path, col)
        if a["pred_lat"] is not None:  # scores: float32 sums may differ in the last bit with batch makeup
            assert b["confidence"] == pytest.approx(a["confidence"], abs=1e-6)
            assert [(c["lat"], c["lon"]) for c in a["topk"]] == [(c["lat"], c["lon"]) for c in b["topk"]]
            scores = zip(a["topk"], b["topk"], strict=True)
            assert all(x["score"] == pytest.approx(y["score"], abs=1e-6) for x, y in scores)


@pytest.fixture(scope="module")
def local_run(
    sample_data: Path, weights: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict, PredictSummary]:
    """The local engine's rows (with the sample manifest as ground truth): what Ray must reproduce."""
    out = tmp_path_factory.mktemp("local") / "preds.parquet"
    summary = run_predict(_cfg([sample_data], out, weights, truth=sample_data / "truth.csv"))
    return _rows(pq.read_table(out)), summary


@pytest.fixture(scope="module")
def local_rows(local_run: tuple[dict, PredictSummary]) -> dict:
    return local_run[0]


@pytest.fixture(scope="module")
def ray_run(
    cluster: None, sample_data: Path, weights: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, PredictSummary]:
    """The sample photos through the Ray engine (blocks of 4 files), shared by the tests that read it."""
    out = tmp_path_factory.mktemp("ray") / "preds"
    truth = sample_data / "truth.csv"
    return out, run_ray_predict(_cfg([sample_data], out, weights, engine="ray", truth=truth))


def test_ray_gives_the_local_engines_rows(
    ray_run: tuple[Path, PredictSummary], sample_data: Path, local_run: tuple[dict, PredictSummary]
) -> None:
    out, summary = ray_run
    local_rows, local_summary = local_run
    assert (summary.total, summary.new, summary.failed) == (28, 28, 2)
    assert summary.truth == local_summary.truth  # the actors' manifest counts, summed on the driver
    assert summary.truth is not None and summary.truth.matched == 26
    assert summary.device.startswith("ray (1 CPU model actor")
    parts = ray_predict.part_files(out)
    assert len(parts) >= 4  # blocks of at most 4 files, per listing unit
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    assert (out / ray_predict.DONE_MARKER).exists()  # a completed run says so
    table = pq.read_table(out)  # pyarrow / geopandas read the folder as one table
    rows = _rows(table)
    _assert_same_rows(local_rows, rows)
    assert "truncated JPEG" in rows[str(sample_data / "untagged" / "truncated.jpg")]["error"]
    meta = pq.read_schema(parts[0]).metadata
    assert meta is not None and b"geo" in meta and b'"engine": "ray"' in meta[b"geotag"]


def test_fsspec_urls_and_a_crashed_actor(
    cluster: None,
    sample_data: Path,
    weights: dict[str, Path],
    local_rows: dict,
    crash_marker: Path,
    tmp_path: Path,
) -> None:
    """file:// URLs go through fsspec (listing and reading); an actor that dies after writing a part
    and before reporting it is restarted by Ray, the block retried, and no row is written twice."""
    out = tmp_path / "preds"
    crash_marker.unlink()  # armed: the first actor to write a part dies once
    truth = sample_data / "truth.csv"
    summary = run_ray_predict(_cfg([f"file://{sample_data}"], out, weights, engine="ray", truth=truth))
    assert crash_marker.exists()
    assert (summary.total, summary.new, summary.failed) == (28, 28, 2)
    table = pq.read_table(out)
    rows = {r["path"].removeprefix("file://"): r for r in table.to_pylist()}
    assert all(p.startswith("file://") for p in table.column("path").to_pylist())
    for r in rows.values():  # the URL names the file in its path and in an error's text
        r["path"] = r["path"].removeprefix("file://")
        r["error"] = r["error"] and r["error"].replace("file://", "")
    _assert_same_rows(local_rows, rows)


def test_one_row_per_file_across_parts(tmp_path: Path) -> None:
    """The end-of-run step: a path in two parts keeps its newest row (an edited file predicted again,
    or a listing re-run), and an earlier run's row for a file that is gone drops out."""
    from datetime import UTC, datetime

    from geotag.io.parquet import PredictionWriter

    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("1.jpg", "2.jpg", "3.jpg"):
        (photos / name).write_bytes(b"x")
    one, two, three, gone = (str(photos / n) for n in ("1.jpg", "2.jpg", "3.jpg", "gone.jpg"))
    old, new = datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 6, 1, tzinfo=UTC)
    folder = tmp_path / "preds"
    folder.mkdir()
    parts = {
        "part-b": [(one, old, 1), (two, old, 1), (gone, old, 1)],  # an earlier run's
        "part-a": [(two, new, 2), (three, new, 2)],  # this run's: 2.jpg was edited
    }
    for name, rows in parts.items():
        with PredictionWriter(folder / f"{name}.parquet", metadata={"command": "predict"}) as w:
            w.write_rows({"path": p, "status": "ok", "created_at": t, "size": n} for p, t, n in rows)
    assert ray_predict.one_row_per_file(folder, {"part-b.parquet"}) == (0, 2)
    rows = {r["path"]: r["size"] for r in pq.read_table(folder, columns=["path", "size"]).to_pylist()}
    assert rows == {one: 1, two: 2, three: 2}
    assert b"geo" in (pq.read_schema(folder / "part-b.parquet").metadata or {})
    assert ray_predict.one_row_per_file(folder, set()) == (0, 0)  # idempotent
    merged = tmp_path / "merged.parquet"  # one file for report / export
    assert ray_predict.merge_parts(folder, merged) == 3
    assert b"geo" in (pq.read_schema(merged).metadata or {})


def test_ray_resume_is_keyed_by_the_file_on_disk(
    cluster: None, sample_data: Path, weights: dict[str, Path], tmp_path: Path
) -> None:
    """Like the local engine (tests/test_resume_exact.py): an identical copy keeps its own row, an
    edited file's row is replaced, a deleted file's row drops out."""
    import shutil

    photos = tmp_path / "photos"
    shutil.copytree(sample_data / "europe", photos)
    first = sorted(photos.iterdir())[0]
    shutil.copyfile(first, photos / "copy-of-first.jpg")  # identical bytes
    out = tmp_path / "preds"
    summary = run_ray_predict(_cfg([photos], out, weights, engine="ray"))
    files = sorted(str(p) for p in photos.iterdir())
    paths = pq.read_table(out, columns=["path"]).column(0).to_pylist()
    assert sorted(paths) == files and summary.new == len(files)
    victim, edited = sorted(photos.iterdir())[:2]
    victim.unlink()
    edited.write_bytes(edited.read_bytes() + b"\0")  # an edit: new size and mtime
    os.utime(edited, ns=(1, 1))
    summary = run_ray_predict(_cfg([photos], out, weights, engine="ray", resume=True))
    assert (summary.new, summary.skipped) == (1, len(files) - 2)
    rows = pq.read_table(out, columns=["path", "size"]).to_pylist()
    assert sorted(r["path"] for r in rows) == sorted(str(p) for p in photos.iterdir())  # one row each
    assert summary.total == len(rows) == len(files) - 1
    assert next(r["size"] for r in rows if r["path"] == str(edited)) == edited.stat().st_size


def test_resume_through_the_cli_and_eval_of_the_folder(
    ray_run: tuple[Path, PredictSummary], sample_data: Path, weights: dict[str, Path], tmp_path: Path
) -> None:
    """With Europe's part already in the folder, `geotag predict --engine ray --resume` skips what the
    folder holds, by file on disk (a moved copy is a file of its own: it gets its own rows), and adds
    the rest. eval, DuckDB and geopandas
    read the folder as one table. (In-process: a second driver would start its own workers, which
    costs this test's budget; joining by --address is ray.init's own job.)"""
    import duckdb
    import geopandas
    from typer.testing import CliRunner

    from geotag.cli import app

    out = tmp_path / "preds"
    out.mkdir()
    europe = str(sample_data / "europe")
    for part in ray_predict.part_files(ray_run[0]):  # a block holds one listing unit's files
        if pq.read_table(part, columns=["path"]).column(0)[0].as_py().startswith(europe):
            (out / part.name).write_bytes(part.read_bytes())
    before = {p.name: p.stat().st_mtime_ns for p in ray_predict.part_files(out)}
    assert before
    moved = tmp_path / "moved"  # a copy elsewhere: the same image ids, but files of their own
    moved.mkdir()
    for p in (sample_data / "europe").iterdir():
        (moved / p.name).write_bytes(p.read_bytes())
    address = ray.get_runtime_context().gcs_address  # in-process: the CLI uses the connected cluster
    cmd = ["predict", str(sample_data), str(moved), "--out", str(out)]
    cmd += ["--engine", "ray", "--address", address, "--resume", "--batch-size", "4", "--top-k", "3"]
    cmd += ["--backbone-weights", str(weights["backbone_weights"]), "--gallery", str(weights["gallery"])]
    cmd += ["--allow-mismatched-heads"]
    done = CliRunner().invoke(app, cmd)
    assert done.exit_code == 1, done.output  # two broken files
    said = " ".join(done.stderr.split())  # rich wraps lines at the terminal width
    assert "resumed: 6 already done, 28 new" in said
    assert "predicted 28 file(s) on ray (1 CPU model actor); 34 rows, 2 failed" in said
    assert "INFO" not in said  # Ray Data's chatter stays out of the CLI's stderr
    paths = pq.read_table(out, columns=["path"]).column(0).to_pylist()
    assert len(paths) == len(set(paths)) == 34
    assert all(before[name] == (out / name).stat().st_mtime_ns for name in before)  # untouched
    assert duckdb.sql(f"SELECT count(*) FROM read_parquet('{out}/*.parquet')").fetchall() == [(34,)]
    assert len(geopandas.read_parquet(out).geometry.dropna()) == 32
    ev = CliRunner().invoke(app, ["eval", str(out), "--format", "csv"])
    assert ev.exit_code == 0, ev.output
    assert ev.stdout.splitlines()[1].startswith("preds,34,2,")


def test_listing_units_split_folders(tmp_path: Path) -> None:
    """Folders are split into units (own photos, then sub-folders); hidden folders are skipped."""
    for sub in ("a", "b/c", ".hidden"):
        (tmp_path / sub).mkdir(parents=True)
        (tmp_path / sub / "x.jpg").write_bytes(b"x")
    (tmp_path / "top.jpg").write_bytes(b"x")
    (tmp_path / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")  # listed: its read reports it
    units = ray_predict.plan_units([str(tmp_path)], target=64, depth=1)
    assert [(Path(u.path).relative_to(tmp_path).as_posix(), u.kind) for u in units] == [
        (".", "files"),
        ("a", "tree"),
        ("b", "tree"),
    ]
    listed = dict(sorted((p, size) for u in units for p, size, _ in ray_predict.list_unit(u)))
    local = {str(r.path): r.size for r in iter_records([tmp_path])}  # the local engine's walk
    assert listed == local
    assert [Path(p).relative_to(tmp_path).as_posix() for p in listed] == [
        "a/x.jpg",
        "b/c/x.jpg",
        "gone.jpg",
        "top.jpg",
    ]


def test_resource_plan_leaves_room_for_the_decoders() -> None:
    cfg = PredictConfig(paths=[], out=Path("x"))
    plan = ray_predict.plan_resources(cfg, {"CPU": 2})
    assert (plan.gpu, plan.actors, plan.cpus_per_actor, plan.cpus_per_decoder) == (False, 1, 1.0, 1.0)
    cfg.ray_actors = 2
    plan = ray_predict.plan_resources(cfg, {"CPU": 2})
    assert plan.actors * plan.cpus_per_actor + plan.cpus_per_decoder <= 2
    plan = ray_predict.plan_resources(cfg, {"CPU": 64, "GPU": 8})
    assert (plan.gpu, plan.actors) == (True, 8)
    cfg.ray_gpus = 0
    assert not ray_predict.plan_resources(cfg, {"CPU": 64, "GPU": 8}).gpu


def test_done_index_matches_files() -> None:
    from datetime import UTC, datetime

    from geotag.io.parts import DoneSet, record_key

    when = datetime(2024, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    index = ray_predict.DoneIndex(DoneSet(keys={record_key("/a.jpg", 10, when)}))
    assert index.has_file("/a.jpg", 10, when) and not index.has_file("/a.jpg", 11, when)
    assert not index.has_file("/b.jpg", 10, when)


FILTERS = {"include": ("europe/*", "*.png"), "exclude": ("*/no_gps_*",), "ext": "jpg,png"}


def test_listing_units_take_the_local_filters(sample_data: Path) -> None:
    """--include / --exclude / --ext: every unit (a folder's own files, a sub-folder's tree) matches the
    globs below the input folder, as the local engine's walk does, whatever the split depth."""
    from geotag.io.scan import PathFilter

    only = PathFilter.from_options(FILTERS["include"], FILTERS["exclude"], FILTERS["ext"])
    local = [str(r.path) for r in iter_records([sample_data], only)]
    assert [Path(p).relative_to(sample_data).as_posix() for p in local] == [
        "americas/new_york.png",
        "americas/new_york_2.png",
        "americas/new_york_3.png",
        "europe/paris.jpg",
        "europe/paris_2.jpg",
        "europe/paris_3.jpg",
        "untagged/not_a_photo.png",
    ]
    for depth in (0, 1):
        units = ray_predict.plan_units([str(sample_data)], target=64, depth=depth)
        assert sorted(p for u in units for p, _, _ in ray_predict.list_unit(u, only)) == local


@pytest.fixture(scope="module")
def shard_pattern(sample_data: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Two img2dataset-style shards: photos of the sample set with their coordinates in the JSON (the
    ground truth), and a member that is no image (an error row)."""
    import io
    import json
    import tarfile

    folder = tmp_path_factory.mktemp("shards")
    members = [
        [("000000000", sample_data / "untagged" / "no_gps_1.jpg", (48.86, 2.35))],
        [("000000001", sample_data / "oceania" / "sydney.jpg", (-33.87, 151.21)), ("000000002", None, None)],
    ]
    for number, samples in enumerate(members):
        with tarfile.open(folder / f"{number:05d}.tar", "w") as tar:
            for key, photo, where in samples:
                data = photo.read_bytes() if photo else b"not a jpeg at all"
                meta = json.dumps({"latitude": where[0], "longitude": where[1]} if where else {}).encode()
                for name, blob in ((f"{key}.jpg", data), (f"{key}.json", meta)):
                    info = tarfile.TarInfo(name)
                    info.size = len(blob)
                    tar.addfile(info, io.BytesIO(blob))
    return str(folder / "{00000..00001}.tar")


def test_ray_filters_and_shards_give_the_local_engines_rows(
    cluster: None, sample_data: Path, weights: dict[str, Path], shard_pattern: str, tmp_path: Path
) -> None:
    """A filtered folder and a brace pattern of shards: the Ray engine takes the files the local engine
    takes and one row per sample (`SHARD.tar#KEY`, the JSON's coordinates as ground truth), equal to
    the local engine's rows; --resume skips them all and keeps every row."""
    inputs = [sample_data, shard_pattern]
    local = tmp_path / "local.parquet"
    run_predict(_cfg(inputs, local, weights, **FILTERS))
    local_rows = _rows(pq.read_table(local))
    out = tmp_path / "preds"
    summary = run_ray_predict(_cfg(inputs, out, weights, engine="ray", **FILTERS))
    assert (summary.total, summary.new, summary.failed) == (10, 10, 2)  # not_a_photo.png, the bad member
    ray_rows = _rows(pq.read_table(out))
    _assert_same_rows(local_rows, ray_rows)
    shard = str(Path(shard_pattern).parent / "00001.tar")
    assert ray_rows[f"{shard}#000000001"]["gt_source"] == "json"
    assert ray_rows[f"{shard}#000000001"]["gt_lat"] == pytest.approx(-33.87)
    bad = ray_rows[f"{shard}#000000002"]
    assert bad["status"] == "error" and bad["error"].endswith(f"{shard}#000000002")  # no object repr
    again = run_ray_predict(_cfg(inputs, out, weights, engine="ray", resume=True, **FILTERS))
    assert (again.new, again.skipped, again.total) == (0, 10, 10)
    assert sorted(_rows(pq.read_table(out))) == sorted(ray_rows)
