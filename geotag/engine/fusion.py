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


def log_densities(photos: Sequence[PhotoDist], states: torch.Tensor, block: int = 16) -> torch.Tensor:
    """(P, S) log d_i at the states (unit vectors, (S, 3)), per km^2; `block` photos at a time. The
    kernel uses the chord (R |u - v|) for the distance (within 0.01 % of the arc wherever the kernel is
    not negligible, and no acos), in float32: 1 - cos resolves about 2 km, which moves a kernel of 25 km
    or more by under 0.5 % of its exponent."""
    n = max(len(ph.p) for ph in photos)
    cand = torch.zeros((len(photos), n, 3), dtype=torch.float64)
    prob = torch.zeros((len(photos), n), dtype=torch.float64)
    width = torch.empty(len(photos), dtype=torch.float64)
    outside = torch.empty(len(photos), dtype=torch.float64)
    for i, ph in enumerate(photos):
        total = float(ph.p.sum())
        out_i = min(1.0, max(FLOOR_MASS, 1.0 - total))
        cand[i, : len(ph.p)] = _unit(ph.lat, ph.lon)
        prob[i, : len(ph.p)] = torch.as_tensor(ph.p, dtype=torch.float64) * (
            (1.0 - out_i) / total if total > 0 else 0.0
        )
        width[i], outside[i] = max(float(ph.kernel_km), 1e-3), out_i
    out = torch.empty((len(photos), states.shape[0]), dtype=torch.float64)
    states32, cand32 = states.float(), cand.float()
    scale = (EARTH_RADIUS_KM**2 / width.square()).float()  # R^2 (2 - 2 cos) / (2 w^2) = scale (1 - cos)
    weight = (prob / (2.0 * math.pi * width.square())[:, None]).float()
    for lo in range(0, len(photos), block):
        sl = slice(lo, lo + block)
        dot = torch.einsum("sk,pnk->psn", states32, cand32[sl])  # (p, S, n)
        kernel = dot.sub_(1.0).mul_(scale[sl][:, None, None]).exp_()
        mix = torch.einsum("psn,pn->ps", kernel, weight[sl]).double()
        out[sl] = (mix + (outside[sl] / _SPHERE_KM2)[:, None]).log()
    return out


def temperature(n: int) -> float:
    """T for a photo fused with n - 1 others: sqrt(n - 1), at least 1."""
    return max(1.0, math.sqrt(max(n - 1, 0)))


def session_product(logd: torch.Tensor) -> torch.Tensor:
    """(P, S) fused log-probabilities: own + (1/T) x the others'."""
    t = temperature(logd.shape[0])
    total = logd.sum(dim=0, keepdim=True)
    return (logd + (total - logd) / t).log_softmax(dim=1)


R_STEP = 1.15
"""HMM reach radii are rounded up to a power of R_STEP times the kernel (at most 15 % looser, inside the
shape's own soft edge of 25 %), so photos taken at similar intervals share one transition matrix: a
2-hour session needs at most 18 of them, and 16 are cached (4 MB each at 1,024 states)."""
CACHED_TRANSITIONS = 16


class _Transitions:
    """Transition matrices (from state x, row, to y, column; probabilities, float32) by reach radius."""

    def __init__(self, dist: torch.Tensor, max_speed_kmh: float, kernel_km: float) -> None:
        self.km = dist.round().long()  # whole km: a matrix is a lookup in a table of the shape, no exp
        self.bins = torch.arange(int(self.km.max()) + 1, dtype=torch.float64)
        self.speed, self.kernel = max_speed_kmh, kernel_km
        self.cache: dict[int, torch.Tensor] = {}

    def __call__(self, dt: float) -> torch.Tensor | None:
        """None for an unknown gap (a flat transition)."""
        if not math.isfinite(dt):
            return None
        r = self.speed * abs(dt) / 3600.0 + self.kernel
        if r >= float(self.bins[-1]):  # anywhere in the session is reachable
            return None
        step = math.ceil(math.log(r / self.kernel) / math.log(R_STEP) - 1e-9)
        if step not in self.cache:
            r = self.kernel * R_STEP**step
            edge = max(MIN_EDGE_KM, EDGE_FRACTION * r)
            shape = (-0.5 * ((self.bins - r).clamp_min(0.0) / edge).square()).exp().float()
            matrix = shape[self.km]
            if len(self.cache) >= CACHED_TRANSITIONS:
                self.cache.pop(next(iter(self.cache)))
            self.cache[step] = matrix / matrix.sum(dim=1, keepdim=True)  # the diagonal is 1: no row is 0
        return self.cache[step]


def forward_backward(
    logd: torch.Tensor, times: np.ndarray, dist: torch.Tensor, max_speed_kmh: float, kernel_km: float
) -> torch.Tensor:
    """(P, S) posteriors along the photos' order (`logd` rows and `times` already in time order):
    scaled forward-backward in probabilities (one S x S matrix-vector product a step)."""
    n, s = logd.shape
    t = temperature(n)
    emit = logd / t
    emit = (emit - emit.max(dim=1, keepdim=True).values).exp().float()
    trans = _Transitions(dist, max_speed_kmh, kernel_km)
    gaps = np.abs(np.diff(np.asarray(times, dtype=np.float64)))

    def step(a: torch.Tensor | None, v: torch.Tensor, back: bool) -> torch.Tensor:
        if a is None:
            return v.sum().expand(s) / s
        return a @ v if back else v @ a

    alpha = torch.empty_like(emit)
    beta = torch.ones_like(emit)
    alpha[0] = emit[0] / emit[0].sum()
    for i in range(1, n):
        v = emit[i] * step(trans(gaps[i - 1]), alpha[i - 1], back=False)
        alpha[i] = v / v.sum().clamp_min(torch.finfo(torch.float32).tiny)
    for i in range(n - 2, -1, -1):
        v = step(trans(gaps[i]), emit[i + 1] * beta[i + 1], back=True)
        beta[i] = v / v.sum().clamp_min(torch.finfo(torch.float32).tiny)
    post = alpha.double().log() + beta.double().log() + logd * (1.0 - 1.0 / t)
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
    q = logq[list(targets)].exp()  # (T, S)
    best = q.argmax(dim=1)
    d = _dist_km(states[best], states)  # (T, S)
    conf = torch.where(d <= CONFIDENCE_RADIUS_KM, q, 0.0).sum(dim=1)
    d_sorted, by_d = d.sort(dim=1)
    cum = q.gather(1, by_d).cumsum(dim=1)
    half = torch.searchsorted(cum, cum[:, -1:] * 0.5).clamp_max(d.shape[1] - 1)
    median = d_sorted.gather(1, half)[:, 0]
    top_q, top = q.topk(min(top_k, q.shape[1]), dim=1)
    out = []
    for r in range(len(best)):
        b = int(best[r])
        out.append(
            Fused(
                lat=float(lat[b]),
                lon=float(lon[b]),
                confidence=min(1.0, max(0.0, float(conf[r]))),
                error_km=max(float(median[r]), floor_km),
                topk=[
                    {"lat": float(lat[j]), "lon": float(lon[j]), "score": float(sc)}
                    for j, sc in zip(top[r].tolist(), top_q[r].tolist(), strict=True)
                ],
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
