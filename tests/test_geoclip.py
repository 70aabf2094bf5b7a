"""GeoCLIP against the `geoclip` reference package, on CPU with a tiny CLIP tower and no downloads.

The reference is the package's own GeoCLIP with its released heads; only its CLIP tower is swapped for
a small random one, whose weights we convert into our timm tower. Both sides see the same pixels
(CLIPImageProcessor output for real photos) and the same 5,000-point gallery.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from geotag.errors import InputError, WeightsError
from geotag.geo.distance import haversine_np
from geotag.models import clip_convert as cc
from geotag.models.gallery import default_gallery_path, load_gallery
from geotag.models.geoclip import CONFIDENCE_RADIUS_KM, GeoCLIP, LocationEncoder, released_weights_dir
from geotag.models.registry import build_geoclip, clip_preprocess

transformers = pytest.importorskip("transformers")
geoclip_model = pytest.importorskip("geoclip.model")

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = next(
    (
        p
        for p in (ROOT.parent / "shared/fixtures/geotagged", ROOT / "shared/fixtures/geotagged")
        if p.is_dir()
    ),
    None,
)
PHOTOS = ["goexif-beijing.jpg", "exif-parser-sylt.jpg", "opensfm-berlin-01.jpg"]
TINY_VISION = dict(
    hidden_size=64,
    intermediate_size=256,
    num_hidden_layers=2,
    num_attention_heads=4,
    patch_size=14,
    image_size=224,
)


def tiny_clip_config(**vision):
    return transformers.CLIPConfig(
        projection_dim=768,
        text_config=dict(hidden_size=32, intermediate_size=64, num_attention_heads=2, num_hidden_layers=1),
        vision_config={**TINY_VISION, **vision},
    )


def image_features(clip, pixels: torch.Tensor) -> torch.Tensor:
    out = clip.get_image_features(pixel_values=pixels)
    return getattr(out, "pooler_output", out)


@pytest.fixture(scope="module")
def tiny_clip():
    torch.manual_seed(0)
    return transformers.CLIPModel(tiny_clip_config()).eval()


@pytest.fixture(scope="module")
def clip_folder(tiny_clip, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-clip")
    tiny_clip.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def gallery() -> torch.Tensor:
    return load_gallery(None)[::20][:5000].contiguous()


@pytest.fixture(scope="module")
def photo_paths() -> list[Path]:
    if FIXTURES is None:
        pytest.skip("shared/fixtures/geotagged not found")
    return [FIXTURES / name for name in PHOTOS]


@pytest.fixture(scope="module")
def pixels(photo_paths) -> torch.Tensor:
    processor = transformers.CLIPImageProcessor()
    images = [Image.open(p).convert("RGB") for p in photo_paths]
    return processor(images=images, return_tensors="pt")["pixel_values"]


@pytest.fixture(scope="module")
def reference(tiny_clip, gallery):
    """The package's GeoCLIP (released heads) with our tiny tower in place of ViT-L/14."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(geoclip_model.image_encoder, "CLIPConfig", lambda **_: tiny_clip_config())
        ref = geoclip_model.GeoCLIP(from_pretrained=True, clip_pretrained=False)
    ref.image_encoder.CLIP = tiny_clip
    ref.gps_gallery = gallery.clone()
    return ref.eval()


@pytest.fixture(scope="module")
def ours(clip_folder, gallery) -> GeoCLIP:
    model = build_geoclip(backbone_weights=clip_folder, allow_mismatched_heads=True)
    model.set_gallery(gallery)
    model.prepare()
    return model


def random_coords(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.rand(n, generator=g) * 180 - 90, torch.rand(n, generator=g) * 360 - 180], 1)


# --- location encoder -------------------------------------------------------------------------------


def test_location_encoder_matches_reference():
    ours = LocationEncoder().eval()
    ours.load_state_dict(
        torch.load(released_weights_dir() / "location_encoder_weights.pth", weights_only=True)
    )
    ref = geoclip_model.LocationEncoder().eval()  # loads the same released weights
    x = random_coords(1000)
    with torch.no_grad():
        diff = (ours(x) - ref(x)).abs().max().item()
    assert diff <= 1e-5


def test_rff_projection_is_the_released_buffer():
    released = torch.load(released_weights_dir() / "location_encoder_weights.pth", weights_only=True)
    enc = LocationEncoder()
    assert "LocEnc2.capsule.0.b" in dict(enc.named_buffers())
    assert not any(name.endswith(".b") for name, _ in enc.named_parameters())
    enc.load_state_dict(released)
    assert torch.equal(enc.LocEnc2.capsule[0].b, released["LocEnc2.capsule.0.b"])


# --- CLIP tower conversion --------------------------------------------------------------------------


def test_timm_tower_equals_hf_image_features(tiny_clip):
    """QuickGELU timm variant reproduces HF CLIP exactly; the exact-GELU variant does not."""
    config = cc.config_from_hf(tiny_clip.config.to_dict(), tiny_clip.state_dict())
    assert config == cc.ClipVisionConfig(64, 2, 4, 256, 14, 224, 768, "quick_gelu", 1e-5)
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = image_features(tiny_clip, x)
        diffs = {}
        for act in ("quick_gelu", "gelu"):
            tower = cc.create_clip_vit(dataclasses.replace(config, act=act)).eval()
            cc.load_backbone_state(tower, tiny_clip.state_dict(), "tiny")
            diffs[act] = (tower(x) - want).abs().max().item()
    assert diffs["quick_gelu"] <= 1e-5
    assert diffs["gelu"] > 1e-3


def test_converted_formats_all_load(tiny_clip, tmp_path):
    """timm .safetensors / .pth, HF pytorch_model.bin and a prefixed full-GeoCLIP dict give one tower."""
    config = cc.config_from_hf(tiny_clip.config.to_dict(), tiny_clip.state_dict())
    timm_sd = cc.checkpoint_filter_fn(tiny_clip.state_dict(), cc.create_clip_vit(config))
    save_file({k: v.contiguous() for k, v in timm_sd.items()}, tmp_path / "timm.safetensors")
    torch.save({"state_dict": timm_sd}, tmp_path / "timm.pth")
    hf_dir = tmp_path / "hf"
    hf_dir.mkdir()
    torch.save(tiny_clip.state_dict(), hf_dir / "pytorch_model.bin")
    (hf_dir / "config.json").write_text(tiny_clip.config.to_json_string())
    prefixed = {f"image_encoder.CLIP.{k}": v for k, v in tiny_clip.state_dict().items()}
    torch.save(prefixed, tmp_path / "geoclip_full.pth")
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want = image_features(tiny_clip, x)
        for path in ("timm.safetensors", "timm.pth", "hf", "hf/pytorch_model.bin", "geoclip_full.pth"):
            ckpt = cc.read_clip_checkpoint(tmp_path / path)
            tower = cc.create_clip_vit(ckpt.config or config).eval()
            cc.load_backbone_state(tower, ckpt.state_dict, ckpt.name)
            assert (tower(x) - want).abs().max().item() <= 1e-5, path


def test_bad_backbone_files_raise_weights_error(tiny_clip, tmp_path):
    tower = cc.create_clip_vit(cc.ClipVisionConfig(64, 2, 4, 256, 14, 112, 768))
    wrong = cc.create_clip_vit(cc.ClipVisionConfig(32, 2, 4, 128, 14, 112, 768)).state_dict()
    with pytest.raises(WeightsError, match="do not fit"):
        cc.load_backbone_state(tower, wrong, "wrong")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    (tmp_path / "pickle.pth").write_bytes(b"")
    torch.save({"weights": dataclasses.replace(cc.VIT_L14_OPENAI)}, tmp_path / "object.pth")
    for name in ("junk.safetensors", "pickle.pth", "object.pth", "missing.pth"):
        with pytest.raises(WeightsError):
            cc.read_clip_checkpoint(tmp_path / name)


# --- full-model parity with the reference -----------------------------------------------------------


def test_logits_and_topk_match_reference(ours, reference, pixels, gallery):
    with torch.inference_mode():
        want = reference(pixels, gallery)
        got = ours(pixels)
        pred = ours.predict(pixels, top_k=5)
    assert (got - want).abs().max().item() <= 1e-4
    ref_scores, ref_index = want.softmax(dim=1).topk(5, dim=1)
    assert torch.equal(pred.topk_lat, gallery[ref_index][..., 0].double())
    assert torch.equal(pred.topk_lon, gallery[ref_index][..., 1].double())
    assert (pred.topk_score - ref_scores).abs().max().item() <= 1e-4


def test_predict_matches_reference_predict(ours, reference, photo_paths, pixels):
    """The package's own predict(image_path) (its processor, its gallery) against ours on the same pixels."""
    ref_gps, ref_prob = reference.predict(str(photo_paths[0]), top_k=5)
    with torch.inference_mode():
        pred = ours.predict(pixels[:1], top_k=5)
    assert torch.equal(pred.topk_lat[0], ref_gps[:, 0].double())
    assert torch.equal(pred.topk_lon[0], ref_gps[:, 1].double())
    assert (pred.topk_score[0] - ref_prob).abs().max().item() <= 1e-4


def test_preprocess_matches_clip_processor(ours):
    processor = transformers.CLIPImageProcessor()
    pre = ours.preprocess()
    assert pre == clip_preprocess(224)
    assert pre.input_size == processor.crop_size["height"] == processor.crop_size["width"]
    assert pre.input_size == processor.size["shortest_edge"]
    assert pre.mean == tuple(processor.image_mean)
    assert pre.std == tuple(processor.image_std)
    assert int(processor.resample) == 3 and pre.interpolation == "bicubic"  # PIL.Image.BICUBIC


# --- prediction contract ----------------------------------------------------------------------------


def test_prediction_contract(ours, pixels):
    with torch.inference_mode():
        pred = ours.predict(pixels, top_k=7)
    b = len(pixels)
    assert pred.lat.shape == pred.lon.shape == pred.confidence.shape == (b,)
    assert pred.topk_lat.shape == pred.topk_lon.shape == pred.topk_score.shape == (b, 7)
    assert pred.lat.dtype == torch.float64 and pred.lat.device.type == "cpu"
    assert torch.equal(pred.lat, pred.topk_lat[:, 0]) and torch.equal(pred.lon, pred.topk_lon[:, 0])
    assert torch.all(pred.topk_score[:, :-1] >= pred.topk_score[:, 1:])
    assert torch.all((pred.confidence >= 0) & (pred.confidence <= 1))
    assert torch.all(pred.confidence >= pred.topk_score[:, 0] - 1e-6)  # the top-1 point is within 25 km
    assert pred.extras == {}
    for bad in (0, len(ours.gps_gallery) + 1):
        with pytest.raises(InputError, match="top-k"):
            ours.predict(pixels[:1], top_k=bad)


def test_confidence_is_probability_mass_within_25km(ours, pixels):
    """Brute-force numpy haversine over the whole gallery gives the same mass."""
    with torch.inference_mode():
        probs = ours(pixels).softmax(dim=1).numpy()
        pred = ours.predict(pixels, top_k=1)
    g = ours.gps_gallery.numpy().astype(np.float64)
    for row in range(len(pixels)):
        d = haversine_np(pred.lat[row].item(), pred.lon[row].item(), g[:, 0], g[:, 1])
        want = probs[row][d <= CONFIDENCE_RADIUS_KM].sum()
        assert math.isclose(pred.confidence[row].item(), want, abs_tol=1e-5)


def test_confidence_counts_a_dense_cluster(clip_folder):
    """Points a few km apart share the mass; a point 100 km away does not."""
    model = build_geoclip(backbone_weights=clip_folder, allow_mismatched_heads=True)
    model.set_gallery(torch.tensor([[48.85, 2.35], [48.86, 2.36], [48.90, 2.30], [49.75, 2.35]]))
    probs = torch.tensor([[0.5, 0.2, 0.1, 0.2]])
    mass, radius = model._spread(probs, model.gps_gallery[:1])
    assert mass.item() == pytest.approx(0.8)
    assert radius.item() == 0.0  # half the probability sits on the predicted point itself
    mass, radius = model._spread(torch.tensor([[0.3, 0.3, 0.2, 0.2]]), model.gps_gallery[:1])
    expected = haversine_np(48.85, 2.35, 48.86, 2.36)  # the second point completes half the mass
    assert radius.item() == pytest.approx(float(expected), abs=1e-3)  # float32 gallery: metres


def test_gallery_is_encoded_once(clip_folder, gallery, pixels):
    model = build_geoclip(backbone_weights=clip_folder, allow_mismatched_heads=True)
    model.set_gallery(gallery[:300])
    calls = []
    model.location_encoder.register_forward_hook(lambda *_: calls.append(1))
    model.prepare()
    with torch.inference_mode():
        for _ in range(3):
            model.predict(pixels[:1], top_k=3)
    assert len(calls) == 1
    assert model.gallery_features.shape == (300, 512) and model.gallery_features.dtype == torch.float32


def test_autocast_bf16_touches_only_the_backbone(ours, pixels):
    """Under bf16 autocast the gallery embedding, logits and probabilities stay float32."""
    features = ours.gallery_features.clone()
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        ours.prepare()
        logits = ours(pixels)
        pred = ours.predict(pixels, top_k=3)
    assert torch.equal(ours.gallery_features, features)
    assert logits.dtype == torch.float32 and pred.topk_score.dtype == torch.float32


# --- gallery files ----------------------------------------------------------------------------------


def test_default_gallery_is_the_packaged_100k():
    g = load_gallery(None)
    assert default_gallery_path().name == "coordinates_100K.csv"
    assert g.shape == (100_000, 2) and g.dtype == torch.float32
    assert g[:, 0].abs().max() <= 90 and g[:, 1].abs().max() <= 180


@pytest.mark.parametrize(
    "lat,lon", [("lat", "lon"), ("Latitude", "LONGITUDE"), ("LAT", "LON"), ("lat", "lng")]
)
def test_gallery_csv_column_names(tmp_path, lat, lon):
    path = tmp_path / "g.csv"
    path.write_text(f"id,{lat},{lon}\na,10.5,-20.25\nb,-33.9,151.2\n")
    assert np.allclose(load_gallery(path).numpy(), [[10.5, -20.25], [-33.9, 151.2]])


def test_gallery_parquet_and_invalid_rows(tmp_path):
    path = tmp_path / "g.parquet"
    table = pa.table(
        {"Latitude": [1.0, None, 95.0, 45.0, float("nan")], "Longitude": [2.0, 3.0, 4.0, 200.0, 5.0]}
    )
    pq.write_table(table, path)
    assert load_gallery(path).tolist() == [[1.0, 2.0]]
    csv = tmp_path / "mixed.csv"
    csv.write_text("lat,lon\n1.5,2.5\nabc,3\n,4\n91,0\n-45,-179.5\n")
    assert load_gallery(csv).tolist() == [[1.5, 2.5], [-45.0, -179.5]]


def test_bad_gallery_files_raise_input_error(tmp_path):
    cases = {
        "missing.csv": None,
        "nocols.csv": "x,y\n1,2\n",
        "empty.csv": "lat,lon\n",
        "allbad.csv": "lat,lon\nfoo,bar\n",
        "broken.parquet": b"PAR1 this is not parquet",
        "binary.csv": b"\x00\x01\x02\xff\xfe",
    }
    for name, content in cases.items():
        path = tmp_path / name
        if isinstance(content, str):
            path.write_text(content)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        with pytest.raises(InputError) as info:
            load_gallery(path)
        assert "\n" not in str(info.value) and str(path) in str(info.value), name


# --- real ViT-L/14 (GPU machine) --------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_vit_l14_parity_with_reference_on_gpu(pixels, gallery):
    """The full ViT-L/14 config (random CLIP weights, released heads) against the package, on CUDA."""
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        diffs = vit_l14_parity(torch.device("cuda"), pixels, gallery)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    assert diffs["logits"] <= 1e-3
    assert diffs["topk_same"]
    assert diffs["topk_score"] <= 1e-4


def vit_l14_parity(device: torch.device, pixels: torch.Tensor, gallery: torch.Tensor) -> dict:
    """Build both models at full size on `device`, compare; also check bf16 autocast's contract."""
    torch.manual_seed(0)
    ref = geoclip_model.GeoCLIP(from_pretrained=True, clip_pretrained=False).eval()
    ref.gps_gallery = gallery.clone()
    clip = ref.image_encoder.CLIP
    config = cc.config_from_hf(clip.config.to_dict(), clip.state_dict())
    assert config == cc.VIT_L14_OPENAI
    with torch.device("meta"):
        tower = cc.create_clip_vit(config)
    cc.load_backbone_state(tower, {k: v.clone() for k, v in clip.state_dict().items()}, "random ViT-L/14")
    ours = GeoCLIP(tower, clip_preprocess(224), gallery)
    ours.load_released_heads()
    ref, ours = ref.to(device), ours.to(device).eval()
    ours.prepare()
    x = pixels.to(device)
    with torch.inference_mode():
        want = ref(x, ref.gps_gallery)
        got = ours(x)
        pred = ours.predict(x, top_k=5)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            bf16 = ours.predict(x, top_k=5)
    assert torch.all((bf16.confidence >= 0) & (bf16.confidence <= 1))
    assert bf16.topk_score.dtype == torch.float32
    ref_scores, ref_index = want.softmax(dim=1).topk(5, dim=1)
    return {
        "logits": (got - want).abs().max().item(),
        "topk_same": torch.equal(pred.topk_lat, gallery[ref_index.cpu()][..., 0].double())
        and torch.equal(pred.topk_lon, gallery[ref_index.cpu()][..., 1].double()),
        "topk_score": (pred.topk_score - ref_scores.cpu()).abs().max().item(),
        "bf16_top1_same": torch.equal(bf16.lat, pred.lat),
    }


def test_error_radius_is_never_below_the_gallery_spacing(clip_folder):
    """A gallery on a 0.5-degree grid: however sure the model is, error_km >= its spacing (about 45 km
    here, the median nearest-neighbour distance, checked against brute force); geoclip-lite shares it."""
    from geotag.geo.spacing import median_spacing_km
    from geotag.models.geoclip_lite import GeoCLIPLite

    assert GeoCLIPLite.predict is GeoCLIP.predict  # the floor is applied in the one predict both use
    lat, lon = np.meshgrid(np.arange(40.0, 45.0, 0.5), np.arange(0.0, 5.0, 0.5), indexing="ij")
    grid = np.stack([lat.ravel(), lon.ravel()], 1)
    d = haversine_np(grid[:, None, 0], grid[:, None, 1], grid[None, :, 0], grid[None, :, 1])
    np.fill_diagonal(d, np.inf)
    spacing = float(np.median(d.min(axis=1)))
    assert median_spacing_km(np.concatenate([grid, grid[:5]])) == pytest.approx(spacing, rel=1e-9)
    assert 35 < spacing < 56
    model = build_geoclip(backbone_weights=clip_folder, allow_mismatched_heads=True)
    model.set_gallery(torch.tensor(grid, dtype=torch.float32))
    model.prepare()
    with torch.no_grad():
        model.logit_scale.fill_(20.0)  # a very sure model: nearly all the mass on one point
    size = model.preprocess().input_size
    with torch.inference_mode():
        pred = model.predict(torch.rand(3, 3, size, size), top_k=1)
    assert pred.error_km.min().item() >= model.gallery_spacing_km() - 1e-9
    assert model.gallery_spacing_km() == pytest.approx(spacing, rel=1e-5)  # float32 gallery
