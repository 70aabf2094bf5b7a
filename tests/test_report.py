"""`geotag report` and `eval --plot`: the page and its figures on fixtures, read back as a browser would."""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import pytest
from PIL import Image

from geotag.eval import plots, report_data
from geotag.eval.html_report import build_report, plot_error_curve
from geotag.eval.metrics import connect, evaluate, threshold_key
from geotag.eval.report import pct
from geotag.geo.distance import haversine_np
from geotag.io.parquet import PredictionWriter

from conftest import fixture_dir

# the shared fixtures' real photos (README: their EXIF places), each predicted far away so they rank worst
PHOTOS = {
    "exif-parser-sylt.jpg": ((55.04, 8.45), (-54.0, -170.0), "DE"),
    "exifr-IMG_20180725_163423.jpg": ((50.30, 14.82), (-49.0, -164.0), "CZ"),
    "goexif-beijing.jpg": ((39.92, 116.39), (-39.0, -64.0), "CN"),
    "mapillary-portland-3840x2160.jpg": ((45.52, -122.58), (-44.0, 58.0), "US"),
    "opensfm-berlin-01.jpg": ((52.52, 13.40), (-51.0, -166.0), "DE"),
}
CITIES = [
    ((48.8566, 2.3522), "FR"),
    ((35.68, 139.69), "JP"),
    ((-33.87, 151.21), "AU"),
    ((-22.9, -43.2), "BR"),
]
EVIL = "cannot decode <script>alert('x')</script> & \"more\""


def write_preds(path: Path, rows: list[dict[str, Any]]) -> Path:
    with PredictionWriter(path) as writer:
        writer.write_rows(rows)
    return path


def fixture_rows(photos: Path, seed: int, spread: float) -> list[dict[str, Any]]:
    """Real photos (worst errors), a missing photo, 80 rows near four cities, errors and no-truth rows."""
    rng = np.random.default_rng(seed)
    rows: list[dict[str, Any]] = []
    for name, (gt, pred, cc) in PHOTOS.items():
        rows.append(
            {
                "path": str(photos / name),
                "status": "ok",
                "gt_lat": gt[0],
                "gt_lon": gt[1],
                "pred_lat": pred[0],
                "pred_lon": pred[1],
                "confidence": 0.9,
                "scene": "urban",
                "gt_country": cc,
                "model": "knn",
            }
        )
    rows.append(
        {
            "path": "/no/such/folder/lost <photo>.jpg",
            "status": "ok",
            "gt_lat": 1.0,
            "gt_lon": 1.0,
            "pred_lat": -1.0,
            "pred_lon": -179.0,
            "confidence": 0.1,
            "scene": "natural",
            "model": "knn",
        }
    )
    for i in range(80):
        (lat, lon), cc = CITIES[i % len(CITIES)]
        conf = float(rng.random())
        off = spread * (1.0 - conf)  # confident rows land closer: a calibration curve with a shape
        rows.append(
            {
                "path": f"/no/such/folder/img_{i:03d}.jpg",
                "status": "ok",
                "gt_lat": lat,
                "gt_lon": lon,
                "pred_lat": float(np.clip(lat + rng.normal(0, off), -89, 89)),
                "pred_lon": float((lon + rng.normal(0, off) + 180) % 360 - 180),
                "confidence": conf,
                "scene": ("urban", "natural", "indoor")[i % 3],
                "gt_country": cc,
                "country": cc if conf > 0.5 else "XX",
                "model": "knn",
                "weights": "test",
            }
        )
    rows.append({"path": "/no/such/folder/broken.jpg", "status": "error", "error": EVIL})
    rows.append({"path": "/no/such/folder/b2.jpg", "status": "error", "error": "truncated"})
    rows.append({"path": "/no/such/folder/nogt.jpg", "status": "ok", "pred_lat": 3.0, "pred_lon": 4.0})
    return rows


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    photos = fixture_dir("geotagged")
    folder = tmp_path_factory.mktemp("preds")
    return [
        write_preds(folder / "run-a.parquet", fixture_rows(photos, 0, 3.0)),
        write_preds(folder / "run-b.parquet", fixture_rows(photos, 1, 1.0)),
    ]


@pytest.fixture(scope="module")
def report(files: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report") / "report"
    summary = build_report(files, out)
    assert summary.index == out / "index.html"
    assert summary.thumbnails == len(PHOTOS) and summary.missing_photos >= 1
    return out


class Page(HTMLParser):
    """Every start tag with its attributes, and the text, as a browser's parser sees them."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(index: Path) -> Page:
    page = Page()
    page.feed(index.read_text(encoding="utf-8"))
    page.close()
    return page


# --- the page -------------------------------------------------------------------------------------------


def test_report_files(report: Path) -> None:
    figures = {p.name for p in (report / "figures").iterdir()}
    assert figures == {
        "error_curve.png",
        "map-1.png",
        "map-2.png",
        "calibration.png",
        "countries.png",
        "scenes.png",
    }
    assert (report / "index.html").stat().st_size > 1000
    assert not [p for p in report.rglob(".*tmp*")]


def test_page_references_only_local_files(report: Path) -> None:
    page = parse(report / "index.html")
    tags = [t for t, _ in page.tags]
    assert "script" not in tags and "link" not in tags and "iframe" not in tags
    refs = [(t, a[k]) for t, a in page.tags for k in ("src", "href") if a.get(k)]
    assert refs, "the page shows images"
    for tag, ref in refs:
        assert ref is not None
        parsed = urlparse(ref)
        assert not parsed.scheme and not parsed.netloc, (tag, ref)
        assert not ref.startswith("/") and ".." not in Path(ref).parts, ref
        assert (report / ref).is_file(), ref
    raw = (report / "index.html").read_text()
    assert "http://" not in raw and "https://" not in raw


def test_images_have_their_stated_size(report: Path) -> None:
    imgs = [a for t, a in parse(report / "index.html").tags if t == "img"]
    figures = [a for a in imgs if a.get("class") == "fig"]
    assert len(figures) == 6
    for attrs in figures:
        with Image.open(report / str(attrs["src"])) as im:
            assert im.format == "PNG"
            assert im.size == (int(attrs["width"] or 0), int(attrs["height"] or 0)), attrs["src"]
            assert im.getextrema() != ((255, 255), (255, 255), (255, 255), (255, 255)), "not blank"
    with Image.open(report / "figures" / "error_curve.png") as im:
        assert im.size == (1000, 600)


def test_thumbnails_and_placeholder(report: Path) -> None:
    page = parse(report / "index.html")
    thumbs = [a for t, a in page.tags if t == "img" and a.get("class") == "thumb"]
    assert len({a["src"] for a in thumbs}) == len(PHOTOS)
    for attrs in thumbs:
        with Image.open(report / str(attrs["src"])) as im:
            assert im.format == "JPEG" and max(im.size) <= 160 and min(im.size) > 40
    assert {a["alt"] for a in thumbs} == set(PHOTOS)
    text = " ".join(page.text)
    assert "photo not found" in text
    assert "lost <photo>.jpg" in text  # shown as text, never parsed as a tag


def test_everything_is_escaped(report: Path) -> None:
    raw = (report / "index.html").read_text()
    assert "<script>" not in raw and "&lt;script&gt;" in raw
    page = parse(report / "index.html")
    assert EVIL in " ".join(page.text)  # the error reason reads back exactly
    assert "photo" not in {t for t, _ in page.tags}


def test_page_numbers_match_eval(report: Path, files: list[Path]) -> None:
    text = " ".join(parse(report / "index.html").text)
    for row in evaluate(files).rows:
        for t in (1, 25, 200, 750, 2500):
            assert pct(row[threshold_key(t)]) in text
    assert "run-a" in text and "run-b" in text and "--min-confidence" in text
    assert "France" in text and "urban" in text  # country names from Natural Earth, scenes


def test_missing_borders_still_draw(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(plots, "world", lambda: None)
    data = report_data.MapData(
        1, 1, 1, np.array([[1.0, 2.0]]), np.array([[3.0, 4.0]]), np.array([[3, 4, 1, 2, 300.0]])
    )
    assert plots.world_map(data, "t", tmp_path / "m.png") == (1400, 780)


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed")
def test_chromium_renders_the_page(report: Path, tmp_path: Path) -> None:
    """The page as a real browser draws it, offline: not blank, and taller than the window's first screen."""
    shot = tmp_path / "shot.png"
    args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
    args += ["--disable-component-update", "--disable-sync", "--no-first-run", f"--screenshot={shot}"]
    args += ["--window-size=1280,2000", (report / "index.html").as_uri()]
    subprocess.run(["chromium", *args], capture_output=True, timeout=120, check=False)
    with Image.open(shot) as im:
        assert im.size == (1280, 2000)
        colours = im.convert("RGB").resize((64, 100)).getcolors(64 * 100)
    assert colours is not None and len(colours) > 20


# --- the aggregates against numpy -----------------------------------------------------------------------


def scored_distances(rows: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    ok = [
        r
        for r in rows
        if r["status"] == "ok" and r.get("gt_lat") is not None and r.get("pred_lat") is not None
    ]
    d = haversine_np(*(np.array([r[k] for r in ok]) for k in ("gt_lat", "gt_lon", "pred_lat", "pred_lon")))
    return d, np.array([r["confidence"] for r in ok])


def test_error_cdf_and_calibration_match_numpy(tmp_path: Path) -> None:
    rows = fixture_rows(tmp_path, 3, 2.0)
    path = write_preds(tmp_path / "p.parquet", rows)
    d, conf = scored_distances(rows)
    con = connect()
    sources, _ = report_data.open_sources(con, [path])
    cdf = report_data.error_cdf(con, sources[0])
    cal = report_data.calibration(con, sources[0], 25.0)
    con.close()
    assert cdf.n == d.size and cdf.share[-1] == 1.0 and np.all(np.diff(cdf.share) >= 0)
    expected = (d[None, :] <= cdf.km[:, None]).mean(axis=1)
    assert np.max(np.abs(cdf.share - expected)) <= 1 / d.size + 1e-12
    assert cal.total == d.size and int(cal.hits.sum()) == int((d <= 25.0).sum())
    c, acc, share, kept = cal.at_least()
    for i in (0, 30, 50, 90):
        keep = conf >= c[i]
        assert kept[i] == keep.sum() and share[i] == pytest.approx(keep.mean())
        if keep.any():
            assert acc[i] == pytest.approx((d[keep] <= 25.0).mean())


def test_suggested_min_confidence() -> None:
    n = np.zeros(100, dtype=np.int64)
    hits = np.zeros(100, dtype=np.int64)
    n[10], hits[10] = 50, 5  # low confidence: mostly wrong
    n[60], hits[60] = 40, 32  # above 0.6: 80 % right
    n[95], hits[95] = 5, 5  # a handful of sure hits: too few to decide on their own
    cal = report_data.Calibration(25.0, n, hits)
    by_target = {s.target: s for s in report_data.suggest_min_confidence(cal, (0.3, 0.75, 0.95))}
    assert by_target[0.3].min_confidence == 0.0 and by_target[0.3].rows_kept == 95
    assert by_target[0.75].min_confidence == pytest.approx(0.11) and by_target[
        0.75
    ].accuracy == pytest.approx(37 / 45)
    assert by_target[0.95].min_confidence is None


def test_dense_map_above_the_scatter_limit(
    monkeypatch: pytest.MonkeyPatch, files: list[Path], tmp_path: Path
) -> None:
    monkeypatch.setattr(report_data, "SCATTER_MAX", 10)
    con = connect()
    sources, _ = report_data.open_sources(con, files[:1])
    data = report_data.map_data(con, sources[0])
    con.close()
    assert data.dense and data.density is not None and data.gt_density is not None
    assert int(data.density.sum()) == data.n_pred and data.pred.shape == (0, 2)
    assert plots.world_map(data, "dense", tmp_path / "dense.png") == (1400, 1400)  # truth and predictions


def test_great_circles_cut_at_the_antimeridian() -> None:
    arcs = plots.great_circles(np.array([[0.0, 170.0, 0.0, -170.0], [10.0, 10.0, 10.0, 10.0]]))
    assert len(arcs) == 3  # the Pacific crossing in two pieces, the zero-length arc in one
    assert all(np.isfinite(a).all() for a in arcs)
    east, west = arcs[0][:, 0], arcs[1][:, 0]  # Equal Earth x: the two pieces sit at opposite edges
    assert (east > 0).all() and (west < 0).all()
    assert math.isclose(float(np.ptp(arcs[2], axis=0).max()), 0.0, abs_tol=1e-6)


# --- the CLI ---------------------------------------------------------------------------------------------


def run_cli(args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    from geotag.cli import main

    monkeypatch.setattr(sys, "argv", ["geotag", *args])
    with pytest.raises(SystemExit) as info:
        main()
    captured = capsys.readouterr()
    return info.value.code, captured.out, captured.err


def test_cli_report(files: list[Path], tmp_path: Path, monkeypatch, capsys) -> None:
    code, _, err = run_cli(
        ["report", str(files[0]), "--out", str(tmp_path / "r"), "--worst", "3"], monkeypatch, capsys
    )
    assert code == 0, err
    assert "report of" in err and (tmp_path / "r" / "index.html").is_file()
    page = parse(tmp_path / "r" / "index.html")
    shown = [a for _, a in page.tags if a.get("class") in ("thumb", "ph")]  # a thumbnail or a placeholder
    assert len(shown) == 3


@pytest.mark.parametrize("case", ["missing", "not-parquet", "out-is-file", "thresholds"])
def test_cli_report_bad_inputs(case: str, files: list[Path], tmp_path: Path, monkeypatch, capsys) -> None:
    text = tmp_path / "notes.parquet"
    text.write_text("hello")
    out = tmp_path / "r"
    args = {
        "missing": [str(tmp_path / "nope.parquet"), "--out", str(out)],
        "not-parquet": [str(text), "--out", str(out)],
        "out-is-file": [str(files[0]), "--out", str(text)],
        "thresholds": [str(files[0]), "--out", str(out), "--thresholds", "1,x"],
    }[case]
    code, stdout, err = run_cli(["report", *args], monkeypatch, capsys)
    assert code == 2 and stdout == ""
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists()  # nothing is created before the inputs are known to be good


def test_eval_plot(files: list[Path], tmp_path: Path, monkeypatch, capsys) -> None:
    png = tmp_path / "curve.png"
    code, out, err = run_cli(["eval", *map(str, files), "--plot", str(png), "-f", "csv"], monkeypatch, capsys)
    assert code == 0, err
    assert out.startswith("file,n_rows")  # the table still goes to stdout
    with Image.open(png) as im:
        assert im.format == "PNG" and im.size == (1000, 600)
    assert plot_error_curve(files[:1], tmp_path / "one.png", [5.0, 50.0]) == (1000, 600)
    for bad in (tmp_path / "curve.txt", tmp_path / "no" / "curve.png"):
        code, out, err = run_cli(["eval", str(files[0]), "--plot", str(bad)], monkeypatch, capsys)
        assert code == 2 and out == "" and err.startswith("error: ") and err.count("\n") == 1


def test_report_with_truth_manifest(tmp_path: Path) -> None:
    """--truth re-joins ground truth by file name, as `eval --truth` does: the page scores the manifest."""
    rows = [
        {"path": f"/x/img{i}.jpg", "status": "ok", "pred_lat": 10.0, "pred_lon": 20.0, "confidence": 0.5}
        for i in range(3)
    ]
    path = write_preds(tmp_path / "p.parquet", rows)
    manifest = tmp_path / "truth.csv"
    manifest.write_text("path,lat,lon\nimg0.jpg,10.0,20.0\nimg1.jpg,10.1,20.0\nimg2.jpg,-10.0,-20.0\n")
    summary = build_report([path], tmp_path / "r", truth=manifest)
    assert any("3 of 3 rows matched" in note for note in summary.notes)
    text = " ".join(parse(summary.index).text)
    assert pct(2 / 3) in text  # two of three within 25 km
    assert "3 of 3 rows matched" in text
