"""`train --stream`: webdataset's order over shards (io/shards.stream_order, distributed.stream_epoch):
deterministic per (seed, epoch, rank, worker), each rank and DataLoader worker its own shards, every
sample once per epoch across 2 ranks x 2 workers, and training with it resumes exactly."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch.utils.data import DataLoader, Dataset, get_worker_info

from geotag.engine.distributed import World, stream_epoch
from geotag.engine.shards import pack
from geotag.engine.train import run_train
from geotag.errors import InputError
from geotag.io.shards import shard_groups, shuffle_buffer, stream_order

from conftest import write_tagged_photos

sys.path.insert(0, str(Path(__file__).parent))
from ddp_worker import config, tiny_task  # noqa: E402

SIZES = [5, 7, 6, 6, 4, 8, 6, 6]  # 8 shards of uneven size, 48 samples
GROUPS = [list(range(sum(SIZES[:s]), sum(SIZES[: s + 1]))) for s in range(len(SIZES))]
SHARD_OF = {i: s for s, g in enumerate(GROUPS) for i in g}


def orders(epoch: int, buffer: int = 5, seed: int = 0) -> list[list[int]]:
    return [
        list(stream_order(GROUPS, seed=seed, epoch=epoch, stream=k, streams=4, buffer=buffer))
        for k in range(4)
    ]


def test_streams_cover_every_sample_once_and_are_deterministic() -> None:
    first = orders(0)
    assert sorted(i for o in first for i in o) == list(range(48))  # exactly once, 4 streams together
    assert first == orders(0)  # deterministic
    assert orders(1) != first and orders(0, seed=1) != first  # another epoch / seed, another order
    for o in first:  # each stream its own two shards
        assert len({SHARD_OF[i] for i in o}) == 2
    assert {frozenset(SHARD_OF[i] for i in o) for o in first} != {
        frozenset(SHARD_OF[i] for i in o) for o in orders(1)
    }  # the shard assignment is reshuffled per epoch
    plain = orders(0, buffer=0)
    for o in plain:  # no buffer: each shard read front to back
        assert o == sorted(o, key=lambda i: (o.index(GROUPS[SHARD_OF[i]][0]), i))
    assert first != plain  # the buffer mixes


def test_shuffle_buffer_is_a_permutation() -> None:
    items = list(range(100))
    out = list(shuffle_buffer(items, 10, random.Random(0)))
    assert sorted(out) == items and out != items
    assert max(abs(out.index(i) - i) for i in items[:50]) < 100  # local mixing only
    assert list(shuffle_buffer(items, 0, random.Random(0))) == items


def test_too_few_shards_is_an_input_error() -> None:
    with pytest.raises(InputError, match="own shards"):
        list(stream_order(GROUPS[:3], seed=0, epoch=0, stream=0, streams=4, buffer=0))


def test_epoch_of_two_ranks_and_two_workers() -> None:
    """Even shards: every sample once across the ranks; uneven: equal lengths (padding / dropping)."""
    even = [list(range(6 * s, 6 * s + 6)) for s in range(8)]
    ranks = [
        stream_epoch(even, World(r, 2), seed=0, epoch=0, workers=2, local_batch=3, batches=8, buffer=4)
        for r in range(2)
    ]
    assert sorted(ranks[0] + ranks[1]) == list(range(48))
    uneven = [
        stream_epoch(GROUPS, World(r, 2), seed=0, epoch=3, workers=2, local_batch=3, batches=8, buffer=4)
        for r in range(2)
    ]
    assert [len(u) for u in uneven] == [24, 24]


class _Who(Dataset):
    def __len__(self) -> int:
        return 48

    def __getitem__(self, i: int) -> tuple[int, int]:
        info = get_worker_info()
        return i, info.id if info else -1


def test_each_dataloader_worker_reads_its_own_shards() -> None:
    world = World(1, 2)
    order = stream_epoch(GROUPS, world, seed=0, epoch=0, workers=2, local_batch=3, batches=8, buffer=4)
    mine = [
        {SHARD_OF[i] for i in stream_order(GROUPS, seed=0, epoch=0, stream=2 + w, streams=4, buffer=4)}
        for w in range(2)
    ]
    loader = DataLoader(_Who(), batch_size=3, sampler=order, num_workers=2)
    for index, worker in loader:
        assert len(set(worker.tolist())) == 1
        assert {SHARD_OF[i] for i in index.tolist()} <= mine[int(worker[0])]


def test_shard_groups_need_shards() -> None:
    assert shard_groups(["/s/b.tar#10+5", "/s/a.tar#512+9", "/s/b.tar#0+5"]) == [[1], [2, 0]]
    with pytest.raises(InputError, match="geotag shards"):
        shard_groups(["/photos/x.jpg"])


def test_training_with_stream_resumes_exactly(tmp_path: Path) -> None:
    (tmp_path / "photos").mkdir()
    photos = write_tagged_photos(tmp_path / "photos")
    pack([photos], tmp_path / "shards", shard_size=3)
    data = tmp_path / "shards" / "{00000..00007}.tar"
    torch.set_num_threads(1)
    kw = {"stream": True, "shuffle_buffer": 4}
    full = run_train(config(data, tmp_path / "full", **kw), task=tiny_task())
    assert full.steps == 4 and full.checkpoint is not None
    run_train(config(data, tmp_path / "cut", max_steps=1, **kw), task=tiny_task())
    resumed = run_train(config(data, tmp_path / "cut", resume=True, **kw), task=tiny_task())
    assert resumed.steps == 4 and resumed.checkpoint is not None
    a, b = (
        load_file(full.checkpoint / "model.safetensors"),
        load_file(resumed.checkpoint / "model.safetensors"),
    )
    assert all(torch.equal(a[k], b[k]) for k in a)
    plain = run_train(config(data, tmp_path / "plain"), task=tiny_task())  # the indexed order differs
    c = load_file(plain.checkpoint / "model.safetensors")
    assert any(not torch.equal(a[k], c[k]) for k in a)
