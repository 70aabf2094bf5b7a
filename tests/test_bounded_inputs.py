"""Hostile inputs stay bounded (issue 29, groups 2, 3, 6 and 7): inputs are regular images of bounded
size, small crafted files never take gigabytes, and data never causes an internal error (exit 3)."""

from __future__ import annotations

import io
import json
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


def _write(table: pa.Table, path: Path) -> Path:
    pq.write_table(table, path)
    return path


def _unused() -> None:  # keep json imported for later sections
    json.dumps({})
