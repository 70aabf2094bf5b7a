"""WebDataset shards (io/shards.py, engine/shards.py): `geotag shards` packs, training reads brace
patterns of img2dataset-style tars, and training on shards equals training on the loose files."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from geotag.engine.shards import pack, samples_from_shards
from geotag.engine.train import run_train
from geotag.engine.train_data import load_samples
from geotag.errors import InputError
from geotag.io.shards import open_ref

from conftest import REPO, write_tagged_photos

sys.path.insert(0, str(Path(__file__).parent))
from ddp_worker import config, tiny_task  # noqa: E402


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tagged_photos(tmp_path_factory.mktemp("photos"))


def test_pack_and_read_back(photos: Path, tmp_path: Path) -> None:
    written = pack([photos], tmp_path / "shards", shard_size=10).shards
    assert [p.name for p in written] == ["00000.tar", "00001.tar", "00002.tar"]
    with tarfile.open(written[0]) as tar:
        names = tar.getnames()
    assert names[:2] == ["000000000.jpg", "000000000.json"]  # img2dataset's layout
    loose = load_samples([photos])
    shards = load_samples([Path(f"{tmp_path}/shards/{{00000..00002}}.tar")])
    assert shards.image_ids.to_pylist() == loose.image_ids.to_pylist()
    np.testing.assert_array_equal(shards.lat, loose.lat)
    first = open_ref(shards.paths[0].as_py())
    assert first.read() == Path(loose.paths[0].as_py()).read_bytes()  # type: ignore[union-attr]
    with pytest.raises(InputError, match="already exists"):
        pack([photos], tmp_path / "shards", shard_size=10)
    assert not list((tmp_path / "shards").glob(".shard-*"))  # no temporary left behind


def test_img2dataset_shard(photos: Path, tmp_path: Path) -> None:
    """A shard as img2dataset writes it: coordinates in the JSON, a sample without them, a broken JSON."""
    shard = tmp_path / "00000.tar"
    jpg = (photos / "p000.jpg").read_bytes()
    members = {
        "000000000.jpg": jpg,
        "000000000.json": json.dumps({"latitude": 48.85, "longitude": 2.35, "url": "x"}).encode(),
        "000000000.txt": b"caption",
        "000000001.jpg": jpg,
        "000000001.json": json.dumps({"url": "y"}).encode(),
        "000000002.jpg": jpg,
        "000000002.json": b"{not json",
    }
    with tarfile.open(shard, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    s = samples_from_shards(str(shard))
    assert len(s) == 1 and s.lat.tolist() == [48.85] and s.image_ids.to_pylist() == ["00000/000000000"]
    assert "2 sample(s)" in s.notes[0]
    with pytest.raises(InputError, match="shard not found"):
        samples_from_shards(str(tmp_path / "{00000..00001}.tar"))


def test_training_on_shards_equals_loose_files(photos: Path, tmp_path: Path) -> None:
    pack([photos], tmp_path / "shards", shard_size=7)
    cfg = config(photos, tmp_path / "loose", epochs=1, max_steps=3, log_to=())
    a = run_train(cfg, task=tiny_task())
    pattern = Path(f"{tmp_path}/shards/{{00000..00003}}.tar")
    b = run_train(replace(cfg, data=[pattern], out=tmp_path / "sharded"), task=tiny_task())
    x, y = load_file(a.checkpoint / "model.safetensors"), load_file(b.checkpoint / "model.safetensors")
    assert all(torch.equal(x[k], y[k]) for k in x)


def test_cli_shards(photos: Path, tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "geotag",
            "shards",
            str(photos),
            "--out",
            str(tmp_path / "s"),
            "--shard-size",
            "5",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    assert "wrote 5 shard(s)" in proc.stderr and "{00000..00004}.tar" in proc.stderr


def test_osv5m_layout_folders_and_zips(photos: Path, tmp_path: Path) -> None:
    """OSV-5M: train.csv with id / latitude / longitude / country / region / city, images named by id,
    unzipped in sub-folders or still inside the zip archives."""
    import csv
    import zipfile

    from geotag.engine.train_data import TrainDataset
    from geotag.models.base import Preprocess

    root = tmp_path / "images" / "train"
    (root / "00").mkdir(parents=True)
    jpgs = sorted(photos.glob("*.jpg"))
    for i in range(3):
        (root / "00" / f"{100 + i}.jpg").write_bytes(jpgs[i].read_bytes())
    with zipfile.ZipFile(root / "01.zip", "w") as z:
        for i in range(3, 6):
            z.writestr(f"{100 + i}.jpg", jpgs[i].read_bytes())
    manifest = tmp_path / "train.csv"
    with manifest.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "latitude", "longitude", "country", "region", "city"])
        for i in range(7):  # id 106 has no image
            w.writerow([100 + i, 10.0 + i, 20.0 + i, "FR", "IDF", "Paris"])
    s = load_samples([manifest], image_root=root)
    assert s.image_ids.to_pylist() == [str(100 + i) for i in range(6)]
    assert s.lat.tolist() == [10.0 + i for i in range(6)] and s.country.to_pylist() == ["FR"] * 6
    assert "1 row(s)" in s.notes[0]
    assert s.paths[4].as_py().endswith("01.zip::104.jpg")
    data = TrainDataset(s, Preprocess(32, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)), augment=False, seed=0)
    assert data[4]["pixels"] is not None and data[4]["pixels"].shape == (3, 32, 32)
    assert open_ref(s.paths[4].as_py()).read() == jpgs[4].read_bytes()  # type: ignore[union-attr]
