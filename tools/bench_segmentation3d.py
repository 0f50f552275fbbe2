#!/usr/bin/env python3
"""Train the residual 3D U-Net on stardist's nuclei volume and report every TFLite variant.

    python tools/bench_segmentation3d.py --out runs/unet3d [--steps 300]

Prints one table (Keras and each TFLite variant: status, reason, size, held-out Dice, max
|probability difference| to Keras, latency per 16^3 window) and writes ``OUT/results.json``.
See :mod:`kvision.tasks.segmentation.volume` for the data split, the model and the rules.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/unet3d"))
    parser.add_argument("--steps", type=int, default=300, help="training steps (default 300)")
    parser.add_argument("--width", type=int, default=8)
    args = parser.parse_args(argv)

    import numpy as np

    from kvision.io import atomic_write_json
    from kvision.tasks.segmentation.volume import (
        SPLIT_Y,
        _patches,
        convert_variants,
        dice,
        load_nuclei_3d,
        sliding_window,
        train_volume_model,
    )

    volume, labels = load_nuclei_3d()
    model, seconds = train_volume_model(volume, labels, steps=args.steps, width=args.width)
    test_v, test_l = volume[:, SPLIT_Y:], labels[:, SPLIT_Y:]
    probs = sliding_window(
        lambda x: {"mask_logits": model(x, training=False)["mask_logits"].numpy()}, test_v
    )
    keras_dice = dice(test_l, probs.argmax(-1))
    calibration, _ = _patches(volume[:, :SPLIT_Y], labels[:, :SPLIT_Y], 64,
                              np.random.default_rng(1))  # fmt: skip
    rows = convert_variants(model, args.out, volume, labels, calibration)
    result = {"volume": list(volume.shape), "held_out": list(test_v.shape),
              "params": int(model.count_params()), "train_s": round(seconds, 1),
              "steps": args.steps, "keras_dice": keras_dice, "variants": rows}  # fmt: skip
    atomic_write_json(args.out / "results.json", result)
    print(
        f"3D U-Net, {result['params']:,} parameters, {args.steps} steps of 8 patches in "
        f"{seconds:.0f} s; volume {tuple(volume.shape)}, held out y >= {SPLIT_Y} "
        f"{tuple(test_v.shape)}"
    )
    print(
        "\n| model | status | size (KB) | held-out Dice | max abs diff | p50 ms / window | note |"
    )
    print("|---|---|--:|--:|--:|--:|---|")
    print(f"| keras | ok | - | {keras_dice:.4f} | - | - | |")
    for r in rows:
        d = "-" if r["dice"] is None else f"{r['dice']:.4f}"
        diff = "-" if r["max_abs_diff"] is None else f"{r['max_abs_diff']:.2g}"
        ms = "-" if r["p50_ms"] is None else f"{r['p50_ms']:.2f}"
        size = f"{r['size_bytes'] / 1024:.1f}" if r["size_bytes"] else "-"
        print(
            f"| {r['variant']} | {r['status']} | {size} | {d} | {diff} | {ms} | "
            f"{r['reason'][:160]} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
