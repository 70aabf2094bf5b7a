"""How far apart are the local and the Ray engine's rows? Both on the same folders, one run.

    .venv/bin/python bench/engines_agree.py [FOLDER ...] [--batch-size 4] [--cpus 2]

Default folders: the shared fixtures' geotagged and osv5m-71 photos. The model is a tiny random HF CLIP
tower with GeoCLIP's released heads and a 500-point gallery (what tests/test_ray_engine.py uses: no
download), on CPU; Ray runs locally with --cpus CPUs. Prints, per numeric column, how many rows differ
and the largest absolute difference, for Ray against the local engine and, as the yardstick, for the
local engine at batch size 1 against the local engine at --batch-size (docs/scale.md quotes the result).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from geotag.config import PredictConfig
from geotag.engine.predict import run_predict

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the tests' tiny weights
from tiny_weights import save_tiny_hf_clip, write_random_gallery  # noqa: E402

FIXTURES = REPO.parent / "shared" / "fixtures"
NUMBERS = ("pred_lat", "pred_lon", "confidence")


def tiny_weights(folder: Path) -> dict[str, Path]:
    return {
        "backbone_weights": save_tiny_hf_clip(folder / "clip"),
        "gallery": write_random_gallery(folder / "gallery.csv"),
    }


def rows(path: Path) -> dict[str, dict[str, Any]]:
    return {r["path"]: r for r in pq.read_table(path).to_pylist()}


def compare(name: str, a: dict[str, dict[str, Any]], b: dict[str, dict[str, Any]]) -> None:
    assert sorted(a) == sorted(b), f"{name}: not the same files"
    scored = [p for p in a if a[p]["pred_lat"] is not None]
    out = [f"{name}: {len(scored)} scored rows"]
    for col in (*NUMBERS, "topk score"):
        diffs = []
        for p in scored:
            if col == "topk score":
                diffs += [
                    abs(x["score"] - y["score"]) for x, y in zip(a[p]["topk"], b[p]["topk"], strict=True)
                ]
            else:
                diffs.append(abs(a[p][col] - b[p][col]))
        out.append(f"{col} {sum(d > 0 for d in diffs)} differ, max {max(diffs, default=0):.2g}")

    def bare(row: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in row.items() if k != "created_at"}

    same = sum(bare(a[p]) == bare(b[p]) for p in a)
    print("; ".join(out) + f"; rows identical in every column but created_at: {same} of {len(a)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="*", type=Path)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--cpus", type=int, default=2)
    args = parser.parse_args()
    folders = args.folders or [FIXTURES / "geotagged", FIXTURES / "osv5m-71"]
    import ray

    from geotag.engine.ray_predict import run_ray_predict

    logging.getLogger("geotag").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        weights = tiny_weights(work)

        def cfg(out: Path, **kw: Any) -> PredictConfig:
            settings = {"batch_size": args.batch_size, "workers": 0, "top_k": 3, **kw}
            return PredictConfig(
                paths=list(folders), out=out, allow_mismatched_heads=True, **weights, **settings
            )  # type: ignore[arg-type]

        run_predict(cfg(work / "local.parquet"))
        run_predict(cfg(work / "local-b1.parquet", batch_size=1))
        ray.init(num_cpus=args.cpus, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
        ray.data.DataContext.get_current().enable_progress_bars = False
        try:
            run_ray_predict(cfg(work / "ray", engine="ray"))
        finally:
            ray.shutdown()
        local = rows(work / "local.parquet")
        print(f"folders: {', '.join(map(str, folders))}; batch size {args.batch_size}; {args.cpus} Ray CPUs")
        compare("ray vs local", local, {r["path"]: r for r in pq.read_table(work / "ray").to_pylist()})
        compare("local batch 1 vs local", local, rows(work / "local-b1.parquet"))


if __name__ == "__main__":
    main()
