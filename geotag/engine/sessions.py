"""Sessions for album fusion (issue 26 item 3): which photos of a predict run share evidence.

A session is a run of photos from one camera with no gap longer than `--session-gap` between consecutive
capture times (the camera identity and times of geotag.engine.timeplace: a body serial where EXIF gives
one, else make and model). Photos with no capture time, or of no known camera, form no session: they
stay single. `--group-by folder` (the photo's parent folder) or `--group-by COLUMN` (a column of the
`--truth` manifest, e.g. AUTHOR) groups albums without times instead; the groups then replace the time
sessions. Every session is split, in time order, into pieces of at most MAX_SESSION_PHOTOS, so the work
of fusing one stays bounded.

DEFAULT_SESSION_GAP_S is 2 h: a pause for a meal or a drive between two sights stays inside one outing,
while at ground speed (150 km/h, --max-speed) two hours are 300 km, about where single-photo models stop
telling places apart anyway (their 200-750 km thresholds); an overnight break always splits. Pure numpy.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable

import numpy as np

from geotag.errors import InputError

__all__ = [
    "DEFAULT_SESSION_GAP_S",
    "FUSE_METHODS",
    "MAX_SESSION_PHOTOS",
    "check_fuse_options",
    "group_codes",
    "split_sessions",
]

DEFAULT_SESSION_GAP_S = 7200.0
MAX_SESSION_PHOTOS = 256
FUSE_METHODS = ("none", "session", "hmm")


def check_fuse_options(
    fuse: str, session_gap: float, group_by: str | None, model: str, *, resume: bool
) -> None:
    """InputError (one line, exit 2) for values fusion cannot use."""
    if fuse not in FUSE_METHODS:
        raise InputError(f"--fuse {fuse}: choose none, session or hmm")
    if not math.isfinite(session_gap) or session_gap <= 0:
        raise InputError(f"--session-gap must be a number of seconds > 0, not {session_gap:g}")
    if group_by is not None and not group_by.strip():
        raise InputError("--group-by needs a name: folder, or a column of the --truth manifest")
    if fuse == "none":
        return
    if model == "none":
        raise InputError("--fuse needs a visual model (--model none predicts nothing to fuse)")
    if resume:
        raise InputError(
            "--fuse cannot --resume: a session's photos are fused together in one run; run again without "
            "--resume"
        )


def split_sessions(
    camera: np.ndarray,
    t: np.ndarray,
    *,
    gap_s: float = DEFAULT_SESSION_GAP_S,
    group: np.ndarray | None = None,
    max_photos: int = MAX_SESSION_PHOTOS,
) -> np.ndarray:
    """Session id per photo (int64, 0.. in order of first appearance in the sorted runs; -1: none).

    `camera`: int per photo (-1 unknown), `t`: seconds on that camera's clock (NaN unknown). Without
    `group`, a new session starts at each camera change or gap > `gap_s`; with `group` (int per photo,
    -1 none) each group is one session, its photos ordered by time (unknown last) then input order.
    Pieces of more than `max_photos` are split in that order; a session of one photo is none."""
    n = len(t)
    t = np.asarray(t, dtype=np.float64)
    ids = np.full(n, -1, dtype=np.int64)
    if group is not None:
        key = np.asarray(group, dtype=np.int64)
        ok = key >= 0
    else:
        key = np.asarray(camera, dtype=np.int64)
        ok = (key >= 0) & np.isfinite(t)
    idx = np.flatnonzero(ok)
    if not len(idx):
        return ids
    tt = np.where(np.isfinite(t[idx]), t[idx], np.inf)
    order = idx[np.lexsort((idx, tt, key[idx]))]
    k, ts = key[order], t[order]
    start = np.ones(len(order), dtype=bool)
    start[1:] = k[1:] != k[:-1]
    if group is None:
        start[1:] |= (ts[1:] - ts[:-1]) > gap_s
    run = np.cumsum(start) - 1
    pos = np.arange(len(order)) - np.flatnonzero(start)[run]  # position inside its run
    piece = np.cumsum(start | (pos % max_photos == 0)) - 1
    sizes = np.bincount(piece)
    keep = sizes[piece] >= 2
    _, compact = np.unique(piece[keep], return_inverse=True)
    ids[order[keep]] = compact
    return ids


def group_codes(paths: Iterable[str], group_by: str, match: Callable[[str], str | None] | None) -> np.ndarray:
    """An int per photo for `--group-by` (-1: no group): `folder` groups by parent folder, any other name
    by `match(path)`, the photo's value in that manifest column (None or blank: no group)."""
    codes: dict[str, int] = {}
    out = []
    for path in paths:
        if group_by == "folder":
            value: str | None = os.path.dirname(path)
        else:
            value = match(path) if match is not None else None
            value = value.strip() if value is not None and value.strip() else None
        out.append(-1 if value is None else codes.setdefault(value, len(codes)))
    return np.asarray(out, dtype=np.int64)
