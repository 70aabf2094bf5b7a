"""Time guides the visual models (issue 26, items 4 and 5): album fusion, reachable regions, overhead.

    .venv/bin/python bench/time_fusion.py [--images DIR --manifest CSV] [--n 3000] [--json out.json]
    .venv/bin/python bench/time_fusion.py --tiny            # the smoke test: a few photos, seconds

Every figure comes from the real predict path (geotag.engine.predict.run_predict, what `geotag predict`
calls), in this process, with one model loaded per setup; the model is the offline kNN (EfficientNet-Lite0
ImageNet features, `geotag gallery build`) in its leave-one-out form (knn-loo), so no photo finds itself.

a. Album fusion (item 4a), only with --images DIR --manifest CSV (Im2GPS3k: its folder and
   im2gps3k_places365.csv, never shipped): a gallery of the set, knn-loo leaving out the photographer
   (the manifest's author column, as `geotag benchmark` does), single photo vs `--fuse session` and
   `--fuse hmm` with albums = the author (`--group-by AUTHOR`). A proxy: a photographer's photos are not
   one session. The fused file's `single_lat` / `single_lon` are checked against the unfused run.
b. Reachable regions (item 4b) on real photos: ../shared/fixtures/osv5m-71 (71 street photos; or the
   --images set too). Copies of the photos get EXIF capture times (5 days apart, UTC), a gallery of the
   copies, knn-loo over the others; then for each dt in 10 min, 1 h, 6 h, 24 h a GPX track with one fix
   per photo dt before it, at a distance drawn uniformly in [0, max_speed x dt] from its truth in a random
   direction (seed 0), and `predict --track` (max-extrapolate 0 so no photo is placed by time alone;
   --prior-window 2 dt, at least the default 6 h; each photo's only fix in its window is its own).
c. Overhead (item 5): --n photos (copies of the fixture photos, EXIF times in sessions of 20, one
   minute apart, 3 h between sessions) predicted with the same knn-loo model: baseline, with a track
   (one fix 2 h before each session: every photo gets a prior), `--fuse session`, `--fuse hmm`; the
   settings interleaved over --rounds (the machine is shared: load from others hits them all alike),
   the best wall time of run_predict over the rounds and the main process's peak RSS (VmHWM, reset
   before each run; decoding workers are separate processes, the same in every setting). Then
   GeoCLIP's prior on its 100K gallery: time per photo of the posterior (models.prior via
   GeoCLIP.under_prior) vs the image encoder's forward pass (ViT-L/14 with random weights: the cost is
   the same; --tiny uses a tiny ViT) and the whole predict. `--n 0` runs only the GeoCLIP part.

Prints every figure as a markdown table, a one-line summary, and --json FILE writes them all.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import re
import shutil
import struct
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO.parent / "shared" / "fixtures" / "osv5m-71"
THRESHOLDS_KM = (1.0, 25.0, 200.0, 750.0, 2500.0)
DTS_S = (600, 3600, 6 * 3600, 24 * 3600)
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
PHOTO_SPACING = timedelta(days=5)  # part b: no photo's window reaches another photo's fix
SESSION = 20  # part c: photos per session
PROXY = "proxy: a photographer's photos are not one session"


# ---------------------------------------------------------------- photos with capture times


def _exif_payload(when: datetime) -> bytes:
    """An APP1 EXIF body (b"Exif\\0\\0" + TIFF) with DateTimeOriginal and OffsetTimeOriginal +00:00."""
    from PIL import Image

    exif = Image.Exif()
    ifd = exif.get_ifd(0x8769)
    ifd[0x9003] = when.astimezone(UTC).strftime("%Y:%m:%d %H:%M:%S")
    ifd[0x9011] = "+00:00"
    return exif.tobytes()


def stamp_copy(src: Path, dst: Path, when: datetime) -> None:
    """Copy a photo with `when` as its only metadata. A JPEG keeps its compressed data byte for byte
    (every APP1 segment, EXIF GPS or XMP included, is dropped and ours inserted after the JFIF
    header); anything else is re-encoded once with Pillow."""
    payload = _exif_payload(when)
    data = src.read_bytes()
    if data[:2] != b"\xff\xd8":
        from PIL import Image

        with Image.open(src) as im:
            im.convert("RGB").save(dst, "JPEG", quality=95, exif=payload)
        return
    head, pos = [], 2
    while pos + 4 <= len(data) and data[pos] == 0xFF and data[pos + 1] not in (0xDA, 0xD9):
        length = struct.unpack(">H", data[pos + 2 : pos + 4])[0]
        if data[pos + 1] != 0xE1:
            head.append(data[pos : pos + 2 + length])
        pos += 2 + length
    app0 = [s for s in head if s[1] == 0xE0]
    rest = [s for s in head if s[1] != 0xE0]
    app1 = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    dst.write_bytes(b"\xff\xd8" + b"".join(app0) + app1 + b"".join(rest) + data[pos:])


def list_photos(folder: Path) -> list[Path]:
    from geotag.io.scan import iter_image_paths

    return sorted(iter_image_paths([folder]))


def write_gpx(path: Path, fixes: list[tuple[datetime, float, float]]) -> None:
    """A GPX 1.1 track, one segment, times in UTC, points in time order."""
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<gpx version="1.1" creator="bench/time_fusion.py" xmlns="http://www.topografix.com/GPX/1/1">'
        "<trk><trkseg>",
    ]
    for when, lat, lon in sorted(fixes):
        lines.append(f'<trkpt lat="{lat:.7f}" lon="{lon:.7f}"><time>{when:%Y-%m-%dT%H:%M:%SZ}</time></trkpt>')
    lines.append("</trkseg></trk></gpx>")
    path.write_text("\n".join(lines))


def destination(lat: float, lon: float, bearing_deg: float, km: float) -> tuple[float, float]:
    """The point `km` from (lat, lon) along `bearing_deg` on the sphere (R as geotag's haversine)."""
    from geotag.geo.distance import EARTH_RADIUS_KM

    la, lo, b, d = math.radians(lat), math.radians(lon), math.radians(bearing_deg), km / EARTH_RADIUS_KM
    la2 = math.asin(math.sin(la) * math.cos(d) + math.cos(la) * math.sin(d) * math.cos(b))
    lo2 = lo + math.atan2(
        math.sin(b) * math.sin(d) * math.cos(la), math.cos(d) - math.sin(la) * math.sin(la2)
    )
    return math.degrees(la2), (math.degrees(lo2) + 540.0) % 360.0 - 180.0


# ---------------------------------------------------------------- scoring and tables


def read_rows(path: Path) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()


def score(rows: list[dict[str, Any]], single: bool = False) -> dict[str, Any]:
    """Accuracy (%) at THRESHOLDS_KM (d <= t, haversine R = 6371.0088 km, as geotag eval) and median km
    over the rows with truth and a prediction, self-matches left out as eval does. `single`: score the
    fused file's single-photo columns (rows that were not fused keep their prediction there)."""
    from geotag.geo.distance import haversine_np

    pred, true = [], []
    for r in rows:
        if r.get("status") != "ok" or r.get("gt_lat") is None or r.get("self_match"):
            continue
        lat, lon = r.get("pred_lat"), r.get("pred_lon")
        if single and r.get("single_lat") is not None:
            lat, lon = r["single_lat"], r["single_lon"]
        if lat is None:
            continue
        pred.append((lat, lon))
        true.append((r["gt_lat"], r["gt_lon"]))
    if not pred:
        return {"n": 0, "acc": [float("nan")] * len(THRESHOLDS_KM), "median_km": float("nan")}
    p, t = np.asarray(pred), np.asarray(true)
    return score_distances(haversine_np(p[:, 0], p[:, 1], t[:, 0], t[:, 1]))


def score_distances(d: np.ndarray) -> dict[str, Any]:
    """Accuracy (%) at THRESHOLDS_KM and the median of errors `d` (km)."""
    return {
        "n": len(d),
        "acc": [float(100.0 * np.mean(d <= x)) for x in THRESHOLDS_KM],
        "median_km": float(np.median(d)),
    }


def print_table(title: str, first: str, rows: list[tuple[str, dict[str, Any]]]) -> None:
    heads = " | ".join(f"{x:g} km" for x in THRESHOLDS_KM)
    print(f"\n{title}\n\n| {first} | N | {heads} | median km |")
    print("|---|---:|" + "---:|" * (len(THRESHOLDS_KM) + 1))
    for label, s in rows:
        accs = " | ".join(f"{a:.1f}" for a in s["acc"])
        print(f"| {label} | {s['n']} | {accs} | {s['median_km']:,.0f} |")


# ---------------------------------------------------------------- the predict path


def has_fusion() -> bool:
    """Whether this checkout's predict has album fusion (`--fuse`, branch fuse)."""
    from geotag.config import PredictConfig

    return "fuse" in {f.name for f in dataclasses.fields(PredictConfig)}


def build_gallery(folder: Path, manifest: Path, out: Path, workers: int | None) -> None:
    """`geotag gallery build FOLDER --truth MANIFEST --out OUT` (EfficientNet-Lite0, offline)."""
    from geotag.config import GalleryConfig
    from geotag.engine.gallery import run_gallery_build

    run_gallery_build(GalleryConfig(paths=[folder], out=out, truth=manifest, workers=workers))


def knn_loo_config(gallery: Path, manifest: Path, out: Path, workers: int | None, **kw: Any) -> Any:
    """The PredictConfig of `geotag predict --model knn-loo --gallery G --truth M`, leaving out the
    query's author when the manifest names one (geotag benchmark's rule, engine.benchmark)."""
    from geotag.config import PredictConfig
    from geotag.engine.benchmark import leave_authors_out

    cfg = PredictConfig(
        paths=[],
        out=out,
        model="knn-loo",
        gallery=gallery,
        truth=manifest,
        device="cpu",
        workers=workers,
        **kw,
    )
    return leave_authors_out(cfg)


def predict(cfg: Any, model: Any, **changes: Any) -> tuple[list[dict[str, Any]], float]:
    """run_predict with `changes` to cfg; the rows written and the wall time."""
    from geotag.engine.predict import run_predict

    cfg = dataclasses.replace(cfg, **changes)
    t0 = time.perf_counter()
    run_predict(cfg, model=model)
    return read_rows(cfg.out), time.perf_counter() - t0


def load(cfg: Any) -> Any:
    import torch

    from geotag.engine.predict import load_model

    return load_model(cfg, torch.device("cpu"))


# ---------------------------------------------------------------- a. album fusion


def album_fusion(images: Path, manifest: Path, work: Path, workers: int | None) -> dict[str, Any]:
    build_gallery(images, manifest, work / "a-gallery.parquet", workers)
    cfg = knn_loo_config(work / "a-gallery.parquet", manifest, work / "a-single.parquet", workers)
    if cfg.exclude_same is None:
        print(f"\n(a) {manifest.name} has no author column: album fusion needs albums; skipped")
        return {"skipped": "no author column"}
    model = load(cfg)
    single, _ = predict(cfg, model, paths=[images])
    table = [("single photo (knn-loo, leave-one-author-out)", score(single))]
    out: dict[str, Any] = {"author_column": cfg.exclude_same, "rows": {}}
    notes = []
    if not has_fusion():
        notes.append("--fuse not in this checkout's predict (branch fuse not merged): fusion not run")
    for method in ("session", "hmm") if has_fusion() else ():
        path = work / f"a-{method}.parquet"
        try:
            rows, _ = predict(cfg, model, paths=[images], out=path, fuse=method, group_by=cfg.exclude_same)
        except Exception as exc:  # noqa: BLE001 - a method that does not apply is reported, not fatal
            notes.append(f"--fuse {method}: not run ({type(exc).__name__}: {exc})")
            continue
        fused = sum(r.get("source") == "fused" for r in rows)
        same = _single_agrees(single, rows)
        table.append((f"--fuse {method}, albums = {cfg.exclude_same} ({fused} rows fused)", score(rows)))
        notes.append(f"--fuse {method}: single_lat/single_lon equal the unfused run's rows: {same}")
        out["rows"][f"single columns of --fuse {method}"] = score(rows, single=True)
    print_table(f"(a) album fusion, {PROXY}; {images}", "setting", table)
    for note in notes:
        print(f"- {note}")
    out["rows"].update({label: s for label, s in table})
    out["notes"] = notes
    return out


def _single_agrees(single: list[dict[str, Any]], fused: list[dict[str, Any]]) -> bool:
    """Each fused row's single-photo columns are the unfused run's prediction of that photo."""
    by_id = {r["image_id"]: (r.get("pred_lat"), r.get("pred_lon")) for r in single}
    for r in fused:
        if r.get("single_lat") is not None:
            want = by_id.get(r["image_id"])
            if want is None or not np.allclose(want, (r["single_lat"], r["single_lon"]), atol=1e-9):
                return False
    return True


# ---------------------------------------------------------------- b. reachable regions


def stamped_set(folder: Path, dst: Path, limit: int | None) -> dict[str, datetime]:
    """Copies of the photos of `folder` in `dst`, the i-th taken at T0 + i x PHOTO_SPACING (UTC)."""
    dst.mkdir(parents=True)
    times = {}
    for i, src in enumerate(list_photos(folder)[:limit]):
        when = T0 + i * PHOTO_SPACING
        stamp_copy(src, dst / src.name, when)
        times[src.name] = when
    return times


def fixture_setup(folder: Path, manifest: Path, work: Path, workers: int | None, limit: int | None, tag: str):  # type: ignore[no-untyped-def]
    """Stamped copies of a set's photos, their gallery, and the knn-loo config and model over it."""
    photos = work / f"b-{tag}"
    times = stamped_set(folder, photos, limit)
    step(f"{len(times)} stamped copies of {folder}")
    build_gallery(photos, manifest, work / f"b-{tag}-gallery.parquet", workers)
    step("gallery built")
    cfg = knn_loo_config(work / f"b-{tag}-gallery.parquet", manifest, work / f"b-{tag}.parquet", workers)
    model = load(cfg)
    step("model loaded")
    return photos, times, cfg, model


def reachable(
    photos: Path, times: dict[str, datetime], cfg: Any, model: Any, max_speed: float
) -> dict[str, Any]:
    from geotag.config import TimeConfig

    work = cfg.out.parent
    single, _ = predict(cfg, model, paths=[photos])
    step("single-photo run")
    truth = {Path(r["path"]).name: (r["gt_lat"], r["gt_lon"]) for r in single if r.get("gt_lat") is not None}
    rng = np.random.default_rng(0)
    s0 = score(single)
    table = [("single photo", s0), ("bound: each photo's nearest other gallery photo", nearest_other(truth))]
    result: dict[str, Any] = {"photos": len(times), "single": s0, "bound": table[1][1], "prior": {}}
    for dt in DTS_S:
        reach_km = max_speed * dt / 3600.0
        fixes = []
        for name in sorted(truth):
            lat, lon = destination(*truth[name], rng.uniform(0, 360), rng.uniform(0, reach_km))
            fixes.append((times[name] - timedelta(seconds=dt), lat, lon))
        track = work / f"{photos.name}-{dt}.gpx"
        write_gpx(track, fixes)
        tcfg = TimeConfig(
            tracks=(track,), max_extrapolate=0.0, prior_window=max(21600.0, 2.0 * dt), max_speed=max_speed
        )
        rows, _ = predict(cfg, model, paths=[photos], out=work / f"{photos.name}-{dt}.parquet", time=tcfg)
        step(f"prior run, dt {_dt(dt)}")
        guided = sum(r.get("source") == "model" for r in rows)
        before = {r["image_id"]: (r.get("pred_lat"), r.get("pred_lon")) for r in single}
        changed = sum(before.get(r["image_id"]) != (r.get("pred_lat"), r.get("pred_lon")) for r in rows)
        s = score(rows)
        table.append((f"prior, fix dt = {_dt(dt)} before (reach {reach_km:,.0f} km)", s))
        result["prior"][_dt(dt)] = s | {"reach_km": reach_km, "rows_by_model": guided, "changed": changed}
    print_table(
        f"(b) reachable regions, {photos.name}: {len(times)} photos, knn-loo over the others, "
        f"max speed {max_speed:g} km/h, seed 0",
        "setting",
        table,
    )
    return result


_T0 = time.perf_counter()


def step(text: str) -> None:
    """Progress on stderr (the tables go to stdout)."""
    print(f"[{time.perf_counter() - _T0:6.1f} s] {text}", file=sys.stderr, flush=True)


def nearest_other(truth: dict[str, tuple[float, float]]) -> dict[str, Any]:
    """The best a leave-one-out kNN answer can do: the distance from each photo to the nearest other
    photo of the gallery (a kNN answer is a weighted mean of gallery positions near its mode)."""
    from geotag.geo.distance import haversine_np

    at = np.asarray(list(truth.values()), dtype=np.float64).reshape(-1, 2)
    d = haversine_np(at[:, None, 0], at[:, None, 1], at[None, :, 0], at[None, :, 1])
    np.fill_diagonal(d, np.inf)
    return score_distances(d.min(axis=1)) if len(at) > 1 else score_distances(np.array([np.nan]))


def _dt(seconds: int) -> str:
    return f"{seconds // 60} min" if seconds < 3600 else f"{seconds // 3600} h"


# ---------------------------------------------------------------- c. overhead


def peak_rss_reset() -> None:
    """Reset this process's VmHWM (Linux clear_refs 5) so the next reading is this run's peak."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def peak_rss_mib() -> float:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return int(re.search(r"VmHWM:\s+(\d+)", text).group(1)) / 1024  # type: ignore[union-attr]


def overhead(
    source: Path, manifest: Path, work: Path, n: int, cfg: Any, model: Any, which: str, rounds: int
) -> dict[str, Any]:
    """n copies of the source photos in sessions; predict's time and peak memory in every setting."""
    from geotag.config import TimeConfig

    photos = work / "c-photos"
    photos.mkdir()
    sources = list_photos(source)
    fixes = []
    truth = _truth_by_name(manifest)
    for i in range(n):
        src = sources[i % len(sources)]
        session, k = divmod(i, SESSION)
        start = T0 + timedelta(hours=3 * session)
        stamp_copy(src, photos / f"c{i:05d}_{src.name}", start + timedelta(minutes=k))
        if k == 0:
            fixes.append((start - timedelta(hours=2), *truth.get(src.stem, (0.0, 0.0))))
    track = work / "c-track.gpx"
    write_gpx(track, fixes)
    cfg = dataclasses.replace(cfg, truth=None, out=work / "c.parquet")
    step(f"{n} stamped copies in sessions")
    settings: list[tuple[str, dict[str, Any]]] = [("baseline (no time evidence, --fuse none)", {})]
    if "track" in which:
        settings.append(("with a track (prior on every photo)", {"time": TimeConfig(tracks=(track,))}))
    for method in ("session", "hmm"):
        if method in which and has_fusion():
            settings.append((f"--fuse {method} (sessions by time, --session-gap 2 h)", {"fuse": method}))
    walls: dict[str, list[float]] = {label: [] for label, _ in settings}
    peaks: dict[str, float] = {}
    rows_n: dict[str, int] = {}
    for r in range(rounds):  # settings interleaved: load from other users hits them all alike
        for label, changes in settings:
            peak_rss_reset()
            rows, wall = predict(cfg, model, paths=[photos], **changes)
            walls[label].append(wall)
            peaks[label] = max(peaks.get(label, 0.0), peak_rss_mib())
            rows_n[label] = len(rows)
            step(f"overhead round {r + 1}: {label}")
    base_t = min(walls[settings[0][0]])
    base_m = peaks[settings[0][0]]
    sessions = n // SESSION + (n % SESSION > 0)
    print(f"\n(c) predict overhead, {n} photos ({sessions} sessions), knn-loo on CPU, {rounds} round(s)\n")
    print(
        "| setting | rows | wall s (best) | each run s | photos/s | time vs base | peak RSS MiB | vs base |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    out = {}
    for label, _ in settings:
        wall = min(walls[label])
        each = " / ".join(f"{w:.0f}" for w in walls[label])
        mem = peaks[label]
        print(
            f"| {label} | {rows_n[label]} | {wall:.1f} | {each} | {rows_n[label] / wall:.1f} | "
            f"{100 * (wall / base_t - 1):+.1f}% | {mem:,.0f} | {100 * (mem / base_m - 1):+.1f}% |"
        )
        out[label] = {
            "rows": rows_n[label],
            "wall_s": walls[label],
            "peak_rss_mib": mem,
            "time_ratio": wall / base_t,
        }
    if not has_fusion():
        print("- --fuse session / hmm: not in this checkout's predict (branch fuse not merged): not run")
    print("- time: the best of the rounds (the least disturbed by other load)")
    print("- memory: this process's peak RSS (VmHWM), decoding workers aside")
    return out


def _truth_by_name(manifest: Path) -> dict[str, tuple[float, float]]:
    """Manifest positions by file stem (for the overhead run's plausible fixes)."""
    from geotag.io.tables import read_table
    from geotag.io.truth import file_stem

    table = read_table(manifest, "manifest").to_pylist()
    out = {}
    for row in table:
        low = {k.lower(): v for k, v in row.items()}
        key = next((low[k] for k in ("image", "img_id", "path", "id") if k in low), None)
        lat = next((low[k] for k in ("lat", "latitude") if k in low), None)
        lon = next((low[k] for k in ("lon", "longitude") if k in low), None)
        if key is not None and lat is not None and lon is not None:
            out[file_stem(str(key))] = (float(lat), float(lon))
    return out


def geoclip_prior_cost(tiny: bool, batch: int) -> dict[str, Any]:
    """Per photo: GeoCLIP's image encoder, its gallery match (predict minus the encoder) and the
    reachable-region posterior over the 100K gallery, on CPU."""
    import torch

    from geotag.geo.reach import ReachPrior
    from geotag.models.clip_convert import ClipVisionConfig
    from geotag.models.registry import build_geoclip

    torch.manual_seed(0)
    vit = (
        ClipVisionConfig(width=32, layers=1, heads=2, mlp_dim=64, patch_size=16, image_size=224)
        if tiny
        else None
    )
    options = {"vit": vit} if tiny else {}  # default: CLIP ViT-L/14, here with random weights
    model = build_geoclip(allow_untrained=True, **options).eval()  # released GPS gallery and heads
    with torch.inference_mode():
        model.prepare()
    n_gallery = len(model.gps_gallery)
    images = torch.randn(batch, 3, 224, 224)
    rng = np.random.default_rng(0)
    fix = np.stack([rng.uniform(-60, 60, batch), rng.uniform(-180, 180, batch)], axis=1)
    nan = np.full(batch, np.nan)
    prior = ReachPrior(
        np.stack([fix[:, 0], nan], 1),
        np.stack([fix[:, 1], nan], 1),
        np.stack([np.full(batch, 150.0), nan], 1),
        np.stack([np.full(batch, 37.5), nan], 1),
    )
    probs = torch.rand(batch, n_gallery).softmax(dim=1)

    def timed(fn: Any, reps: int) -> float:
        with torch.inference_mode():
            fn()
            t0 = time.perf_counter()
            for _ in range(reps):
                fn()
        return (time.perf_counter() - t0) / reps / batch * 1e3

    reps = 3
    encoder = timed(lambda: model.image_encoder(images), 1 if not tiny else reps)
    plain = timed(lambda: model.predict(images, 5), 1 if not tiny else reps)
    posterior = timed(lambda: model.under_prior(probs, prior), reps)
    guided = timed(lambda: model.predict(images, 5, prior=prior), 1 if not tiny else reps)
    which = "tiny ViT (smoke test)" if tiny else "ViT-L/14, random weights"
    print(f"\n(c) GeoCLIP's prior on its {n_gallery:,}-point gallery, CPU, batch {batch}, ms per photo\n")
    print("| step | ms / photo |\n|---|---:|")
    print(f"| image encoder forward ({which}) | {encoder:.1f} |")
    print(f"| predict without prior (encoder + gallery match + spread) | {plain:.1f} |")
    print(f"| reachable-region posterior over the gallery (under_prior) | {posterior:.2f} |")
    print(f"| predict with prior | {guided:.1f} |")
    print(f"- prior / predict without prior: {100 * posterior / plain:.1f}% (image features: random images)")
    return {
        "gallery": n_gallery,
        "encoder": which,
        "encoder_ms": encoder,
        "predict_ms": plain,
        "prior_ms": posterior,
        "predict_with_prior_ms": guided,
    }


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=Path, help="a test set's folder (Im2GPS3k) for parts a and b")
    ap.add_argument("--manifest", type=Path, help="its manifest (im2gps3k_places365.csv: AUTHOR, LAT, LON)")
    ap.add_argument("--fixture", type=Path, default=FIXTURE, help="real photos with gt.csv (osv5m-71)")
    ap.add_argument("--n", type=int, default=3000, help="photos of the overhead run (c)")
    ap.add_argument("--rounds", type=int, default=1, help="part c: each setting this many times, interleaved")
    ap.add_argument("--max-speed", type=float, default=150.0, help="km/h of the simulated fixes and prior")
    ap.add_argument("--workers", type=int, default=None, help="decoding processes (default: predict's)")
    ap.add_argument("--parts", default="abc", help="which parts to run (a needs --images/--manifest)")
    ap.add_argument("--no-geoclip", action="store_true", help="skip GeoCLIP's 100K-gallery prior cost")
    ap.add_argument(
        "--overhead", default="track,session,hmm", help="settings of part c beside the two baseline runs"
    )
    ap.add_argument(
        "--tiny", action="store_true", help="smoke test: part b on 6 fixture photos only, n 8, a tiny ViT"
    )
    ap.add_argument("--dir", type=Path, help="work folder (default: a temporary one, removed)")
    ap.add_argument("--json", type=Path, help="write every figure here")
    args = ap.parse_args(argv)
    if (args.images is None) != (args.manifest is None):
        ap.error("--images and --manifest go together")
    limit = 6 if args.tiny else None
    workers = 0 if args.tiny and args.workers is None else args.workers
    n = min(args.n, 8) if args.tiny else args.n
    fixture_manifest = args.fixture / "gt.csv"
    fixture_photos = args.fixture / "select" if (args.fixture / "select").is_dir() else args.fixture
    work = Path(tempfile.mkdtemp(prefix="geotag-time-fusion-", dir=args.dir))
    results: dict[str, Any] = {"machine": f"{os.cpu_count()} CPU cores, load {os.getloadavg()[0]:.2f}"}
    print(f"time_fusion: {results['machine']}; fusion in predict: {has_fusion()}")
    start = time.perf_counter()
    try:
        if "a" in args.parts and args.images is not None:
            results["album_fusion"] = album_fusion(args.images, args.manifest, work, workers)
        elif "a" in args.parts:
            print("\n(a) album fusion: needs --images DIR --manifest CSV (Im2GPS3k); not run")
        if "b" in args.parts or ("c" in args.parts and n > 0):
            photos, times, cfg, model = fixture_setup(
                fixture_photos, fixture_manifest, work, workers, limit, "fixture"
            )
        if "b" in args.parts:
            results["reach_fixture"] = reachable(photos, times, cfg, model, args.max_speed)
            if args.images is not None and not args.tiny:
                setup = fixture_setup(args.images, args.manifest, work, workers, limit, "images")
                results["reach_images"] = reachable(*setup, args.max_speed)
        if "c" in args.parts and n > 0:
            results["overhead"] = overhead(
                fixture_photos, fixture_manifest, work, n, cfg, model, args.overhead, args.rounds
            )
        if "c" in args.parts and not args.no_geoclip:
            results["geoclip_prior"] = geoclip_prior_cost(args.tiny, batch=4)
    finally:
        if args.dir is None:
            shutil.rmtree(work, ignore_errors=True)
    results["seconds"] = time.perf_counter() - start
    print(_summary(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return 0


def _summary(results: dict[str, Any]) -> str:
    parts = []
    if "reach_fixture" in results:
        r = results["reach_fixture"]
        gains = [f"{dt} {s['acc'][2] - r['single']['acc'][2]:+.1f}" for dt, s in r["prior"].items()]
        parts.append("prior vs single at 200 km (points): " + ", ".join(gains))
    if "overhead" in results:
        worst = max(v["time_ratio"] for v in results["overhead"].values())
        parts.append(f"worst time ratio {worst:.2f}")
    return f"\nsummary: {'; '.join(parts) or 'nothing run'}; {results['seconds']:.0f} s"


if __name__ == "__main__":
    sys.exit(main())
