"""GeoCLIP (Vivanco Cepeda et al., NeurIPS 2023): image-to-GPS retrieval over a gallery of coordinates.

Image encoder: a frozen CLIP ViT-L/14 (timm, see clip_convert) whose 768-d projected features go through
an MLP 768-768-512. Location encoder: (lat, lon) -> Equal Earth projection -> random Fourier features at
sigma 2^0, 2^4, 2^8, one MLP capsule per sigma, outputs summed to 512-d. The logits are the learned
logit scale times the cosine similarity, and the prediction is the best-scoring gallery coordinate.

Module and parameter names follow the `geoclip` package, so its released head weights
(image_encoder_mlp_weights.pth, location_encoder_weights.pth, logit_scale_weights.pth) load directly.
The gallery is encoded once in `prepare()` and kept on the device (the most requested GeoCLIP fix);
similarity, softmax and top-k always run in float32 even under bf16 autocast, which only the backbone
sees: random Fourier features at sigma 256 reach phases of thousands of radians, where bf16 is noise.
"""

from __future__ import annotations

import importlib.metadata
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from geotag.cache import cached_tensor, tensor_key
from geotag.errors import InputError
from geotag.geo.distance import EARTH_RADIUS_KM, haversine_torch
from geotag.geo.spacing import median_spacing_km
from geotag.io.gps_gallery import geoclip_package_dir
from geotag.io.weights import read_torch_file
from geotag.models.base import GeoModel, Prediction, Preprocess
from geotag.models.prior import Prior, candidate_log_prior, posterior

SIGMAS = (2.0**0, 2.0**4, 2.0**8)
CONFIDENCE_RADIUS_KM = 25.0
"""`confidence` is the gallery probability mass within this distance of the predicted point."""
LOGIT_SCALE_INIT = math.log(1 / 0.07)
GALLERY_CHUNK = 8192  # gallery rows encoded per step in prepare()
DISTANCE_BLOCK = 4_000_000  # max elements of one (rows x gallery) distance block in predict()
RADIUS_BINS = 4096  # chord-length bins of the half-mass search in _spread (about 3 km wide near 0)

# Equal Earth projection constants (Šavrič, Patterson & Jenny 2018), scaled as the geoclip package does.
_A1, _A2, _A3, _A4 = 1.340264, -0.081106, 0.000893, 0.003796
_SCALE = 66.50336


def geoclip_version() -> str:
    return importlib.metadata.version("geoclip")


def released_weights_dir() -> Path:
    """Folder of the released GeoCLIP heads inside the installed geoclip package."""
    return geoclip_package_dir() / "model" / "weights"


def _fp32(device: torch.device) -> torch.autocast:
    """A region where autocast is off, so float32 inputs stay float32."""
    return torch.autocast(device_type=device.type, enabled=False)


def equal_earth(latlon: torch.Tensor) -> torch.Tensor:
    """(N, 2) lat/lon degrees -> (N, 2) Equal Earth x/y, scaled to about [-1, 1] like the release.

    The operation order mirrors the reference so float32 results match it bit for bit: the sigma-256
    Fourier features amplify any rounding difference.
    """
    lat, lon = torch.deg2rad(latlon[:, 0]), torch.deg2rad(latlon[:, 1])
    sqrt3 = torch.sqrt(torch.tensor(3.0))
    theta = torch.asin((sqrt3 / 2) * torch.sin(lat))
    denominator = 3 * (9 * _A4 * theta**8 + 7 * _A3 * theta**6 + 3 * _A2 * theta**2 + _A1)
    x = (2 * sqrt3 * lon * torch.cos(theta)) / denominator
    y = _A4 * theta**9 + _A3 * theta**7 + _A2 * theta**3 + _A1 * theta
    return (torch.stack((x, y), dim=1) * _SCALE) / 180


class GaussianEncoding(nn.Module):
    """Random Fourier features [cos 2πBv, sin 2πBv] (Tancik et al. 2020); B is a fixed N(0, σ²) matrix.

    `b` is a buffer (never trained) but is stored in the released state dict, so the released
    projection is what gets used.
    """

    def __init__(self, sigma: float, input_size: int = 2, encoded_size: int = 256):
        super().__init__()
        self.register_buffer("b", torch.randn(encoded_size, input_size) * sigma)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        vp = 2 * math.pi * v @ self.b.T
        return torch.cat((torch.cos(vp), torch.sin(vp)), dim=-1)


class LocationCapsule(nn.Module):
    """One sigma's branch: RFF (512) -> 3 x (Linear 1024, ReLU) -> Linear 512."""

    def __init__(self, sigma: float, width: int = 1024, out_dim: int = 512):
        super().__init__()
        self.capsule = nn.Sequential(
            GaussianEncoding(sigma, 2, 256),
            nn.Linear(512, width),
            nn.ReLU(),
            nn.Linear(width, width),
            nn.ReLU(),
            nn.Linear(width, width),
            nn.ReLU(),
        )
        self.head = nn.Sequential(nn.Linear(width, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.capsule(x))


class LocationEncoder(nn.Module):
    """GPS -> 512-d: the sum of one capsule per sigma over the Equal Earth coordinates."""

    def __init__(self, sigmas: tuple[float, ...] = SIGMAS):
        super().__init__()
        self.sigmas = tuple(sigmas)
        for i, sigma in enumerate(self.sigmas):
            self.add_module(f"LocEnc{i}", LocationCapsule(sigma))

    def forward(self, latlon: torch.Tensor) -> torch.Tensor:
        projected = equal_earth(latlon)
        out = self.LocEnc0(projected)
        for i in range(1, len(self.sigmas)):
            out = out + getattr(self, f"LocEnc{i}")(projected)
        return out


def released_location_encoder() -> LocationEncoder:
    """The GPS encoder with the weights released in the geoclip package (read-only, eval mode)."""
    encoder = LocationEncoder()
    path = released_weights_dir() / "location_encoder_weights.pth"
    state = read_torch_file(path)
    encoder.load_state_dict(state)
    return encoder.eval().requires_grad_(False)


@torch.no_grad()
def embed_locations(
    lat: np.ndarray | torch.Tensor,
    lon: np.ndarray | torch.Tensor,
    *,
    encoder: LocationEncoder | None = None,
    normalize: bool = False,
    chunk: int = GALLERY_CHUNK,
) -> np.ndarray:
    """(N,) latitudes and longitudes in degrees -> (N, 512) float32 GPS-encoder outputs, for downstream
    use (the paper's "semantically rich" location features). `encoder` defaults to the released one;
    `normalize` L2-normalises each row (what GeoCLIP compares against image features). Float32 throughout,
    like the release, so the outputs equal the geoclip package's LocationEncoder bit for bit."""
    encoder = released_location_encoder() if encoder is None else encoder
    latlon = torch.stack((torch.as_tensor(lat), torch.as_tensor(lon)), dim=1).float()
    device = next(encoder.parameters()).device
    parts = []
    with _fp32(device):
        for i in range(0, len(latlon), chunk):
            out = encoder(latlon[i : i + chunk].to(device))
            parts.append((F.normalize(out, dim=1) if normalize else out).float().cpu())
    return torch.cat(parts).numpy() if parts else np.zeros((0, 512), dtype=np.float32)


class ImageEncoder(nn.Module):
    """A frozen CLIP vision tower (projected features) followed by the trainable MLP 768-768-512."""

    def __init__(self, backbone: nn.Module, feature_dim: int = 768, out_dim: int = 512):
        super().__init__()
        self.backbone = backbone.requires_grad_(False)
        self.mlp = self.make_mlp(feature_dim, out_dim)

    @staticmethod
    def make_mlp(feature_dim: int = 768, out_dim: int = 512) -> nn.Sequential:
        return nn.Sequential(nn.Linear(feature_dim, 768), nn.ReLU(), nn.Linear(768, out_dim))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        feats = self.backbone(images)  # may run in bf16 under the engine's autocast
        with _fp32(feats.device):
            return self.mlp(feats.float())


class GeoCLIP(GeoModel):
    """GeoCLIP with a fixed GPS gallery.

    `forward(images)` returns the (B, N) logits against the gallery; `predict` returns the top-1
    gallery point as the prediction, the top-k points with their softmax probabilities, and as
    `confidence` the probability mass of gallery points within 25 km (CONFIDENCE_RADIUS_KM) of the
    top-1 point: the model's own probability that the photo lies within city distance of its answer.
    It is a probability in [0, 1], not a raw logit, comparable across images for the same gallery; it is
    only as calibrated as GeoCLIP's softmax and depends on how dense the gallery is around the answer.
    """

    name = "geoclip"
    accepts_prior = True

    def __init__(
        self, backbone: nn.Module, preprocess: Preprocess, gallery: torch.Tensor, weights_label: str = ""
    ):
        super().__init__()
        self.image_encoder = ImageEncoder(backbone)
        self.location_encoder = LocationEncoder()
        self.logit_scale = nn.Parameter(torch.tensor(LOGIT_SCALE_INIT))
        self._preprocess = preprocess
        self.weights_label = weights_label
        self.backbone_config: object | None = None  # the CLIP tower's shape (registry), kept in checkpoints
        self.register_buffer("gps_gallery", gallery.float(), persistent=False)
        self.register_buffer("gallery_features", None, persistent=False)

    def preprocess(self) -> Preprocess:
        return self._preprocess

    def compile_targets(self) -> list[nn.Module]:
        return [self.image_encoder.backbone]

    def load_released_heads(self, folder: Path | None = None) -> None:
        """Load the image MLP, location encoder and logit scale released with the geoclip package."""
        folder = released_weights_dir() if folder is None else folder

        def read(name: str):
            return read_torch_file(folder / f"{name}.pth")

        self.image_encoder.mlp.load_state_dict(read("image_encoder_mlp_weights"))
        self.location_encoder.load_state_dict(read("location_encoder_weights"))
        with torch.no_grad():
            self.logit_scale.copy_(read("logit_scale_weights"))
        self.gallery_features = None

    def reset_heads(self, seed: int, sigmas: tuple[float, ...] = SIGMAS) -> None:
        """Random heads for training from scratch (the paper's recipe): a new GPS encoder (fresh
        random Fourier projections at `sigmas`), a new image MLP and the logit scale at 1/0.07, drawn
        from a generator seeded by `seed` so the same seed gives the same start. The CLIP tower stays."""
        device = self.logit_scale.device
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.location_encoder = LocationEncoder(sigmas).to(device)
            self.image_encoder.mlp = ImageEncoder.make_mlp().to(device)
        with torch.no_grad():
            self.logit_scale.fill_(LOGIT_SCALE_INIT)
        self.gallery_features = None

    def set_gallery(self, gallery: torch.Tensor) -> None:
        """Replace the (N, 2) lat/lon gallery; its embeddings are recomputed by the next prepare()."""
        self.gps_gallery = gallery.float().to(self.logit_scale.device)
        self.gallery_features = None

    @torch.no_grad()
    def encode_locations(self, latlon: torch.Tensor, chunk: int = GALLERY_CHUNK) -> torch.Tensor:
        """(N, 2) degrees -> (N, 512) L2-normalised float32 embeddings, `chunk` rows at a time."""
        latlon = latlon.float()
        with _fp32(latlon.device):
            parts = [
                F.normalize(self.location_encoder(latlon[i : i + chunk]), dim=1)
                for i in range(0, len(latlon), chunk)
            ]
        return torch.cat(parts)

    def prepare(self) -> None:
        """Encode the gallery once, on the model's device, in float32; reuse an earlier run's result
        from the on-disk cache when the coordinates, GPS-encoder weights and device type are the same."""
        device = self.gps_gallery.device
        key = tensor_key(self.gps_gallery, *self.location_encoder.state_dict().values())
        features = cached_tensor(
            f"geoclip-gallery-{device.type}", key, lambda: self.encode_locations(self.gps_gallery)
        )
        self.gallery_features = features.to(device)

    def shared_state(self) -> dict[str, torch.Tensor]:
        """The gallery embeddings: encoded once per run, then shared with every replica."""
        feats = self._gallery_ready()
        return {"gallery_features": feats.detach().cpu()}

    def adopt_shared_state(self, state: dict[str, torch.Tensor]) -> None:
        feats = state.get("gallery_features")
        if feats is None or len(feats) != len(self.gps_gallery):
            self.prepare()
        else:
            self.gallery_features = feats.to(self.gps_gallery.device)

    def _gallery_ready(self) -> torch.Tensor:
        feats = self.gallery_features
        if feats is None or feats.device != self.gps_gallery.device:
            self.prepare()
        return self.gallery_features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised images -> (B, N) float32 logits over the gallery."""
        gallery = self._gallery_ready()
        image_features = self.image_encoder(images)
        with _fp32(image_features.device):
            image_features = F.normalize(image_features.float(), dim=1)
            return self.logit_scale.float().exp() * (image_features @ gallery.T)

    @torch.no_grad()
    def text_logits(self, text_features: torch.Tensor) -> torch.Tensor:
        """(T, 768) CLIP projected *text* features -> (T, N) float32 logits over the gallery: the image
        MLP applied to text features (CLIP's shared image-text space), as the paper's text queries."""
        gallery = self._gallery_ready()
        with _fp32(gallery.device):
            feats = F.normalize(self.image_encoder.mlp(text_features.float().to(gallery.device)), dim=1)
            return self.logit_scale.float().exp() * (feats @ gallery.T)

    def predict(self, images: torch.Tensor, top_k: int, *, prior: Prior | None = None) -> Prediction:
        n = len(self.gps_gallery)
        if not 1 <= top_k <= n:
            raise InputError(f"top-k must be between 1 and the gallery size {n}, got {top_k}")
        logits = self.forward(images)
        with _fp32(logits.device):
            probs = logits.float().softmax(dim=1)
            if prior is not None:
                probs = self.under_prior(probs, prior)
            scores, index = probs.topk(top_k, dim=1)
            coords = self.gps_gallery[index]  # (B, k, 2)
            confidence, error_km = self._spread(probs, coords[:, 0])
            error_km = error_km.double().clamp_min(self.gallery_spacing_km())
        coords = coords.double().cpu()
        return Prediction(
            lat=coords[:, 0, 0].contiguous(),
            lon=coords[:, 0, 1].contiguous(),
            confidence=confidence.cpu(),
            topk_lat=coords[..., 0].contiguous(),
            topk_lon=coords[..., 1].contiguous(),
            topk_score=scores.cpu(),
            error_km=error_km.double().cpu(),
        )

    def gallery_spacing_km(self) -> float:
        """The floor of `error_km`: the GPS gallery's median nearest-neighbour distance (geo.spacing),
        computed once per gallery: the model cannot place a photo more finely than its candidates."""
        gallery = self.gps_gallery
        cached = getattr(self, "_spacing", None)
        if cached is None or cached[0] is not gallery:
            self._spacing = (gallery, median_spacing_km(gallery.detach().double().cpu().numpy()))
        return self._spacing[1]

    def under_prior(self, probs: torch.Tensor, prior: Prior) -> torch.Tensor:
        """The posterior over the whole gallery, on its device (models/prior.py)."""
        return posterior(probs, candidate_log_prior(prior, self.gps_gallery))

    def _spread(self, probs: torch.Tensor, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per row: the probability of gallery points within CONFIDENCE_RADIUS_KM of `points[row]`
        (the confidence), and the radius around `points[row]` that holds half the probability (the
        model's median error estimate, `error_km`).

        Distances are compared through float64 unit vectors (one (rows x 3) @ (3 x gallery) product
        instead of a haversine per pair, which dominated a CPU profile); the half-mass radius comes from
        a chord-length histogram and a sort of the one bin where the mass crosses half, not a sort of
        the whole gallery per row. Both give the answers of the brute-force haversine and full sort
        (tests/test_geoclip.py). Row blocks of at most DISTANCE_BLOCK elements bound the memory.
        """
        gallery = self.gps_gallery
        cached = getattr(self, "_xyz", None)
        if cached is None or cached[0] is not gallery:  # the gallery's unit vectors, once per gallery
            self._xyz = (gallery, unit_vectors(gallery))
        xyz = self._xyz[1]
        cos_r = math.cos(CONFIDENCE_RADIUS_KM / EARTH_RADIUS_KM)
        rows = max(1, DISTANCE_BLOCK // len(gallery))
        mass, radius = [], []
        for i in range(0, len(points), rows):
            p = probs[i : i + rows].float()
            pts = points[i : i + rows]
            dot = unit_vectors(pts) @ xyz.T  # (rows, N) float64 cosine of the central angle
            mass.append(p.masked_fill(dot < cos_r, 0.0).sum(dim=1))
            chord = (2.0 - 2.0 * dot).clamp_(min=0.0).sqrt_().float()  # monotone in distance, in [0, 2]
            nearest = half_mass_index(chord, p)
            g = gallery[nearest].double()
            radius.append(haversine_torch(pts[:, 0].double(), pts[:, 1].double(), g[:, 0], g[:, 1]).float())
        return torch.cat(mass).clamp(0.0, 1.0), torch.cat(radius)


def unit_vectors(latlon: torch.Tensor) -> torch.Tensor:
    """(N, 2) degrees -> (N, 3) float64 points on the unit sphere."""
    lat, lon = torch.deg2rad(latlon[:, 0].double()), torch.deg2rad(latlon[:, 1].double())
    return torch.stack((lat.cos() * lon.cos(), lat.cos() * lon.sin(), lat.sin()), dim=1)


def half_mass_index(key: torch.Tensor, p: torch.Tensor, bins: int = RADIUS_BINS) -> torch.Tensor:
    """Per row, the column where the cumulative `p` in increasing `key` order first reaches half the
    row's total: what `key.sort()` then `cumsum` gives, without sorting whole rows. `key` in [0, 2].

    Pass 1 sums `p` into `bins` equal-width key bins and finds the bin where the cumulative mass crosses
    half; pass 2 sorts only that bin's entries (a top-k over the row with the others masked out).
    """
    b = key.shape[0]
    bin_of = (key * (bins / 2.0)).long().clamp_(0, bins - 1)
    per_bin = torch.zeros(b, bins, dtype=p.dtype, device=p.device).scatter_add_(1, bin_of, p)
    cum = per_bin.cumsum(dim=1)
    half = 0.5 * cum[:, -1:]
    crossing = (cum < half).sum(dim=1, keepdim=True).clamp_(max=bins - 1)
    before = torch.where(crossing > 0, cum.gather(1, (crossing - 1).clamp(min=0)), 0.0)
    inside = bin_of == crossing
    count = inside.sum(dim=1, keepdim=True)
    width = max(1, int(count.max()))
    masked = key.masked_fill(~inside, math.inf)
    _, cols = masked.topk(width, dim=1, largest=False, sorted=True)
    in_bin = torch.arange(width, device=key.device)[None, :] < count
    running = before + p.gather(1, cols).masked_fill_(~in_bin, 0.0).cumsum(dim=1)
    j = (running < half).sum(dim=1, keepdim=True).clamp_(max=(count - 1).clamp(min=0))
    return cols.gather(1, j).squeeze(1)
