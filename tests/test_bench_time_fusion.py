"""bench/time_fusion.py --tiny (issue 26 items 4 and 5): every table prints and its numbers are sane, on
real street photos, with a made-up album folder whose manifest has an AUTHOR column (the shape of
Im2GPS3k's im2gps3k_places365.csv, which is never shipped)."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, fixture_dir


def _album(osv: Path, folder: Path) -> Path:
    """Eight fixture photos as four photographers' albums, in places365 manifest format (each photo keeps
    six others in the leave-one-author-out gallery, more than predict's top-5)."""
    folder.mkdir()
    with open(osv / "gt.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))[:8]
    manifest = folder.parent / "album_places365.csv"
    with open(manifest, "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["IMG_ID", "AUTHOR", "LAT", "LON"])
        for row, author in zip(rows, ["ana", "ana", "bo", "bo", "cy", "cy", "di", "di"], strict=True):
            name = Path(row["image"]).name
            shutil.copy(osv / row["image"], folder / name)
            out.writerow([name, author, row["lat"], row["lon"]])
    return manifest


def _sane(score: dict, n: int) -> None:
    assert score["n"] == n
    acc = score["acc"]
    assert len(acc) == 5 and all(0.0 <= a <= 100.0 for a in acc)
    assert acc == sorted(acc)  # a larger threshold never holds fewer photos
    assert 0.0 <= score["median_km"] <= 20_050.0  # half the Earth's circumference


@pytest.mark.slow  # about 20 predict runs of 6 to 8 real photos with EfficientNet-Lite0, in one process
def test_time_fusion_tiny_prints_every_table(tmp_path: Path) -> None:
    osv = fixture_dir("osv5m-71")
    manifest = _album(osv, tmp_path / "album")
    out = tmp_path / "figures.json"
    proc = subprocess.run(
        [sys.executable, "bench/time_fusion.py", "--tiny", "--images", str(tmp_path / "album"),
         "--manifest", str(manifest), "--dir", str(tmp_path), "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = proc.stdout
    titles = [
        "(a) album fusion",
        "proxy: a photographer's photos are not one session",
        "(b) reachable regions",
    ]
    titles += ["(c) predict overhead", "GeoCLIP's prior on its 100,000-point gallery"]
    for title in titles:
        assert title in text, title
    assert "| setting | N | 1 km | 25 km | 200 km | 750 km | 2500 km | median km |" in text
    assert any(line.startswith("summary: ") for line in text.splitlines())
    figures = json.loads(out.read_text())

    album = figures["album_fusion"]
    assert album["author_column"] == "AUTHOR"  # leave-one-author-out, as geotag benchmark
    for score in album["rows"].values():
        _sane(score, 8)

    reach = figures["reach_fixture"]
    assert reach["photos"] == 6
    _sane(reach["single"], 6)
    _sane(reach["bound"], 6)
    assert list(reach["prior"]) == ["10 min", "1 h", "6 h", "24 h"]
    for dt, score in reach["prior"].items():
        _sane(score, 6)
        assert score["rows_by_model"] == 6, dt  # none placed by time alone: the model ran, guided
        assert score["reach_km"] == {"10 min": 25, "1 h": 150, "6 h": 900, "24 h": 3600}[dt]
    assert reach["prior"]["10 min"]["changed"] > 0  # a fix 10 min away moved the kNN's answer

    overhead = figures["overhead"]
    assert list(overhead) == [
        "baseline (no time evidence, --fuse none)",
        "with a track (prior on every photo)",
        "--fuse session (sessions by time, --session-gap 2 h)",
        "--fuse hmm (sessions by time, --session-gap 2 h)",
    ]
    for setting in overhead.values():
        assert setting["rows"] == 8 and setting["peak_rss_mib"] > 50
        assert len(setting["wall_s"]) == 1 and setting["wall_s"][0] > 0

    geoclip = figures["geoclip_prior"]
    assert geoclip["gallery"] == 100_000
    assert geoclip["prior_ms"] > 0 and 0 < geoclip["encoder_ms"] < geoclip["predict_ms"]
