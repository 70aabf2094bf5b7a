"""The nvJPEG path's CPU side (CI has no GPU): the checks that keep truncated and unsupported JPEGs away
from nvJPEG, the deterministic split, EXIF orientation, the pixels the same code gives on the CPU
(torchvision's libjpeg stands in for nvJPEG), the fallback when CUDA is absent, and a run of the whole
engine path with the "GPU" decoder on the CPU."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image, ImageOps

from geotag.config import PredictConfig
from geotag.engine import predict as engine
from geotag.engine.pipeline import stage_chunk
from geotag.engine.predict import collate, read_item, run_predict
from geotag.io import gpu_decode
from geotag.io.decode import decode_for_model
from geotag.io.gpu_decode import (
    decode_jpegs,
    gpu_decode_reason,
    has_end_marker,
    orient,
    parse_jpeg_header,
    read_bytes,
    wants_gpu,
)
from geotag.io.scan import image_id_of_bytes, iter_records
from geotag.models.base import Preprocess

PRE = Preprocess(64, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bicubic")


def photo(w: int = 320, h: int = 240, seed: int = 0, **save: object) -> bytes:
    """A textured JPEG (smooth noise: something for the resize filters to agree on)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (h // 8, w // 8, 3), dtype=np.uint8)
    img = Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, "JPEG", **{"quality": 92, **save})
    return buf.getvalue()


def write(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


def test_header_of_a_baseline_jpeg() -> None:
    header = parse_jpeg_header(io.BytesIO(photo(320, 240)))
    assert (header.sof, header.precision, header.width, header.height) == (0xC0, 8, 320, 240)
    assert header.components == 3 and header.adobe_transform is None
    assert gpu_decode.header_reason(header) is None


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("progressive", "not baseline"),
        ("cmyk", "4 components"),
        ("truncated", "FFD9"),
        ("garbage", "header"),
        ("header_only", "header"),
    ],
)
def test_files_nvjpeg_must_not_get(tmp_path: Path, kind: str, reason: str) -> None:
    good = photo()
    data = {
        "progressive": photo(progressive=True),
        "cmyk": _cmyk(),
        "truncated": good[: len(good) * 2 // 3],  # the header parses; nvJPEG would not complain
        "garbage": b"not a jpeg at all" * 10,
        "header_only": good[:200],
    }[kind]
    got = gpu_decode_reason(write(tmp_path, "x.jpg", data))
    assert got is not None and reason in got


def _cmyk() -> bytes:
    buf = io.BytesIO()
    Image.new("CMYK", (64, 48), (10, 20, 30, 40)).save(buf, "JPEG")
    return buf.getvalue()


def test_grayscale_trailing_padding_and_restart_markers_pass(tmp_path: Path) -> None:
    buf = io.BytesIO()
    Image.new("L", (64, 48), 128).save(buf, "JPEG")
    assert gpu_decode_reason(write(tmp_path, "gray.jpg", buf.getvalue())) is None
    assert gpu_decode_reason(write(tmp_path, "pad.jpg", photo() + b"\x00" * 10)) is None
    with_exif = photo(exif=Image.Exif().tobytes())
    assert gpu_decode_reason(write(tmp_path, "exif.jpg", with_exif)) is None


def test_end_marker() -> None:
    assert has_end_marker(b"....\xff\xd9")
    assert has_end_marker(b"....\xff\xd9\x00\x00")
    assert not has_end_marker(b"....\xff\xd9junk")
    assert not has_end_marker(b"\xff\xd8\xff")


def test_rgb_coded_jpeg_stays_on_cpu() -> None:
    header = gpu_decode.JpegHeader(0xC0, 8, 10, 10, 3, (82, 71, 66), None)
    assert "RGB" in (gpu_decode.header_reason(header) or "")
    adobe = gpu_decode.JpegHeader(0xC0, 8, 10, 10, 3, (1, 2, 3), 0)
    assert "RGB" in (gpu_decode.header_reason(adobe) or "")


def test_split_is_deterministic_and_near_the_share() -> None:
    ids = [image_id_of_bytes(str(i).encode()) for i in range(4000)]
    picked = [wants_gpu(i, 0.6) for i in ids]
    assert picked == [wants_gpu(i, 0.6) for i in ids]
    assert 0.55 < sum(picked) / len(ids) < 0.65
    assert all(wants_gpu(i, 1.0) for i in ids[:10]) and not any(wants_gpu(i, 0.0) for i in ids[:10])


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_matches_pillow(orientation: int) -> None:
    arr = np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3)
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG", exif=exif.tobytes())
    want = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(buf.getvalue()))))
    got = orient(torch.from_numpy(arr).permute(2, 0, 1), orientation).permute(1, 2, 0).numpy()
    assert got.shape == want.shape and (got == want).all()


@pytest.mark.parametrize(("w", "h", "tolerance"), [(2000, 1800, 2.0), (1000, 750, 3.0)])
def test_tensor_pixels_agree_with_pillow(tmp_path: Path, w: int, h: int, tolerance: float) -> None:
    """Same geometry as the CPU path and close to Pillow's draft-mode pixels: at 1/8 an 8x8 block mean
    is exactly draft mode's DC term (chroma differs); at 1/2 libjpeg's scaled IDCT is no box filter. This
    noise texture is a worst case: real phone photos differ by 0.3 grey levels on average."""
    path = write(tmp_path, "p.jpg", photo(w, h))
    got = decode_jpegs([read_bytes(path)], [1], 224, "bicubic", torch.device("cpu"))[0]
    assert isinstance(got, torch.Tensor) and got.shape == (3, 224, 224) and got.dtype == torch.uint8
    draft = decode_for_model(path, 224)
    assert (got.float() - draft.float()).abs().mean() < tolerance


@pytest.mark.parametrize(
    "size", [(4000, 3000), (3000, 4000), (4048, 3036), (1024, 768), (640, 480), (300, 250)]
)
def test_draft_factor_is_pillows(size: tuple[int, int]) -> None:
    buf = io.BytesIO()
    Image.new("RGB", size, (10, 200, 30)).save(buf, "JPEG")
    with Image.open(buf) as im:
        im.draft("RGB", (224, 224))
        drafted = im.size
    factor = gpu_decode.draft_factor(*size, 224)
    assert drafted == (-(-size[0] // factor), -(-size[1] // factor))
    reduced = gpu_decode.draft_reduce(torch.zeros(3, size[1], size[0], dtype=torch.uint8), 224)
    assert tuple(reduced.shape[1:]) == (drafted[1], drafted[0])


def test_a_bad_file_in_a_chunk_costs_only_itself(tmp_path: Path) -> None:
    good = read_bytes(write(tmp_path, "a.jpg", photo()))
    bad = torch.frombuffer(bytearray(b"\xff\xd8\xff\xdb" + b"\x00" * 100 + b"\xff\xd9"), dtype=torch.uint8)
    out = decode_jpegs([good, bad, good], [1, 1, 1], 64, "bicubic", torch.device("cpu"))
    assert isinstance(out[0], torch.Tensor) and isinstance(out[2], torch.Tensor)
    assert isinstance(out[1], Exception)


def test_read_bytes_rechecks_the_end_marker(tmp_path: Path) -> None:
    path = write(tmp_path, "a.jpg", photo())
    assert read_bytes(path) is not None
    path.write_bytes(photo()[:500])  # changed after the worker's check
    assert read_bytes(path) is None
    assert read_bytes(tmp_path / "gone.jpg") is None


def test_no_cuda_means_no_gpu_decoder() -> None:
    assert not gpu_decode.available(torch.device("cpu"))


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(5):
        write(photos, f"p{i}.jpg", photo(400, 300, seed=i))
    write(photos, "progressive.jpg", photo(400, 300, seed=9, progressive=True))
    good = photo(400, 300, seed=7)
    write(photos, "truncated.jpg", good[: len(good) // 2])
    return photos


def _chunk(folder: Path, share: float) -> dict:
    items = [read_item(r, PRE, True, set(), gpu_share=share) for r in iter_records([folder])]
    return collate(items)


def test_worker_side_split(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpu_decode, "DEFAULT_MIN_PIXELS", 0)
    chunk = _chunk(folder, 1.0)
    names = [Path(r["path"]).name for r in chunk["rows"]]
    left_for_gpu = {names[i] for i in chunk["gpu_index"]}
    assert left_for_gpu == {f"p{i}.jpg" for i in range(5)}  # progressive and truncated stay on the CPU
    assert [names[i] for i in chunk["index"]] == ["progressive.jpg"]
    assert chunk["rows"][names.index("truncated.jpg")]["status"] == "error"
    assert chunk["gpu_orientation"] == [1] * 5
    assert _chunk(folder, 0.0)["gpu_index"] == []  # off by default
    monkeypatch.setattr(gpu_decode, "DEFAULT_MIN_PIXELS", 10**9)
    assert _chunk(folder, 1.0)["gpu_index"] == []  # small photos stay on the CPU


def test_stage_chunk_merges_both_decoders_in_row_order(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpu_decode, "DEFAULT_MIN_PIXELS", 0)
    chunk = _chunk(folder, 1.0)
    rows = chunk["rows"]
    (folder / "p3.jpg").write_bytes(photo(400, 300, seed=3)[:900])  # truncated after the check
    staged = stage_chunk(chunk, PRE, torch.device("cpu"))
    assert staged.index == sorted(staged.index)
    assert staged.pixels is not None and staged.pixels.shape == (len(staged.index), 3, 64, 64)
    names = [Path(r["path"]).name for r in rows]
    decoded = {names[i] for i in staged.index}
    assert decoded == {"p0.jpg", "p1.jpg", "p2.jpg", "p4.jpg", "progressive.jpg"}
    assert rows[names.index("p3.jpg")]["status"] == "error"  # the CPU path saw the truncation
    for j, i in enumerate(staged.index):
        cpu = decode_for_model(rows[i]["path"], 64)
        assert (staged.pixels[j].float() - cpu.float()).abs().mean() < 4.0, names[i]


def test_gpu_decode_without_cuda_falls_back_to_the_cpu(
    folder: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from test_predict_speed import tiny_geoclip

    model = tiny_geoclip(64)
    common = {"device": "cpu", "workers": 0, "batch_size": 4}
    a = PredictConfig(paths=[folder], out=tmp_path / "a.parquet", **common)
    b = PredictConfig(paths=[folder], out=tmp_path / "b.parquet", gpu_decode=True, **common)
    run_predict(a, model=model)
    with caplog.at_level(logging.WARNING):
        run_predict(b, model=model)
    assert "decoding on the CPU instead" in caplog.text
    cols = ["path", "status", "pred_lat", "pred_lon"]
    assert pq.read_table(a.out, columns=cols).equals(pq.read_table(b.out, columns=cols))


def test_engine_runs_the_gpu_path_end_to_end(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the device check forced, the engine sends the eligible files through decode_jpegs (here on
    the CPU): every file still gives one row, the truncated one an error."""
    from test_predict_speed import tiny_geoclip

    monkeypatch.setattr(engine.gpu_decode, "available", lambda device: True)
    calls = []
    real = gpu_decode.decode_jpegs

    def spy(datas, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(len(datas))
        return real(datas, *args, **kwargs)

    monkeypatch.setattr("geotag.engine.pipeline.decode_jpegs", spy)
    cfg = PredictConfig(
        paths=[folder],
        out=tmp_path / "g.parquet",
        device="cpu",
        workers=0,
        batch_size=3,
        gpu_decode=True,
        gpu_decode_share=1.0,
        gpu_decode_min_pixels=0,
    )
    summary = run_predict(cfg, model=tiny_geoclip(64))
    assert sum(calls) == 5
    rows = {Path(r["path"]).name: r for r in pq.read_table(cfg.out).to_pylist()}
    assert summary.total == len(rows) == 7 and summary.failed == 1
    assert rows["truncated.jpg"]["status"] == "error" and rows["p2.jpg"]["pred_lat"] is not None
