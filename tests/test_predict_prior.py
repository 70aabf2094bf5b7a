"""predict with a track: photos time cannot place, but with fixes within --prior-window, are predicted by
the model inside their reachable region (--max-speed x time to the fix); --prior-window 0 and photos
far from every fix predict exactly as without the track."""

from __future__ import annotations

import csv
import json
from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from test_predict_time import NIKON, PHONE, T0
from time_photos import Route, distance_m, local, rows_by_name, write_gpx, write_photo

BERLIN, SYDNEY = (52.52, 13.40), (-33.87, 151.21)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory):
    """A random tiny GeoCLIP over 500 points worldwide and 20 within 200 km of Berlin and of Sydney each."""
    import torch

    from geotag.models.clip_convert import ClipVisionConfig
    from geotag.models.registry import build_geoclip

    rng = np.random.default_rng(0)
    lat, lon = [rng.uniform(-80, 80, 500)], [rng.uniform(-180, 180, 500)]
    for city in (BERLIN, SYDNEY):
        lat.append(city[0] + rng.uniform(-1.5, 1.5, 20))
        lon.append(city[1] + rng.uniform(-2.0, 2.0, 20))
    lat, lon = np.concatenate(lat), np.concatenate(lon)
    gallery = tmp_path_factory.mktemp("g") / "gallery.csv"
    with open(gallery, "w", newline="") as fh:
        csv.writer(fh).writerows([("lat", "lon"), *zip(lat.tolist(), lon.tolist(), strict=True)])
    torch.manual_seed(0)
    tiny = ClipVisionConfig(width=32, layers=1, heads=2, mlp_dim=64, patch_size=16, image_size=64)
    return build_geoclip(vit=tiny, allow_untrained=True, gallery=gallery)


def test_fixes_hours_away_keep_the_model_within_reach(tmp_path: Path, tiny_model) -> None:
    from geotag.config import PredictConfig, TimeConfig
    from geotag.engine.predict import run_predict

    route = Route(*SYDNEY, T0, east_ms=3.0)  # the unaided model answers near Berlin
    fixes = [(T0 + timedelta(minutes=m), *route.at(T0 + timedelta(minutes=m)), None) for m in range(10)]
    track = write_gpx(tmp_path / "t.gpx", fixes)
    folder = tmp_path / "p"
    folder.mkdir()
    for i in range(4):  # two hours after the last fix: beyond --max-extrapolate, within --prior-window
        when = T0 + timedelta(hours=2, seconds=i)
        write_photo(folder / f"later{i}.jpg", local(when, 2), colour=(60 * i, 200 - 40 * i, 90), **NIKON)
    write_photo(folder / "far.jpg", local(T0 + timedelta(days=2), 2), colour=(10, 200, 30), **NIKON)
    write_photo(folder / "gps.jpg", local(T0, 2), gps=(10.0, 20.0), colour=(200, 30, 30), **PHONE)
    base = {"batch_size": 2, "workers": 0, "top_k": 3}

    def run(name: str, **time: object) -> dict[str, dict]:
        cfg = TimeConfig(tracks=(track,), tz="Europe/Berlin", **time)  # type: ignore[arg-type]
        run_predict(PredictConfig(paths=[folder], out=tmp_path / name, time=cfg, **base), model=tiny_model)
        return rows_by_name(tmp_path / name)

    off, on = run("off.parquet", prior_window=0.0), run("on.parquet", max_speed=100.0)
    last = route.at(T0 + timedelta(minutes=9))
    reach_km = 10 / 1000 + 100.0 * (2 * 3600 - 9 * 60) / 3600  # fix error + 100 km/h x 1 h 51 min
    before = [
        distance_m((off[f"later{i}.jpg"]["pred_lat"], off[f"later{i}.jpg"]["pred_lon"]), last)
        for i in range(4)
    ]
    after = [
        distance_m((on[f"later{i}.jpg"]["pred_lat"], on[f"later{i}.jpg"]["pred_lon"]), last) for i in range(4)
    ]
    assert min(before) > 1000e3  # unaided, the random model answers on another continent
    assert max(after) < reach_km * 1e3  # every one inside its reachable region
    columns = ("pred_lat", "pred_lon", "confidence", "error_km", "topk", "source")
    for name in ("far.jpg", "gps.jpg"):  # no fix in the window / its own GPS: untouched by the prior
        assert {c: on[name][c] for c in columns} == {c: off[name][c] for c in columns}
    meta = json.loads(pq.read_schema(tmp_path / "on.parquet").metadata[b"geotag"])["time"]["prior"]
    assert meta == {"photos": 4, "prior_window_s": 21600.0, "max_speed_kmh": 100.0}
