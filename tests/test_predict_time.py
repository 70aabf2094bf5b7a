"""`geotag predict` with time evidence (issue 25): tracks, siblings, zones, clock offsets, --model none."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import cli_util
import pyarrow.parquet as pq
import pytest
from time_photos import Route, distance_m, local, rows_by_name, write_gpx, write_photo

NIKON = {"make": "NIKON CORPORATION", "model": "NIKON D850"}
PHONE = {"make": "Apple", "model": "iPhone 13"}
T0 = datetime(2024, 7, 1, 10, 0, tzinfo=UTC)


def geotag(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str]:
    """(exit code, stderr) of `geotag ARGS` run in this process (tests/cli_util.py)."""
    done = cli_util.geotag(*args)
    return done.returncode, done.stderr


def metadata(path: Path) -> dict[str, Any]:
    return json.loads(pq.read_schema(path).metadata[b"geotag"])


# ------------------------------------------------------------------------------------------- siblings


def _phone_and_camera(folder: Path, route: Route, slow_s: float) -> dict[str, tuple[float, float]]:
    """Phone photos with GPS and OffsetTimeOriginal every 2 min; camera photos between them, no GPS and
    no zone, the camera's clock `slow_s` behind. Returns each camera photo's true position."""
    folder.mkdir()
    for i in range(7):
        t = T0 + timedelta(seconds=120 * i)
        write_photo(folder / f"phone{i}.jpg", local(t, 2), offset="+02:00", gps=route.at(t), **PHONE)
    truth = {}
    for i in range(6):
        t = T0 + timedelta(seconds=120 * i + 17 * (i + 1))
        write_photo(folder / f"dsc{i}.jpg", local(t, 2) - timedelta(seconds=slow_s), **NIKON)
        truth[f"dsc{i}.jpg"] = route.at(t)
    return truth


def test_siblings_place_a_slow_camera_within_50_m(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    route = Route(48.137, 11.575, T0, east_ms=9.0, north_ms=-4.0)  # a drive out of Munich
    truth = _phone_and_camera(tmp_path / "trip", route, slow_s=192)
    out = tmp_path / "p.parquet"
    code, err = geotag(
        capsys, "predict", tmp_path / "trip", "--out", out, "--model", "none", "--siblings",
        "--tz", "Europe/Berlin", "--clock-offset", "NIKON CORPORATION NIKON D850=+0:03:12",
    )  # fmt: skip
    assert code == 0, err
    rows = rows_by_name(out)
    for name, where in truth.items():
        row = rows[name]
        assert row["source"] == "sibling" and row["status"] == "ok"
        assert distance_m((row["pred_lat"], row["pred_lon"]), where) < 50, name
        assert row["clock_offset_s"] == 192.0
        assert row["fix_source"].startswith("sibling:") and row["fix_source"].endswith(".jpg")
        assert row["fix_before"] < row["taken_at_utc"] < row["fix_after"]
        assert row["time_zone"] == "Europe/Berlin" and row["time_zone_source"] == "tz"
        assert 0 < row["error_km"] < 2 and 0.99 < row["confidence"] <= 1
    for i in range(7):  # the phone's photos keep their measured GPS, as they are
        assert rows[f"phone{i}.jpg"]["source"] == "exif" and rows[f"phone{i}.jpg"]["pred_lat"] is None
    assert "clock NIKON D850: +0:03:12" in err
    assert "placed 0 by track, 6 by sibling, 0 by the model; 0 left without a position; 7 kept" in err
    time = metadata(out)["time"]
    assert time["clock_offsets"]["NIKON D850"]["offset_s"] == 192.0
    assert time["counts"] == {"sibling": 6, "exif": 7}

    # without the offset they land about 192 s x 9.8 m/s away (dsc0 then falls before the first phone
    # photo and takes its position): the offset is what places them
    code, err = geotag(
        capsys, "predict", tmp_path / "trip", "--out", out, "--model", "none", "--siblings", "--tz", "+02:00"
    )
    assert code == 0, err
    rows = rows_by_name(out)
    off = {n: distance_m((rows[n]["pred_lat"], rows[n]["pred_lon"]), w) for n, w in truth.items()}
    assert all(d > 1000 for n, d in off.items() if n != "dsc0.jpg"), off


def test_siblings_dir_and_model_name_alone(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    route = Route(
        -33.87, 151.21, T0, east_ms=-6.0, north_ms=-6.0
    )  # south and east of the equator, heading SW
    truth = _phone_and_camera(tmp_path / "all", route, slow_s=192)
    (tmp_path / "phone").mkdir()
    for photo in (tmp_path / "all").glob("phone*.jpg"):
        photo.rename(tmp_path / "phone" / photo.name)
    out = tmp_path / "p.parquet"
    camera = "nikon  d850=+3:12"  # the model alone, any case and spacing
    code, err = geotag(
        capsys, "predict", tmp_path / "all", "--out", out, "--model", "none",
        "--siblings-dir", tmp_path / "phone", "--tz", "+02:00", "--clock-offset", camera,
    )  # fmt: skip
    assert code == 0, err
    rows = rows_by_name(out)
    assert set(rows) == set(truth)  # the sibling folder's photos are fixes, not rows
    for name, where in truth.items():
        assert distance_m((rows[name]["pred_lat"], rows[name]["pred_lon"]), where) < 50


# --------------------------------------------------------------------------------- notes and refusals


def test_no_exif_time_gives_each_photo_a_row_with_a_note(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "p").mkdir()
    for i in range(3):
        write_photo(tmp_path / "p" / f"x{i}.jpg", None, **NIKON)
    track = write_gpx(
        tmp_path / "t.gpx", [(T0 + timedelta(minutes=m), 45.0, 7.0 + m / 100, None) for m in range(5)]
    )
    out = tmp_path / "p.parquet"
    code, err = geotag(capsys, "predict", tmp_path / "p", "--out", out, "--model", "none", "--track", track)
    assert code == 0, err  # no zone needed: no photo has a time
    rows = rows_by_name(out)
    assert len(rows) == 3
    for row in rows.values():
        assert row["status"] == "ok" and row["pred_lat"] is None and row["source"] is None
        assert "not placed by time: no EXIF capture time" in row["gt_note"]
    assert "0 by track, 0 by sibling, 0 by the model; 3 left without a position" in err


def test_no_zone_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "p").mkdir()
    write_photo(tmp_path / "p" / "a.jpg", datetime(2024, 7, 1, 12, 0), **NIKON)
    track = write_gpx(tmp_path / "t.gpx", [(T0 + timedelta(minutes=m), 45.0, 7.0, None) for m in range(5)])
    code, err = geotag(
        capsys,
        "predict",
        tmp_path / "p",
        "--out",
        tmp_path / "o.parquet",
        "--model",
        "none",
        "--track",
        track,
    )
    assert code == 2
    assert err.count("\n") == 1 and "no time zone" in err and "--tz ZONE" in err and "--tz auto" in err
    assert not (tmp_path / "o.parquet").exists()


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["--tz", "Mars/Olympus"], "not a time zone"),
        (["--tz", "+15:00"], "out of range"),
        (["--clock-offset", "soon"], "-geosync form"),
        (["--clock-offset", "Leica M6=+1:00"], "no photo was taken with that camera"),
        (["--sync", "a.jpg"], "PHOTO=YYYY:MM:DD"),
        (["--sync", "a.jpg=yesterday"], "not a date and time"),
        (["--sync", "zzz.jpg=2024:07:01 10:00:00Z"], "not among the photos"),
        (["--track", "BROKEN"], "t.gpx"),
        (["--track", "MISSING"], "no such file"),
        (["--ignore-photo-tz"], "--ignore-photo-tz needs --tz"),
    ],
)
def test_bad_time_options_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], says: str
) -> None:
    (tmp_path / "p").mkdir()
    write_photo(tmp_path / "p" / "a.jpg", datetime(2024, 7, 1, 12, 0), offset="+02:00", **NIKON)
    broken = tmp_path / "t.gpx"
    broken.write_text('<?xml version="1.0"?><gpx version="1.1"><trk><trkseg><trkpt lat="1" lon=')
    extra = [
        str(broken) if e == "BROKEN" else str(tmp_path / "nope.gpx") if e == "MISSING" else e for e in extra
    ]
    code, err = geotag(
        capsys, "predict", tmp_path / "p", "--out", tmp_path / "o.parquet", "--model", "none", *extra
    )
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("error:") and says in err, err


def test_benchmark_refuses_siblings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = geotag(capsys, "benchmark", "im2gps3k", tmp_path, "--siblings")
    assert code == 2 and "refuses --siblings" in err and err.count("\n") == 1


# ------------------------------------------------------------------------------------- track + resume


def test_track_with_resume_keeps_earlier_rows(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    route = Route(40.0, -105.0, T0, east_ms=5.0)  # west of Greenwich
    times = [T0 + timedelta(seconds=30 * i) for i in range(40)]
    track = write_gpx(tmp_path / "t.gpx", [(t, *route.at(t), 1600.0) for t in times])
    folder = tmp_path / "p"
    folder.mkdir()

    def shoot(i: int) -> None:
        write_photo(folder / f"a{i}.jpg", local(T0 + timedelta(seconds=100 * i + 7), -6), **NIKON)

    for i in range(3):
        shoot(i)
    out = tmp_path / "p.parquet"
    args = ["predict", folder, "--out", out, "--model", "none", "--track", track, "--tz", "America/Denver"]
    assert geotag(capsys, *args)[0] == 0
    first = rows_by_name(out)
    for i in range(3, 5):
        shoot(i)
    code, err = geotag(capsys, *args, "--resume")
    assert code == 0, err
    assert "resumed: 3 already done, 2 new" in err
    rows = rows_by_name(out)
    assert len(rows) == 5
    for name, row in first.items():
        assert rows[name]["created_at"] == row["created_at"]  # kept, not redone
    for i in range(5):
        row = rows[f"a{i}.jpg"]
        assert row["source"] == "track" and row["pred_alt"] == pytest.approx(1600.0)
        truth = route.at(T0 + timedelta(seconds=100 * i + 7))
        assert distance_m((row["pred_lat"], row["pred_lon"]), truth) < 0.5
        assert row["time_zone"] == "America/Denver"  # MDT, -06:00 in July
        assert row["taken_at_utc"] == T0 + timedelta(seconds=100 * i + 7)
    assert metadata(out)["time"]["tracks"][0]["fixes"] == 40


# ------------------------------------------------------------------------------------ with a visual model


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory):
    import torch
    from tiny_weights import write_random_gallery

    from geotag.models.clip_convert import ClipVisionConfig
    from geotag.models.registry import build_geoclip

    gallery = write_random_gallery(tmp_path_factory.mktemp("g") / "gallery.csv")
    torch.manual_seed(0)
    tiny = ClipVisionConfig(width=32, layers=1, heads=2, mlp_dim=64, patch_size=16, image_size=64)
    return build_geoclip(vit=tiny, allow_untrained=True, gallery=gallery)


def test_time_placed_photos_skip_the_model_and_the_rest_predict_as_before(tmp_path: Path, tiny_model) -> None:
    from geotag.config import PredictConfig, TimeConfig
    from geotag.engine.predict import run_predict

    route = Route(52.52, 13.40, T0, east_ms=3.0)
    track = write_gpx(
        tmp_path / "t.gpx",
        [(T0 + timedelta(minutes=m), *route.at(T0 + timedelta(minutes=m)), None) for m in range(10)],
    )
    folder = tmp_path / "p"
    folder.mkdir()
    for i in range(3):  # on the track
        write_photo(
            folder / f"on{i}.jpg", local(T0 + timedelta(seconds=61 * i), 2), colour=(40 * i, 90, 90), **NIKON
        )
    for i in range(3):  # a day later: no fix within 30 min
        write_photo(
            folder / f"off{i}.jpg",
            local(T0 + timedelta(days=1, seconds=i), 2),
            colour=(90, 40 * i, 90),
            **NIKON,
        )
    write_photo(folder / "gps.jpg", local(T0, 2), gps=(10.0, 20.0), **PHONE)
    base = {"batch_size": 1, "workers": 0, "top_k": 3}
    before = run_predict(PredictConfig(paths=[folder], out=tmp_path / "a.parquet", **base), model=tiny_model)
    timed = TimeConfig(tracks=(track,), tz="Europe/Berlin")
    after = run_predict(
        PredictConfig(paths=[folder], out=tmp_path / "b.parquet", time=timed, **base), model=tiny_model
    )
    assert before.sources is None and after.sources == {"track": 3, "model": 4}
    a, b = rows_by_name(tmp_path / "a.parquet"), rows_by_name(tmp_path / "b.parquet")
    assert all(r["source"] == "model" and r["clock_offset_s"] is None for r in a.values())
    columns = ("pred_lat", "pred_lon", "confidence", "error_km", "topk", "cell", "scene", "country", "model")
    for name in ("off0.jpg", "off1.jpg", "off2.jpg", "gps.jpg"):  # the model's rows: bit for bit the same
        assert {c: b[name][c] for c in columns} == {c: a[name][c] for c in columns}
        assert b[name]["source"] == "model"
    assert "not placed by time: too far" in b["off0.jpg"]["gt_note"]
    for i in range(3):
        row = b[f"on{i}.jpg"]
        assert row["source"] == "track" and row["topk"] is None
        assert distance_m((row["pred_lat"], row["pred_lon"]), route.at(T0 + timedelta(seconds=61 * i))) < 0.5
    assert b["gps.jpg"]["gt_lat"] == pytest.approx(
        10.0
    )  # measured GPS: predicted by the model, not the track


def test_rows_without_time_options_match_scan_columns(tmp_path: Path, tiny_model) -> None:
    """Without time options predict fills the time columns from the photo alone, as scan does."""
    from geotag.config import PredictConfig
    from geotag.engine.predict import run_predict

    folder = tmp_path / "p"
    folder.mkdir()
    write_photo(
        folder / "z.jpg", datetime(2024, 7, 1, 12, 0, 5), offset="-03:00", subsec="5", serial="42", **NIKON
    )
    run_predict(PredictConfig(paths=[folder], out=tmp_path / "a.parquet", workers=0), model=tiny_model)
    row = rows_by_name(tmp_path / "a.parquet")["z.jpg"]
    assert row["taken_at_utc"] == datetime(2024, 7, 1, 15, 0, 5, 500000, tzinfo=UTC)
    assert (row["time_zone"], row["time_zone_source"], row["camera_serial"]) == ("-03:00", "exif", "42")
    assert row["clock_offset_s"] is None and row["fix_source"] is None


def test_tz_auto_takes_the_zone_at_the_track(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    t0 = datetime(2024, 1, 10, 15, 0, tzinfo=UTC)
    route = Route(40.758, -73.985, t0, east_ms=1.5, north_ms=1.5)  # Manhattan, EST (-05:00) in January
    times = [t0 + timedelta(seconds=20 * i) for i in range(30)]
    track = write_gpx(tmp_path / "nyc.gpx", [(t, *route.at(t), None) for t in times])
    folder = tmp_path / "p"
    folder.mkdir()
    for s in (30, 250):
        write_photo(folder / f"n{s}.jpg", local(t0 + timedelta(seconds=s), -5), **NIKON)
    out = tmp_path / "p.parquet"
    code, err = geotag(
        capsys, "predict", folder, "--out", out, "--model", "none", "--track", track, "--tz", "auto"
    )
    assert code == 0, err
    for s in (30, 250):
        row = rows_by_name(out)[f"n{s}.jpg"]
        assert (row["time_zone"], row["time_zone_source"]) == ("America/New_York", "tz-auto")
        assert distance_m((row["pred_lat"], row["pred_lon"]), route.at(t0 + timedelta(seconds=s))) < 0.5


def test_a_cameras_gps_time_gives_its_zone(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A phone that writes GPSDateStamp/GPSTimeStamp but no OffsetTimeOriginal: its offset comes from its
    tagged photos, also for its photo without GPS, which its siblings then place; no --tz needed."""
    from geotag.io.exif import read_exif

    route = Route(-22.95, -43.21, T0, east_ms=4.0)  # Rio de Janeiro, -03:00
    folder = tmp_path / "p"
    folder.mkdir()
    for i in range(4):
        t = T0 + timedelta(seconds=60 * i)
        path = write_photo(folder / f"g{i}.jpg", local(t, -3), gps=route.at(t), **PHONE)
        _add_gps_time(path, t)
        assert read_exif(path).gps_time == t
    write_photo(folder / "nogps.jpg", local(T0 + timedelta(seconds=95), -3), **PHONE)
    out = tmp_path / "p.parquet"
    code, err = geotag(capsys, "predict", folder, "--out", out, "--model", "none", "--siblings")
    assert code == 0, err
    row = rows_by_name(out)["nogps.jpg"]
    assert (row["time_zone"], row["time_zone_source"]) == ("-03:00", "gps-time")
    assert row["source"] == "sibling"
    assert distance_m((row["pred_lat"], row["pred_lon"]), route.at(T0 + timedelta(seconds=95))) < 1


def _add_gps_time(path: Path, when: datetime) -> None:
    """Add GPSDateStamp / GPSTimeStamp (UTC) to a photo written by write_photo (re-saved with Pillow)."""
    from fractions import Fraction

    from PIL import Image

    with Image.open(path) as im:
        exif = im.getexif()
        gps = exif.get_ifd(0x8825)
        gps[7] = (Fraction(when.hour), Fraction(when.minute), Fraction(when.second))
        gps[0x1D] = when.strftime("%Y:%m:%d")
        im.load()
        im.save(path, "JPEG", exif=exif.tobytes())


def test_scan_rows_carry_the_photos_own_time(tmp_path: Path) -> None:
    from geotag.engine.scan import run_scan

    (tmp_path / "p").mkdir()
    write_photo(tmp_path / "p" / "a.jpg", datetime(2024, 7, 1, 12, 0), offset="+05:30", serial="B-1", **NIKON)
    write_photo(tmp_path / "p" / "b.jpg", datetime(2024, 7, 1, 12, 0), **NIKON)
    run_scan([tmp_path / "p"], tmp_path / "s.parquet", workers=1)
    rows = rows_by_name(tmp_path / "s.parquet")
    a, b = rows["a.jpg"], rows["b.jpg"]
    assert a["taken_at_utc"] == datetime(2024, 7, 1, 6, 30, tzinfo=UTC)
    assert (a["time_zone"], a["time_zone_source"], a["camera_serial"]) == ("+05:30", "exif", "B-1")
    assert b["taken_at_utc"] is None and b["time_zone"] is None  # scan never guesses a zone


def test_ignore_photo_tz_for_a_phone_left_on_its_home_zone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    t0 = datetime(2024, 7, 1, 14, 0, tzinfo=UTC)
    route = Route(40.71, -74.0, t0, east_ms=2.0)  # New York, EDT (-04:00)
    track = write_gpx(
        tmp_path / "t.gpx",
        [
            (t0 + timedelta(seconds=30 * i), *route.at(t0 + timedelta(seconds=30 * i)), None)
            for i in range(20)
        ],
    )
    folder = tmp_path / "p"
    folder.mkdir()
    when = t0 + timedelta(seconds=200)
    write_photo(
        folder / "a.jpg", local(when, -4), offset="+02:00", **PHONE
    )  # the clock shows New York time, the offset says home
    out = tmp_path / "p.parquet"
    base = ["predict", folder, "--out", out, "--model", "none", "--track", track]
    assert geotag(capsys, *base)[0] == 0
    assert rows_by_name(out)["a.jpg"]["source"] is None  # read as +02:00 it is 6 h away from the track
    code, err = geotag(capsys, *base, "--tz", "America/New_York", "--ignore-photo-tz")
    assert code == 0, err
    row = rows_by_name(out)["a.jpg"]
    assert (row["time_zone"], row["time_zone_source"]) == ("America/New_York", "tz")
    assert distance_m((row["pred_lat"], row["pred_lon"]), route.at(when)) < 0.5


def test_max_hdop_drops_poor_fixes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    points = [(0, 45.0, 7.0, 1.0), (60, 45.001, 7.0, 25.0), (120, 45.002, 7.0, 1.0)]  # the middle fix is poor
    gpx = "".join(
        f'<trkpt lat="{lat}" lon="{lon}"><time>{(T0 + timedelta(seconds=s)):%Y-%m-%dT%H:%M:%SZ}</time>'
        f"<hdop>{hdop}</hdop></trkpt>"
        for s, lat, lon, hdop in points
    )
    track = tmp_path / "t.gpx"
    track.write_text(
        f'<gpx version="1.1" xmlns="http://www.topografix.com/GPX/1/1"><trk><trkseg>{gpx}</trkseg></trk></gpx>'
    )
    folder = tmp_path / "p"
    folder.mkdir()
    write_photo(folder / "a.jpg", local(T0 + timedelta(seconds=60), 0), **NIKON)
    out = tmp_path / "p.parquet"
    base = ["predict", folder, "--out", out, "--model", "none", "--track", track, "--tz", "UTC"]
    assert geotag(capsys, *base)[0] == 0
    row = rows_by_name(out)["a.jpg"]
    assert row["fix_dt_s"] == 0 and row["error_km"] == pytest.approx(
        25 * 5 / 1000
    )  # on the poor fix: HDOP x 5 m
    assert geotag(capsys, *base, "--max-hdop", "5")[0] == 0
    row = rows_by_name(out)["a.jpg"]
    assert row["fix_dt_s"] == 60 and row["pred_lat"] == pytest.approx(45.001)  # between the good ones
    assert metadata(out)["time"]["tracks"][0] == {"path": str(track), "fixes": 3, "kept": 2}
