"""Write an estimated GPS position into photos (or XMP sidecars) without harming anything else.

Two photo writers share one interface (`GpsWriter`): read the GPS a file already has, write a *new*
file with the position added, and verify that new file. Neither ever touches the original: the
engine (geotag.engine.write_exif) journals the change and swaps the verified file in atomically with
geotag.io.durable (fsync, rename, fsync of the folder), so a crash, a full disk or a kill leaves
every photo either as it was or completely written.

- `ExiftoolWriter` drives one long-lived `exiftool -stay_open True -@ -` process (exiftool is the most
  trusted metadata writer: JPEG, TIFF, PNG, WebP, HEIC and camera RAW). It writes with `-o TEMP`, not
  `-overwrite_original`, because exiftool's own rename does not fsync and we verify before swapping.
- `PythonJpegWriter` is the fallback for JPEG and WebP when exiftool is absent. It appends a new GPS
  IFD (and, when needed, a copy of IFD0 carrying the GPS pointer) at the end of the existing EXIF
  block, so no existing byte moves and every other tag, MakerNote and thumbnail stays valid. A simple
  (VP8 / VP8L) WebP is converted to the extended format around its unchanged bitstream. piexif was not used:
  it re-serialises the whole EXIF block (breaking MakerNote offsets) and is unmaintained (GUIDE 7).

The trap (GUIDE 7): EXIF stores an unsigned latitude plus an N/S ref. Both writers always write the
absolute value and an explicit N/S/E/W ref; a signed value is never handed to a writer that may drop
the sign. XMP, which has no ref tags, gets the hemisphere letter inside the coordinate string.

Provenance: GPSProcessingMethod (EXIF and XMP) says "geotag <version> estimate", the model, the
confidence and the error radius, so an estimate is never mistaken for a measured fix; the error
radius also goes to GPSHPositioningError (metres) when the model gives one. A position placed by
time (a GPS track, GPS-tagged sibling photos) is written as exiftool's `-geotag` writes it (altitude
with its ref, GPSDateStamp / GPSTimeStamp in UTC, GPSMapDatum WGS-84) and its GPSProcessingMethod says
how it was found ("track interpolation, 12 s from a fix") instead of a model and a confidence.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import math
import mmap
import os
import queue
import re
import shutil
import signal
import struct
import subprocess
import sys
import threading
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from geotag import __version__
from geotag.errors import InputError
from geotag.io.durable import write_new_file

__all__ = [
    "EXIFTOOL_ENV",
    "ExistingGps",
    "ExiftoolProcess",
    "ExiftoolWriter",
    "ESTIMATE_MARKS",
    "GpsFix",
    "GpsWriter",
    "PythonJpegWriter",
    "WriteFailed",
    "build_sidecar",
    "find_exiftool",
    "make_writer",
    "provenance_text",
    "time_provenance_text",
    "radius_text",
    "time_radius_text",
    "read_sidecar_gps",
    "same_image_data",
    "webp_image_chunks",
    "sidecar_path",
]

EXIFTOOL_ENV = "GEOTAG_EXIFTOOL"
"""Unset: find `exiftool` on the PATH. `none` (or off/0/false/no): never use it. Else: the program."""

GPS_VERSION = (2, 3, 0, 0)
VERIFY_TOLERANCE_DEG = 1e-7
"""Read-back must match the requested position this closely (the promise is 1e-6 degrees)."""

EXIFTOOL_TIMEOUT_S = 300.0
"""One exiftool command (one file) may take this long before the process is killed and restarted."""

_OFF_WORDS = frozenset({"none", "off", "0", "false", "no"})


class WriteFailed(Exception):
    """This one file could not be written safely; the message says why (one line). Never fatal."""


TIME_SOURCES = ("track", "sibling")
"""Row sources placed by time (a GPS track, GPS-tagged sibling photos): written as exiftool's
geotagging writes them (altitude, UTC date and time stamps, map datum), marked with how."""
MAP_DATUM = "WGS-84"
ESTIMATE_MARKS = (b"estimate (not measured)", b"(not measured by this camera)")
"""Part of every GPSProcessingMethod geotag writes, a visual estimate's or a position by time's
(provenance_text, time_provenance_text): undo only restores a photo that carries one."""


@dataclass(frozen=True)
class GpsFix:
    """The position to write and where it came from.

    `lat`/`lon` are signed decimal degrees (south and west negative); they are split into an absolute
    value and a ref only at the last moment, by each writer. A fix placed by time (`source` in
    TIME_SOURCES) also carries the altitude (metres, below sea level negative), the photo's UTC time
    and how it was matched, as exiftool's `-geotag` writes them; a model's estimate carries neither.
    """

    lat: float
    lon: float
    model: str | None = None
    confidence: float | None = None
    error_km: float | None = None
    source: str | None = None  # 'track' | 'sibling': placed by time; anything else: a model's estimate
    alt: float | None = None
    time_utc: datetime | None = None  # aware, UTC: GPSDateStamp / GPSTimeStamp
    fix_dt_s: float | None = None  # seconds from the photo's time to the nearest fix used
    interpolated: bool = False  # between two fixes (else: the nearest fix)

    @property
    def lat_ref(self) -> str:
        return "S" if self.lat < 0 else "N"

    @property
    def lon_ref(self) -> str:
        return "W" if self.lon < 0 else "E"

    @property
    def by_time(self) -> bool:
        return self.source in TIME_SOURCES

    @property
    def alt_ref(self) -> int:
        """GPSAltitudeRef: 0 above sea level, 1 below."""
        return 1 if self.alt is not None and self.alt < 0 else 0

    @property
    def error_m(self) -> float | None:
        """GPSHPositioningError in metres; None when the model gave no usable radius."""
        if self.error_km is None or not math.isfinite(self.error_km) or self.error_km < 0:
            return None
        return self.error_km * 1000.0

    @property
    def gps_date(self) -> str | None:
        """GPSDateStamp 'YYYY:MM:DD' (UTC) of a fix placed by time."""
        return self.time_utc.astimezone(UTC).strftime("%Y:%m:%d") if self.time_utc else None

    @property
    def gps_time(self) -> tuple[int, int, int] | None:
        """GPSTimeStamp as (hours, minutes, microseconds of the minute), UTC."""
        if self.time_utc is None:
            return None
        t = self.time_utc.astimezone(UTC)
        return t.hour, t.minute, t.second * 1_000_000 + t.microsecond

    @property
    def gps_time_text(self) -> str | None:
        """'HH:MM:SS[.ffffff]' as exiftool takes and gives GPSTimeStamp (fraction only when there is one)."""
        if self.gps_time is None:
            return None
        h, m, us = self.gps_time
        sec = f"{us // 1_000_000:02d}" + (f".{us % 1_000_000:06d}".rstrip("0") if us % 1_000_000 else "")
        return f"{h:02d}:{m:02d}:{sec}"

    @property
    def how(self) -> str | None:
        """How a fix by time was found, in words ('track interpolation, 12 s from a fix')."""
        if not self.by_time:
            return None
        return match_text(self.source or "", self.interpolated, self.fix_dt_s)

    @property
    def method(self) -> str:
        if self.by_time:
            return time_provenance_text(self.how or "", self.error_km)
        return provenance_text(self.model, self.confidence, self.error_km)


def provenance_text(model: str | None, confidence: float | None, error_km: float | None) -> str:
    """GPSProcessingMethod: plain ASCII naming geotag, the model, the confidence and the error radius.

    Standard values of this tag are 'GPS', 'NETWORK', 'MANUAL', ...; this text cannot be mistaken for
    one, and photo managers show it verbatim."""
    parts = [f"geotag {__version__} estimate (not measured)", f"model={_ascii(model or 'unknown')}"]
    if confidence is not None and math.isfinite(confidence):
        parts.append(f"confidence={confidence:.3f}")
    if error_km is not None and math.isfinite(error_km) and error_km >= 0:
        parts.append(f"error radius {radius_text(error_km)}")
    return "; ".join(parts)


def time_provenance_text(how: str, error_km: float | None) -> str:
    """GPSProcessingMethod of a position placed by time: the same mechanism as a model's estimate
    (provenance_text), its wording saying how the position was found instead of a model and a
    confidence: 'geotag 0.1.0 position by time (not measured by this camera): track interpolation,
    12 s from a fix; error radius 12 m'."""
    parts = [f"geotag {__version__} position by time (not measured by this camera): {_ascii(how)}"]
    if error_km is not None and math.isfinite(error_km) and error_km >= 0:
        parts.append(f"error radius {time_radius_text(error_km)}")
    return "; ".join(parts)


def _seconds(dt: float | None) -> str:
    if dt is None or not math.isfinite(dt):
        return "? s"
    dt = abs(dt)
    return f"{dt:.1f} s" if dt < 10 and dt != int(dt) else f"{dt:,.0f} s"


def match_text(source: str, interpolated: bool, fix_dt_s: float | None) -> str:
    """'track interpolation, 12 s from a fix', 'nearest track fix, 95 s away', 'sibling photos
    interpolation, 40 s from one', 'nearest sibling photo, 95 s away'."""
    if source == "sibling":
        if interpolated:
            return f"sibling photos interpolation, {_seconds(fix_dt_s)} from one"
        return f"nearest sibling photo, {_seconds(fix_dt_s)} away"
    if interpolated:
        return f"track interpolation, {_seconds(fix_dt_s)} from a fix"
    return f"nearest track fix, {_seconds(fix_dt_s)} away"


def time_radius_text(km: float) -> str:
    """A track or sibling position's radius: metres below 1 km ('12 m'), else as radius_text."""
    return f"{km * 1000:.0f} m" if km < 1 else radius_text(km)


def radius_text(km: float) -> str:
    """An error radius in plain kilometres, as people read it: '13,500 km', '25 km', '0.35 km' (never
    '7.07e-13'); the dry run prints the same text as GPSProcessingMethod gets."""
    return f"{km:,.0f} km" if km >= 10 else f"{km:.2f} km"


def _ascii(text: str) -> str:
    """Printable ASCII only (EXIF ASCII, exiftool arg lines): anything else becomes '?'."""
    return "".join(c if 32 <= ord(c) < 127 and c != ";" else "?" for c in text)[:80]


@dataclass(frozen=True)
class ExistingGps:
    """What a file already says about its position, before anything is written.

    `has_gps` is True when any latitude or longitude tag exists (EXIF or XMP), even an unreadable one:
    a measured position, however broken, is never silently replaced. `tags` is kept in the journal.
    """

    has_gps: bool
    lat: float | None = None
    lon: float | None = None
    tags: dict[str, Any] = field(default_factory=dict)
    groups: frozenset[str] = frozenset()
    file_type: str | None = None
    absent_ifd0: tuple[str, ...] = ()  # exiftool only: mandatory IFD0 tags the file lacks
    elsewhere: tuple[str, ...] = ()  # positions in maker notes / other XMP (see positions_elsewhere)

    @property
    def stuck(self) -> tuple[str, ...]:
        """Positions in `elsewhere` that cannot be rewritten (a FLIR record, PNG text, ...): exiftool
        rewrites any XMP property, maker records mostly not. --overwrite-gps refuses such a file."""
        return tuple(t for t in self.elsewhere if not rewritable_position(t))

    @property
    def copies(self) -> tuple[str, ...]:
        """The XMP groups inside the photo whose position a write updates too (XMP-exif, then the
        rewritable `elsewhere` ones such as XMP-drone-dji): what a dry run names besides EXIF GPS."""
        groups = ["XMP-exif"] if "XMP-exif" in self.groups else []
        for tag in self.elsewhere:
            group = tag.split(":", 1)[0]
            if rewritable_position(tag) and group not in groups:
                groups.append(group)
        return tuple(groups)


class GpsWriter(Protocol):
    """What the engine needs from a photo writer."""

    name: str

    def unsupported(self, path: Path) -> str | None:
        """None when this writer can write `path`; else a one-line reason."""

    def read_gps(self, path: Path) -> ExistingGps: ...

    def read_gps_many(self, paths: Sequence[Path]) -> list[ExistingGps | WriteFailed]:
        """read_gps for many files at once (one exiftool round trip); failures are returned."""

    def refuses(self, existing: ExistingGps) -> str | None:
        """Why write() would refuse a file that has `existing`, known before writing (a dry run
        lists it as failing); None when it would not."""

    def write(self, src: Path, dst: Path, fix: GpsFix, existing: ExistingGps) -> None:
        """Create `dst` (must not exist) = `src` with the position written. Raises WriteFailed."""

    def verify(self, path: Path, fix: GpsFix, existing: ExistingGps) -> None:
        """Read the written file back; raise WriteFailed unless it says exactly `fix`."""

    def verify_many(self, items: Sequence[tuple[Path, GpsFix, ExistingGps]]) -> list[WriteFailed | None]:
        """verify for many written files at once; None where the file is right."""

    def close(self) -> None: ...


# --------------------------------------------------------------------------------------------------
# Files: image-data comparison (temps, attributes, fsync and the atomic swap: geotag.io.durable)
# --------------------------------------------------------------------------------------------------


def jpeg_scan_start(data: bytes | mmap.mmap) -> int | None:
    """Offset of the first SOS marker: everything from there on is the compressed image (plus any
    trailer). None when the header segments cannot be walked."""
    if data[:2] != b"\xff\xd8":
        return None
    pos, n = 2, len(data)
    while pos + 4 <= n:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xDA:
            return pos
        if marker == 0xD9:
            return None
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:
            pos += 2
            continue
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
    return None


WEBP_IMAGE_CHUNKS = (b"VP8 ", b"VP8L", b"ALPH", b"ANMF")
"""The RIFF chunks of a WebP that hold the image itself (the bitstream, alpha, animation frames)."""


def webp_image_chunks(data: bytes | mmap.mmap) -> bytes | None:
    """The image chunks of a WebP (kind and payload, in order): what a metadata write must never
    change, wherever it moves them. None when the RIFF structure cannot be walked."""
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        return None
    pos, out = 12, []
    while pos + 8 <= len(data):
        kind, length = bytes(data[pos : pos + 4]), int.from_bytes(data[pos + 4 : pos + 8], "little")
        if pos + 8 + length > len(data):
            return None
        if kind in WEBP_IMAGE_CHUNKS:
            out.append(kind + data[pos + 8 : pos + 8 + length])
        pos += 8 + length + (length & 1)
    return b"".join(out)


def same_image_data(original: Path, written: Path) -> bool | None:
    """Are the compressed image bytes identical? JPEG: first SOS to the end of the file; WebP: the
    image chunks (a simple WebP gains a VP8X header and an EXIF chunk around the same bitstream).

    None when `original` is neither (other formats rely on the writer and on the test suite)."""
    with open(original, "rb") as fa, open(written, "rb") as fb:
        head = fa.read(12)
        if head[:2] != b"\xff\xd8" and (head[:4] != b"RIFF" or head[8:12] != b"WEBP"):
            return None
        if os.fstat(fa.fileno()).st_size == 0 or os.fstat(fb.fileno()).st_size == 0:
            return False
        with (
            mmap.mmap(fa.fileno(), 0, access=mmap.ACCESS_READ) as a,
            mmap.mmap(fb.fileno(), 0, access=mmap.ACCESS_READ) as b,
        ):
            if head[:4] == b"RIFF":
                chunks = webp_image_chunks(a)
                return chunks is not None and chunks == webp_image_chunks(b)
            sa, sb = jpeg_scan_start(a), jpeg_scan_start(b)
            if sa is None or sb is None:
                return False
            return len(a) - sa == len(b) - sb and a[sa:] == b[sb:]


# --------------------------------------------------------------------------------------------------
# exiftool, batch mode
# --------------------------------------------------------------------------------------------------


def _disk_full(src: Path, dst: Path) -> bool:
    """Is there too little room beside `dst` for a copy of `src` (and some metadata)?"""
    try:
        return shutil.disk_usage(dst.parent).free < os.stat(src).st_size + (1 << 16)
    except OSError:
        return False


def find_exiftool() -> str | None:
    """The exiftool program to use, honouring GEOTAG_EXIFTOOL; None when there is none (or 'none')."""
    setting = os.environ.get(EXIFTOOL_ENV, "").strip()
    if setting.lower() in _OFF_WORDS:
        return None
    if setting:
        found = shutil.which(setting)
        if found is None:
            raise InputError(f"{EXIFTOOL_ENV}={setting}: no such program (use 'none' to disable exiftool)")
        return found
    return shutil.which("exiftool")


def _arg_line(arg: str | os.PathLike[str]) -> bytes:
    """One line of exiftool's argument file, as raw bytes (any file name encoding).

    A plain line is taken literally except for leading blanks and a leading '#' (a comment), which
    never start the absolute paths and options geotag passes. Only a line break needs a `#[CSTR]`
    line (C escapes); exiftool mangles '$' and '@' there, so a name with both kinds is refused."""
    raw = os.fsencode(arg)
    if b"\n" not in raw and b"\r" not in raw and not raw.startswith((b"#", b" ", b"\t")):
        return raw + b"\n"
    if b"$" in raw or b"@" in raw:
        raise WriteFailed("exiftool cannot be given a file name with both a line break and '$' or '@'")
    return b"#[CSTR]" + raw.replace(b"\\", b"\\\\").replace(b"\n", b"\\n").replace(b"\r", b"\\r") + b"\n"


class ExiftoolError(Exception):
    """The exiftool process itself failed (died, hung); the caller restarts it."""


class ExiftoolProcess:
    """One `exiftool -stay_open True -@ -` process; `execute(args)` runs one command and returns its
    stdout and stderr. A reader thread per pipe keeps either pipe from filling up and lets a hung
    command time out. `-config ''` keeps a user's ~/.ExifTool_config from changing what is written."""

    def __init__(self, executable: str, timeout: float = EXIFTOOL_TIMEOUT_S) -> None:
        self.executable = executable
        self.timeout = timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._out: queue.Queue[bytes | None] = queue.Queue()
        self._err: queue.Queue[bytes | None] = queue.Queue()
        self._seq = 0
        self.version = ""

    def start(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            return
        try:
            self._proc = subprocess.Popen(
                [self.executable, "-config", "", "-stay_open", "True", "-@", "-"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                bufsize=0,
                preexec_fn=_die_with_parent(),  # noqa: PLW1509 - only prctl runs in the child
            )
        except OSError as exc:
            raise InputError(f"cannot start exiftool ({self.executable}): {exc.strerror or exc}") from exc
        self._out, self._err = queue.Queue(), queue.Queue()
        for pipe, q in ((self._proc.stdout, self._out), (self._proc.stderr, self._err)):
            threading.Thread(target=_pump, args=(pipe, q), daemon=True).start()
        out, _ = self.execute(["-ver"])
        self.version = out.strip()

    def execute(self, args: Sequence[str | os.PathLike[str]]) -> tuple[str, str]:
        self.start()
        assert self._proc is not None and self._proc.stdin is not None
        self._seq += 1
        seq = self._seq
        done = f"{{geotag-done{seq}}}"
        payload = b"".join(_arg_line(a) for a in args)
        payload += f"-echo4\n{done}\n-execute{seq}\n".encode()
        try:
            self._proc.stdin.write(payload)
            self._proc.stdin.flush()
            out = self._collect(self._out, f"{{ready{seq}}}")
            err = self._collect(self._err, done)
        except (OSError, ExiftoolError) as exc:
            self.kill()
            raise ExiftoolError(f"exiftool failed: {exc}") from exc
        return out, err

    def _collect(self, q: queue.Queue[bytes | None], marker: str) -> str:
        lines: list[bytes] = []
        end = marker.encode()
        while True:
            try:
                line = q.get(timeout=self.timeout)
            except queue.Empty:
                raise ExiftoolError(f"no answer within {self.timeout:.0f} s") from None
            if line is None:
                raise ExiftoolError("process ended")
            if line.rstrip(b"\r\n") == end:
                return b"".join(lines).decode("utf-8", "replace")
            lines.append(line)

    def kill(self) -> None:
        if self._proc is not None:
            with contextlib.suppress(OSError):
                self._proc.kill()
            with contextlib.suppress(Exception):
                self._proc.wait(timeout=10)
            self._proc = None

    def close(self) -> None:
        """Ask exiftool to exit; kill it if it does not within a few seconds."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            assert proc.stdin is not None
            proc.stdin.write(b"-stay_open\nFalse\n")
            proc.stdin.close()
            proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait()

    def __enter__(self) -> ExiftoolProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _die_with_parent() -> Callable[[], None] | None:
    """A preexec_fn that has the child killed when geotag dies (Linux PR_SET_PDEATHSIG), or None.

    Why: `exiftool -stay_open True -@ -` does not exit at the end of its argfile (stdin): it polls for
    more commands, so a write-exif killed with -9 left it running forever. The kernel signal fires when
    the thread that started exiftool ends; write-exif starts it from the main thread. If geotag died
    before prctl took effect, the child exits at once (its parent is no longer the one it had)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here, not in the forked child
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def child() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return child


PR_SET_PDEATHSIG = 1


def _pump(pipe: Any, q: queue.Queue[bytes | None]) -> None:
    try:
        for line in iter(pipe.readline, b""):
            q.put(line)
    except (OSError, ValueError):
        pass
    finally:
        q.put(None)


_ERROR_LINE = re.compile(r"^Error: (.*?)(?: - .*)?$", re.MULTILINE)
SIDECAR_HINT = "; `geotag write-exif --sidecar` writes the position to an XMP sidecar instead"


def refusal_text(error: str | None) -> str:
    """exiftool's reason for not writing a file; a "[minor]" one (metadata it finds damaged, such as
    "Bad format (x) for MakerNotes entry 5") says that a sidecar, which leaves the file alone, works."""
    text = f"exiftool: {error or 'no file written'}"
    return text + SIDECAR_HINT if error and "[minor]" in error else text


_MANDATORY_IFD0 = ("XResolution", "YResolution", "ResolutionUnit", "YCbCrPositioning")
"""Tags exiftool adds on its own when it creates IFD0 (a file with no EXIF yet). Naming the absent ones
for deletion stops that, so a write adds GPS and nothing else."""
_READ_TAGS = [
    "-FileType",
    "-GPS:all",
    "-XMP-exif:GPS*",
    "-*Latitude*",  # every position a reader could show: maker notes (FLIR), other XMP (DJI), Composite
    "-*Longitude*",
    *(f"-IFD0:{t}" for t in _MANDATORY_IFD0),
]
_OWN_GROUPS = ("GPS", "XMP-exif", "Composite")  # what geotag writes, and exiftool's view of it
_NO_POSITION = (None, "", 0, "0")  # a maker's 'no fix' placeholder


def positions_elsewhere(info: dict[str, Any]) -> tuple[str, ...]:
    """Latitude/longitude tags outside EXIF GPS and XMP exif: (e.g. FLIR:GPSLatitude,
    XMP-drone-dji:GpsLatitude): a measured fix a reader may show, which geotag does not write."""
    found = []
    for key, value in info.items():
        if key.partition(":")[0] in _OWN_GROUPS or not _is_position(key):
            continue
        if value not in _NO_POSITION:
            found.append(key)
    return tuple(sorted(found))


def rewritable_position(tag: str) -> bool:
    """Can exiftool give this position tag (GROUP:NAME, from positions_elsewhere) a new value?"""
    return tag.startswith("XMP-")


def _is_position(key: str) -> bool:
    """A latitude or longitude tag (not a destination, not a ref)."""
    low = key.partition(":")[2].lower()
    return low.endswith(("latitude", "longitude")) and "dest" not in low


def _first_error(stderr: str) -> str | None:
    match = _ERROR_LINE.search(stderr)
    return match.group(1).strip() if match else None


def _coordinate(value: Any, ref: Any, negative_ref: str) -> float | None:
    try:
        magnitude = abs(float(value))
    except (TypeError, ValueError):
        return None
    ref_text = str(ref or "").strip().upper()[:1]
    return -magnitude if ref_text == negative_ref else magnitude


class ExiftoolWriter:
    """GPS writer for every format exiftool can write, through one batch-mode process."""

    def __init__(self, executable: str, timeout: float = EXIFTOOL_TIMEOUT_S) -> None:
        self.process = ExiftoolProcess(executable, timeout)
        try:
            self.process.start()
            out, _ = self.process.execute(["-listwf"])
        except ExiftoolError as exc:
            raise InputError(f"exiftool ({executable}) does not answer: {exc}") from exc
        self.name = f"exiftool {self.process.version}"
        self._writable = {f".{ext.lower()}" for ext in out.split(":", 1)[-1].split()}

    def unsupported(self, path: Path) -> str | None:
        suffix = path.suffix.lower()
        if suffix in self._writable:
            return None
        return f"exiftool cannot write {suffix or 'extensionless'} files"

    def _read(self, path: Path) -> dict[str, Any]:
        try:
            out, err = self.process.execute(["-j", "-n", "-a", "-G1", *_READ_TAGS, str(path)])
        except ExiftoolError as exc:
            raise WriteFailed(str(exc)) from exc
        try:
            info = json.loads(out)[0] if out.strip() else {}
        except (ValueError, IndexError) as exc:
            raise WriteFailed(f"exiftool gave unreadable output for {path.name}") from exc
        error = info.get("ExifTool:Error") or _first_error(err)
        if error:
            raise WriteFailed(f"exiftool: {error}")
        return info

    def _read_many(self, paths: Sequence[Path]) -> list[dict[str, Any] | WriteFailed]:
        """One exiftool command for many files (a round trip per file is most of the cost of a small
        one). A file the batch answer does not cover cleanly is read again alone, for its message."""
        by_name: dict[str, Any] = {}
        if len(paths) > 1:
            try:
                out, _ = self.process.execute(["-j", "-n", "-a", "-G1", *_READ_TAGS, *map(str, paths)])
                by_name = {d.get("SourceFile"): d for d in json.loads(out)} if out.strip() else {}
            except (ExiftoolError, WriteFailed, ValueError):
                by_name = {}
        results: list[dict[str, Any] | WriteFailed] = []
        for path in paths:
            info = by_name.get(str(path))
            if info is None or "ExifTool:Error" in info:
                try:
                    info = self._read(path)
                except WriteFailed as exc:
                    info = exc
            results.append(info)
        return results

    def read_gps(self, path: Path) -> ExistingGps:
        return _existing_from_info(self._read(path))

    def read_gps_many(self, paths: Sequence[Path]) -> list[ExistingGps | WriteFailed]:
        return [r if isinstance(r, WriteFailed) else _existing_from_info(r) for r in self._read_many(paths)]

    def refuses(self, existing: ExistingGps) -> str | None:
        return None  # every position it would leave behind (`stuck`) the engine refuses itself

    def _assignments(self, fix: GpsFix, existing: ExistingGps) -> list[str]:
        """Tag assignments: EXIF GPS always; XMP-exif only where the file already keeps GPS in XMP, so
        the two never disagree. `#` turns off print conversion, so values are taken literally."""
        args = [
            "-GPS:GPSVersionID=" + ".".join(map(str, GPS_VERSION)),
            f"-GPS:GPSLatitude#={abs(fix.lat):.10f}",
            f"-GPS:GPSLatitudeRef#={fix.lat_ref}",
            f"-GPS:GPSLongitude#={abs(fix.lon):.10f}",
            f"-GPS:GPSLongitudeRef#={fix.lon_ref}",
            f"-GPS:GPSProcessingMethod={fix.method}",
        ]
        error_m = fix.error_m
        args.append(
            f"-GPS:GPSHPositioningError#={error_m:.3f}"
            if error_m is not None
            else "-GPS:GPSHPositioningError="
        )
        args += [f"-IFD0:{tag}=" for tag in existing.absent_ifd0]
        if fix.by_time:  # as exiftool's -geotag: altitude (deleted when unknown), UTC stamps, datum
            args += _time_assignments("GPS", fix)
        if "XMP-exif" in existing.groups:
            args += [
                # XMP has no ref tags: the numeric value is signed and exiftool writes "33,51.4S"
                f"-XMP-exif:GPSLatitude#={fix.lat:.10f}",
                f"-XMP-exif:GPSLongitude#={fix.lon:.10f}",
                "-XMP-exif:GPSVersionID=" + ".".join(map(str, GPS_VERSION)),
                f"-XMP-exif:GPSProcessingMethod={fix.method}",
                f"-XMP-exif:GPSHPositioningError#={error_m:.3f}"
                if error_m is not None
                else "-XMP-exif:GPSHPositioningError=",
            ]
            if fix.by_time:
                args += _time_assignments("XMP-exif", fix)
        # --overwrite-gps: every other copy a reader may show (DJI's drone-dji:GpsLatitude, ...) gets
        # the same position, signed decimal degrees like the XMP it is; `stuck` ones were refused
        for tag in existing.elsewhere:
            if rewritable_position(tag):
                value = fix.lat if tag.lower().endswith("latitude") else fix.lon
                args.append(f"-{tag}#={value:.10f}")
        return args

    def write(self, src: Path, dst: Path, fix: GpsFix, existing: ExistingGps) -> None:
        args = [*self._assignments(fix, existing), "-o", str(dst), str(src)]
        try:
            _, err = self.process.execute(args)
        except ExiftoolError as exc:
            dst.unlink(missing_ok=True)
            raise WriteFailed(str(exc)) from exc
        error = _first_error(err)
        if error or not dst.exists():
            dst.unlink(missing_ok=True)
            if _disk_full(src, dst):  # exiftool only says 'Error writing ...'
                raise WriteFailed("disk full")
            raise WriteFailed(refusal_text(error))

    def verify(self, path: Path, fix: GpsFix, existing: ExistingGps) -> None:
        _check_info(self._read(path), fix, existing)

    def verify_many(self, items: Sequence[tuple[Path, GpsFix, ExistingGps]]) -> list[WriteFailed | None]:
        results: list[WriteFailed | None] = []
        for info, (_, fix, existing) in zip(self._read_many([p for p, _, _ in items]), items, strict=True):
            try:
                if isinstance(info, WriteFailed):
                    raise info
                _check_info(info, fix, existing)
                results.append(None)
            except WriteFailed as exc:
                results.append(exc)
        return results

    def close(self) -> None:
        self.process.close()


def _time_assignments(group: str, fix: GpsFix) -> list[str]:
    """The tags exiftool's -geotag writes besides the position, for a fix placed by time: GPSAltitude
    and its ref (removed when the track has no altitude), the UTC date and time (XMP keeps both in
    one GPSDateTime), and GPSMapDatum."""
    args = (
        [f"-{group}:GPSAltitude#={abs(fix.alt):.3f}", f"-{group}:GPSAltitudeRef#={fix.alt_ref}"]
        if fix.alt is not None
        else [f"-{group}:GPSAltitude=", f"-{group}:GPSAltitudeRef="]
    )
    if group == "GPS":
        args += (
            [f"-GPS:GPSDateStamp#={fix.gps_date}", f"-GPS:GPSTimeStamp#={fix.gps_time_text}"]
            if fix.time_utc is not None
            else ["-GPS:GPSDateStamp=", "-GPS:GPSTimeStamp="]
        )
    else:
        stamp = f"{fix.gps_date} {fix.gps_time_text}Z"
        args.append(f"-{group}:GPSDateTime={stamp}" if fix.time_utc else f"-{group}:GPSDateTime=")
    args.append(f"-{group}:GPSMapDatum={MAP_DATUM}")
    return args


def _existing_from_info(info: dict[str, Any]) -> ExistingGps:
    elsewhere = positions_elsewhere(info)
    tags = {k: v for k, v in info.items() if k.startswith(("GPS:", "XMP-exif:")) or k in elsewhere}
    # XMP counts only with a position: a lone XMP GPSVersionID is left alone, not updated
    groups = frozenset(
        k.split(":", 1)[0] for k in tags if k.startswith("GPS:") or k.startswith("XMP-exif:GPSL")
    )
    has = any(k.endswith((":GPSLatitude", ":GPSLongitude")) for k in tags) or bool(elsewhere)
    lat = _coordinate(tags.get("GPS:GPSLatitude"), tags.get("GPS:GPSLatitudeRef"), "S")
    lon = _coordinate(tags.get("GPS:GPSLongitude"), tags.get("GPS:GPSLongitudeRef"), "W")
    if lat is None and "XMP-exif:GPSLatitude" in tags:  # XMP values are signed already
        lat = _float(tags.get("XMP-exif:GPSLatitude"))
        lon = _float(tags.get("XMP-exif:GPSLongitude"))
    return ExistingGps(
        has_gps=has,
        lat=lat,
        lon=lon,
        tags=tags,
        groups=groups,
        file_type=info.get("File:FileType"),
        absent_ifd0=tuple(t for t in _MANDATORY_IFD0 if f"IFD0:{t}" not in info),
        elsewhere=elsewhere,
    )


def _check_info(info: dict[str, Any], fix: GpsFix, existing: ExistingGps) -> None:
    """exiftool's read-back of a written file against what was meant; raises WriteFailed."""
    if existing.file_type and not _same_type(existing.file_type, info.get("File:FileType")):
        raise WriteFailed(f"file type changed from {existing.file_type} to {info.get('File:FileType')}")
    lat = _coordinate(info.get("GPS:GPSLatitude"), info.get("GPS:GPSLatitudeRef"), "S")
    lon = _coordinate(info.get("GPS:GPSLongitude"), info.get("GPS:GPSLongitudeRef"), "W")
    _check_position(lat, lon, fix, "EXIF")
    if (
        str(info.get("GPS:GPSLatitudeRef")) != fix.lat_ref
        or str(info.get("GPS:GPSLongitudeRef")) != fix.lon_ref
    ):
        raise WriteFailed("read-back GPS refs differ from what was written")
    if str(info.get("GPS:GPSVersionID")) != " ".join(map(str, GPS_VERSION)):
        raise WriteFailed(f"read-back GPSVersionID is {info.get('GPS:GPSVersionID')!r}")
    if str(info.get("GPS:GPSProcessingMethod", "")).strip() != fix.method:
        raise WriteFailed("read-back GPSProcessingMethod differs from what was written")
    _check_error(_float(info.get("GPS:GPSHPositioningError")), fix)
    if fix.by_time:
        _check_time_tags(
            {k[4:]: v for k, v in info.items() if k.startswith("GPS:")},
            fix,
            _float(info.get("GPS:GPSAltitude")),
            _time_seconds(info.get("GPS:GPSTimeStamp")),
        )
    if "XMP-exif" in existing.groups:
        xmp_lat, xmp_lon = _float(info.get("XMP-exif:GPSLatitude")), _float(info.get("XMP-exif:GPSLongitude"))
        _check_position(xmp_lat, xmp_lon, fix, "XMP")
    _check_no_contradiction(info, fix)


def _time_seconds(value: Any) -> float | None:
    """'HH:MM:SS[.fff]' (exiftool -n) as seconds of the day."""
    match = re.fullmatch(r"\s*(\d+):(\d+):(\d+(?:\.\d*)?)\s*", str(value or ""))
    return int(match[1]) * 3600 + int(match[2]) * 60 + float(match[3]) if match else None


def _check_time_tags(tags: dict[str, Any], fix: GpsFix, alt: float | None, seconds: float | None) -> None:
    """A fix by time's altitude, ref, UTC date and time and datum, read back (names without group)."""
    if fix.alt is None:
        if alt is not None:
            raise WriteFailed("a stale GPSAltitude was left in place")
    else:
        ref = tags.get("GPSAltitudeRef")
        ref = ref[0] if isinstance(ref, list) and ref else ref
        if alt is None or abs(alt - abs(fix.alt)) > 0.01 or str(ref) != str(fix.alt_ref):
            raise WriteFailed(f"read-back GPSAltitude is {alt} (ref {ref}), expected {fix.alt:.2f}")
    if fix.time_utc is None:
        if tags.get("GPSDateStamp") or seconds is not None:
            raise WriteFailed("a stale GPSDateStamp / GPSTimeStamp was left in place")
    else:
        assert fix.gps_time is not None
        h, m, us = fix.gps_time
        if str(tags.get("GPSDateStamp")) != fix.gps_date or seconds is None:
            raise WriteFailed(
                f"read-back GPSDateStamp is {tags.get('GPSDateStamp')!r}, expected {fix.gps_date}"
            )
        if abs(seconds - (h * 3600 + m * 60 + us / 1e6)) > 1e-3:
            raise WriteFailed(f"read-back GPSTimeStamp differs from {fix.gps_time_text}")
    if str(tags.get("GPSMapDatum", "")).strip() != MAP_DATUM:
        raise WriteFailed(f"read-back GPSMapDatum is {tags.get('GPSMapDatum')!r}")


def _check_no_contradiction(info: dict[str, Any], fix: GpsFix) -> None:
    """No position a reader may show (other XMP, maker records, Composite) disagrees with `fix`
    after the write; EXIF GPS (unsigned, with refs) is checked by the caller."""
    for key, value in info.items():
        group = key.partition(":")[0]
        if group == "GPS" or not _is_position(key) or (group not in _OWN_GROUPS and value in _NO_POSITION):
            continue
        wanted = fix.lat if key.lower().endswith("latitude") else fix.lon
        got = _float(value)
        if got is None or abs(got - wanted) > VERIFY_TOLERANCE_DEG:
            raise WriteFailed(f"{key} still says {value} after the write, which would contradict the new GPS")


def _same_type(before: str, after: Any) -> bool:
    """exiftool calls a WebP with a VP8X header 'Extended WEBP': adding EXIF to a simple (VP8/VP8L)
    WebP must convert it, and that is the same image (same_image_data checks the bitstream)."""
    return after == before or (before, after) == ("WEBP", "Extended WEBP")


def _float(value: Any) -> float | None:
    try:
        result = float(value)
    except (TypeError, ValueError):
        return None
    return result if math.isfinite(result) else None


def _check_position(lat: float | None, lon: float | None, fix: GpsFix, where: str) -> None:
    if lat is None or lon is None:
        raise WriteFailed(f"read-back found no {where} position")
    if abs(lat - fix.lat) > VERIFY_TOLERANCE_DEG or abs(lon - fix.lon) > VERIFY_TOLERANCE_DEG:
        raise WriteFailed(
            f"read-back {where} position {lat:.7f}, {lon:.7f} differs from {fix.lat:.7f}, {fix.lon:.7f}"
        )


def _check_error(value: float | None, fix: GpsFix) -> None:
    wanted = fix.error_m
    if wanted is None:
        if value is not None:
            raise WriteFailed("a stale GPSHPositioningError was left in place")
        return
    if value is None or abs(value - wanted) > max(0.01, 1e-6 * wanted):
        raise WriteFailed(f"read-back GPSHPositioningError is {value}, expected {wanted:.2f}")


# --------------------------------------------------------------------------------------------------
# Pure-Python JPEG writer
# --------------------------------------------------------------------------------------------------

_EXIF_HEADER = b"Exif\x00\x00"
_XMP_HEADER = b"http://ns.adobe.com/xap/1.0/\x00"
_MAX_SEGMENT = 65533  # APP1 payload limit: the 16-bit length counts itself
_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4}
_GPS_POINTER = 0x8825
_SUB_IFDS = {0x8769: "Exif IFD", 0xA005: "Interop IFD"}
_IFD_POINTERS = [(0x0201, 0x0202)]  # JPEGInterchangeFormat / Length (IFD1's thumbnail)
_MAKER_POINTERS = [(0x0088, 0x0089), (0x0081, 0x0088), (0x0101, 0x0102)]
"""(start, length) maker-note tags: Minolta's PreviewImageStart/Length and ThumbnailOffset/Length,
Olympus-style previews: offsets that must stay inside the block."""
_MAKER_HEADERS = ((b"SANYO\x00", 8), (b"OLYMP\x00", 8), (b"EPSON\x00", 8), (b"Panasonic\x00", 12))
"""Maker notes whose IFD follows a short header and whose offsets count from the TIFF header, like
the EXIF block's own (Sanyo, old Olympus, Epson, Panasonic): checked like any IFD. Before, such a
maker note was not seen as an IFD at all and whatever it pointed at went unchecked."""
_WRITTEN_GPS_TAGS = frozenset({0x00, 0x01, 0x02, 0x03, 0x04, 0x1B, 0x1F})
_TIME_GPS_TAGS = frozenset({0x05, 0x06, 0x07, 0x12, 0x1D})
"""Altitude, time stamp, map datum, date stamp: written for a fix by time (stale ones dropped)."""
_GPS_NAMES = {
    0x00: "GPSVersionID",
    0x01: "GPSLatitudeRef",
    0x02: "GPSLatitude",
    0x03: "GPSLongitudeRef",
    0x04: "GPSLongitude",
    0x05: "GPSAltitudeRef",
    0x06: "GPSAltitude",
    0x07: "GPSTimeStamp",
    0x12: "GPSMapDatum",
    0x1B: "GPSProcessingMethod",
    0x1D: "GPSDateStamp",
    0x1F: "GPSHPositioningError",
}
_ASCII_CHARSET = b"ASCII\x00\x00\x00"


@dataclass
class _Segment:
    marker: int
    start: int  # offset of the 0xFF
    end: int  # offset after the segment

    def payload(self, data: bytes) -> bytes:
        return data[self.start + 4 : self.end]


def _jpeg_segments(data: bytes) -> list[_Segment]:
    """The header segments (SOI to the first SOS, exclusive). Raises WriteFailed on anything odd."""
    if data[:3] != b"\xff\xd8\xff":
        raise WriteFailed("not a JPEG file")
    segments: list[_Segment] = []
    pos, n = 2, len(data)
    while True:
        if pos + 2 > n or data[pos] != 0xFF:
            raise WriteFailed("JPEG header structure is broken")
        marker = data[pos + 1]
        if marker == 0xFF:
            pos += 1
            continue
        if marker in (0xDA, 0xD9):
            return segments
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:
            pos += 2
            continue
        if pos + 4 > n:
            raise WriteFailed("JPEG header is truncated")
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if length < 2 or pos + 2 + length > n:
            raise WriteFailed("JPEG segment length is out of range")
        segments.append(_Segment(marker, pos, pos + 2 + length))
        pos += 2 + length


@dataclass
class _Entry:
    tag: int
    type: int
    count: int
    raw: bytes  # the 12 bytes of the entry, copied verbatim when kept


class _Tiff:
    """Just enough TIFF to find IFD0 and the GPS IFD and read their entries, bounds-checked."""

    def __init__(self, block: bytes) -> None:
        self.block = block
        if block[:4] == b"II*\x00":
            self.order = "<"
        elif block[:4] == b"MM\x00*":
            self.order = ">"
        else:
            raise WriteFailed("EXIF block has no TIFF header")
        self.ifd0_offset = self.u32(4)

    def u16(self, off: int) -> int:
        return struct.unpack_from(self.order + "H", self.block, off)[0]

    def u32(self, off: int) -> int:
        return struct.unpack_from(self.order + "I", self.block, off)[0]

    def read_ifd(self, offset: int, what: str) -> tuple[list[_Entry], int]:
        if offset < 8 or offset + 2 > len(self.block):
            raise WriteFailed(f"EXIF {what} offset is out of range")
        count = self.u16(offset)
        end = offset + 2 + 12 * count
        if end + 4 > len(self.block):
            raise WriteFailed(f"EXIF {what} runs past the EXIF block")
        entries = []
        for i in range(count):
            pos = offset + 2 + 12 * i
            tag, typ, cnt = struct.unpack_from(self.order + "HHI", self.block, pos)
            entries.append(_Entry(tag, typ, cnt, self.block[pos : pos + 12]))
        return entries, self.u32(end)

    def u32_at(self, entry: _Entry) -> int:
        """The value/offset field of an entry as an unsigned 32-bit number."""
        return struct.unpack_from(self.order + "I", entry.raw, 8)[0]

    def value_bytes(self, entry: _Entry) -> bytes | None:
        size = _TYPE_SIZES.get(entry.type, 0) * entry.count
        if size <= 4:
            return entry.raw[8 : 8 + size]
        off = struct.unpack_from(self.order + "I", entry.raw, 8)[0]
        if off + size > len(self.block):
            return None
        return self.block[off : off + size]

    def value(self, entry: _Entry) -> Any:
        """A JSON-friendly value of a GPS entry (for the journal and the read-back check)."""
        raw = self.value_bytes(entry)
        if raw is None:
            return None
        if entry.type == 2:
            return raw.split(b"\x00", 1)[0].decode("latin-1")
        if entry.type in (5, 10):
            fmt = self.order + ("I" if entry.type == 5 else "i") * (2 * entry.count)
            nums = struct.unpack(fmt, raw)
            return [nums[i] / nums[i + 1] if nums[i + 1] else None for i in range(0, len(nums), 2)]
        if entry.type in (1, 3, 4):
            fmt = self.order + {1: "B", 3: "H", 4: "I"}[entry.type] * entry.count
            return list(struct.unpack(fmt, raw))
        if entry.type == 7:
            return raw.removeprefix(_ASCII_CHARSET).split(b"\x00", 1)[0].decode("latin-1")
        return None


def _dms_rationals(value: float) -> list[tuple[int, int]]:
    """|value| as degrees/1, minutes/1, seconds/1e6 in exact integers (seconds never reach 60)."""
    micro = round(abs(value) * 3600 * 1_000_000)
    deg, rest = divmod(micro, 3600 * 1_000_000)
    minutes, micro_sec = divmod(rest, 60 * 1_000_000)
    return [(deg, 1), (minutes, 1), (micro_sec, 1_000_000)]


def _metres_rational(value: float) -> tuple[int, int]:
    centi = round(value * 100)
    return (centi, 100) if centi < 2**32 else (min(round(value), 2**32 - 1), 1)


class _ExifBlock:
    """A TIFF-structured EXIF block (or none yet), parsed; `new_block` is it with the GPS appended.
    The container (a JPEG APP1 segment, a WebP EXIF chunk) is the subclass's business."""

    def __init__(self, block: bytes | None) -> None:
        self.tiff: _Tiff | None = None
        self.ifd0: list[_Entry] = []
        self.ifd0_next = 0
        self.gps: list[_Entry] = []
        self.gps_pointer: _Entry | None = None
        if block is None:
            return
        self.tiff = _Tiff(block)
        self.ifd0, self.ifd0_next = self.tiff.read_ifd(self.tiff.ifd0_offset, "IFD0")
        self.gps_pointer = next((e for e in self.ifd0 if e.tag == _GPS_POINTER), None)
        if self.gps_pointer is not None:
            if self.gps_pointer.count != 1 or self.gps_pointer.type not in (4, 13):
                raise WriteFailed("EXIF GPS pointer is malformed")
            self.gps, _ = self.tiff.read_ifd(self.tiff.u32_at(self.gps_pointer), "GPS IFD")

    def xmp_has_gps(self) -> bool:
        """Any latitude/longitude in XMP (exif:GPSLatitude, DJI's drone-dji:GpsLatitude, ...)."""
        return False

    def maker_segments(self) -> list[str]:
        """Records of makers that keep data of their own (FLIR keeps a GPS record there)."""
        return []

    def with_gps(self, fix: GpsFix) -> bytes:
        """The new file's bytes."""
        raise NotImplementedError

    def gps_tags(self) -> dict[str, Any]:
        if self.tiff is None:
            return {}
        return {_GPS_NAMES.get(e.tag, f"GPSTag{e.tag:#06x}"): self.tiff.value(e) for e in self.gps}

    def outside_pointer(self) -> str | None:
        """Where the EXIF block points past its own end (a maker's preview or thumbnail stored in
        later segments, an IFD elsewhere): appending to the block would shift what those offsets
        point at, so the Python writer refuses such a file. None when everything is inside."""
        tiff = self.tiff
        if tiff is None:
            return None
        size = len(tiff.block)
        seen: set[int] = set()
        todo: list[tuple[int, str]] = [(tiff.ifd0_offset, "IFD0")]
        while todo:
            offset, what = todo.pop()
            if offset in seen or offset == 0:
                continue
            seen.add(offset)
            if offset + 2 > size:
                return f"{what} lies outside the EXIF block"
            try:
                entries, next_ifd = tiff.read_ifd(offset, what)
            except WriteFailed:
                if what == "MakerNote":
                    continue  # not an IFD-style maker note: its offsets cannot be checked here
                return f"{what} runs past the EXIF block"
            if what == "IFD0" and next_ifd:
                todo.append((next_ifd, "IFD1"))
            values = {e.tag: tiff.u32_at(e) for e in entries if e.count == 1 and e.type in (3, 4)}
            for e in entries:
                width = _TYPE_SIZES.get(e.type, 0) * e.count
                if width > 4 and tiff.u32_at(e) + width > size:
                    return f"{what} tag 0x{e.tag:04x} points past the EXIF block"
                if e.tag in _SUB_IFDS and e.count == 1:
                    todo.append((tiff.u32_at(e), _SUB_IFDS[e.tag]))
                if e.tag == 0x927C and width > 4 and what == "Exif IFD":
                    start = tiff.u32_at(e)
                    head = tiff.block[start : start + 12]
                    skip = next((n for prefix, n in _MAKER_HEADERS if head.startswith(prefix)), 0)
                    todo.append((start + skip, "MakerNote"))
            for start, length in _MAKER_POINTERS if what == "MakerNote" else _IFD_POINTERS:
                if start in values and values[start] + values.get(length, 0) > size:
                    return f"{what} tag 0x{start:04x} (a preview or thumbnail) points past the EXIF block"
        return None

    def new_block(self, fix: GpsFix) -> bytes:
        if self.tiff is None:
            order = ">"
            block = bytearray(b"MM\x00*\x00\x00\x00\x08\x00\x00\x00\x00\x00\x00")  # empty IFD0 at 8
            ifd0: list[_Entry] = []
            ifd0_next = 0
            gps_pointer = None
        else:
            order = self.tiff.order
            block = bytearray(self.tiff.block)
            ifd0, ifd0_next, gps_pointer = self.ifd0, self.ifd0_next, self.gps_pointer
        pack = lambda fmt, *v: struct.pack(order + fmt, *v)  # noqa: E731
        if len(block) % 2:
            block += b"\x00"  # TIFF offsets are word aligned

        new_entries: list[tuple[int, int, int, bytes]] = [
            (0x00, 1, 4, bytes(GPS_VERSION)),
            (0x01, 2, 2, fix.lat_ref.encode() + b"\x00"),
            (0x02, 5, 3, b"".join(pack("II", *r) for r in _dms_rationals(fix.lat))),
            (0x03, 2, 2, fix.lon_ref.encode() + b"\x00"),
            (0x04, 5, 3, b"".join(pack("II", *r) for r in _dms_rationals(fix.lon))),
        ]
        method = _ASCII_CHARSET + fix.method.encode("ascii")
        new_entries.append((0x1B, 7, len(method), method))
        if fix.error_m is not None:
            new_entries.append((0x1F, 5, 1, pack("II", *_metres_rational(fix.error_m))))
        replaced = _WRITTEN_GPS_TAGS
        if fix.by_time:  # as exiftool's -geotag writes it
            replaced = _WRITTEN_GPS_TAGS | _TIME_GPS_TAGS
            if fix.alt is not None:
                new_entries.append((0x05, 1, 1, bytes([fix.alt_ref])))
                new_entries.append((0x06, 5, 1, pack("II", *_metres_rational(abs(fix.alt)))))
            if fix.gps_time is not None and fix.gps_date is not None:
                h, m, us = fix.gps_time
                new_entries.append((0x07, 5, 3, pack("IIIIII", h, 1, m, 1, us, 1_000_000)))
                new_entries.append((0x1D, 2, 11, fix.gps_date.encode() + b"\x00"))
            datum = MAP_DATUM.encode() + b"\x00"
            new_entries.append((0x12, 2, len(datum), datum))
        kept = [e for e in self.gps if e.tag not in replaced]

        # Layout at the end of the block: [IFD0 copy, when it lacks a GPS pointer] [GPS IFD] [values]
        ifd0_copy_at = len(block) if gps_pointer is None else None
        gps_at = len(block) + (2 + 12 * (len(ifd0) + 1) + 4 if gps_pointer is None else 0)
        n_gps = len(kept) + len(new_entries)
        values_at = gps_at + 2 + 12 * n_gps + 4
        values = bytearray()
        rows: list[tuple[int, bytes]] = [(e.tag, e.raw) for e in kept]
        for tag, typ, count, value in new_entries:
            if len(value) <= 4:
                field_bytes = value.ljust(4, b"\x00")
            else:
                field_bytes = pack("I", values_at + len(values))
                values += value + (b"\x00" if len(value) % 2 else b"")
            rows.append((tag, pack("HHI", tag, typ, count) + field_bytes))
        rows.sort(key=lambda r: r[0])
        gps_ifd = pack("H", n_gps) + b"".join(r for _, r in rows) + pack("I", 0)

        if gps_pointer is None:
            pointer = pack("HHI", _GPS_POINTER, 4, 1) + pack("I", gps_at)
            entries = sorted([(e.tag, e.raw) for e in ifd0] + [(_GPS_POINTER, pointer)], key=lambda r: r[0])
            block += pack("H", len(entries)) + b"".join(r for _, r in entries) + pack("I", ifd0_next)
            assert ifd0_copy_at is not None
            block[4:8] = pack("I", ifd0_copy_at)
        else:
            pos = self._entry_offset(gps_pointer)
            block[pos + 8 : pos + 12] = pack("I", gps_at)
        assert len(block) == gps_at
        block += gps_ifd + values
        return bytes(block)

    def _entry_offset(self, entry: _Entry) -> int:
        """Where `entry` (one of IFD0's) sits in the TIFF block."""
        assert self.tiff is not None
        index = self.ifd0.index(entry)
        return self.tiff.ifd0_offset + 2 + 12 * index


_XMP_POSITION = re.compile(rb"(?i)(latitude|longitude)")


class _Exif(_ExifBlock):
    """The Exif APP1 segment of a JPEG, parsed; `with_gps` returns the new file's bytes."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.segments = _jpeg_segments(data)
        self.app1 = next(
            (s for s in self.segments if s.marker == 0xE1 and s.payload(data).startswith(b"Exif\x00")), None
        )
        super().__init__(self.app1.payload(data)[6:] if self.app1 is not None else None)

    def xmp_has_gps(self) -> bool:
        return any(
            s.marker == 0xE1
            and s.payload(self.data).startswith(_XMP_HEADER)
            and _XMP_POSITION.search(s.payload(self.data)) is not None
            for s in self.segments
        )

    def maker_segments(self) -> list[str]:
        names = []
        for seg in self.segments:
            if 0xE0 <= seg.marker <= 0xEF:
                head = seg.payload(self.data)[:5]
                if head.startswith(b"FLIR"):
                    names.append("FLIR")
        return names

    def with_gps(self, fix: GpsFix) -> bytes:
        payload = _EXIF_HEADER + self.new_block(fix)
        if len(payload) > _MAX_SEGMENT:
            raise WriteFailed("the EXIF block would outgrow a JPEG segment (64 KB); install exiftool")
        segment = b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload
        if self.app1 is not None:
            return self.data[: self.app1.start] + segment + self.data[self.app1.end :]
        insert_at = 2
        for s in self.segments:  # after a leading JFIF/JFXX APP0, as exiftool places it
            if s.marker != 0xE0 or s.start != insert_at:
                break
            insert_at = s.end
        return self.data[:insert_at] + segment + self.data[insert_at:]


_WEBP_VP8X_EXIF, _WEBP_VP8X_ALPHA = 0x08, 0x10


def _riff_chunk(kind: bytes, payload: bytes) -> bytes:
    return kind + struct.pack("<I", len(payload)) + payload + (b"\x00" if len(payload) % 2 else b"")


def _webp_canvas(kind: bytes, payload: bytes) -> tuple[int, int, bool]:
    """(width, height, has alpha) from a simple WebP's VP8 or VP8L bitstream header."""
    if kind == b"VP8 " and len(payload) >= 10 and payload[3:6] == b"\x9d\x01\x2a" and not payload[0] & 1:
        width, height = struct.unpack_from("<HH", payload, 6)
        return width & 0x3FFF, height & 0x3FFF, False
    if kind == b"VP8L" and len(payload) >= 5 and payload[0] == 0x2F:
        bits = int.from_bytes(payload[1:5], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1, bool(bits >> 28 & 1)
    raise WriteFailed("the WebP bitstream header is not readable")


class _WebpExif(_ExifBlock):
    """The EXIF chunk of a WebP, parsed. `with_gps` writes the GPS into it, or adds one: a simple
    (VP8 / VP8L) WebP becomes an extended one (a VP8X header with the EXIF flag and the canvas size
    from the bitstream header), its image chunk copied byte for byte."""

    def __init__(self, data: bytes) -> None:
        if data[:4] != b"RIFF" or data[8:12] != b"WEBP":
            raise WriteFailed("not a WebP file")
        if int.from_bytes(data[4:8], "little") + 8 != len(data):
            raise WriteFailed("the WebP RIFF size does not match the file (truncated, or data after it)")
        self.chunks: list[tuple[bytes, bytes]] = []
        pos = 12
        while pos < len(data):
            kind, length = data[pos : pos + 4], int.from_bytes(data[pos + 4 : pos + 8], "little")
            if pos + 8 + length > len(data):
                raise WriteFailed("a WebP chunk runs past the end of the file")
            self.chunks.append((kind, data[pos + 8 : pos + 8 + length]))
            pos += 8 + length + (length & 1)
        kinds = [k for k, _ in self.chunks]
        if not kinds or kinds[0] not in (b"VP8X", b"VP8 ", b"VP8L") or kinds.count(b"EXIF") > 1:
            raise WriteFailed("unexpected WebP chunk layout")
        exif = next((p for k, p in self.chunks if k == b"EXIF"), None)
        # the spec's EXIF chunk is a bare TIFF block; some writers put "Exif\0\0" first (kept as is)
        self.prefix = _EXIF_HEADER if exif is not None and exif.startswith(_EXIF_HEADER) else b""
        super().__init__(exif[len(self.prefix) :] if exif is not None else None)

    def xmp_has_gps(self) -> bool:
        return any(k == b"XMP " and _XMP_POSITION.search(p) is not None for k, p in self.chunks)

    def with_gps(self, fix: GpsFix) -> bytes:
        exif = self.prefix + self.new_block(fix)
        chunks = list(self.chunks)
        if chunks[0][0] != b"VP8X":  # simple: VP8X first, then the bitstream chunk, then EXIF
            width, height, alpha = _webp_canvas(*chunks[0])
            flags = _WEBP_VP8X_ALPHA if alpha else 0
            header = (
                bytes([flags, 0, 0, 0])
                + (width - 1).to_bytes(3, "little")
                + (height - 1).to_bytes(3, "little")
            )
            chunks.insert(0, (b"VP8X", header))
        vp8x = chunks[0][1]
        chunks[0] = (b"VP8X", bytes([vp8x[0] | _WEBP_VP8X_EXIF]) + vp8x[1:])
        kinds = [k for k, _ in chunks]
        if b"EXIF" in kinds:
            chunks[kinds.index(b"EXIF")] = (b"EXIF", exif)
        else:  # the spec's order: image data, EXIF, XMP, unknown chunks
            chunks.insert(kinds.index(b"XMP ") if b"XMP " in kinds else len(chunks), (b"EXIF", exif))
        body = b"WEBP" + b"".join(_riff_chunk(k, p) for k, p in chunks)
        return b"RIFF" + struct.pack("<I", len(body)) + body


def _parse_photo(data: bytes) -> _ExifBlock:
    """The EXIF of a JPEG or WebP, parsed for the Python writer."""
    return _WebpExif(data) if data[:4] == b"RIFF" else _Exif(data)


def _dms_value(tags: dict[str, Any], axis: str, negative_ref: str) -> float | None:
    parts = tags.get(f"GPS{axis}")
    if not isinstance(parts, list) or len(parts) != 3 or any(p is None for p in parts):
        return None
    value = parts[0] + parts[1] / 60 + parts[2] / 3600
    return -value if tags.get(f"GPS{axis}Ref") == negative_ref else value


class PythonJpegWriter:
    """The fallback when exiftool is absent: JPEG and WebP, EXIF GPS only, nothing else moves."""

    name = "python (JPEG and WebP only)"

    def unsupported(self, path: Path) -> str | None:
        try:
            with open(path, "rb") as fh:
                head = fh.read(12)
        except OSError as exc:
            return f"cannot read file: {exc.strerror or exc}"
        if head[:3] == b"\xff\xd8\xff" or (head[:4] == b"RIFF" and head[8:12] == b"WEBP"):
            return None
        return "only JPEG and WebP can be written without exiftool (apt-get install libimage-exiftool-perl)"

    def read_gps(self, path: Path) -> ExistingGps:
        exif = _parse_photo(path.read_bytes())
        outside = exif.outside_pointer()
        if outside:
            raise WriteFailed(f"{outside}; only exiftool can write this file without damaging it")
        makers = exif.maker_segments()
        if makers:
            raise WriteFailed(
                f"the photo has a {makers[0]} record, which may hold a measured position that only "
                "exiftool reads (apt-get install libimage-exiftool-perl)"
            )
        tags = exif.gps_tags()
        has = "GPSLatitude" in tags or "GPSLongitude" in tags or exif.xmp_has_gps()
        from geotag.io.exif import read_exif

        info = read_exif(path)
        return ExistingGps(
            has_gps=has,
            lat=info.gt_lat,
            lon=info.gt_lon,
            tags={f"GPS:{k}": v for k, v in tags.items()},
            groups=frozenset({"GPS"} if tags else set()) | ({"XMP"} if exif.xmp_has_gps() else set()),
            file_type="WEBP" if isinstance(exif, _WebpExif) else "JPEG",
        )

    def refuses(self, existing: ExistingGps) -> str | None:
        if "XMP" in existing.groups:
            return "the photo keeps GPS in XMP too; only exiftool updates both"
        return None

    def write(self, src: Path, dst: Path, fix: GpsFix, existing: ExistingGps) -> None:
        why = self.refuses(existing)
        if why:
            raise WriteFailed(why)
        new = _parse_photo(src.read_bytes()).with_gps(fix)
        try:
            write_new_file(dst, new)
        except OSError as exc:
            dst.unlink(missing_ok=True)
            raise WriteFailed(
                "disk full" if exc.errno == errno.ENOSPC else f"cannot write: {exc.strerror or exc}"
            ) from exc

    def verify(self, path: Path, fix: GpsFix, existing: ExistingGps) -> None:
        from geotag.io.exif import read_exif

        tags = _parse_photo(path.read_bytes()).gps_tags()
        _check_position(_dms_value(tags, "Latitude", "S"), _dms_value(tags, "Longitude", "W"), fix, "EXIF")
        # and through an independent parser, the one `geotag scan` uses (exifread). It cannot see an
        # EXIF block that follows a large XMP segment ('no exif'); then the check above stands alone.
        info = read_exif(path)
        if info.gt_note != "no exif":
            _check_position(info.gt_lat, info.gt_lon, fix, "EXIF (exifread)")
        if tags.get("GPSLatitudeRef") != fix.lat_ref or tags.get("GPSLongitudeRef") != fix.lon_ref:
            raise WriteFailed("read-back GPS refs differ from what was written")
        if tags.get("GPSVersionID") != list(GPS_VERSION) or tags.get("GPSProcessingMethod") != fix.method:
            raise WriteFailed("read-back GPSVersionID or GPSProcessingMethod differs")
        error = tags.get("GPSHPositioningError")
        _check_error(error[0] if error else None, fix)
        if fix.by_time:
            alt, stamp = tags.get("GPSAltitude"), tags.get("GPSTimeStamp")
            seconds = None
            if isinstance(stamp, list) and len(stamp) == 3 and None not in stamp:
                seconds = stamp[0] * 3600 + stamp[1] * 60 + stamp[2]
            _check_time_tags(tags, fix, alt[0] if alt else None, seconds)

    def read_gps_many(self, paths: Sequence[Path]) -> list[ExistingGps | WriteFailed]:
        return [_call(self.read_gps, p) for p in paths]

    def verify_many(self, items: Sequence[tuple[Path, GpsFix, ExistingGps]]) -> list[WriteFailed | None]:
        return [_call(self.verify, *item) for item in items]

    def close(self) -> None:
        pass


def _call(fn: Any, *args: Any) -> Any:
    """fn(*args), with a WriteFailed (or a read error) returned instead of raised."""
    try:
        return fn(*args)
    except WriteFailed as exc:
        return exc
    except OSError as exc:
        return WriteFailed(f"cannot read file: {exc.strerror or exc}")


def make_writer(kind: str = "auto") -> GpsWriter:
    """'auto': exiftool when available (GEOTAG_EXIFTOOL), else the Python JPEG writer; 'exiftool' or
    'python' force one. Asking for exiftool when there is none is an input error."""
    if kind not in ("auto", "exiftool", "python"):
        raise InputError(f"unknown writer {kind!r}; use auto, exiftool or python")
    if kind == "python":
        return PythonJpegWriter()
    exe = find_exiftool()
    if exe is None:
        if kind == "exiftool":
            raise InputError(
                "exiftool not found (apt-get install libimage-exiftool-perl, or unset GEOTAG_EXIFTOOL=none)"
            )
        return PythonJpegWriter()
    return ExiftoolWriter(exe)


def read_gps_without_writer(path: Path) -> ExistingGps:
    """Whether a photo has GPS, through geotag's own reader (sidecar mode without exiftool)."""
    from geotag.io.exif import read_exif

    info = read_exif(path)
    note = info.gt_note or ""
    if note.startswith(("unsupported format", "exif unreadable")):
        raise WriteFailed(f"cannot tell whether the photo has GPS ({note}); install exiftool")
    has = info.gt_lat is not None or note not in ("no exif", "no gps", "no gps position")
    return ExistingGps(has_gps=has, lat=info.gt_lat, lon=info.gt_lon, tags={"gt_note": info.gt_note})


# --------------------------------------------------------------------------------------------------
# XMP sidecars
# --------------------------------------------------------------------------------------------------

NS_X = "adobe:ns:meta/"
NS_RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
NS_EXIF = "http://ns.adobe.com/exif/1.0/"
_SIDECAR_GPS = (
    "GPSVersionID",
    "GPSLatitude",
    "GPSLongitude",
    "GPSProcessingMethod",
    "GPSHPositioningError",
    "GPSAltitude",
    "GPSAltitudeRef",
    "GPSTimeStamp",  # XMP's one date-time property (exiftool calls it XMP-exif:GPSDateTime)
    "GPSMapDatum",
)


def sidecar_path(photo: Path, style: str = "photo.jpg.xmp") -> Path:
    """`photo.jpg.xmp` (darktable, digiKam; the default) or `photo.xmp` (Lightroom, for raw files)."""
    if style == "photo.jpg.xmp":
        return photo.with_name(photo.name + ".xmp")
    if style == "photo.xmp":
        return photo.with_suffix(".xmp")
    raise InputError(f"unknown sidecar name style {style!r}; use photo.jpg.xmp or photo.xmp")


def xmp_coordinate(value: float, positive: str, negative: str) -> str:
    """XMP GPSCoordinate 'DDD,MM.mmmmmmmmK' (degrees, decimal minutes, hemisphere letter)."""
    micro_min = round(abs(value) * 60 * 10**8)
    deg, rest = divmod(micro_min, 60 * 10**8)
    return f"{deg},{rest // 10**8:02d}.{rest % 10**8:08d}{negative if value < 0 else positive}"


def parse_xmp_coordinate(text: str) -> float | None:
    """'33,51.40704S' or '33,51,24.42S' -> signed degrees; None when unreadable."""
    match = re.fullmatch(
        r"\s*(\d+(?:\.\d+)?)(?:,(\d+(?:\.\d+)?))?(?:,(\d+(?:\.\d+)?))?\s*([NSEWnsew])\s*", text
    )
    if not match:
        return None
    deg, minutes, seconds, ref = match.groups()
    value = float(deg) + float(minutes or 0) / 60 + float(seconds or 0) / 3600
    return -value if ref.upper() in "SW" else value


def _sidecar_values(fix: GpsFix) -> dict[str, str]:
    values = {
        "GPSVersionID": ".".join(map(str, GPS_VERSION)),
        "GPSLatitude": xmp_coordinate(fix.lat, "N", "S"),
        "GPSLongitude": xmp_coordinate(fix.lon, "E", "W"),
        "GPSProcessingMethod": fix.method,
    }
    if fix.error_m is not None:
        num, den = _metres_rational(fix.error_m)
        values["GPSHPositioningError"] = f"{num}/{den}"
    if fix.by_time:
        if fix.alt is not None:
            num, den = _metres_rational(abs(fix.alt))
            values["GPSAltitude"] = f"{num}/{den}"
            values["GPSAltitudeRef"] = str(fix.alt_ref)
        if fix.time_utc is not None:
            values["GPSTimeStamp"] = xmp_time(fix.time_utc)
        values["GPSMapDatum"] = MAP_DATUM
    return values


def xmp_time(when: datetime) -> str:
    """An XMP date-time in UTC: '2026-12-07T23:59:58Z' (fraction of a second only when there is one)."""
    t = when.astimezone(UTC)
    frac = f".{t.microsecond:06d}".rstrip("0") if t.microsecond else ""
    return t.strftime("%Y-%m-%dT%H:%M:%S") + frac + "Z"


def _fresh_sidecar(fix: GpsFix) -> bytes:
    from xml.sax.saxutils import escape

    props = "".join(f"   <exif:{k}>{escape(v)}</exif:{k}>\n" for k, v in _sidecar_values(fix).items())
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<x:xmpmeta xmlns:x="{NS_X}" x:xmptk="geotag {__version__}">\n'
        f' <rdf:RDF xmlns:rdf="{NS_RDF}">\n'
        f'  <rdf:Description rdf:about=""\n    xmlns:exif="{NS_EXIF}">\n'
        f"{props}"
        "  </rdf:Description>\n"
        " </rdf:RDF>\n"
        "</x:xmpmeta>\n"
    ).encode()


def _parse_xmp(data: bytes) -> tuple[ET.Element, list[tuple[str, str]]]:
    """The XMP tree (comments kept) plus its namespace prefixes, to write them back unchanged."""
    import io

    import defusedxml
    import defusedxml.ElementTree as SafeET

    if not data.strip():
        raise WriteFailed("existing sidecar is empty; left alone (remove it to have a new one written)")
    try:  # defusedxml: no entity expansion (574 bytes must not become 5 MB), no DTD, no external refs
        prefixes = [
            item for _, item in SafeET.iterparse(io.BytesIO(data), events=("start-ns",), forbid_dtd=True)
        ]
        parser = SafeET.DefusedXMLParser(target=ET.TreeBuilder(insert_comments=True), forbid_dtd=True)
        parser.feed(data)
        root = parser.close()
    except ET.ParseError as exc:
        raise WriteFailed(f"existing sidecar is not valid XML ({exc}); left alone") from exc
    except defusedxml.DefusedXmlException as exc:
        raise WriteFailed(f"existing sidecar uses a DTD or XML entities ({exc}); left alone") from exc
    return root, prefixes  # type: ignore[return-value]


def _descriptions(root: ET.Element) -> list[ET.Element]:
    return list(root.iter(f"{{{NS_RDF}}}Description"))


def read_sidecar_gps(data: bytes) -> tuple[float | None, float | None, dict[str, str]]:
    """(lat, lon, exif GPS properties) of an XMP sidecar; properties may be attributes or elements."""
    root, _ = _parse_xmp(data)
    props: dict[str, str] = {}
    for desc in _descriptions(root):
        for key, value in desc.attrib.items():
            if key.startswith(f"{{{NS_EXIF}}}GPS"):
                props[key.split("}", 1)[1]] = value
        for child in desc:
            if isinstance(child.tag, str) and child.tag.startswith(f"{{{NS_EXIF}}}GPS"):
                props[child.tag.split("}", 1)[1]] = (child.text or "").strip()
    lat = parse_xmp_coordinate(props["GPSLatitude"]) if "GPSLatitude" in props else None
    lon = parse_xmp_coordinate(props["GPSLongitude"]) if "GPSLongitude" in props else None
    return lat, lon, props


def sidecar_has_gps(data: bytes) -> bool:
    _, _, props = read_sidecar_gps(data)
    return "GPSLatitude" in props or "GPSLongitude" in props


def build_sidecar(existing: bytes | None, fix: GpsFix) -> bytes:
    """A new sidecar, or `existing` with its exif:GPS properties replaced and everything else kept.

    The merge re-serialises the XML tree with the original prefixes, so other applications' data
    (darktable history, Lightroom develop settings) survives; text around the root element (an
    `<?xpacket?>` wrapper, the XML declaration) is kept byte for byte."""
    if existing is None:
        return _fresh_sidecar(fix)
    root, prefixes = _parse_xmp(existing)
    descs = _descriptions(root)
    if not descs:
        raise WriteFailed("existing sidecar has no rdf:Description to add GPS to")
    written = {f"{{{NS_EXIF}}}{name}" for name in _SIDECAR_GPS}
    for desc in descs:
        for key in [k for k in desc.attrib if k in written]:
            del desc.attrib[key]
        for child in [c for c in desc if c.tag in written]:
            desc.remove(child)
    target = descs[0]
    for name, value in _sidecar_values(fix).items():
        ET.SubElement(target, f"{{{NS_EXIF}}}{name}").text = value
    try:
        text = existing.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise WriteFailed("existing sidecar is not UTF-8") from exc
    span = _root_span(text)
    if span is None:
        raise WriteFailed("existing sidecar has no XML root element")
    registered = dict(prefixes)
    registered.setdefault("exif", NS_EXIF)
    for prefix, uri in registered.items():
        if prefix and not re.match(r"ns\d+$", prefix):
            ET.register_namespace(prefix, uri)
    body = ET.tostring(root, encoding="unicode")
    return (text[: span[0]] + body + text[span[1] :]).encode("utf-8")


_SPACE = " \t\r\n\ufeff"


def _root_span(text: str) -> tuple[int, int] | None:
    """Where the root element starts and ends in a parsed XML document: the text around it can only
    be whitespace, comments, processing instructions (an xpacket wrapper) and a doctype, skipped from
    both ends; a tag name inside a comment (`<!-- </x:xmpmeta> -->`) is never mistaken for the root's."""
    i = 0
    while True:
        while i < len(text) and text[i] in _SPACE:
            i += 1
        for opener, closer in (("<?", "?>"), ("<!--", "-->"), ("<!", ">")):
            if text.startswith(opener, i):
                j = text.find(closer, i + len(opener))
                if j < 0:
                    return None
                i = j + len(closer)
                break
        else:
            break
    if not text.startswith("<", i):
        return None
    end = len(text)
    while True:
        end = len(text[:end].rstrip(_SPACE))
        for opener, closer in (("<!--", "-->"), ("<?", "?>")):
            if text.endswith(closer, i, end):
                j = text.rfind(opener, i, end - len(closer))
                if j <= i:
                    return None
                end = j
                break
        else:
            break
    return (i, end) if end > i and text[end - 1] == ">" else None
