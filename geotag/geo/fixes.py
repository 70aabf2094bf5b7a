"""Timed GPS fixes: the one table that every track reader produces and the timeline matches against.

A fix is a moment (UTC, seconds since the Unix epoch, float64 so sub-seconds survive) and a position,
with whatever quality the source gave. Tracks, phone location history and GPS-tagged sibling photos all
become `Fixes`; the readers live in geotag.io.tracks, the matching in geotag.geo.timeline. Pure numpy,
no file access.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields

import numpy as np

__all__ = ["Fixes"]

_FLOAT_COLUMNS = ("t", "lat", "lon", "alt", "hdop", "pdop", "sats", "accuracy_m")


@dataclass(frozen=True)
class Fixes:
    """Columns of equal length, sorted by `t` (see `sorted`). NaN marks an unknown value.

    `t` UTC seconds since 1970; `lat`/`lon` decimal degrees (south/west negative); `alt` metres;
    `hdop`/`pdop` dilution of precision; `sats` satellites in use; `accuracy_m` a horizontal accuracy
    radius in metres (phones, Google location history); `source` an index into `sources`, which names
    where each fix came from (a track file's path, or `sibling:PATH` for a GPS-tagged photo); `segment`
    numbers the track segments within a source (-1 where the source has none).
    """

    t: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    alt: np.ndarray = field(default_factory=lambda: np.empty(0))
    hdop: np.ndarray = field(default_factory=lambda: np.empty(0))
    pdop: np.ndarray = field(default_factory=lambda: np.empty(0))
    sats: np.ndarray = field(default_factory=lambda: np.empty(0))
    accuracy_m: np.ndarray = field(default_factory=lambda: np.empty(0))
    source: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int32))
    segment: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int32))
    sources: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        n = np.asarray(self.t).shape[0]
        for name in _FLOAT_COLUMNS:
            value = np.asarray(getattr(self, name), dtype=np.float64)
            if value.shape[0] == 0 and n:
                value = np.full(n, np.nan)
            object.__setattr__(self, name, value)
        for name in ("source", "segment"):
            value = np.asarray(getattr(self, name), dtype=np.int32)
            if value.shape[0] == 0 and n:
                value = np.full(n, 0 if name == "source" else -1, dtype=np.int32)
            object.__setattr__(self, name, value)
        lengths = {f.name: getattr(self, f.name).shape[0] for f in fields(self) if f.name != "sources"}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"Fixes columns differ in length: {lengths}")

    def __len__(self) -> int:
        return int(self.t.shape[0])

    @classmethod
    def empty(cls) -> Fixes:
        return cls(t=np.empty(0), lat=np.empty(0), lon=np.empty(0))

    def take(self, index: np.ndarray) -> Fixes:
        """The fixes at `index` (an integer or boolean array), sources kept."""
        kwargs = {f.name: getattr(self, f.name)[index] for f in fields(self) if f.name != "sources"}
        return Fixes(**kwargs, sources=self.sources)

    def sorted(self) -> Fixes:
        """Sorted by time (stable, so fixes at one moment keep their file order)."""
        return self.take(np.argsort(self.t, kind="stable"))

    @staticmethod
    def concat(parts: Sequence[Fixes]) -> Fixes:
        """Several sources merged into one table sorted by time; `source` indices renumbered."""
        parts = [p for p in parts if len(p)]
        if not parts:
            return Fixes.empty()
        sources: list[str] = []
        columns: dict[str, list[np.ndarray]] = {f.name: [] for f in fields(Fixes) if f.name != "sources"}
        for part in parts:
            for name in columns:
                value = getattr(part, name)
                columns[name].append(value + len(sources) if name == "source" else value)
            sources.extend(part.sources or ("",))
        merged = Fixes(**{k: np.concatenate(v) for k, v in columns.items()}, sources=tuple(sources))
        return merged.sorted()
