"""write-exif under trial: kill -9 mid-run, two runs on one folder at once, a nearly full disk.

Prints one table row per trial kind with counts, then a one-line summary. Every photo must end
either original or exactly as a journal says it was written; nothing may be left behind.

    PYTHONPATH=. python bench/write_exif_trials.py --photos 24 --kills 10 --races 5
    (--tmpfs: the full-disk trial on a real, nearly full 8 MB tmpfs; needs root and `mount -t tmpfs`)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from geotag.io.parquet import PredictionWriter
from geotag.io.scan import image_id
from geotag.sample_data import UNTAGGED, make_exif, render

TEMP_SUFFIX = ".geotag-tmp"


def make_photos(folder: Path, n: int, size: tuple[int, int] = (320, 240)) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        path = folder / f"{i:04d}.jpg"
        place = UNTAGGED[0]  # a sample place whose EXIF has no GPS
        render(place, size).save(
            path, "JPEG", quality=90, exif=make_exif(place, datetime(2024, 1, 2, 3, 4, 5)).tobytes()
        )
        out.append(path)
    return out


def predictions(path: Path, photos: list[Path], lat: float, lon: float) -> Path:
    with PredictionWriter(path, metadata={"command": "trial"}) as writer:
        for p in photos:
            writer.write(
                {"path": str(p), "image_id": image_id(p), "status": "ok", "pred_lat": lat, "pred_lon": lon}
            )
    return path


def cli(*args: str) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "geotag.cli", "write-exif", *args, "--writer", "python", "--no-progress"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def journal_hashes(journals: list[Path]) -> set[str]:
    """Every new_hash any journal records (what some run says it wrote)."""
    hashes: set[str] = set()
    for j in journals:
        if j.exists():
            for line in j.read_text().splitlines()[1:]:
                with contextlib.suppress(ValueError, KeyError):  # a torn last line
                    hashes.add(json.loads(line)["new_hash"])
    return hashes


def classify(photos: list[Path], originals: dict[Path, str], journals: list[Path]) -> dict[str, int]:
    written = journal_hashes(journals)
    counts = {"original": 0, "journalled": 0, "unexplained": 0}
    for p in photos:
        h = image_id(p)
        key = "original" if h == originals[p] else "journalled" if h in written else "unexplained"
        counts[key] += 1
    return counts


def leftovers(folder: Path) -> int:
    return sum(1 for e in os.scandir(folder) if e.name.endswith(TEMP_SUFFIX))


def kill_trials(root: Path, n_photos: int, trials: int, rng: random.Random) -> dict[str, int]:
    totals = {"trials": trials, "original": 0, "journalled": 0, "unexplained": 0, "temps_left_by_kill": 0}
    totals.update({"temps_after_next_run": 0, "undo_not_original": 0})
    for t in range(trials):
        folder = root / f"kill{t}"
        photos = make_photos(folder, n_photos)
        originals = {p: image_id(p) for p in photos}
        preds = predictions(root / f"kill{t}.parquet", photos, -33.9, -70.6)
        journal = root / f"kill{t}.jsonl"
        proc = cli(str(preds), "--journal", str(journal))
        time.sleep(rng.uniform(2.0, 3.5))  # interpreter start is ~2 s; kill somewhere in the run
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        for k, v in classify(photos, originals, [journal]).items():
            totals[k] += v
        totals["temps_left_by_kill"] += leftovers(folder)
        again = cli(str(preds), "--journal", str(root / f"kill{t}b.jsonl"))
        again.wait()
        totals["temps_after_next_run"] += leftovers(folder)
        for j in (root / f"kill{t}b.jsonl", journal):
            if j.exists():
                subprocess.run(
                    [sys.executable, "-m", "geotag.cli", "write-exif", "--undo", str(j)],
                    capture_output=True,
                    check=False,
                )
        totals["undo_not_original"] += sum(image_id(p) != originals[p] for p in photos)
    return totals


def race_trials(root: Path, n_photos: int, trials: int) -> dict[str, int]:
    totals = {"trials": trials, "original": 0, "journalled": 0, "unexplained": 0, "skipped_busy_runs": 0}
    totals["undo_not_original"] = 0
    for t in range(trials):
        folder = root / f"race{t}"
        photos = make_photos(folder, n_photos)
        originals = {p: image_id(p) for p in photos}
        pa = predictions(root / f"race{t}a.parquet", photos, 10.0, 20.0)
        pb = predictions(root / f"race{t}b.parquet", photos, -10.0, -20.0)
        ja, jb = root / f"race{t}a.jsonl", root / f"race{t}b.jsonl"
        a = cli(str(pa), "--journal", str(ja), "--overwrite-gps")
        b = cli(str(pb), "--journal", str(jb), "--overwrite-gps")
        errs = [a.communicate()[1].decode(), b.communicate()[1].decode()]
        totals["skipped_busy_runs"] += sum("another geotag run" in e for e in errs)
        for k, v in classify(photos, originals, [ja, jb]).items():
            totals[k] += v
        for j in (jb, ja):  # newest first is unknown; undo both, twice, in both orders
            if j.exists():
                subprocess.run(
                    [sys.executable, "-m", "geotag.cli", "write-exif", "--undo", str(j)], capture_output=True
                )
        for j in (ja, jb):
            if j.exists():
                subprocess.run(
                    [sys.executable, "-m", "geotag.cli", "write-exif", "--undo", str(j)], capture_output=True
                )
        totals["undo_not_original"] += sum(image_id(p) != originals[p] for p in photos)
    return totals


def full_disk_trial(root: Path, n_photos: int) -> dict[str, int] | None:
    """21 photos on a small tmpfs filled up so that only about two temps fit at a time."""
    mnt = root / "tmpfs"
    mnt.mkdir()
    if subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)], capture_output=True
    ).returncode:
        return None
    try:
        folder = mnt / "photos"
        photos = make_photos(folder, n_photos, size=(640, 480))
        originals = {p: image_id(p) for p in photos}
        biggest = max(p.stat().st_size for p in photos)
        free = os.statvfs(mnt)
        filler = free.f_bavail * free.f_frsize - int(2.5 * (biggest + (1 << 20)))
        if filler > 0:  # leave room for about two temps (each photo plus geotag's 1 MB margin)
            (mnt / "filler").write_bytes(b"\0" * filler)
        preds = predictions(root / "disk.parquet", photos, 1.25, 2.5)
        journal = root / "disk.jsonl"  # the journal and its backups live elsewhere: backups are copies
        proc = cli(str(preds), "--journal", str(journal))
        err = proc.communicate()[1].decode()
        counts = classify(photos, originals, [journal])
        counts["failed_disk_full"] = err.count("disk full")
        counts["temps_left"] = leftovers(folder)
        free = os.statvfs(mnt)
        counts["free_kb_after"] = free.f_bavail * free.f_frsize // 1024
        subprocess.run(
            [sys.executable, "-m", "geotag.cli", "write-exif", "--undo", str(journal)], capture_output=True
        )
        counts["undo_not_original"] = sum(image_id(p) != originals[p] for p in photos)
        return counts
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", type=int, default=24)
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--kill-photos", type=int, default=300, help="photos per kill trial")
    ap.add_argument("--races", type=int, default=5)
    ap.add_argument("--tmpfs", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="geotag-trials-") as tmp:
        root = Path(tmp)
        rows = {"kill -9": kill_trials(root, args.kill_photos, args.kills, rng)}
        rows["two runs at once"] = race_trials(root, args.photos, args.races)
        if args.tmpfs:
            disk = full_disk_trial(root, 21)
            rows["full tmpfs, 21 photos"] = disk if disk is not None else {"skipped (no mount)": 1}
    bad = 0
    for name, counts in rows.items():
        print(f"{name:24s} " + "  ".join(f"{k}={v}" for k, v in counts.items()))
        bad += counts.get("unexplained", 0) + counts.get("undo_not_original", 0)
        bad += counts.get("temps_after_next_run", 0) + counts.get("temps_left", 0)
    print(f"summary: {bad} photo(s) unexplained, not restored, or temps left behind")


if __name__ == "__main__":
    main()
