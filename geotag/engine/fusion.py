"""Album fusion: the photos of a session share evidence (issue 26 item 3; docs/time-predict.md).

Models differ in what they predict from (GeoCLIP a 100K gallery shared by every photo, kNN each photo's
own neighbours, cell models their cells), so fusion works on what every model gives: a larger internal
top-N per photo (FUSE_CANDIDATES candidates with probabilities; the user's --top-k is what unfused rows
keep). Each photo's distribution is a kernel mixture over its candidates,

    d_i(x) = sum_j p_ij K(x, c_ij) + m_i / (4 pi R^2),    K = exp(-dist^2 / 2 s^2) / (2 pi s^2),

with s the model's radius floor (kNN's kernel sigma, GeoCLIP's gallery spacing) but at least 25 km
(DEFAULT_KERNEL_KM: two photos of one town whose galleries answer points 5 km apart must support each other)
and m_i the mass outside its candidates (1 - their probabilities, at least FLOOR_MASS) spread over the
Earth, so no photo vetoes a place outright. Every photo's density is evaluated on the union of the
session's candidates (near-duplicates within about 1 km merged, at most MAX_STATES kept by their summed
probability). One design for every model, with no model-specific code, and the same states serve both
methods:

- `session`: photo i's fused log-probability = log d_i + (1/T) x sum over the other photos j of log d_j,
  T = sqrt(number of others) (at least 1). Photos of one outing are not independent observations (many
  show the same beach), so n photos count as sqrt(n) rather than n: 40 broad beach photos do not become
  40x sure of their mode, while one sharp photo (a street sign) still moves them where it says, because
  broad photos barely prefer one of their places over another and a sharp one does by many nats.
- `hmm`: forward-backward along the session's time order. Transition between consecutive photos dt
  apart: the reachable-region shape of geotag.geo.reach (flat within max_speed x dt + the kernel width,
  a half-Gaussian beyond), normalised per state; an unknown gap (no time) is a flat transition (the chain
  carries nothing across it). Emissions are tempered by the same 1/T and each photo's own emission is
  restored to full weight in its posterior, so both methods weigh a photo's own evidence alike.

Fused rows: the point is the state of highest fused probability; `topk` the best states; `confidence`
the fused mass within 25 km of the point (as kNN and GeoCLIP define theirs); `error_km` the fused mass's
weighted median distance from the point, never below the model's floor nor the smallest single-photo
radius of the session's fused photos (no photo resolved finer). Rows placed by a track, a sibling or
their own EXIF GPS (`source` track / sibling / exif) are never changed: they serve as evidence, one sharp
candidate at their position (kernel = their error radius, at least the model's), fused like any other
photo. `SessionFuser` holds rows only until their session is complete (the engine knows every session's
size before the model runs), and never more than MAX_PENDING_PHOTOS: beyond that the largest open
session is fused with the photos it has and the rest form a new session. Pure numpy/torch, no files.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from geotag.geo.distance import EARTH_RADIUS_KM
from geotag.geo.reach import EDGE_FRACTION, MIN_EDGE_KM

__all__ = [
    "DEFAULT_KERNEL_KM",
    "FUSE_CANDIDATES",
    "MAX_PENDING_PHOTOS",
    "MAX_STATES",
    "Fused",
    "PhotoDist",
    "SessionFuser",
    "fuse_session",
]

FUSE_CANDIDATES = 64  # candidates per photo asked of the model when fusing
MAX_STATES = 1024  # states of one session (union of its photos' candidates)
MERGE_DEG = 0.01  # candidates closer than about 1 km are one state
FLOOR_MASS = 0.01  # the least probability a photo leaves outside its candidates
DEFAULT_KERNEL_KM = 25.0  # kernel width for models that expose no radius floor
CONFIDENCE_RADIUS_KM = 25.0
MAX_PENDING_PHOTOS = 4096
EVIDENCE_SOURCES = ("track", "sibling", "exif")
_SPHERE_KM2 = 4.0 * math.pi * EARTH_RADIUS_KM**2


@dataclass
class PhotoDist:
    """One photo's candidates (degrees), their probabilities, its kernel width (km) and time (s, NaN)."""

    lat: np.ndarray
    lon: np.ndarray
    p: np.ndarray
    kernel_km: float
    t: float = math.nan


@dataclass
class Fused:
    """A fused photo's answer."""

    lat: float
    lon: float
    confidence: float
    error_km: float
    topk: list[dict[str, float]]


def _unit(lat: np.ndarray, lon: np.ndarray) -> torch.Tensor:
    la, lo = (
        torch.deg2rad(torch.as_tensor(lat, dtype=torch.float64)),
        torch.deg2rad(torch.as_tensor(lon, dtype=torch.float64)),
    )
    return torch.stack([la.cos() * lo.cos(), la.cos() * lo.sin(), la.sin()], dim=-1)


def _dist_km(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Great-circle km between unit vectors (A, 3) and (B, 3): (A, B) float64."""
    return EARTH_RADIUS_KM * torch.acos((a @ b.T).clamp(-1.0, 1.0))


def session_states(
    photos: Sequence[PhotoDist], max_states: int = MAX_STATES
) -> tuple[np.ndarray, np.ndarray]:
    """The session's states: its candidates, near-duplicates merged (the most probable one stands for
    them), the `max_states` with the largest summed probability kept."""
    lat = np.concatenate([ph.lat for ph in photos])
    lon = np.concatenate([ph.lon for ph in photos])
    w = np.concatenate([ph.p for ph in photos])
    order = np.argsort(-w, kind="stable")
    keys = np.stack(
        [np.round(lat / MERGE_DEG), np.round(((lon + 180.0) % 360.0 - 180.0) / MERGE_DEG)], axis=1
    )
    _, first, inverse = np.unique(keys[order], axis=0, return_index=True, return_inverse=True)
    mass = np.bincount(inverse.reshape(-1), weights=w[order])
    keep = np.argsort(-mass, kind="stable")[:max_states]
    rep = order[first[keep]]
    return lat[rep], lon[rep]


def log_densities(photos: Sequence[PhotoDist], states: torch.Tensor) -> torch.Tensor:
    """(P, S) log d_i at the states (unit vectors, (S, 3)), per km^2."""
    out = torch.empty((len(photos), states.shape[0]), dtype=torch.float64)
    for i, ph in enumerate(photos):
        s = max(float(ph.kernel_km), 1e-3)
        total = float(ph.p.sum())
        outside = min(1.0, max(FLOOR_MASS, 1.0 - total))
        p = torch.as_tensor(ph.p, dtype=torch.float64) * ((1.0 - outside) / total if total > 0 else 0.0)
        d = _dist_km(states, _unit(ph.lat, ph.lon))  # (S, n)
        kernel = (-(d.square()) / (2 * s * s)).exp() / (2 * math.pi * s * s)
        out[i] = (kernel @ p + outside / _SPHERE_KM2).log()
    return out


def temperature(n: int) -> float:
    """T for a photo fused with n - 1 others: sqrt(n - 1), at least 1."""
    return max(1.0, math.sqrt(max(n - 1, 0)))


def session_product(logd: torch.Tensor) -> torch.Tensor:
    """(P, S) fused log-probabilities: own + (1/T) x the others'."""
    t = temperature(logd.shape[0])
    total = logd.sum(dim=0, keepdim=True)
    return (logd + (total - logd) / t).log_softmax(dim=1)


def forward_backward(
    logd: torch.Tensor, times: np.ndarray, dist: torch.Tensor, max_speed_kmh: float, kernel_km: float
) -> torch.Tensor:
    """(P, S) posteriors along the photos' order (`logd` rows and `times` already in time order)."""
    n, s = logd.shape
    t = temperature(n)
    emit = logd / t
    trans = []
    for a in range(n - 1):
        dt = abs(float(times[a + 1] - times[a]))
        if not math.isfinite(dt):
            trans.append(torch.full((s, s), -math.log(s), dtype=torch.float64))
            continue
        r = max_speed_kmh * dt / 3600.0 + kernel_km
        edge = max(MIN_EDGE_KM, EDGE_FRACTION * r)
        la = -0.5 * ((dist - r).clamp_min(0.0) / edge).square()
        trans.append(la - la.logsumexp(dim=1, keepdim=True))  # from state x (row) to y (column)
    alpha = torch.empty_like(emit)
    beta = torch.zeros_like(emit)
    alpha[0] = emit[0] - math.log(s)
    for a in range(1, n):
        alpha[a] = emit[a] + (alpha[a - 1][:, None] + trans[a - 1]).logsumexp(dim=0)
        alpha[a] -= alpha[a].logsumexp(dim=0)
    for a in range(n - 2, -1, -1):
        beta[a] = (trans[a] + (emit[a + 1] + beta[a + 1])[None, :]).logsumexp(dim=1)
        beta[a] -= beta[a].logsumexp(dim=0)
    post = alpha + beta + logd * (1.0 - 1.0 / t)
    return post.log_softmax(dim=1)


def fuse_session(
    photos: Sequence[PhotoDist],
    targets: Sequence[int],
    *,
    method: str,
    top_k: int,
    floor_km: float,
    max_speed_kmh: float = 150.0,
) -> list[Fused]:
    """The fused answers of photos[targets] (the others are evidence only), method `session` or `hmm`."""
    lat, lon = session_states(photos)
    states = _unit(lat, lon)
    logd = log_densities(photos, states)
    if method == "session":
        logq = session_product(logd)
    elif method == "hmm":
        times = np.array([ph.t for ph in photos], dtype=np.float64)
        order = np.lexsort((np.arange(len(photos)), np.where(np.isfinite(times), times, np.inf)))
        dist = _dist_km(states, states)
        kernel = max(ph.kernel_km for ph in photos)
        post = forward_backward(logd[order], times[order], dist, max_speed_kmh, kernel)
        logq = torch.empty_like(post)
        logq[torch.as_tensor(order)] = post
    else:
        raise ValueError(f"unknown fusion method {method!r}")
    out = []
    for i in targets:
        q = logq[i].exp()
        best = int(q.argmax())
        d = _dist_km(states[best : best + 1], states)[0]
        conf = float(q[d <= CONFIDENCE_RADIUS_KM].sum())
        order = torch.argsort(d)
        cum = q[order].cumsum(0)
        median = float(d[order][int(torch.searchsorted(cum, cum[-1] * 0.5))])
        top = torch.argsort(q, descending=True)[:top_k].tolist()
        out.append(
            Fused(
                lat=float(lat[best]),
                lon=float(lon[best]),
                confidence=min(1.0, max(0.0, conf)),
                error_km=max(median, floor_km),
                topk=[{"lat": float(lat[j]), "lon": float(lon[j]), "score": float(q[j])} for j in top],
            )
        )
    return out


def row_distribution(row: dict[str, Any], kernel_km: float, t: float) -> PhotoDist | None:
    """A predicted row's candidates (its full internal top-N) as a PhotoDist; None without any."""
    topk = row.get("topk") or []
    lat = np.array([c["lat"] for c in topk], dtype=np.float64)
    lon = np.array([c["lon"] for c in topk], dtype=np.float64)
    p = np.array([c["score"] or 0.0 for c in topk], dtype=np.float64)
    ok = np.isfinite(lat) & np.isfinite(lon) & np.isfinite(p) & (p > 0)
    if not ok.any():
        return None
    return PhotoDist(lat[ok], lon[ok], p[ok], kernel_km, t)


def evidence_distribution(row: dict[str, Any], kernel_km: float, t: float) -> PhotoDist:
    """A row placed by track, sibling or its own GPS: one sharp candidate at its position."""
    radius = row.get("error_km")
    width = max(kernel_km, float(radius)) if radius is not None and math.isfinite(radius) else kernel_km
    return PhotoDist(
        np.array([row["pred_lat"]], dtype=np.float64),
        np.array([row["pred_lon"]], dtype=np.float64),
        np.array([1.0 - FLOOR_MASS]),
        width,
        t,
    )


class SessionFuser:
    """Rows in, rows out: holds a session's rows until all of them have arrived, then fuses it.

    `session[k]` / `times[k]`: the session id (-1 none) and time of the k-th work-list entry. Every row
    leaves with its `topk` cut to `top_k`; a fused row gets `source = fused`, the fused columns, its
    single-photo answer in `single_*` and its `session` id."""

    def __init__(
        self,
        session: np.ndarray,
        times: np.ndarray,
        *,
        method: str,
        top_k: int,
        kernel_km: float,
        floor_km: float,
        max_speed_kmh: float,
        max_pending: int = MAX_PENDING_PHOTOS,
    ) -> None:
        self.session = np.asarray(session, dtype=np.int64)
        self.times = np.asarray(times, dtype=np.float64)
        self.method, self.top_k, self.kernel_km, self.max_speed = method, top_k, kernel_km, max_speed_kmh
        self.floor_km = floor_km
        self.max_pending = max_pending
        valid = self.session[self.session >= 0]
        self.expected = np.bincount(valid) if len(valid) else np.zeros(0, dtype=np.int64)
        self.open: dict[int, list[tuple[int, dict[str, Any]]]] = {}
        self.arrived: dict[int, int] = {}
        self.pending = 0
        self.next_id = len(self.expected)
        self.renamed: dict[int, int] = {}  # a session flushed early: its later photos' new id
        self.fused = 0
        self.sessions_fused: set[int] = set()

    def push(self, k: int, row: dict[str, Any]) -> list[dict[str, Any]]:
        """The k-th work-list row; returns the rows ready to write (possibly none, possibly many)."""
        sid = int(self.session[k]) if k < len(self.session) else -1
        if sid < 0:
            return [self._cut(row)]
        self.open.setdefault(sid, []).append((k, row))
        self.arrived[sid] = self.arrived.get(sid, 0) + 1
        self.pending += 1
        ready: list[dict[str, Any]] = []
        if self.arrived[sid] == self.expected[sid]:
            ready += self._close(sid)
        while self.pending > self.max_pending:
            ready += self._close(max(self.open, key=lambda s: len(self.open[s])))
        return ready

    def finish(self) -> list[dict[str, Any]]:
        """Whatever is still held (sessions some of whose photos never came), fused as they are."""
        ready: list[dict[str, Any]] = []
        for sid in list(self.open):
            ready += self._close(sid)
        return ready

    def _cut(self, row: dict[str, Any]) -> dict[str, Any]:
        if row.get("topk") is not None:
            row["topk"] = row["topk"][: self.top_k]
        return row

    def _close(self, sid: int) -> list[dict[str, Any]]:
        members = self.open.pop(sid)
        self.pending -= len(members)
        label = self.renamed.get(sid, sid)
        if self.arrived[sid] < self.expected[sid]:  # flushed early: the rest of it is a new session
            self.renamed[sid] = self.next_id
            self.next_id += 1
        photos: list[PhotoDist] = []
        targets: list[int] = []
        rows: list[dict[str, Any]] = []
        for k, row in members:
            t = float(self.times[k]) if k < len(self.times) else math.nan
            source = row.get("source")
            if row.get("status") == "ok" and source in EVIDENCE_SOURCES and row.get("pred_lat") is not None:
                photos.append(evidence_distribution(row, self.kernel_km, t))
            elif row.get("status") == "ok" and source == "model":
                dist = row_distribution(row, self.kernel_km, t)
                if dist is not None:
                    targets.append(len(photos))
                    rows.append(row)
                    photos.append(dist)
        out = [self._cut(row) for _, row in members]
        if not targets or len(photos) < 2:
            return out
        singles = [r.get("error_km") for r in rows]
        known = [float(e) for e in singles if e is not None and math.isfinite(e)]
        floor = max([self.floor_km, *([min(known)] if known else [])])
        answers = fuse_session(
            photos,
            targets,
            method=self.method,
            top_k=self.top_k,
            floor_km=floor,
            max_speed_kmh=self.max_speed,
        )
        for row, fused in zip(rows, answers, strict=True):
            row.update(
                single_lat=row["pred_lat"],
                single_lon=row["pred_lon"],
                single_confidence=row.get("confidence"),
                single_error_km=row.get("error_km"),
                single_topk=row["topk"],  # already cut to top_k above
                session=label,
                source="fused",
                pred_lat=fused.lat,
                pred_lon=fused.lon,
                confidence=fused.confidence,
                error_km=fused.error_km,
                topk=fused.topk,
            )
        self.fused += len(rows)
        self.sessions_fused.add(label)
        return out

    def metadata(self) -> dict[str, Any]:
        """What the predictions file says about the fusion of this run."""
        return {
            "method": self.method,
            "photos": self.fused,
            "sessions": len(self.sessions_fused),
            "candidates": FUSE_CANDIDATES,
            "kernel_km": self.kernel_km,
            "floor_km": self.floor_km,
            "max_speed_kmh": self.max_speed,
        }
