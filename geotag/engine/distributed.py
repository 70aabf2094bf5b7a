"""Data-parallel training across processes started by torchrun (or SLURM / Kubernetes launchers that set
the same variables, or Ray Train, which sets up the group itself: engine/ray_train.py): one process per
device, gloo on CPU, NCCL on CUDA.

`--batch-size` stays the GLOBAL micro-batch: each of the W ranks takes its own contiguous 1/W of every
micro-batch of the epoch's permutation, and gradients are averaged over the ranks before each optimizer
step. Mean over ranks of per-rank means of equal-sized slices = the mean over the whole batch, so W
processes follow the 1-process run with the same --batch-size (to float summation order), the LR schedule
and step count do not depend on W, and a checkpoint can be resumed at another world size (the data order
is the same; only the float summation order changes, so that resume is close, not bit-exact).

The gradient all-reduce runs once per optimizer step over the flattened gradients (what DDP does under
`no_sync` with accumulation, without overlapping communication with the backward pass); it works for
every TrainTask, whichever model methods its loss calls. Rank 0 alone writes checkpoints, metrics and
logs and runs validation; the others wait at a barrier.
"""

from __future__ import annotations

import datetime
import itertools
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
import xxhash
from torch.utils.data import Sampler

from geotag.errors import InputError


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Whether this process writes files (rank 0)."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.size > 1


def env_world() -> World:
    """The world torchrun describes in RANK / WORLD_SIZE / LOCAL_RANK (a single process without them),
    or that of a process group already set up (Ray Train joins its workers before the loop starts)."""
    if dist.is_available() and dist.is_initialized():
        rank, size = dist.get_rank(), dist.get_world_size()
        return World(rank=rank, size=size, local_rank=int(os.environ.get("LOCAL_RANK", str(rank))))
    try:
        size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError as exc:
        raise InputError(f"RANK / WORLD_SIZE / LOCAL_RANK must be integers: {exc}") from None
    if size < 1 or not 0 <= rank < size:
        raise InputError(f"RANK {rank} is outside WORLD_SIZE {size}")
    return World(rank=rank, size=size, local_rank=local)


def init(world: World, device: torch.device) -> torch.device:
    """Join the process group (once) and return this rank's device (cuda:LOCAL_RANK on CUDA)."""
    if not world.active:
        return device
    if device.type == "cuda":
        device = torch.device("cuda", world.local_rank % max(1, torch.cuda.device_count()))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        timeout = datetime.timedelta(minutes=int(os.environ.get("GEOTAG_DIST_TIMEOUT_MIN", "60")))
        dist.init_process_group(backend, rank=world.rank, world_size=world.size, timeout=timeout)
    return device


def shutdown(world: World) -> None:
    if world.active and dist.is_initialized():
        dist.destroy_process_group()


def check_batch(world: World, batch_size: int) -> int:
    """This rank's share of the global micro-batch."""
    if batch_size % world.size:
        raise InputError(
            f"--batch-size {batch_size} (the global micro-batch) is not divisible by the {world.size} "
            "processes: choose a multiple"
        )
    return batch_size // world.size


class RankSampler(Sampler[int]):
    """This rank's slice of every global micro-batch of `order` (a deterministic split: the same order,
    world size and rank give the same indices; DataLoader workers then split the rank's batches)."""

    def __init__(self, order: Sequence[int], batch_size: int, world: World) -> None:
        local = batch_size // world.size
        self.indices = [
            i
            for start in range(0, len(order), batch_size)
            for i in order[start + world.rank * local : start + (world.rank + 1) * local]
        ]

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)


def stream_epoch(
    groups: Sequence[Sequence[int]],
    world: World,
    *,
    seed: int,
    epoch: int,
    workers: int,
    local_batch: int,
    batches: int,
    buffer: int,
) -> list[int]:
    """This rank's `batches` micro-batches of an epoch with `train --stream` (samples grouped by shard,
    geotag.io.shards.stream_order): batch b comes from reader b % W of the rank's W = max(1, workers)
    readers, the order in which the DataLoader hands batches to its workers, so each worker reads its
    own shards. A reader whose shards hold fewer samples than its batches need starts a new pass over
    them (as DistributedSampler pads by repeating); one with more leaves the rest for this epoch."""
    from geotag.io.shards import stream_order

    readers = max(1, workers)
    taken: list[list[int]] = []
    for w in range(readers):
        need = len(range(w, batches, readers)) * local_batch
        got: list[int] = []
        run = 0
        while len(got) < need:
            pass_seed = seed if run == 0 else xxhash.xxh64_intdigest(f"pass:{seed}:{run}".encode())
            stream = stream_order(
                groups,
                seed=pass_seed,
                epoch=epoch,
                stream=world.rank * readers + w,
                streams=world.size * readers,
                buffer=buffer,
            )
            before = len(got)
            got.extend(itertools.islice(stream, need - len(got)))
            if len(got) == before:
                raise InputError("--stream: a reader's shards hold no training sample (use fewer workers)")
            run += 1
        taken.append(got)
    return [
        i
        for b in range(batches)
        for i in taken[b % readers][(b // readers) * local_batch : (b // readers + 1) * local_batch]
    ]


def broadcast_parameters(world: World, module: torch.nn.Module) -> None:
    """Every rank starts from rank 0's weights (and buffers)."""
    if not world.active:
        return
    with torch.no_grad():
        for t in [*module.parameters(), *module.buffers()]:
            dist.broadcast(t.data, src=0)


def average_gradients(world: World, params: list[torch.nn.Parameter]) -> None:
    """Average the gradients over the ranks in one flat all-reduce. A parameter that has a gradient on
    some rank only counts as zeros on the others (every rank calls the collective with the same shapes);
    one that has none anywhere keeps none, as in a single process."""
    if not world.active or not params:
        return
    device = params[0].device
    has = torch.tensor([p.grad is not None for p in params], dtype=torch.int64, device=device)
    dist.all_reduce(has, op=dist.ReduceOp.MAX)
    used = [p for p, h in zip(params, has.tolist(), strict=True) if h]
    if not used:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in used]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= world.size
    offset = 0
    for p, g in zip(used, grads, strict=True):
        n = g.numel()
        p.grad = flat[offset : offset + n].view_as(p).clone()
        offset += n


def mean_scalar(world: World, value: float, device: torch.device) -> float:
    """The mean of a logged scalar (loss) over the ranks."""
    if not world.active:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return float(t.item()) / world.size


def barrier(world: World) -> None:
    if world.active:
        dist.barrier()


def any_flag(world: World, flag: bool, device: torch.device) -> bool:
    """True on every rank when any rank raised the flag (e.g. a diverged loss): they stop together."""
    if not world.active:
        return flag
    t = torch.tensor([1 if flag else 0], dtype=torch.int64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())
