"""What `geotag review` works on: the predictions rows, the photos they name, the decisions so far.

The rows are read once; the browser sees them by row index only, and a photo is served by row index,
resolved here from the predictions file, never from a path the browser sends (no traversal possible).
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from geotag.errors import InputError
from geotag.eval import foreign
from geotag.io import decisions as dec
from geotag.io.decisions import Decision
from geotag.io.parquet import iter_batches, require_columns
from geotag.io.row_paths import base_folder, row_path

NEEDED = ("image_id", "path", "status", "pred_lat", "pred_lon")
OPTIONAL = (
    "confidence",
    "error_km",
    "topk",
    "country",
    "gt_lat",
    "gt_lon",
    "gt_source",
    "model",
    "source",
    "fix_dt_s",
)
MAX_TOPK = 10
log = logging.getLogger(__name__)


def _num(v: Any) -> float | None:
    if v is None:
        return None
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _check_topk(predictions: Path, kind: pa.DataType) -> None:
    """The candidates column must be what predict writes: a list of structs with lat and lon."""
    value = kind.value_type if pa.types.is_list(kind) or pa.types.is_large_list(kind) else None
    if value is None or not pa.types.is_struct(value) or not {"lat", "lon"} <= {f.name for f in value}:
        raise InputError(
            f"{predictions}: column topk has type {kind}; expected a list of {{lat, lon, score}} "
            "as geotag predict writes it (drop or fix that column)"
        )


def measured_gps(row: dict[str, Any]) -> bool:
    """The photo itself carries a measured position (its EXIF, or a row predict kept with source exif),
    as opposed to a truth that a --truth manifest joined: write-exif leaves such photos alone."""
    if row.get("source") == "exif":
        return True
    return _num(row.get("gt_lat")) is not None and row.get("gt_source") != "manifest"


@dataclass
class Session:
    """The rows under review and the decisions file they are saved to."""

    predictions: Path
    decisions_path: Path
    rows: list[dict[str, Any]]
    decisions: dict[int, Decision] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def open(
        cls, predictions: Path, decisions_path: Path | None = None, columns: str | None = None
    ) -> Session:
        """The rows of a geotag predictions file, or of someone else's (geotag.eval.foreign: mapped by
        name or `columns`; photos named relative to the file's folder, as for geotag's own files)."""
        rows: list[dict[str, Any]] = []
        if columns is not None or not foreign.is_geotag_file(Path(predictions)):
            table, notes = foreign.geotag_table(Path(predictions), foreign.parse_columns(columns))
            for note in notes:
                log.info("%s", note)
            rows = table.to_pylist()
        else:
            pf = require_columns(predictions, NEEDED)
            names = set(pf.schema_arrow.names)
            if "topk" in names:
                _check_topk(predictions, pf.schema_arrow.field("topk").type)
            wanted = [*NEEDED, *(c for c in OPTIONAL if c in names)]
            for batch in iter_batches(predictions, wanted, batch_size=8192):
                rows.extend(batch.to_pylist())
        if not any("source" in r for r in rows[:1]):  # before schema 3 every prediction came from a model
            for r in rows:
                r["source"] = "model" if _num(r.get("pred_lat")) is not None else None
        path = decisions_path or dec.default_path(predictions)
        session = cls(Path(predictions), Path(path), rows, dec.read(Path(path)))
        for i, d in session.decisions.items():
            if i >= len(rows) or rows[i]["image_id"] != d.image_id:
                raise InputError(
                    f"{path}: decisions are for another predictions file (row {i} does not match)"
                )
        return session

    def summary(self, i: int) -> dict[str, Any]:
        """One row as the page needs it (no absolute paths beyond the one shown as text)."""
        r = self.rows[i]
        path = str(r.get("path") or "")
        topk = [
            [_num(t.get("lat")), _num(t.get("lon")), _num(t.get("score"))]
            for t in (r.get("topk") or [])[:MAX_TOPK]
            if t and _num(t.get("lat")) is not None and _num(t.get("lon")) is not None
        ]
        d = self.decisions.get(i)
        measured = r.get("source") == "exif"  # predict --skip-tagged kept its own GPS: nothing to review
        return {
            "i": i,
            "path": path,
            "folder": str(Path(path).parent),
            "ok": r.get("status") == "ok" and _num(r.get("pred_lat")) is not None and not measured,
            "measured": measured,
            "lat": _num(r.get("pred_lat")),
            "lon": _num(r.get("pred_lon")),
            "conf": _num(r.get("confidence")),
            "radius_km": _num(r.get("error_km")),
            "country": r.get("country"),
            "source": r.get("source"),
            "fix_dt_s": _num(r.get("fix_dt_s")),
            "has_gps": measured_gps(r),
            "topk": topk,
            "decision": None
            if d is None
            else {"action": d.action, "lat": d.lat, "lon": d.lon, "source": d.source},
        }

    def photo_path(self, i: int) -> Path | None:
        """The photo of row `i`, as the predictions file names it (relative: beside that file)."""
        if not 0 <= i < len(self.rows):
            return None
        text = str(self.rows[i].get("path") or "")
        if not text:
            return None
        path = row_path(text, base_folder(self.predictions))
        return path if path.is_file() else None

    def decide(
        self, i: int, action: str, lat: Any = None, lon: Any = None, source: str = "prediction"
    ) -> Decision:
        """Validate, save durably, then remember; InputError for a bad request."""
        if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < len(self.rows):
            raise InputError("no such row")
        row = self.rows[i]
        if action == "accept" and row.get("status") != "ok":
            raise InputError("this row has no prediction to accept")
        d = Decision(i, str(row["image_id"]), action, lat, lon, source)
        if action == "reject":
            d = Decision(i, str(row["image_id"]), "reject", None, None, "prediction")
        with self.lock:
            saved = dec.append(self.decisions_path, d)
            self.decisions[i] = saved
        return saved
