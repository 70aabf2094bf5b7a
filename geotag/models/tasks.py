"""Training tasks: what the model-agnostic trainer (geotag.engine.train) needs to know about one model
family, and nothing more. A task builds its model from the training coordinates, says which parameters
train, turns a batch into a dict of losses, predicts for validation, and writes the model's files into a
checkpoint in the format `registry.build_model(name, weights=folder)` reads.

- `GeoCLIPTask`: contrastive image-GPS loss with the GPS queue (geotag.models.losses), frozen CLIP
  backbone by default; trains the image MLP and the logit scale, optionally the GPS encoder.
- `TransLocatorTask`: geocells built from the training coordinates (geo/cells.py), cross-entropy per
  partition weighted 0.5 / 0.3 / 0.2 coarse to fine, optional PIGEON haversine label smoothing, and the
  scene loss where scene labels exist.
- GeoDecoder's per-hierarchy losses will be one more task once the model exists.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from geotag.errors import InputError
from geotag.models.base import GeoModel
from geotag.models.checkpoint import (
    FORMAT,
    FORMAT_VERSION,
    load_model_weights,
    load_state_checked,
    read_weights,
    write_json,
    write_model_files,
)
from geotag.models.losses import (
    BATCH_NOISE_M,
    QUEUE_NOISE_M,
    QUEUE_SIZE,
    GPSQueue,
    contrastive_loss,
    hierarchical_cell_loss,
    jitter_gps,
)

if TYPE_CHECKING:
    from geotag.config import TrainConfig
    from geotag.geo.cells import Geocells
    from geotag.io.samples import TrainSamples

log = logging.getLogger(__name__)

NO_FINE_CELL = (
    "no training image falls in a kept fine cell (GeoEstimation's thresholds need thousands of images "
    "per cell): give more data, a cells file (--cells, e.g. `geotag cells build --tau-max`), or "
    "--cells-scale auto"
)
GALLERY_FILE = "gallery.parquet"
MAX_GALLERY = 100_000
"""GeoCLIP's default gallery size (100K MP-16 coordinates); a larger training set is subsampled."""


class TrainTask:
    """Base class: the defaults suit a model whose `predict` needs only the images."""

    name = ""
    frozen = False

    def build(self, cfg: TrainConfig, train: TrainSamples, checkpoint: Path | None) -> GeoModel:
        """The model to train, from scratch or shaped like `checkpoint` (resume) before its weights load."""
        raise NotImplementedError

    def configure(self, model: GeoModel, freeze_backbone: bool) -> None:
        """Set `requires_grad` on what trains."""
        raise NotImplementedError

    def frozen_modules(self, model: GeoModel) -> list[nn.Module]:
        """Modules kept in eval mode while training (a frozen backbone: no dropout, fixed norms)."""
        return []

    def layered_modules(self, model: GeoModel) -> list[nn.Module]:
        """timm modules whose blocks get layer-wise LR decay."""
        return []

    def loss(self, model: GeoModel, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Losses of one micro-batch; "loss" is what is minimised, the rest are logged."""
        raise NotImplementedError

    def before_validation(self, model: GeoModel) -> None:
        """Refresh what prediction caches (e.g. gallery embeddings after the GPS encoder changed)."""

    @torch.no_grad()
    def predict(self, model: GeoModel, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        pred = model.predict(batch["images"], 1)
        return pred.lat, pred.lon

    def state_dict(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Task state a resumed run needs (tensors, JSON scalars)."""
        return {}, {}

    def load_state_dict(self, tensors: dict[str, torch.Tensor], scalars: dict[str, Any]) -> None:
        pass

    def write_model(self, model: GeoModel, folder: Path, info: dict[str, Any]) -> None:
        """Write the model's files into a checkpoint folder (read back by the registry's builder)."""
        raise NotImplementedError

    def load_weights(self, model: GeoModel, folder: Path) -> None:
        """Load a checkpoint's trained weights into a model from `build(..., checkpoint=folder)`."""
        raise NotImplementedError

    def predict_args(self, run_dir: Path, checkpoint: Path) -> str:
        """The `geotag predict` options that use this run's newest checkpoint."""
        return f"--model {self.name} --weights {run_dir}"

    def feature_module(self, model: GeoModel) -> tuple[nn.Module, int] | None:
        """(the frozen module that maps normalised images to what the heads read, its feature size):
        what an embedding cache stores (`geotag embed`). None: this task cannot train on cached features."""
        return None

    @contextlib.contextmanager
    def on_features(self, model: GeoModel) -> Iterator[None]:
        """While active, `model` takes feature_module's outputs where it took images."""
        raise InputError(f"{self.name} cannot train on cached embeddings")
        yield


@contextlib.contextmanager
def trained_weights_label(
    model: GeoModel, info: dict[str, Any], *, heads: str, backbone_trained: bool
) -> Iterator[None]:
    """The model carries its trained label (trained_label.py) while a checkpoint is written, and its
    built label again after, so the next checkpoint starts from the same words."""
    from geotag.models.trained_label import trained_label

    built = model.weights_label
    step = info.get("train", {}).get("step")
    model.weights_label = trained_label(built, step, heads=heads, backbone_trained=backbone_trained)
    try:
        yield
    finally:
        model.weights_label = built


# ------------------------------------------------------------------------------------------------
# GeoCLIP


def gallery_from_coords(
    lat: np.ndarray, lon: np.ndarray, limit: int = MAX_GALLERY, seed: int = 0
) -> torch.Tensor:
    """Unique training coordinates (to ~1 m), a seeded subsample when there are more than `limit`:
    GeoCLIP's gallery is a sample of its training coordinates."""
    points = np.unique(np.round(np.stack([lat, lon], axis=1), 5), axis=0)
    if len(points) > limit:
        keep = np.sort(np.random.default_rng(seed).choice(len(points), limit, replace=False))
        points = points[keep]
    return torch.from_numpy(points.astype(np.float32))


def parse_sigmas(text: str | None) -> tuple[float, ...]:
    """`--gps-sigmas "1,16,256,4096"` -> (1.0, 16.0, 256.0, 4096.0); None -> the paper's 2^0, 2^4, 2^8."""
    from geotag.models.geoclip import SIGMAS

    if text is None:
        return SIGMAS
    try:
        sigmas = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError as exc:
        raise InputError(f"--gps-sigmas must be comma-separated numbers, got {text!r}") from exc
    if not sigmas or not all(0 < s <= 2.0**16 for s in sigmas):
        raise InputError(f"--gps-sigmas must be numbers in (0, 65536], got {text!r}")
    return sigmas


def vit_config_dict(model: GeoModel) -> dict[str, Any] | None:
    """The CLIP tower shape recorded with GeoCLIP heads (which backbone they were trained on)."""
    config = getattr(model, "backbone_config", None)
    return dataclasses.asdict(config) if dataclasses.is_dataclass(config) else None  # type: ignore[arg-type]


class GeoCLIPTask(TrainTask):
    """GeoCLIP's contrastive training (Vivanco Cepeda et al. 2023) with the details of losses.py.

    Trained: the image MLP and the logit scale; the GPS encoder with `train_gps_encoder`; the CLIP tower
    only without `freeze_backbone`. Training starts from the released heads, as fine-tuning, or with
    `from_scratch` from random heads (GPS encoder included), the paper's own recipe.
    """

    name = "geoclip"

    def __init__(
        self,
        queue_size: int = QUEUE_SIZE,
        batch_noise_m: float = BATCH_NOISE_M,
        queue_noise_m: float = QUEUE_NOISE_M,
        train_gps_encoder: bool = False,
        from_scratch: bool = False,
        allow_mismatched_heads: bool = False,
    ) -> None:
        self.queue = GPSQueue(queue_size, queue_noise_m)
        self.batch_noise_m = batch_noise_m
        self.from_scratch = from_scratch
        self.allow_mismatched_heads = allow_mismatched_heads
        self.train_gps_encoder = train_gps_encoder or from_scratch  # a random GPS encoder must learn
        self.own_gallery = False
        self.untrained_backbone = False

    def build(self, cfg: TrainConfig, train: TrainSamples, checkpoint: Path | None) -> GeoModel:
        from geotag.io.gps_gallery import load_gallery
        from geotag.models.geoclip_builder import build_geoclip

        model = build_geoclip(
            backbone_weights=cfg.backbone_weights,
            gallery=cfg.gallery,
            allow_untrained=cfg.allow_untrained,
            released_heads=not self.from_scratch,
            allow_mismatched_heads=self.allow_mismatched_heads or cfg.allow_mismatched_heads,
        )
        if self.from_scratch:
            model.reset_heads(cfg.seed, parse_sigmas(cfg.gps_sigmas))
        self.untrained_backbone = "UNTRAINED" in model.weights_label
        if cfg.gallery is None:
            own = checkpoint / GALLERY_FILE if checkpoint is not None else None
            points = (
                load_gallery(own)
                if own is not None and own.is_file()
                else gallery_from_coords(train.lat, train.lon, seed=cfg.seed)
            )
            model.set_gallery(points)  # type: ignore[attr-defined]
            self.own_gallery = True
        return model

    def configure(self, model: GeoModel, freeze_backbone: bool) -> None:
        self.frozen = freeze_backbone
        model.requires_grad_(False)
        model.image_encoder.mlp.requires_grad_(True)  # type: ignore[attr-defined]
        model.logit_scale.requires_grad_(True)  # type: ignore[attr-defined]
        if self.train_gps_encoder:
            model.location_encoder.requires_grad_(True)  # type: ignore[attr-defined]
        if not freeze_backbone:
            model.image_encoder.backbone.requires_grad_(True)  # type: ignore[attr-defined]

    def frozen_modules(self, model: GeoModel) -> list[nn.Module]:
        frozen = [model.image_encoder.backbone] if self.frozen else []  # type: ignore[attr-defined]
        return frozen if self.train_gps_encoder else [*frozen, model.location_encoder]  # type: ignore[attr-defined]

    def layered_modules(self, model: GeoModel) -> list[nn.Module]:
        return [model.image_encoder.backbone]  # type: ignore[attr-defined]

    def feature_module(self, model: GeoModel) -> tuple[nn.Module, int] | None:
        encoder = model.image_encoder  # type: ignore[attr-defined]
        return encoder.backbone, encoder.mlp[0].in_features  # the frozen CLIP tower feeds the MLP

    @contextlib.contextmanager
    def on_features(self, model: GeoModel) -> Iterator[None]:
        encoder = model.image_encoder  # type: ignore[attr-defined]
        backbone = encoder.backbone
        encoder.backbone = nn.Identity()  # features go straight to the image MLP
        try:
            yield
        finally:
            encoder.backbone = backbone

    def loss(self, model: GeoModel, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        images, latlon = batch["images"], batch["latlon"]
        positives = jitter_gps(latlon, self.batch_noise_m)  # ~150 m: augmentation of the batch's own GPS
        negatives = self.queue.entries().double()  # read before this batch enters the queue
        gps = torch.cat([positives, negatives]).float().to(images.device)
        image_features = model.image_encoder(images)  # type: ignore[operator]
        with (
            torch.autocast(device_type=images.device.type, enabled=False),
            torch.set_grad_enabled(self.train_gps_encoder and torch.is_grad_enabled()),
        ):
            gps_features = model.location_encoder(gps)  # type: ignore[operator]  # float32: RFF at sigma 256
        loss = contrastive_loss(image_features, gps_features, model.logit_scale)  # type: ignore[arg-type]
        self.queue.push(latlon)
        return {"loss": loss, "logit_scale": model.logit_scale.detach().exp()}  # type: ignore[union-attr]

    def before_validation(self, model: GeoModel) -> None:
        if self.train_gps_encoder:  # changed weights: encode now, without filling the on-disk cache
            model.gallery_features = model.encode_locations(model.gps_gallery)  # type: ignore[operator]
        else:
            model.prepare()

    def state_dict(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        return {f"queue.{k}": v for k, v in self.queue.state_dict().items()}, {}

    def load_state_dict(self, tensors: dict[str, torch.Tensor], scalars: dict[str, Any]) -> None:
        self.queue.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("queue.")})

    def skipped_prefixes(self) -> list[str]:
        """What a checkpoint leaves out because the registry rebuilds it identically: a frozen
        pretrained backbone and an untrained GPS encoder (the released one)."""
        skip = []
        if self.frozen and not self.untrained_backbone:
            skip.append("image_encoder.backbone.")
        if not self.train_gps_encoder:
            skip.append("location_encoder.")
        return skip

    def write_model(self, model: GeoModel, folder: Path, info: dict[str, Any]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        from geotag.models.geoclip import geoclip_version

        gallery = model.gps_gallery.detach().cpu().double().numpy()  # type: ignore[union-attr]
        extra = {}
        if self.own_gallery:
            extra[GALLERY_FILE] = lambda path: pq.write_table(
                pa.table({"lat": gallery[:, 0], "lon": gallery[:, 1]}), path
            )
        config = {
            "model": "geoclip",
            "model_config": {
                "geoclip_version": geoclip_version(),
                "backbone": model.weights_label,
                "frozen_backbone": self.frozen,
                "trained_gps_encoder": self.train_gps_encoder,
                "from_scratch": self.from_scratch,
                "gps_sigmas": list(model.location_encoder.sigmas),  # type: ignore[union-attr]
                "backbone_config": vit_config_dict(model),
            },
            "preprocess": dataclasses.asdict(model.preprocess()),
            "files": {"gallery": GALLERY_FILE} if self.own_gallery else {},
            **info,
        }
        write_model_files(folder, model, config, skip_prefixes=self.skipped_prefixes(), extra_files=extra)

    def load_weights(self, model: GeoModel, folder: Path) -> None:
        load_model_weights(model, folder, expect_model="geoclip")


class GeoCLIPLiteTask(GeoCLIPTask):
    """GeoCLIP-Lite: the same contrastive loss and queue; only the image MLP (and the logit scale)
    trains, against GeoCLIP's frozen released GPS encoder, over a frozen EfficientNet-Lite.

    The checkpoint's model file is a head file (`head.safetensors`, geoclip_lite.save_head) plus the
    training coordinates as `gallery.parquet`: `predict --model geoclip-lite --weights
    STEP_DIR/head.safetensors [--gallery STEP_DIR/gallery.parquet]`.
    """

    name = "geoclip-lite"
    HEAD_FILE = "head.safetensors"

    def build(self, cfg: TrainConfig, train: TrainSamples, checkpoint: Path | None) -> GeoModel:
        from geotag.io.gps_gallery import load_gallery
        from geotag.models.backbones import DEFAULT_BACKBONE, create_backbone
        from geotag.models.geoclip_lite import GeoCLIPLite

        if self.train_gps_encoder:
            raise InputError("geoclip-lite keeps GeoCLIP's released GPS encoder: drop --train-gps-encoder")
        module, preprocess, _ = create_backbone(
            DEFAULT_BACKBONE, weights=cfg.backbone_weights, allow_untrained=cfg.allow_untrained
        )
        points = load_gallery(cfg.gallery) if cfg.gallery is not None else None
        own = checkpoint / GALLERY_FILE if checkpoint is not None else None
        if points is None:
            points = (
                load_gallery(own)
                if own is not None and own.is_file()
                else gallery_from_coords(train.lat, train.lon, seed=cfg.seed)
            )
            self.own_gallery = True
        model = GeoCLIPLite(module, preprocess, points)
        model.load_released_heads()
        model.weights_label = f"{module.weights_label} + trained head + released GeoCLIP GPS encoder"
        self.untrained_backbone = "UNTRAINED" in module.weights_label
        return model

    def configure(self, model: GeoModel, freeze_backbone: bool) -> None:
        if not freeze_backbone:
            raise InputError("geoclip-lite trains its image head only: drop --full")
        super().configure(model, freeze_backbone)

    def write_model(self, model: GeoModel, folder: Path, info: dict[str, Any]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        model.save_head(folder / self.HEAD_FILE)  # type: ignore[operator]
        gallery = model.gps_gallery.detach().cpu().double().numpy()  # type: ignore[union-attr]
        pq.write_table(pa.table({"lat": gallery[:, 0], "lon": gallery[:, 1]}), folder / GALLERY_FILE)
        config = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "model": self.name,
            "preprocess": dataclasses.asdict(model.preprocess()),
            "files": {"head": self.HEAD_FILE, "gallery": GALLERY_FILE},
            **info,
        }
        write_json(folder / "config.json", config)

    def predict_args(self, run_dir: Path, checkpoint: Path) -> str:
        head, gallery = checkpoint / self.HEAD_FILE, checkpoint / GALLERY_FILE
        return f"--model {self.name} --weights {head} --gallery {gallery}"

    def load_weights(self, model: GeoModel, folder: Path) -> None:
        from geotag.models.geoclip_lite import read_head

        model.load_head(read_head(folder / self.HEAD_FILE))  # type: ignore[operator]


# ------------------------------------------------------------------------------------------------
# TransLocator (geocell classification)


def translocator_options(cfg: TrainConfig, variant: str) -> dict[str, Any]:
    """Model options of `geotag train` for TransLocator: --fusion, and where the segmentation branch's
    maps come from (--seg-dir: precomputed, --segmenter: a SegFormer; default: the model's own)."""
    from geotag.models.translocator import VARIANTS

    out: dict[str, Any] = {}
    if cfg.fusion is not None:
        out["fusion"] = cfg.fusion
    if (cfg.seg_dir is not None or cfg.segmenter is not None) and variant in VARIANTS:
        if not VARIANTS[variant].use_seg:
            raise InputError(
                f"--seg-dir / --segmenter: TransLocator row {variant} has no segmentation branch"
            )
        if cfg.seg_dir is not None and cfg.segmenter is not None:
            raise InputError("give --seg-dir or --segmenter, not both")
    if cfg.seg_dir is not None:
        from geotag.models.segmentation import DiskSegmentation

        out["segmenter"] = DiskSegmentation(cfg.seg_dir)
    elif cfg.segmenter is not None:
        out["segmenter"] = cfg.segmenter
    return out


class TransLocatorTask(TrainTask):
    """Geocell classification with TransLocator (Pramanick et al. 2022).

    Cells come from `cells_file` or are built from the training coordinates with GeoEstimation's MP-16
    thresholds as given (`cells_scale` "none"; "auto" or a factor scales them, cells.scale_specs, and says
    so); a resumed run reads them from its checkpoint. The loss is
    losses.hierarchical_cell_loss (0.5 / 0.3 / 0.2 coarse to fine; PIGEON smoothing with `tau_km`)
    plus `scene_weight` x the scene cross-entropy over the images with a scene label.
    """

    name = "translocator"

    def __init__(
        self,
        variant: str | None = None,
        *,
        cells_file: Path | None = None,
        tau_km: float | None = None,
        scene_weight: float = 1.0,
        level_weights: tuple[float, ...] | None = None,
        model_kwargs: dict[str, Any] | None = None,
        cells_scale: str = "none",
    ) -> None:
        self.variant = variant
        self.cells_file = cells_file
        self.cells_scale = cells_scale
        self.tau_km = tau_km
        self.scene_weight = scene_weight
        self.level_weights = level_weights
        self.model_kwargs = model_kwargs or {}
        self.targets = torch.empty(0, 0, dtype=torch.int64)
        self.centroids: list[tuple[torch.Tensor, torch.Tensor]] = []

    def make_cells(self, train: TrainSamples, checkpoint: Path | None) -> Geocells:
        from geotag.geo.cells import Geocells, build_cells

        if checkpoint is not None:
            from geotag.models.translocator import CELLS_FILE

            return Geocells.load(checkpoint / CELLS_FILE)
        if self.cells_file is not None:
            return Geocells.load(self.cells_file)
        from geotag.geo.cells import DEFAULT_PARTITIONS, scale_specs

        if self.cells_scale != "none":
            specs = scale_specs(DEFAULT_PARTITIONS, len(train.lat), self.cells_scale)
            shown = ", ".join(f"{s.name} {s.tau_min}/{s.tau_max}" for s in specs)
            log.warning("geocell thresholds scaled (--cells-scale %s): %s", self.cells_scale, shown)
        return build_cells(train.lat, train.lon, scale=self.cells_scale)

    def build(self, cfg: TrainConfig, train: TrainSamples, checkpoint: Path | None) -> GeoModel:
        from geotag.models.translocator import DEFAULT_VARIANT, build_translocator

        variant = self.variant or cfg.variant or DEFAULT_VARIANT
        if variant.endswith("+scene") and not train.has_scene:
            raise InputError(
                f"TransLocator row {variant} trains a scene head, but none of the {len(train)} training "
                "images has a scene label (a manifest `scene` column: indoor / natural / urban): label "
                "them (`geotag label-scenes PHOTOS --out scenes.csv`, then --data scenes.csv), or train "
                "--variant vit+seg+mff"
            )
        kwargs = {**self.model_kwargs, **translocator_options(cfg, variant)}
        cells = self.make_cells(train, checkpoint)
        model = build_translocator(
            cells,
            variant,
            backbone_weights=cfg.backbone_weights,
            allow_untrained=cfg.allow_untrained,
            **kwargs,
        )
        assigned = cells.assign(train.lat, train.lon)
        self.targets = torch.from_numpy(assigned)
        covered = int((assigned[:, -1] >= 0).sum())
        if covered == 0:
            raise InputError(NO_FINE_CELL)
        self.centroids = [(torch.from_numpy(p.lat), torch.from_numpy(p.lon)) for p in cells.partitions]
        if self.level_weights is None:
            n = len(cells.partitions)
            self.level_weights = (0.5, 0.3, 0.2) if n == 3 else tuple([1.0 / n] * n)
        return model

    def configure(self, model: GeoModel, freeze_backbone: bool) -> None:
        self.frozen = freeze_backbone
        model.requires_grad_(True)
        if model.segmenter is not None:  # type: ignore[attr-defined]
            model.segmenter.requires_grad_(False)  # type: ignore[attr-defined]
        if freeze_backbone:
            for vit in self._vits(model):
                vit.requires_grad_(False)

    @staticmethod
    def _vits(model: GeoModel) -> list[nn.Module]:
        return [m for m in (model.rgb, model.seg) if m is not None]  # type: ignore[attr-defined]

    def frozen_modules(self, model: GeoModel) -> list[nn.Module]:
        seg = [model.segmenter] if model.segmenter is not None else []  # type: ignore[attr-defined]
        return [*seg, *self._vits(model)] if self.frozen else seg

    def layered_modules(self, model: GeoModel) -> list[nn.Module]:
        return self._vits(model)

    def feature_module(self, model: GeoModel) -> tuple[nn.Module, int] | None:
        """The RGB-only row (vit) over a frozen ViT: its [CLS] feature feeds the cell (and scene) heads."""
        if model.variant.use_seg:  # type: ignore[attr-defined]
            return None
        from geotag.models.translocator import RGBFeatures

        return RGBFeatures(model), model.rgb.embed_dim  # type: ignore[arg-type, attr-defined]

    @contextlib.contextmanager
    def on_features(self, model: GeoModel) -> Iterator[None]:
        model.features = lambda images, seg_images=None, trace=None: images  # type: ignore[method-assign]
        model._views = lambda x: x[None]  # type: ignore[method-assign]  # one view: no test-time crops
        try:
            yield
        finally:
            del model.features, model._views

    def _seg_input(self, model: GeoModel, batch: dict[str, Any]) -> torch.Tensor | None:
        if not model.variant.use_seg:  # type: ignore[attr-defined]
            return None
        with torch.no_grad():  # precomputed maps come cropped like the image (train_data.TrainDataset)
            seg01 = model.segment(  # type: ignore[operator]
                batch["images"], batch.get("seg_maps"), batch.get("image_ids"), batch.get("paths")
            )
        return model._normalise(seg01.to(batch["images"].dtype))  # type: ignore[operator]

    def loss(self, model: GeoModel, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        images = batch["images"]
        logits = model(images, self._seg_input(model, batch))
        names = model.cells.names  # type: ignore[attr-defined]
        targets = self.targets[batch["index"]].to(images.device)
        latlon = batch["latlon"]
        out = hierarchical_cell_loss(
            [logits[n] for n in names],
            targets,
            self.level_weights or (),
            lat=latlon[:, 0],
            lon=latlon[:, 1],
            centroids=self.centroids,
            tau_km=self.tau_km,
        )
        loss = out["cells"]
        if "scene" in logits:
            scene = batch["scene"].to(images.device)
            if bool((scene >= 0).any()):
                out["scene"] = F.cross_entropy(logits["scene"].float(), scene, ignore_index=-1)
                loss = loss + self.scene_weight * out["scene"]
        out["loss"] = loss
        return out

    @torch.no_grad()
    def predict(self, model: GeoModel, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        pred = model.predict(batch["images"], 1, image_ids=batch.get("image_ids"), paths=batch.get("paths"))  # type: ignore[call-arg]
        return pred.lat, pred.lon

    def write_model(self, model: GeoModel, folder: Path, info: dict[str, Any]) -> None:
        from geotag.models.translocator import save_checkpoint

        heads = "geocell/scene heads" if model.scene_head is not None else "geocell heads"  # type: ignore[attr-defined]
        with trained_weights_label(model, info, heads=heads, backbone_trained=not self.frozen):
            save_checkpoint(model, folder)  # type: ignore[arg-type]

    def load_weights(self, model: GeoModel, folder: Path) -> None:
        from geotag.models.translocator import WEIGHTS_FILE

        state = read_weights(folder / WEIGHTS_FILE)
        load_state_checked(model, state, skip_prefixes=("segmenter.",), source=str(folder))


# ------------------------------------------------------------------------------------------------


TRAINABLE = ("geoclip", "geoclip-lite", "translocator", "geodecoder", "experts")
CONFIGURED_TASKS = {
    "geodecoder": "geotag.models.geodecoder:GeoDecoderTask",
    "experts": "geotag.models.experts:ExpertsTask",
}


def make_task(cfg: TrainConfig) -> TrainTask:
    """The task for `cfg.model` with the task options of the config."""
    if cfg.model != "translocator" and (cfg.fusion or cfg.seg_dir or cfg.segmenter):
        raise InputError("--fusion, --seg-dir and --segmenter are TransLocator options")
    if cfg.model == "geoclip":
        return GeoCLIPTask(
            queue_size=cfg.queue_size,
            train_gps_encoder=cfg.train_gps_encoder,
            from_scratch=cfg.from_scratch,
            allow_mismatched_heads=cfg.allow_mismatched_heads,
        )
    if cfg.model == "geoclip-lite":
        return GeoCLIPLiteTask(queue_size=cfg.queue_size, train_gps_encoder=cfg.train_gps_encoder)
    if cfg.model == "translocator":
        return TransLocatorTask(
            cfg.variant, cells_file=cfg.cells, tau_km=cfg.label_smoothing_km, cells_scale=cfg.cells_scale
        )
    if cfg.model in CONFIGURED_TASKS:  # these modules import this one: named by path, imported on use
        module, _, name = CONFIGURED_TASKS[cfg.model].partition(":")
        return getattr(importlib.import_module(module), name).from_train_config(cfg)
    raise InputError(f"no training task for model {cfg.model!r}; trainable: {', '.join(TRAINABLE)}")
