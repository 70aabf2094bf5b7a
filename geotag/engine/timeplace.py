"""Time evidence into predictions rows, before the visual model runs (issue 25; docs/time-predict.md).

`geotag predict --track / --siblings / --tz / --clock-offset / --sync` goes through here:

1. A pre-pass over the photos (`TimePlanner.records`): while the folder walk streams into the work list,
   each photo's EXIF time evidence is read in a process pool and kept as numpy columns (`_Evidence`):
   capture time, its own offset, GPS time, GPS position, a camera id: a few dozen bytes a photo, no rows.
2. `TimePlanner.plan()`: cameras identified (serial, else make + model), every photo's time made UTC
   (geotag.geo.photo_time), clock corrections per camera (geotag.geo.clock: --clock-offset, --sync
   drift), fixes gathered (tracks through geotag.io.tracks; siblings: the GPS-tagged photos, their
   cameras' corrections applied), the untagged photos matched (geotag.geo.timeline, exiftool's rules):
   on the tracks first, on the siblings for what the tracks leave.
3. `TimePlanner.fill(row, k)`: the k-th work-list row gets its time columns and, when time placed it,
   its position (`source` track / sibling); the engine skips decoding those photos.

A photo with measured GPS is never placed by time (its row stays what predict makes of it), so no
photo ever takes its own GPS as a fix. Library code: returns and raises, never prints.
"""

from __future__ import annotations

import logging
import os
from array import array
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from geotag.config import TimeConfig
from geotag.errors import InputError
from geotag.geo.clock import ClockCorrection, parse_clock_offset
from geotag.geo.fixes import Fixes
from geotag.geo.photo_time import camera_gps_offsets, resolve_photo_utc
from geotag.geo.timeline import confidence, error_km, match
from geotag.geo.zones import parse_exif_datetime, parse_zone
from geotag.io.parts import DoneSet, record_key
from geotag.io.pathtext import to_text
from geotag.io.scan import ImageRecord, iter_records, validate_paths

log = logging.getLogger(__name__)

__all__ = ["TimePlanner", "TimeSummary", "camera_label", "count_sources", "normalise_camera"]

NONE, TRACK, SIBLING = 0, 1, 2
KINDS = {TRACK: "track", SIBLING: "sibling"}
NOTE_PREFIX = "not placed by time"
_EPOCH = datetime(1970, 1, 1)
_NAN7 = (np.nan,) * 7


def normalise_camera(text: str | None) -> str:
    """Camera names compared case-insensitively with whitespace collapsed ('NIKON  corporation ')."""
    return " ".join((text or "").split()).casefold()


def camera_label(make: str | None, model: str | None, serial: str | None) -> str:
    """How a camera is shown and recorded: 'Make Model' (the make left out when the model repeats it),
    with its serial where EXIF gives one."""
    make, model = (make or "").strip(), (model or "").strip()
    name = model if make and model.casefold().startswith(make.split()[0].casefold()) else f"{make} {model}"
    name = " ".join(name.split()) or "unknown camera"
    return f"{name} (serial {serial})" if serial else name


def photo_evidence(record: ImageRecord) -> tuple[float, float, float, float, float, float, float, tuple]:
    """(local seconds, own offset s, GPS time s, lat, lon, alt, status, camera) of one photo, NaN where
    unknown; status 1 where the EXIF time could be read. Runs in the pre-pass's worker processes."""
    from geotag.io.exif import read_exif
    from geotag.io.shards import is_ref

    if is_ref(str(record.path)):
        return (*_NAN7, ())
    try:
        info = read_exif(record.path)
    except OSError:
        return (*_NAN7, ())
    local = np.nan
    if info.taken_at is not None:
        local = (info.taken_at - _EPOCH).total_seconds() + (info.subsec or 0.0)
    gps = info.gps_time.timestamp() if info.gps_time is not None else np.nan
    offset = info.offset_min * 60.0 if info.offset_min is not None else np.nan

    def num(v: float | None) -> float:
        return np.nan if v is None else float(v)

    camera = (info.camera_make, info.camera_model, info.camera_serial)
    return (local, offset, gps, num(info.gt_lat), num(info.gt_lon), num(info.gt_alt), 1.0, camera)


class _Evidence:
    """The pre-pass's columns, grown with `array` (8 bytes a value, no Python object per photo)."""

    NAMES = ("local", "offset", "gps", "lat", "lon", "alt")

    def __init__(self) -> None:
        self.cols = {name: array("d") for name in self.NAMES}
        self.camera = array("i")
        self.cameras: dict[tuple, int] = {}

    def add(self, ev: tuple) -> int:
        for name, value in zip(self.NAMES, ev[:6], strict=True):
            self.cols[name].append(value)
        camera = ev[7]
        cid = -1
        if camera and any(camera):
            cid = self.cameras.setdefault(camera, len(self.cameras))
        self.camera.append(cid)
        return len(self.camera) - 1

    def __len__(self) -> int:
        return len(self.camera)

    def column(self, name: str) -> np.ndarray:
        return np.frombuffer(self.cols[name], dtype=np.float64) if len(self) else np.empty(0)


@dataclass
class TimeSummary:
    """What the time step did: for the CLI's lines and the predictions file's `time` metadata."""

    by_kind: dict[str, int] = field(default_factory=lambda: {"track": 0, "sibling": 0})
    left: int = 0  # untagged photos time did not place (handed to the model, or left with --model none)
    had_gps: int = 0  # photos with measured GPS (never placed by time)
    clocks: list[str] = field(default_factory=list)  # one line per camera: its clock correction
    metadata: dict[str, Any] = field(default_factory=dict)


class TimePlanner:
    """One predict run's time evidence: `records()` wraps the walk, `plan()` matches, `fill()` writes."""

    def __init__(
        self,
        cfg: TimeConfig,
        *,
        workers: int,
        model_none: bool,
        track_reader: Callable[[TimeConfig], tuple[Fixes, list[dict[str, Any]]]] | None = None,
    ) -> None:
        self.cfg = cfg
        self.workers = workers
        self.model_none = model_none
        self.ev = _Evidence()
        self.todo = array("q")  # evidence index of each work-list entry, in order
        self.todo_hash = array("q")  # hash of its path, checked by fill()
        self.sibling_paths: dict[int, str] = {}  # evidence index -> path, GPS-tagged photos only
        self.sibling_only: set[int] = set()  # photos of --siblings-dir (fixes only, no rows)
        self.sync_targets = _parse_syncs(cfg.syncs)  # path -> [(text, local, offset)]
        self.sync_found: dict[str, list[int]] = {}
        self.zone = parse_zone(cfg.tz) if cfg.tz and cfg.tz.strip().lower() != "auto" else cfg.tz
        self._global_offset, self._camera_offsets = _parse_clock_offsets(cfg.clock_offsets)
        self.summary = TimeSummary()
        reader = track_reader or read_track_fixes
        # tracks first: a malformed one fails before the walk and before any model is loaded
        self.track_fixes, self.tracks_read = reader(cfg) if cfg.tracks else (Fixes.empty(), [])

    # ---------------------------------------------------------------------------------------- pre-pass

    def records(self, records: Iterable[ImageRecord], done: DoneSet) -> Iterator[ImageRecord]:
        """The walk, passed through while each photo's time evidence is read (in `workers` processes);
        the records `done` does not hold are the work list's, in order (PartStore.write_file_list)."""
        from geotag.engine.scan import ordered_map

        pairs = ordered_map(_with_evidence, records, workers=self.workers)
        for record, ev in pairs:
            i = self._keep(record, ev)
            name = str(record.path)
            if record_key(to_text(name), record.size, record.mtime) not in done.keys:  # as rows store it
                self.todo.append(i)
                self.todo_hash.append(hash(name))
            yield record

    def _keep(self, record: ImageRecord, ev: tuple) -> int:
        i = self.ev.add(ev)
        name = str(record.path)
        if np.isfinite(ev[3]):
            self.sibling_paths[i] = name
        for key in {name, os.path.realpath(name), record.path.name} if self.sync_targets else ():
            if key in self.sync_targets:
                found = self.sync_found.setdefault(key, [])
                if found:
                    raise InputError(f"--sync {key}: several photos have that name; give its path")
                found.append(i)
        return i

    def _read_sibling_dirs(self) -> None:
        if not self.cfg.sibling_dirs:
            return
        from geotag.engine.scan import ordered_map

        validate_paths(self.cfg.sibling_dirs)
        known = set(self.sibling_paths.values())
        for record, ev in ordered_map(
            _with_evidence, iter_records(self.cfg.sibling_dirs), workers=self.workers
        ):
            if str(record.path) in known or not np.isfinite(ev[3]):
                continue  # already among PHOTOS, or no GPS: no fix
            self.sibling_only.add(self._keep(record, ev))

    # -------------------------------------------------------------------------------------------- plan

    def plan(self) -> None:
        """Resolve times, clocks and fixes, and match the untagged photos of the work list."""
        self._read_sibling_dirs()
        ev, cfg = self.ev, self.cfg
        n = len(ev)
        local, own, gps = ev.column("local"), ev.column("offset"), ev.column("gps")
        lat, lon, alt = ev.column("lat"), ev.column("lon"), ev.column("alt")
        camera = np.frombuffer(ev.camera, dtype=np.int32) if n else np.empty(0, dtype=np.int32)
        tagged = np.isfinite(lat) & np.isfinite(lon)
        todo = np.frombuffer(self.todo, dtype=np.int64) if len(self.todo) else np.empty(0, dtype=np.int64)

        track_fixes, tracks_read = self.track_fixes, self.tracks_read
        camera_keys = np.where(camera >= 0, camera, -1 - np.arange(n))  # an unknown camera stands alone
        per_photo_gps, _ = camera_gps_offsets(local, gps, camera_keys)
        times = resolve_photo_utc(
            local,
            own,
            tz=self.zone,
            ignore_photo_tz=cfg.ignore_photo_tz,
            camera_offset_s=per_photo_gps,
            fixes=track_fixes if len(track_fixes) else None,
        )
        self._refuse_without_zone(local, times.utc_s, tagged, todo)
        corrections = self._clock_corrections(camera, local, times.utc_s)
        clock = np.zeros(n)
        for cid, corr in corrections.items():
            sel = camera == cid
            clock[sel] = corr.offset_at(times.utc_s[sel])
        clock[~np.isfinite(times.utc_s)] = np.nan
        utc = times.utc_s + clock

        sibling_fixes = (
            self._sibling_fixes(utc, lat, lon, alt, tagged) if self._uses_siblings else Fixes.empty()
        )
        # rows are made for the work list only; the --siblings-dir photos are fixes, never targets
        targets = todo[~tagged[todo] & np.isfinite(utc[todo])]
        result = _Result.empty(len(todo))
        target_rows = np.searchsorted(todo, targets)  # todo is increasing: the walk's order
        remaining = np.ones(len(targets), dtype=bool)
        reasons = np.full(len(targets), "" if cfg.places else "no --track or --siblings given", dtype=object)
        for kind, fixes in ((TRACK, track_fixes), (SIBLING, sibling_fixes)):
            if not len(fixes) or not remaining.any():
                continue
            sel = np.flatnonzero(remaining)
            placement = match(
                utc[targets[sel]], fixes, max_gap=cfg.max_gap, max_extrapolate=cfg.max_extrapolate
            )
            err = error_km(placement, fixes, cfg.speed_kmh)
            result.take(target_rows[sel], placement, err, confidence(err), kind, fixes)
            placed = placement.placed
            reasons[sel[~placed]] = placement.reason[~placed]
            remaining[sel[placed]] = False
        for k, reason in zip(target_rows[remaining], reasons[remaining], strict=True):
            result.note[k] = reason or "no fixes"
        self._result = result
        self._utc, self._zone, self._zone_source, self._clock = utc, times.zone, times.zone_source, clock
        self._tagged, self._local = tagged, local
        self._fixes = Fixes.concat([track_fixes, sibling_fixes])
        self._summarise(corrections, camera, times, track_fixes, sibling_fixes, tracks_read, todo)

    @property
    def _uses_siblings(self) -> bool:
        return self.cfg.siblings or bool(self.cfg.sibling_dirs)

    def _refuse_without_zone(
        self, local: np.ndarray, utc: np.ndarray, tagged: np.ndarray, todo: np.ndarray
    ) -> None:
        """With fixes to place on and no --tz, a photo needing a zone that has none is refused: never
        the machine's zone."""
        if not self.cfg.places or self.cfg.tz:
            return
        need = np.zeros(local.shape[0], dtype=bool)
        need[todo] = ~tagged[todo]
        if self._uses_siblings:
            need |= tagged  # a sibling without a zone cannot be a fix
        missing = int((need & np.isfinite(local) & ~np.isfinite(utc)).sum())
        if missing:
            raise InputError(
                f"{missing} photo(s) have a capture time but no time zone (no OffsetTimeOriginal, no GPS "
                "time from their camera): pass --tz ZONE (e.g. --tz Europe/Berlin or --tz +02:00), or "
                "--tz auto for the zone where the track is"
            )

    def _clock_corrections(
        self, camera: np.ndarray, local: np.ndarray, utc: np.ndarray
    ) -> dict[int, ClockCorrection]:
        """Each camera's ClockCorrection: its --sync points (two or more: drift), else its own
        --clock-offset, else the global one; cameras with none are left out (no correction)."""
        cameras = self.ev.cameras
        by_camera: dict[int, ClockCorrection] = {}
        how: dict[int, str] = {}
        for spec, text in self._camera_offsets:
            for cid in _match_cameras(spec, cameras, "--clock-offset"):
                if cid in by_camera and how[cid] != text:
                    raise InputError(
                        f"--clock-offset {spec!r}: camera {_label(cameras, cid)} has two offsets"
                    )
                by_camera[cid], how[cid] = ClockCorrection.constant(parse_clock_offset(text)), text
        points: dict[int, list[tuple[float, float]]] = {}
        for key, entries in self.sync_targets.items():
            found = self.sync_found.get(key, [])
            if not found:
                continue
            for text, sync_local, sync_offset in entries:
                i = found[0]
                if not np.isfinite(utc[i]):
                    raise InputError(f"--sync {text!r}: the photo has no capture time in a known zone")
                offset = sync_offset if sync_offset is not None else local[i] - utc[i]  # the photo's zone
                points.setdefault(int(camera[i]), []).append((float(utc[i]), sync_local - offset))
        missing = [k for k in self.sync_targets if not self.sync_found.get(k)]
        if missing:
            raise InputError(f"--sync {missing[0]}: not among the photos")
        for cid, pts in points.items():
            if cid in by_camera:
                raise InputError(
                    f"--sync and --clock-offset both name camera {_label(cameras, cid)}: give one of them"
                )
            by_camera[cid] = ClockCorrection.from_sync_points(pts)
        if self._global_offset is not None:
            default = ClockCorrection.constant(self._global_offset)
            for cid in range(len(cameras)):
                by_camera.setdefault(cid, default)
            if (camera < 0).any():
                by_camera[-1] = default
        self._how = {cid: ("--sync" if cid in points else "--clock-offset") for cid in by_camera}
        return by_camera

    def _sibling_fixes(
        self, utc: np.ndarray, lat: np.ndarray, lon: np.ndarray, alt: np.ndarray, tagged: np.ndarray
    ) -> Fixes:
        """The GPS-tagged photos with a UTC time as fixes, one source per photo (`sibling:PATH`)."""
        index = np.array([i for i in self.sibling_paths if tagged[i] and np.isfinite(utc[i])], dtype=np.int64)
        if not self.cfg.siblings:  # only the --siblings-dir photos
            index = np.array([i for i in index.tolist() if i in self.sibling_only], dtype=np.int64)
        if not len(index):
            return Fixes.empty()
        sources = tuple(f"sibling:{self.sibling_paths[int(i)]}" for i in index.tolist())
        return Fixes(
            t=utc[index],
            lat=lat[index],
            lon=lon[index],
            alt=alt[index],
            source=np.arange(len(index), dtype=np.int32),
            sources=sources,
        ).sorted()

    def _summarise(
        self,
        corrections: dict[int, ClockCorrection],
        camera: np.ndarray,
        times: Any,
        track_fixes: Fixes,
        sibling_fixes: Fixes,
        tracks_read: list[dict[str, Any]],
        todo: np.ndarray,
    ) -> None:
        s, cfg = self.summary, self.cfg
        kinds = self._result.kind
        s.by_kind = {name: int((kinds == k).sum()) for k, name in KINDS.items()}
        s.had_gps = int(self._tagged[todo].sum())
        s.left = int(len(todo) - s.had_gps - sum(s.by_kind.values()))
        clocks: dict[str, Any] = {}
        for cid in sorted({int(c) for c in camera[todo].tolist()} | set(corrections)):
            label = _label(self.ev.cameras, cid)
            corr = corrections.get(cid)
            if corr is None:
                s.clocks.append(f"clock {label}: no correction")
                clocks[label] = {"offset_s": 0.0, "how": "none"}
            else:
                s.clocks.append(f"clock {label}: {corr.describe()} [{self._how[cid]}]")
                clocks[label] = {**corr.to_dict(), "how": self._how[cid], "text": corr.describe()}
        zone_sources = times.zone_source[todo] if len(todo) else np.empty(0, dtype=object)
        counts = {str(k): int((zone_sources == k).sum()) for k in ("exif", "gps-time", "tz", "tz-auto")}
        counts["none"] = int(np.equal(zone_sources, None).sum())
        s.metadata = {
            "tz": cfg.tz,
            "ignore_photo_tz": cfg.ignore_photo_tz,
            "zone_sources": counts,
            "clock_offsets": clocks,
            "tracks": tracks_read,
            "fixes": {"track": len(track_fixes), "sibling": len(sibling_fixes)},
            "siblings": {"photos": cfg.siblings, "dirs": [str(p) for p in cfg.sibling_dirs]},
            "max_gap_s": cfg.max_gap,
            "max_extrapolate_s": cfg.max_extrapolate,
            "max_hdop": cfg.max_hdop,
            "max_pdop": cfg.max_pdop,
            "min_sats": cfg.min_sats,
            "speed_kmh": cfg.speed_kmh,
            "placed": dict(s.by_kind),
            "had_gps": s.had_gps,
        }

    def prior_inputs(self) -> tuple[np.ndarray, Fixes]:
        """(UTC time per work-list entry, every fix) for the reachable-region prior (geotag.geo.reach):
        NaN for a photo placed by time or with its own GPS (it never takes its own position as a fix)."""
        todo = self.todo_index()
        utc = self._utc[todo].copy()
        utc[(self._result.kind != NONE) | self._tagged[todo]] = np.nan
        return utc, self._fixes

    def session_inputs(self) -> tuple[np.ndarray, np.ndarray]:
        """(camera id, time in s) per work-list entry for sessions (geotag.engine.sessions): -1 where the
        camera is unknown, NaN where the time is. A camera's times are UTC where every timed photo of it
        has a zone, else its own clock's local time (a gap on one clock is a gap, whatever the zone)."""
        todo = self.todo_index()
        n = len(self.ev)
        camera = (
            np.frombuffer(self.ev.camera, dtype=np.int32).astype(np.int64) if n else np.empty(0, np.int64)
        )
        t = self._utc.copy()
        for cid in np.unique(camera[camera >= 0]).tolist():
            sel = (camera == cid) & np.isfinite(self._local)
            if not np.isfinite(self._utc[sel]).all():
                t[camera == cid] = self._local[camera == cid]
        return camera[todo], t[todo]

    def todo_index(self) -> np.ndarray:
        return np.frombuffer(self.todo, dtype=np.int64) if len(self.todo) else np.empty(0, dtype=np.int64)

    # -------------------------------------------------------------------------------------------- rows

    def no_decode(self) -> np.ndarray:
        """Per work-list entry: True where the visual model need not see the photo (placed by time)."""
        return self._result.kind != NONE

    def fill(self, row: dict[str, Any], k: int) -> None:
        """Write the time columns of the k-th work-list row and, when time placed it, its position."""
        if hash(row["path"]) != self.todo_hash[k]:
            raise RuntimeError(f"time plan out of step with the work list at row {k}: {row['path']}")
        i = int(self.todo[k])
        utc = self._utc[i]
        if np.isfinite(utc):
            row["taken_at_utc"] = datetime.fromtimestamp(float(utc), UTC)
            row["time_zone"] = self._zone[i]
            row["time_zone_source"] = self._zone_source[i]
            row["clock_offset_s"] = float(self._clock[i])
        else:
            row.update(taken_at_utc=None, time_zone=None, time_zone_source=None, clock_offset_s=None)
        r = self._result
        if r.kind[k] != NONE:
            row.update(r.columns(k))
            return
        note = None
        if self._tagged[i]:
            if self.model_none:
                row["source"] = "exif"  # measured GPS, kept as it is
        elif not np.isfinite(self._local[i]):
            note = "no EXIF capture time"
        elif not np.isfinite(utc):
            note = "no time zone"
        elif r.note[k]:
            note = r.note[k]
        if note and (self.cfg.places or self.model_none):
            text = f"{NOTE_PREFIX}: {note}"
            row["gt_note"] = f"{row['gt_note']}; {text}" if row.get("gt_note") else text

    def metadata(self, counts: dict[str, int]) -> dict[str, Any]:
        """The predictions file's `time` metadata, with this run's rows counted by `source`."""
        return {**self.summary.metadata, "counts": counts}


@dataclass
class _Result:
    """Per work-list entry: how time placed it and where."""

    kind: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    alt: np.ndarray
    err: np.ndarray
    conf: np.ndarray
    before: np.ndarray
    after: np.ndarray
    dt: np.ndarray
    fix_source: np.ndarray
    note: np.ndarray

    @classmethod
    def empty(cls, n: int) -> _Result:
        nan = lambda: np.full(n, np.nan)  # noqa: E731
        return cls(
            np.zeros(n, dtype=np.int8), nan(), nan(), nan(), nan(), nan(), nan(), nan(), nan(),
            np.full(n, None, dtype=object), np.full(n, None, dtype=object),
        )  # fmt: skip

    def take(
        self, rows: np.ndarray, p: Any, err: np.ndarray, conf: np.ndarray, kind: int, fixes: Fixes
    ) -> None:
        ok = p.placed
        r = rows[ok]
        self.kind[r] = kind
        self.lat[r], self.lon[r], self.alt[r] = p.lat[ok], p.lon[ok], p.alt[ok]
        self.err[r], self.conf[r] = err[ok], conf[ok]
        self.before[r], self.after[r], self.dt[r] = p.fix_before_s[ok], p.fix_after_s[ok], p.dt_s[ok]
        names = np.array(list(fixes.sources) or [""], dtype=object)
        self.fix_source[r] = names[np.clip(p.source[ok], 0, len(names) - 1)]

    def columns(self, k: int) -> dict[str, Any]:
        def opt(v: float) -> float | None:
            return float(v) if np.isfinite(v) else None

        def when(v: float) -> datetime | None:
            return datetime.fromtimestamp(float(v), UTC) if np.isfinite(v) else None

        return {
            "pred_lat": float(self.lat[k]),
            "pred_lon": float(self.lon[k]),
            "pred_alt": opt(self.alt[k]),
            "error_km": opt(self.err[k]),
            "confidence": opt(self.conf[k]),
            "source": KINDS[int(self.kind[k])],
            "fix_before": when(self.before[k]),
            "fix_after": when(self.after[k]),
            "fix_dt_s": opt(self.dt[k]),
            "fix_source": self.fix_source[k],
        }


def count_sources(rows: Iterable[dict[str, Any]], counts: dict[str, int]) -> None:
    """Add rows to `counts` by where their position came from: `source`, else `error` or `left`."""
    for row in rows:
        key = row.get("source") or ("error" if row["status"] == "error" else "left")
        counts[key] = counts.get(key, 0) + 1


def _with_evidence(record: ImageRecord) -> tuple[ImageRecord, tuple]:
    return record, photo_evidence(record)


def _parse_syncs(specs: Iterable[str]) -> dict[str, list[tuple[str, float, float | None]]]:
    """--sync PHOTO=TIME -> {PHOTO (as given, absolute, real path): [(spec, local s, offset s or None)]}."""
    out: dict[str, list[tuple[str, float, float | None]]] = {}
    for spec in specs:
        photo, sep, when = spec.rpartition("=")
        if not sep or not photo.strip() or not when.strip():
            raise InputError(f"--sync {spec!r}: use PHOTO=YYYY:MM:DD HH:MM:SS[Z|+HH:MM]")
        local, offset = parse_exif_datetime(when.strip())
        key = str(Path(photo.strip()).absolute()) if os.sep in photo else photo.strip()
        out.setdefault(key, []).append((spec, local, offset))
    return out


def _parse_clock_offsets(specs: Iterable[str]) -> tuple[float | None, list[tuple[str, str]]]:
    """--clock-offset [CAMERA=]OFFSET -> (the offset for every camera or None, [(CAMERA, OFFSET)])."""
    everyone: float | None = None
    per_camera: list[tuple[str, str]] = []
    for spec in specs:
        camera, _, offset = spec.rpartition("=")
        value = parse_clock_offset(offset.strip())  # raises InputError naming the value
        if camera.strip():
            per_camera.append((camera.strip(), offset.strip()))
        elif everyone is not None and everyone != value:
            raise InputError(f"--clock-offset {spec!r}: two offsets for every camera")
        else:
            everyone = value
    return everyone, per_camera


def _label(cameras: dict[tuple, int], cid: int) -> str:
    for camera, i in cameras.items():
        if i == cid:
            return camera_label(*camera)
    return "photos without camera fields"


def _match_cameras(spec: str, cameras: dict[tuple, int], option: str) -> list[int]:
    """The camera ids CAMERA names: its serial, its 'Make Model', or its model alone where one make has
    that model; case-insensitive, whitespace collapsed. No camera, or a model of two makes: InputError."""
    want = normalise_camera(spec)
    by_serial = [i for (_, _, serial), i in cameras.items() if serial and normalise_camera(serial) == want]
    if by_serial:
        return by_serial
    full = [
        i
        for (make, model, _), i in cameras.items()
        if normalise_camera(f"{make or ''} {model or ''}") == want
    ]
    if full:
        return full
    models = {(make, model): i for (make, model, _), i in cameras.items() if normalise_camera(model) == want}
    makes = {normalise_camera(make) for make, _ in models}
    if len(makes) > 1:
        raise InputError(f"{option} {spec!r}: that model is made by several makes here; give 'Make Model'")
    if models:
        return [i for (make, model, _), i in cameras.items() if normalise_camera(model) == want]
    seen = sorted({camera_label(*c) for c in cameras})
    raise InputError(
        f"{option} {spec!r}: no photo was taken with that camera (cameras here: {', '.join(seen) or 'none'})"
    )


def read_track_fixes(cfg: TimeConfig) -> tuple[Fixes, list[dict[str, Any]]]:
    """The --track files (folders walked by the reader) as one Fixes table, exiftool's quality filters
    applied; and per file what was read (for the metadata). The reader's warnings (a track with no
    timed point) are logged: the CLI shows them as one line each."""
    from geotag.io import tracks

    found = tracks.read_tracks(list(cfg.tracks))
    for warning in found.warnings:
        log.warning("%s", warning)
    fixes = found.fixes
    kept = tracks.filter_quality(fixes, max_hdop=cfg.max_hdop, max_pdop=cfg.max_pdop, min_sats=cfg.min_sats)
    read = [
        {"path": name, "fixes": int((fixes.source == s).sum()), "kept": int((kept.source == s).sum())}
        for s, name in enumerate(fixes.sources)
    ]
    return kept, read
