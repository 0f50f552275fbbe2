#!/usr/bin/env python3
"""kvision's OCR model against Tesseract (the Debian ``tesseract-ocr`` peer) on the same lines.

Reads a text-line split (``labels.tsv``: ``image<TAB>text``, optional ``kinds.tsv``:
``image<TAB>kind``, as written by ``tools/make_text_lines.py``) and reads every line with

* **tesseract** (LSTM engine, ``--psm 7``: one text line; English model), all images in one
  process from a list file (no process start per image), optionally with a character whitelist
  of the model's charset (``--whitelist``), on images padded with a white border (Tesseract
  expects margins) and upscaled ``--scale`` times (its recommended x-height is 20 to 30 px);
* **kvision**: a CRNN artifact (``.tflite`` / SavedModel with its contract) through
  :func:`kvision.predict.predict_task_files`: file decode, resize, the runtime, greedy CTC
  decoding outside the graph; batch 1, as Tesseract.

Both run single-threaded (``OMP_THREAD_LIMIT=1`` for Tesseract, one runtime thread for
kvision), side by side in one run: it prints and writes (``--json``) CER, WER and exact-line
accuracy overall and per line kind, and lines per second (wall time of the whole split,
decoding included). Usage::

    .venv/bin/python tools/compare_tesseract.py --data data/lines/test \\
        --model runs/ocr_crnn/export/tflite/recognizer_float32.tflite \\
        --model runs/ocr_crnn/compress/tflite/recognizer_qat_int8.tflite --json compare.json

Exit status 2 with the ``apt-get`` line when ``tesseract`` is missing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

SCHEMA = "kvision.compare_tesseract/1"


def read_split(folder: Path, limit: int | None = None) -> list[tuple[Path, str, str]]:
    """``[(image, text, kind)]`` of a split folder, in file order (kind ``all`` without
    ``kinds.tsv``)."""
    from kvision.tasks.ocr.data import read_text_lines

    data = read_text_lines(folder, on_error="raise")
    rows = [(Path(e.image_path), e.text, e.kind or "all") for e in data.examples]
    return rows[:limit] if limit else rows


def scores(refs, hyps, kinds) -> dict:
    """CER, WER and exact-line accuracy overall and per kind."""
    from kvision.tasks.ocr.ctc import cer, wer

    def block(idx):
        r, h = [refs[i] for i in idx], [hyps[i] for i in idx]
        exact = sum(a == b for a, b in zip(r, h, strict=True)) / max(1, len(idx))
        return {"n": len(idx), "CER": cer(r, h), "WER": wer(r, h), "exact": exact}

    out = {"all": block(range(len(refs)))}
    for kind in sorted(set(kinds)):
        out[kind] = block([i for i, k in enumerate(kinds) if k == kind])
    return out


def _prepare(image: Path, out: Path, scale: int, border: int) -> None:
    from PIL import Image, ImageOps

    img = Image.open(image).convert("L")
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.Resampling.BICUBIC)
    ImageOps.expand(img, border=border * scale, fill=255).save(out)


def run_tesseract(images, scale: int = 2, border: int = 8, psm: int = 7, whitelist: str = "",
                  lang: str = "eng") -> tuple[list[str], float]:  # fmt: skip
    """Tesseract's text for each image and the wall seconds (preparation excluded)."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        prepared = []
        for i, image in enumerate(images):
            p = tmp / f"{i:06d}.png"
            _prepare(image, p, scale, border)
            prepared.append(str(p))
        listing = tmp / "list.txt"
        listing.write_text("\n".join(prepared) + "\n")
        cmd = ["tesseract", str(listing), "stdout", "--psm", str(psm), "--oem", "1", "-l", lang]
        if whitelist:
            cmd += ["-c", f"tessedit_char_whitelist={whitelist}"]
        env = {**os.environ, "OMP_THREAD_LIMIT": "1"}
        t = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        seconds = time.perf_counter() - t
    if done.returncode != 0:
        raise RuntimeError(f"tesseract failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    pages = done.stdout.split("\f")
    if len(pages) != len(images):
        raise RuntimeError(f"tesseract gave {len(pages)} pages for {len(images)} images")
    return [" ".join(p.split()) for p in pages], seconds


def run_kvision(model: Path, images) -> tuple[list[str], float]:
    """The model's text for each image (batch 1, one thread) and the wall seconds."""
    from kvision.predict import predict_task_files

    predict_task_files(model, images[:2], threads=1)  # warm-up: load and first inference
    t = time.perf_counter()
    results = predict_task_files(model, images, threads=1)
    return [r["text"] for r in results], time.perf_counter() - t


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, type=Path, help="a split folder with labels.tsv")
    p.add_argument("--model", type=Path, action="append", default=[],
                   help="a kvision OCR artifact (.tflite, SavedModel); repeatable")  # fmt: skip
    p.add_argument("--limit", type=int, help="the first N lines only")
    p.add_argument("--scale", type=int, default=2, help="upscale for Tesseract (default 2)")
    p.add_argument("--psm", type=int, default=7, help="Tesseract page segmentation (7: a line)")
    p.add_argument("--whitelist", action="store_true",
                   help="restrict Tesseract to the characters of the split's labels")  # fmt: skip
    p.add_argument("--json", type=Path, help="write the comparison as JSON here")
    args = p.parse_args(argv)
    if shutil.which("tesseract") is None:
        print("tesseract not found: sudo apt-get install -y tesseract-ocr", file=sys.stderr)
        return 2
    rows = read_split(args.data, args.limit)
    images, refs, kinds = [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]
    version = subprocess.run(["tesseract", "--version"], capture_output=True, text=True)
    report = {"schema": SCHEMA, "data": str(args.data), "n": len(rows), "threads": 1,
              "tesseract": {"version": (version.stdout or version.stderr).split("\n")[0],
                            "psm": args.psm, "scale": args.scale}}  # fmt: skip
    whitelist = "".join(sorted(set("".join(refs)) - {" "})) if args.whitelist else ""
    hyps, seconds = run_tesseract(images, args.scale, psm=args.psm, whitelist=whitelist)
    report["tesseract"].update(whitelist=bool(whitelist), seconds=round(seconds, 3),
                               lines_per_s=round(len(rows) / seconds, 2),
                               scores=scores(refs, hyps, kinds))  # fmt: skip
    report["kvision"] = {}
    for model in args.model:
        hyps_k, seconds_k = run_kvision(model, images)
        report["kvision"][model.stem] = {"model": str(model), "seconds": round(seconds_k, 3),
                                         "lines_per_s": round(len(rows) / seconds_k, 2),
                                         "scores": scores(refs, hyps_k, kinds)}  # fmt: skip
    _print(report)
    if args.json:
        from kvision.io import atomic_write_json

        atomic_write_json(args.json, report)
    return 0


def _print(report: dict) -> None:
    engines = [*report["kvision"].items(), ("tesseract", report["tesseract"])]
    kinds = list(report["tesseract"]["scores"])
    print(f"{report['n']} lines of {report['data']}, one thread each")
    print(f"{'engine':<28} {'lines/s':>8}  " + "  ".join(f"{'CER ' + k:>16}" for k in kinds)
          + f"  {'exact':>6}")  # fmt: skip
    for name, r in engines:
        cells = "  ".join(f"{100 * (r['scores'][k]['CER'] or 0):>15.2f}%" for k in kinds)
        print(f"{name:<28} {r['lines_per_s']:>8.1f}  {cells}  {r['scores']['all']['exact']:>6.3f}")


if __name__ == "__main__":
    raise SystemExit(main())
