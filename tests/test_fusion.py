"""Sessions and album fusion (issue 26 item 3): `geotag predict --fuse session|hmm --session-gap
--group-by`, and the no-harm check of item 4c (no time evidence, `--fuse none`: rows as before)."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cli_util
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from time_photos import local, rows_by_name, write_photo

from geotag.config import PredictConfig, TimeConfig
from geotag.engine.fusion import FUSE_CANDIDATES, PhotoDist, fuse_session
from geotag.engine.predict import run_predict
from geotag.engine.sessions import group_codes, split_sessions
from geotag.geo.distance import haversine_np
from geotag.models.base import GeoModel, Prediction, Preprocess

NIKON = {"make": "NIKON CORPORATION", "model": "NIKON D850"}
PHONE = {"make": "Apple", "model": "iPhone 13"}
T0 = datetime(2024, 7, 1, 10, 0, tzinfo=UTC)
SIGN = (41.39, 2.17)  # where the street sign says (Barcelona)
BEACHES = [(36.5 + 0.4 * i, -8.0 + 1.7 * i) for i in range(20)]  # coasts 150+ km apart, none near SIGN
BASE = {"batch_size": 4, "workers": 0, "top_k": 3}


def km(a: tuple[float, float], b: tuple[float, float]) -> float:
    return float(haversine_np(np.array([a[0]]), np.array([a[1]]), np.array([b[0]]), np.array([b[1]]))[0])


class Palette(GeoModel):
    """A stand-in model with distributions chosen by colour: a red photo is a street sign (90 % at SIGN),
    any other a beach: broad over BEACHES and SIGN, its own best guess BEACHES[0] only slightly ahead."""

    name = "palette"
    weights_label = "test palette"

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[int] = []

    def preprocess(self) -> Preprocess:
        return Preprocess(16, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))

    def predict(self, images: torch.Tensor, top_k: int) -> Prediction:
        self.asked.append(top_k)
        places = torch.tensor([*BEACHES, SIGN], dtype=torch.float64)
        rows = []
        for red in images[:, 0].mean(dim=(1, 2)).tolist():
            if red > 0.6:
                p = torch.full((21,), 0.1 / 20, dtype=torch.float64)
                p[20] = 0.9
            else:
                p = torch.full((21,), 0.92 / 20, dtype=torch.float64)
                p[0] = 0.08
            rows.append(p)
        probs = torch.stack(rows)
        score, idx = probs.sort(dim=1, descending=True, stable=True)
        k = min(top_k, 21)
        lat, lon = places[idx[:, :k], 0], places[idx[:, :k], 1]
        return Prediction(
            lat=lat[:, 0].clone(),
            lon=lon[:, 0].clone(),
            confidence=score[:, 0].float(),
            topk_lat=lat,
            topk_lon=lon,
            topk_score=score[:, :k].float(),
            error_km=torch.full((len(rows),), 100.0, dtype=torch.float64),
        )


def geotag(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str]:
    """(exit code, stderr) of `geotag ARGS` run in this process (tests/cli_util.py)."""
    done = cli_util.geotag(*args)
    return done.returncode, done.stderr


BLUE = (40, 90, 200)
RED = (230, 30, 30)


def _outing(folder: Path) -> None:
    """Five beach photos and a street sign, one camera, 10 min apart; a phone photo 3 h later (alone);
    a photo with no capture time."""
    folder.mkdir()
    for i in range(6):
        colour = RED if i == 3 else (BLUE[0] + 10 * i, BLUE[1], BLUE[2])
        t = local(T0 + timedelta(minutes=10 * i), 2)
        write_photo(folder / f"dsc{i}.jpg", t, offset="+02:00", colour=colour, **NIKON)
    write_photo(
        folder / "phone.jpg", local(T0 + timedelta(hours=3), 2), offset="+02:00", colour=BLUE, **PHONE
    )
    write_photo(folder / "notime.jpg", None, colour=BLUE, **NIKON)


# ------------------------------------------------------------------------------------------- sessions


def test_sessions_split_per_camera_at_gaps_and_skip_photos_without_time() -> None:
    camera = np.array([0, 0, 0, 0, 1, 1, -1, 0, 1])
    t = np.array([0.0, 7200.0, 14401.0, np.nan, 100.0, 50.0, 10.0, 14500.0, 9000.0])
    ids = split_sessions(camera, t, gap_s=7200.0)
    assert ids[0] == ids[1] != ids[2]  # a gap of exactly --session-gap stays; one second more splits
    assert ids[2] == ids[7]  # later photo of the same camera, 99 s on
    assert ids[4] == ids[5] and ids[4] != ids[0]  # the other camera, out of order in the input
    assert ids[3] == -1 and ids[6] == -1  # no time; no known camera
    assert ids[8] == -1  # a session of one photo is none
    assert sorted(set(ids.tolist()) - {-1}) == [0, 1, 2]
    pieces = split_sessions(np.zeros(7, dtype=int), np.arange(7.0), max_photos=3)
    assert pieces.tolist() == [0, 0, 0, 1, 1, 1, -1]


def test_group_codes_by_folder_and_by_manifest_column() -> None:
    paths = ["/a/x/1.jpg", "/a/x/2.jpg", "/a/y/3.jpg", "/a/y/4.jpg"]
    by_folder = group_codes(paths, "folder", None)
    assert by_folder[0] == by_folder[1] != by_folder[2] == by_folder[3]
    author = {"1.jpg": "ann", "2.jpg": "bob", "3.jpg": "ann", "4.jpg": " "}
    by_author = group_codes(paths, "AUTHOR", lambda p: author[Path(p).name])
    assert by_author[0] == by_author[2] != by_author[1] and by_author[3] == -1
    ids = split_sessions(np.full(4, -1), np.full(4, np.nan), group=by_author)
    assert ids[0] == ids[2] >= 0 and ids[1] == -1 and ids[3] == -1  # groups need no time nor camera


# ---------------------------------------------------------------------------------------- the methods


def _beach(t: float = math.nan, lean: int = 0) -> PhotoDist:
    places = np.array([*BEACHES, SIGN])
    p = np.full(21, 0.92 / 20)
    p[lean] = 0.08
    return PhotoDist(places[:, 0], places[:, 1], p, 25.0, t)


def _sharp(where: tuple[float, float], t: float = math.nan) -> PhotoDist:
    return PhotoDist(np.array([where[0]]), np.array([where[1]]), np.array([0.9]), 25.0, t)


@pytest.mark.parametrize("method", ["session", "hmm"])
def test_forty_beach_photos_and_a_street_sign_land_where_the_sign_says(method: str) -> None:
    """Each beach photo is broad (21 places, its own favourite a different beach, barely ahead); the
    sign is sharp. Without the sign, the beaches stay on beaches."""
    photos = [_beach(60.0 * i, lean=i % 20) for i in range(40)] + [_sharp(SIGN, 60.0 * 40)]
    fused = fuse_session(photos, range(41), method=method, top_k=3, floor_km=25.0)
    assert all(km((f.lat, f.lon), SIGN) < 1 for f in fused)
    assert all(f.error_km >= 25.0 and len(f.topk) == 3 for f in fused)
    alone = fuse_session(photos[:40], range(40), method=method, top_k=3, floor_km=25.0)
    assert all(min(km((f.lat, f.lon), b) for b in BEACHES) < 1 for f in alone)


def test_hmm_follows_a_traveller_where_the_session_product_cannot() -> None:
    """Paris at 10:00, a photo at 10:10 that looks like Versailles or Marseille (even odds), two sharp
    Marseille photos 8 h later: within 10 min one cannot reach Marseille, so hmm says Versailles; the
    session product, blind to time, follows the majority."""
    paris, versailles, marseille = (48.853, 2.349), (48.805, 2.120), (43.296, 5.370)
    ambiguous = PhotoDist(
        np.array([versailles[0], marseille[0]]),
        np.array([versailles[1], marseille[1]]),
        np.array([0.45, 0.45]),
        25.0,
        600.0,
    )
    photos = [
        _sharp(paris, 0.0),
        ambiguous,
        _sharp(marseille, 8 * 3600.0),
        _sharp(marseille, 8 * 3600.0 + 60),
    ]
    hmm = fuse_session(photos, [1], method="hmm", top_k=2, floor_km=25.0)[0]
    product = fuse_session(photos, [1], method="session", top_k=2, floor_km=25.0)[0]
    assert km((hmm.lat, hmm.lon), paris) < 40 and km((product.lat, product.lon), marseille) < 1
    # an unknown time breaks the chain: the photo keeps its own (tied) view, no pull from Paris
    photos[1] = PhotoDist(ambiguous.lat, ambiguous.lon, ambiguous.p, 25.0, math.nan)
    photos[0] = _sharp(paris, math.nan)
    cut = fuse_session(photos[:2], [1], method="hmm", top_k=2, floor_km=25.0)[0]
    assert cut.topk[0]["score"] == pytest.approx(cut.topk[1]["score"], rel=1e-6)


# ------------------------------------------------------------------------------------------ the engine


@pytest.mark.parametrize("method", ["session", "hmm"])
def test_predict_fuses_a_session_and_keeps_the_single_photo_answer(tmp_path: Path, method: str) -> None:
    _outing(tmp_path / "p")
    model = Palette()
    run_predict(PredictConfig(paths=[tmp_path / "p"], out=tmp_path / "a.parquet", **BASE), model=model)
    assert set(model.asked) == {3}
    model.asked.clear()
    cfg = PredictConfig(paths=[tmp_path / "p"], out=tmp_path / "b.parquet", fuse=method, **BASE)
    summary = run_predict(cfg, model=model)
    assert set(model.asked) == {FUSE_CANDIDATES}  # a larger internal top-N, the user's top-k kept below
    a, b = rows_by_name(tmp_path / "a.parquet"), rows_by_name(tmp_path / "b.parquet")
    sessions = {b[f"dsc{i}.jpg"]["session"] for i in range(6)}
    assert len(sessions) == 1 and None not in sessions
    for i in range(6):
        row, single = b[f"dsc{i}.jpg"], a[f"dsc{i}.jpg"]
        assert row["source"] == "fused" and km((row["pred_lat"], row["pred_lon"]), SIGN) < 1
        assert (row["single_lat"], row["single_lon"]) == (single["pred_lat"], single["pred_lon"])
        assert row["single_confidence"] == single["confidence"]
        assert row["single_error_km"] == single["error_km"] and row["single_topk"] == single["topk"]
        assert len(row["topk"]) == 3 and row["error_km"] >= 100.0  # never finer than a single photo
        assert row["country"] == "ES"  # looked up from the fused point
    assert km((a["dsc0.jpg"]["pred_lat"], a["dsc0.jpg"]["pred_lon"]), BEACHES[0]) < 1
    columns = ("pred_lat", "pred_lon", "confidence", "error_km", "topk", "source", "country")
    for name in ("phone.jpg", "notime.jpg"):  # alone (another camera), no time: single, as before
        assert {c: b[name][c] for c in columns} == {c: a[name][c] for c in columns}
        assert b[name]["session"] is None and b[name]["single_lat"] is None
    meta = json.loads(pq.read_schema(tmp_path / "b.parquet").metadata[b"geotag"])["fusion"]
    assert (meta["method"], meta["photos"], meta["sessions"]) == (method, 6, 1)
    assert summary.fused == (6, 1)


def test_group_by_folder_and_by_a_manifest_column(tmp_path: Path) -> None:
    """Photos without times: albums by folder, or by the manifest's AUTHOR across folders."""
    for album in ("x", "y"):
        (tmp_path / album).mkdir()
    write_photo(tmp_path / "x" / "b1.jpg", None, colour=BLUE)
    write_photo(tmp_path / "x" / "sign.jpg", None, colour=RED)
    write_photo(tmp_path / "y" / "b2.jpg", None, colour=(60, 90, 200))
    write_photo(tmp_path / "y" / "b3.jpg", None, colour=(80, 90, 200))
    paths = [tmp_path / "x", tmp_path / "y"]
    out = tmp_path / "f.parquet"
    run_predict(
        PredictConfig(paths=paths, out=out, fuse="session", group_by="folder", **BASE), model=Palette()
    )
    rows = rows_by_name(out)
    assert km((rows["b1.jpg"]["pred_lat"], rows["b1.jpg"]["pred_lon"]), SIGN) < 1
    assert {rows[n]["source"] for n in rows} == {"fused"}
    assert km((rows["b2.jpg"]["pred_lat"], rows["b2.jpg"]["pred_lon"]), BEACHES[0]) < 1
    manifest = tmp_path / "m.csv"
    manifest.write_text(
        "IMG_ID,AUTHOR,LAT,LON\nb1.jpg,ann,1,1\nsign.jpg,bob,1,1\nb2.jpg,bob,1,1\nb3.jpg,,1,1\n"
    )
    out = tmp_path / "g.parquet"
    cfg = PredictConfig(paths=paths, out=out, truth=manifest, fuse="session", group_by="author", **BASE)
    run_predict(cfg, model=Palette())
    rows = rows_by_name(out)
    assert rows["sign.jpg"]["session"] == rows["b2.jpg"]["session"] is not None
    assert km((rows["b2.jpg"]["pred_lat"], rows["b2.jpg"]["pred_lon"]), SIGN) < 1
    for name in ("b1.jpg", "b3.jpg"):  # alone in its group; no author
        assert rows[name]["source"] == "model" and rows[name]["session"] is None


def test_sibling_rows_are_untouched_and_serve_as_evidence(tmp_path: Path) -> None:
    """A phone photo with GPS at SIGN places the camera photo 5 min after it (a sibling row); beach
    photos 40-60 min on are beyond the siblings' reach, go to the model and are fused with that row."""
    folder = tmp_path / "p"
    folder.mkdir()
    write_photo(folder / "phone.jpg", local(T0, 2), offset="+02:00", gps=SIGN, colour=BLUE, **PHONE)
    write_photo(
        folder / "near.jpg", local(T0 + timedelta(minutes=5), 2), offset="+02:00", colour=BLUE, **NIKON
    )
    for i in range(3):
        t = local(T0 + timedelta(minutes=40 + 10 * i), 2)
        write_photo(folder / f"b{i}.jpg", t, offset="+02:00", colour=(40 + 10 * i, 90, 200), **NIKON)
    timed = TimeConfig(siblings=True)
    plain = PredictConfig(paths=[folder], out=tmp_path / "a.parquet", time=timed, **BASE)
    run_predict(plain, model=Palette())
    fused = PredictConfig(paths=[folder], out=tmp_path / "b.parquet", time=timed, fuse="session", **BASE)
    run_predict(fused, model=Palette())
    a, b = rows_by_name(tmp_path / "a.parquet"), rows_by_name(tmp_path / "b.parquet")
    skip = {"created_at", "mtime"}
    assert b["near.jpg"]["source"] == "sibling"
    assert {k: v for k, v in b["near.jpg"].items() if k not in skip} == {
        k: v for k, v in a["near.jpg"].items() if k not in skip
    }
    for i in range(3):
        row = b[f"b{i}.jpg"]
        assert a[f"b{i}.jpg"]["source"] == "model" and row["source"] == "fused"
        assert km((row["pred_lat"], row["pred_lon"]), SIGN) < 1  # the sibling row's position decided


def test_no_time_evidence_and_fuse_none_rows_are_the_models_bit_for_bit(tmp_path: Path) -> None:
    """Item 4c: photos with times and cameras (sessions would form), a tiny kNN, `--fuse none`: every
    prediction column is the model's own answer for the decoded photo, and the fusion columns are empty."""
    from prior_util import knn

    from geotag.engine.predict import run_model
    from geotag.io.decode import decode_for_model

    folder = tmp_path / "p"
    folder.mkdir()
    for i in range(5):
        t = local(T0 + timedelta(minutes=i), 2)
        write_photo(folder / f"k{i}.jpg", t, offset="+02:00", colour=(30 * i, 200 - 30 * i, 90), **NIKON)
    model = knn()
    one_batch = {**BASE, "batch_size": 8}  # as the direct call below: a batch's sums depend on its size
    run_predict(
        PredictConfig(paths=[folder], out=tmp_path / "a.parquet", device="cpu", **one_batch), model=model
    )
    rows = rows_by_name(tmp_path / "a.parquet")
    names = sorted(rows)
    pre = model.preprocess()
    pixels = torch.stack(
        [decode_for_model(str(folder / n), pre.input_size, pre.interpolation, draft=True) for n in names]
    )
    pred = run_model(model, pixels, torch.device("cpu"), 3, amp=False)
    for i, name in enumerate(names):
        row = rows[name]
        assert (row["pred_lat"], row["pred_lon"]) == (pred.lat[i].item(), pred.lon[i].item())
        assert row["confidence"] == pred.confidence[i].item() and row["error_km"] == pred.error_km[i].item()
        want = list(
            zip(
                pred.topk_lat[i].tolist(), pred.topk_lon[i].tolist(), pred.topk_score[i].tolist(), strict=True
            )
        )
        assert [(c["lat"], c["lon"], c["score"]) for c in row["topk"]] == want
        assert row["source"] == "model"
        for column in ("session", "single_lat", "single_lon", "single_confidence", "single_error_km"):
            assert row.get(column) is None


def test_eval_by_source_shows_fused_rows(tmp_path: Path) -> None:
    from geotag.eval.metrics import evaluate

    folder = tmp_path / "p"
    folder.mkdir()
    for i in range(3):
        t = local(T0 + timedelta(minutes=i), 2)
        colour = RED if i == 0 else BLUE
        write_photo(folder / f"g{i}.jpg", t, offset="+02:00", gps=SIGN, colour=colour, **NIKON)
    write_photo(folder / "alone.jpg", None, gps=SIGN, colour=BLUE)
    out = tmp_path / "f.parquet"
    run_predict(PredictConfig(paths=[folder], out=out, fuse="session", **BASE), model=Palette())
    got = {r["source"]: r for r in evaluate([out], thresholds=[25.0], by=["source"]).rows}
    assert got["fused"]["n_rows"] == 3 and got["model"]["n_rows"] == 1


# ------------------------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["--fuse", "session", "--session-gap", "-5"], "--session-gap must be"),
        (["--fuse", "magic"], "--fuse magic: choose none, session or hmm"),
        (["--fuse", "session", "--model", "none"], "--fuse needs a visual model"),
        (["--fuse", "hmm", "--resume"], "--fuse cannot --resume"),
        (
            ["--fuse", "session", "--group-by", "PHOTOGRAPHER", "--truth", "MANIFEST"],
            "not folder, nor a column",
        ),
        (["--fuse", "session", "--group-by", "AUTHOR"], "needs --truth"),
        (["--fuse", "session", "--engine", "ray"], "--fuse needs --engine local"),
    ],
)
def test_bad_fusion_options_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], says: str
) -> None:
    (tmp_path / "p").mkdir()
    write_photo(tmp_path / "p" / "a.jpg", datetime(2024, 7, 1, 12, 0), offset="+02:00", **NIKON)
    manifest = tmp_path / "m.csv"
    manifest.write_text("IMG_ID,AUTHOR,LAT,LON\na.jpg,ann,1,1\n")
    extra = [str(manifest) if e == "MANIFEST" else e for e in extra]
    code, err = geotag(capsys, "predict", tmp_path / "p", "--out", tmp_path / "o.parquet", *extra)
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("error:") and says in err, err
    assert not (tmp_path / "o.parquet").exists()


def test_benchmark_refuses_fuse(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = geotag(capsys, "benchmark", "im2gps3k", tmp_path, "--fuse", "session")
    assert code == 2 and "refuses --fuse" in err and err.count("\n") == 1


def test_rows_keep_their_types(tmp_path: Path) -> None:
    """The new columns have their schema types (session int64, single_topk like topk)."""
    _outing(tmp_path / "p")
    out = tmp_path / "b.parquet"
    run_predict(PredictConfig(paths=[tmp_path / "p"], out=out, fuse="session", **BASE), model=Palette())
    schema = pq.read_schema(out)
    assert str(schema.field("session").type) == "int64"
    assert schema.field("single_topk").type == schema.field("topk").type


def _row(where: tuple[float, float], score: float = 0.9) -> dict[str, object]:
    cands = [{"lat": where[0], "lon": where[1], "score": score}] + [
        {"lat": b[0], "lon": b[1], "score": (1 - score) / 20} for b in BEACHES
    ]
    return {"status": "ok", "source": "model", "pred_lat": where[0], "pred_lon": where[1], "topk": cands}


def test_fuser_releases_a_session_when_complete_and_bounds_what_it_holds() -> None:
    from geotag.engine.fusion import SessionFuser

    session = np.array([0, 0, -1, 1, 1, 1, 0])
    fuser = SessionFuser(
        session, np.arange(7.0), method="session", top_k=2, kernel_km=25.0, floor_km=25.0, max_speed_kmh=150.0
    )
    out = [fuser.push(k, _row(SIGN if k == 1 else BEACHES[k])) for k in range(3)]
    assert [len(o) for o in out] == [0, 0, 1] and len(out[2][0]["topk"]) == 2  # single: out at once, cut
    assert [len(fuser.push(k, _row(BEACHES[k]))) for k in (3, 4, 5)] == [0, 0, 3]  # session 1 complete
    last = fuser.push(6, _row(BEACHES[6]))
    assert len(last) == 3 and {r["session"] for r in last} == {0} and fuser.pending == 0
    capped = SessionFuser(
        np.zeros(5, dtype=int), np.arange(5.0), method="session", top_k=2, kernel_km=25.0, floor_km=25.0,
        max_speed_kmh=150.0, max_pending=2,
    )  # fmt: skip
    out = [capped.push(k, _row(BEACHES[k])) for k in range(5)]
    assert [len(o) for o in out] == [0, 0, 3, 0, 2]  # past the cap: fused with what it had, then the rest
    assert {r["session"] for r in out[2]} == {0} and {r["session"] for r in out[4]} == {1}
    assert capped.finish() == [] and capped.fused == 5 and capped.pending == 0


@pytest.mark.parametrize("name", ["geoclip-lite", "knn", "translocator", "geodecoder"])  # geoclip and the
# experts take the same paths as geoclip-lite (a shared gallery) and kNN (cut to what they have)
def test_every_distribution_model_gives_the_fusion_candidates(name: str) -> None:
    """The larger internal top-N never exceeds a model's own candidate set (cell models and GeoCLIP refuse
    a top-k beyond it), and the top-k the user asked for is its head."""
    import prior_util

    from geotag.engine.predict import fuse_top_k

    model = prior_util.BUILDERS[name]()
    k = fuse_top_k(model, 3)
    with torch.no_grad():
        wide, narrow = model.predict(prior_util.images(), k), model.predict(prior_util.images(), 3)
    assert 3 < wide.topk_lat.shape[1] <= FUSE_CANDIDATES
    assert torch.equal(wide.topk_lat[:, :3], narrow.topk_lat) and torch.equal(wide.lat, narrow.lat)
    assert torch.equal(wide.confidence, narrow.confidence)


def test_fusion_candidates_stop_at_a_small_candidate_set() -> None:
    from geotag.engine.predict import fuse_top_k

    cells = Palette()
    cells.register_buffer("centroids", torch.zeros(10, 2))
    assert fuse_top_k(cells, 3) == 10 and fuse_top_k(cells, 12) == 12  # the user's top-k still wins
    per_partition = Palette()
    per_partition.centroids = [(torch.zeros(4), torch.zeros(4)), (torch.zeros(20), torch.zeros(20))]
    assert fuse_top_k(per_partition, 3) == 20 and fuse_top_k(Palette(), 3) == FUSE_CANDIDATES
