"""Offline country lookup: real GPS fixtures, OSV-5M's labels, sea and border cases, eval's figure."""

from __future__ import annotations

import csv
import logging
import time
from pathlib import Path

import numpy as np
import pytest

from geotag.eval.metrics import evaluate
from geotag.geo import places
from geotag.geo.places import add_countries, countries
from geotag.io.exif import read_exif
from geotag.io.parquet import PredictionWriter

from conftest import fixture_dir

EXIF_SAMPLES = {  # file in ../shared/fixtures/exif-samples -> country of its EXIF GPS
    "jpg/gps/DSCN0010.jpg": "IT",  # Arezzo
    "jpg/hdr/iphone_hdr_YES.jpg": "ES",  # Madrid
    "jpg/mobile/HMD_Nokia_8.3_5G.jpg": "FI",  # Helsinki
    "jpg/Kodak_CX7530.jpg": "KE",  # degrees + decimal minutes, just south of the equator
    "jpg/tests/67-0_length_string.jpg": "DE",
    "heic/IMG_5195.HEIC": "US",  # Kansas City
    "heic/mobile/HMD_Nokia_8.3_5G.heif": "ES",
}
GEOTAGGED = {
    "exif-parser-sylt.jpg": "DE",
    "exifr-IMG_20180725_163423.jpg": "CZ",
    "goexif-beijing.jpg": "CN",
    "mapillary-portland-3840x2160.jpg": "US",
    "opensfm-berlin-01.jpg": "DE",
}


def _gps(path: Path) -> tuple[float, float]:
    row = read_exif(path).as_row()
    assert row.get("gt_lat") is not None, path
    return row["gt_lat"], row["gt_lon"]


def test_countries_of_the_gps_fixtures() -> None:
    files = [fixture_dir("exif-samples") / f for f in EXIF_SAMPLES]
    files += [fixture_dir("geotagged") / f for f in GEOTAGGED]
    points = [_gps(f) for f in files]
    codes, names = countries([p[0] for p in points], [p[1] for p in points])
    assert codes == [*EXIF_SAMPLES.values(), *GEOTAGGED.values()]
    assert names[0] == "Italy" and names[2] == "Finland" and names[3] == "Kenya"


def test_osv5m_labels_agree() -> None:
    """OSV-5M's own country labels for its 71 photos: all but one border point (Yemen / Oman) agree."""
    with open(fixture_dir("osv5m-71") / "gt.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    codes, _ = countries([float(r["lat"]) for r in rows], [float(r["lon"]) for r in rows])
    wrong = [(r["image"], r["country"], c) for r, c in zip(rows, codes, strict=True) if c != r["country"]]
    assert len(wrong) <= 1, wrong


def test_codes_natural_earth_leaves_out_and_the_sea() -> None:
    points = {
        "FR": (48.8566, 2.3522),  # ISO_A2 is -99 for France, Norway and Kosovo in Natural Earth
        "NO": (59.9139, 10.7522),
        "XK": (42.6629, 21.1655),
        "AU": (-33.8568, 151.2153),  # Sydney harbour
        "PT": (38.6995, -9.2077),
        "MU": (-20.4406, 57.3189),
    }
    codes, _ = countries([p[0] for p in points.values()], [p[1] for p in points.values()])
    assert codes == list(points)
    sea, _ = countries([43.65, 30.0, None, float("nan"), 95.0], [7.28, -40.0, 1.0, 1.0, 0.0])
    assert sea == ["FR", None, None, None, None]  # 5 km off Nice; mid-Atlantic; missing; NaN; out of range


def test_vectorised_lookup_is_fast() -> None:
    rng = np.random.default_rng(0)
    lat, lon = rng.uniform(35, 60, 20_000), rng.uniform(-10, 30, 20_000)  # Europe, land and sea
    places.country_index()
    start = time.perf_counter()
    codes, _ = countries(lat.tolist(), lon.tolist())
    assert time.perf_counter() - start < 5.0
    assert sum(c is not None for c in codes) > 10_000


def test_add_countries_keeps_given_values() -> None:
    rows = [
        {"pred_lat": 43.47, "pred_lon": 11.88, "gt_lat": 40.45, "gt_lon": -3.72},
        {"pred_lat": 43.47, "pred_lon": 11.88, "country": "SM", "gt_country": "XX", "gt_lat": 40.45},
        {"status": "error"},
    ]
    add_countries(rows)
    assert (rows[0]["country"], rows[0]["gt_country"]) == ("IT", "ES")
    assert (rows[1]["country"], rows[1]["gt_country"]) == ("SM", "XX")
    assert "country" not in rows[2]


def test_without_data_the_lookup_degrades_to_nulls(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    places.country_index.cache_clear()
    monkeypatch.setattr(places, "data_file", lambda: None)
    monkeypatch.setattr(places, "_warned", places.threading.Event())
    try:
        with caplog.at_level(logging.WARNING, logger="geotag.geo.places"):
            assert countries([43.47], [11.88])[0] == [None]
            assert countries([40.45], [-3.72])[0] == [None]
        warnings = [r for r in caplog.records if "country lookup is off" in r.getMessage()]
        assert len(warnings) == 1
    finally:
        places.country_index.cache_clear()


def test_eval_reports_country_accuracy(tmp_path: Path) -> None:
    rows = [
        {
            "path": "/a.jpg",
            "status": "ok",
            "gt_lat": 43.47,
            "gt_lon": 11.88,
            "pred_lat": 43.0,
            "pred_lon": 11.0,
        },
        {
            "path": "/b.jpg",
            "status": "ok",
            "gt_lat": 40.45,
            "gt_lon": -3.72,
            "pred_lat": 43.0,
            "pred_lon": 1.0,
        },
        {
            "path": "/c.jpg",
            "status": "ok",
            "gt_lat": 60.15,
            "gt_lon": 24.9,
            "pred_lat": 30.0,
            "pred_lon": -40,
        },
        {
            "path": "/d.jpg",
            "status": "ok",
            "gt_lat": 30.0,
            "gt_lon": -40.0,
            "pred_lat": 30.0,
            "pred_lon": -40,
        },
    ]
    add_countries(rows)  # IT=IT, ES vs FR, FI vs sea (wrong), sea truth (not counted)
    path = tmp_path / "p.parquet"
    with PredictionWriter(path) as writer:
        writer.write_rows(rows)
    result = evaluate([path])
    assert result.rows[0]["n_scored"] == 4
    assert result.rows[0]["country_acc"] == pytest.approx(1 / 3)
    by = evaluate([path], by=["gt_country"])
    assert {r["gt_country"]: r["country_acc"] for r in by.rows} == {
        "ES": 0.0,
        "FI": 0.0,
        "IT": 1.0,
        None: None,
    }


def test_later_processes_read_the_borders_from_the_cache(tmp_path: Path) -> None:
    """The parsed polygons are cached (issue 20: pyogrio's import, with pandas and geopandas, was most of
    a small scan's start-up): a fresh process finds the same countries without importing pyogrio."""
    import json
    import os
    import subprocess
    import sys

    code = (
        "import sys, json, numpy as np\n"
        "from geotag.geo.places import countries\n"
        "lat, lon = np.array([48.86, -33.86, 64.14, 0.0]), np.array([2.29, 151.2, -21.9, -160.0])\n"
        "codes, _ = countries(lat, lon)\n"
        "print(json.dumps([codes, 'pyogrio' in sys.modules, 'pandas' in sys.modules]))\n"
    )
    env = {**os.environ, "GEOTAG_CACHE": str(tmp_path / "cache")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])

    def run() -> list:
        done = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        return json.loads(done.stdout)

    first, second = run(), run()
    assert first[0] == second[0] == ["FR", "AU", "IS", None]
    assert first[1] and not second[1] and not second[2]  # built with pyogrio once, then read from the cache
    assert len(list((tmp_path / "cache").glob("countries-*.arrow"))) == 1
    (entry,) = (tmp_path / "cache").glob("countries-*.arrow")
    entry.write_bytes(b"damaged")  # a broken entry is rebuilt, never trusted
    assert run()[0] == first[0]
