"""`geotag scan`: the walk (order, formats, hidden folders, symlink loops), content ids, rows per file."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from geotag.engine.scan import run_scan
from geotag.errors import InputError
from geotag.io.scan import image_id, iter_image_paths

from conftest import REPO, fixture_dir

GEOTAG = [sys.executable, "-m", "geotag.cli"]


def _touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_walk_order_formats_hidden_and_loops(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    for name in [
        "b/2.JPG",
        "b/1.jpeg",
        "a/x.PNG",
        "a/y.tif",
        "a/z.TIFF",
        "c.webp",
        "d.HEIC",
        "e.heif",
        "f.txt",
    ]:
        _touch(root / name)
    _touch(root / ".hidden" / "secret.jpg")
    _touch(root / ".dotfile.jpg")
    os.symlink(root, root / "a" / "loop")  # a folder link back to the root: must not loop
    os.symlink(root / "c.webp", root / "b" / "same.webp")  # the same file twice: listed once
    found = [p.relative_to(root).as_posix() for p in iter_image_paths([root])]
    # the link is met first in walk order, so the file is listed under that name, once
    assert found == [
        "a/x.PNG",
        "a/y.tif",
        "a/z.TIFF",
        "b/1.jpeg",
        "b/2.JPG",
        "b/same.webp",
        "d.HEIC",
        "e.heif",
    ]
    assert found == [p.relative_to(root).as_posix() for p in iter_image_paths([root])]


def test_explicit_files_and_overlaps_are_listed_once(tmp_path: Path) -> None:
    photo = _touch(tmp_path / "p" / "one.jpg")
    notes = _touch(tmp_path / "notes.txt")
    found = list(iter_image_paths([tmp_path / "p", photo, notes]))
    assert found == [photo, notes]  # a file named explicitly is taken whatever its extension


def test_missing_path_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file or folder"):
        list(iter_image_paths([tmp_path / "nope"]))


def test_image_id_is_content_hash(tmp_path: Path) -> None:
    a = _touch(tmp_path / "a.jpg", b"same bytes")
    b = _touch(tmp_path / "sub" / "renamed.jpg", b"same bytes")
    c = _touch(tmp_path / "c.jpg", b"other bytes")
    assert image_id(a) == image_id(b) != image_id(c)
    assert len(image_id(a)) == 32


def test_scan_sample_data(sample_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "gt.parquet"
    summary = run_scan([sample_data], out, workers=2)
    table = pq.read_table(out).to_pylist()
    assert summary.total == len(table) == 28
    assert summary.failed == 2  # as predict counts them (issue 28 item 6)
    by_name = {Path(r["path"]).name: r for r in table}
    assert by_name["truncated.jpg"]["error"].endswith("truncated JPEG (no end-of-image marker)")
    assert by_name["not_a_photo.png"]["status"] == "error"
    assert "not a readable image" in by_name["not_a_photo.png"]["error"]
    sydney = by_name["sydney.jpg"]
    assert sydney["gt_lat"] == pytest.approx(-33.856784, abs=1e-5)
    assert sydney["gt_lon"] == pytest.approx(151.215297, abs=1e-5)
    assert sydney["gt_source"] == "exif"
    assert by_name["tokyo.heic"]["gt_lat"] == pytest.approx(35.658581, abs=1e-5)
    assert by_name["rome.webp"]["gt_lat"] == pytest.approx(41.89021, abs=1e-5)  # spec WebP EXIF chunk
    assert by_name["quito.tiff"]["gt_lon"] == pytest.approx(-78.467834, abs=1e-5)
    assert by_name["no_gps_1.jpg"]["gt_lat"] is None
    assert (sydney["gt_country"], by_name["tokyo.heic"]["gt_country"], by_name["rio.jpg"]["gt_country"]) == (
        "AU",
        "JP",
        "BR",
    )
    assert all(r["image_id"] for r in table if r["status"] == "ok")


def test_scan_is_deterministic_across_worker_counts(sample_data: Path, tmp_path: Path) -> None:
    cols = ["image_id", "path", "status", "gt_lat", "gt_lon", "taken_at"]
    run_scan([sample_data], tmp_path / "one.parquet", workers=1)
    run_scan([sample_data], tmp_path / "two.parquet", workers=2)
    one = pq.read_table(tmp_path / "one.parquet", columns=cols)
    two = pq.read_table(tmp_path / "two.parquet", columns=cols)
    assert one.equals(two)


def test_cli_scan_exif_samples_finds_the_listed_gps(tmp_path: Path) -> None:
    folder = fixture_dir("exif-samples")
    out = tmp_path / "x.parquet"
    proc = subprocess.run(
        [*GEOTAG, "scan", str(folder), "--out", str(out)], capture_output=True, text=True, cwd=REPO
    )
    # the "corrupted" files there have broken metadata, not broken pixels: every image reads
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    rows = {Path(r["path"]).relative_to(folder).as_posix(): r for r in pq.read_table(out).to_pylist()}
    images = [p for p in iter_image_paths([folder])]
    assert len(rows) == len(images)
    expected = {
        "jpg/gps/DSCN0010.jpg": (43.47, 11.88),
        "jpg/hdr/iphone_hdr_NO.jpg": (40.44, -3.72),
        "jpg/mobile/HMD_Nokia_8.3_5G.jpg": (60.15, 24.91),
        "jpg/Kodak_CX7530.jpg": (-0.37, 36.06),
        "jpg/tests/67-0_length_string.jpg": (51.03, 7.59),
        "heic/IMG_5195.HEIC": (39.06, -94.30),
    }
    for name, (lat, lon) in expected.items():
        assert rows[name]["gt_lat"] == pytest.approx(lat, abs=0.02), name
        assert rows[name]["gt_lon"] == pytest.approx(lon, abs=0.02), name
    gps_files = [n for n, r in rows.items() if r["gt_lat"] is not None]
    assert len([n for n in gps_files if n.startswith("jpg/gps/")]) == 9
    assert len(gps_files) == 18  # as the folder's README lists
    assert rows["jpg/corrupted.jpg"]["status"] == "ok"


@pytest.mark.parametrize(
    "args, message",
    [
        (["scan", "/definitely/not/here", "--out", "{tmp}/x.parquet"], "no such file or folder"),
        (["scan", "{repo}", "--out", "/definitely/not/here/x.parquet"], "does not exist"),
        (["scan", "{repo}", "--out", "{tmp}"], "is a directory"),
    ],
)
def test_cli_scan_bad_input_is_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    args = [a.format(tmp=tmp_path, repo=REPO / "docs") for a in args]
    proc = subprocess.run([*GEOTAG, *args], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_unreadable_file_is_an_error_row(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads everything")
    photo = tmp_path / "locked.jpg"
    shutil.copy(fixture_dir("geotagged") / "goexif-beijing.jpg", photo)
    photo.chmod(0)
    summary = run_scan([tmp_path], tmp_path / "o.parquet", workers=1)
    assert summary.failed == 1


def test_an_empty_scan_imports_no_decoder(tmp_path: Path) -> None:
    """Start-up (issue 20: under 0.5 s): scanning an empty folder through the CLI imports neither the
    decoders nor the manifest reader, pyogrio, pandas or a process pool; they come with the first file."""
    (tmp_path / "empty").mkdir()
    code = (
        "import sys\n"
        "from geotag.cli import app\n"
        f"args = ['scan', {str(tmp_path / 'empty')!r}, '--out', {str(tmp_path / 'o.parquet')!r}]\n"
        "try:\n    app(args)\nexcept SystemExit:\n    pass\n"
        "heavy = ('PIL', 'pillow_heif', 'exifread', 'geotag.io.truth', 'pyogrio', 'pandas', 'torch',\n"
        "         'concurrent.futures.process')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    assert pq.read_table(tmp_path / "o.parquet").num_rows == 0


def test_files_the_user_excluded_are_not_counted_as_unreadable_types(tmp_path: Path) -> None:
    from collections import Counter

    from geotag.io.scan import PathFilter, WalkReport

    for name in ("a.jpg", "b.png", "notes.md", "track.gpx", "clip.mov", "sub/c.csv"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    plain = WalkReport()
    assert [p.name for p in iter_image_paths([tmp_path], report=plain)] == ["a.jpg", "b.png"]
    assert plain.not_read == Counter({".md": 1, ".gpx": 1, ".mov": 1, ".csv": 1})
    only = PathFilter.from_options(None, ["*.md", "*.gpx", "sub/*"], "jpg")
    narrowed = WalkReport()
    assert [p.name for p in iter_image_paths([tmp_path], only, narrowed)] == ["a.jpg"]
    # .md, .gpx and sub/ are excluded and the .png left out by --ext: the user's choice, not counted
    assert narrowed.not_read == Counter({".mov": 1})
