"""Run settings as plain dataclasses: the CLI fills them, the engines read them; no global state."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class TimeConfig:
    """`geotag predict`'s time evidence (docs/time-predict.md): tracks, zones, clock offsets, siblings."""

    tracks: tuple[Path, ...] = ()  # --track FILE_OR_FOLDER
    tz: str | None = None  # --tz: IANA name, +HH:MM, UTC or auto
    ignore_photo_tz: bool = False  # --ignore-photo-tz: --tz wins over OffsetTimeOriginal
    clock_offsets: tuple[str, ...] = ()  # --clock-offset [CAMERA=]OFFSET (exiftool -geosync syntax)
    syncs: tuple[str, ...] = ()  # --sync PHOTO=YYYY:MM:DD HH:MM:SS[Z|+HH:MM]
    max_gap: float = 1800.0  # exiftool's GeoMaxIntSecs
    max_extrapolate: float = 1800.0  # exiftool's GeoMaxExtSecs
    max_hdop: float | None = None  # exiftool's GeoMaxHDOP
    max_pdop: float | None = None  # exiftool's GeoMaxPDOP
    min_sats: int | None = None  # exiftool's GeoMinSats
    siblings: bool = False  # --siblings: the GPS-tagged photos among PHOTOS are fixes
    sibling_dirs: tuple[Path, ...] = ()  # --siblings-dir DIR: more GPS-tagged photos as fixes
    speed_kmh: float = 50.0  # the error bound's speed (geotag.geo.timeline.error_km)
    prior_window: float = 21600.0  # --prior-window s: fixes this near a photo guide the model (0: off)
    max_speed: float = 150.0  # --max-speed km/h of the reachable region (geotag.geo.reach)

    @property
    def active(self) -> bool:
        """Whether any time evidence was asked for (without it predict runs exactly as before)."""
        return bool(
            self.tracks or self.siblings or self.sibling_dirs or self.tz or self.clock_offsets or self.syncs
        )

    @property
    def places(self) -> bool:
        """Whether there are fixes to place photos on."""
        return bool(self.tracks or self.siblings or self.sibling_dirs)


@dataclass
class PredictConfig:
    """Everything `geotag predict` needs; defaults are what a user gets with no options."""

    paths: list[Path | str]  # files / folders; fsspec URLs (s3://, gs://) stay text (engine ray)
    out: Path
    include: tuple[str, ...] = ()  # folder walk: --include globs (geotag.io.scan.PathFilter)
    exclude: tuple[str, ...] = ()  # folder walk: --exclude globs
    ext: str | None = None  # folder walk: --ext jpg,png (None: every known photo type)
    model: str = "geoclip"
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    batch_size: int | None = None  # None: chosen from the device
    top_k: int = 5
    workers: int | None = None  # decoding processes; None: chosen from the cores
    resume: bool = False
    backbone_weights: Path | None = None
    weights: Path | None = None  # trained checkpoint folder (geotag train) or run folder
    gallery: Path | None = None
    truth: Path | None = None  # ground-truth manifest (CSV / Parquet, see geotag.io.truth)
    exclude_same: str | None = None  # knn-loo: also leave out gallery photos sharing this truth column
    seg_dir: Path | None = None  # precomputed segmentation maps (models with a segmentation branch)
    segmenter: str | None = None  # segmentation model: HF hub id or local folder
    tta_crops: int = 1  # test-time augmentation crops (1 = off)
    tta_mirrors: bool = False  # allow the mirrored views of 2 / 10 crops (a mirror swaps the driving side)
    allow_untrained: bool = False
    allow_mismatched_heads: bool = False  # GeoCLIP: heads trained on another backbone (labelled)
    amp: bool = True  # bf16 autocast on CUDA; CPU always runs float32
    draft: bool = True  # JPEG draft-mode decoding (see geotag.io.decode)
    skip_tagged: bool = False  # photos with measured EXIF GPS: not predicted, kept with source = exif
    gpu_decode: bool = False  # nvJPEG for a share of the large JPEGs, CPU workers for the rest (CUDA)
    gpu_decode_share: float = 0.6  # share of the eligible JPEGs sent to nvJPEG (geotag.io.gpu_decode)
    gpu_decode_min_pixels: int = 4_000_000  # smaller JPEGs stay on the CPU (draft mode is cheap for them)
    compile: bool = False  # torch.compile the model's backbone(s); the last batch is padded
    checkpoint_rows: int = 4096  # rows per finished part file; what a kill can cost at most
    progress: bool = False
    seed: int = 0
    extra_metadata: dict[str, str] = field(default_factory=dict)
    engine: str = "local"  # local | ray (docs/scale.md); ray writes a folder of part files to `out`
    ray_address: str | None = None  # ray: cluster to join ("auto", "ray://host:10001"); None: start one here
    ray_gpus: int | None = None  # ray: GPU model actors, one GPU each; None: every GPU of the cluster
    ray_actors: int | None = None  # ray: CPU model actors when no GPU is used; None: 1
    cpus_per_decoder: float = 1.0  # ray: CPUs each listing / decoding task reserves
    time: TimeConfig = field(default_factory=TimeConfig)  # time evidence; model "none": time only
    fuse: str = "none"  # --fuse none | session | hmm: album fusion (geotag.engine.fusion)
    session_gap: float = 7200.0  # --session-gap s: a longer gap on one camera starts a new session
    group_by: str | None = None  # --group-by folder | MANIFEST_COLUMN: groups replace time sessions


@dataclass
class GalleryConfig:
    """Everything `geotag gallery build` needs: photos (or one manifest) in, an embedding gallery out."""

    paths: list[Path]
    out: Path
    include: tuple[str, ...] = ()  # folder walk: --include globs (geotag.io.scan.PathFilter)
    exclude: tuple[str, ...] = ()  # folder walk: --exclude globs
    ext: str | None = None  # folder walk: --ext jpg,png (None: every known photo type)
    truth: Path | None = None  # a manifest read by geotag.io.truth (places365, OSV-5M, IMG_ID/LAT/LON, ...)
    backbone: str = "efficientnet_lite0.imagenet"  # a geotag.models.backbones name
    backbone_weights: Path | None = None
    allow_untrained: bool = False
    device: str = "auto"
    batch_size: int | None = None
    workers: int | None = None
    amp: bool = True
    draft: bool = True
    progress: bool = False


@dataclass
class EmbedConfig:
    """Everything `geotag embed` needs: training data in, an embedding cache folder out."""

    data: list[Path]  # what `geotag train --data` takes: folders, manifests, tar shards, OSV-5M
    out: Path  # cache folder (new, empty, or an unfinished cache of the same data and backbone)
    backbone: str = "efficientnet_lite0.imagenet"  # a backbones.py name, or geoclip / translocator
    backbone_weights: Path | None = None
    allow_untrained: bool = False
    image_root: Path | None = None
    shard_size: int = 10_000  # rows per part file
    dtype: str = "float16"  # float16 | float32
    device: str = "auto"
    batch_size: int | None = None
    workers: int | None = None
    amp: bool = True  # bf16 autocast on CUDA
    draft: bool = True
    progress: bool = False


@dataclass
class TrainConfig:
    """Everything `geotag train` needs (see docs/training.md). The settings that shape the result are
    stored in every checkpoint, and `--resume` refuses to continue with different ones."""

    data: list[Path]  # manifests (CSV / Parquet) and / or folders of EXIF-tagged photos
    out: Path  # run folder: step-NNNNNNNN/ checkpoints and metrics.csv
    model: str = "geoclip"
    val: Path | None = None  # validation manifest / folder; None: a seeded hash split of `data`
    val_fraction: float = 0.05
    image_root: Path | None = None  # base of relative manifest paths (default: the manifest's folder)
    epochs: int = 10
    max_steps: int | None = None  # stop early after this many optimizer steps (the schedule is unchanged)
    batch_size: int = 32
    accum: int = 1  # micro-batches per optimizer step
    lr: float = 3e-5
    min_lr_ratio: float = 0.0  # the cosine ends at lr * min_lr_ratio
    weight_decay: float = 1e-6
    warmup_steps: int = 0
    clip_grad: float | None = 1.0  # max global grad norm; None or 0: no clipping
    freeze_backbone: bool | None = None  # None: the model's paper setting (models/recipes.py)
    layer_decay: float = 1.0  # < 1: layer-wise LR decay over the backbone's blocks (full fine-tuning)
    augment: bool = True  # seeded random resized crops (no flips)
    save_every: int = 0  # also checkpoint every N optimizer steps (0: at epoch ends and the end only)
    keep: int = 3  # newest checkpoints kept (0: all)
    resume: bool = False
    device: str = "auto"
    workers: int | None = None
    seed: int = 0
    amp: bool = True  # bf16 autocast on CUDA
    backbone_weights: Path | None = None
    allow_untrained: bool = False
    gallery: Path | None = None  # GeoCLIP: validation / prediction gallery (default: the training coords)
    train_gps_encoder: bool = False  # GeoCLIP: also train the location encoder
    queue_size: int = 4096  # GeoCLIP: GPS queue of past coordinates used as extra negatives
    from_scratch: bool = False  # GeoCLIP: GPS encoder, image MLP and logit scale from random init
    allow_mismatched_heads: bool = False  # GeoCLIP: fine-tune released heads on another backbone
    train_fraction: float = 1.0  # a seeded subset of the training split (the paper's 20% claim)
    optimizer: str = "adamw"  # adamw | adam (L2 weight decay in the gradient, as torch.optim.Adam)
    schedule: str = "cosine"  # cosine (after the warm-up) | step (x lr_gamma after every epoch)
    lr_gamma: float = 0.87  # the step schedule's factor per epoch
    gps_sigmas: str | None = None  # GeoCLIP --from-scratch: RFF sigmas, e.g. "1,16,256,4096"
    variant: str | None = None  # TransLocator row, GeoDecoder encoder, expert backbone (None: the paper's)
    cells: Path | None = None  # cell models: a cells file to use (default: built from the training coords)
    label_smoothing_km: float | None = None  # cell models: PIGEON haversine smoothing tau (65-75 km)
    fusion: str | None = None  # TransLocator: sum | mean of the [CLS] tokens (None: the paper's sum)
    seg_dir: Path | None = None  # TransLocator seg rows: precomputed maps, cropped like the image
    segmenter: str | None = None  # TransLocator seg rows: segmentation model (hub id / folder)
    cells_scale: str = "none"  # cell models built from the data: none | auto | FACTOR (cells.scale_specs)
    progress: bool = False
    # scale (docs/training.md: live metrics, memory and speed)
    val_every: int = 0  # also validate every N optimizer steps (0: at epoch ends only)
    best_metric: str | None = None  # e.g. acc_25km or median_km: OUT/best/ keeps the best validation
    log_to: tuple[str, ...] = ("tensorboard",)  # tensorboard, wandb, mlflow (rank 0 only)
    grad_checkpointing: bool = False  # recompute backbone activations in the backward pass
    compile: bool = False  # torch.compile the backbone modules
    gpu_decode: bool = False  # CUDA: decode the JPEGs of each batch with nvJPEG (geotag.io.gpu_decode)
    stream: bool = False  # shards: webdataset's order (own shards per rank and worker, shuffle buffer)
    shuffle_buffer: int = 2000  # --stream: samples mixed by the shuffle buffer (webdataset's .shuffle(n))
    embeddings: Path | None = None  # a `geotag embed` cache: train the heads on its features, not on photos


GEOCLIP_PAPER_RECIPE = {"batch_size": 512, "optimizer": "adam", "schedule": "step", "clip_grad": None}
"""What `train --from-scratch` changes from the usual defaults, after Vivanco Cepeda et al. 2023 (batch
512, Adam, step decay 0.87 per epoch, no clipping); lr 3e-5, weight decay 1e-6, 10 epochs and the 4096
queue are already the defaults."""
USUAL_TRAIN_DEFAULTS = {"batch_size": 32, "optimizer": "adamw", "schedule": "cosine", "clip_grad": 1.0}


def train_default(name: str, from_scratch: bool) -> object:
    """The default of a recipe-dependent `geotag train` option."""
    return (GEOCLIP_PAPER_RECIPE if from_scratch else USUAL_TRAIN_DEFAULTS)[name]
