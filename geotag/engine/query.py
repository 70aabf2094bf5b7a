"""`geotag query "TEXT" ...`: where on Earth does a text fit, by GeoCLIP's heads over CLIP's text tower.

The text goes through CLIP's text tower (projected features, the space CLIP's image tower projects
into), then GeoCLIP's image MLP, and is matched against the GPS encoder's embeddings of a gallery (the
100K MP-16 coordinates by default, a file of the user's, or a regular lat/lon grid). The released heads
belong to OpenAI CLIP ViT-L/14, so the default text tower is that model's (`openai/clip-vit-large-patch14`,
from the HF cache or the hub, or a local HF CLIP folder). Only the heads and the text tower are built:
no image tower is needed.

Output: one row per (query, rank): query, rank, lat, lon, probability (softmax over the gallery) and
logit; Parquet or CSV by the extension, written beside the target and renamed into place.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F
from torch import nn

from geotag.errors import InputError, WeightsError
from geotag.io.parquet import Predictions
from geotag.io.tables import table_format, table_writer, write_table
from geotag.models.clip_convert import read_state_dict
from geotag.models.clip_text import ClipTextTower, text_config_from_hf
from geotag.models.gallery import load_gallery
from geotag.models.geoclip import GeoCLIP

log = logging.getLogger(__name__)

DEFAULT_TEXT_MODEL = "openai/clip-vit-large-patch14"
TEXT_FILES = ["config.json", "*.safetensors", "*.bin", "*.json", "*.txt"]


@dataclass(frozen=True)
class QuerySummary:
    queries: int
    points: int
    rows: int
    text_model: str


def resolve_text_folder(source: str | Path) -> Path:
    """A local HF CLIP folder, or a hub id from the HF cache (downloaded unless offline)."""
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    if path.exists() or str(source).count("/") != 1:
        raise InputError(f"--text-model must be an HF CLIP folder or a hub id (owner/name), got {source}")
    from huggingface_hub import snapshot_download

    from geotag.models.registry import hub_cache_dir, hub_offline

    repo = str(source)
    for local_only in (True, False):
        if not local_only and hub_offline():
            break
        try:
            return Path(
                snapshot_download(
                    repo, allow_patterns=TEXT_FILES, cache_dir=hub_cache_dir(), local_files_only=local_only
                )
            )
        except Exception as exc:  # huggingface_hub raises many kinds when offline
            log.debug("text model %s not available (local_only=%s): %s", repo, local_only, exc)
    raise WeightsError(
        f"no CLIP text tower {repo} (not in the Hugging Face cache, hub unreachable or HF_HUB_OFFLINE set): "
        f"run `hf download {repo}` or pass --text-model FOLDER (an HF CLIP checkpoint folder)"
    )


def load_text_encoder(source: str | Path) -> tuple[ClipTextTower, object, str]:
    """(tower, tokenizer, label) from an HF CLIP checkpoint (folder or hub id)."""
    folder = resolve_text_folder(source)
    config_file = folder / "config.json"
    try:
        hf_config = json.loads(config_file.read_text())
    except (OSError, ValueError) as exc:
        raise WeightsError(f"cannot read {config_file}: {exc}") from exc
    from geotag.models.clip_convert import find_weights_file

    state = read_state_dict(find_weights_file(folder))
    tower = ClipTextTower(text_config_from_hf(hf_config), state, source=str(source))
    try:
        from transformers import CLIPTokenizerFast

        tokenizer = CLIPTokenizerFast.from_pretrained(str(folder))
    except (OSError, ValueError, TypeError) as exc:
        raise WeightsError(f"{folder}: no usable CLIP tokenizer ({exc})") from exc
    return tower, tokenizer, str(source)


MIN_GRID_DEG = 0.25
"""The finest --grid: 720 x 1,440 = 1,036,800 cells (MAX_GRID_CELLS), each through GeoCLIP's GPS encoder."""
MAX_GRID_CELLS = 1_036_800
SCORE_CHUNK = 32_768  # gallery / grid points encoded and scored per step: memory stays flat whatever N
CACHED_GALLERY_MAX = 200_000  # galleries up to this size are encoded whole (and cached on disk)
MAX_CANDIDATES = 1_000  # --filter-preds: top-k candidates read per row (more are left out, counted)


def grid_points(step_deg: float) -> torch.Tensor:
    """Cell centres of a regular lat/lon grid with `step_deg` spacing, (N, 2) degrees."""
    if not (math.isfinite(step_deg) and MIN_GRID_DEG <= step_deg <= 30):
        raise InputError(
            f"--grid must be between {MIN_GRID_DEG} and 30 degrees, got {step_deg} (at most "
            f"{MAX_GRID_CELLS:,} cells)"
        )
    lat = np.arange(-90 + step_deg / 2, 90, step_deg)
    lon = np.arange(-180 + step_deg / 2, 180, step_deg)
    la, lo = np.meshgrid(lat, lon, indexing="ij")
    return torch.from_numpy(np.stack([la.ravel(), lo.ravel()], 1).astype(np.float32))


def heads_model(points: torch.Tensor) -> GeoCLIP:
    """GeoCLIP's released heads with no image tower (text queries never see an image)."""
    from geotag.models.registry import clip_preprocess

    model = GeoCLIP(nn.Identity(), clip_preprocess(224), points, weights_label="released geoclip heads")
    model.load_released_heads()
    return model.eval()


@torch.no_grad()
def text_features(tower: ClipTextTower, tokenizer: object, texts: list[str]) -> torch.Tensor:
    max_len = int(tower.model.config.max_position_embeddings)
    tokens = tokenizer(texts, padding=True, truncation=True, max_length=max_len, return_tensors="pt")  # type: ignore[operator]
    return tower(tokens["input_ids"], tokens.get("attention_mask"))


def score_texts(
    texts: list[str], tower: ClipTextTower, tokenizer: object, model: GeoCLIP
) -> tuple[torch.Tensor, torch.Tensor]:
    """(T, N) logits and softmax probabilities of every text over the model's gallery. A large gallery
    (a fine grid) is encoded and scored SCORE_CHUNK points at a time: only the (T, N) logits are kept,
    never the (N, 512) location embeddings."""
    feats = text_features(tower, tokenizer, texts)
    points = model.gps_gallery
    if len(points) <= CACHED_GALLERY_MAX:
        logits = model.text_logits(feats)
    else:
        with torch.no_grad():
            t = F.normalize(model.image_encoder.mlp(feats.float()), dim=1)
            scale = model.logit_scale.float().exp()
            logits = torch.empty(len(texts), len(points), dtype=torch.float32)
            for i in range(0, len(points), SCORE_CHUNK):
                g = model.encode_locations(points[i : i + SCORE_CHUNK])
                logits[:, i : i + SCORE_CHUNK] = scale * (t @ g.T)
    return logits, logits.softmax(dim=1)


def top_places(texts: list[str], points: torch.Tensor, logits: torch.Tensor, top_k: int) -> pa.Table:
    probs = logits.softmax(dim=1)
    k = min(top_k, points.shape[0])
    p, idx = probs.topk(k, dim=1)
    coords = points[idx].double().numpy()  # (T, k, 2)
    t = len(texts)
    return pa.table(
        {
            "query": pa.array(np.repeat(np.array(texts, dtype=object), k).tolist(), pa.string()),
            "rank": pa.array(np.tile(np.arange(1, k + 1), t), pa.int32()),
            "lat": coords[..., 0].ravel(),
            "lon": coords[..., 1].ravel(),
            "probability": p.numpy().astype(np.float32).ravel(),
            "logit": logits.gather(1, idx).numpy().astype(np.float32).ravel(),
        }
    )


def run_query(
    texts: list[str],
    out: Path,
    *,
    text_model: str | Path = DEFAULT_TEXT_MODEL,
    gallery: Path | None = None,
    grid_deg: float | None = None,
    top_k: int = 20,
    heatmap: Path | None = None,
    map_html: Path | None = None,
) -> QuerySummary:
    """Score every text over the gallery (or grid) and write the top places (and a heat map PNG, and
    the interactive offline map page of the report)."""
    table_format(out)
    if heatmap is not None and Path(heatmap).suffix.lower() != ".png":
        raise InputError(f"--heatmap must end in .png, got {heatmap}")
    if map_html is not None and Path(map_html).suffix.lower() not in (".html", ".htm"):
        raise InputError(f"--map must end in .html, got {map_html}")
    texts = [t.strip() for t in texts]
    if not texts or not all(texts):
        raise InputError("give at least one non-empty query text")
    if top_k < 1:
        raise InputError(f"--top-k must be at least 1, got {top_k}")
    if gallery is not None and grid_deg is not None:
        raise InputError("--gallery and --grid exclude each other")
    points = grid_points(grid_deg) if grid_deg is not None else load_gallery(gallery)
    tower, tokenizer, label = load_text_encoder(text_model)
    model = heads_model(points)
    if tower.projection_dim != 768:
        dim = tower.projection_dim
        raise WeightsError(f"{label}: GeoCLIP's heads need 768-d CLIP text features, got {dim}")
    logits, probs = score_texts(texts, tower, tokenizer, model)
    table = top_places(texts, points, logits, top_k)
    write_table(table, out)
    if heatmap is not None:
        from geotag.eval.query_plot import text_heatmap

        text_heatmap(texts, points.double().numpy(), probs.double().cpu().numpy(), Path(heatmap))
    if map_html is not None:
        from geotag.eval.query_plot import text_map

        text_map(table, Path(map_html), title="geotag query: " + "; ".join(texts))
    return QuerySummary(queries=len(texts), points=len(points), rows=table.num_rows, text_model=label)


@dataclass(frozen=True)
class FilterSummary:
    rows: int
    rescored: int
    bad_candidates: int = 0  # NaN, infinite or out-of-range candidates left out
    cut_rows: int = 0  # rows with more than MAX_CANDIDATES candidates (the first ones were used)


FILTER_SCHEMA = pa.schema(
    [("image_id", pa.string()), ("path", pa.string())]
    + [(k, pa.float64()) for k in ("pred_lat", "pred_lon", "score", "text_score", "orig_lat", "orig_lon")]
)
BATCH_CANDIDATES = 250_000  # top-k candidates read per batch (rows per batch follow from the file's average)


def _check_topk(pf: Predictions) -> None:
    """One line (exit 2) unless `topk` is a list of structs with numeric lat, lon and score."""
    t = pf.schema_arrow.field("topk").type
    ok = (pa.types.is_list(t) or pa.types.is_large_list(t)) and pa.types.is_struct(t.value_type)
    if ok:
        fields = {f.name: f.type for f in t.value_type}
        ok = all(
            k in fields and (pa.types.is_floating(fields[k]) or pa.types.is_integer(fields[k]))
            for k in ("lat", "lon", "score")
        )
    if not ok:
        raise InputError(f"{pf.path}: column topk is {t}, not a list of {{lat, lon, score}} numbers")


def _batch_rows(pf: Predictions, most: int) -> int:
    """Rows per batch so that a batch holds about BATCH_CANDIDATES candidates (from the row groups'
    value counts in the footers; a row group with huge lists gets batches of one row)."""
    per_row = 1.0
    for f in pf.files:
        meta = pq.read_metadata(f)
        leaf = [i for i in range(meta.num_columns) if meta.schema.column(i).path.startswith("topk.")]
        for g in range(meta.num_row_groups):
            rg = meta.row_group(g)
            if rg.num_rows and leaf:
                per_row = max(per_row, rg.column(leaf[0]).num_values / rg.num_rows)
    return max(1, min(most, int(BATCH_CANDIDATES / per_row)))


def filter_predictions(
    preds: Path,
    text: str,
    out: Path,
    *,
    text_model: str | Path = DEFAULT_TEXT_MODEL,
    batch_rows: int = 65_536,
) -> FilterSummary:
    """Text as a filter on image predictions ("the same, but only coastal"): each row's top-k
    candidates are reweighted by the text's softmax over those same candidates, score_i x text_i,
    renormalised; the best reweighted candidate is the new point. Writes a new table (image_id, path,
    pred_lat, pred_lon, score, text_score, orig_lat, orig_lon); the predictions file is not touched.
    Rows without top-k candidates (errors) are kept with nulls. Bounded: at most MAX_CANDIDATES
    candidates of a row are used, candidates with a NaN, infinite or out-of-range value are left out
    (both counted), and rows are read and written in batches."""
    from geotag.io.parquet import require_columns

    table_format(out)
    text = text.strip()
    if not text:
        raise InputError("give a non-empty query text")
    pf = require_columns(preds, ["image_id", "path", "topk"])
    _check_topk(pf)
    tower, tokenizer, label = load_text_encoder(text_model)
    model = heads_model(torch.zeros(1, 2))
    with torch.no_grad():
        t = torch.nn.functional.normalize(
            model.image_encoder.mlp(text_features(tower, tokenizer, [text])), dim=1
        )
        scale = float(model.logit_scale.exp())
    rows = rescored = bad = cut = 0
    schema = FILTER_SCHEMA.with_metadata({"geotag_query": json.dumps({"text": text, "text_model": label})})
    with table_writer(out, schema) as write:
        for batch in pf.iter_batches(
            batch_size=_batch_rows(pf, batch_rows), columns=["image_id", "path", "topk"]
        ):
            topk = batch.column(2)
            lengths = pc.fill_null(pc.list_value_length(topk), 0)
            cut += int(pc.sum(pc.greater(lengths, MAX_CANDIDATES)).as_py() or 0)
            ids = pc.cast(batch.column(0), pa.string()).to_pylist()
            paths = pc.cast(batch.column(1), pa.string()).to_pylist()
            cols: dict[str, list] = {k: [] for k in FILTER_SCHEMA.names}
            for image_id, path, cands in zip(
                ids, paths, pc.list_slice(topk, 0, MAX_CANDIDATES).to_pylist(), strict=True
            ):
                cols["image_id"].append(image_id)
                cols["path"].append(path)
                good = [c for c in cands or [] if c is not None and _valid(c)]
                bad += len(cands or []) - len(good)
                result = _rescore(model, t, scale, good) if good else None
                for k, v in zip(FILTER_SCHEMA.names[2:], result or (None,) * 6, strict=True):
                    cols[k].append(v)
                rescored += result is not None
            rows += batch.num_rows
            write(pa.table(cols, schema=schema))
    return FilterSummary(rows=rows, rescored=rescored, bad_candidates=bad, cut_rows=cut)


def _valid(c: dict) -> bool:
    """A candidate with finite numbers, a latitude within +-90 and a longitude within +-180."""
    try:
        lat, lon, score = float(c["lat"]), float(c["lon"]), float(c["score"])
    except (TypeError, ValueError, KeyError):
        return False
    return all(map(math.isfinite, (lat, lon, score))) and abs(lat) <= 90 and abs(lon) <= 180 and score >= 0


def _rescore(model: GeoCLIP, t: torch.Tensor, scale: float, cands: list[dict]) -> tuple[float, ...]:
    """(pred_lat, pred_lon, score, text_score, orig_lat, orig_lon) of one row's candidates."""
    latlon = torch.tensor([[c["lat"], c["lon"]] for c in cands], dtype=torch.float32)
    g = model.encode_locations(latlon)
    text_p = (scale * (t @ g.T)).softmax(dim=1)[0].double()
    image_p = torch.tensor([c["score"] for c in cands], dtype=torch.float64)
    w = image_p * text_p
    w = w / w.sum() if float(w.sum()) > 0 else text_p
    best = int(w.argmax())
    return (
        float(cands[best]["lat"]),
        float(cands[best]["lon"]),
        float(w[best]),
        float(text_p[best]),
        float(cands[0]["lat"]),
        float(cands[0]["lon"]),
    )
