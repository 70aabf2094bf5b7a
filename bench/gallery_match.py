"""GeoCLIP's gallery match in float32 or bfloat16: time, and whether top-k and confidence agree (issue 7).

    .venv/bin/python bench/gallery_match.py [--device auto] [--batch 256] [--queries 2048]

The 100K gallery embeddings come from the released GPS encoder (as `prepare()` computes them, cached).
Image embeddings are of two kinds, since the backbone here is random: `random` (unit vectors: scores
crowd together, the hardest case for ties) and `near` (a gallery point's own embedding plus noise, what
a trained model's embedding of a photo taken there looks like). For each, the logits are
`logit_scale * (img @ gallery.T)` in float32 and with the matmul in bfloat16 (softmax and top-k in
float32 after it); we report top-1 and top-5 agreement, the largest change of the top-1 probability,
and the time of one (batch x 512) @ (512 x 100K) product. Prints a table and a one-line summary.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch
import torch.nn.functional as F

from geotag.engine.predict import resolve_device
from geotag.models.registry import build_geoclip


def timed(fn, device: torch.device, reps: int) -> float:  # type: ignore[no-untyped-def]
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - t0) / reps


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--queries", type=int, default=2048)
    ap.add_argument("--noise", type=float, default=0.5, help="relative noise of the `near` embeddings")
    args = ap.parse_args(argv)
    device = resolve_device(args.device)
    from geotag.models.clip_convert import ClipVisionConfig

    tiny = ClipVisionConfig(width=32, layers=1, heads=2, mlp_dim=64, patch_size=16, image_size=32)
    model = build_geoclip(vit=tiny, allow_untrained=True).to(device).eval()  # released heads, 100K gallery
    with torch.inference_mode():
        model.prepare()
    gallery = model.gallery_features  # (N, 512) float32, unit rows
    scale = model.logit_scale.exp().float()
    gen = torch.Generator(device="cpu").manual_seed(0)
    load = os.getloadavg()
    print(f"{device}: gallery {tuple(gallery.shape)}, logit scale {scale.item():.1f}, load {load[0]:.2f}")
    print("\n| embeddings | top-1 agree | top-5 sets agree | max change of top-1 prob | fp32 ms | bf16 ms |")
    print("|---|---|---|---|---|---|")
    summary = []
    g16 = gallery.to(torch.bfloat16)
    for kind in ("random", "near"):
        if kind == "random":
            img = torch.randn(args.queries, gallery.shape[1], generator=gen)
        else:
            pick = torch.randint(len(gallery), (args.queries,), generator=gen)
            noise = torch.randn(args.queries, gallery.shape[1], generator=gen)
            img = gallery[pick].cpu() + args.noise * F.normalize(noise, dim=1)
        img = F.normalize(img, dim=1).to(device)
        top1 = top5 = 0
        worst = 0.0
        with torch.inference_mode():
            for i in range(0, len(img), args.batch):
                q = img[i : i + args.batch]
                p32 = (scale * (q @ gallery.T)).softmax(dim=1)
                p16 = (scale * (q.to(torch.bfloat16) @ g16.T).float()).softmax(dim=1)
                s32, i32 = p32.topk(5, dim=1)
                s16, i16 = p16.topk(5, dim=1)
                top1 += int((i32[:, 0] == i16[:, 0]).sum())
                top5 += int((i32.sort(dim=1).values == i16.sort(dim=1).values).all(dim=1).sum())
                worst = max(worst, float((s32[:, 0] - p16.gather(1, i32[:, :1])[:, 0]).abs().max()))
            q = img[: args.batch]
            reps = 20 if device.type == "cuda" else 3
            t32 = timed(lambda q=q: q @ gallery.T, device, reps)
            t16 = timed(lambda q=q: q.to(torch.bfloat16) @ g16.T, device, reps)
        n = len(img)
        print(
            f"| {kind} | {100 * top1 / n:.1f}% | {100 * top5 / n:.1f}% | {worst:.2e} | "
            f"{1e3 * t32:.2f} | {1e3 * t16:.2f} |"
        )
        summary.append(f"{kind}: top-1 {100 * top1 / n:.1f}% agree")
    print(f"\nsummary: bf16 gallery matmul vs float32, batch {args.batch}: " + "; ".join(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
