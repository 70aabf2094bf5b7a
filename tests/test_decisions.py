"""The decisions file of `geotag review` and `geotag write-exif --decisions`."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image
from write_exif_util import write_predictions

from geotag.engine.write_exif import WriteOptions, run_write_exif
from geotag.errors import InputError
from geotag.io import decisions
from geotag.io.decisions import Decision
from geotag.io.exif import read_exif
from geotag.io.scan import image_id


def _jpegs(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        p = folder / f"p{i}.jpg"
        Image.new("RGB", (32, 24), (40 * i, 90, 160)).save(p, "JPEG")  # no EXIF, no GPS
        out.append(p)
    return out


def test_append_and_read_keep_the_last_decision_per_row(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    decisions.append(path, Decision(0, "a", "accept", 1.0, 2.0))
    decisions.append(path, Decision(1, "b", "reject"))
    decisions.append(path, Decision(0, "a", "accept", 3.0, 4.0, source="moved"))
    got = decisions.read(path)
    assert set(got) == {0, 1}
    assert (got[0].lat, got[0].lon, got[0].source) == (3.0, 4.0, "moved") and got[1].action == "reject"
    assert got[0].time  # stamped


def test_torn_line_is_skipped_and_appending_resumes_after_it(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    decisions.append(path, Decision(0, "a", "accept", 1.0, 2.0))
    with open(path, "ab") as f:
        f.write(b'{"row":1,"image_id":"b","act')  # a crash mid-write
    assert set(decisions.read(path)) == {0}
    decisions.append(path, Decision(2, "c", "reject"))
    assert set(decisions.read(path)) == {0, 2}


@pytest.mark.parametrize(
    "bad",
    [
        Decision(-1, "a", "reject"),
        Decision(0, "", "reject"),
        Decision(0, "a", "maybe"),
        Decision(0, "a", "accept"),
        Decision(0, "a", "accept", 91.0, 0.0),
        Decision(0, "a", "accept", float("nan"), 0.0),
        Decision(0, "a", "accept", 1.0, 1.0, source="elsewhere"),
    ],
)
def test_invalid_decisions_are_refused(tmp_path: Path, bad: Decision) -> None:
    with pytest.raises(InputError):
        decisions.append(tmp_path / "d.jsonl", bad)
    assert not (tmp_path / "d.jsonl").exists()


def test_a_bad_line_in_the_middle_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"row":0,"image_id":"a","action":"explode"}\n')
    with pytest.raises(InputError, match="line 1"):
        decisions.read(path)


def test_append_never_follows_a_symlink(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("mine\n")
    link = tmp_path / "d.jsonl"
    link.symlink_to(victim)
    with pytest.raises(OSError):
        decisions.append(link, Decision(0, "a", "reject"))
    assert victim.read_text() == "mine\n"


def test_write_exif_with_decisions_writes_exactly_the_accepted(tmp_path: Path) -> None:
    photos = _jpegs(tmp_path / "photos", 4)
    preds = write_predictions(
        tmp_path / "preds.parquet",
        [{"path": p, "pred_lat": 10.0 + i, "pred_lon": 20.0} for i, p in enumerate(photos)],
    )
    dfile = decisions.default_path(preds)
    ids = [image_id(p) for p in photos]
    decisions.append(dfile, Decision(0, ids[0], "accept", 10.0, 20.0))
    decisions.append(dfile, Decision(1, ids[1], "accept", -33.5, 151.25, source="moved"))
    decisions.append(dfile, Decision(2, ids[2], "accept", 5.0, 5.0))
    decisions.append(dfile, Decision(2, ids[2], "reject"))  # changed mind
    before = [p.read_bytes() for p in photos]
    summary = run_write_exif(
        WriteOptions(preds, journal=tmp_path / "j.jsonl", writer="python", decisions=dfile)
    )
    assert summary.written == 2
    # the summary counts every row: one rejected in review, one never decided (issue 28 item 6)
    assert summary.skipped == {"rejected in review": 1, "not decided in review": 1}
    assert "skipped 2 (1 rejected in review, 1 not decided in review)" in summary.describe()
    assert photos[2].read_bytes() == before[2] and photos[3].read_bytes() == before[3]
    gps0, gps1 = read_exif(photos[0]), read_exif(photos[1])
    assert gps0.gt_lat == pytest.approx(10.0) and gps0.gt_lon == pytest.approx(20.0)
    assert gps1.gt_lat == pytest.approx(-33.5) and gps1.gt_lon == pytest.approx(151.25)
    assert "estimate (not measured)" in _method(photos[0]) and "model=geoclip (reviewed)" in _method(
        photos[0]
    )
    assert "model=geoclip (reviewed, moved)" in _method(photos[1])


def _method(photo: Path) -> str:
    """GPSProcessingMethod (tag 27), without its 8-byte character-code prefix."""
    with Image.open(photo) as im:
        raw = im.getexif().get_ifd(0x8825)[27]
    return (raw if isinstance(raw, bytes) else str(raw).encode())[8:].decode("ascii", "replace")


def test_write_exif_refuses_decisions_for_other_predictions(tmp_path: Path) -> None:
    photos = _jpegs(tmp_path / "photos", 1)
    preds = write_predictions(
        tmp_path / "preds.parquet", [{"path": photos[0], "pred_lat": 1.0, "pred_lon": 2.0}]
    )
    dfile = tmp_path / "d.jsonl"
    decisions.append(dfile, Decision(0, "someone-else", "accept", 1.0, 2.0))
    before = photos[0].read_bytes()
    with pytest.raises(InputError, match="another photo"):
        run_write_exif(WriteOptions(preds, journal=tmp_path / "j.jsonl", writer="python", decisions=dfile))
    assert photos[0].read_bytes() == before
    with pytest.raises(InputError, match="not found"):
        run_write_exif(WriteOptions(preds, decisions=tmp_path / "missing.jsonl"))
    assert os.listdir(tmp_path / "photos") == ["p0.jpg"]


def test_cli_write_exif_decisions_dry_run_lists_only_the_accepted(tmp_path: Path) -> None:
    import subprocess
    import sys

    photos = _jpegs(tmp_path / "photos", 3)
    preds = write_predictions(
        tmp_path / "preds.parquet", [{"path": p, "pred_lat": 1.0, "pred_lon": 2.0} for p in photos]
    )
    dfile = decisions.default_path(preds)
    decisions.append(dfile, Decision(1, image_id(photos[1]), "accept", 5.0, 6.0, source="candidate"))
    decisions.append(dfile, Decision(2, image_id(photos[2]), "reject"))
    args = [
        sys.executable,
        "-m",
        "geotag.cli",
        "write-exif",
        str(preds),
        "--decisions",
        str(dfile),
        "--dry-run",
    ]
    r = subprocess.run(args, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "p1.jpg" in r.stdout and "p0.jpg" not in r.stdout and "p2.jpg" not in r.stdout
    missing = subprocess.run(
        [*args[:5], "--decisions", str(tmp_path / "nope.jsonl")], capture_output=True, text=True
    )
    assert (
        missing.returncode == 2
        and "decisions file not found" in missing.stderr
        and "Traceback" not in missing.stderr
    )
