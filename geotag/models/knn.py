"""kNN geolocation: embed a photo, find its k most similar geotagged photos, average their positions.

The [L]kNN baseline of TransLocator's table (after Vo, Jacobs & Hays, ICCV 2017), here over a gallery the
user builds from any photos with GPS (`geotag gallery build`), embedded by any registry backbone.

- Search: cosine similarity by matmul on the model's device (float16 on CUDA, float32 on CPU), in
  gallery chunks of at most SIM_BLOCK similarities with a running top-k merge, so a gallery of millions
  never needs a (batch x gallery) matrix in memory.
- Estimate: kernel density over the neighbours' positions, as Vo et al. do: each neighbour i has a
  weight w_i = softmax(similarity / temperature) and the density at neighbour j is
  sum_i w_i exp(-d_ij^2 / 2 sigma^2). The densest neighbour is the mode, and the prediction is the
  similarity-weighted spherical mean (mean of unit vectors, projected back to the sphere: no antimeridian
  trouble) of the neighbours around it, weights w_i exp(-d_i,mode^2 / 2 sigma^2). A plain weighted mean
  of all k is what sigma -> infinity gives, and it fails whenever the neighbours disagree: on the Arezzo
  fixtures one photo's top neighbour is in Czechia and the mean of k=10 lands 800 km away, while the
  mode-then-mean estimate puts all nine within 0.5 km (sigma 25 km, temperature 0.1, k 10).
- A copy of the query in the gallery (similarity >= DUPLICATE_SIM) is the answer: the mean is taken
  over the copies alone, so a gallery photo gets its own coordinates back. `leave_one_out` drops the
  copies instead, to score a gallery on its own photos ("how well do my other photos place this one?").
- confidence: the weight within 25 km of the estimate; error_km: the weighted median distance of the k
  neighbours from it, never below the kernel's sigma: neighbours that coincide say nothing finer than
  the kernel the mode was found with (docs/models.md, "error radius floors").
- self_match (an extra column): a row whose answer came from the photo itself is marked, so eval and the
  report can keep it out of the scores: `image` when a neighbour used is the same photo (its image id or
  path; plain kNN only, leave-one-out drops those), `copy` when one has near-identical features
  (cosine >= DUPLICATE_SIM: a re-encoded or resized copy). The engine adds `truth` when a candidate
  sits on the row's ground truth (geotag.engine.self_match).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from geotag.errors import InputError
from geotag.geo.distance import haversine_torch
from geotag.models.backbones import PooledBackbone, create_backbone
from geotag.models.base import GeoModel, Prediction, Preprocess
from geotag.models.prior import KNN_PRIOR_FACTOR, Prior, candidate_log_prior

DEFAULT_K = 10
DEFAULT_TEMPERATURE = 0.1
DEFAULT_SIGMA_KM = 25.0
"""Kernel bandwidth of the density over neighbour positions: the city threshold."""
DUPLICATE_SIM = 0.999
"""Plain kNN: a gallery entry at or above this cosine is taken for a copy of the query, whose position
then wins outright (float16 storage costs ~1e-4). Never used to leave a query out: see GalleryKeys."""
CONFIDENCE_RADIUS_KM = 25.0
SIM_BLOCK = 1 << 24  # elements of one (queries x gallery chunk) similarity block: 64 MB in float32
CPU_FLOAT32_BYTES = 4 << 30  # a CPU gallery up to this size (about 800K x 1280) is kept in float32


def chunked_topk(
    query: torch.Tensor, gallery: torch.Tensor, k: int, block: int = SIM_BLOCK
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k cosine similarities of normalised `query` (B, D) against `gallery` (N, D), both sorted desc.

    The gallery may live on another device (a CPU-held gallery with CUDA queries) or dtype (float16 on
    CPU): each chunk is moved / converted as it is used, at most `block` elements at a time.
    Similarities come back float32, indices int64, on the query's device.
    """
    n = gallery.shape[0]
    k = min(k, n)
    dtype = torch.float16 if query.device.type == "cuda" else torch.float32
    q = query.to(dtype)
    rows = block // max(1, q.shape[0])  # bounds the (B x chunk) similarity block
    if gallery.dtype != dtype or gallery.device != q.device:
        rows = min(rows, block // gallery.shape[1])  # and the chunk's converted / moved copy
    chunk = max(k, rows)
    best_s: torch.Tensor | None = None
    best_i: torch.Tensor | None = None
    for start in range(0, n, chunk):
        g = gallery[start : start + chunk].to(q.device, dtype, non_blocking=True)
        s, i = (q @ g.T).float().topk(min(k, g.shape[0]), dim=1)
        i = i + start
        if best_s is None or best_i is None:
            best_s, best_i = s, i
            continue
        s, i = torch.cat([best_s, s], dim=1), torch.cat([best_i, i], dim=1)
        best_s, pos = s.topk(k, dim=1)
        best_i = i.gather(1, pos)
    assert best_s is not None and best_i is not None
    return best_s, best_i


def spherical_mean(
    lat: torch.Tensor, lon: torch.Tensor, weights: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted mean direction of (B, k) points (degrees); rows whose vectors cancel take their first."""
    phi, lam = torch.deg2rad(lat.double()), torch.deg2rad(lon.double())
    w = weights.double()
    x = (w * torch.cos(phi) * torch.cos(lam)).sum(dim=1)
    y = (w * torch.cos(phi) * torch.sin(lam)).sum(dim=1)
    z = (w * torch.sin(phi)).sum(dim=1)
    out_lat = torch.rad2deg(torch.atan2(z, torch.hypot(x, y)))
    out_lon = torch.rad2deg(torch.atan2(y, x))
    flat = torch.sqrt(x * x + y * y + z * z) < 1e-9
    return torch.where(flat, lat[:, 0].double(), out_lat), torch.where(flat, lon[:, 0].double(), out_lon)


class KNNGeoModel(GeoModel):
    """kNN over an embedding gallery; see the module docstring for the estimator."""

    name = "knn"
    accepts_prior = True

    def __init__(
        self,
        backbone: PooledBackbone,
        preprocess: Preprocess,
        coords: torch.Tensor,
        embeddings: torch.Tensor,
        *,
        k: int = DEFAULT_K,
        temperature: float = DEFAULT_TEMPERATURE,
        sigma_km: float = DEFAULT_SIGMA_KM,
        leave_one_out: bool = False,
        gallery_keys: GalleryKeys | None = None,
        weights_label: str = "",
    ) -> None:
        super().__init__()
        if k < 1 or not temperature > 0 or not sigma_km > 0:
            raise InputError(
                f"knn needs k >= 1, temperature > 0 and sigma > 0; got {k}, {temperature}, {sigma_km}"
            )
        if embeddings.shape[1] != backbone.feature_dim:
            raise InputError(
                f"gallery features are {embeddings.shape[1]}-d, backbone {backbone.name} gives "
                f"{backbone.feature_dim}-d"
            )
        self.backbone = backbone.requires_grad_(False)
        self._preprocess = preprocess
        self.k = k
        self.temperature = temperature
        self.sigma_km = sigma_km
        self.leave_one_out = leave_one_out
        self.keys = gallery_keys
        self.needs_image_keys = leave_one_out or gallery_keys is not None
        self.weights_label = weights_label
        if leave_one_out:
            self.name = "knn-loo"
            if gallery_keys is None:
                raise InputError("leave-one-out kNN needs the gallery's image ids and paths")
        if gallery_keys is not None and len(gallery_keys.image_ids) != len(coords):
            raise InputError("the gallery's image ids and paths do not match its entries")
        self.register_buffer("gallery_coords", coords.double(), persistent=False)
        self.register_buffer("gallery_embeddings", embeddings.half(), persistent=False)

    def preprocess(self) -> Preprocess:
        return self._preprocess

    def prepare(self) -> None:
        """On the CPU, hold the gallery in float32 when it fits CPU_FLOAT32_BYTES: converting float16
        chunks per batch would cost more than the matmul itself."""
        emb = self.gallery_embeddings
        if emb.device.type == "cpu" and emb.dtype != torch.float32 and emb.numel() * 4 <= CPU_FLOAT32_BYTES:
            self.gallery_embeddings = emb.float()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised images -> (B, D) L2-normalised float32 features."""
        feats = self.backbone(images)
        with torch.autocast(device_type=feats.device.type, enabled=False):
            return F.normalize(feats.float(), dim=1)

    def neighbours(
        self, features: torch.Tensor, n: int, exclude: list[set[int]] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(similarities, gallery indices) of the `n` nearest, best first, leaving out each query's
        `exclude` entries (leave-one-out: the query itself, by identity, and its group)."""
        gallery = self.gallery_embeddings
        if not exclude or not any(exclude):
            return chunked_topk(features, gallery, n)
        extra = max(len(e) for e in exclude)
        sims, idx = chunked_topk(features, gallery, n + extra)
        for row, left_out in enumerate(exclude):
            if left_out:
                drop = torch.tensor(sorted(left_out), device=idx.device)
                sims[row] = sims[row].masked_fill(torch.isin(idx[row], drop), -math.inf)
        sims, order = sims.sort(dim=1, descending=True)
        return sims[:, :n], idx.gather(1, order)[:, :n]

    def neighbours_under_prior(
        self, features: torch.Tensor, n: int, exclude: list[set[int]] | None, prior: Prior
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The `n` best of KNN_PRIOR_FACTOR x n nearest neighbours by similarity / temperature plus the
        prior at their positions: (similarities, indices, log-prior), best first."""
        sims, idx = self.neighbours(features, min(n * KNN_PRIOR_FACTOR, len(self.gallery_coords)), exclude)
        log_prior = candidate_log_prior(prior, self.gallery_coords[idx])
        score = sims.float() / self.temperature + log_prior
        order = score.argsort(dim=1, descending=True, stable=True)[:, :n]
        return sims.gather(1, order), idx.gather(1, order), log_prior.gather(1, order)

    def excluded(
        self, image_ids: Sequence[str | None] | None, paths: Sequence[str] | None, groups: bool = True
    ) -> list[set[int]]:
        """Per query, the gallery entries leave-one-out must not use: those with its image id or its
        path (the same photo, whatever decoding made its features), and with --exclude-same (and
        `groups`), every entry of the same group (e.g. the same author)."""
        assert self.keys is not None
        n = len(image_ids or paths or [])
        out: list[set[int]] = []
        for q in range(n):
            hits = set(self.keys.by_id.get((image_ids or [None] * n)[q] or "", ()))
            if paths is not None:
                hits |= set(self.keys.by_path.get(normalise_path(paths[q]), ()))
            if groups and self.keys.groups is not None:
                for group in {self.keys.groups[i] for i in hits} - {None}:
                    hits |= set(self.keys.by_group[group])
            out.append(hits)
        return out

    def estimate(
        self, lat: torch.Tensor, lon: torch.Tensor, weights: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mode of the weighted kernel density over the (B, k) neighbour positions, then the kernel- and
        similarity-weighted spherical mean around it (see the module docstring)."""
        d = haversine_torch(lat[:, :, None], lon[:, :, None], lat[:, None, :], lon[:, None, :])  # (B, k, k)
        kernel = torch.exp(-0.5 * (d / self.sigma_km) ** 2)
        density = (kernel * weights[:, None, :]).sum(dim=2)
        # the mode is one of the neighbours that carry weight: a left-out entry (leave-one-out, the query's
        # own position) must not centre the estimate, however dense its surroundings
        density = density.masked_fill(weights <= 0, -math.inf) if bool((weights <= 0).any()) else density
        mode = density.argmax(dim=1)
        local = weights * kernel[torch.arange(len(mode), device=mode.device), mode]
        return spherical_mean(lat, lon, local)

    def predict(
        self,
        images: torch.Tensor,
        top_k: int,
        image_ids: Sequence[str | None] | None = None,
        paths: Sequence[str] | None = None,
        *,
        prior: Prior | None = None,
    ) -> Prediction:
        return self.predict_features(
            self.forward(images), top_k, image_ids=image_ids, paths=paths, prior=prior
        )

    def predict_features(
        self,
        features: torch.Tensor,
        top_k: int,
        image_ids: Sequence[str | None] | None = None,
        paths: Sequence[str] | None = None,
        *,
        prior: Prior | None = None,
    ) -> Prediction:
        """`predict` from (B, D) L2-normalised features (for callers that already hold them)."""
        if top_k < 1:
            raise InputError(f"top-k must be at least 1, got {top_k}")
        exclude = None
        if self.leave_one_out:
            if image_ids is None and paths is None:
                raise InputError("leave-one-out kNN needs each query's image id or path")
            exclude = self.excluded(image_ids, paths)
        with torch.autocast(device_type=features.device.type, enabled=False):
            log_prior = None
            if prior is None:
                sims, idx = self.neighbours(features, max(self.k, top_k), exclude)
            else:
                sims, idx, log_prior = self.neighbours_under_prior(
                    features, max(self.k, top_k), exclude, prior
                )
            k = min(self.k, sims.shape[1])
            coords = self.gallery_coords[idx]  # (B, n, 2) float64
            near = sims[:, :k]
            logits = (near / self.temperature).double()
            if log_prior is not None:
                logits = logits + log_prior[:, :k].double()
            if not self.leave_one_out:  # a copy of the query in the gallery gives its own position
                copies = near >= DUPLICATE_SIM
                logits = torch.where(copies.any(dim=1, keepdim=True) & ~copies, -math.inf, logits)
            weights = logits.softmax(dim=1).nan_to_num(0.0)  # a row with everything left out has no weight
            lat, lon = self.estimate(coords[:, :k, 0], coords[:, :k, 1], weights)
            d = haversine_torch(lat[:, None], lon[:, None], coords[:, :k, 0], coords[:, :k, 1])
            confidence = torch.where(d <= CONFIDENCE_RADIUS_KM, weights, 0.0).sum(dim=1)
            error_km = weighted_median(d, weights).clamp_min(self.sigma_km)
            scores = torch.zeros(sims.shape, dtype=torch.float64, device=sims.device)
            scores[:, :k] = weights
            self_match = self.self_matches(near, idx[:, :k], image_ids, paths)
        n = min(top_k, sims.shape[1])
        topk = coords[:, :n].clone()
        topk[~torch.isfinite(sims[:, :n])] = (
            math.nan
        )  # left out (fewer eligible entries than n): no candidate
        return Prediction(
            lat=lat.cpu(),
            lon=lon.cpu(),
            confidence=confidence.clamp(0.0, 1.0).float().cpu(),
            topk_lat=topk[:, :, 0].contiguous().cpu(),
            topk_lon=topk[:, :, 1].contiguous().cpu(),
            topk_score=scores[:, :n].float().cpu(),
            error_km=error_km.cpu(),
            extras={"self_match": self_match},
        )

    def self_matches(
        self,
        sims: torch.Tensor,
        idx: torch.Tensor,
        image_ids: Sequence[str | None] | None,
        paths: Sequence[str] | None,
    ) -> list[str | None]:
        """Per query, whether the (B, k) neighbours used hold the photo itself: `image` (its image id or
        path), `copy` (near-identical features), else None (see the module docstring)."""
        same: list[set[int]] = [set()] * len(sims)
        if self.keys is not None and (image_ids is not None or paths is not None):
            same = self.excluded(image_ids, paths, groups=False)
        copies = (sims >= DUPLICATE_SIM).any(dim=1).tolist()
        out: list[str | None] = []
        for row, (left, copy) in enumerate(zip(same, copies, strict=True)):
            used = idx[row][sims[row] > -math.inf].tolist()  # leave-one-out's dropped entries are not
            if left and not left.isdisjoint(used):
                out.append("image")
            else:
                out.append("copy" if copy else None)
        return out


def normalise_path(path: str) -> str:
    """The form paths are compared in (absolute, normalised; no file system access)."""
    return os.path.normpath(os.path.abspath(path))


@dataclass
class GalleryKeys:
    """Who each gallery entry is: image id, path and (with --exclude-same) its group."""

    image_ids: list[str]
    paths: list[str]
    groups: list[str | None] | None = None
    by_id: dict[str, list[int]] = field(init=False)
    by_path: dict[str, list[int]] = field(init=False)
    by_group: dict[str, list[int]] = field(init=False)

    def __post_init__(self) -> None:
        self.by_id, self.by_path, self.by_group = {}, {}, {}
        for i, (image, path) in enumerate(zip(self.image_ids, self.paths, strict=True)):
            self.by_id.setdefault(image, []).append(i)
            self.by_path.setdefault(normalise_path(path), []).append(i)
            if self.groups is not None and self.groups[i] is not None:
                self.by_group.setdefault(self.groups[i], []).append(i)  # type: ignore[arg-type]


def weighted_median(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Per row, the smallest value at which the cumulative weight reaches half the row's total."""
    v, order = values.sort(dim=1)
    cum = weights.gather(1, order).cumsum(dim=1)
    half = (cum < 0.5 * cum[:, -1:]).sum(dim=1, keepdim=True).clamp(max=values.shape[1] - 1)
    return v.gather(1, half).squeeze(1)


def build_knn(
    *,
    backbone_weights: Path | None = None,
    gallery: Path | None = None,
    allow_untrained: bool = False,
    weights: Path | None = None,
    backbone: str | None = None,
    k: int = DEFAULT_K,
    temperature: float = DEFAULT_TEMPERATURE,
    sigma_km: float = DEFAULT_SIGMA_KM,
    leave_one_out: bool = False,
    exclude_same: str | None = None,
    truth: Path | None = None,
) -> KNNGeoModel:
    """kNN over an embedding gallery file. The backbone is the one that made the gallery (its registry
    name, weights and their fingerprint are in the file); asking for another is an InputError."""
    from geotag.io.embeddings import read_gallery, read_gallery_groups, read_gallery_info, read_gallery_keys

    if gallery is None:
        raise InputError(
            "the knn model needs --gallery FILE: an embedding gallery made by "
            "`geotag gallery build PHOTOS --out FILE`"
        )
    if weights is not None:
        raise InputError(
            "knn has no trained weights of its own (--weights); its backbone is named in the gallery"
        )
    info = read_gallery_info(Path(gallery))  # fails on a wrong file before any network is built
    name = backbone or info.backbone
    if name != info.backbone:
        raise InputError(
            f"gallery {gallery} was embedded with backbone {info.backbone}, not {name}: features of two "
            f"backbones are not comparable; rebuild it with `geotag gallery build --backbone {name}`"
        )
    module, preprocess, _ = create_backbone(name, weights=backbone_weights, allow_untrained=allow_untrained)
    if info.fingerprint and module.fingerprint() != info.fingerprint:
        raise InputError(
            f"gallery {gallery} was embedded with {info.weights} (weights {info.fingerprint}), but this run "
            f"loaded {module.weights_label} (weights {module.fingerprint()}): features are not comparable; "
            "rebuild the gallery with these weights or predict with the ones that made it"
        )
    _, coords, embeddings = read_gallery(Path(gallery))
    if leave_one_out and len(coords) < 2:
        raise InputError(
            f"leave-one-out kNN needs a gallery of at least 2 photos; {gallery} has {len(coords)}"
        )
    keys = None
    ids, paths = read_gallery_keys(Path(gallery))  # who each entry is: a query's own photo is flagged
    label = f"{module.weights_label}; gallery {Path(gallery).name} ({len(coords)} photos), k={k}"
    if exclude_same is not None and not leave_one_out:
        raise InputError("--exclude-same is for leave-one-out kNN (--model knn-loo)")
    groups = None
    if leave_one_out:
        if exclude_same is not None:
            if truth is None:
                raise InputError(f"--exclude-same {exclude_same} needs --truth (the manifest)")
            groups = read_gallery_groups(Path(truth), exclude_same, ids, paths)
            label += f", leave-one-{exclude_same}-out"
        label += ", leave-one-out"
    keys = GalleryKeys(ids, paths, groups)
    return KNNGeoModel(
        module,
        preprocess,
        coords,
        embeddings,
        k=k,
        temperature=temperature,
        sigma_km=sigma_km,
        leave_one_out=leave_one_out,
        gallery_keys=keys,
        weights_label=label,
    ).eval()
