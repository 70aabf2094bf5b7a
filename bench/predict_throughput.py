"""Benchmark `geotag predict` end to end against the `geoclip` package's own predict loop (issue 7).

    .venv/bin/python bench/predict_throughput.py [--count N] [--sizes 4000x3000,1024x768]
        [--models geoclip,translocator,geodecoder] [--device auto] [--batch-size B] [--workers W]
        [--gpu-decode off|on|both] [--gpu-decode-share 0.6] [--compile] [--ref-images N] [--no-reference]
        [--tiny] [--dir FOLDER] [--json FILE]

For each photo size it makes a folder of realistic JPEGs (camera-like: 1/f texture with sensor grain,
quality 95, 4:2:0, EXIF with GPS, about 4 MB at 12 MP like a phone photo; each copy unique) and measures:

- decode: Pillow draft-mode decoding on one core; the whole input pipeline (DataLoader workers: hash,
  EXIF, decode; the stager: device copies, nvJPEG) with no model; nvJPEG alone on CUDA;
- per model (random weights, the registry's architectures): model-only images/s on pre-decoded
  tensors (normalise + predict, top-k and confidence included) and its share of the measured GEMM peak
  (FLOPs counted with torch.utils.flop_counter), then `run_predict` (what `geotag predict` runs:
  listing, workers, stager, model, writer thread, part files, final merge) end to end, after a warm-up
  run; utilisation (GPU on CUDA, all cores on CPU), peak GPU memory (allocator) and peak host memory
  (RSS of the process plus the private memory of its DataLoader workers);
- the geoclip package's GeoCLIP.predict loop (from_pretrained=False, clip_pretrained=False: the same
  ViT-L/14 architecture with random weights, fp32, batch 1, its own preprocessing, its gallery encoded
  per image as it does) over the first --ref-images of the same photos, so the ratio is side by side.

`--tiny` swaps in tiny towers on both sides and a 500-point gallery so the whole run takes seconds (CI).
Prints a table and a one-line summary. Runs on CPU (small counts) and on the GPU machine.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from geotag.config import PredictConfig
from geotag.engine.pipeline import LOADER_CHUNK, Stager
from geotag.engine.predict import (
    PhotoDataset,
    auto_batch_size,
    auto_workers,
    load_model,
    make_loader,
    resolve_device,
    run_model,
    run_predict,
)
from geotag.io import gpu_decode
from geotag.io.decode import decode_for_model
from geotag.io.parts import PartStore
from geotag.io.scan import iter_records
from geotag.models.base import GeoModel
from geotag.sample_data import Place, make_exif

BASE_IMAGES = 4  # distinct textures per size; copies differ by EXIF and a comment (unique hashes)
TINY_GALLERY = 500
TARGETS = {  # issue 7, on an H100: images/s end to end
    ("geoclip", "4000x3000"): 600,
    ("geoclip", "1024x768"): 1500,
    ("translocator", "1024x768"): 2500,
}


# ---------------------------------------------------------------------------------------------------
# Photos


def texture(w: int, h: int, seed: int, grain: int = 6) -> Image.Image:
    """A photo-like image: 1/f multi-octave colour noise at 1/4 size, upscaled, plus per-pixel grain;
    at quality 95 it compresses like a phone photo (about 4 MB at 12 MP), so entropy decoding costs
    what it costs on real photos."""
    rng = np.random.default_rng(seed)
    lw, lh = max(8, w // 4), max(8, h // 4)
    acc = np.zeros((lh, lw, 3), np.float32)
    k = 0
    while (lw >> k) >= 4 and (lh >> k) >= 4:
        noise = rng.standard_normal((max(2, lh >> k), max(2, lw >> k), 3), np.float32)
        up = [
            Image.fromarray(noise[..., c], "F").resize((lw, lh), Image.Resampling.BICUBIC) for c in range(3)
        ]
        acc += np.stack([np.asarray(u) for u in up], -1) * (1.6**k)
        k += 1
    acc = (acc - acc.mean()) / (acc.std() + 1e-6) * 50 + 120
    small = Image.fromarray(np.clip(acc, 0, 255).astype(np.uint8), "RGB")
    big = np.asarray(small.resize((w, h), Image.Resampling.BICUBIC)).astype(np.int16)
    big += rng.integers(-grain, grain + 1, size=(h, w, 1), dtype=np.int16)
    return Image.fromarray(np.clip(big, 0, 255).astype(np.uint8), "RGB")


def make_photos(folder: Path, count: int, size: tuple[int, int], seed: int = 0) -> list[Path]:
    """`count` unique camera-like JPEGs under `folder` (reused when already there)."""
    done = folder / ".complete"
    if done.exists() and done.read_text() == f"{count} {size} {seed}":
        return sorted(folder.rglob("*.jpg"))
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    bases = []
    for b in range(min(BASE_IMAGES, count)):
        buf = io.BytesIO()
        texture(*size, seed=seed * 100 + b).save(buf, "JPEG", quality=95)
        bases.append(buf.getvalue())
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        lat = float(np.degrees(np.arcsin(rng.uniform(-0.95, 0.95))))
        lon = float(rng.uniform(-180, 180))
        exif = make_exif(Place(f"p{i}", lat, lon, "x.jpg"), datetime(2024, 5, 1, 12, i % 60)).tobytes()
        app1 = b"\xff\xe1" + (len(exif) + 2).to_bytes(2, "big") + exif
        comment = f"geotag bench copy {i}".encode()
        com = b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment
        base = bases[i % len(bases)]
        path = folder / f"{i // 1000:03d}" / f"IMG_{i:06d}.jpg"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(base[:2] + app1 + com + base[2:])
        paths.append(path)
    done.write_text(f"{count} {size} {seed}")
    return paths


# ---------------------------------------------------------------------------------------------------
# Measuring


def _tree_pids(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def host_memory_bytes(root: int | None = None) -> int:
    """Host memory of a process tree: the root's RSS plus the private pages (USS) of its descendants
    (forked DataLoader workers share the root's pages). Unlike PSS, this does not drop when other
    people's processes on a shared machine map the same libraries."""
    root = root or os.getpid()
    total = 0
    for pid in _tree_pids(root):
        fields = _smaps_rollup(pid)
        total += (
            fields.get("Rss", 0)
            if pid == root
            else fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)
        )
    return total


def _smaps_rollup(pid: int) -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                parts = line.split()
                if len(parts) == 3 and parts[2] == "kB":
                    out[parts[0].rstrip(":")] = int(parts[1]) * 1024
    except OSError:
        pass
    return out


class GpuUtil:
    """GPU utilisation samples from NVML (nvidia-ml-py) or `nvidia-smi -lms`; empty without either."""

    def __init__(self, index: int) -> None:
        self.samples: list[float] = []
        self._nvml: Any = None
        self._proc: subprocess.Popen[str] | None = None
        try:
            import pynvml

            pynvml.nvmlInit()
            self._nvml = (pynvml, pynvml.nvmlDeviceGetHandleByIndex(index))
        except Exception:  # noqa: BLE001 - fall back to nvidia-smi
            if shutil.which("nvidia-smi"):
                cmd = ["nvidia-smi", "-i", str(index), "--query-gpu=utilization.gpu"]
                cmd += ["--format=csv,noheader,nounits", "-lms", "200"]
                self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
                threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            with contextlib.suppress(ValueError):
                self.samples.append(float(line.strip()))

    def sample(self) -> None:
        if self._nvml is not None:
            pynvml, handle = self._nvml
            self.samples.append(float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu))

    def close(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait()


@dataclass
class Measure:
    """Wall time, utilisation and peak memory of one phase (sampled every 0.5 s, 0.2 s on CUDA)."""

    device: torch.device
    seconds: float = 0.0
    util: float | None = None  # % of the GPU, or % of all CPU cores
    peak_host: int = 0
    peak_gpu: int | None = None
    _stop: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> Measure:
        self._gpu = GpuUtil(self.device.index or 0) if self.device.type == "cuda" else None
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._cpu0, self._t0 = sum(os.times()[:4]), time.perf_counter()
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_host = max(self.peak_host, host_memory_bytes())
            if self._gpu is not None:
                self._gpu.sample()
            self._stop.wait(0.5 if self._gpu is None else 0.2)

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.seconds = time.perf_counter() - self._t0
        cpu = sum(os.times()[:4]) - self._cpu0
        self._stop.set()
        self._thread.join()
        self.peak_host = max(self.peak_host, host_memory_bytes())
        if self._gpu is not None:
            self._gpu.close()
            self.util = float(np.mean(self._gpu.samples)) if self._gpu.samples else None
            self.peak_gpu = torch.cuda.max_memory_allocated(self.device)
        else:
            self.util = 100.0 * cpu / max(self.seconds, 1e-9) / (os.cpu_count() or 1)


def gemm_peak_flops(device: torch.device, small: bool = False) -> tuple[float, str]:
    """Measured dense matmul FLOP/s: bf16 8192^3 on CUDA, float32 1024^3 on CPU (the arithmetic limit
    that model-only throughput is compared with)."""
    if device.type == "cuda":
        n, dtype, reps = 8192, torch.bfloat16, 10
    else:
        n, dtype, reps = 2048, torch.float32, 3
    if small:  # --tiny: seconds matter more than the peak's precision
        n, reps = 512, 3
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    best = math.inf
    for _ in range(5):  # best of 5: a shared machine's load only ever slows a trial down
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(reps):
            a @ b
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 * reps / best, f"{str(dtype).split('.')[-1]} {n}^3 GEMM"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def flops_per_image(model: GeoModel, pixels: torch.Tensor, device: torch.device, amp: bool) -> float:
    """FLOPs of one image through run_model (matmuls, convolutions, attention), by torch's counter."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        run_model(model, pixels[:1], device, 5, amp)
    return float(counter.get_total_flops())


# ---------------------------------------------------------------------------------------------------
# Models


@dataclass
class Row:
    size: str
    stage: str
    images_per_s: float | None
    util: float | None = None
    peak_gpu_gib: float | None = None
    peak_host_gib: float | None = None
    note: str = ""
    flops: float | None = None  # per image, for the share of the GEMM peak (filled in at print time)


def _gib(n: int | None) -> float | None:
    return None if n is None else n / 2**30


def tiny_clip_config() -> Any:
    from geotag.models.clip_convert import ClipVisionConfig

    return ClipVisionConfig(width=64, layers=2, heads=2, mlp_dim=128, patch_size=32, image_size=224)


def small_gallery(folder: Path) -> Path:
    path = folder / "gallery.csv"
    gen = torch.Generator().manual_seed(0)
    lat = torch.rad2deg(torch.asin(torch.rand(TINY_GALLERY, generator=gen) * 2 - 1))
    lon = torch.rand(TINY_GALLERY, generator=gen) * 360 - 180
    lines = ["lat,lon", *(f"{a:.6f},{b:.6f}" for a, b in zip(lat.tolist(), lon.tolist(), strict=True))]
    path.write_text("\n".join(lines) + "\n")
    return path


def build_geoclip(cfg: PredictConfig, device: torch.device, tiny: bool) -> GeoModel:
    """Through the registry (as `geotag predict --untrained-backbone` builds it); tiny: a tiny tower."""
    if not tiny:
        return load_model(cfg, device)
    from geotag.models.registry import build_geoclip as build

    torch.manual_seed(0)
    model = build(vit=tiny_clip_config(), allow_untrained=True, gallery=cfg.gallery)
    model.to(device).eval()
    with torch.inference_mode():
        model.prepare()
    return model


def build_translocator(cfg: PredictConfig, device: torch.device, tiny: bool) -> GeoModel:
    """Dual ViT-B/16 (timm, random) with a random SegFormer-b0 segmenter at 512 px over cells built
    from the 100K GeoCLIP gallery coordinates (about MP-16's cell counts); tiny: small towers."""
    import transformers

    from geotag.models.segmentation import SegFormerProvider
    from geotag.models.translocator import BackboneConfig
    from geotag.models.translocator import build_translocator as build

    torch.manual_seed(0)
    cells = bench_cells()
    if tiny:
        seg_cfg = transformers.SegformerConfig(
            num_labels=150,
            depths=[1, 1, 1, 1],
            sr_ratios=[8, 4, 2, 1],
            hidden_sizes=[8, 16, 16, 16],
            num_attention_heads=[1, 1, 1, 1],
            decoder_hidden_size=16,
        )
        seg_size, backbone = 64, BackboneConfig(overrides={"embed_dim": 32, "depth": 2, "num_heads": 2})
        img_size = 64
    else:
        seg_cfg, seg_size, backbone = transformers.SegformerConfig(num_labels=150), 512, BackboneConfig()
        img_size = 224
    segmenter = SegFormerProvider(
        transformers.SegformerForSemanticSegmentation(seg_cfg).eval(), size=seg_size
    )
    model = build(cells, backbone=backbone, img_size=img_size, allow_untrained=True, segmenter=segmenter)
    model.to(device).eval()
    with torch.inference_mode():
        model.prepare()
    return model


def build_geodecoder(cfg: PredictConfig, device: torch.device, tiny: bool) -> GeoModel:
    """GeoDecoder's default (paper) configuration, CLIP ViT-L/14 encoder, random, over the bench cells."""
    from geotag.models.geodecoder import build_geodecoder as build

    torch.manual_seed(0)
    model = build(bench_cells(), allow_untrained=True)
    model.to(device).eval()
    with torch.inference_mode():
        model.prepare()
    return model


def bench_cells() -> Any:
    """Cells from the 100K GeoCLIP gallery coordinates, about MP-16's counts per level."""
    from geotag.geo.cells import PartitionSpec, build_cells
    from geotag.models.gallery import load_gallery

    points = load_gallery(None).numpy()
    specs = [PartitionSpec("coarse", 5, 120), PartitionSpec("middle", 5, 45), PartitionSpec("fine", 5, 14)]
    return build_cells(points[:, 0], points[:, 1], specs)


BUILDERS: dict[str, Callable[[PredictConfig, torch.device, bool], GeoModel]] = {
    "geoclip": build_geoclip,
    "translocator": build_translocator,
    "geodecoder": build_geodecoder,
}


# ---------------------------------------------------------------------------------------------------
# Phases


def bench_decode(files: list[Path], size: str, input_size: int, limit: int) -> Row:
    """Pillow draft-mode decode + resize + crop, one core (this process, no workers)."""
    sample = files[:limit]
    decode_for_model(sample[0], input_size)
    t0 = time.perf_counter()
    for path in sample:
        decode_for_model(path, input_size)
    rate = len(sample) / (time.perf_counter() - t0)
    with Image.open(sample[0]) as im:
        full = im.width
        im.draft("RGB", (input_size, input_size))
        scale = full / im.width
    return Row(size, "decode: Pillow draft, 1 core", rate, note=f"DCT scale 1/{round(scale)}")


def bench_nvjpeg(files: list[Path], size: str, input_size: int, device: torch.device) -> Row:
    datas = [gpu_decode.read_bytes(p) for p in files]
    datas = [d for d in datas if d is not None]
    gpu_decode.decode_jpegs(datas[: gpu_decode.CHUNK], [1] * len(datas), input_size, "bicubic", device)
    with Measure(device) as m:
        gpu_decode.decode_jpegs(datas, [1] * len(datas), input_size, "bicubic", device)
    return Row(size, "decode: nvJPEG + GPU resize", len(datas) / m.seconds, m.util, _gib(m.peak_gpu))


def bench_loader(
    folder: Path, size: str, model: GeoModel, device: torch.device, args: argparse.Namespace, gpu: bool
) -> Row:
    """The whole input pipeline with no model: listing, workers (hash, EXIF, decode), stager."""
    with tempfile.TemporaryDirectory() as tmp:
        store = PartStore(Path(tmp) / "x.parquet")
        work_list, listed, _, _ = store.write_file_list(iter_records([folder]))
        pre = model.preprocess()
        share = args.gpu_decode_share if gpu else 0.0
        workers = auto_workers(device) if args.workers is None else args.workers
        batch = args.batch_size or auto_batch_size(device)
        min_pixels = args.gpu_decode_min_pixels
        dataset = PhotoDataset(work_list, pre, True, set(), gpu_share=share, gpu_min_pixels=min_pixels)
        loader = make_loader(dataset, min(batch, LOADER_CHUNK), workers, device)
        n = 0
        with Measure(device) as m, Stager(loader, pre, device, batch) as staged:
            for b in staged:
                n += b.images
        what = "nvJPEG + CPU workers" if gpu else "CPU workers"
    return Row(
        size,
        f"input pipeline ({what})",
        n / m.seconds,
        m.util,
        _gib(m.peak_gpu),
        _gib(m.peak_host),
        note=f"{workers} workers, batch {batch}",
    )


def bench_model_only(
    model: GeoModel,
    files: list[Path],
    size: str,
    device: torch.device,
    args: argparse.Namespace,
    flops: float | None = None,
    compiled: bool = False,
) -> tuple[Row, float]:
    """Normalise + predict on a batch of pre-decoded images already on the device, `model_iters` times."""
    pre = model.preprocess()
    batch = args.batch_size or auto_batch_size(device)
    one = [decode_for_model(p, pre.input_size, pre.interpolation) for p in files[: min(batch, len(files))]]
    pixels = torch.stack([one[i % len(one)] for i in range(batch)]).to(device)
    iters = args.model_iters
    with torch.inference_mode():
        if flops is None:
            flops = flops_per_image(model, pixels, device, amp=True)
        for _ in range(2):
            run_model(model, pixels, device, 5, True)
        with Measure(device) as m:
            for _ in range(iters):
                run_model(model, pixels, device, 5, True)
    rate = batch * iters / m.seconds
    amount = f"{flops / 1e9:.1f} GFLOP" if flops >= 1e8 else f"{flops / 1e6:.1f} MFLOP"
    note = f"{amount}/img"
    label = f"{model.name}: model only (batch {batch}{', compiled' if compiled else ''})"
    return Row(size, label, rate, m.util, _gib(m.peak_gpu), _gib(m.peak_host), note, flops), flops


def bench_end_to_end(
    model: GeoModel,
    name: str,
    folder: Path,
    size: str,
    device: torch.device,
    args: argparse.Namespace,
    gpu: bool,
    tmp: Path,
) -> Row:
    files = sorted(folder.rglob("*.jpg"))
    cfg = PredictConfig(
        paths=[folder],
        out=tmp / f"{name}-{size}.parquet",
        model=name,
        device=str(device),
        batch_size=args.batch_size,
        workers=args.workers,
        allow_untrained=True,
        gpu_decode=gpu,
        gpu_decode_share=args.gpu_decode_share,
        gpu_decode_min_pixels=args.gpu_decode_min_pixels,
        compile=args.compile,
        gallery=args.gallery,
    )
    # warm-up (not timed): compiles (padded to the full batch), starts nvJPEG, fills caches
    n_warm = min(len(files), 2 * LOADER_CHUNK if device.type == "cuda" else 2)
    warm = replace(cfg, paths=files[:n_warm], out=tmp / "warm.parquet")
    run_predict(warm, model=model)
    with Measure(device) as m:
        summary = run_predict(cfg, model=model)
    assert summary.total == len(files), (summary.total, len(files))
    mp = args.gpu_decode_min_pixels / 1e6
    decode = f"nvJPEG {args.gpu_decode_share:.0%} of JPEGs >= {mp:g} MP + CPU" if gpu else "CPU decode"
    label = f"{name}: end to end ({decode}{', compiled' if args.compile else ''})"
    note = f"{summary.failed} failed" if summary.failed else ""
    return Row(size, label, len(files) / m.seconds, m.util, _gib(m.peak_gpu), _gib(m.peak_host), note)


@contextlib.contextmanager
def _tiny_reference_clip() -> Iterator[None]:
    """Make the geoclip package build a tiny CLIP (same shape as tiny_clip_config) instead of ViT-L."""
    import transformers
    from geoclip.model import image_encoder

    vit = tiny_clip_config()

    def config(**_: Any) -> Any:
        return transformers.CLIPConfig(
            projection_dim=768,
            text_config={
                "hidden_size": 32,
                "intermediate_size": 64,
                "num_hidden_layers": 1,
                "num_attention_heads": 2,
                "projection_dim": 768,
            },
            vision_config={
                "hidden_size": vit.width,
                "intermediate_size": vit.mlp_dim,
                "num_hidden_layers": vit.layers,
                "num_attention_heads": vit.heads,
                "patch_size": vit.patch_size,
                "image_size": vit.image_size,
                "projection_dim": 768,
            },
        )

    original = image_encoder.CLIPConfig
    image_encoder.CLIPConfig = config
    try:
        yield
    finally:
        image_encoder.CLIPConfig = original


def bench_reference(files: list[Path], size: str, device: torch.device, args: argparse.Namespace) -> Row:
    """The geoclip package's own loop: GeoCLIP.predict(path, top_k) per image, as its README shows."""
    from geoclip import GeoCLIP as ReferenceGeoCLIP

    from geotag.models.gallery import load_gallery

    torch.manual_seed(0)
    with _tiny_reference_clip() if args.tiny else contextlib.nullcontext():
        ref = ReferenceGeoCLIP(from_pretrained=False, clip_pretrained=False)
    if args.gallery is not None:
        ref.gps_gallery = load_gallery(args.gallery)
    ref.to(device).eval()
    sample = files[: args.ref_images]
    ref.predict(str(sample[0]), top_k=5)  # warm-up
    with Measure(device) as m:
        for path in sample:
            ref.predict(str(path), top_k=5)
    note = f"{len(sample)} images, gallery {len(ref.gps_gallery):,} re-encoded per image"
    row = Row(
        size,
        "geoclip package: GeoCLIP.predict loop",
        len(sample) / m.seconds,
        m.util,
        _gib(m.peak_gpu),
        _gib(m.peak_host),
        note,
    )
    del ref
    return row


# ---------------------------------------------------------------------------------------------------
# Main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=None, help="photos per size (default 512 CUDA, 8 CPU)")
    ap.add_argument("--sizes", default=None, help="WxH,... (default 4000x3000,1024x768)")
    ap.add_argument("--models", default="geoclip,translocator,geodecoder")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--gpu-decode", choices=("off", "on", "both"), default=None, help="default: both on CUDA")
    ap.add_argument("--gpu-decode-share", type=float, default=gpu_decode.DEFAULT_SHARE)
    ap.add_argument("--gpu-decode-min-pixels", type=int, default=gpu_decode.DEFAULT_MIN_PIXELS)
    ap.add_argument("--compile", action="store_true", help="also torch.compile the backbones")
    ap.add_argument("--model-iters", type=int, default=None, help="timed model-only batches")
    ap.add_argument("--ref-images", type=int, default=None, help="images through the package's loop")
    ap.add_argument("--no-reference", action="store_true")
    ap.add_argument("--tiny", action="store_true", help="tiny towers, small gallery: seconds (CI)")
    ap.add_argument("--dir", type=Path, default=None, help="where the photos are made (kept)")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    args = ap.parse_args(argv)
    cuda = resolve_device(args.device).type == "cuda"
    if args.tiny:
        args.count = args.count or 6
        args.sizes = args.sizes or "640x480"
        args.ref_images = args.ref_images or 2
        args.model_iters = args.model_iters or 2
        args.models = args.models.replace(",geodecoder", "")
    args.count = args.count or (512 if cuda else 8)
    args.sizes = args.sizes or "4000x3000,1024x768"
    args.ref_images = min(args.count, args.ref_images or (16 if cuda else 2))
    args.model_iters = args.model_iters or (20 if cuda else 2)
    args.gpu_decode = args.gpu_decode or ("both" if cuda else "off")
    return args


def machine() -> str:
    load = os.getloadavg()
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return (
        f"{platform.node()}: {os.cpu_count()} cores, load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, {gpu}, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads)"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = resolve_device(args.device)
    from geotag.models.registry import MODELS

    models = [m for m in args.models.split(",") if m]
    print(f"machine: {machine()}", flush=True)
    root = args.dir or Path(tempfile.mkdtemp(prefix="geotag-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="geotag-bench-out-"))
    args.gallery = small_gallery(tmp) if args.tiny else None
    args.gemm_peak = gemm_peak_flops(device, small=args.tiny)
    rows: list[Row] = []
    summary: list[str] = []
    gpu_modes = {"off": [False], "on": [True], "both": [False, True]}[args.gpu_decode]
    if device.type != "cuda":
        gpu_modes = [False]
    try:
        for size in args.sizes.split(","):
            w, h = (int(v) for v in size.lower().split("x"))
            folder = root / f"photos-{size}-{args.count}"
            t0 = time.perf_counter()
            files = make_photos(folder, args.count, (w, h))
            mb = sum(p.stat().st_size for p in files) / len(files) / 1e6
            took = time.perf_counter() - t0
            print(f"{size}: {len(files)} photos ({mb:.1f} MB each) in {folder} [{took:.1f}s]", flush=True)
            rows.append(bench_decode(files, size, 224, min(len(files), 16)))
            if device.type == "cuda":
                rows.append(bench_nvjpeg(files, size, 224, device))
            for name in models:
                if name not in MODELS:
                    rows.append(Row(size, f"{name}: skipped", None, note="not registered"))
                    continue
                cfg = PredictConfig(
                    paths=[folder],
                    out=tmp / "x.parquet",
                    model=name,
                    device=str(device),
                    allow_untrained=True,
                    gallery=args.gallery,
                )
                try:
                    t0 = time.perf_counter()
                    model = BUILDERS[name](cfg, device, args.tiny)
                    print(f"{size}: built {name} in {time.perf_counter() - t0:.1f}s", flush=True)
                except Exception as exc:  # noqa: BLE001 - a model another issue is still building
                    rows.append(Row(size, f"{name}: skipped", None, note=f"{type(exc).__name__}: {exc}"[:90]))
                    continue
                if name == models[0]:
                    for gpu in gpu_modes:
                        rows.append(bench_loader(folder, size, model, device, args, gpu))
                row, flops = bench_model_only(model, files, size, device, args)
                rows.append(row)
                for gpu in gpu_modes:
                    e2e = bench_end_to_end(model, name, folder, size, device, args, gpu, tmp)
                    rows.append(e2e)
                    target = TARGETS.get((name, size))
                    if target and device.type == "cuda":
                        e2e.note = (e2e.note + f" target {target}").strip()
                if args.compile:  # run_predict compiled the backbone: the model alone again
                    rows.append(bench_model_only(model, files, size, device, args, flops, compiled=True)[0])
                print(f"{size}: {name} done", flush=True)
                del model
                if device.type == "cuda":
                    torch.cuda.empty_cache()
            if not args.no_reference and "geoclip" in models:
                ref = bench_reference(files, size, device, args)
                rows.append(ref)
                ours = [r for r in rows if r.size == size and r.stage.startswith("geoclip: end to end")]
                if ours and ref.images_per_s:
                    best = max(r.images_per_s or 0 for r in ours)
                    summary.append(
                        f"{size} geoclip {best:,.1f} img/s vs package {ref.images_per_s:,.2f} "
                        f"img/s ({best / ref.images_per_s:,.0f}x)"
                    )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if args.dir is None:
            shutil.rmtree(root, ignore_errors=True)
    # the peak again at the end: on a shared machine the first sample may have run while others were busy
    late = gemm_peak_flops(device, small=args.tiny)
    args.gemm_peak = max(args.gemm_peak, late)
    peak, what = args.gemm_peak
    for r in rows:
        if r.flops and r.images_per_s:
            r.note += f", {100 * r.images_per_s * r.flops / peak:.1f}% of {what} peak"
    print_table(rows, device, args)
    print(f"machine after: {machine()}")
    print("summary: " + ("; ".join(summary) if summary else "no reference comparison"))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=2))
    return 0


def print_table(rows: list[Row], device: torch.device, args: argparse.Namespace) -> None:
    util = "GPU util %" if device.type == "cuda" else "CPU util %"
    head = f"| size | stage | images/s | {util} | peak GPU GiB | peak host GiB | notes |"
    print(
        f"\ngeotag predict throughput on {device} ({'tiny towers' if args.tiny else 'full-size models'}, "
        f"random weights, {args.count} photos per size)\n"
    )
    print(head)
    print("|" + "---|" * 7)

    def fmt(v: float | None, spec: str) -> str:
        return "" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)

    for r in rows:
        print(
            f"| {r.size} | {r.stage} | {fmt(r.images_per_s, ',.2f')} | {fmt(r.util, '.0f')} | "
            f"{fmt(r.peak_gpu_gib, '.2f')} | {fmt(r.peak_host_gib, '.2f')} | {r.note} |"
        )
    print()


if __name__ == "__main__":
    sys.exit(main())
