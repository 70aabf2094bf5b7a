"""The demo's trip (sample_data/trip): a GPX ride, GPS-tagged phone photos, a camera without GPS whose
clock is 3 min 12 s slow. Its truth is what exiftool's own -geotag finds, and what the photos say."""

from __future__ import annotations

import csv
import json
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from write_exif_util import EXIFTOOL

from geotag.geo.distance import haversine_np
from geotag.io.exif import read_exif
from geotag.sample_data import CAMERA_SLOW_S, make_trip


@pytest.fixture(scope="module")
def trip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("trip")
    make_trip(folder, size=(96, 72))
    return folder


def _truth(folder: Path) -> dict[str, tuple[float, float]]:
    with open(folder / "truth.csv", newline="") as fh:
        return {r["path"]: (float(r["lat"]), float(r["lon"])) for r in csv.DictReader(fh)}


def test_trip_photos_say_what_the_demo_needs(trip: Path) -> None:
    from datetime import datetime

    from PIL import Image

    truth = _truth(trip)
    names = [f"phone_{i}.jpg" for i in range(1, 5)] + [f"camera_{i}.jpg" for i in range(1, 8)]
    assert sorted(truth) == sorted(names)
    for name, (lat, lon) in truth.items():
        with Image.open(trip / name) as im:
            exif = im.getexif()
        ifd, gps = exif.get_ifd(0x8769), exif.get_ifd(0x8825)
        local = datetime.strptime(ifd[0x9003], "%Y:%m:%d %H:%M:%S")
        assert ifd[0x9011] == "+01:00", name  # OffsetTimeOriginal: no --tz needed
        info = read_exif(trip / name)
        if name.startswith("phone"):
            assert (info.gt_lat, info.gt_lon) == (pytest.approx(lat, abs=1e-6), pytest.approx(lon, abs=1e-6))
            # the phone's clock is right: its local time less the zone is its GPS time
            h, m, sec = (float(v) for v in gps[7])
            assert gps[29] == local.strftime("%Y:%m:%d")
            assert (
                local - timedelta(hours=1)
            ).time().isoformat() == f"{int(h):02d}:{int(m):02d}:{int(sec):02d}"
        else:
            assert info.gt_lat is None and (exif[0x010F], exif[0x0110]) == ("NIKON CORPORATION", "NIKON D850")


@pytest.mark.skipif(EXIFTOOL is None, reason="exiftool not installed")
def test_exiftool_geotag_with_the_clock_offset_finds_the_truth(trip: Path, tmp_path: Path) -> None:
    """exiftool -geotag track.gpx -geosync=+0:03:12 places the four ride photos on their truth (within a
    metre); without the offset they land about 250 m off."""
    import shutil

    truth = _truth(trip)
    ride = [f"camera_{i}.jpg" for i in range(1, 5)]
    for sync, near in (("+0:03:12", True), ("0", False)):
        folder = tmp_path / f"sync{near}"
        folder.mkdir()
        for name in ride:
            shutil.copy(trip / name, folder / name)
        subprocess.run(
            [
                EXIFTOOL,
                "-q",
                "-geotag",
                str(trip / "track.gpx"),
                f"-geosync={sync}",
                "-geotime<${DateTimeOriginal}+01:00",
                "-overwrite_original",
                str(folder),
            ],
            check=True,
            capture_output=True,
        )
        out = json.loads(
            subprocess.run(
                [
                    EXIFTOOL,
                    "-n",
                    "-j",
                    "-Composite:GPSLatitude",
                    "-Composite:GPSLongitude",
                    str(folder),
                ],
                capture_output=True,
                check=True,
            ).stdout
        )
        for d in out:
            name = Path(d["SourceFile"]).name
            lat, lon = d["GPSLatitude"], d["GPSLongitude"]  # Composite, with -n: signed
            metres = 1000 * float(haversine_np(lat, lon, *truth[name]))
            assert (metres < 1.0) if near else (metres > 150), (sync, name, metres)
    assert CAMERA_SLOW_S == 192


def test_predict_places_the_camera_photos_by_track_and_siblings(trip: Path, tmp_path: Path) -> None:
    """What `make demo` runs (with --model none, so no weights are needed): the four ride photos by the
    track, the two walk photos by the phone's photos, each within 50 m of the truth; the evening photo,
    which no fix reaches, is left to the visual model."""
    import sys

    import pyarrow.parquet as pq

    out = tmp_path / "trip.parquet"
    cmd = [sys.executable, "-m", "geotag.cli", "predict", str(trip), "--track", str(trip / "track.gpx")]
    cmd += ["--siblings", "--clock-offset", "NIKON D850=+0:03:12", "--model", "none", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "placed 4 by track, 2 by sibling" in proc.stderr
    truth = _truth(trip)
    rows = {Path(r["path"]).name: r for r in pq.read_table(out).to_pylist()}
    sources = {name: rows[name]["source"] for name in rows if name.startswith("camera")}
    assert sources == {
        **{f"camera_{i}.jpg": "track" for i in range(1, 5)},
        **{f"camera_{i}.jpg": "sibling" for i in (5, 6)},
        "camera_7.jpg": None,
    }
    for name, source in sources.items():
        if source is not None:
            r = rows[name]
            metres = 1000 * float(haversine_np(r["pred_lat"], r["pred_lon"], *truth[name]))
            assert metres < 50, (name, metres)
            assert r["clock_offset_s"] == 192
