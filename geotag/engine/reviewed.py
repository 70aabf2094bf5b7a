"""`geotag write-exif --decisions FILE`: only the photos a person accepted in `geotag review`, at the
position they chose.

A filter in front of the ordinary write path (geotag.engine.write_exif): rows without an accepting
decision are dropped, accepted rows get the chosen position and a provenance that says the estimate
was reviewed (and moved, when the reviewer picked another candidate or dragged the pin). Everything
else (hash check, never replacing measured GPS, journal, undo) stays as it is.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from geotag.errors import InputError
from geotag.io.decisions import Decision


def reviewed_model(model: Any, decision: Decision) -> str:
    """The model name with the review noted; it lands in GPSProcessingMethod's model= field."""
    how = "reviewed" if decision.source == "prediction" else f"reviewed, {decision.source}"
    return f"{model or 'unknown'} ({how})"


REVIEW = "review"
"""The key apply_decisions marks a row that was not accepted with (no predictions-file column)."""


def apply_decisions(
    rows: Iterator[dict[str, Any]], decisions: dict[int, Decision]
) -> Iterator[dict[str, Any]]:
    """The accepted rows, repositioned; every other row marked `review` = "rejected" or "undecided", so
    write-exif counts them among its skipped rows. InputError when a decision's image_id is not that
    row's: the decisions belong to another predictions file."""
    for i, row in enumerate(rows):
        d = decisions.get(i)
        if d is None:
            yield {**row, REVIEW: "undecided"}
            continue
        if d.image_id != row.get("image_id"):
            raise InputError(
                f"decision for row {i} names another photo: the decisions file is not for these predictions"
            )
        if d.action != "accept":
            yield {**row, REVIEW: "rejected"}
            continue
        out = {**row, "pred_lat": d.lat, "pred_lon": d.lon, "model": reviewed_model(row.get("model"), d)}
        if d.source != "prediction" and row.get("source") in ("track", "sibling"):
            # a candidate or a dragged pin is the reviewer's estimate, not the track's position: it is
            # written as an estimate (model=track (reviewed, moved)), without the track's time stamps
            out["model"] = reviewed_model(row.get("model") or row.get("source"), d)
            out["source"] = "model"
        yield out
