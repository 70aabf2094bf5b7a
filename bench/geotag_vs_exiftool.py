"""Geotagging from a GPX track: `geotag predict --track --model none` + `geotag write-exif` against
`exiftool -geotag`, writing the same tags into two copies of the same photos.

    PYTHONPATH=. .venv/bin/python bench/geotag_vs_exiftool.py [--n 2000] [--fixes 2881] [--dir FOLDER]
        [--writer auto|exiftool|python]

Makes N small JPEGs (rendered scenes of geotag.sample_data, 320x240, each with its own DateTimeOriginal
and OffsetTimeOriginal +02:00, no GPS) and one GPX track (a fix every 5 s over four hours, with
elevation; the photos' times fall inside it), copies the photos twice, then times, each as fresh
processes on a warm page cache:

- geotag: `geotag predict A --track T --model none --out P` and `geotag write-exif P` (journal and
  backups included, as a user runs it);
- exiftool: `exiftool -geotag T '-geotime<${DateTimeOriginal}+02:00' -overwrite_original B`.

Prints the seconds and photos/s of both, and how far apart the written positions are (the largest
distance in metres between a photo's two copies, through exiftool's own read-back), altitudes and
GPS time stamps too. Without exiftool on the PATH it says so and stops (exit 0).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

ZONE = "+02:00"
START = datetime(2024, 7, 20, 6, 0, tzinfo=UTC)  # 08:00 local
STEP_S = 5


def track_position(t: float, span: float) -> tuple[float, float, float]:
    """A winding ride in the hills south-west of Cape Town (south and east; fine for both tools)."""
    u = t / span
    lat = -34.10 - 0.25 * u + 0.02 * math.sin(12 * math.pi * u)
    lon = 18.40 + 0.30 * u + 0.015 * math.cos(9 * math.pi * u)
    return lat, lon, 120 + 300 * math.sin(math.pi * u) ** 2


def write_gpx(path: Path, n_fixes: int) -> float:
    """The track, one fix every STEP_S seconds; returns its span in seconds."""
    span = (n_fixes - 1) * STEP_S
    lines = ['<?xml version="1.0" encoding="UTF-8"?>']
    lines.append(
        '<gpx version="1.1" creator="geotag bench" xmlns="http://www.topografix.com/GPX/1/1"><trk><trkseg>'
    )
    for i in range(n_fixes):
        t = i * STEP_S
        lat, lon, alt = track_position(t, span)
        when = START + timedelta(seconds=t)
        lines.append(
            f'<trkpt lat="{lat:.7f}" lon="{lon:.7f}"><ele>{alt:.2f}</ele>'
            f"<time>{when:%Y-%m-%dT%H:%M:%S}Z</time></trkpt>"
        )
    lines.append("</trkseg></trk></gpx>")
    path.write_text("\n".join(lines) + "\n")
    return span


def _base_jpegs(n: int = 8) -> list[bytes]:
    from geotag.sample_data import PLACES, render

    out = []
    for place in PLACES[:n]:
        buf = io.BytesIO()
        render(place, (320, 240)).save(buf, "JPEG", quality=80)
        out.append(buf.getvalue())
    return out


def _with_exif(jpeg: bytes, local: datetime, i: int) -> bytes:
    """The JPEG with an EXIF APP1 (camera, DateTimeOriginal, OffsetTimeOriginal) after its JFIF APP0."""
    from PIL import Image

    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = "BENCH", f"CAM {i % 3}"
    ifd = exif.get_ifd(0x8769)
    ifd[0x9003] = local.strftime("%Y:%m:%d %H:%M:%S")
    ifd[0x9011] = ZONE
    payload = exif.tobytes()
    app1 = b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload
    at = 2 + 2 + int.from_bytes(jpeg[4:6], "big") if jpeg[2:4] == b"\xff\xe0" else 2
    return jpeg[:at] + app1 + jpeg[at:]


def make_photos(folder: Path, n: int, span: float) -> None:
    import random

    rng = random.Random(0)
    bases = _base_jpegs()
    folder.mkdir(parents=True)
    offset = timedelta(hours=int(ZONE[1:3]), minutes=int(ZONE[4:6]))
    for i in range(n):
        t = rng.uniform(STEP_S, span - STEP_S)
        local = (START + timedelta(seconds=round(t)) + offset).replace(tzinfo=None)
        (folder / f"IMG_{i:05d}.jpg").write_bytes(_with_exif(bases[i % len(bases)], local, i))


def timed(cmd: list[str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    return time.perf_counter() - start, proc


def read_back(exiftool: str, folder: Path) -> dict[str, dict[str, object]]:
    cmd = [exiftool, "-n", "-j", "-Composite:GPSLatitude", "-Composite:GPSLongitude", "-GPS:GPSAltitude"]
    cmd += ["-GPS:GPSAltitudeRef", "-GPS:GPSDateStamp", "-GPS:GPSTimeStamp", str(folder)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return {Path(d["SourceFile"]).name: d for d in json.loads(out)}


def compare(ours: dict[str, dict[str, object]], theirs: dict[str, dict[str, object]]) -> dict[str, float]:
    from geotag.geo.distance import haversine_np

    placed = [k for k in ours if "GPSLatitude" in ours[k]]
    both = [k for k in placed if "GPSLatitude" in theirs.get(k, {})]
    metres, alt, stamps = 0.0, 0.0, 0
    for k in both:
        a, b = ours[k], theirs[k]
        d = 1000 * float(
            haversine_np(a["GPSLatitude"], a["GPSLongitude"], b["GPSLatitude"], b["GPSLongitude"])
        )
        metres = max(metres, d)
        if "GPSAltitude" in a and "GPSAltitude" in b:
            alt = max(alt, abs(float(a["GPSAltitude"]) - float(b["GPSAltitude"])))
        stamps += (a.get("GPSDateStamp"), a.get("GPSTimeStamp")) != (
            b.get("GPSDateStamp"),
            b.get("GPSTimeStamp"),
        )
    placed_theirs = sum("GPSLatitude" in v for v in theirs.values())
    return {
        "ours": len(placed),
        "theirs": placed_theirs,
        "both": len(both),
        "m": metres,
        "alt": alt,
        "stamps": stamps,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000, help="photos")
    ap.add_argument("--fixes", type=int, default=2881, help="track fixes (every 5 s)")
    ap.add_argument("--dir", type=Path, default=None, help="where the temporary folder goes")
    ap.add_argument("--writer", default="auto", help="write-exif --writer")
    args = ap.parse_args()
    exiftool = shutil.which("exiftool")
    if exiftool is None:
        print(
            "skipped: exiftool is not on the PATH (apt-get install libimage-exiftool-perl); "
            "nothing to compare"
        )
        return 0
    work = Path(tempfile.mkdtemp(dir=args.dir, prefix="geotag-vs-exiftool-"))
    try:
        track = work / "track.gpx"
        span = write_gpx(track, args.fixes)
        make_photos(work / "src", args.n, span)
        a, b = work / "geotag", work / "exiftool"
        shutil.copytree(work / "src", a)
        shutil.copytree(work / "src", b)
        for p in [*a.iterdir(), *b.iterdir()]:
            p.read_bytes()  # a warm page cache for both
        preds = work / "preds.parquet"
        geotag = [sys.executable, "-m", "geotag.cli"]
        t_pred, p1 = timed(
            [*geotag, "predict", str(a), "--track", str(track), "--model", "none", "--out", str(preds)]
        )
        if p1.returncode != 0:
            print(f"geotag predict failed ({p1.returncode}): {p1.stderr.strip()[-2000:]}")
            return 1
        t_write, p2 = timed([*geotag, "write-exif", str(preds), "--writer", args.writer])
        if p2.returncode != 0:
            print(f"geotag write-exif failed ({p2.returncode}): {p2.stderr.strip()[-2000:]}")
            return 1
        geotime = "-geotime<${DateTimeOriginal}" + ZONE
        t_exif, p3 = timed([exiftool, "-q", "-geotag", str(track), geotime, "-overwrite_original", str(b)])
        if p3.returncode != 0:
            print(f"exiftool failed ({p3.returncode}): {p3.stderr.strip()[-2000:]}")
            return 1
        agree = compare(read_back(exiftool, a), read_back(exiftool, b))
        total = t_pred + t_write
        writer = next((ln for ln in p2.stderr.splitlines() if " with " in ln and "file(s)" in ln), "").strip()
        print(
            f"{args.n} photos (320x240 JPEG), one GPX track of {args.fixes} fixes; "
            f"exiftool {subprocess.run([exiftool, '-ver'], capture_output=True, text=True).stdout.strip()}"
        )
        print("| tool | seconds | photos/s |")
        print("|---|---|---|")
        print(f"| geotag predict --track --model none | {t_pred:.1f} | {args.n / t_pred:.0f} |")
        print(f"| geotag write-exif ({args.writer}) | {t_write:.1f} | {args.n / t_write:.0f} |")
        print(f"| geotag, both steps | {total:.1f} | {args.n / total:.0f} |")
        print(f"| exiftool -geotag -overwrite_original | {t_exif:.1f} | {args.n / t_exif:.0f} |")
        if writer:
            print(f"write-exif: {writer}")
        print(
            f"agreement: geotag placed {agree['ours']}, exiftool {agree['theirs']}, both {agree['both']}; "
            f"positions differ by at most {agree['m']:.3f} m, altitudes by {agree['alt']:.3f} m; "
            f"{agree['stamps']} GPS date/time stamp(s) differ"
        )
        print(
            f"summary: geotag {args.n / total:.0f} photos/s, exiftool {args.n / t_exif:.0f} photos/s "
            f"({t_exif / total:.2f}x); max position difference {agree['m']:.3f} m"
        )
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
