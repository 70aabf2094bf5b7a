"""The moving parts that keep the accelerator busy during `geotag predict` (issue 7).

- `Stager`: a thread between the DataLoader and the model. It takes small chunks from the workers
  (a chunk of 32 reaches the GPU long before a whole batch of 256 would be decoded by one worker), moves
  their pixels to the device, decodes the files the workers left for nvJPEG, and joins the chunks into
  model batches of exactly `batch_size` images, in work-list order. On CUDA it works on a side stream,
  so copies and nvJPEG overlap the model running the previous batch.
- `RowSink`: a writer thread that turns finished rows into Parquet (country lookup, manifest truth,
  part files), so the main thread goes straight back to the next batch.
- `compile_model`: `--compile`, torch.compile on the modules a model names as its heavy ones.

Both threads hand exceptions to the main thread, and both are bounded queues, so memory stays flat.
"""

from __future__ import annotations

import gc
import logging
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch

from geotag.io.decode import decode_for_model
from geotag.io.gpu_decode import decode_jpegs, read_bytes
from geotag.models.base import GeoModel, Preprocess

log = logging.getLogger(__name__)

LOADER_CHUNK = 32
"""Images a DataLoader worker decodes per hand-off; model batches are assembled from chunks."""
QUEUE_DEPTH = 2  # staged batches waiting for the model
SINK_DEPTH = 8  # finished batches waiting for the writer
READ_THREADS = 4  # file reads for nvJPEG in parallel (they release the GIL); workers do not ship bytes
_readers: ThreadPoolExecutor | None = None


def _read_all(paths: list[str]) -> list[torch.Tensor | None]:
    """The files' bytes (None where unreadable or no longer ending in FFD9), read by a small pool."""
    global _readers
    if len(paths) <= 1:
        return [read_bytes(p) for p in paths]
    if _readers is None:
        _readers = ThreadPoolExecutor(READ_THREADS, thread_name_prefix="geotag-read")
    return list(_readers.map(read_bytes, paths))


@dataclass
class StagedBatch:
    """Rows in work-list order and the pixels of those that decoded, on the device.

    `index` is strictly increasing: `pixels[j]` is the image of `rows[index[j]]`.
    """

    rows: list[dict[str, Any]]
    pixels: torch.Tensor | None = None
    index: list[int] = field(default_factory=list)
    skipped: int = 0
    event: Any = None  # a CUDA event the consumer's stream must wait for

    @property
    def images(self) -> int:
        return len(self.index)


def _decode_error(exc: BaseException) -> str:
    text = (str(exc).strip() or type(exc).__name__).splitlines()[0][:300]
    return f"cannot decode image: {text}"


def stage_chunk(chunk: dict[str, Any], pre: Preprocess, device: torch.device) -> StagedBatch:
    """One collated chunk -> a StagedBatch on `device`: CPU-decoded pixels copied (non-blocking from
    pinned memory), the files left for the GPU decoded there; a file nvJPEG rejects falls back to Pillow."""
    rows: list[dict[str, Any]] = chunk["rows"]
    parts: list[torch.Tensor] = []
    index: list[int] = []
    if chunk["pixels"] is not None:
        parts.append(chunk["pixels"].to(device, non_blocking=True))
        index.extend(chunk["index"])
    gpu_index: list[int] = chunk.get("gpu_index") or []
    if gpu_index:
        datas, kept, orientations = [], [], []
        read = _read_all([rows[i]["path"] for i in gpu_index])
        for i, orientation, data in zip(gpu_index, chunk["gpu_orientation"], read, strict=True):
            if data is None:  # changed or unreadable since the worker checked it: the CPU path decides
                parts_i, index_i = _cpu_fallback(rows, [i], pre, device)
                parts += parts_i
                index += index_i
                continue
            datas.append(data)
            kept.append(i)
            orientations.append(orientation)
        results = decode_jpegs(datas, orientations, pre.input_size, pre.interpolation, device)
        failed = []
        for i, res in zip(kept, results, strict=True):
            if isinstance(res, Exception):
                failed.append(i)
            else:
                parts.append(res[None])
                index.append(i)
        if failed:
            log.info("nvJPEG rejected %d file(s); decoding them with Pillow", len(failed))
            parts_i, index_i = _cpu_fallback(rows, failed, pre, device)
            parts += parts_i
            index += index_i
    if not parts:
        return StagedBatch(rows, None, [], chunk["skipped"])
    pixels = torch.cat(parts) if len(parts) > 1 else parts[0]
    if any(a > b for a, b in zip(index, index[1:], strict=False)):
        order = sorted(range(len(index)), key=index.__getitem__)
        pixels = pixels[torch.tensor(order, device=pixels.device)]
        index = [index[k] for k in order]
    return StagedBatch(rows, pixels, index, chunk["skipped"])


def _cpu_fallback(
    rows: list[dict[str, Any]], which: list[int], pre: Preprocess, device: torch.device
) -> tuple[list[torch.Tensor], list[int]]:
    parts, index = [], []
    for i in which:
        try:
            pixels = decode_for_model(rows[i]["path"], pre.input_size, pre.interpolation)
        except Exception as exc:  # noqa: BLE001 - any decoder failure is a per-file error row
            rows[i].update(status="error", error=_decode_error(exc))
            continue
        parts.append(pixels[None].to(device))
        index.append(i)
    return parts, index


def merge(batches: list[StagedBatch]) -> StagedBatch:
    """Concatenate staged batches (rows, then pixels) keeping the index invariant."""
    if len(batches) == 1:
        return batches[0]
    rows: list[dict[str, Any]] = []
    index: list[int] = []
    parts = []
    skipped = 0
    for b in batches:
        index.extend(i + len(rows) for i in b.index)
        rows.extend(b.rows)
        skipped += b.skipped
        if b.pixels is not None:
            parts.append(b.pixels)
    pixels = (torch.cat(parts) if len(parts) > 1 else parts[0]) if parts else None
    return StagedBatch(rows, pixels, index, skipped)


def split(batch: StagedBatch, n: int) -> tuple[StagedBatch, StagedBatch]:
    """The first `n` images with their rows (and the image-less rows before the cut), and the rest."""
    cut = batch.index[n]
    assert batch.pixels is not None
    head = StagedBatch(batch.rows[:cut], batch.pixels[:n], batch.index[:n], batch.skipped)
    tail = StagedBatch(batch.rows[cut:], batch.pixels[n:], [i - cut for i in batch.index[n:]], 0)
    return head, tail


def assemble(chunks: Iterable[StagedBatch], batch_size: int) -> Iterator[StagedBatch]:
    """Model batches of exactly `batch_size` images (the last may be smaller), rows in order."""
    pending: list[StagedBatch] = []
    images = 0
    for chunk in chunks:
        pending.append(chunk)
        images += chunk.images
        while images >= batch_size:
            merged = merge(pending)
            if merged.images == batch_size:
                yield merged
                pending, images = [], 0
            else:
                head, tail = split(merged, batch_size)
                yield head
                pending, images = [tail], tail.images
    if pending:
        merged = merge(pending)
        if merged.rows or merged.skipped:
            yield merged


class _Stop(Exception):
    """Internal: the consumer went away."""


class Stager:
    """Iterate model-ready StagedBatches produced by a background thread from DataLoader chunks.

    Use as a context manager; leaving it early (an exception in the consumer) stops the thread.
    """

    def __init__(
        self,
        chunks: Iterable[dict[str, Any]],
        pre: Preprocess,
        device: torch.device,
        batch_size: int,
        *,
        depth: int = QUEUE_DEPTH,
    ) -> None:
        self.chunks, self.pre, self.device, self.batch_size = chunks, pre, device, batch_size
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="geotag-stager", daemon=True)
        self._stream = torch.cuda.Stream(device) if device.type == "cuda" else None

    def _put(self, item: Any) -> None:
        while True:
            if self._stop.is_set():
                raise _Stop
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def _staged(self) -> Iterator[StagedBatch]:
        for chunk in self.chunks:
            if self._stop.is_set():
                raise _Stop
            yield stage_chunk(chunk, self.pre, self.device)

    def _run(self) -> None:
        ctx = torch.cuda.stream(self._stream) if self._stream is not None else nullcontext()
        try:
            with torch.inference_mode(), ctx:
                for batch in assemble(self._staged(), self.batch_size):
                    if self._stream is not None:
                        batch.event = torch.cuda.Event()
                        batch.event.record(self._stream)
                    self._put(batch)
            self._put(None)
        except _Stop:
            return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            try:
                self._put(exc)
            except _Stop:
                return

    def __enter__(self) -> Stager:
        # DataLoader workers fork when the thread starts iterating; with the parent's objects frozen,
        # the workers' garbage collector does not touch (and so copy-on-write) every page of the
        # parent's heap: measured 100-140 MB less private memory per worker (docs/performance.md)
        gc.freeze()
        self._thread.start()
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self._stop.set()
        # after an error (Ctrl-C included) do not wait long for a worker that may never answer: the
        # thread only feeds the queue, it writes nothing, and it is a daemon
        self._thread.join(timeout=None if exc_type is None else 30)
        gc.unfreeze()

    def __iter__(self) -> Iterator[StagedBatch]:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            if item.event is not None:
                stream = torch.cuda.current_stream(self.device)
                stream.wait_event(item.event)
                if item.pixels is not None:
                    item.pixels.record_stream(stream)  # freed only after the model's kernels read it
            yield item


class RowSink:
    """A writer thread: `put(rows)` queues a finished batch, `write(rows)` runs on the thread.

    A failure in `write` is raised in the main thread at the next `put` or at exit; on exit (also
    after an exception in the main thread) the rows already queued are still written, because they are
    complete rows and keeping them is what makes --resume cheap.
    """

    def __init__(self, write: Callable[[list[dict[str, Any]]], None], *, depth: int = SINK_DEPTH) -> None:
        self._write = write
        self._queue: queue.Queue[list[dict[str, Any]] | None] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="geotag-writer", daemon=True)

    def _run(self) -> None:
        while True:
            rows = self._queue.get()
            if rows is None:
                return
            if self._error is None:
                try:
                    self._write(rows)
                except BaseException as exc:  # noqa: BLE001 - raised in the main thread
                    self._error = exc

    def put(self, rows: list[dict[str, Any]]) -> None:
        self.raise_error()
        self._queue.put(rows)

    def raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def __enter__(self) -> RowSink:
        self._thread.start()
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self._queue.put(None)
        self._thread.join()
        if exc_type is None:
            self.raise_error()


def compile_model(model: GeoModel) -> int:
    """`--compile`: torch.compile (static shapes; the engine pads the last batch) on the modules the
    model names in `compile_targets()`; returns how many. Idempotent."""
    targets = model.compile_targets() if hasattr(model, "compile_targets") else []
    if not targets:
        log.warning("model %r names no modules to compile; --compile has no effect", model.name)
    for module in targets:
        if not getattr(module, "_geotag_compiled", False):
            module.compile(dynamic=False)
            module._geotag_compiled = True  # type: ignore[assignment]
    return len(targets)
